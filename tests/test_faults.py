"""Faults during training and persistence never lose the user's model.

* A loss turning NaN stops training with TrainingDivergedError and leaves finite weights.
* KeyboardInterrupt during fit (raised at a known step, or delivered asynchronously like
  Ctrl-C) leaves a usable model and the history of the finished epochs; MLPClassifier and
  the CLI keep the model too.
* A save interrupted half-way (or killed with SIGKILL) leaves the previous file intact.
* Truncated, corrupted or tampered model files fail with ModelFileError and execute nothing.
"""
import _thread
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
import zipfile

import numpy as np
import pytest

import fastmlp
from fastmlp import MLP, ModelFileError, Trainer, TrainingDivergedError
from fastmlp.cli import main
from fastmlp.datasets import load_digits
from fastmlp.estimator import MLPClassifier

BACKENDS = ("numpy", "numba", "cython")


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def params(model):
    return [p.copy() for p in model.weights + model.biases]


def same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(a, b))


def finite(ps):
    return all(np.all(np.isfinite(p)) for p in ps)


def record_updates(trainer):
    """Every parameter state of the run: before training, then after each completed step."""
    states = [params(trainer.model)]
    step = trainer._step

    def recorded(*args):
        loss = step(*args)
        states.append(params(trainer.model))
        return loss
    trainer._step = recorded
    return states


# ---- a loss turning NaN ---------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the reference overflowing on purpose
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("lr, scale, outcome", [
    (1e30, 100.0, "still finite and were kept"),  # weights ~1e30: finite, the logits are not
    (1e300, 1.0, "reset to those before step 1"),  # inf in float32: the weights go inf
], ids=["finite-weights", "inf-weights"])
def test_nan_loss_stops_with_the_last_finite_weights(digits, backend, lr, scale, outcome,
                                                     tmp_path):
    Xtr, ytr = digits[:2]
    m = MLP((64, 32, 10), seed=0, backend=backend)
    tr = Trainer(m, lr=lr, epochs=5, batch_size=32, seed=0)
    states = record_updates(tr)
    with pytest.raises(TrainingDivergedError, match="training loss became (nan|inf)") as info:
        tr.fit(Xtr * scale, ytr)
    assert outcome in str(info.value) and "Lower the learning rate" in str(info.value)
    last_finite = [s for s in states if finite(s)][-1]
    assert finite(params(m)) and same(params(m), last_finite)
    assert m.predict(Xtr).shape == (len(Xtr),)  # usable: predicts, saves, loads
    assert same(params(MLP.load(m.save(tmp_path / "m.npz"))), last_finite)


@pytest.mark.parametrize("every", [1, 10])
def test_divergence_after_many_steps_restores_finite_weights(digits, every):
    Xtr, ytr = digits[:2]
    m = MLP((64, 32, 10), seed=0, backend="cython")
    tr = Trainer(m, lr=0.01, epochs=10, batch_size=32, seed=0, snapshot_every=every,
                 lr_schedule=lambda e, lr0: lr0 if e < 3 else 1e300)  # 43 steps an epoch
    states = record_updates(tr)
    with pytest.raises(TrainingDivergedError, match="reset to those before step"):
        tr.fit(Xtr, ytr)
    finite_states = [s for s in states if finite(s)]
    assert finite(params(m))
    if every == 1:  # exactly the last finite weights
        assert same(params(m), finite_states[-1])
    else:  # the latest copy: finite weights at most `every` steps older
        assert any(same(params(m), s) for s in finite_states[-every - 1:])


@pytest.mark.parametrize("solver, kw", [("sgd", dict(learning_rate_init=10.0)),
                                        ("lbfgs", dict(alpha=1e300))])
def test_mlpclassifier_divergence_keeps_finite_weights(solver, kw):
    rng = np.random.RandomState(0)
    X, y = rng.standard_normal((100, 4)) * 1e4, rng.randint(0, 3, 100)
    clf = MLPClassifier((32,), solver=solver, max_iter=20, random_state=0, **kw)
    with pytest.raises(TrainingDivergedError, match="loss became"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(X, y)
    assert finite(clf.coefs_ + clf.intercepts_)
    assert set(clf.predict(X)) <= {0, 1, 2}


# ---- KeyboardInterrupt ------------------------------------------------------------------------

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


@pytest.mark.parametrize("backend", BACKENDS)
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


@pytest.mark.parametrize("backend", ["numba", "cython"])
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
        "linear_forward": lambda: raw.linear_forward(a["X"], a["W"], b, a["out"], True),
        "linear_backward": lambda: raw.linear_backward(a["out"], a["X"], a["W"], a["dW"], b,
                                                       a["dX"]),
        "relu_backward": lambda: raw.relu_backward(a["dX"], a["X"]),
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
    code = main(["train", "--epochs", "5", "--hidden", "16", "--save", str(path), "--json",
                 "--quiet", "--backend", "cython"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 130 and summary["interrupted"] and summary["epochs_run"] == 1
    X_test, y_test = load_digits()[2:]
    assert MLP.load(path).score(X_test, y_test) == summary["test_accuracy"] > 0.1


# ---- interrupted saves --------------------------------------------------------------------

@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "m.npz"
    MLP((6, 5, 3), seed=1).save(path)
    return path, path.read_bytes()


def _half_then(exc):
    real = np.savez

    def half(f, **arrays):
        buf = io.BytesIO()
        real(buf, **arrays)
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        raise exc
    return half


@pytest.mark.parametrize("fault", ["interrupt half-way", "disk full half-way", "fsync fails",
                                   "rename fails"])
def test_failed_save_leaves_the_previous_file(saved, monkeypatch, fault):
    path, before = saved
    if fault == "interrupt half-way":
        monkeypatch.setattr(np, "savez", _half_then(KeyboardInterrupt()))
        exc = KeyboardInterrupt
    elif fault == "disk full half-way":
        monkeypatch.setattr(np, "savez", _half_then(OSError(28, "No space left on device")))
        exc = OSError
    elif fault == "fsync fails":
        monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(5, "EIO")))
        exc = OSError
    else:
        monkeypatch.setattr(os, "replace", lambda a, b: (_ for _ in ()).throw(
            PermissionError(13, "Permission denied")))
        exc = OSError
    with pytest.raises(exc):
        MLP((6, 5, 3), seed=2).save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before and os.listdir(path.parent) == ["m.npz"]
    assert same(params(MLP.load(path)), params(MLP((6, 5, 3), seed=1)))


KILLED_SAVER = textwrap.dedent("""
    import sys
    from fastmlp import MLP
    models = [MLP((400, 400, 10), seed=s, backend="numpy") for s in (1, 2)]
    models[0].save(sys.argv[1])
    print("ready", flush=True)
    i = 1
    while True:
        models[i % 2].save(sys.argv[1])
        i += 1
""")


def test_save_killed_with_sigkill_leaves_a_whole_file(tmp_path):
    path = tmp_path / "m.npz"
    wanted = [params(MLP((400, 400, 10), seed=s, backend="numpy")) for s in (1, 2)]
    for delay in (0.03, 0.11, 0.27):
        proc = subprocess.Popen([sys.executable, "-c", KILLED_SAVER, str(path)], cwd=tmp_path,
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        proc.stdout.close()
        got = params(MLP.load(path))
        assert same(got, wanted[0]) or same(got, wanted[1])
    # a kill can leave the temporary file behind; never a half-written target
    assert all(n == "m.npz" or n.startswith(".fastmlp-") for n in os.listdir(tmp_path))


# ---- truncated, corrupted, tampered files -------------------------------------------------------

@pytest.fixture(scope="module")
def good_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("good") / "good.npz"
    model = MLP((6, 5, 3), seed=1)
    model.save(path)
    return path, path.read_bytes(), model


def _offsets(raw):
    """Byte offsets to damage: every 5th of the members, every 2nd of the zip directory, and
    each directory entry's flag and compression-method fields."""
    directory = raw.find(b"PK\x01\x02")
    entries = [i for i in range(directory, len(raw)) if raw.startswith(b"PK\x01\x02", i)]
    picked = set(range(0, directory, 5)) | set(range(directory, len(raw), 2))
    picked |= {e + k for e in entries for k in (8, 9, 10, 11)} | {len(raw) - 1}
    return sorted(picked)


def test_truncations_are_refused(good_file, tmp_path):
    _, raw, _ = good_file
    bad = tmp_path / "t.npz"
    for n in _offsets(raw):
        bad.write_bytes(raw[:n])
        with pytest.raises(ModelFileError):
            MLP.load(bad)


@pytest.fixture(scope="module")
def bit_flips(good_file, tmp_path_factory):
    """Load the file with one byte's lowest bit flipped: outcome -> offsets."""
    _, raw, original = good_file
    bad, out = tmp_path_factory.mktemp("flips") / "f.npz", {}
    for off in _offsets(raw):
        b = bytearray(raw)
        b[off] ^= 1
        bad.write_bytes(bytes(b))
        try:
            kind = "same model" if same(params(MLP.load(bad)), params(original)) else \
                "DIFFERENT MODEL"
        except Exception as exc:  # noqa: BLE001 - the outcome is what is tested
            kind = type(exc).__name__
        out.setdefault(kind, []).append(off)
    return out


def test_no_bit_flip_loads_other_numbers(bit_flips):
    # flips in timestamps, padding and the like are harmless; anything else must raise
    assert "DIFFERENT MODEL" not in bit_flips and bit_flips.get("ModelFileError")
    assert set(bit_flips) <= {"same model", "ModelFileError", "RuntimeError",
                              "NotImplementedError"}


def test_every_bit_flip_that_raises_raises_model_file_error(bit_flips):
    assert set(bit_flips) <= {"same model", "ModelFileError"}


def _base_arrays(model):
    return dict(format_version=np.array(1), layer_sizes=np.array(model.layer_sizes),
                dtype=np.array("float32"), W0=model.weights[0], b0=model.biases[0],
                W1=model.weights[1], b1=model.biases[1])


class Evil:
    """Unpickling this creates the file `marker`."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("key", ["format_version", "layer_sizes", "dtype", "W0", "b1", "W2"])
def test_pickled_objects_are_refused_unexecuted(good_file, tmp_path, key):
    marker = tmp_path / "executed"
    arrays = {**_base_arrays(good_file[2]), key: np.array([Evil(marker)], dtype=object)}
    np.savez(tmp_path / "evil.npz", **arrays)
    with pytest.raises(ModelFileError):
        MLP.load(tmp_path / "evil.npz")
    assert not marker.exists()


@pytest.mark.parametrize("change, text", [
    (dict(W0="transposed"), "W0 has shape (5, 6)"),
    (dict(b0="longer"), "b0 has shape (6,)"),
    (dict(W1="1-D"), "W1 has shape (15,)"),
    (dict(layer_sizes=np.array([6, 4, 3])), "W0 has shape (6, 5) dtype float32, expected (6, 4)"),
    (dict(layer_sizes=np.array(6)), "bad layer_sizes"),
    (dict(layer_sizes=np.array([6, -5, 3])), "bad layer_sizes"),
    (dict(dtype=np.array(["float32", "float64"])), "bad dtype"),
    (dict(W0="float64"), "W0 has shape (6, 5) dtype float64"),
    (dict(W1="big-endian"), "W1 has shape (5, 3) dtype >f4"),
    (dict(b1="inf"), "b1 contains NaN or infinity"),
    (dict(extra=np.zeros(3)), "arrays ['extra'] do not match"),
])
def test_tampered_arrays_are_refused(good_file, tmp_path, change, text):
    arrays = _base_arrays(good_file[2])
    edits = {"transposed": lambda a: a.T.copy(), "longer": lambda a: np.append(a, 0),
             "1-D": lambda a: a.reshape(-1), "float64": lambda a: a.astype(np.float64),
             "big-endian": lambda a: a.astype(">f4"), "inf": lambda a: a + np.inf}
    for key, v in change.items():
        arrays[key] = edits[v](arrays[key]) if isinstance(v, str) else v
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ModelFileError) as info:
        MLP.load(tmp_path / "bad.npz")
    assert text in str(info.value) and "bad.npz" in str(info.value)


def test_non_array_member_is_refused(good_file, tmp_path):
    path = tmp_path / "m.npz"
    path.write_bytes(good_file[1])
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("evil.pkl", b"cos\nsystem\n(S'touch executed'\ntR.")
    with pytest.raises(ModelFileError, match="evil.pkl"):
        MLP.load(path)
    assert not (tmp_path / "executed").exists()


@pytest.mark.parametrize("version", [np.array("abc"), np.array(1.5)], ids=["string", "float"])
def test_bad_format_version_is_a_model_file_error(good_file, tmp_path, version):
    np.savez(tmp_path / "v.npz", **{**_base_arrays(good_file[2]), "format_version": version})
    with pytest.raises(ModelFileError):
        MLP.load(tmp_path / "v.npz")


HUGE_LAYERS = textwrap.dedent("""
    import resource, sys
    import numpy as np
    from fastmlp import MLP, ModelFileError
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))  # never hurt the machine
    m = MLP((6, 5, 3))
    np.savez("huge.npz", format_version=np.array(1), layer_sizes=np.array([30000, 30000, 3]),
             dtype=np.array("float32"), W0=m.weights[0], b0=m.biases[0], W1=m.weights[1],
             b1=m.biases[1])
    try:
        MLP.load("huge.npz", backend="numpy")
    except ModelFileError:
        print("ModelFileError")
    except BaseException as exc:
        print(type(exc).__name__)
""")


def test_huge_declared_layers_fail_before_allocating(tmp_path):
    proc = subprocess.run([sys.executable, "-c", HUGE_LAYERS], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "ModelFileError", proc.stdout + proc.stderr[-2000:]
