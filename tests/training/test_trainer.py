"""Trainer: optimisation, determinism, schedules, early stopping, faults, threads, memory."""

import numpy as np
import pytest
from helpers import small_data

import fastmlp
from fastmlp import MLP, Trainer
from fastmlp.backends import BACKEND_NAMES


@pytest.mark.parametrize("opt", [dict(optimizer="adam", lr=3e-3),
                                 dict(optimizer="sgd", lr=0.02, momentum=0.9, nesterov=True)],
                         ids=["adam", "nesterov"])
def test_fit_learns_digits(digits, backend, opt):
    Xtr, ytr, Xte, yte = digits
    m = MLP((64, 64, 10), seed=0, backend=backend)
    hist = Trainer(m, batch_size=64, epochs=10, seed=0, **opt).fit(Xtr, ytr, Xte, yte)
    assert len(hist) == 10 and hist.train_loss[-1] < hist.train_loss[0] / 3
    assert m.score(Xte, yte) > 0.93 and hist.val_acc[-1] == pytest.approx(m.score(Xte, yte))


def test_last_incomplete_batch_is_used():
    X, y = small_data(10)
    m = MLP((8, 4, 3), backend="numpy")
    tr = Trainer(m, batch_size=4, epochs=2, shuffle=False)
    seen = []
    orig = tr._step
    tr._step = lambda ws, Xb, *rest: (seen.append(len(Xb)), orig(ws, Xb, *rest))[1]
    tr.fit(X, y)
    assert seen == [4, 4, 2, 4, 4, 2] and tr.t == 6


def test_step_is_exactly_one_update():
    X, y = small_data(32)
    m = MLP((8, 5, 3), dtype=np.float64, backend="numpy", seed=3)
    ref = MLP((8, 5, 3), dtype=np.float64, backend="numpy", seed=3)
    loss = Trainer(m, lr=0.1, weight_decay=0.01).step(X, y)
    l2, dW, db = ref.loss_and_grads(X, y, weight_decay=0.01)
    assert loss == pytest.approx(l2 - ref.penalty(0.01))
    for W, W0, g in zip(m.weights + m.biases, ref.weights + ref.biases, dW + db):
        np.testing.assert_allclose(W, W0 - 0.1 * g, rtol=1e-12, atol=1e-15)


def test_same_seed_is_bit_identical(digits, backend):
    Xtr, ytr = digits[:2]

    def run():
        m = MLP((64, 32, 10), seed=4, backend=backend)
        Trainer(m, optimizer="adam", lr=1e-3, batch_size=50, epochs=1, seed=9).fit(Xtr, ytr)
        return [w.tobytes() for w in m.weights + m.biases]
    assert run() == run()


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_backends_agree_after_an_epoch_float64(digits, opt):
    Xtr, ytr = digits[:2]
    out = []
    for b in BACKEND_NAMES:
        m = MLP((64, 32, 10), dtype=np.float64, seed=4, backend=b)
        Trainer(m, optimizer=opt, lr=1e-2 if opt == "adam" else 0.1, momentum=0.9 * (opt == "sgd"),
                weight_decay=1e-4, batch_size=50, epochs=1, seed=9).fit(Xtr, ytr)
        out.append(m.weights + m.biases)
    for other in out[1:]:
        for a, b in zip(other, out[0]):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10 * np.abs(b).max())


def test_step_decay_schedule_and_history(digits):
    Xtr, ytr, Xte, yte = digits
    m = MLP((64, 16, 10), backend="cython")
    h = Trainer(m, lr=0.1, epochs=4, lr_schedule=fastmlp.StepDecay(0.92)).fit(Xtr, ytr)
    np.testing.assert_allclose(h.lr, [0.1 * 0.92 ** k for k in range(4)])
    assert h.epoch == [1, 2, 3, 4] and h.val_loss == [None] * 4 and all(s > 0 for s in h.seconds)
    h = Trainer(m, lr=0.1, epochs=3, lr_schedule=fastmlp.StepDecay(0.5)).fit(Xtr, ytr)
    assert h.lr == [0.1, 0.05, 0.025]
    h = Trainer(m, lr=0.1, epochs=3, lr_schedule=fastmlp.ExponentialDecay(0.5)).fit(Xtr, ytr)
    np.testing.assert_allclose(h.lr, 0.1 * np.exp(-0.5 * np.arange(3)))
    h = Trainer(m, lr=0.1, epochs=3, lr_schedule=fastmlp.InverseScaling(1.0)).fit(Xtr, ytr)
    np.testing.assert_allclose(h.lr, [0.1, 0.05, 0.1 / 3])
    h = Trainer(m, lr=0.1, epochs=2, lr_schedule=lambda e, lr0: lr0 / (e + 1)).fit(Xtr, ytr)
    assert h.lr == [0.1, 0.05]


def test_reduce_on_plateau():
    class FakeHist:
        def __init__(self, v):
            self.v = v

        def has(self, k):
            return True

        def last(self, k):
            return self.v
    s = fastmlp.ReduceOnPlateau(monitor="val_loss", factor=0.5, patience=1)
    lrs = [s.lr(0, 1.0, None)] + [s.lr(e, 1.0, FakeHist(v))
                                  for e, v in enumerate([1.0, 0.9, 0.9, 0.9, 0.9, 0.8], 1)]
    assert lrs == [1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5]


def test_early_stopping_restores_best(digits):
    Xtr, ytr, Xte, yte = digits
    m = MLP((64, 32, 10), seed=0, backend="cython")
    snapshots = []

    def keep(h):
        snapshots.append([w.copy() for w in m.weights])
    es = fastmlp.EarlyStopping(monitor="val_acc", patience=1)
    # lr far too high for SGD after epoch 2 makes val accuracy fall: training must stop
    h = Trainer(m, lr=0.05, epochs=30, early_stopping=es, callbacks=[keep],
                lr_schedule=lambda e, lr0: lr0 if e < 3 else 3.0, seed=0).fit(Xtr, ytr, Xte, yte)
    assert len(h) < 30
    best = int(np.argmax(h.val_acc))
    for W, Wb in zip(m.weights, snapshots[best]):
        np.testing.assert_array_equal(W, Wb)
    with pytest.raises(ValueError, match="X_val"):
        Trainer(m, early_stopping=True).fit(Xtr, ytr)


def test_callback_can_stop_and_sees_history(digits):
    Xtr, ytr = digits[:2]
    seen = []
    h = Trainer(MLP((64, 8, 10)), epochs=10,
                callbacks=[lambda h: seen.append(len(h)) or len(h) == 3]).fit(Xtr, ytr)
    assert seen == [1, 2, 3] and len(h) == 3


def test_verbose_shows_tqdm_bar(digits, capsys):
    Xtr, ytr = digits[:2]
    Trainer(MLP((64, 8, 10)), epochs=2, verbose=True).fit(Xtr, ytr)
    err = capsys.readouterr().err
    assert "epoch 1/2" in err and "epoch 2/2" in err and "train_acc" in err


@pytest.mark.parametrize("kwargs, err, text", [
    (dict(lr=float("nan")), ValueError, "lr"), (dict(lr=0), ValueError, "lr"),
    (dict(lr=-1), ValueError, "lr"), (dict(lr="0.1"), TypeError, "lr"),
    (dict(batch_size=0), ValueError, "batch_size"), (dict(batch_size=2.5), TypeError, "batch_size"),
    (dict(epochs=0), ValueError, "epochs"), (dict(momentum=-0.1), ValueError, "momentum"),
    (dict(momentum=1.0), ValueError, "momentum"), (dict(weight_decay=-1), ValueError,
                                                   "weight_decay"),
    (dict(weight_decay=float("inf")), ValueError, "weight_decay"),
    (dict(optimizer="rmsprop"), ValueError, "optimizer"), (dict(beta1=1.0), ValueError, "beta1"),
    (dict(eps=0), ValueError, "eps"), (dict(nesterov=True), ValueError, "nesterov"),
    (dict(callbacks=[1]), TypeError, "callbacks"), (dict(lr_schedule="fast"), ValueError,
                                                    "lr_schedule"),
])
def test_trainer_bad_hyperparameters(kwargs, err, text):
    with pytest.raises(err, match=text):
        Trainer(MLP((4, 3)), **kwargs)


@pytest.mark.parametrize("X, y, err, text", [
    (np.full((5, 4), np.nan), np.zeros(5, int), ValueError, "NaN"),
    (np.ones((5, 4)), np.zeros(4, int), ValueError, "labels but X has 5"),
    (np.ones((5, 4)), np.full(5, 3), ValueError, "outside"),
    (np.ones((5, 4)), np.full(5, -1), ValueError, "outside"),
    (np.ones((5, 4)), np.full(5, 0.5), TypeError, "integer"),
    (np.ones((5, 4)), np.array(["a"] * 5), TypeError, "integer"),
    (np.ones((0, 4)), np.zeros(0, int), ValueError, "empty"),
    (np.ones((5, 3)), np.zeros(5, int), ValueError, "features"),
    (np.ones((5, 4)), np.zeros((5, 1), int), ValueError, "1-D"),
])
@pytest.mark.parametrize("entry", ["fit", "step"])
def test_fit_and_step_bad_data(X, y, err, text, entry):
    tr = Trainer(MLP((4, 3)))
    with pytest.raises(err, match=text):
        getattr(tr, entry)(X, y)


def test_float_labels_that_are_integers_work():
    X, y = small_data(30)
    h = Trainer(MLP((8, 3)), epochs=1).fit(X, y.astype(float))
    assert len(h) == 1


def test_fit_epoch_is_fit_one_epoch_at_a_time(backend):
    X, y = small_data(90)
    runs = []
    for by_epoch in (False, True):
        m = MLP((8, 6, 3), backend=backend, seed=1)
        tr = Trainer(m, optimizer="adam", lr=0.01, batch_size=16, epochs=3, seed=4)
        if by_epoch:
            rng, order = np.random.default_rng(4), np.arange(90)
            losses = []
            for _ in range(3):
                rng.shuffle(order)
                losses.append(tr.fit_epoch(X, y, order=order)[0])
        else:
            losses = tr.fit(X, y).train_loss
        runs.append((losses, [p.copy() for p in m.weights + m.biases]))
    assert runs[0][0] == runs[1][0]
    assert all(np.array_equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))


def test_fit_epoch_without_accuracy_trains_the_same(backend):
    """accuracy=False (what the estimators ask for) returns None for the accuracy, counts
    nothing per batch, and leaves the training itself unchanged."""
    X, y = small_data(90)
    runs = []
    for accuracy in (True, False):
        m = MLP((8, 6, 3), backend=backend, seed=1)
        tr = Trainer(m, optimizer="adam", lr=0.01, batch_size=16, seed=4)
        counted = []
        orig = m._n_correct
        m._n_correct = lambda ws, yb: (counted.append(1), orig(ws, yb))[1]
        loss, acc = tr.fit_epoch(X, y, order=np.arange(90), accuracy=accuracy)
        assert (acc is None) == (not accuracy) and len(counted) == (6 if accuracy else 0)
        runs.append((loss, [p.copy() for p in m.weights + m.biases]))
    assert runs[0][0] == runs[1][0]
    assert all(np.array_equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))


def test_fit_epoch_in_order_visits_rows_as_given():
    X, y = small_data(40)
    seen = []
    tr = Trainer(MLP((8, 4, 3), backend="numpy"), batch_size=16, shuffle=False)
    orig = tr._step
    tr._step = lambda ws, Xb, yb, *rest: (seen.append(yb.copy()), orig(ws, Xb, yb, *rest))[1]
    loss, acc = tr.fit_epoch(X, y, order=np.arange(40)[::-1])
    assert np.array_equal(np.concatenate(seen), y[::-1]) and np.isfinite(loss) and 0 <= acc <= 1
    with pytest.raises(ValueError, match="order must be a permutation"):
        tr.fit_epoch(X, y, order=np.arange(39))


def test_get_and_set_state_resume_exactly(backend):
    X, y = small_data(64)

    def fresh():
        return MLP((8, 5, 3), backend=backend, seed=2)
    m1 = fresh()
    t1 = Trainer(m1, optimizer="adam", lr=0.01, batch_size=16, shuffle=False)
    for _ in range(2):
        t1.fit_epoch(X, y)
    m2 = fresh()
    t2 = Trainer(m2, optimizer="adam", lr=0.01, batch_size=16, shuffle=False)
    t2.fit_epoch(X, y)
    state, t = t2.get_state()
    t3 = Trainer(m2, optimizer="adam", lr=0.01, batch_size=16, shuffle=False)
    t3.set_state(state, t)
    t3.fit_epoch(X, y)
    assert t3.t == t1.t == 8
    assert all(np.array_equal(a, b) for a, b in zip(m1.weights + m1.biases,
                                                    m2.weights + m2.biases))


@pytest.mark.parametrize("state, text", [
    ("no list", "one entry per parameter"), ([None] * 4, r"\(m, v\) pair"),
    ("shapes", "must be writeable C-contiguous arrays of shape")])
def test_set_state_refuses_what_does_not_fit(state, text):
    m = MLP((4, 3, 2), backend="numpy")
    tr = Trainer(m, optimizer="adam")
    if state == "shapes":
        state = [(np.zeros(3), np.zeros(3))] * 4
    with pytest.raises(ValueError, match=text):
        tr.set_state(state, 0)


def test_batch_hyperparameters_hook_sets_each_steps_decay(backend):
    X, y = small_data(48)

    class Decayed(Trainer):
        def batch_hyperparameters(self, batch_weight, step):
            return 0.05 * 16 / batch_weight, self.eps
    runs = []
    for cls, wd in ((Trainer, 0.05), (Decayed, 0.0)):
        m = MLP((8, 5, 3), backend=backend, seed=3)
        cls(m, optimizer="adam", lr=0.01, batch_size=16, weight_decay=wd,
            shuffle=False).fit_epoch(X, y)
        runs.append([p.copy() for p in m.weights + m.biases])
    assert all(np.array_equal(a, b) for a, b in zip(*runs))


def _regression_data(n=240, d=6, k=2, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(np.float32)
    A = rng.standard_normal((d, k)) / np.sqrt(d)
    return X, (np.tanh(X @ A) + 0.05 * rng.standard_normal((n, k))).astype(np.float32), A


@pytest.mark.parametrize("output", ["logistic", "identity", "exp"])
def test_fit_trains_every_output(backend, output):
    X, Y, A = _regression_data()
    if output == "logistic":     # two independent labels: a multilabel problem
        Y = (Y > 0).astype(np.float32)
    elif output == "exp":        # counts with a log-linear mean
        Y = np.random.default_rng(1).poisson(np.exp(X @ A)).astype(np.float32)
    m = MLP((6, 16, 2), backend=backend, seed=0, activation="tanh", output=output)
    tr = Trainer(m, optimizer="adam", lr=0.01, batch_size=32, epochs=30, seed=0)
    hist = tr.fit(X[:200], Y[:200], X[200:], Y[200:])
    assert hist.train_loss[-1] < 0.7 * hist.train_loss[0]
    if output == "logistic":
        assert hist.val_acc[-1] > 0.8 and hist.val_r2 == [None] * len(hist)
        assert m.score(X[200:], Y[200:]) == pytest.approx(hist.val_acc[-1])
    else:
        assert hist.train_acc == [None] * len(hist) and hist.val_r2[-1] > 0.5
        assert m.score(X[200:], Y[200:]) == pytest.approx(hist.val_r2[-1])
    loss, score = tr.evaluate(X[200:], Y[200:])
    assert loss == pytest.approx(hist.val_loss[-1])


def test_early_stopping_monitor_must_be_reported():
    X, Y, _ = _regression_data(60)
    m = MLP((6, 4, 2), backend="numpy", output="identity")
    tr = Trainer(m, early_stopping=fastmlp.EarlyStopping("val_acc"))
    with pytest.raises(ValueError, match="does not report"):
        tr.fit(X, Y, X, Y)
    hist = Trainer(m, epochs=30, early_stopping=fastmlp.EarlyStopping("val_r2", patience=2),
                   lr=0.05).fit(X, Y, X, Y)
    assert len(hist) <= 30 and hist.val_r2
