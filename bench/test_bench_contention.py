"""Trainings at once: k processes of one contender (fastmlp, scikit-learn, PyTorch) started
together, each timing one digits-size fit (fastmlp.bench.contention).  One group per k; the
timed body is the whole batch of k processes (their start-up included), and extra_info holds
each process's own fit seconds.  `fastmlp bench` reports the ratios to the solo time and
fastmlp's targets (2 at once ≤ 2.5×, 4 at once ≤ 5×)."""
import pytest

from fastmlp.bench import contention as CT


@pytest.mark.parametrize("k", [1, 2, 4])
@pytest.mark.parametrize("who", CT.CONTENDERS)
def test_trainings_at_once(benchmark, smoke, who, k):
    why = CT.available(who)
    if why:
        pytest.skip(why)
    benchmark.group = f"contention {k} at once"
    epochs = 2 if smoke else CT.CASE["epochs"]
    runs = []
    benchmark.pedantic(lambda: runs.append(CT.run_together(who, k, epochs)), rounds=1,
                       iterations=1)
    assert len(runs[-1]) == k
    assert all(r["accuracy"] > (0.2 if smoke else 0.95) for r in runs[-1]), runs[-1]
    benchmark.extra_info["fit seconds"] = [round(r["seconds"], 4) for r in runs[-1]]
