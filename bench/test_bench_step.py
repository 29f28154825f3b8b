"""Train step: one optimizer step of a 784-H-10 float32 net, per contender, one group per
optimizer and shape so each table compares like with like.

Contenders: the GEMM floor (the step's five products alone; `floor-scipy` through SciPy's
cython_blas, `floor-numpy` through np.matmul, `floor-openblas` through the scipy-openblas32
library the fused steps call, `floor-onednn` through oneDNN's sgemm when the onednn extra is
installed; the header prints each library, version and kernel),
fastmlp's `_step` per backend (the hot loop of `fit`: batch already in the workspace, no
validation), the same as `fit` runs it (`-epoch`: 16 steps per call under the thread
policy; its time is per 16 steps), the same with precision="bf16" (`-bf16`: bfloat16 GEMM
operands through oneDNN; skipped without the extra), the public `step(X, y)` (`-public`),
PyTorch CPU and
scikit-learn's `partial_fit` when installed.  Before timing, one
step of each fastmlp backend and peer is held to the NumPy reference's step from the same
parameters (`fastmlp.bench.cases.check_step`).  pytest-benchmark times the contenders one after the
other; `fastmlp bench` interleaves them and reports ratios (docs/benchmarks.md).
"""
import time

import pytest

from fastmlp.bench import cases as B
from fastmlp.bench import peers as P

CONTENDERS = ("floor-scipy", "floor-numpy", "floor-openblas", "floor-onednn", "numpy", "numba",
              "cython", "numba-epoch", "cython-epoch", "numba-bf16", "cython-bf16",
              "numba-public", "cython-public", "torch", "sklearn")
EPOCH_STEPS = 16
SETTLE = 0.15   # seconds for the previous benchmark's BLAS threads to stop spinning


def contender(name, opt, n, h):
    """The closure timed for contender `name` (see CONTENDERS)."""
    if name.startswith("floor-"):
        return B.gemm_floor(n, h, blas=name[len("floor-"):])
    if name == "torch":
        return P.torch_step(opt, n, h)
    if name == "sklearn":
        return P.sklearn_step(opt, n, h)
    backend, _, kind = name.partition("-")
    if kind in ("epoch", "bf16"):
        precision = "bf16" if kind == "bf16" else None
        try:
            return B.fastmlp_steps(backend, opt, n, h, EPOCH_STEPS, precision=precision)
        except ImportError as exc:   # precision="bf16" without the onednn extra
            raise B.Unavailable(str(exc)) from None
    return B.fastmlp_step(backend, opt, n, h, public=kind == "public")


@pytest.mark.parametrize("name", CONTENDERS)
@pytest.mark.parametrize("n,h", B.STEP_SHAPES, ids=[f"N{n}-H{h}" for n, h in B.STEP_SHAPES])
@pytest.mark.parametrize("opt", tuple(B.OPTIMIZERS))
def test_step(benchmark, require_backend, build, record_rate, smoke, opt, n, h, name):
    benchmark.group = f"step {opt} N={n} H={h}"
    who = name.partition("-")[0]
    if who in ("numpy", "numba", "cython"):
        require_backend(who)
    if who != "floor" and who != "numpy":
        build(P.check_step, who, opt, n, h)
    fn = build(contender, name, opt, n, h)
    if not smoke:
        time.sleep(SETTLE)
        fn()
    benchmark(fn)
    benchmark.extra_info["excludes validation"] = name in ("numpy", "numba", "cython")
    steps = EPOCH_STEPS if name.endswith(("-epoch", "-bf16")) else 1
    benchmark.extra_info["steps per call"] = steps
    record_rate("GFLOP/s", steps * B.step_flops(n, h))


@pytest.mark.parametrize("activation", ["relu", "tanh", "logistic", "identity"])
@pytest.mark.parametrize("backend", ["cython", "numba"])
def test_step_activation(benchmark, require_backend, record_rate, smoke, backend, activation):
    """The fused Adam step at N=128, H=256 with each hidden activation (one group per
    backend): `fastmlp bench` reports the ratios to ReLU against the 1.15 target."""
    require_backend(backend)
    benchmark.group = f"step activation {backend} adam N=128 H=256"
    fn = B.fastmlp_step(backend, "adam", 128, 256, activation=activation)
    if not smoke:
        time.sleep(SETTLE)
    benchmark(fn)
    record_rate("GFLOP/s", B.step_flops(128, 256))
