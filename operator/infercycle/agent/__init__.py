"""The recycle agent sidecar: checkpoint, in-place restart and restore of an inference server."""
