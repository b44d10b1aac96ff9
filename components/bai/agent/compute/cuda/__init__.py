"""The CUDA compute plugin: NVML discovery (:mod:`.nvml`), whole GPUs and MIG slices, open
fractional GPUs through MPS (:mod:`.mps`), container arguments (:mod:`.docker_args`)."""
