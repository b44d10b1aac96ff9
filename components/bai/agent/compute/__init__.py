"""Compute plugins: one per device kind (cpu, mem, cuda, the mock accelerator), loaded from the
``bai.compute_plugins`` entry-point group. The interface is in :mod:`.base`."""
