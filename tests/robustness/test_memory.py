"""Training allocates nothing per step: tracemalloc sees no growth of Python allocations over
steady-state steps, and the process's resident set (which also sees the kernels' C-level
allocations: Cython memoryviews, Numba's runtime, BLAS) stays flat over 10 000 steps.
Prediction allocates nothing but its result once a thread has predicted as many rows."""
import gc
import tracemalloc

import numpy as np
import psutil
import pytest

from fastmlp import MLP, Trainer, inference

RSS_BOUND = 1 << 20  # bytes over 10 000 steps (measured: 0 to 20 KiB)


STEPS = 10_000


def _rss():
    gc.collect()
    return psutil.Process().memory_info().rss


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


def test_no_allocation_in_steady_state(digits, backend):
    Xtr, ytr = digits[:2]
    m = MLP((64, 128, 10), seed=0, backend=backend)
    tr = Trainer(m, optimizer="adam", lr=1e-3, batch_size=100, epochs=2)
    tr.fit(Xtr, ytr)  # warm-up: JIT, workspaces, optimizer state
    Xb, yb = Xtr[:100].copy(), ytr[:100].copy()
    ws = tr._workspace(100)
    for _ in range(20):
        tr._step(ws, Xb, yb)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        peak_growth = 0
        for i in range(200):
            tr._step(ws, Xb, yb)
            peak_growth = max(peak_growth, tracemalloc.get_traced_memory()[0] - base)
        end_growth = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    # one (100, 128) float32 activation alone is 51 kB; steady-state steps may hold a few
    # hundred bytes of Python objects at most
    assert peak_growth < 4096 and end_growth < 1024, (peak_growth, end_growth)


def test_fit_epoch_gathers_without_allocating_per_step(digits):
    Xtr, ytr = digits[:2]
    m = MLP((64, 128, 10), seed=0, backend="cython")
    tr = Trainer(m, batch_size=32, epochs=1, seed=0)
    tr.fit(Xtr, ytr)
    tracemalloc.start()
    try:
        tr.fit(Xtr, ytr)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # 42 steps; a fresh (32, 64) batch copy per step would be 8 kB each
    assert peak < 64 * 1024, peak


def test_sparse_epochs_allocate_nothing_per_step(compiled):
    """A sparse mini-batch is gathered into the workspace's CSR buffer: after a warm-up
    epoch, more epochs (shuffled) allocate no more than one epoch's order array."""
    import scipy.sparse as sp
    X = sp.random(640, 300, density=0.05, format="csr", random_state=0, dtype=np.float32)
    y = np.random.default_rng(0).integers(0, 4, 640)
    tr = Trainer(MLP((300, 32, 4), backend=compiled, seed=0), optimizer="adam", batch_size=64,
                 epochs=1, seed=0)
    from fastmlp.backends import validation
    Xc = validation.check_X(X, 300)
    y64, order = y.astype(np.int64), np.arange(640)
    for _ in range(3):   # warm-up: JIT, the CSR workspace, optimizer state, capacity
        tr.fit_epoch(Xc, y64, order=order, check_input=False)
    # gc.collect() empties the interpreter's free lists (tuples, frames, floats), which
    # otherwise fill slowly and look like growth; what remains is what fastmlp holds.
    # gc.freeze() moves every object alive now out of the collector's sight, so each of the
    # 42 collections below scans only what the epochs made, not the whole test session's heap
    # (unfrozen, they cost 36-39 s per backend in a full run)
    gc.collect()
    gc.freeze()
    tracemalloc.start()
    try:
        gc.collect()
        base = tracemalloc.get_traced_memory()[0]
        peak_growth, growth = 0, []
        for _ in range(2):
            for _ in range(20):   # 200 steps
                gc.collect()
                tracemalloc.reset_peak()
                start = tracemalloc.get_traced_memory()[0]
                tr.fit_epoch(Xc, y64, order=order, check_input=False)
                peak_growth = max(peak_growth, tracemalloc.get_traced_memory()[1] - start)
            gc.collect()
            growth.append(tracemalloc.get_traced_memory()[0] - base)
    finally:
        tracemalloc.stop()
        gc.unfreeze()
    # a batch's CSR copy (about 960 stored entries, 11.5 kB) would show at an epoch's peak,
    # over the epoch's transient Python objects (measured 4008-4064 bytes: frames, the
    # calls' small ints and tuples; a 4096 bound failed once in a full run); a leak of 2 bytes
    # a step would add 400 bytes between the two counts
    assert peak_growth < 8192 and growth[1] - growth[0] < 400, (peak_growth, growth)


def _peak_growth(fn):
    """(peak growth of traced memory during fn(), the result's nbytes)."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        out = fn()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    return peak, out.nbytes


@pytest.mark.parametrize("output", ["softmax", "logistic", "identity", "exp"])
@pytest.mark.parametrize("rows", [1, 100, 1000])
def test_prediction_allocates_only_its_result(compiled, output, rows, monkeypatch):
    """forward / predict_proba / predict on the same number of rows again: the hidden
    activations and logits come from this thread's cached buffers; 1000 rows run in chunks
    of 256 (MIN_CHUNK) here, so the last chunk's views are cached too.  (The compiled
    backends: the NumPy reference's kernels broadcast the bias, for which NumPy takes a
    buffer.)"""
    monkeypatch.setattr(inference, "CHUNK_BYTES", 1)
    X = np.random.default_rng(0).random((rows, 32), dtype=np.float32)
    m = MLP((32, 200, 100, 4), seed=0, backend=compiled, output=output)
    calls = [m.forward, m.predict] + ([m.predict_proba] if m.is_classifier else [])
    for fn in calls:
        fn(X)   # warm-up: JIT and this thread's buffers
        for _ in range(3):
            peak, result = _peak_growth(lambda: fn(X))
            # one (256, 200) float32 activation alone is 200 kB; a few Python objects
            # (views of the result, a list) are all that may come on top of the result
            assert peak <= result + 2048, (fn.__name__, peak, result)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_standardize_fit_makes_no_copy_of_the_training_set(compiled, dtype):
    """fit and fit_epoch standardise each batch as they gather it (`gather_rows`): beyond
    the per-fit order (int64, N) and the history, nothing of X's size is allocated."""
    rng = np.random.default_rng(0)
    X = rng.random((20_000, 64)).astype(dtype)          # 5 or 10 MB
    y = rng.integers(0, 4, 20_000)
    m = MLP((64, 16, 4), dtype=dtype, seed=0, backend=compiled, standardize=True)
    m.fit_input_stats(X)
    tr = Trainer(m, batch_size=256, epochs=1, seed=0)
    tr.fit(X[:512], y[:512])   # warm-up: workspaces, state, JIT
    for run in (lambda: tr.fit(X, y), lambda: tr.fit_epoch(X, y)):
        peak, _ = _peak_growth(lambda: (run(), np.empty(0))[1])
        assert peak < X.nbytes / 8, (peak, X.nbytes)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rows", [100, 1000])
def test_standardized_prediction_allocates_no_copy_of_X(compiled, dtype, rows, monkeypatch):
    """A standardize model standardises each chunk into this thread's cached (m, n_features)
    buffer: on top of the result only NumPy's fixed iteration buffer (np.getbufsize()
    elements, 64 kB at most here, whatever the number of rows) for the broadcast statistics;
    a copy of 1000 rows of X would be 128-256 kB."""
    monkeypatch.setattr(inference, "CHUNK_BYTES", 1)
    X = np.random.default_rng(0).random((rows, 32)).astype(dtype)
    m = MLP((32, 200, 4), dtype=dtype, seed=0, backend=compiled, standardize=True)
    m.fit_input_stats(X)
    ufunc_buffer = np.getbufsize() * np.dtype(dtype).itemsize
    for fn in (m.forward, m.predict, m.predict_proba):
        fn(X)
        for _ in range(2):
            peak, result = _peak_growth(lambda: fn(X))
            assert peak <= result + ufunc_buffer + 4096, (fn.__name__, peak, result)
