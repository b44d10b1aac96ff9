"""The storage proxy's two HTTP APIs: thin handlers over the volume, upload and token modules."""
