"""Sparse input: fastmlp.MLPClassifier against scikit-learn's on a TF-IDF-like CSR problem
(20 000 x 10 000 at 0.5%, 100 hidden units, Adam, float32; one group per backend), one fit
of `epochs` epochs per round.  Smoke mode shrinks it to 2 000 rows, 1 epoch.  Before
timing, fastmlp's fit on the sparse X is held to its fit on the same X dense."""
import numpy as np
import pytest

from fastmlp.bench import cases as B


@pytest.mark.parametrize("who", ["fastmlp", "sklearn"])
@pytest.mark.parametrize("backend", ["cython", "numba"])
def test_sparse_fit(benchmark, require_backend, build, smoke, backend, who):
    require_backend(backend)
    case = dict(rows=2000, epochs=1) if smoke else {}
    fits = build(B.sparse_fits, backend, **case)
    benchmark.group = f"sparse {backend}" + (" (smoke)" if smoke else "")
    if who == "fastmlp":
        X, y = fits["data"]
        fits["fastmlp"]()
        sparse = [c.copy() for c in fits["model"].coefs_]
        fits["model"].fit(X.toarray(), y)
        for a, b in zip(sparse, fits["model"].coefs_):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    benchmark.pedantic(fits[who], rounds=1 if smoke else 3, iterations=1)
    benchmark.extra_info["epochs"] = fits["epochs"]
