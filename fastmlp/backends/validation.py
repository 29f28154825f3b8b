"""Every validator of fastmlp, in one place: one function per concept.

Design: two boundaries take arrays from outside.  The public API (MLP, Trainer, the
estimators) converts what the user gives (lists, other dtypes, strided or read-only arrays)
into what the hot loop trusts; the compiled kernels' checked face (`checked.py`) refuses
anything it would have to convert.  Both use these functions, so a concept (labels, sample
weights, a hyper-parameter, a float array) is checked by one rule everywhere; where the
boundaries differ (convert or refuse) that is one argument of the function.  Messages name
the argument; a wrong type or dtype is a TypeError, a wrong shape, order or value a
ValueError.
"""
import math
import numbers

import numpy as np

from .csr import as_csr, issparse

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def check_dtype(dtype, name="dtype"):
    """float32 or float64 as a numpy dtype."""
    dt = np.dtype(dtype)
    if dt not in FLOAT_DTYPES:
        raise ValueError(f"{name} must be float32 or float64, got {dt}")
    return dt


def all_finite(a):
    """True when every entry of float array `a` is finite, without allocating in the common
    case: a finite sum implies finite entries; only a non-finite sum (NaN/inf, or overflow)
    pays for the exact elementwise check."""
    if a.size == 0:
        return True
    with np.errstate(over="ignore", invalid="ignore"):  # an overflowing sum is not an error
        s = float(np.add.reduce(a.reshape(-1)))
    return math.isfinite(s) or bool(np.isfinite(a).all())


def check_number(name, x, low=None, high=None, low_inclusive=True, integer=False):
    """A finite real (or, with `integer`, an integral) scalar within [low, high]; returned as
    float (int).  Bools are refused: `lr=True` is a mistake, not 1.0."""
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


# --------------------------------------------------------------------------- float arrays

def check_X(X, n_features=None, dtype=np.float32, name="X"):
    """User data: a 2-D finite numeric array, converted to C-contiguous `dtype` (no copy when
    it already is one); a scipy.sparse matrix or array becomes a `csr.CSR` of `dtype`."""
    if issparse(X):
        arr = as_csr(X, dtype)
        if not all_finite(arr.data):
            raise ValueError(f"{name} contains NaN or infinity")
        return _check_X_shape(arr, n_features, name)
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
    _check_X_shape(arr, n_features, name)
    if not all_finite(arr):
        raise ValueError(f"{name} contains NaN or infinity")
    return arr


def _check_X_shape(arr, n_features, name):
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty: it has 0 samples")
    if arr.shape[1] == 0:
        raise ValueError(f"{name} has 0 features")
    if n_features is not None and arr.shape[1] != n_features:
        raise ValueError(f"{name} has {arr.shape[1]} features, the model expects {n_features}")
    return arr


def check_float_array(name, a, ndim, dtype=None, writeable=False):
    """Kernel argument: a C-contiguous float32/float64 ndarray of rank `ndim` (and `dtype`
    if given), never converted.  Returns its dtype."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(a).__name__}")
    if a.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must have dtype float32 or float64, got {a.dtype}")
    if dtype is not None and a.dtype != dtype:
        raise TypeError(f"{name} has dtype {a.dtype} but the other arrays are {dtype}; "
                        "use one dtype per call")
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {a.shape}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (use np.ascontiguousarray)")
    if writeable and not a.flags.writeable:
        raise ValueError(f"{name} is an output and must be writeable")
    return a.dtype


def check_shape(name, a, shape):
    if a.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {a.shape}")


# --------------------------------------------------------------------------- labels, weights

def check_labels(y, n, n_classes, name="y", convert=False):
    """Class labels of shape (n,) in [0, n_classes), returned as C-contiguous int64.

    convert=False (the kernels): an integer ndarray, nothing else.  convert=True (the public
    API): anything np.asarray reads, including bools and floats holding whole numbers; the
    range is checked before the cast, so 1e20 is reported as out of range instead of
    wrapping around in int64."""
    if convert:
        arr = np.asarray(y)
        if arr.dtype.kind == "f":
            if not (np.all(np.isfinite(arr)) and np.all(arr == np.round(arr))):
                raise TypeError(f"{name} must hold integer class labels, got {arr.dtype} values "
                                "that are not whole numbers (or NaN/infinity)")
        elif arr.dtype.kind not in "iub":
            raise TypeError(f"{name} must hold integer class labels, got dtype {arr.dtype}")
        if arr.ndim != 1:
            raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
        if arr.shape[0] != n:
            raise ValueError(f"{name} has {arr.shape[0]} labels but X has {n} samples")
    else:
        if not isinstance(y, np.ndarray):
            raise TypeError(f"{name} must be a numpy.ndarray of integers, got {type(y).__name__}")
        if y.dtype.kind not in "iu":
            raise TypeError(f"{name} must have an integer dtype, got {y.dtype}")
        if y.shape != (n,):
            raise ValueError(f"{name} must have shape ({n},), got {y.shape}")
        arr = y
    if arr.size:
        lo, hi = arr.min(), arr.max()
        if lo < 0 or hi >= n_classes:
            show = float if arr.dtype.kind == "f" else int
            raise ValueError(f"{name} has labels outside [0, {n_classes}): "
                             f"min {show(lo)}, max {show(hi)}")
    return np.ascontiguousarray(arr, dtype=np.int64)


def check_sample_weight(sample_weight, n, dtype, name="sample_weight"):
    """Per-sample weights of shape (n,): numeric, finite, non-negative, with a positive sum;
    returned as a C-contiguous array of `dtype` (the model's)."""
    sw = np.asarray(sample_weight)
    if sw.dtype.kind not in "fiub":
        raise TypeError(f"{name} must be numeric, got dtype {sw.dtype}")
    if sw.shape != (n,):
        raise ValueError(f"{name} must be numeric of shape ({n},), got shape {sw.shape}")
    sw = np.ascontiguousarray(sw, dtype=dtype)
    if not all_finite(sw) or np.any(sw < 0) or not np.sum(sw, dtype=np.float64) > 0:
        raise ValueError(f"{name} must be finite, non-negative, with a positive sum")
    return sw


def check_targets(y, n, n_outputs, output, dtype, name="y"):
    """Training targets of an output layer (contract.OUTPUTS) for n samples: class labels
    (n,) in [0, n_outputs) as int64 for "softmax" (`check_labels`); otherwise values
    (n, n_outputs) -- or (n,) when n_outputs is 1 -- converted to C-contiguous `dtype`:
    finite, in [0, 1] for "logistic" (0/1 labels, or probabilities), >= 0 for "exp" (counts)."""
    if output == "softmax":
        return check_labels(y, n, n_outputs, name=name, convert=True)
    try:
        arr = np.asarray(y)
    except (ValueError, TypeError) as exc:
        raise TypeError(f"{name} could not be read as a numeric array: {exc}") from None
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"{name} must be numeric, got dtype {arr.dtype}")
    if arr.ndim == 1 and n_outputs == 1:
        arr = arr.reshape(-1, 1)
    if arr.shape != (n, n_outputs):
        raise ValueError(f"{name} must have shape ({n}, {n_outputs}) for the model's "
                         f"{n_outputs} outputs, got {arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=dtype)
    if not all_finite(arr):
        raise ValueError(f"{name} contains NaN or infinity")
    if output == "logistic" and arr.size and (arr.min() < 0 or arr.max() > 1):
        raise ValueError(f"{name} must hold 0/1 targets (or probabilities in [0, 1]) for a "
                         f"logistic output")
    if output == "exp" and arr.size and arr.min() < 0:
        raise ValueError(f"{name} must be >= 0 for an exp (Poisson) output")
    return arr
