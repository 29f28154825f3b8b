"""fastmlp's pool (csrc/pool.c) called directly.  fm_gemm: every way it cuts a GEMM into
blocks (along m, along n, and along k with partial sums) against a float64 product, for
each transpose, a beta, several block counts and padded leading dimensions, and the same bits
whether the pool's workers take part or not.  Its batch gather: the reference's gather_rows
bit for bit, its refusals, and a fit that uses it."""
import ctypes

import numpy as np
import pytest

from fastmlp import MLP, Trainer
from fastmlp import trainer as trainer_module
from fastmlp.backends import _pool, blas, onednn, reference
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



# ------------------------------------------------------------------ the pool's batch gather

@pytest.mark.parametrize("dtype,std", [(np.float32, False), (np.float32, True),
                                       (np.float64, False), (np.float64, True),
                                       (np.uint16, False)])
@pytest.mark.parametrize("m,d", [(1, 1), (7, 5), (33, 784), (4, 130)])
@pytest.mark.parametrize("chunks", [1, 2, 3, 5])
def test_pool_gather_is_gather_rows_bit_for_bit(dtype, std, m, d, chunks):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((50, d)).astype(np.float32)
    X = X.view(np.uint32).astype(np.uint16) if dtype == np.uint16 else X.astype(dtype)
    rows = rng.integers(0, 50, m).astype(np.int64)
    stats = (rng.standard_normal(d).astype(dtype), rng.uniform(0.5, 2, d).astype(dtype)) \
        if std else (None, None)
    want = reference.gather_rows(X, rows, np.empty((m, d), dtype), *(stats if std else ()))
    for workers in (0, 1):
        out = np.zeros((m, d), dtype) + 7
        assert _pool.gather(X, rows, out, *stats, chunks, workers) is out
        assert out.tobytes() == want.tobytes()


def test_pool_gather_refuses_bad_input():
    X, out, rows = np.ones((4, 3), np.float32), np.empty((2, 3), np.float32), np.arange(2)
    with pytest.raises(TypeError, match="float32 or float64 alike"):
        _pool.gather(X, rows, np.empty((2, 3)), None, None, 2, 1)
    bits = np.ones((4, 3), np.uint16)
    with pytest.raises(TypeError, match="no mean, scale"):   # bits are only copied
        _pool.gather(bits, rows, np.empty((2, 3), np.uint16), np.zeros(3, np.uint16),
                     np.ones(3, np.uint16), 2, 1)
    with pytest.raises(TypeError, match="rows int64"):
        _pool.gather(X, rows.astype(np.int32), out, None, None, 2, 1)
    with pytest.raises(IndexError, match="row 4 out of range"):
        _pool.gather(X, np.array([0, 4]), out, None, None, 2, 1)
    with pytest.raises(ValueError, match=r"out must be \(2, 3\)"):
        _pool.gather(X, rows, np.empty((3, 3), np.float32), None, None, 2, 1)
    with pytest.raises(ValueError, match="both mean and scale"):
        _pool.gather(X, rows, out, np.zeros(3, np.float32), None, 2, 1)
    with pytest.raises(ValueError, match="must be 2-D"):
        _pool.gather(X[0], rows, out, None, None, 2, 1)
    with pytest.raises(ValueError, match="not C-contiguous"):
        _pool.gather(np.ones((4, 6), np.float32)[:, ::2], rows, out, None, None, 2, 1)


NEEDS_ONEDNN = pytest.mark.skipif(not onednn.available(),
                                  reason=f"oneDNN is not installed ({onednn.EXTRA})")


@pytest.mark.parametrize("backend", ["cython", "numba"])
@pytest.mark.parametrize("standardize,precision", [
    (False, None), (True, None), pytest.param(False, "bf16", marks=NEEDS_ONEDNN),
    pytest.param(True, "bf16", marks=NEEDS_ONEDNN)])
def test_fit_gathers_on_the_pool_to_the_same_bits(backend, standardize, precision,
                                                  monkeypatch):
    """A 784-128 net at batch 32 (its forward product cut along the 784 inputs) gathers its
    batches (float rows, or a bf16 step's bits) with the pool's gather, and trains to the
    bits of the backend's gather_rows."""
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((200, 784)).astype(np.float32), rng.integers(0, 10, 200)
    calls = []

    def counted(*a):
        calls.append(a[-2])
        return _pool.gather(*a)

    weights = []
    for pooled in (True, False):
        if pooled:
            monkeypatch.setattr(trainer_module, "_pool_gather_rows", counted)
        else:
            monkeypatch.setattr(Trainer, "_pool_gather", lambda self, X, bs, sparse: 0)
        m = MLP((784, 128, 10), backend=backend, seed=0, standardize=standardize)
        Trainer(m, optimizer="sgd", momentum=0.9, lr=1e-2, batch_size=32, epochs=2,
                seed=0, precision=precision).fit(X, y)
        weights.append(b"".join(w.tobytes() for w in m.weights + m.biases))
    assert len(calls) == 2 * 7 and set(calls) == {blas.gemm_pool()[1]}
    assert weights[0] == weights[1]
