"""Numba backend: `TrainStep`, the whole training step in one compiled call (docs/kernels.md).

Design
------
* The same algorithm as the Cython `TrainStep` (csrc/train_step.pxi), the fused form of
  `reference.TrainStep`: forward (GEMM -- or the CSR loop for a sparse first layer -- then
  bias + activation in one pass), the output's loss (in float64), a non-finite loss returns
  before anything is updated, then backward from the last layer: dX = delta·Wᵀ (before W
  changes), the activation backward fused with the column sums that are the previous layer's
  bias gradient, then the weight gradient and its update -- plain SGD in the GEMM through
  BLAS's alpha/beta, W = (1 - 2·wd·lr)·W - lr·inpᵀ·delta; the other optimisers a GEMM into
  dweights followed by the element-wise update, which a GEMM on fastmlp's threads carries
  with it (csrc/pool.h's fm_post: each thread updates the block it computed, with
  csrc/updates.h's loops, the ones the Cython step runs).  Biases: the loops, weight decay 0.
* precision="bf16" (float32 only), as train_step.pxi: every GEMM takes bfloat16 operands and
  accumulates in float32, one call each of oneDNN's gemm_bf16bf16f32 (fastmlp.backends.onednn
  `gemm_bf16`, the Fortran sgemm signature, called by `_fcall` like the provider's; oneDNN
  threads it, fastmlp's pool is not used).  The bf16 operands (contract.BF16Buffers, their
  addresses in the plan) are written by passes the step already makes: the update writes
  W16 as it writes W, tile by tile (`_post_update`, csrc/post.h), `_bias_act_bf16` the
  activations' and `_mask_colsum_bf16` the deltas' copies (step_loops.h; the bias gradients
  are the sums of the float32 deltas); a float32 X is converted into the step's buffer
  inside `_run`, a uint16 X is used as it is.  Plain SGD then GEMMs into dweights too.
  Weights, optimiser state, biases, the loss and every sum stay float32; `sync()` re-reads
  W into W16 (at construction, and after W was changed outside the step).
* Dropout rides on the same two passes (`_bias_act_drop`, `_mask_colsum` and their bf16
  forms; kernels.py `_dropout_row`, csrc/dropout.h's formula): the forward pass drops and
  scales each row of a hidden layer's output, the backward pass sends the delta through the
  same mask -- recomputed from (seed, step, layer, row, column) -- before the derivative.
* Batch normalisation (batch_norm=contract.BatchNorm) of every hidden layer, in the passes
  of csrc/train_step.pxi (kernels.py `_bn_stats`, `_bn_act`, `_bn_backward`): the layer's
  product goes to its zhat (the CSR loop adds no bias either), one sweep sums its columns
  (float64: mean and biased variance), one pass normalises it in place and writes
  f(γ·ẑ + b) with dropout and the bf16 copy; backward, `_mask_colsum` also sums δ·ẑ (dβ into
  dbiases, dγ), then `_bn_backward` turns δ into the gradient w.r.t. the product (and writes
  its bf16 copy), which the weight-gradient and δ·Wᵀ GEMMs read.  After every weight and
  bias, the gammas take the optimizer's loop (weight decay 0), then the running estimates
  move (kernels `_batch_norm_running`); a non-finite loss returns before either.  Its
  addresses are 9 more entries of each hidden layer's record, its momentum and eps two
  more hyper-parameters, its scratch (3·H float coefficients; the float64 sums use the
  step's accumulator, twice as long) the step's own.
* BLAS with alpha/beta: `np.dot` in Numba has neither, so the kernel calls the GEMM
  provider's (fastmlp.backends.blas) Fortran sgemm/dgemm, and fastmlp's thread pool
  (csrc/pool.c), through addresses kept in the plan and called by `_fcall` (Fortran
  convention: every argument is a pointer).  The address is read at run time, so the compiled
  code embeds none and stays cacheable.  Row-major arrays are column-major transposes:
  C = A·B is computed as Cᵀ = Bᵀ·Aᵀ, with the argument lists of train_step.pxi.
* One cheap call per step.  Numba unboxes every array argument on each call (~0.1 us each; a
  tuple of the ~15 arrays of a small net cost ~2.5 us), so the constructor validates the
  arrays once and writes their addresses and sizes into one int64 `plan` (a header, then one
  record per layer); `run` passes the plan, X, y, sample_weight and four scalars, and the kernel
  makes array views from the addresses (`numba.carray`: no allocation).  The BLAS scalar
  arguments (transpose flags, sizes, alpha, beta) are written into a scratch buffer the
  constructor allocates; the float64 column-sum accumulators and the hyper-parameters are
  buffers of the step too.  The step keeps references to every array, so the addresses stay
  valid; nothing is allocated per call.
* Kinds of inputs the kernel could misread are rejected before it runs: the constructor's
  arrays and `run`'s batch are checked by `contract.step_layout` and `contract.check_batch`, which
  the Cython step shares (the plan's addresses carry no dtype); the kernel checks that
  X is C-contiguous (a compile-time constant for C arrays) and that labels are in [0, C)
  (a write out of bounds otherwise).
* The kernel is dtype-generic (float32 and float64 specialise on X) and compiled with
  `config.JIT_OPTIONS` (cached, nogil, explicit fast-math flags).  It returns the loss as
  a float: unlike an array, a float is boxed without calling back into Python, so a pending
  Ctrl-C cannot surface as SystemError (see kernels.py).
* The bias + activation pass, the activation backward, the losses, batch normalisation's
  passes and the per-element optimizer steps are kernels.py's own (`_bias_act`,
  `_bias_act_row`, `_act_backward_row`, the `*_grad` losses, `_csr_forward`, `_bn_*`,
  `_sgd_step`, `_sgd_momentum_step`, `_adam_step`, `_to_bf16`), so each formula is written
  once.
  This module imports kernels.py, never the other way; the package's __init__ puts both
  under one name.  Numba keys its on-disk cache on this file only; `config.stamp_caches`
  ties it to kernels.py and config.py too, so changing either recompiles `_run`.
"""
import math
import sys

import numba
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from .. import onednn as _onednn
from ..blas import gemm_pool, get_provider
from ..contract import (MIN_GEMM_FLOPS, OPT_ADAM, OPT_NESTEROV, OPT_SGD, OUTPUTS,
                        bf16_buffers, check_batch, dropout_threshold, same_arrays,
                        step_layout)
from ..csr import CSR
from . import config
from . import kernels as _kernels
from .config import JIT_OPTIONS
from .kernels import (_U64, ACT_CODES, _act_backward_row, _adam_step, _batch_norm_running,
                      _bias_act, _bias_act_row, _bn_act, _bn_backward, _bn_stats,
                      _csr_forward, _csr_weight_grad, _dropout_row, _dropout_stream,
                      _sgd_momentum_step, _sgd_step, _to_bf16, logistic_xent_grad,
                      poisson_grad, softmax_xent_grad, squared_error_grad, to_bf16)

_jit = njit(**JIT_OPTIONS)


# csrc/pool.h's fm_job as the LP64 ABI lays it out (checked against the built pool below)
_JOB_LAYOUT = {"size": 104, "gemm": 0, "ta": 8, "tb": 9, "m": 12, "n": 16, "k": 20, "lda": 24,
               "ldb": 28, "ldc": 32, "itemsize": 36, "chunks": 40, "use_workers": 44,
               "opsize": 48, "alpha": 56, "A": 64, "B": 72, "beta": 80, "C": 88, "post": 96}
# and its fm_post (the update a GEMM carries): lr, wd2, mu, b1, b2, c1, c2, eps float64s,
# then P16 (the bf16 step's copy of P; 0 otherwise)
_POST_LAYOUT = {"size": 104, "kind": 0, "P": 8, "s1": 16, "s2": 24, "lr": 32, "P16": 96}


def _pool_layout():
    """(gemm, ta, m, alpha, size) offsets of fm_job: tb follows ta; n, k, lda, ldb, ldc,
    itemsize, chunks, use_workers, opsize follow m as int32s; A, B, beta, C, post follow
    alpha."""
    try:
        from .. import _pool
    except ImportError:
        pass
    else:
        if _pool.job_layout() != _JOB_LAYOUT or _pool.post_layout() != _POST_LAYOUT:
            raise ImportError("csrc/pool.h's fm_job or fm_post is not laid out as "
                              f"numba/train_step.py expects: {_pool.job_layout()}, "
                              f"{_pool.post_layout()}")
    return tuple(_JOB_LAYOUT[f] for f in ("gemm", "ta", "m", "alpha", "size"))


# plan header (int64 entries): _FN is the hidden activation's code, _OUT the output's; _GEMMF
# the address of the provider's gemm of the step's dtype; _POOL of
# fastmlp's GEMM threads (fm_gemm; 0: none), _CHUNKS the blocks a GEMM of at least
# _MINFLOPS flops is cut into, _WORKERS whether the pool's workers take part; _BF16 1 for a
# bf16 step (every GEMM is _GEMM16, oneDNN's gemm_bf16bf16f32 with the Fortran signature, on
# bfloat16 operands), _X16 the address of its (n_max, D_0) bf16 batch buffer (0 otherwise)
_NL, _NMAX, _KIND, _DZ, _ACC, _SCRATCH, _HYPER, _FN, _OUT = range(9)
_GEMMF, _POOL, _CHUNKS, _WORKERS, _MINFLOPS = range(9, 14)
_BF16, _GEMM16, _X16 = range(14, 17)
# dropout: _DROP the address of the (n_layers,) float64 probabilities of each layer's output
# (0 for the last), _SEED of the (1,) uint64 key of the masks
_DROP, _SEED = range(17, 19)
# batch normalisation: _BNS the address of a (3·H_max,) scratch of the step's dtype (the
# per-column coefficients of kernels._bn_stats / _bn_backward; 0 without batch normalisation)
_BNS = 19
_HEAD = 20
_IDENTITY = ACT_CODES["identity"]
_OUT_LOGISTIC, _OUT_IDENTITY = OUTPUTS.index("logistic"), OUTPUTS.index("identity")
# per-layer record (at _HEAD + i * _REC): fan_in, fan_out, then addresses (0 = unused), in the
# order of the tuples of contract.step_layout, then the bf16 step's copies
# (contract.BF16Buffers; 0 otherwise): W16 (fan_in, fan_out) of W, A16 (n_max, fan_out) of
# act (hidden layers), D16 (n_max, fan_out) of the delta w.r.t. act's pre-activation
_FI, _FO, _W, _B, _DW, _DB, _ACT, _DX, _SW1, _SW2, _SB1, _SB2 = range(12)
_W16, _A16, _D16 = range(12, 15)
_THR = 15   # the dropout threshold of act (contract.dropout_threshold)
# batch normalisation of a hidden layer (0 = none: the output layer, or no batch_norm), in the
# order of contract.Layout.batch_norm: gamma, dgamma (fan_out,), gamma's state sg1, sg2 (0
# where unused), zhat (n_max, fan_out) (the product, then ẑ), the batch's mean, var and the
# running estimates (fan_out,)
_G, _DG, _SG1, _SG2, _ZH, _MEAN, _VAR, _RM, _RV = range(16, 25)
_REC = 25
# hyper-parameters (float64 buffer): momentum, Adam's betas, the softmax's label smoothing,
# batch normalisation's momentum (of the running estimates) and eps
_MU, _B1, _B2, _SMOOTH, _BN_MO, _BN_EPS = range(6)
_NHYPER = 6
# scratch bytes: the BLAS scalar arguments, passed by address
_CH_N, _CH_T = 0, 1          # b"N", b"T"
_INTS = 4                    # int32 m, n, k, lda, ldb, ldc
_ALPHA = 32                  # alpha, beta: a (2,) array of the arrays' dtype
_JOB = 48                    # an fm_job (csrc/pool.h) for fastmlp's GEMM threads, and the
_J_GEMM, _J_TA, _J_M, _J_ALPHA, _J_SIZE = _pool_layout()   # byte offsets of its fields
_POST = _JOB + _J_SIZE       # the fm_post of the weight updates, then
_SCRATCH_BYTES = _POST + _POST_LAYOUT["size"]
_P_KIND, _P_PTRS, _P_LR, _P_P16 = (_POST_LAYOUT[f] for f in ("kind", "P", "lr", "P16"))
# a bf16 update converts W to W16 tile by tile, the tile just updated still in L1 (post.h)
_POST_TILE = 2048


# --------------------------------------------------------------------------- BLAS

@intrinsic
def _ptr(typingctx, address):
    """An integer address as a void pointer."""
    if not isinstance(address, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        return builder.inttoptr(args[0], cgutils.voidptr_t)
    return types.voidptr(address), codegen


@intrinsic
def _fcall(typingctx, address, args):
    """Call the void function at integer `address` with the tuple `args` of void pointers
    (the Fortran BLAS convention: every argument by address).  The address comes from the
    plan at run time, so the compiled code embeds none and stays cacheable."""
    if not isinstance(address, types.Integer) or not isinstance(args, types.BaseTuple):
        return None
    n = len(args)

    def codegen(context, builder, sig, llargs):
        fnty = ir.FunctionType(ir.VoidType(), [cgutils.voidptr_t] * n)
        fn = builder.inttoptr(llargs[0], fnty.as_pointer())
        builder.call(fn, [builder.extract_value(llargs[1], i) for i in range(n)])
        return context.get_dummy_value()
    return types.void(address, args), codegen


@_jit
def _view(address, shape, dtype):
    """The array of `shape` and `dtype` at `address` (C order; no copy, no allocation)."""
    return numba.carray(_ptr(address), shape, dtype)


@_jit
def _gemm(plan, scr, ab, ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc, post):
    """Column-major C = alpha·op(A)·op(B) + beta·C through the step's GEMM provider, then
    the update `post` (the scratch's fm_post, or 0: none) with C as its gradient (ldc = m);
    ta/tb are _CH_N or _CH_T, A/B/C addresses; scr: the scratch's address, ab (2,): its
    alpha/beta slots in the arrays' dtype.  A GEMM of at least plan[_MINFLOPS] flops is cut
    into plan[_CHUNKS] blocks for fastmlp's threads (csrc/pool.c: an fm_job in the scratch,
    each block updated after its GEMM), a smaller one is one call and one update.  A bf16
    step's GEMMs (A, B bfloat16) are plan[_GEMM16]'s, cut into blocks the same way (each
    block a oneDNN call; csrc/train_step.pxi `_gemm` has the measurements)."""
    ab[0] = alpha
    ab[1] = beta
    a = scr + _ALPHA
    bf16 = plan[_BF16] != 0
    f = plan[_GEMM16] if bf16 else plan[_GEMMF]
    if plan[_POOL] != 0 and 2 * m * n * k >= plan[_MINFLOPS]:
        job = scr + _JOB
        _view(job + _J_GEMM, 1, np.int64)[0] = f
        chars = _view(job + _J_TA, 2, np.uint8)
        chars[0] = 78 if ta == _CH_N else 84   # b"N", b"T"
        chars[1] = 78 if tb == _CH_N else 84
        ints = _view(job + _J_M, 10, np.int32)
        ints[0], ints[1], ints[2], ints[3], ints[4], ints[5] = m, n, k, lda, ldb, ldc
        ints[6], ints[7], ints[8] = ab.itemsize, plan[_CHUNKS], plan[_WORKERS]
        ints[9] = 2 if bf16 else ab.itemsize
        ptrs = _view(job + _J_ALPHA, 6, np.int64)
        ptrs[0], ptrs[1], ptrs[2], ptrs[3], ptrs[4] = a, A, B, a + ab.itemsize, C
        ptrs[5] = post
        _fcall(plan[_POOL], (_ptr(job),))
        return
    _gemm_call(f, scr, ta, tb, m, n, k, a, A, lda, B, ldb, a + ab.itemsize, C, ldc)
    if post != 0:
        _post_update(post, C, m * n, ab.dtype)


@_jit
def _gemm_call(f, scr, ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc):
    """One call of the Fortran-signature GEMM at address f, its integer arguments written
    into the scratch's slots (alpha, beta: addresses)."""
    iv = _view(scr + _INTS, 6, np.int32)
    iv[0], iv[1], iv[2], iv[3], iv[4], iv[5] = m, n, k, lda, ldb, ldc
    i = scr + _INTS
    _fcall(f, (_ptr(scr + ta), _ptr(scr + tb), _ptr(i), _ptr(i + 4), _ptr(i + 8), _ptr(alpha),
               _ptr(A), _ptr(i + 12), _ptr(B), _ptr(i + 16), _ptr(beta), _ptr(C),
               _ptr(i + 20)))


@_jit
def _post_update(post, G, n, dt):
    """The update of the fm_post at address `post` over its parameter's n elements, with
    gradient G, on the caller (pool.c's fm_post_block does the same block by block); the
    scalars are rounded to dt as pool.c rounds them.  With a P16 (bf16 step), P's bfloat16
    copy is written as P is, tile by tile: _POST_TILE elements updated, then converted while
    they are in L1 (csrc/post.h's fm_post_f32)."""
    t = dt.type
    kind = _view(post + _P_KIND, 1, np.int32)[0]
    ptrs = _view(post + _P_PTRS, 3, np.int64)
    h = _view(post + _P_LR, 8, np.float64)   # lr, wd2, mu, b1, b2, c1, c2, eps
    p16 = _view(post + _P_P16, 1, np.int64)[0]
    b1, b2 = t(h[3]), t(h[4])
    lr, wd2, mu, b1c, b2c, c1, c2, eps = (t(h[0]), t(h[1]), t(h[2]), t(1) - b1, t(1) - b2,
                                          t(h[5]), t(h[6]), t(h[7]))
    P, S1, S2 = ptrs[0], ptrs[1], ptrs[2]
    if p16 == 0:
        _update(kind, n, P, G, S1, S2, dt, lr, wd2, mu, b1, b1c, b2, b2c, c1, c2, eps)
        return
    size = _view(P, 1, dt).itemsize   # (a Numba dtype has no itemsize)
    for t0 in range(0, n, _POST_TILE):
        ln = min(_POST_TILE, n - t0)
        off = t0 * size
        _update(kind, ln, P + off, G + off, S1 + off if S1 != 0 else 0,
                S2 + off if S2 != 0 else 0, dt, lr, wd2, mu, b1, b1c, b2, b2c, c1, c2, eps)
        _to_bf16(_view(P + off, ln, dt), _view(p16 + t0 * 2, ln, np.uint16))


# --------------------------------------------------------------------------- element-wise

@_jit
def _mask_row(D, i, A, act, stream, thr, s, q, p):
    """Row i of a backward pass: (p > 0) through the dropout mask of (stream, thr) -- A is
    then the dropped-out output, f(z) / (1 - p) where kept -- then D[i] *= f'(z), from the
    activation's output (kernels._act_backward_row with q = 1 - p; step_loops.h's
    mask_row)."""
    # D (m, H) IN/OUT, A (m, H) IN; stream, thr uint64, s, q of D's dtype, p float64
    row = D[i]
    if p > 0.0:
        _dropout_row(row, _U64(i) * _U64(D.shape[1]) + _U64(1), stream, thr, s)
    _act_backward_row(row, A[i], act, q)


@_jit
def _bias_act_drop(out, b, act, stream, thr, p):
    """kernels._bias_act, then (p > 0) each row through the dropout mask of (stream, thr)
    while it is in L1 (step_loops.h's bias_act_drop)."""
    # out (m, H) IN/OUT, b (H,) IN; stream, thr uint64, p float64
    if p == 0.0:
        _bias_act(out, b, act)
        return
    s = out.dtype.type(1.0 / (1.0 - p))
    for i in range(out.shape[0]):
        _bias_act_row(out, i, b, act, stream, thr, s, p)


@_jit
def _mask_colsum(D, A, act, acc, out, stream, thr, p, Zh, dg):
    """out = column sums of D, in float64, after each row went through _mask_row (dropout,
    then the activation's derivative; nothing for the identity): the activation backward
    and the previous layer's bias gradient in one pass over D.  With batch normalisation
    (Zh, the layer's ẑ, given) also dg = column sums of D·ẑ: out and dg are dβ and dγ,
    kernels._bn_backward's inputs."""
    # D (m, H) IN/OUT, A (m, H) IN (the activation's output), acc (H,) float64 scratch
    # ((2H,) with Zh), out (H,) OUT; stream, thr uint64, p float64; Zh (m, H) IN and dg (H,)
    # OUT, or None
    n, h = D.shape
    s, q = D.dtype.type(1.0 / (1.0 - p)), D.dtype.type(1.0 - p)
    acc[:] = 0.0
    sg = acc[h:2 * h]   # Σ D·ẑ (empty without Zh)
    for i in range(n):
        _mask_row(D, i, A, act, stream, thr, s, q, p)
        for j in range(h):
            acc[j] += float(D[i, j])
        if Zh is not None:   # a loop of its own: one loop with both sums ran 2-3x slower
            row, z = D[i], Zh[i]
            for j in range(h):
                sg[j] += float(row[j]) * float(z[j])
    for j in range(h):
        out[j] = acc[j]
    if dg is not None:
        for j in range(h):
            dg[j] = sg[j]


@_jit
def _bias_act_bf16(out, b, act, out16, stream, thr, p):
    """_bias_act_drop, each row then also written as bfloat16 bits to out16 while it is in
    L1: the bf16 step's activations, the operand of the next GEMMs (step_loops.h's
    bias_act_bf16)."""
    # out (m, H) IN/OUT float32, b (H,) IN, out16 (m, H) uint16 OUT; stream, thr, p as there
    s = out.dtype.type(1.0 / (1.0 - p))
    for i in range(out.shape[0]):
        _bias_act_row(out, i, b, act, stream, thr, s, p)
        _to_bf16(out[i], out16[i])


@_jit
def _mask_colsum_bf16(D, A, act, acc, out, D16, stream, thr, p):
    """_mask_colsum, each row of D then also written as bfloat16 bits to D16: the bf16 step's
    delta, the operand of the next GEMMs; the column sums are of the float32 rows
    (step_loops.h's mask_colsum_bf16)."""
    # D (m, H) IN/OUT float32, A (m, H) IN (the activation's output), acc (H,) float64
    # scratch, out (H,) OUT, D16 (m, H) uint16 OUT; stream, thr, p as _mask_colsum's
    n, h = D.shape
    s, q = D.dtype.type(1.0 / (1.0 - p)), D.dtype.type(1.0 - p)
    acc[:] = 0.0
    for i in range(n):
        _mask_row(D, i, A, act, stream, thr, s, q, p)
        for j in range(h):
            acc[j] += float(D[i, j])
        _to_bf16(D[i], D16[i])
    for j in range(h):
        out[j] = acc[j]


def _loss(Z, y, dZ, sw, output, smooth):
    """The output layer's loss on Z against targets y (see the overload below)."""


@overload(_loss, jit_options=JIT_OPTIONS)
def _loss_impl(Z, y, dZ, sw, output, smooth):
    """Typed by y: int64 labels (m,) -- kernels.softmax_xent_grad, after checking that every
    label is in [0, C) (the kernel would read and write out of bounds otherwise) -- or values
    (m, K): the loss kernel of `output` (logistic, identity or exp)."""
    # Z (m, C) IN, y (m,) or (m, C) IN, dZ (m, C) OUT, sw (m,) IN or None
    if y.ndim == 1:
        def labels(Z, y, dZ, sw, output, smooth):
            c = Z.shape[1]
            for i in range(y.shape[0]):
                if y[i] < 0 or y[i] >= c:
                    raise ValueError("TrainStep.run: labels must be in [0, n_classes)")
            return softmax_xent_grad(Z, y, dZ, sw, smooth)
        return labels

    def values(Z, y, dZ, sw, output, smooth):
        if output == _OUT_LOGISTIC:
            return logistic_xent_grad(Z, y, dZ, sw)
        if output == _OUT_IDENTITY:
            return squared_error_grad(Z, y, dZ, sw)
        return poisson_grad(Z, y, dZ, sw)
    return values


@_jit
def _update(kind, n, P, G, S1, S2, dtype, lr, wd2, mu, b1, b1c, b2, b2c, c1, c2, eps):
    """kernels.py's per-element update steps over one parameter of n elements: P, its
    gradient G and state S1 (velocity or Adam's m), S2 (Adam's v) are addresses; the scalars
    are in `dtype` (b1c = 1 - b1, b2c = 1 - b2, c1/c2 Adam's bias corrections)."""
    w = _view(P, n, dtype)
    d = _view(G, n, dtype)
    if kind == OPT_SGD:
        for i in range(n):
            _sgd_step(w, d, i, lr, wd2)
    elif kind == OPT_ADAM:
        m = _view(S1, n, dtype)
        v = _view(S2, n, dtype)
        for i in range(n):
            _adam_step(w, d, m, v, i, lr, b1, b1c, b2, b2c, c1, c2, eps, wd2)
    else:
        v = _view(S1, n, dtype)
        nesterov = kind == OPT_NESTEROV
        for i in range(n):
            _sgd_momentum_step(w, d, v, i, lr, wd2, mu, nesterov)


# --------------------------------------------------------------------------- the step

@_jit
def _run(plan, X, data, indices, indptr, x16, m, y, sw, lr, step, weight_decay, eps):
    """One training step on the batch of m rows -- X (m, D) dense, or (when indptr is not
    empty) the CSR data, indices, indptr -- with targets y (m,) or (m, C), sw (m,) or None,
    and the arrays of `plan`; returns the loss before the update (non-finite: nothing was
    updated).  A bf16 step reads the batch as bfloat16: at address x16 (the caller's uint16
    X, C-contiguous; X is then not read), or when x16 is 0 X converted into plan[_X16]."""
    # plan (_HEAD + n_layers * _REC,) int64 IN, X (m, D) IN (unused when sparse), data (nnz,),
    # indices (nnz,) int64, indptr (m+1,) int64 IN (empty when dense), x16 address of an
    # (m, D) uint16 batch or 0, y (m,) or (m, C) IN, sw (m,) IN or None
    sparse = indptr.shape[0] > 0
    if not sparse and not X.flags.c_contiguous:
        raise ValueError("TrainStep.run: X must be C-contiguous")
    dt = X.dtype
    t = dt.type
    nl, kind, scr, fn = plan[_NL], plan[_KIND], plan[_SCRATCH], plan[_FN]
    last = nl - 1
    bf16 = plan[_BF16] != 0
    hyp = _view(plan[_HYPER], _NHYPER, np.float64)
    bn_eps = hyp[_BN_EPS]
    ab = _view(scr + _ALPHA, 2, dt)
    lr_, wd2, mu, eps_ = t(lr), t(2.0 * weight_decay), t(hyp[_MU]), t(eps)
    b1, b1c, b2, b2c = t(hyp[_B1]), t(1.0 - hyp[_B1]), t(hyp[_B2]), t(1.0 - hyp[_B2])
    c1 = t(1.0 - math.pow(hyp[_B1], step))
    c2 = t(1.0 - math.pow(hyp[_B2], step))
    one, zero = t(1), t(0)
    # the weights' update, carried by their gradient GEMMs: kind and scalars now, the
    # parameter and state addresses per layer
    post = scr + _POST
    _view(post + _P_KIND, 1, np.int32)[0] = kind
    ptrs = _view(post + _P_PTRS, 3, np.int64)
    h = _view(post + _P_LR, 8, np.float64)
    h[0], h[1], h[2], h[3], h[4] = lr, 2.0 * weight_decay, hyp[_MU], hyp[_B1], hyp[_B2]
    h[5], h[6], h[7] = 1.0 - math.pow(hyp[_B1], step), 1.0 - math.pow(hyp[_B2], step), eps
    p16 = _view(post + _P_P16, 1, np.int64)
    p16[0] = 0

    # a bf16 step's batch: the caller's bf16 bits, or X converted into the step's buffer
    xa = np.int64(X.ctypes.data)
    xa16 = x16
    if bf16 and x16 == 0:
        d0 = plan[_HEAD + _FI]
        xa16 = plan[_X16]
        _to_bf16(_view(xa, m * d0, dt), _view(xa16, m * d0, np.uint16))

    # dropout: each layer's probability (0: none) and the masks' key (kernels._dropout_*)
    drop = _view(plan[_DROP], nl, np.float64)
    seed, ustep = _view(plan[_SEED], 1, np.uint64)[0], _U64(step)

    # forward: act_i = f(a · W_i + b_i) (the last layer stays linear); a16: a's bf16 copy.
    # With batch normalisation the product goes to zhat_i and act_i = f(γ_i·ẑ_i + b_i)
    a, a16 = xa, xa16
    for i in range(nl):
        L = _HEAD + i * _REC
        fi, fo, act, zh = plan[L + _FI], plan[L + _FO], plan[L + _ACT], plan[L + _ZH]
        prod = zh if zh != 0 else act   # where the product goes
        if i == 0 and sparse:   # X·W_0, one row of W_0 per stored entry (no bias)
            if not _csr_forward(data, indices, indptr, _view(plan[L + _W], (fi, fo), dt),
                                _view(prod, (m, fo), dt)):
                raise ValueError("TrainStep.run: a column index of X is outside [0, D) or "
                                 "its indptr decreases")
        else:
            # prodᵀ (fo, m) = W_iᵀ (fo, fi) · aᵀ (fi, m), column-major views of row-major
            _gemm(plan, scr, ab, _CH_N, _CH_N, fo, m, fi, one,
                  plan[L + _W16] if bf16 else plan[L + _W], fo, a16 if bf16 else a, fi, zero,
                  prod, fo, 0)
        # (dropout and) the bias + activation pass; bf16: and the activations' bf16 copy
        stream = _dropout_stream(seed, ustep, _U64(i))
        thr = _U64(plan[L + _THR])
        if zh != 0:   # the batch's statistics, then the normalisation pass
            Zv, mean = _view(zh, (m, fo), dt), _view(plan[L + _MEAN], fo, dt)
            inv = _view(plan[_BNS], fo, dt)
            _bn_stats(Zv, mean, _view(plan[L + _VAR], fo, dt), inv, bn_eps,
                      _view(plan[_ACC], 2 * fo, np.float64))
            if bf16:
                _bn_act(Zv, _view(plan[L + _G], fo, dt), _view(plan[L + _B], fo, dt),
                        _view(act, (m, fo), dt), mean, inv, fn, stream, thr, drop[i],
                        _view(plan[L + _A16], (m, fo), np.uint16))
            else:
                _bn_act(Zv, _view(plan[L + _G], fo, dt), _view(plan[L + _B], fo, dt),
                        _view(act, (m, fo), dt), mean, inv, fn, stream, thr, drop[i], None)
        elif bf16 and i < last:
            _bias_act_bf16(_view(act, (m, fo), dt), _view(plan[L + _B], fo, dt), fn,
                           _view(plan[L + _A16], (m, fo), np.uint16), stream, thr, drop[i])
        else:
            _bias_act_drop(_view(act, (m, fo), dt), _view(plan[L + _B], fo, dt),
                           fn if i < last else _IDENTITY, stream, thr, drop[i])
        a, a16 = act, plan[L + _A16]

    # loss and dZ
    L = _HEAD + last * _REC
    C = plan[L + _FO]
    dZ = plan[_DZ]
    dZv = _view(dZ, (m, C), dt)
    loss = _loss(_view(a, (m, C), dt), y, dZv, sw, plan[_OUT], hyp[_SMOOTH])
    if not math.isfinite(loss):
        return loss

    # backward, last layer first
    if bf16:   # and dZ's bf16 copy
        _mask_colsum_bf16(dZv, dZv, _IDENTITY, _view(plan[_ACC], C, np.float64),
                          _view(plan[L + _DB], C, dt), _view(plan[L + _D16], (m, C), np.uint16),
                          seed, _U64(0), 0.0)
    else:
        _mask_colsum(dZv, dZv, _IDENTITY, _view(plan[_ACC], C, np.float64),
                     _view(plan[L + _DB], C, dt), seed, _U64(0), 0.0, None, None)
    delta = dZ
    for i in range(last, -1, -1):
        L = _HEAD + i * _REC
        fi, fo, W = plan[L + _FI], plan[L + _FO], plan[L + _W]
        if i > 0:
            P = L - _REC
            a, a16 = plan[P + _ACT], plan[P + _A16]
            dX = plan[L + _DX]
            # dXᵀ (fi, m) = W (fi, fo) · δᵀ (fo, m); then the activation backward and the bias
            # gradient of layer i-1 in one pass (and, bf16, the delta's bf16 copy)
            _gemm(plan, scr, ab, _CH_T, _CH_N, fi, m, fo, one,
                  plan[L + _W16] if bf16 else W, fo, plan[L + _D16] if bf16 else delta, fo,
                  zero, dX, fi, 0)
            # (through layer i-1's dropout mask first, when it has one)
            stream = _dropout_stream(seed, ustep, _U64(i - 1))
            thr = _U64(plan[P + _THR])
            zh = plan[P + _ZH]
            if zh != 0:
                # batch normalisation: the same pass also sums δ·ẑ (dβ into dbiases, dγ),
                # then δ becomes the gradient w.r.t. layer i-1's product (bf16: and its copy)
                Dv, Zv = _view(dX, (m, fi), dt), _view(zh, (m, fi), dt)
                db, dg = _view(plan[P + _DB], fi, dt), _view(plan[P + _DG], fi, dt)
                _mask_colsum(Dv, _view(a, (m, fi), dt), fn,
                             _view(plan[_ACC], 2 * fi, np.float64), db, stream, thr,
                             drop[i - 1], Zv, dg)
                gamma, var = _view(plan[P + _G], fi, dt), _view(plan[P + _VAR], fi, dt)
                coef = _view(plan[_BNS], 3 * fi, dt)
                if bf16:
                    _bn_backward(Dv, Zv, gamma, var, db, dg, bn_eps, coef,
                                 _view(plan[P + _D16], (m, fi), np.uint16))
                else:
                    _bn_backward(Dv, Zv, gamma, var, db, dg, bn_eps, coef, None)
            elif bf16:
                _mask_colsum_bf16(_view(dX, (m, fi), dt), _view(a, (m, fi), dt), fn,
                                  _view(plan[_ACC], fi, np.float64),
                                  _view(plan[P + _DB], fi, dt),
                                  _view(plan[P + _D16], (m, fi), np.uint16), stream, thr,
                                  drop[i - 1])
            else:
                _mask_colsum(_view(dX, (m, fi), dt), _view(a, (m, fi), dt), fn,
                             _view(plan[_ACC], fi, np.float64), _view(plan[P + _DB], fi, dt),
                             stream, thr, drop[i - 1], None, None)
        else:
            a, a16 = xa, xa16
        # weight gradient inpᵀδ as dWᵀ (fo, fi) = δᵀ (fo, m) · inp (m, fi), fused with the update
        if i == 0 and sparse:   # a sparse input: dW = Xᵀδ scattered by rows, then the loops
            _csr_weight_grad(_view(delta, (m, fo), dt), data, indices, indptr,
                             _view(plan[L + _DW], (fi, fo), dt))
            _update(kind, fi * fo, W, plan[L + _DW], plan[L + _SW1], plan[L + _SW2], dt, lr_,
                    wd2, mu, b1, b1c, b2, b2c, c1, c2, eps_)
        elif kind == OPT_SGD and not bf16:
            _gemm(plan, scr, ab, _CH_N, _CH_T, fo, fi, m, -lr_, delta, fo, a, fi,
                  one - wd2 * lr_, W, fo, 0)
        else:   # dW, and the update of W (block by block on fastmlp's threads; bf16: and W16)
            ptrs[0], ptrs[1], ptrs[2], p16[0] = W, plan[L + _SW1], plan[L + _SW2], plan[L + _W16]
            _gemm(plan, scr, ab, _CH_N, _CH_T, fo, fi, m, one,
                  plan[L + _D16] if bf16 else delta, fo, a16 if bf16 else a, fi, zero,
                  plan[L + _DW], fo, post)
        _update(kind, fo, plan[L + _B], plan[L + _DB], plan[L + _SB1], plan[L + _SB2], dt,
                lr_, zero, mu, b1, b1c, b2, b2c, c1, c2, eps_)
        delta = plan[L + _DX]

    # batch normalisation: the gammas (the same optimizer, never decayed), then the running
    # estimates from this batch's statistics
    for i in range(last):
        L = _HEAD + i * _REC
        if plan[L + _ZH] != 0:
            fo = plan[L + _FO]
            _update(kind, fo, plan[L + _G], plan[L + _DG], plan[L + _SG1], plan[L + _SG2], dt,
                    lr_, zero, mu, b1, b1c, b2, b2c, c1, c2, eps_)
            _batch_norm_running(_view(plan[L + _MEAN], fo, dt), _view(plan[L + _VAR], fo, dt),
                                m, _view(plan[L + _RM], fo, dt), _view(plan[L + _RV], fo, dt),
                                hyp[_BN_MO])
    return loss


class TrainStep:
    """A whole training step of one network in one compiled call: see docs/kernels.md.

    TrainStep(weights, biases, dweights, dbiases, acts, deltas, dZ, state, optimizer,
              momentum=0.0, nesterov=False, beta1=0.9, beta2=0.999, activation='relu',
              output='softmax', gemm='auto', precision=None, dropout=0.0, dropout_seed=0,
              label_smoothing=0.0, batch_norm=None)

    weights[i] (D_i, D_i+1), biases[i] (D_i+1,), dweights/dbiases the same shapes; acts[i]
    (n_max, D_i+1); deltas[i] (n_max, D_i) for i >= 1 (deltas[0] is ignored); dZ (n_max, C);
    state: per parameter (weights then biases) None (plain SGD), the velocity (momentum), or
    an (m, v) pair (Adam).  All C-contiguous and writeable, one dtype (float32 or float64).
    `run(X, y, sample_weight, lr, step, weight_decay=0.0, eps=1e-8)` trains on X (m, D_0),
    y (m,) int64 labels (softmax) or (m, C) values, with 1 <= m <= n_max, and returns the
    loss.  precision="bf16" (float32 arrays, oneDNN installed): bfloat16 GEMM operands, X
    float32 or uint16 bfloat16 bits; `sync()` re-reads W into its bf16 copy after the weights
    were changed outside the step.  dropout: one probability or one per hidden layer; the
    masks are keyed by (dropout_seed, run's step, layer, row, column) (contract.py, "dropout
    masks").  batch_norm: None, or a contract.BatchNorm of the hidden layers (zhats (n_max,
    H_i)): each hidden layer's product is normalised with the batch's statistics, its bias is
    BN's shift, the gammas are trained with their own state (not decayed) and the running
    estimates move after every step with a finite loss.
    """

    def __init__(self, weights, biases, dweights, dbiases, acts, deltas, dZ, state, optimizer,
                 momentum=0.0, nesterov=False, beta1=0.9, beta2=0.999, activation="relu",
                 output="softmax", gemm="auto", precision=None, dropout=0.0, dropout_seed=0,
                 label_smoothing=0.0, batch_norm=None):
        self.provider = get_provider(gemm)
        lay = self._layout = step_layout(
            weights, biases, dweights, dbiases, acts, deltas, dZ, state, optimizer, momentum,
            nesterov, activation, output, precision, dropout, dropout_seed, label_smoothing,
            batch_norm)
        self.precision = precision
        self.dropout = lay.dropout[:-1]
        self._drop = np.array(lay.dropout, np.float64)
        self._seed = np.array([lay.dropout_seed], np.uint64)
        gemm16, self._bf16 = 0, None
        if lay.bf16:
            gemm16 = _onednn.load().gemm_bf16   # ImportError naming the extra
            self._bf16 = bf16_buffers(lay)
        layers, n, nl = lay.layers, lay.n_max, len(lay.layers)
        self.dtype, self.n_max = lay.dtype, n
        self._hyper = np.array([momentum, beta1, beta2, lay.label_smoothing, lay.bn_momentum,
                                lay.bn_eps], np.float64)
        self._scratch = np.zeros(_SCRATCH_BYTES, np.uint8)
        self._scratch[_CH_N], self._scratch[_CH_T] = ord("N"), ord("T")
        # float64 column sums: one row's worth, two with batch normalisation (s1 and s2 of the
        # statistics, dβ and dγ); _bns: batch normalisation's per-column coefficients
        widest = max(max(r[_FI], r[_FO]) for r in layers)
        self._acc = np.zeros(2 * widest if lay.batch_norm else widest, np.float64)
        self._bns = np.zeros(3 * widest if lay.batch_norm else 1, lay.dtype)
        plan = np.zeros(_HEAD + nl * _REC, np.int64)
        plan[[_NL, _NMAX, _KIND, _DZ, _FN, _OUT]] = nl, n, lay.kind, lay.dZ, lay.activation, \
            lay.output
        f32, pv = lay.dtype == np.float32, self.provider
        pool, chunks = gemm_pool()
        plan[[_GEMMF, _POOL, _CHUNKS, _WORKERS, _MINFLOPS]] = (
            pv.sgemm if f32 else pv.dgemm, pool, chunks, 0, MIN_GEMM_FLOPS)
        plan[[_ACC, _SCRATCH, _HYPER]] = (self._acc.ctypes.data, self._scratch.ctypes.data,
                                          self._hyper.ctypes.data)
        plan[[_DROP, _SEED]] = self._drop.ctypes.data, self._seed.ctypes.data
        records = np.zeros((nl, _REC), np.int64)
        records[:, :_W16] = np.array(layers, np.int64)
        records[:, _THR] = [dropout_threshold(p) for p in lay.dropout]
        if lay.batch_norm:
            plan[_BNS] = self._bns.ctypes.data
            records[:nl - 1, _G:_RV + 1] = np.array(lay.batch_norm, np.int64)
        if lay.bf16:
            b16 = self._bf16
            plan[[_BF16, _GEMM16, _X16]] = 1, gemm16, b16.X16.ctypes.data
            for i in range(nl):
                records[i, [_W16, _D16]] = b16.W16[i].ctypes.data, b16.D16[i].ctypes.data
                if i < nl - 1:
                    records[i, _A16] = b16.A16[i].ctypes.data
        plan[_HEAD:] = records.reshape(-1)
        self._plan = plan
        self._params = list(weights) + list(biases)
        # what _run is given for the input it does not have: a dense X for a sparse batch,
        # empty CSR arrays for a dense one
        self._no_X = np.zeros((1, 0), lay.dtype)
        self._no_index = np.zeros(0, np.int64)
        # the arrays whose addresses the plan holds stay alive as long as the step
        self._keep = [weights, biases, dweights, dbiases, acts, deltas, dZ, state, batch_norm]
        self.sync()

    def sync(self):
        """Re-read the weights into their bfloat16 copies (a bf16 step keeps them in step as
        it updates W; call this after changing W outside the step).  A no-op otherwise."""
        if self._bf16 is not None:
            for W, W16 in zip(self._params, self._bf16.W16):
                to_bf16(W, W16)

    def set_threads(self, n):
        """From now on GEMMs of at least contract.MIN_GEMM_FLOPS run on up to n of fastmlp's
        threads (the caller and n - 1 workers), smaller ones on the caller alone.  The
        result does not depend on n.  The provider's own pool should run one thread
        (fastmlp.threads.ThreadPolicy sees to it)."""
        self._plan[_WORKERS] = 1 if int(n) >= 2 else 0

    def uses(self, weights, biases):
        """True if `weights + biases` are the very arrays this step was built on."""
        return same_arrays(self._params, weights, biases)

    def run(self, X, y, sample_weight, lr, step, weight_decay=0.0, eps=1e-8):
        """Train on X (m, D_0) (a dense array, or a fastmlp.backends.csr.CSR), targets y (m,)
        int64 labels or (m, C) values, optional sample_weight (m,); returns the batch's loss
        before the update (NaN/inf: nothing was updated).  `step` (>= 1)
        is the optimiser step number (Adam's bias correction); the loss penalised is
        weight_decay·Σ‖W‖², eps is Adam's.  A bf16 step takes X float32 (converted into its
        buffer) or uint16 (bfloat16 bits, used as they are)."""
        m = check_batch(X, y, sample_weight, self._layout)
        if isinstance(X, CSR):
            return _run(self._plan, self._no_X, X.data, X.indices, X.indptr, 0, m, y,
                        sample_weight, lr, step, weight_decay, eps)
        if X.dtype == np.uint16:   # bf16 bits (check_batch took them for a bf16 step only)
            if not X.flags.c_contiguous:
                raise ValueError("TrainStep.run: X must be C-contiguous")
            return _run(self._plan, self._no_X, self._no_X[0], self._no_index,
                        self._no_index, X.ctypes.data, m, y, sample_weight, lr, step,
                        weight_decay, eps)
        return _run(self._plan, X, self._no_X[0], self._no_index, self._no_index, 0, m, y,
                    sample_weight, lr, step, weight_decay, eps)


# the cached step compiles kernels.py's functions into itself: its cache follows their source
config.stamp_caches(globals(), config, _kernels, sys.modules[__name__])
