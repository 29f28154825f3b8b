"""Faults during training and persistence never lose the user's model.

* A loss turning NaN stops training with TrainingDivergedError and leaves finite weights.
* KeyboardInterrupt during fit (raised at a known step, or delivered asynchronously like
  Ctrl-C) leaves a usable model and the history of the finished epochs; MLPClassifier and
  the CLI keep the model too.
* A save interrupted half-way (or killed with SIGKILL) leaves the previous file intact.
* Truncated, corrupted or tampered model files fail with ModelFileError and execute nothing.
"""
import io
import os
import signal
import subprocess
import sys
import textwrap
import time
import zipfile

import numpy as np
import pytest
from helpers import params, same

from fastmlp import MLP, ModelFileError

# ---- a loss turning NaN ---------------------------------------------------------------------


# ---- KeyboardInterrupt ------------------------------------------------------------------------


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
