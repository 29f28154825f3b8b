"""Input validation for the public Python API (MLP, Trainer, MLPClassifier).

Design: each function takes user data, checks it once, and returns an array the hot loop can
trust (C-contiguous, the model's dtype, int64 labels).  Messages name the argument.
"""
import math
import numbers

import numpy as np


def all_finite(a):
    """True when every entry of float array `a` is finite, without allocating in the common
    case: a finite sum implies finite entries; only a non-finite sum (NaN/inf, or overflow)
    pays for the exact elementwise check."""
    if a.size == 0:
        return True
    with np.errstate(over="ignore", invalid="ignore"):  # an overflowing sum is not an error
        s = float(np.add.reduce(a.reshape(-1)))
    return math.isfinite(s) or bool(np.isfinite(a).all())


def check_X(X, n_features=None, dtype=np.float32, name="X"):
    """2-D finite numeric array, converted to C-contiguous `dtype` (no copy when it already is)."""
    if isinstance(X, np.ndarray) and X.dtype == dtype and X.flags.c_contiguous and X.ndim == 2:
        arr = X
    else:
        try:
            arr = np.asarray(X)
        except (ValueError, TypeError) as exc:
            raise TypeError(f"{name} could not be read as a numeric array: {exc}") from None
        if arr.dtype.kind not in "fiub":
            raise TypeError(f"{name} must be numeric, got dtype {arr.dtype}")
        if arr.ndim != 2:
            raise ValueError(f"{name} must be 2-D (n_samples, n_features), got shape {arr.shape}")
        arr = np.ascontiguousarray(arr, dtype=dtype)
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty: it has 0 samples")
    if arr.shape[1] == 0:
        raise ValueError(f"{name} has 0 features")
    if n_features is not None and arr.shape[1] != n_features:
        raise ValueError(f"{name} has {arr.shape[1]} features, the model expects {n_features}")
    if not all_finite(arr):
        raise ValueError(f"{name} contains NaN or infinity")
    return arr


def check_y(y, n_samples, n_classes, name="y"):
    """1-D integer labels in [0, n_classes), returned as C-contiguous int64.

    Floats holding whole numbers (0.0, 1.0, ...) are accepted; the range is checked before
    the cast, so 1e20 is reported as out of range instead of wrapping around in int64."""
    arr = np.asarray(y)
    if arr.dtype.kind == "f":
        if not (np.all(np.isfinite(arr)) and np.all(arr == np.round(arr))):
            raise TypeError(f"{name} must hold integer class labels, got {arr.dtype} values "
                            "that are not whole numbers (or NaN/infinity)")
    elif arr.dtype.kind not in "iub":
        raise TypeError(f"{name} must hold integer class labels, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.shape[0] != n_samples:
        raise ValueError(f"{name} has {arr.shape[0]} labels but X has {n_samples} samples")
    if arr.size:
        lo, hi = arr.min(), arr.max()
        if lo < 0 or hi >= n_classes:
            show = float if arr.dtype.kind == "f" else int
            raise ValueError(f"{name} has labels outside [0, {n_classes}): "
                             f"min {show(lo)}, max {show(hi)}")
    return np.ascontiguousarray(arr, dtype=np.int64)


def check_number(name, x, low=None, high=None, low_inclusive=True, integer=False):
    """A finite real (or integer) hyper-parameter within bounds."""
    if isinstance(x, (bool, np.bool_)):
        raise TypeError(f"{name} must be a number, got a bool")
    kind = numbers.Integral if integer else numbers.Real
    if not isinstance(x, kind):
        what = "an integer" if integer else "a real number"
        raise TypeError(f"{name} must be {what}, got {type(x).__name__}")
    if not integer and not math.isfinite(float(x)):
        raise ValueError(f"{name} must be finite, got {x}")
    if low is not None and (x < low or (x == low and not low_inclusive)):
        raise ValueError(f"{name} must be {'>=' if low_inclusive else '>'} {low}, got {x}")
    if high is not None and x > high:
        raise ValueError(f"{name} must be <= {high}, got {x}")
    return int(x) if integer else float(x)


def check_dtype(dtype):
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be float32 or float64, got {dt}")
    return dt
