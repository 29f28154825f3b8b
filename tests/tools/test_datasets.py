"""Dataset loaders: IDX round trips and faults on files built here, search paths, digits."""
import gzip
import os
import struct

import numpy as np
import pytest

from fastmlp import datasets
from fastmlp.datasets import (
    load_dataset,
    load_digits,
    load_fashion_mnist,
    load_idx,
    load_idx_dir,
    load_mnist,
)

_CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D,
          np.float64: 0x0E}
STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
         "t10k-labels-idx1-ubyte")


def idx_bytes(arr):
    """The IDX encoding of `arr`: header then big-endian data."""
    arr = np.asarray(arr)
    head = bytes([0, 0, _CODES[arr.dtype.type], arr.ndim]) + struct.pack(f">{arr.ndim}I",
                                                                         *arr.shape)
    return head + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def write(path, payload, gz=False):
    path.write_bytes(gzip.compress(payload) if gz else payload)
    return path


def fake_dataset(folder, n_train=20, n_test=10, gz=True, seed=0):
    """Write a tiny Fashion-MNIST-shaped dataset; returns its arrays."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = (rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
              rng.integers(0, 10, n_train, dtype=np.uint8),
              rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
              rng.integers(0, 10, n_test, dtype=np.uint8))
    arrays[0][0, 0, 0], arrays[0][0, 0, 1] = 0, 255  # pin the range ends
    for stem, a in zip(STEMS, arrays):
        write(folder / (stem + (".gz" if gz else "")), idx_bytes(a), gz)
    return arrays


@pytest.fixture
def no_system_data(monkeypatch, tmp_path):
    """Point the system folders somewhere empty and clear $FASTMLP_DATA."""
    monkeypatch.delenv("FASTMLP_DATA", raising=False)
    for name in datasets.SYSTEM_DIRS:
        monkeypatch.setitem(datasets.SYSTEM_DIRS, name, str(tmp_path / "system" / name))


# ---- load_idx round trips -----------------------------------------------------------------

@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
@pytest.mark.parametrize("dtype,shape", [(np.uint8, (5, 28, 28)), (np.uint8, (7,)),
                                         (np.int8, (3, 4)), (np.int16, (2, 3, 4)),
                                         (np.int32, (6,)), (np.float32, (4, 5)),
                                         (np.float64, (2, 2, 2, 2)), (np.uint8, (0, 28, 28))])
def test_load_idx_round_trip(tmp_path, gz, dtype, shape):
    rng = np.random.default_rng(1)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        a = rng.integers(info.min, info.max, shape, endpoint=True, dtype=dtype)
    else:
        a = (rng.standard_normal(shape) * 1e3).astype(dtype)
    got = load_idx(write(tmp_path / "f.idx", idx_bytes(a), gz))
    assert got.shape == shape and got.dtype == np.dtype(dtype)
    assert got.dtype.isnative and got.flags.writeable
    np.testing.assert_array_equal(got, a)


def test_load_idx_big_endian_values(tmp_path):
    # Bytes written by hand, so the decoding is not checked against its own encoder.
    raw = bytes([0, 0, 0x0C, 1, 0, 0, 0, 2]) + bytes.fromhex("00000102" "fffffffe")
    np.testing.assert_array_equal(load_idx(write(tmp_path / "i", raw)), [258, -2])
    raw = bytes([0, 0, 0x0E, 1, 0, 0, 0, 1]) + bytes.fromhex("3ff8000000000000")
    assert load_idx(write(tmp_path / "d", raw))[0] == 1.5


def test_gzip_detected_by_magic_not_name(tmp_path):
    a = np.arange(12, dtype=np.uint8).reshape(3, 4)
    np.testing.assert_array_equal(load_idx(write(tmp_path / "x.raw", idx_bytes(a), gz=True)), a)
    np.testing.assert_array_equal(load_idx(write(tmp_path / "y.gz", idx_bytes(a))), a)


# ---- load_idx faults ----------------------------------------------------------------------

GOOD = idx_bytes(np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
GZ = gzip.compress(GOOD)


@pytest.mark.parametrize("payload,message", [
    (b"", "empty"),
    (b"\x00\x00", "truncated header"),
    (GOOD[:10], "truncated header"),
    (b"\x01\x02" + GOOD[2:], "bad magic"),
    (GOOD[:2] + b"\x0a" + GOOD[3:], "unknown dtype code 0x0A"),
    (b"\x00\x00\x08\x00", "0 dimensions"),
    (GOOD[:-1], "truncated"),
    (GOOD + b"junk", "4 bytes of trailing data"),
    (GZ[:len(GZ) // 2], "corrupt gzip"),
    (GZ[:12] + bytes(b ^ 0xFF for b in GZ[12:20]) + GZ[20:], "corrupt gzip"),
    (GZ[:-8] + b"\x00\x00\x00\x00" + GZ[-4:], "corrupt gzip"),  # bad CRC
    (GZ + b"junk", "corrupt gzip"),
    (gzip.compress(GOOD[:-3]), "truncated"),
], ids=["empty", "2-byte", "short-dims", "magic", "dtype", "ndim0", "short-data", "trailing",
        "gz-truncated", "gz-flipped", "gz-crc", "gz-junk", "gz-short-data"])
def test_load_idx_malformed(tmp_path, payload, message):
    path = write(tmp_path / "bad-idx1-ubyte", payload)
    with pytest.raises(ValueError, match=message) as exc:
        load_idx(path)
    assert str(path) in str(exc.value)


def test_load_idx_missing(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_idx(tmp_path / "nope")


# ---- folders and search paths ---------------------------------------------------------------

def check_xy(result, arrays):
    X_tr, y_tr, X_te, y_te = result
    assert X_tr.shape == (len(arrays[0]), 784) and X_te.shape == (len(arrays[2]), 784)
    assert X_tr.dtype == X_te.dtype == np.float32 and y_tr.dtype == y_te.dtype == np.int64
    assert X_tr.min() == 0.0 and X_tr.max() == 1.0 and 0 <= X_te.min() <= X_te.max() <= 1
    np.testing.assert_array_equal(X_tr * 255, arrays[0].reshape(len(arrays[0]), -1))
    np.testing.assert_array_equal(y_tr, arrays[1])
    np.testing.assert_array_equal(y_te, arrays[3])


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "raw"])
def test_fashion_mnist_from_root(tmp_path, no_system_data, gz):
    arrays = fake_dataset(tmp_path / "d", gz=gz)
    check_xy(load_fashion_mnist(root=tmp_path / "d"), arrays)


def test_root_beats_env(tmp_path, monkeypatch):
    arrays = fake_dataset(tmp_path / "root", n_train=20)
    fake_dataset(tmp_path / "env", n_train=5)
    monkeypatch.setenv("FASTMLP_DATA", str(tmp_path / "env"))
    check_xy(load_fashion_mnist(root=tmp_path / "root"), arrays)


@pytest.mark.parametrize("sub", ["", "fashion-mnist"])
def test_fashion_mnist_env(tmp_path, monkeypatch, no_system_data, sub):
    arrays = fake_dataset(tmp_path / "env" / sub, n_train=12, n_test=4)
    monkeypatch.setenv("FASTMLP_DATA", str(tmp_path / "env"))
    check_xy(load_fashion_mnist(), arrays)
    check_xy(load_dataset("fashion-mnist"), arrays)


def test_mnist_env_subfolder(tmp_path, monkeypatch, no_system_data):
    arrays = fake_dataset(tmp_path / "env" / "mnist", gz=False)
    monkeypatch.setenv("FASTMLP_DATA", str(tmp_path / "env"))
    check_xy(load_mnist(), arrays)
    check_xy(load_dataset("mnist"), arrays)


def test_missing_data_message(tmp_path, monkeypatch, no_system_data):
    partial = tmp_path / "partial"
    fake_dataset(partial)
    (partial / "t10k-labels-idx1-ubyte.gz").unlink()
    monkeypatch.setenv("FASTMLP_DATA", str(tmp_path / "env"))
    with pytest.raises(FileNotFoundError) as exc:
        load_fashion_mnist(root=partial)
    msg = str(exc.value)
    for place in (partial, tmp_path / "env", tmp_path / "env" / "fashion-mnist",
                  datasets.SYSTEM_DIRS["fashion-mnist"]):
        assert str(place) in msg
    assert "missing t10k-labels-idx1-ubyte" in msg
    assert "dataset-fashion-mnist" in msg and "FASTMLP_DATA" in msg
    with pytest.raises(FileNotFoundError, match="MNIST"):
        load_mnist()


def test_idx_dir_and_dispatch(tmp_path):
    arrays = fake_dataset(tmp_path / "d", gz=False)
    check_xy(load_idx_dir(tmp_path / "d"), arrays)
    check_xy(load_dataset(str(tmp_path / "d")), arrays)
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        load_idx_dir(tmp_path / "empty")
    with pytest.raises(ValueError, match="'digits', 'fashion-mnist', 'mnist'"):
        load_dataset("cifar10")


def test_dotted_mnist_names(tmp_path):
    arrays = fake_dataset(tmp_path / "d", gz=False)
    for stem in STEMS:
        os.rename(tmp_path / "d" / stem, tmp_path / "d" / stem.replace("-idx", ".idx"))
    check_xy(load_idx_dir(tmp_path / "d"), arrays)


@pytest.mark.parametrize("fault,message", [
    ("count", "20 images but 19 labels"),
    ("range", r"labels span \[0, 10\], expected \[0, 9\]"),
    ("dtype", "unsigned bytes"),
])
def test_inconsistent_dataset(tmp_path, no_system_data, fault, message):
    arrays = list(fake_dataset(tmp_path / "d", gz=False))
    if fault == "count":
        arrays[1] = arrays[1][:-1]
    elif fault == "range":
        arrays[1][3] = 10
    else:
        arrays[0] = arrays[0].astype(np.float32)
    write(tmp_path / "d" / STEMS[0], idx_bytes(arrays[0]))
    write(tmp_path / "d" / STEMS[1], idx_bytes(arrays[1]))
    with pytest.raises(ValueError, match=message):
        load_fashion_mnist(root=tmp_path / "d")


# ---- digits and the real data ---------------------------------------------------------------

def test_digits():
    X_tr, y_tr, X_te, y_te = load_digits()
    assert len(X_tr) + len(X_te) == 1797 and len(X_te) == 450
    assert X_tr.shape[1] == X_te.shape[1] == 64
    assert X_tr.dtype == np.float32 and y_tr.dtype == np.int64
    assert X_tr.min() == 0.0 and X_tr.max() == 1.0 and X_te.max() <= 1.0
    assert set(y_tr) == set(y_te) == set(range(10))
    per_class = np.bincount(np.concatenate([y_tr, y_te]))  # stratified: each class split 3:1
    assert np.all(np.abs(np.bincount(y_te) - per_class * 0.25) < 1)
    again = load_digits(seed=0)
    for a, b in zip((X_tr, y_tr, X_te, y_te), again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(load_digits(seed=1)[1], y_tr)
    check = load_dataset("digits")
    np.testing.assert_array_equal(check[3], y_te)


REAL = datasets.SYSTEM_DIRS["fashion-mnist"]


@pytest.mark.skipif(not os.path.isdir(REAL),
                    reason=f"Fashion-MNIST not installed at {REAL} "
                           "(apt-get install dataset-fashion-mnist)")
def test_real_fashion_mnist(monkeypatch):
    monkeypatch.delenv("FASTMLP_DATA", raising=False)
    X_tr, y_tr, X_te, y_te = load_fashion_mnist()
    assert X_tr.shape == (60000, 784) and X_te.shape == (10000, 784)
    assert y_tr.shape == (60000,) and y_te.shape == (10000,)
    assert X_tr.dtype == np.float32 and y_tr.dtype == np.int64
    assert X_tr.min() == 0.0 and X_tr.max() == 1.0
    np.testing.assert_array_equal(np.bincount(y_tr), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(y_te), [1000] * 10)
