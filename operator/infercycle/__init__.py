"""InferCycle: recycle degrading LLM inference pods on Kubernetes, one careful step at a time."""

__version__ = "0.1.0"
