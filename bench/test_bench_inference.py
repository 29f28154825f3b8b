"""Inference: `predict` throughput on 10 000 rows of a 784-256-10 float32 net, per backend and
PyTorch (argmax under torch.inference_mode(), default threads).

All contenders use the same weights and rows; before timing, each one's labels are held to
the NumPy reference's (at least 99.9% equal: a near-tie may round either way).
extra_info holds GFLOP/s and rows per second.
"""
import numpy as np
import pytest

from fastmlp.bench import cases as B
from fastmlp.bench import peers as P
from fastmlp.backends import BACKEND_NAMES

ROWS = 10_000


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
