"""The one helper that holds a backend's kernel to the NumPy reference.

`check_against_reference(backend, kernel, args, kwargs, outputs, returns)` copies the
arguments twice, runs the reference and the backend on separate copies, and compares every
output buffer and the return value with tolerances scaled to the dtype.  It also checks that
the outputs kept their shape and dtype and that a returned array is the caller's buffer.
"""
import copy

import numpy as np

from fastmlp.backends import reference

# relative tolerance per dtype, in units of the dtype's machine epsilon
EPS_FACTOR = 64


def tol(dtype):
    return EPS_FACTOR * float(np.finfo(dtype).eps)


def assert_close(got, want, dtype, what=""):
    """|got - want| <= tol * (|want| + max|want|): relative, with an absolute floor scaled to
    the largest magnitude (cancellation in sums makes tiny entries noisy)."""
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    scale = max(1.0, float(np.max(np.abs(want)))) if want.size else 1.0
    t = tol(dtype)
    np.testing.assert_allclose(got, want, rtol=t, atol=t * scale, err_msg=what)


def _copy_args(args):
    return [a.copy() if isinstance(a, np.ndarray) else copy.copy(a) for a in args]


def check_against_reference(backend, kernel, args, kwargs=None, outputs=(), returns=None):
    """Run `kernel` of `backend` and of the reference on copies of `args` and compare.

    outputs : positions in `args` (ints) or names in `kwargs` (str) written by the kernel.
    returns : position/name of the buffer the kernel returns, or "float" for a scalar result.
    Returns the (reference result, backend result) pair for further checks.
    """
    kwargs = kwargs or {}
    ref_args, got_args = _copy_args(args), _copy_args(args)
    ref_kw = dict(zip(kwargs, _copy_args(kwargs.values())))
    got_kw = dict(zip(kwargs, _copy_args(kwargs.values())))
    dtype = next(a.dtype for a in args if isinstance(a, np.ndarray) and a.dtype.kind == "f")

    want = getattr(reference, kernel)(*ref_args, **ref_kw)
    got = getattr(backend, kernel)(*got_args, **got_kw)

    def pick(pos, a, kw):
        return kw[pos] if isinstance(pos, str) else a[pos]

    for pos in outputs:
        g, w, orig = pick(pos, got_args, got_kw), pick(pos, ref_args, ref_kw), \
            pick(pos, list(args), kwargs)
        assert g.shape == orig.shape and g.dtype == orig.dtype, f"{kernel}: output {pos} changed"
        assert np.all(np.isfinite(g)) == np.all(np.isfinite(w)), f"{kernel}: non-finite output"
        assert_close(g, w, dtype, f"{backend.name}.{kernel} output {pos} ({dtype})")
    if returns == "float":
        assert isinstance(got, float), f"{kernel} must return a Python float, got {type(got)}"
        assert_close(got, want, dtype, f"{backend.name}.{kernel} returned value")
    elif returns is not None:
        assert got is pick(returns, got_args, got_kw), \
            f"{backend.name}.{kernel} must return the caller's buffer {returns}"
    return want, got
