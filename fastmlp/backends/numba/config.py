"""Numba compile settings and thread policy of the Numba backend, kept in one place.

FASTMATH lists the LLVM fast-math flags we allow.  It deliberately leaves out `nnan` and `ninf`
(which bare `fastmath=True` would add): the softmax subtracts the row maximum and the kernels
must pass NaN/inf through like NumPy does, so the compiler may not assume they never occur.

It also leaves out `reassoc`.  With it (and `nsz`), Adam's float64 second moment
`b2*v + (1-b2)*g*g` came out 5e-14 (beta2=0.999) to 5e-12 (beta2=0.99999) off relative to
NumPy, an error growing like 1/(1-beta2): consistent with LLVM seeing `b2c == 1 - b2` and
refactoring the sum into a cancelling difference.  Without it the error is 1 ulp.
Nothing here needs it: the element-wise loops vectorise without it, and the only
reductions (softmax row sums over C classes, the loss and sample-weight sums) are short or
cheap next to the GEMMs.

Numba's on-disk cache is keyed on the source file of each kernel; `stamp_caches` adds a
digest of the sources each cached function depends on (kernels.py, train_step.py and this
file), so editing or upgrading any of them recompiles what uses it.

error_model="numpy" makes a float division by zero give inf/nan (as in NumPy) instead of
raising ZeroDivisionError; it also drops the per-division check that blocks vectorisation.

Threading layer
---------------
The prange kernels are off by default (`PARALLEL_MIN_SIZE` below says why: on the
machine this was written on they lose to the serial loop inside a training step).  When a
threshold is set, at import (of this module)
we ask for Numba's 'threadsafe' layer (TBB, else OpenMP) -- the
default choice may land on 'workqueue', which aborts the process when two Python threads
launch parallel kernels at once, and these kernels release the GIL precisely so that
models can train in concurrent threads -- unless the user or another library already
chose or started a layer, then launch one tiny prange kernel.  If that fails, or the layer
running is 'workqueue', the updates stay serial (`PARALLEL_LAYER` is None).  Here TBB is not
installed, so the layer is OpenMP (GNU libgomp).  GNU OpenMP cannot be used in a child
created by fork() once the parent has used it (Numba terminates that child), so a fork hook
switches the child to the serial kernels.
"""
import hashlib
import os
import sys
import warnings

import numba
import numpy as np
from numba import njit, prange


FASTMATH = {"nsz", "arcp", "contract", "afn"}

JIT_OPTIONS = dict(cache=True, nogil=True, fastmath=FASTMATH, error_model="numpy")

# Optimizer updates on at least this many elements use the prange kernels (when a thread-safe
# threading layer starts); None = never.  The environment variable
# FASTMLP_NUMBA_PARALLEL_MIN_SIZE (an integer; 0 = always) overrides it at import.
#
# Default None, because on the 2-vCPU VM this backend was written on the prange kernels lost
# in a training loop: an Adam step on a 784x512 float32 weight run right after a GEMM took
# ~12 ms in parallel (median) vs ~0.35 ms serial -- the OpenMP workers have gone to sleep
# during the GEMM and waking them costs more than the whole update; at 4M elements it was
# 7.9 ms vs 3.5 ms.  Back to back with no GEMM in between, parallel was ~1.8x faster from
# ~400k elements.  The updates are ~1% of a training step either way.  On a many-core
# machine with cheap wake-ups try 65536 (or 1 << 20) and measure.
PARALLEL_MIN_SIZE = None


# --------------------------------------------------------------------------- threading layer

@njit(parallel=True, **JIT_OPTIONS)
def _parallel_probe(a):
    # a (n,) IN/OUT; the smallest prange kernel, launched once to start the threading layer
    for i in prange(a.size):
        a[i] += 1.0


def _parallel_min_size_setting():
    """PARALLEL_MIN_SIZE, or FASTMLP_NUMBA_PARALLEL_MIN_SIZE when set; None = never."""
    env = os.environ.get("FASTMLP_NUMBA_PARALLEL_MIN_SIZE", "").strip()
    if not env:
        return PARALLEL_MIN_SIZE
    try:
        return max(0, int(env))
    except ValueError:
        warnings.warn(f"FASTMLP_NUMBA_PARALLEL_MIN_SIZE={env!r} is not an integer; ignored",
                      RuntimeWarning, stacklevel=2)
        return PARALLEL_MIN_SIZE


def _start_parallel():
    """Start a thread-safe threading layer; return its name, or None to stay serial."""
    chose = False
    try:
        numba.threading_layer()  # already started (by the user or another library): keep it
    except ValueError:
        if numba.config.THREADING_LAYER == "default":
            numba.config.THREADING_LAYER = "threadsafe"
            chose = True
    try:
        _parallel_probe(np.zeros(2))
        layer = numba.threading_layer()
    except Exception:  # any failure to launch threads just means: serial kernels
        if chose:
            numba.config.THREADING_LAYER = "default"
        return None
    return layer if layer in ("tbb", "omp") else None


def _serial_after_fork():
    global parallel_min_size
    parallel_min_size = sys.maxsize


_min_size = _parallel_min_size_setting()
PARALLEL_LAYER = None if _min_size is None else _start_parallel()
# the optimizer updates use the prange kernels from this many elements (sys.maxsize: never)
parallel_min_size = _min_size if PARALLEL_LAYER is not None else sys.maxsize
if PARALLEL_LAYER == "omp":
    os.register_at_fork(after_in_child=_serial_after_fork)


def stamp_caches(namespace, *modules):
    """Tie the on-disk cache of every cached dispatcher in `namespace` (a module's globals) to
    the source of `modules` too, not only to the file the function is in.

    Numba keys a cache on its function's own file (mtime and size), but `_run` in
    train_step.py compiles kernels.py's inlined steps into itself: after an upgrade that
    changed kernels.py alone, the stale machine code would be loaded.  Adding a digest of the
    sources to the cache's stamp makes the index stale whenever any of them changes.  (Numba
    internals: without the attributes this expects, the caches keep numba's own stamp.)"""
    digest = hashlib.sha256()
    for module in modules:
        with open(module.__file__, "rb") as f:
            digest.update(f.read())
    digest = digest.hexdigest()[:16]
    for obj in list(namespace.values()):
        cache_file = getattr(getattr(obj, "_cache", None), "_cache_file", None)
        if cache_file is not None and hasattr(cache_file, "_source_stamp"):
            cache_file._source_stamp = (cache_file._source_stamp, digest)
