"""fastmlp's GEMM pool (csrc/pool.c, fm_gemm) called directly: every way it cuts a GEMM into
blocks (along m, along n, and along k with partial sums) against a float64 product, for
each transpose, a beta, several block counts and padded leading dimensions; and the same bits
whether the pool's workers take part or not."""
import ctypes

import numpy as np
import pytest

from fastmlp.backends import _pool
from fastmlp.backends.blas import get_provider
from fastmlp.bench.crossover import _Job

# (m, n, k) column-major: k longest (cut along k when k / chunks >= 64), m longest, n longest,
# and a short k that is not cut along k
SHAPES = ((20, 7, 300), (300, 7, 20), (7, 300, 20), (33, 40, 100))
TOL = {np.float32: 2e-5, np.float64: 1e-12}


def stored(rng, rows, cols, ld, dtype):
    """A column-major rows x cols matrix with leading dimension ld: (the buffer, the view)."""
    buf = rng.standard_normal((cols, ld)).astype(dtype)
    return buf, buf[:, :rows].T


def pool_gemm(dtype, ta, tb, m, n, k, beta, chunks, workers, seed=0):
    """C = op(A)·op(B) + beta·C through fm_gemm; returns (C, the float64 product, C's
    buffer rows past m before the call, the same after it)."""
    rng = np.random.default_rng(seed)
    pad = 3
    ar, ac = (m, k) if ta == "N" else (k, m)
    br, bc = (k, n) if tb == "N" else (n, k)
    abuf, A = stored(rng, ar, ac, ar + pad, dtype)
    bbuf, B = stored(rng, br, bc, br + pad, dtype)
    cbuf, C = stored(rng, m, n, m + pad, dtype)
    opA, opB = (A if ta == "N" else A.T), (B if tb == "N" else B.T)
    pad_before = cbuf[:, m:].copy()
    want = opA.astype(np.float64) @ opB.astype(np.float64) + beta * C.astype(np.float64)
    alpha, b = np.ones(1, dtype), np.full(1, beta, dtype)
    p = get_provider()
    gemm = p.sgemm if dtype == np.float32 else p.dgemm
    item = np.dtype(dtype).itemsize
    job = _Job(gemm, ta.encode(), tb.encode(), m, n, k, ar + pad, br + pad, m + pad, item,
               chunks, int(workers), item, alpha.ctypes.data, abuf.ctypes.data,
               bbuf.ctypes.data, b.ctypes.data, cbuf.ctypes.data, None)
    ctypes.CFUNCTYPE(None, ctypes.POINTER(_Job))(_pool.gemm_address())(ctypes.byref(job))
    return C.copy(), want, pad_before, cbuf[:, m:].copy()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ta,tb", [("N", "N"), ("N", "T"), ("T", "N"), ("T", "T")])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("chunks", [1, 2, 3, 5])
def test_pool_gemm_matches_the_product_and_ignores_the_workers(dtype, ta, tb, shape, chunks):
    m, n, k = shape
    for beta in (0.0, 0.5):
        alone, want, pad_before, pad_after = pool_gemm(dtype, ta, tb, m, n, k, beta, chunks,
                                                       workers=False)
        scale = np.abs(want).max()
        np.testing.assert_allclose(alone, want, rtol=TOL[dtype], atol=TOL[dtype] * scale)
        assert np.array_equal(pad_after, pad_before)   # C's rows past m (ld > m) untouched
        if _pool.workers() >= 1:
            shared = pool_gemm(dtype, ta, tb, m, n, k, beta, chunks, workers=True)[0]
            assert alone.tobytes() == shared.tobytes()

