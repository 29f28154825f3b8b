"""oneDNN's sgemm against OpenBLAS's, GEMM by GEMM of a training step, and in a digits fit.

    python bench/compare_providers.py [ROUNDS]     # default 9; needs the onednn extra

Why: the "onednn" GEMM provider (fastmlp.backends.blas) sends a float32 GEMM to oneDNN's
`dnnl_sgemm` only from `blas.ONEDNN_MIN_FLOPS` (2·m·n·k) up and leaves smaller ones to its
BLAS base, and "auto" picks it on oneDNN's AMX kernels.  This script shows the figures that
rule stands on (docs/benchmarks.md, "oneDNN's sgemm in the fused step"):

1. each of the step's five products (X·W1, H·W2, Hᵀ·dZ, dZ·W2ᵀ, Xᵀ·dH) at the digits shape
   and at 784-H-10 shapes, by address through the openblas32 sgemm, oneDNN's pure sgemm
   adapter, and the "onednn" provider's sgemm, with both thread pools held to one thread
   (as the fused step runs each call), interleaved; medians of each turn's best call.  The
   products are whole here; in a step, a product of at least contract.MIN_GEMM_FLOPS is
   cut into blocks on fastmlp's threads and the rule judges each block on its own;
2. a digits-size MLPClassifier.fit (1400x64, 100 hidden, 200 epochs, float32) with
   FASTMLP_GEMM=openblas against FASTMLP_GEMM=onednn, each compiled backend, interleaved;
3. the fused float32 step itself, as `fit` runs it (the thread policy steering, a slice of
   STEP_CASES' steps per call), on a Trainer built with each provider, interleaved in pairs:
   the median and IQR of onednn's time ÷ openblas's, round by round;
4. whole fits, which decide "auto": Fashion-MNIST 784-256-10, Adam, batch 128, 3 epochs
   (when the dataset is installed), each provider in turn, alternating which goes first.
   On the AVX512-BF16 EPYC, part 3 favoured oneDNN at N >= 128 while this part measured
   it at 0.96-1.16x openblas's time (a fit's batches change every step; part 3 reuses one).

Run it with the benchmark's environment (`env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE`).
"""
import contextlib
import os
import sys
import time
import types
import warnings

import numpy as np
from sklearn.datasets import load_digits

from fastmlp import MLPClassifier
from fastmlp.backends import blas
from fastmlp.bench import cases as B
from fastmlp.bench.timing import interleave
from fastmlp.threads import ThreadPolicy

SHAPES = ((200, 100, 64), (32, 128, 784), (128, 256, 784), (512, 1024, 784))   # N, H, D


def per_gemm(rounds):
    ob, od = blas.get_provider("openblas"), blas.get_provider("onednn")
    libs = {"openblas": ob, "dnnl": types.SimpleNamespace(sgemm=od.engine.sgemm),
            "provider": od}
    print(f"per GEMM, one thread each: openblas = {ob.describe()}\n  dnnl = oneDNN's sgemm "
          f"for every call; provider = \"onednn\" (oneDNN from {blas.ONEDNN_MIN_FLOPS:g} "
          "flops, openblas below)")
    policy = ThreadPolicy(od, 1)   # the openblas pool on 1 thread, TBB held to 1
    policy.begin()
    try:
        for n, h, d in SHAPES:
            named = B._floor_products(n, h, d, 10, np.float32, 0)
            groups = [[(f"{g} {k}", B._provider_floor([p], lib, np.float32))
                       for k, lib in libs.items()] for g, p in named.items()]
            best = interleave(groups, rounds, 0.0)
            print(f"N={n} H={h} D={d}:  MFLOP  openblas µs  dnnl ÷ openblas  "
                  "provider ÷ openblas")
            for g, (a, b, _) in named.items():
                t = {k: np.median(best[f"{g} {k}"]) for k in libs}
                print(f"  {g:8s} {2 * a.shape[0] * a.shape[1] * b.shape[1] / 1e6:8.2f} "
                      f"{t['openblas'] * 1e6:10.1f}  {t['dnnl'] / t['openblas']:15.2f}  "
                      f"{t['provider'] / t['openblas']:19.2f}")
    finally:
        policy.end()


@contextlib.contextmanager
def pinned(gemm):
    """FASTMLP_GEMM=gemm inside the block (what "auto" means to a step built there)."""
    os.environ["FASTMLP_GEMM"] = gemm
    try:
        yield
    finally:
        del os.environ["FASTMLP_GEMM"]


def digits_fit(rounds):
    X, y = load_digits(return_X_y=True)
    X, y = (X / 16).astype(np.float32)[:1400], y[:1400]

    def fit(gemm, backend):
        def run():
            with pinned(gemm):
                MLPClassifier((100,), max_iter=200, tol=0, n_iter_no_change=10**6,
                              random_state=0, backend=backend).fit(X, y)
        return run

    groups = [[(f"{b} {g}", fit(g, b)) for b in ("cython", "numba")
               for g in ("openblas", "onednn")]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        best = interleave(groups, rounds, 0.0, turn_seconds=0.0)
    print("digits MLPClassifier.fit, 200 epochs: median ms over rounds")
    for b in ("cython", "numba"):
        o, d = (np.median(best[f"{b} {g}"]) for g in ("openblas", "onednn"))
        print(f"  {b:7s} openblas {o * 1e3:7.1f}  onednn {d * 1e3:7.1f}  "
              f"onednn ÷ openblas {d / o:5.2f}")


STEP_CASES = (("sgd", 128, 256, 10), ("sgd", 32, 128, 40), ("sgd", 512, 1024, 1),
              ("adam", 128, 256, 10), ("adam", 32, 128, 40))   # opt, N, H, steps per call


def fused_step(rounds):
    print("fused float32 step (784-H-10), FASTMLP_GEMM=onednn ÷ openblas, round by round")
    for backend in ("cython", "numba"):
        for opt, n, h, steps in STEP_CASES:
            pair = []
            for gemm in ("openblas", "onednn"):
                with pinned(gemm):   # read when the Trainer builds its step
                    pair.append((gemm, B.fastmlp_steps(backend, opt, n, h, steps)))
            best = interleave([pair], rounds, 0.0, turn_seconds=0.05)
            r = best["onednn"] / best["openblas"]
            print(f"  {backend:6s} {opt:4s} N={n:3d} H={h:4d}: openblas "
                  f"{np.median(best['openblas']) / steps * 1e6:7.1f} µs  ratio "
                  f"{np.median(r):.3f} [IQR {np.percentile(r, 25):.3f}, "
                  f"{np.percentile(r, 75):.3f}]")


def fashion_fit(rounds):
    from fastmlp import MLP, Trainer
    from fastmlp.datasets import load_fashion_mnist
    try:
        X, y = load_fashion_mnist()[:2]
    except (OSError, FileNotFoundError) as exc:
        print(f"Fashion-MNIST fit: skipped ({exc})")
        return
    X = np.ascontiguousarray(X, dtype=np.float32)
    print("Fashion-MNIST 784-256-10 fit, Adam, batch 128, 3 epochs: seconds, onednn ÷ openblas")
    for backend in ("cython", "numba"):
        t = {"openblas": [], "onednn": []}
        for r in range(rounds):
            for gemm in ("openblas", "onednn")[::1 if r % 2 == 0 else -1]:
                with pinned(gemm):
                    tr = Trainer(MLP((784, 256, 10), seed=0, backend=backend), optimizer="adam",
                                 lr=1e-3, batch_size=128, epochs=3, seed=0)
                    start = time.perf_counter()
                    tr.fit(X, y)
                    t[gemm].append(time.perf_counter() - start)
        o, d = np.array(t["openblas"]), np.array(t["onednn"])
        print(f"  {backend:6s} openblas {np.median(o):6.3f}  onednn {np.median(d):6.3f}  ratio "
              f"{np.median(d / o):.3f} [IQR {np.percentile(d / o, 25):.3f}, "
              f"{np.percentile(d / o, 75):.3f}]")


if __name__ == "__main__":
    r = int(sys.argv[1]) if len(sys.argv) > 1 else 9
    per_gemm(r)
    digits_fit(r)
    fused_step(r)
    fashion_fit(r)
