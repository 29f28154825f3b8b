"""Inference on a 784-256-10 float32 net: `predict` throughput on 10 000 rows per backend and
PyTorch, and `predict_proba` on 1 row (latency) and on 10 000 rows (throughput) against
scikit-learn, PyTorch and onnxruntime (fastmlp/bench/inference.py; the report's "inference"
section times the same closures interleaved).

All contenders use the same weights and rows; before timing, each one's labels are held to
the NumPy reference's (at least 99.9% equal: a near-tie may round either way) and each one's
probabilities to the reference's within 1e-5.  extra_info holds GFLOP/s and rows per second.
"""
import numpy as np
import pytest

from fastmlp.bench import cases as B
from fastmlp.bench import inference as INF
from fastmlp.bench import peers as P
from fastmlp.backends import BACKEND_NAMES

ROWS = 10_000
PROBA = tuple(f"fastmlp {b}" for b in BACKEND_NAMES) + ("sklearn", "torch", INF.ORT_NAME,
                                                        INF.ORT_1T)


@pytest.fixture(scope="module")
def reference_labels():
    return B.fastmlp_predict("numpy", ROWS)()


@pytest.mark.benchmark(group="inference 784-256-10, 10000 rows")
@pytest.mark.parametrize("name", BACKEND_NAMES + ("torch",))
def test_predict(benchmark, require_backend, build, record_rate, reference_labels, name):
    if name == "torch":
        fn = build(P.torch_predict, ROWS)
    else:
        fn = B.fastmlp_predict(require_backend(name), ROWS)
    labels = np.asarray(fn())
    assert labels.shape == reference_labels.shape
    assert np.mean(labels == reference_labels) >= 0.999, f"{name} predicts other labels"
    benchmark(fn)
    record_rate("GFLOP/s", B.predict_flops(ROWS))
    if not benchmark.disabled:
        benchmark.extra_info["rows/s"] = round(ROWS / benchmark.stats.stats.median)


def _proba(name, rows, require_backend, build):
    if name.startswith("fastmlp "):
        return INF.fastmlp_proba(require_backend(name.split()[1]), rows)
    builders = {"sklearn": INF.sklearn_proba, "torch": INF.torch_proba,
                INF.ORT_NAME: INF.ort_proba, INF.ORT_1T: lambda r: INF.ort_proba(r, threads=1)}
    return build(builders[name], rows)


@pytest.mark.parametrize("name", PROBA)
@pytest.mark.parametrize("rows", INF.ROWS)
def test_predict_proba(benchmark, require_backend, build, record_rate, rows, name):
    benchmark.group = f"inference predict_proba 784-256-10, {rows} row{'s' * (rows > 1)}"
    fn = _proba(name, rows, require_backend, build)
    assert not INF.check([[(name, fn)]], rows), f"{name}: other probabilities"
    benchmark(fn)
    record_rate("GFLOP/s", INF.flops(rows))
    if not benchmark.disabled:
        benchmark.extra_info["rows/s"] = round(rows / benchmark.stats.stats.median)
