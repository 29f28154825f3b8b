"""Where a GEMM of the fused step starts to gain from fastmlp's second thread.

Design: one float32 GEMM of the shape the step's first layer makes, C (n, h) = X (n, 784) ·
W (784, h), through fastmlp's pool (csrc/pool.c, the call the fused steps make) with the
blocks computed by the caller alone and with the pool's workers, interleaved; the ratio
workers / alone per size, median [IQR] over rounds.  contract.MIN_GEMM_FLOPS, the size from
which the step uses the workers, comes from this table (docs/benchmarks.md).
"""
import ctypes

import numpy as np

from .timing import interleave, ratio

# (kind, n, h) with 784 inputs: 0.05 to 51 MFLOP, the forward X·W and the gradient Xᵀ·δ
SHAPES = tuple((kind, n, h) for kind in ("forward", "dW")
               for n, h in ((2, 16), (4, 32), (8, 32), (16, 64), (32, 128), (128, 256)))


class _Job(ctypes.Structure):
    _fields_ = [("gemm", ctypes.c_void_p), ("ta", ctypes.c_char), ("tb", ctypes.c_char),
                ("m", ctypes.c_int), ("n", ctypes.c_int), ("k", ctypes.c_int),
                ("lda", ctypes.c_int), ("ldb", ctypes.c_int), ("ldc", ctypes.c_int),
                ("itemsize", ctypes.c_int), ("chunks", ctypes.c_int),
                ("use_workers", ctypes.c_int), ("opsize", ctypes.c_int),
                ("alpha", ctypes.c_void_p),
                ("A", ctypes.c_void_p), ("B", ctypes.c_void_p), ("beta", ctypes.c_void_p),
                ("C", ctypes.c_void_p), ("post", ctypes.c_void_p)]   # post: NULL, no update


def pool_gemm(n, h, d=784, workers=True, seed=0, kind="forward"):
    """A closure computing, through fastmlp's pool (checked once against np.matmul), with or
    without its workers: kind "forward": X (n, d) · W (d, h), the first layer's forward;
    "dW": Xᵀ (d, n) · δ (n, h), its weight gradient."""
    from ..backends import _pool
    from ..backends.blas import gemm_pool, get_provider
    layout = _pool.job_layout()
    if ctypes.sizeof(_Job) != layout["size"] or _Job.post.offset != layout["post"]:
        raise RuntimeError(f"fm_job is not laid out as crossover.py expects: {layout}")
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(np.float32)
    one, zero = np.ones(1, np.float32), np.zeros(1, np.float32)
    address, chunks = gemm_pool()
    if kind == "forward":
        W = rng.standard_normal((d, h)).astype(np.float32)
        out, A, B = np.empty((n, h), np.float32), X, W
        # row-major out = X·W is column-major outᵀ (h, n) = Wᵀ (h, d) · Xᵀ (d, n)
        args = (b"N", b"N", h, n, d, h, d, h)
    elif kind == "dW":
        W = rng.standard_normal((n, h)).astype(np.float32)   # δ
        out, A, B = np.empty((d, h), np.float32), X.T, W
        # row-major out (d, h) = Xᵀ·δ is column-major outᵀ (h, d) = δᵀ (h, n) · X (n, d)
        args = (b"N", b"T", h, d, n, h, d, h)
    else:
        raise ValueError(f"kind must be 'forward' or 'dW', got {kind!r}")
    job = _Job(get_provider().sgemm, *args, 4, chunks, int(workers), 4, one.ctypes.data,
               W.ctypes.data, X.ctypes.data, zero.ctypes.data, out.ctypes.data)
    fm = ctypes.CFUNCTYPE(None, ctypes.POINTER(_Job))(address)
    ref = ctypes.byref(job)
    keep = (X, W, out, one, zero, job)

    def run(keep=keep):
        fm(ref)
    run()
    want = A.astype(np.float64) @ B.astype(np.float64)
    if not np.allclose(out, want, rtol=1e-4, atol=1e-3 * np.abs(want).max()):
        raise AssertionError(f"pool GEMM {kind} {n}x{d}x{h} differs from np.matmul")
    return run


def crossover(shapes=SHAPES, rounds=15, say=print):
    """[{"kind", "n", "h", "mflop", "alone_us", "workers_us", "ratio": (q1, median, q3)}]: ratio is
    time with the workers ÷ time alone (< 1: the second thread pays)."""
    from ..backends import _pool
    from ..backends.blas import get_provider
    from ..threads import ThreadPolicy
    if _pool.workers() < 1:
        return []
    # as while training: the provider's own pool (and oneDNN's TBB) runs one thread
    policy = ThreadPolicy(get_provider(), 1)
    policy.begin()
    try:
        out = []
        for kind, n, h in shapes:
            say(f"  crossover {kind} {n}x784x{h}")
            best = interleave([[("alone", pool_gemm(n, h, workers=False, kind=kind)),
                                ("workers", pool_gemm(n, h, workers=True, kind=kind))]],
                              rounds, 0.0)
            out.append({"kind": kind, "n": n, "h": h, "mflop": 2 * n * 784 * h / 1e6,
                        "alone_us": float(np.median(best["alone"]) * 1e6),
                        "workers_us": float(np.median(best["workers"]) * 1e6),
                        "ratio": ratio(best, "workers", "alone")})
        return out
    finally:
        policy.end()


def format_crossover(rows, min_flops):
    lines = [f"{'GEMM':<22}{'MFLOP':>7}{'alone µs':>10}{'2 threads µs':>14}"
             f"{'ratio [IQR]':>20}  step uses"]
    for r in rows:
        q1, v, q3 = r["ratio"]
        uses = "2 threads" if r["mflop"] * 1e6 >= min_flops else "1 thread"
        what = f"{'X·W' if r['kind'] == 'forward' else 'Xᵀ·δ'} {r['n']}x784x{r['h']}"
        lines.append(f"{what:<22}{r['mflop']:7.2f}{r['alone_us']:10.1f}"
                     f"{r['workers_us']:14.1f}   {v:5.2f} [{q1:.2f}-{q3:.2f}]  {uses}")
    return "\n".join(lines)
