"""Time to accuracy: train a D-256-10 net with Adam (lr 1e-3, batch 128, seed 0) on
Fashion-MNIST (10 epochs) and on scikit-learn's digits (30 epochs) with each compiled
fastmlp backend, PyTorch and scikit-learn; wall time of training (one round) and test
accuracy (extra_info), which must reach a floor so a fast-but-wrong run fails.

Smoke mode (--benchmark-disable) trains 1 epoch on the first 6000 Fashion-MNIST images and
3 epochs of digits, with lower accuracy floors.  Fashion-MNIST skips with a reason when it is
not installed (Debian: dataset-fashion-mnist).
"""
import pytest

from fastmlp.bench import tta as T

CONTENDERS = ("cython", "numba", "torch", "sklearn")
# dataset -> (epochs, training rows or None for all, accuracy floor), full and smoke
PLAN = {"fashion-mnist": ((T.TTA_EPOCHS["fashion-mnist"], None, 0.85), (1, 6000, 0.6)),
        "digits": ((T.TTA_EPOCHS["digits"], None, 0.93), (3, None, 0.5))}


@pytest.mark.parametrize("contender", CONTENDERS)
@pytest.mark.parametrize("name", tuple(PLAN))
def test_time_to_accuracy(benchmark, require_backend, build, smoke, name, contender):
    if contender in ("cython", "numba"):
        require_backend(contender)
    epochs, rows, floor = PLAN[name][smoke]
    Xtr, ytr, Xte, yte = build(T.dataset, name)
    data = (Xtr[:rows], ytr[:rows], Xte, yte)
    benchmark.group = f"tta {name} {epochs} epochs" + (" (smoke)" if smoke else "")
    result = benchmark.pedantic(build, args=(T.time_to_accuracy, contender, data, epochs),
                                rounds=1, iterations=1)
    benchmark.extra_info.update(accuracy=round(result["accuracy"], 4), epochs=epochs,
                                n_train=int(data[0].shape[0]))
    assert result["accuracy"] >= floor, \
        f"{contender} reached {result['accuracy']:.3f} on {name}, expected >= {floor}"
