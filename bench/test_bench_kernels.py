"""Kernels: each kernel of docs/kernels.md, per backend, over three (N, H) shapes (D=784, C=10).

One group per kernel and shape, so the table compares the three backends on the same call.
Each benchmark first holds the backend's output to the NumPy reference with the tests' own
helper (`fastmlp.testing.check_against_reference`, rtol = 64·eps(dtype), atol =
rtol·max(1, max|reference|)), then times the raw (unvalidated) kernel -- the call the
training step makes.  extra_info holds
GFLOP/s for the products and GB/s (bytes each call must read and write) for the rest.
"""
import functools

import numpy as np
import pytest

from fastmlp.backends import BACKEND_NAMES, get_backend, reference
from fastmlp.backends.contract import KERNEL_NAMES
from fastmlp.bench import cases as B
from fastmlp.testing import Rel, Within, check_against_reference


def kernel_case(kernel, n, h, dtype=np.float32, seed=0):
    """Arguments of one call at batch n, hidden width h: (args, kwargs, outputs, (unit, work)).

    linear_* use X (n, 784), W (784, h); activation_backward dH, H (n, h) (relu); the losses
    Z (n, 10); the updates one (784, h) weight.  `outputs` are the positions or keyword names
    the kernel writes; work is flops ('GFLOP/s') or bytes moved ('GB/s').
    """
    rng = np.random.default_rng(seed)
    item = np.dtype(dtype).itemsize
    D, C = B.D, B.C

    def r(*shape):
        return rng.standard_normal(shape).astype(dtype)
    if kernel == "linear_forward":
        return ((r(n, D), r(D, h), r(h), np.empty((n, h), dtype)), {"activation": "relu"}, (3,),
                ("GFLOP/s", 2 * n * D * h))
    if kernel == "linear_backward":   # the output layer's form: dW, db and dX
        args = (r(n, h), r(n, D), r(D, h), np.empty((D, h), dtype), np.empty(h, dtype),
                np.empty((n, D), dtype))
        return args, {}, (3, 4, 5), ("GFLOP/s", 4 * n * D * h)
    if kernel == "activation_backward":
        return (r(n, h), np.maximum(r(n, h), 0), "relu"), {}, (0,), ("GB/s", 3 * n * h * item)
    if kernel == "softmax_xent_grad":
        args = (r(n, C) * 3, rng.integers(0, C, n), np.empty((n, C), dtype))
        return args, {}, (2,), ("GB/s", 2 * n * C * item + 8 * n)
    if kernel.startswith("csr_"):   # X (n, 784) sparse at 5%: TF-IDF-like rows
        import scipy.sparse
        from fastmlp.backends.csr import as_csr
        X = as_csr(scipy.sparse.random(n, D, density=0.05, format="csr", random_state=seed),
                   dtype)
        csr, nnz = (X.data, X.indices, X.indptr), X.nnz
        if kernel == "csr_linear_forward":
            return ((*csr, r(D, h), r(h), np.empty((n, h), dtype)), {"activation": "relu"},
                    (5,), ("GFLOP/s", 2 * nnz * h))
        if kernel == "csr_linear_backward":
            return ((r(n, h), *csr, np.empty((D, h), dtype), np.empty(h, dtype)), {}, (4, 5),
                    ("GFLOP/s", 2 * nnz * h))
        rows = np.random.default_rng(seed).permutation(n)
        return ((*csr, rows, np.empty(nnz, dtype), np.empty(nnz, np.int64),
                 np.empty(n + 1, np.int64)), {}, (4, 5, 6), ("GB/s", nnz * (item + 8) * 2))
    if kernel == "gather_rows":   # a standardised batch of n random rows of a (20000, 784) X
        X = r(20000, D)
        rows = np.random.default_rng(seed).permutation(20000)[:n]
        return ((X, rows, np.empty((n, D), dtype), r(D), 1 + np.abs(r(D))), {}, (2,),
                ("GB/s", 2 * n * D * item))
    if kernel in ("logistic_xent_grad", "squared_error_grad", "poisson_grad"):
        Y = (rng.random((n, C)) < 0.3).astype(dtype)
        args = (r(n, C), Y, np.empty((n, C), dtype))
        return args, {}, (2,), ("GB/s", 3 * n * C * item)
    if kernel == "sgd_update":
        kw = {"velocity": r(D, h), "momentum": 0.9}
        return (r(D, h), r(D, h), 0.01), kw, (0, "velocity"), ("GB/s", 5 * D * h * item)
    if kernel == "to_bf16":   # the bf16 step's conversion of one (784, h) weight
        x = rng.standard_normal((D, h)).astype(np.float32)
        return (x, np.empty((D, h), np.uint16)), {}, (1,), ("GB/s", 6 * D * h)
    if kernel == "dropout":   # a hidden layer's (n, h) activations at p = 0.2
        return (r(n, h), 0.2, 7, 3, 0), {}, (0,), ("GB/s", 2 * n * h * item)
    if kernel == "batch_norm_forward":   # a hidden layer's (n, h) product, normalised
        args = (3 * r(n, h) + 1, 1 + 0.1 * r(h), r(h), np.empty((n, h), dtype),
                np.empty(h, dtype), np.empty(h, dtype))
        return args, {"activation": "relu"}, (0, 3, 4, 5), ("GB/s", 4 * n * h * item)
    if kernel == "batch_norm_backward":
        Z, gamma = 3 * r(n, h) + 1, 1 + 0.1 * r(h)
        var = np.empty(h, dtype)
        reference.batch_norm_forward(Z, gamma, r(h), np.empty((n, h), dtype),
                                     np.empty(h, dtype), var)
        args = (r(n, h), Z, gamma, var, np.empty(h, dtype), np.empty(h, dtype))
        return args, {}, (0, 4, 5), ("GB/s", 4 * n * h * item)
    if kernel == "batch_norm_running":
        args = (r(h), np.abs(r(h)), n, r(h), 1 + np.abs(r(h)))
        return args, {}, (3, 4), ("GB/s", 6 * h * item)
    if kernel == "adam_update":
        args = (r(D, h), r(D, h), r(D, h), np.abs(r(D, h)), 3, 1e-3)
        return args, {}, (0, 2, 3), ("GB/s", 7 * D * h * item)
    raise ValueError(f"unknown kernel {kernel!r}")


def _copies(args, kwargs):
    return ([a.copy() if isinstance(a, np.ndarray) else a for a in args],
            {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in kwargs.items()})


def check_kernel(backend, kernel, case):
    """Hold `backend`'s kernel to the reference on copies of the case: every output, and the
    returned loss, within the dtype-scaled tolerance."""
    args, kwargs, outputs, _ = case
    check_against_reference(backend, kernel, args, kwargs, outputs=outputs,
                            returns="float" if kernel.endswith("_grad") else None,
                            tol=Within(0) if kernel in ("to_bf16", "dropout", "gather_rows")
                            else Rel(B.TOL_EPS))


@pytest.mark.parametrize("backend", BACKEND_NAMES)
@pytest.mark.parametrize("n,h", B.STEP_SHAPES, ids=[f"N{n}-H{h}" for n, h in B.STEP_SHAPES])
@pytest.mark.parametrize("kernel", KERNEL_NAMES)
def test_kernel(benchmark, require_backend, record_rate, kernel, n, h, backend):
    require_backend(backend)
    benchmark.group = f"kernels {kernel} N={n} H={h}"
    case = kernel_case(kernel, n, h)
    check_kernel(backend, kernel, case)
    args, kwargs = _copies(case[0], case[1])
    benchmark(functools.partial(getattr(get_backend(backend).raw, kernel), *args, **kwargs))
    record_rate(*case[3])
