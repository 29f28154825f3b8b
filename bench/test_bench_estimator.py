"""Estimator overhead: `MLPClassifier.fit` against `Trainer.fit` on the same training (digits,
64-100-10, Adam, batch 200, 200 epochs, float32), per compiled backend, one group per backend.
Both run the Trainer's one loop and fused step; the group shows what the estimator's own
bookkeeping (scikit-learn's validation, shuffles, loss curve, stopping rules) costs.
`fastmlp bench` interleaves the two and reports the per-step ratio against its 1.05 target.
extra_info holds µs per step."""
import pytest

from fastmlp.bench import cases as B


@pytest.mark.parametrize("who", ["MLPClassifier.fit", "Trainer.fit"])
@pytest.mark.parametrize("backend", ["cython", "numba"])
def test_estimator_overhead(benchmark, require_backend, backend, who):
    require_backend(backend)
    benchmark.group = f"estimator overhead {backend}"
    fits = B.estimator_vs_trainer(backend)
    benchmark(fits[who])
    if not benchmark.disabled:
        benchmark.extra_info["us/step"] = round(benchmark.stats.stats.median / fits["steps"]
                                                * 1e6, 1)
