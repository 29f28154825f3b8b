"""Backend registry: one kernel contract (contract.py, docs/kernels.md), three implementations.

    reference.py      numpy   the oracle, and the composition of kernels into a network
    numba/            numba   kernels.py, train_step.py, config.py (compile and thread policy)
    _cython (csrc/)   cython  kernels.pyx, train_step.pxi, updates.h, step_loops.h

`get_backend(name)` returns an object exposing the contract's functions plus `name` and `raw`
(the unchecked kernels and `TrainStep` the Model's hot loop calls after validating its
workspaces once): the reference module itself for 'numpy', a `CheckedBackend` over the
compiled module for the others.
"""
import importlib
import threading

from . import reference as _reference
from .contract import KERNEL_NAMES

BACKEND_NAMES = ("numpy", "numba", "cython")
COMPILED_NAMES = ("numba", "cython")
_AUTO_ORDER = ("cython", "numba", "numpy")
_MODULES = {"numba": "fastmlp.backends.numba", "cython": "fastmlp.backends._cython"}

_cache = {}
_errors = {}
_lock = threading.Lock()


class _ReferenceBackend:
    """The NumPy reference: permissive about layout, used as the oracle."""

    name = "numpy"

    def __init__(self):
        self.raw = _reference
        for k in KERNEL_NAMES:
            setattr(self, k, getattr(_reference, k))

    def __repr__(self):
        return "<fastmlp backend 'numpy'>"


def _load(name):
    if name == "numpy":
        return _ReferenceBackend()
    from .checked import CheckedBackend
    return CheckedBackend(name, importlib.import_module(_MODULES[name]))


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
    """Return the backend called `name`: 'numpy', 'numba', 'cython', or 'auto' (cython, else
    numba, else numpy).  An object this function returned passes through unchanged."""
    if not isinstance(name, str):
        if name in _cache.values():
            return name
        raise TypeError(f"backend must be a name ({', '.join(BACKEND_NAMES)} or 'auto') or a "
                        f"backend from get_backend, got {type(name).__name__}")
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
