"""Backend registry: one kernel contract (docs/kernels.md), three implementations.

`get_backend(name)` returns an object exposing the contract's functions plus `name` and `raw`
(the unchecked kernels the Model's hot loop calls after validating its workspaces once).
"""
import importlib
import threading

from . import reference as _reference

BACKEND_NAMES = ("numpy", "numba", "cython")
_AUTO_ORDER = ("cython", "numba", "numpy")
_KERNELS = ("linear_forward", "linear_backward", "relu_backward", "softmax_xent_grad",
            "sgd_update", "adam_update")

_cache = {}
_errors = {}
_lock = threading.Lock()


class _ReferenceBackend:
    """The NumPy reference: permissive about layout, used as the oracle."""

    name = "numpy"

    def __init__(self):
        self.raw = _reference
        for k in _KERNELS:
            setattr(self, k, getattr(_reference, k))

    def __repr__(self):
        return "<fastmlp backend 'numpy'>"


def _load(name):
    if name == "numpy":
        return _ReferenceBackend()
    from ._checked import CheckedBackend
    if name == "numba":
        raw = importlib.import_module("fastmlp.backends.numba_kernels")
    elif name == "cython":
        raw = importlib.import_module("fastmlp._ckernels")
    else:
        raise ValueError(f"unknown backend {name!r}; choose from {BACKEND_NAMES} or 'auto'")
    return CheckedBackend(name, raw)


def _try_load(name):
    with _lock:
        if name in _cache:
            return _cache[name]
        if name in _errors:
            return None
        try:
            backend = _load(name)
        except ImportError as exc:  # missing extension or numba
            _errors[name] = exc
            return None
        _cache[name] = backend
        return backend


def available_backends():
    """Names of the backends that import on this machine, e.g. ('numpy', 'numba', 'cython')."""
    return tuple(n for n in BACKEND_NAMES if _try_load(n) is not None)


def get_backend(name="auto"):
    """Return the backend called `name`: 'numpy', 'numba', 'cython', or 'auto'.

    'auto' picks cython, else numba, else numpy.  A backend object passes through unchanged.
    """
    if not isinstance(name, str):
        if all(hasattr(name, k) for k in _KERNELS) and hasattr(name, "name"):
            return name
        raise TypeError(f"backend must be a name, got {type(name).__name__}")
    if name == "auto":
        for n in _AUTO_ORDER:
            b = _try_load(n)
            if b is not None:
                return b
    if name not in BACKEND_NAMES:
        raise ValueError(f"unknown backend {name!r}; choose from {BACKEND_NAMES} or 'auto'")
    b = _try_load(name)
    if b is None:
        raise ImportError(f"backend {name!r} is not available here: {_errors[name]}")
    return b
