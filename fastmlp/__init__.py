"""fastmlp: multilayer perceptrons on the CPU at the speed of the matrix multiply."""
from .backends import available_backends, get_backend

__version__ = "0.1.0"

__all__ = ["available_backends", "get_backend", "__version__"]
