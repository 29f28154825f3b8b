"""Resident memory stays flat over 10 000 training steps, and threads do not change results.

* Memory: after a warm-up (JIT compilation, workspaces, optimizer state), 10 000 public
  `Trainer.step` calls -- alternating an Adam and a Nesterov trainer on one model, so every
  kernel runs -- may grow the process's resident set by at most RSS_BOUND = 1 MiB.  That
  is ~100 bytes a step: any per-step leak of a Python object, a buffer or a reference is
  caught (a 200-byte object leaked per step grew the RSS by 1.0-2.7 MiB; measured without
  one: 0-20 KiB).
  tracemalloc (test_trainer.py) sees Python allocations only; RSS also sees the kernels'
  C-level ones (Cython memoryviews, Numba's runtime, BLAS).
* Threads: three models fitted at once from three Python threads end bit-identical to the
  same three fitted one after another; four threads predicting with one shared MLP (and one
  shared, freshly unpickled MLPClassifier) get the serial predictions every time.
"""
import gc
import pickle
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import psutil
import pytest

from fastmlp import MLP, Trainer
from fastmlp.datasets import load_digits
from fastmlp.estimator import MLPClassifier

BACKENDS = ("numpy", "numba", "cython")
RSS_BOUND = 1 << 20  # bytes over 10 000 steps (measured: 0 to 20 KiB)
STEPS = 10_000


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def _rss():
    gc.collect()
    return psutil.Process().memory_info().rss


@pytest.mark.parametrize("backend", ["numba", "cython"])
def test_rss_is_flat_over_10000_steps(backend):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 32)).astype(np.float32)
    y = rng.integers(0, 10, 64)
    m = MLP((32, 64, 10), seed=0, backend=backend)
    trainers = [Trainer(m, optimizer="adam", lr=1e-3, batch_size=64),
                Trainer(m, optimizer="sgd", lr=1e-2, momentum=0.9, nesterov=True,
                        weight_decay=1e-4, batch_size=64)]
    for i in range(1000):  # warm-up
        trainers[i % 2].step(X, y)
    before = _rss()
    for i in range(STEPS):
        trainers[i % 2].step(X, y)
    growth = _rss() - before
    assert np.isfinite(trainers[0].step(X, y))
    assert growth < RSS_BOUND, f"RSS grew by {growth / 2**20:.2f} MiB over {STEPS} steps"


def _fit(backend, seed, X, y, barrier=None):
    m = MLP((64, 48, 10), seed=seed, backend=backend)
    tr = Trainer(m, optimizer="adam", lr=1e-3, batch_size=32, epochs=2, seed=seed)
    if barrier is not None:
        barrier.wait()
    tr.fit(X, y)
    return [p.tobytes() for p in m.weights + m.biases], tr.history.train_loss


@pytest.mark.parametrize("backend", BACKENDS)
def test_concurrent_fits_equal_serial_fits(digits, backend):
    Xtr, ytr = digits[:2]
    seeds = (1, 2, 3)
    serial = [_fit(backend, s, Xtr, ytr) for s in seeds]
    barrier = threading.Barrier(len(seeds))
    with ThreadPoolExecutor(len(seeds)) as ex:
        concurrent = list(ex.map(lambda s: _fit(backend, s, Xtr, ytr, barrier), seeds))
    assert concurrent == serial
    assert serial[0] != serial[1]  # the seeds differ, so a mix-up would show


def _hammer(n_threads, work, rounds=15):
    """Run work(i) `rounds` times in each of n_threads threads started together; returns the
    results per thread."""
    barrier = threading.Barrier(n_threads)

    def run(i):
        barrier.wait()
        return [work(i) for _ in range(rounds)]
    with ThreadPoolExecutor(n_threads) as ex:
        return list(ex.map(run, range(n_threads)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_concurrent_predict_on_one_shared_model(digits, backend):
    Xtr, ytr, Xte, _ = digits
    m = MLP((64, 48, 10), seed=0, backend=backend)
    Trainer(m, optimizer="adam", lr=3e-3, epochs=2, seed=0).fit(Xtr, ytr)
    # the fourth input is larger than forward()'s 4096-row chunk
    inputs = [Xte[0::3], Xte[1::3], Xte[2::3], np.tile(Xtr, (4, 1))]
    serial = [(m.predict(X), m.predict_proba(X)) for X in inputs]
    before = [p.copy() for p in m.weights + m.biases]
    results = _hammer(4, lambda i: (m.predict(inputs[i]), m.predict_proba(inputs[i])))
    for i, rounds in enumerate(results):
        for pred, proba in rounds:
            np.testing.assert_array_equal(pred, serial[i][0])
            np.testing.assert_array_equal(proba, serial[i][1])
    assert all(np.array_equal(a, b) for a, b in zip(before, m.weights + m.biases))


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("backend", ["numba", "cython"])
def test_concurrent_predict_on_a_freshly_unpickled_estimator(digits, backend):
    """The first predict after unpickling builds the network lazily: four threads race to."""
    Xtr, ytr, Xte, _ = digits
    clf = MLPClassifier((32,), max_iter=5, random_state=0, backend=backend).fit(Xtr, ytr)
    want = clf.predict_proba(Xte)
    for _ in range(3):
        fresh = pickle.loads(pickle.dumps(clf))
        results = _hammer(4, lambda i: fresh.predict_proba(Xte), rounds=3)
        for rounds in results:
            for got in rounds:
                np.testing.assert_array_equal(got, want)
