"""sidemesh: automatic sidecar injection and the mesh around it."""

__version__ = "0.1.0"
