"""pytest-benchmark suite of fastmlp (docs/benchmarks.md).

Run it by naming the folder: `pytest bench` (timed) or `pytest bench --benchmark-disable -q`
(smoke: every body once, correctness checks included, reduced time-to-accuracy runs).  The
default `pytest` collects only tests/ (testpaths), so none of this runs there.

Every benchmark checks its contender against the NumPy reference before timing it; a missing
optional peer (torch, scikit-learn) or dataset skips with the reason.  Groups compare like
with like: `kernels ...`, `step ...`, `inference`, `tta ...`.
"""
import os
import pathlib

import pytest

import fastmlp
from fastmlp.bench import cases as B

REPO = pathlib.Path(__file__).resolve().parents[1]


def pytest_report_header(config):
    import numba
    lines = [f"fastmlp {fastmlp.__version__} from {pathlib.Path(fastmlp.__file__).parent}; "
             f"backends {fastmlp.available_backends()}; numba {numba.__version__}; "
             f"cpus {os.cpu_count()}"]
    for mod in ("torch", "sklearn"):
        try:
            m = __import__(mod)
            extra = f", {m.get_num_threads()} threads" if mod == "torch" else ""
            lines.append(f"{mod} {m.__version__}{extra}")
        except ImportError:
            lines.append(f"{mod} not installed: its benchmarks skip")
    lines += [f"floor-{k}: {v}" for k, v in B.floor_libraries().items()]
    forced = [v for v in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if v in os.environ]
    if forced:
        lines.append(f"warning: {' and '.join(forced)} set: OpenBLAS runs forced kernels; for "
                     "figures run `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE pytest bench`")
    return lines


def pytest_configure(config):
    pkg = pathlib.Path(fastmlp.__file__).resolve().parent
    if pkg.parent == REPO and not any((pkg / "backends").glob("_cython*.so")):
        pytest.exit("bench/ is importing fastmlp from the source checkout, which has no compiled "
                    "extension: run `pytest bench` (not `python -m pytest`) after "
                    "`pip install .[bench]`, or build in place first", returncode=4)


@pytest.fixture
def require_backend():
    """require_backend(name) skips when backend `name` does not import here."""
    def require(name):
        if name not in fastmlp.available_backends():
            pytest.skip(f"backend {name!r} is not available here")
        return name
    return require


@pytest.fixture
def build():
    """build(builder, *args) calls a fastmlp.bench.cases builder; a missing peer (torch,
    scikit-learn) or dataset skips the benchmark with the builder's reason."""
    def call(builder, *args, **kwargs):
        try:
            return builder(*args, **kwargs)
        except B.Unavailable as exc:
            pytest.skip(str(exc))
    return call


@pytest.fixture
def record_rate(benchmark):
    """record_rate(unit, amount) puts the median rate in extra_info: 'GFLOP/s' (amount =
    flops per call) or 'GB/s' (bytes per call).  Nothing in smoke mode: no timings there."""
    def record(unit, amount):
        stats = getattr(benchmark, "stats", None)
        if stats is not None and not benchmark.disabled:
            benchmark.extra_info[unit] = round(amount / stats.stats.median / 1e9, 2)
    return record


@pytest.fixture
def smoke(benchmark):
    """True under --benchmark-disable: bodies run once, so heavy cases shrink."""
    return bool(benchmark.disabled)
