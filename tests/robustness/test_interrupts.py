"""KeyboardInterrupt during fit -- raised at a known step, delivered asynchronously like Ctrl-C,
or inside a compiled kernel's loop -- leaves a usable model and the history of the finished
epochs; MLPClassifier and the CLI keep the model too."""
import _thread
import json
import threading
import time

import numpy as np
import pytest
from helpers import finite, params, record_updates, same

import fastmlp
from fastmlp import MLP, MLPClassifier, Trainer
from fastmlp.cli import main
from fastmlp.datasets import load_digits


def interrupt_at(trainer, epoch, step_in_epoch):
    """Make the trainer's step raise KeyboardInterrupt at step `step_in_epoch` of `epoch`
    (both 1-based), before that step changes anything."""
    step, seen = trainer._step, {"n": 0}

    def maybe_interrupt(*args):
        if len(trainer.history) == epoch - 1:
            seen["n"] += 1
            if seen["n"] == step_in_epoch:
                raise KeyboardInterrupt
        return step(*args)
    trainer._step = maybe_interrupt


def test_interrupt_in_epoch_3_keeps_two_epochs_and_a_usable_model(digits, backend):
    Xtr, ytr, Xte, yte = digits
    m = MLP((64, 32, 10), seed=0, backend=backend)
    tr = Trainer(m, optimizer="adam", lr=3e-3, epochs=10, batch_size=64, seed=0)
    states = record_updates(tr)
    interrupt_at(tr, epoch=3, step_in_epoch=5)
    with pytest.raises(KeyboardInterrupt):
        tr.fit(Xtr, ytr, Xte, yte)
    h = tr.history
    assert len(h) == 2 and h.epoch == [1, 2] and all(np.isfinite(h.val_loss))
    steps_per_epoch = -(-len(Xtr) // 64)
    assert len(states) - 1 == tr.t == 2 * steps_per_epoch + 4  # 4 steps of epoch 3 done
    assert same(params(m), states[-1])  # the weights of the last finished step
    assert m.score(Xte, yte) > 0.5
    h2 = tr.fit(Xtr, ytr)  # training can go on
    assert len(h2) == 10 and tr.t == len(states) - 1


def test_asynchronous_ctrl_c_during_fit(digits, backend, tmp_path):
    """A real SIGINT-style interrupt, delivered wherever the main thread happens to be."""
    Xtr, ytr, Xte, yte = digits
    m = MLP((64, 32, 10), seed=0, backend=backend)
    two_epochs = threading.Event()
    tr = Trainer(m, optimizer="sgd", lr=0.05, momentum=0.9, epochs=10 ** 6, batch_size=32,
                 callbacks=[lambda h: two_epochs.set() if len(h) >= 2 else None,
                            lambda h: len(h) >= 10 ** 4])  # a stop, should the signal be lost

    def ctrl_c():
        two_epochs.wait(60)
        time.sleep(0.01)
        _thread.interrupt_main()
    t = threading.Thread(target=ctrl_c)
    t.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            tr.fit(Xtr, ytr)
    finally:
        t.join()
    h = tr.history
    assert len(h) >= 2 and h.epoch == list(range(1, len(h) + 1))
    assert all(np.isfinite(h.train_loss)) and finite(params(m))
    assert m.score(Xte, yte) > 0.8
    assert same(params(MLP.load(m.save(tmp_path / "m.npz"))), params(m))


def _kernel_calls(raw):
    f = np.ones((256, 256), np.float32)
    a = {k: f.copy() for k in ("X", "W", "out", "dW", "dX", "m", "v")}
    b, y = np.ones(256, np.float32), np.zeros(256, np.int64)
    return {
        "linear_forward": lambda: raw.linear_forward(a["X"], a["W"], b, a["out"], "relu"),
        "linear_backward": lambda: raw.linear_backward(a["out"], a["X"], a["W"], a["dW"], b,
                                                       a["dX"]),
        "activation_backward": lambda: raw.activation_backward(a["dX"], a["X"], "relu"),
        "softmax_xent_grad": lambda: raw.softmax_xent_grad(a["X"], y, a["out"], None),
        "sgd_update": lambda: raw.sgd_update(a["W"], a["dW"], 0.0, 0.0, a["v"], 0.9, False),
        "adam_update": lambda: raw.adam_update(a["W"], a["dW"], a["m"], a["v"], 1, 0.0),
    }


@pytest.mark.parametrize("backend, kernel", [pytest.param("numba", k, id=f"numba-{k}")
                                             for k in _kernel_calls(None)] +
                         [pytest.param("cython", k, id=f"cython-{k}")
                          for k in _kernel_calls(None)])
def test_ctrl_c_in_a_kernel_loop_is_a_keyboard_interrupt(backend, kernel):
    """The main thread spends its time inside the kernel (GIL released): the interrupt is
    delivered as the kernel returns."""
    call = _kernel_calls(fastmlp.get_backend(backend).raw)[kernel]
    call()  # compiled and warm
    t = threading.Timer(0.02, _thread.interrupt_main)
    t.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            for _ in range(10 ** 6):
                call()
    finally:
        t.join()


def test_mlpclassifier_interrupt_keeps_the_finished_epochs(digits, monkeypatch):
    Xtr, ytr, Xte, yte = digits
    calls = {"n": 0}
    step = Trainer._step

    def maybe_interrupt(self, *args):
        calls["n"] += 1
        if calls["n"] == 2 * 7 + 3:  # 1347 samples in batches of 200: 7 steps an epoch
            raise KeyboardInterrupt
        return step(self, *args)
    monkeypatch.setattr(Trainer, "_step", maybe_interrupt)
    clf = MLPClassifier((32,), max_iter=50, learning_rate_init=0.01, random_state=0)
    with pytest.warns(UserWarning, match="Training interrupted by user"):
        clf.fit(Xtr, ytr)
    assert clf.n_iter_ == 2 and len(clf.loss_curve_) == 2
    assert finite(clf.coefs_ + clf.intercepts_) and clf.score(Xte, yte) > 0.8
    monkeypatch.setattr(Trainer, "_step", step)
    clf.partial_fit(Xtr, ytr)  # and it trains on
    assert clf.n_iter_ == 1 and len(clf.loss_curve_) == 3


def test_cli_interrupt_saves_the_model(tmp_path, monkeypatch, capsys):
    calls = {"n": 0}
    step = Trainer._step

    def maybe_interrupt(self, *args):
        calls["n"] += 1
        if calls["n"] == 15:  # 1212 training samples in batches of 128: 10 steps an epoch
            raise KeyboardInterrupt
        return step(self, *args)
    monkeypatch.setattr(Trainer, "_step", maybe_interrupt)
    path = tmp_path / "m.npz"
    code = main(["train", "--recipe", "none", "--epochs", "5", "--hidden", "16", "--save",
                 str(path), "--json", "--quiet", "--backend", "cython"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 130 and summary["interrupted"] and summary["epochs_run"] == 1
    X_test, y_test = load_digits()[2:]
    assert MLP.load(path).score(X_test, y_test) == summary["test_accuracy"] > 0.1
