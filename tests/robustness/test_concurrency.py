"""Threads do not change results: models fitted at once from several Python threads end
bit-identical to the same models fitted one after another, and threads predicting with one
shared MLP (and one shared, freshly unpickled MLPClassifier) get the serial predictions."""
import pickle
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from fastmlp import MLP, MLPClassifier, Trainer, inference


def _fit(backend, seed, X, y, barrier=None):
    m = MLP((64, 48, 10), seed=seed, backend=backend)
    tr = Trainer(m, optimizer="adam", lr=1e-3, batch_size=32, epochs=2, seed=seed)
    if barrier is not None:
        barrier.wait()
    tr.fit(X, y)
    return [p.tobytes() for p in m.weights + m.biases], tr.history.train_loss


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


def test_concurrent_predict_on_one_shared_model(digits, backend, monkeypatch):
    """Each thread predicts through its own cached buffers (fastmlp/inference.py)."""
    monkeypatch.setattr(inference, "CHUNK_BYTES", 1)   # chunks of MIN_CHUNK = 256 rows
    Xtr, ytr, Xte, _ = digits
    m = MLP((64, 48, 10), seed=0, backend=backend)
    Trainer(m, optimizer="adam", lr=3e-3, epochs=2, seed=0).fit(Xtr, ytr)
    # 150 rows (one chunk) each, and 5388 rows: 21 chunks and a short one
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


def test_two_threads_give_the_serial_result(digits, backend):
    Xtr, ytr = digits[:2]

    def train(seed, out):
        m = MLP((64, 256, 10), seed=seed, backend=backend)
        Trainer(m, optimizer="adam", lr=1e-3, batch_size=32, epochs=2, seed=seed).fit(Xtr, ytr)
        out[seed] = [w.tobytes() for w in m.weights + m.biases]
    serial, parallel = {}, {}
    for s in (1, 2):
        train(s, serial)
    threads = [threading.Thread(target=train, args=(s, parallel)) for s in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert parallel == serial


def test_prediction_buffers_are_per_thread(digits):
    """Each thread predicts through buffers of its own; the cache itself pickles empty."""
    X = digits[2]
    m = MLP((64, 48, 10), seed=0, backend="numpy")
    m.predict_proba(X)
    mine = m._inference.buffers(m, len(X))
    with ThreadPoolExecutor(1) as ex:
        theirs = ex.submit(lambda: m._inference.buffers(m, len(X))).result()
    assert theirs is not mine and not np.shares_memory(theirs.acts[0], mine.acts[0])
    assert m._inference.buffers(m, len(X)) is mine
    twin = pickle.loads(pickle.dumps(m._inference))
    assert getattr(twin._local, "buffers", None) is None
