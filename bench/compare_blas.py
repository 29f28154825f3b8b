"""NumPy's bundled OpenBLAS against SciPy's, on the big products of a training step.

    python bench/compare_blas.py [N H]       # default: 128 256 and 32 128

Why: the issue's GEMM floor is defined through `np.matmul` (NumPy's OpenBLAS), while the
compiled backends call SciPy's (`scipy.linalg.cython_blas`, the library the Cython contract
names). `fastmlp bench` shows both floors; this script separates the library from everything
else by making the *same* Fortran `sgemm` call, with the same arguments, through each
library's shared object via ctypes (the ~10 µs ctypes overhead is the same for both), beside
`np.matmul` itself. Libraries are found through threadpoolctl; a library whose `sgemm` symbol
is not one of the known names is left out. Timing is `fastmlp bench`'s own
(`fastmlp.bench.report.interleave`): rounds alternate the libraries, one group per thread pool, with
a pause between groups (the pools fight otherwise, docs/benchmarks.md); medians and IQR over
15 rounds of each turn's best call.
"""
import ctypes
import pathlib
import sys

import numpy as np
import scipy.linalg  # noqa: F401  (loads SciPy's OpenBLAS, so threadpoolctl sees it)
from threadpoolctl import threadpool_info

from fastmlp.bench.report import interleave

SYMBOLS = (("scipy_sgemm_64_", ctypes.c_int64), ("sgemm_64_", ctypes.c_int64),
           ("scipy_sgemm_", ctypes.c_int32), ("sgemm_", ctypes.c_int32))


def fortran_sgemm(path):
    """`sgemm(ta, tb, m, n, k, A, lda, B, ldb, C, ldc, alpha, beta)` on column-major data
    through the library at `path`, or None if it has no known sgemm symbol."""
    lib = ctypes.CDLL(path)
    for name, integer in SYMBOLS:
        f = getattr(lib, name, None)
        if f is not None:
            break
    else:
        return None
    ref, ptr = ctypes.byref, ctypes.c_void_p

    def sgemm(ta, tb, m, n, k, A, lda, B, ldb, C, ldc, alpha=1.0, beta=0.0):
        f(ctypes.c_char_p(ta), ctypes.c_char_p(tb), ref(integer(m)), ref(integer(n)),
          ref(integer(k)), ref(ctypes.c_float(alpha)), ptr(A.ctypes.data), ref(integer(lda)),
          ptr(B.ctypes.data), ref(integer(ldb)), ref(ctypes.c_float(beta)),
          ptr(C.ctypes.data), ref(integer(ldc)))
    return sgemm


def compare(n, h, d=784, rounds=15):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, d), np.float32)
    W = rng.standard_normal((d, h), np.float32)
    dH = rng.standard_normal((n, h), np.float32)
    out_h, out_w = np.empty((n, h), np.float32), np.empty((d, h), np.float32)
    libs = []  # (label, sgemm, True for NumPy's own library)
    for info in threadpool_info():
        if info.get("internal_api") == "openblas":
            g = fortran_sgemm(info["filepath"])
            if g is not None:
                owner = pathlib.Path(info["filepath"]).parent.name  # numpy.libs, scipy.libs
                libs.append((f"{owner}: OpenBLAS {info['version']}", g, owner == "numpy.libs"))
    # row-major C = A·B is the column-major Cᵀ = Bᵀ·Aᵀ
    products = {
        "X·W1 (forward)": (lambda g: g(b"N", b"N", h, n, d, W, h, X, d, out_h, h),
                           lambda: np.matmul(X, W, out=out_h)),
        "Xᵀ·dH (weight gradient)": (lambda g: g(b"N", b"T", h, d, n, dH, h, X, d, out_w, h),
                                    lambda: np.matmul(X.T, dH, out=out_w)),
    }
    for what, (via, matmul) in products.items():
        # one group per library (its thread pool); np.matmul runs on NumPy's
        groups = [[(f"sgemm, {label}", lambda g=g: via(g))]
                  + ([("np.matmul", matmul)] if is_numpy else []) for label, g, is_numpy in libs]
        if not any(is_numpy for *_, is_numpy in libs):
            groups.append([("np.matmul", matmul)])
        best = interleave(groups, rounds, settle=0.15)
        print(f"N={n} H={h} {what}")
        for k, v in best.items():
            q1, med, q3 = np.percentile(v * 1e6, [25, 50, 75])
            print(f"    {k:<40} {med:8.1f} µs [{q1:.1f}-{q3:.1f}]")


if __name__ == "__main__":
    cases = [(int(sys.argv[1]), int(sys.argv[2]))] if len(sys.argv) == 3 else [(128, 256),
                                                                               (32, 128)]
    for n, h in cases:
        compare(n, h)
