"""Numba compile settings for the Numba backend, kept in one place.

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

Numba's on-disk cache is keyed on the source file of each kernel, not on this one: after
editing these settings, delete fastmlp/backends/__pycache__/numba_kernels.* (or touch
numba_kernels.py) or the old machine code keeps being loaded.

error_model="numpy" makes a float division by zero give inf/nan (as in NumPy) instead of
raising ZeroDivisionError; it also drops the per-division check that blocks vectorisation.
"""

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
