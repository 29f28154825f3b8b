"""Saving and loading an MLP: one .npz of plain arrays, written atomically, read defensively.

Design: `save` writes the format version, layer sizes, dtype, hidden activation, output layer
and every W{i}/b{i} into a temporary file in the target's folder, flushed and fsync'ed, then
renamed over the target, so an interrupted save leaves the previous file whole.  `load` reads
with allow_pickle=False and checks every array (names, shapes, dtype, finiteness) before it
allocates a model, raising ModelFileError for anything damaged or inconsistent.  Format 3
adds `standardize` (a bool) and, exactly when it is true, the input statistics input_mean and
input_scale (n_features,) in the model's dtype (finite, scale > 0), and `dropout` (n_hidden,)
float64 probabilities in [0, 1) (a training setting: a loaded model trains as it did).  Formats 2 (no
standardize) and 1 (no activation/output either: a ReLU network with a softmax output) still
load.  Format 4 adds `batch_norm` (a bool) and, exactly when it is true, per hidden layer
i gamma{i}, running_mean{i} and running_var{i} (H_i,) in the model's dtype (finite,
running_var >= 0); a format-3 file loads as batch_norm=False.
"""
import os
import tempfile

import numpy as np

from .backends.contract import ACTIVATIONS, OUTPUTS
from .backends.validation import all_finite

FORMAT_VERSION = 4
_READS = (1, 2, 3, 4)
_V1 = {"activation": "relu", "output": "softmax"}
_STATS = ("input_mean", "input_scale")
_BN = ("gamma", "running_mean", "running_var")


class ModelFileError(ValueError):
    """A model file is missing pieces, corrupt, truncated or does not match."""


def save(model, path):
    """Write `model` to `path` atomically; returns the path."""
    path = os.fspath(path)
    arrays = {"format_version": np.array(FORMAT_VERSION),
              "layer_sizes": np.array(model.layer_sizes, np.int64),
              "dtype": np.array(model.dtype.name),
              "activation": np.array(model.activation), "output": np.array(model.output),
              "standardize": np.array(model.standardize),
              "dropout": np.array(model.dropout, np.float64),
              "batch_norm": np.array(model.batch_norm)}
    for i, (g, rm, rv) in enumerate(zip(model.gammas, model.running_means,
                                        model.running_vars)):
        arrays[f"gamma{i}"], arrays[f"running_mean{i}"], arrays[f"running_var{i}"] = g, rm, rv
    if model.standardize:
        arrays["input_mean"], arrays["input_scale"] = model._input_stats()
    for i, (W, b) in enumerate(zip(model.weights, model.biases)):
        arrays[f"W{i}"], arrays[f"b{i}"] = W, b
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".fastmlp-", suffix=".npz.tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def read(path):
    """The arrays of a model file, {name: array}; ModelFileError when it is not readable."""
    path = os.fspath(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except MemoryError:
        raise ModelFileError(f"{path}: an array in the file is too large to load") from None
    except Exception as exc:  # zipfile/zlib/npy errors of every kind: a damaged file
        raise ModelFileError(f"{path}: not a readable fastmlp model file "
                             f"({type(exc).__name__}: {exc})") from None


def _flag(arrays, key, fail):
    """The bool scalar `key` of a file's arrays; fail(message) when it is missing or not a
    bool."""
    a = arrays.get(key)
    if a is None:
        fail(f"missing '{key}'")
    if a.shape != () or a.dtype != np.bool_:
        fail(f"bad {key} {a!r}, expected a bool")
    return bool(a)


def checked(arrays, path):
    """(layer_sizes, dtype name, options) of a file's arrays, every array checked; options
    are the MLP's keyword arguments activation, output, standardize (when true, the file
    holds input_mean and input_scale), dropout and batch_norm (when true, the file holds
    gamma{i}, running_mean{i}, running_var{i}).  ModelFileError naming the problem otherwise."""
    def fail(msg):
        raise ModelFileError(f"{path}: {msg}")
    for key in ("format_version", "layer_sizes", "dtype"):
        if key not in arrays:
            fail(f"missing '{key}'")
    version = arrays["format_version"]
    if version.shape != () or version.dtype.kind not in "iu" or int(version) not in _READS:
        fail(f"format version {version!r}, expected one of {_READS}")
    names = ("activation", "output") if int(version) >= 2 else ()
    kinds = {}
    for key, allowed in (("activation", ACTIVATIONS), ("output", OUTPUTS)):
        if key not in names:
            kinds[key] = _V1[key]
            continue
        a = arrays.get(key)
        if a is None:
            fail(f"missing '{key}'")
        if a.shape != () or a.dtype.kind != "U" or str(a) not in allowed:
            fail(f"bad {key} {a!r}, expected one of {allowed}")
        kinds[key] = str(a)
    standardize = False
    if int(version) >= 3:
        names += ("standardize",)
        standardize = _flag(arrays, "standardize", fail)
        if standardize:
            names += _STATS
        names += ("dropout",)
    batch_norm = False
    sizes = arrays["layer_sizes"]
    if sizes.ndim != 1 or sizes.size < 2 or sizes.dtype.kind not in "iu" or np.any(sizes < 1):
        fail(f"bad layer_sizes {sizes!r}")
    dtype_name = str(arrays["dtype"])
    if dtype_name not in ("float32", "float64"):
        fail(f"bad dtype {dtype_name!r}")
    n_layers = sizes.size - 1
    if int(version) >= 4:
        names += ("batch_norm",)
        batch_norm = _flag(arrays, "batch_norm", fail)
        if batch_norm:
            names += tuple(f"{p}{i}" for i in range(n_layers - 1) for p in _BN)
    expected = {"format_version", "layer_sizes", "dtype", *names} | \
        {f"{p}{i}" for i in range(n_layers) for p in "Wb"}
    if set(arrays) != expected:
        fail(f"arrays {sorted(set(arrays) ^ expected)} do not match layer_sizes "
             f"{sizes.tolist()}" + (f" and standardize={standardize}" if int(version) >= 3
                                    else "")
             + (f" and batch_norm={batch_norm}" if int(version) >= 4 else ""))
    sizes = [int(s) for s in sizes]
    for i in range(n_layers):  # check every array before allocating a model
        for name, shape in ((f"W{i}", (sizes[i], sizes[i + 1])), (f"b{i}", (sizes[i + 1],))):
            a = arrays[name]
            if a.shape != shape or a.dtype != np.dtype(dtype_name):
                fail(f"{name} has shape {a.shape} dtype {a.dtype}, expected "
                     f"{shape} {dtype_name}")
            if not all_finite(a):
                fail(f"{name} contains NaN or infinity")
    if batch_norm:
        for i in range(n_layers - 1):
            for p in _BN:
                a = arrays[f"{p}{i}"]
                if a.shape != (sizes[i + 1],) or a.dtype != np.dtype(dtype_name):
                    fail(f"{p}{i} has shape {a.shape} dtype {a.dtype}, expected "
                         f"({sizes[i + 1]},) {dtype_name}")
                if not all_finite(a):
                    fail(f"{p}{i} contains NaN or infinity")
            if not np.all(arrays[f"running_var{i}"] >= 0):
                fail(f"running_var{i} has entries < 0")
    dropout = (0.0,) * (n_layers - 1)
    if int(version) >= 3:
        a = arrays["dropout"]
        if a.shape != (n_layers - 1,) or a.dtype != np.float64 or \
                not np.all((a >= 0) & (a < 1)):
            fail(f"bad dropout {a!r}, expected {n_layers - 1} float64 values in [0, 1)")
        dropout = tuple(float(p) for p in a)
    if standardize:
        for name in _STATS:
            a = arrays[name]
            if a.shape != (sizes[0],) or a.dtype != np.dtype(dtype_name):
                fail(f"{name} has shape {a.shape} dtype {a.dtype}, expected "
                     f"({sizes[0]},) {dtype_name}")
            if not all_finite(a):
                fail(f"{name} contains NaN or infinity")
        if not np.all(arrays["input_scale"] > 0):
            fail("input_scale has entries <= 0")
    return sizes, dtype_name, {**kinds, "standardize": standardize, "dropout": dropout,
                               "batch_norm": batch_norm}
