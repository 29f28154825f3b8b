# Included by kernels.pyx (one extension module, so the helpers there are shared).
# numba/train_step.py is the same step in Numba, with the same helper names.
#
# Design
# ------
# `TrainStep` is the whole training step of a fixed network: forward, the output's loss,
# backward and the optimiser update of every parameter, in one call that holds no GIL and
# allocates nothing.  The constructor takes the arrays once (parameters, gradient buffers, the
# workspace's activations and deltas, the optimiser state) and keeps raw pointers to them plus
# references that keep them alive, so `run` only takes the batch and four scalars.  It is the
# fused form of `fastmlp.backends.reference.TrainStep`, which composes the contract's
# kernels the same way and is what the tests hold it to.
#
# What fusing buys, beyond one Python call per step instead of about ten:
# * Plain SGD's weight-gradient GEMM writes straight into W with BLAS's alpha/beta:
#   W = (1 - 2·wd·lr)·W - lr·Xᵀδ (`dweights` is not written).  The other optimisers GEMM into
#   dW and run the loops of updates.h; a GEMM that goes to fastmlp's threads carries that
#   update with it (pool.h's fm_post), so each thread updates the block of W it has just
#   computed the gradient of, while that block is in its cache: the memory-bound pass over W
#   (and its one or two state arrays) is split over the threads and reads dW from cache.
# * The bias and activation are one pass after a forward GEMM; the activation backward of a
#   delta (ReLU's mask, 1 − H², H(1 − H)) and the column sums that are the previous layer's
#   bias gradient are one pass after a backward one (step_loops.h).
# * Dropout (contract.py, "dropout masks"; dropout.h) rides on those two passes: the bias +
#   activation pass drops and scales each row of a hidden layer's output, the backward pass
#   sends the delta through the same mask -- recomputed from (seed, step, layer, row, column),
#   not stored -- before the activation's derivative.
# * A sparse first layer (a CSR X) runs the loops of sparse_loops.h instead of its two GEMMs;
#   its weight gradient goes to dweights[0] and the update loop follows.
# * Batch normalisation (batch_norm=contract.BatchNorm; step_loops.h, the passes shared with
#   the kernels): a hidden layer's GEMM (or the CSR loop) writes its product a·W, no bias,
#   to the layer's zhat buffer; `_bn_stats` takes the batch's column statistics in one pass
#   (means, vars) and `_bn_act` writes ẑ back into zhat and act = f(γ·ẑ + b) -- b is BN's
#   shift -- with dropout and the bf16 copy, row by row as the bias + activation pass does.
#   Backward, `_bn_backward` is the activation-backward pass (dropout's mask, f') that also
#   sums dY·ẑ (dγ) beside dY (dβ, the bias gradient), then one pass that turns the delta into
#   the gradient w.r.t. the product (and writes its bf16 copy), which both GEMMs of the
#   layer read.  After the weights and biases the gammas get the same update (their own
#   state, no weight decay), then the running estimates move (`_bn_running`).  Per-column
#   accumulators and coefficients live on the stack (step_loops.h): nothing is allocated.
# * A non-finite loss returns before the backward pass: nothing is updated.
#
# * precision="bf16" (float32 only): every GEMM takes bfloat16 operands and accumulates in
#   float32 (oneDNN's gemm_bf16bf16f32 through fastmlp.backends.onednn); a large one is cut
#   into blocks for fastmlp's threads like a float32 GEMM (each block one oneDNN call, which
#   oneDNN may thread further), so its update rides on the blocks too (`_gemm`).
#   The bf16 operands are written by passes the step already makes (contract.BF16Buffers):
#   the update writes W's bf16 copy as it writes W (post.h), the bias + activation pass the
#   activations' and the loss / activation-backward pass the deltas' (step_loops.h); a
#   uint16 X is taken as bf16 as it is (the Trainer converts the training set once per fit),
#   a float32 one is converted into the step's buffer.  Plain SGD then GEMMs into dW too.
#   Weights, optimiser state, biases, the loss and every sum stay float32.
#
# Order inside a layer's backward: dX = δ·Wᵀ first (it needs W before its update), then the
# weight GEMM/update, then the bias update.  Float32 and float64 share `_run` (fused type).

from libc.stdlib cimport calloc, free
from libc.math cimport isfinite

from fastmlp.backends import contract as _contract
from fastmlp.backends import onednn as _onednn
from fastmlp.backends.blas import gemm_pool as _gemm_pool, get_provider as _get_provider
from fastmlp.backends.csr import CSR as _CSR

_check_batch = _contract.check_batch

# the arrays are validated by contract.step_layout and the batch by contract.check_batch,
# which the Numba step shares; these kinds are the values step_layout returns
cdef enum:
    OPT_SGD = 0
    OPT_MOMENTUM = 1
    OPT_NESTEROV = 2
    OPT_ADAM = 3

if (OPT_SGD, OPT_MOMENTUM, OPT_NESTEROV, OPT_ADAM) != (
        _contract.OPT_SGD, _contract.OPT_MOMENTUM, _contract.OPT_NESTEROV, _contract.OPT_ADAM):
    raise ImportError("train_step.pxi and fastmlp.backends.contract disagree on optimizer kinds")
if ((OUT_SOFTMAX, OUT_LOGISTIC, OUT_IDENTITY, OUT_EXP) != tuple(range(len(_contract.OUTPUTS)))
        or [_contract.OUTPUTS[c] for c in (OUT_SOFTMAX, OUT_LOGISTIC, OUT_IDENTITY, OUT_EXP)]
        != ["softmax", "logistic", "identity", "exp"]
        or _ACT != {n: c for c, n in enumerate(_contract.ACTIVATIONS)}):
    raise ImportError("kernels.pyx and fastmlp.backends.contract disagree on activation or "
                      "output codes")

cdef struct _Layer:
    int fan_in, fan_out
    void* W        # (fan_in, fan_out)
    void* b        # (fan_out,)
    void* dW       # (fan_in, fan_out) gradient buffer (Nesterov/Adam only)
    void* db       # (fan_out,)
    void* act      # (n_max, fan_out) this layer's output (activated unless last)
    void* dX       # (n_max, fan_in) gradient w.r.t. this layer's input; NULL for layer 0
    void* sW1      # velocity or Adam m of W; NULL for plain SGD
    void* sW2      # Adam v of W
    void* sb1
    void* sb2
    void* W16      # bf16 step: (fan_in, fan_out) bfloat16 copy of W; NULL otherwise
    void* A16      # (n_max, fan_out) bfloat16 copy of act (hidden layers)
    void* D16      # (n_max, fan_out) bfloat16 delta: the gradient w.r.t. act's pre-activation
    _Drop drop     # dropout of act (hidden layers; drop.p = 0: none); stream set per step
    # batch normalisation of a hidden layer (contract.BatchNorm; all NULL: none)
    void* zhat     # (n_max, fan_out) the product a·W, then ẑ
    void* gamma    # (fan_out,) γ
    void* dgamma   # (fan_out,) its gradient
    void* sg1      # γ's velocity or Adam m; NULL for plain SGD
    void* sg2      # γ's Adam v
    void* mean     # (fan_out,) the batch's column means
    void* var      # (fan_out,) and biased variances
    void* rmean    # (fan_out,) running estimates
    void* rvar

# the GEMM provider's functions (fastmlp.backends.blas: Fortran ABI, addresses at run time)
ctypedef void (*_gemm_f)(char*, char*, int*, int*, int*, void*, const void*, int*, const void*,
                         int*, void*, void*, int*) noexcept nogil

cdef extern from "pool.h" nogil:
    # fastmlp's own threads for the large GEMMs (csrc/pool.c, fastmlp.backends._pool)
    ctypedef struct fm_job:
        _gemm_f gemm
        char ta, tb
        int m, n, k, lda, ldb, ldc, itemsize, chunks, use_workers, opsize
        const void* alpha
        const void* A
        const void* B
        const void* beta
        void* C
        const fm_post* post
    ctypedef struct fm_post:
        int kind
        void* P
        void* s1
        void* s2
        double lr, wd2, mu, b1, b2, c1, c2, eps
        void* P16
    ctypedef void (*fm_gemm_entry)(fm_job*) noexcept nogil
    enum:
        FM_POST_SGD, FM_POST_MOMENTUM, FM_POST_NESTEROV, FM_POST_ADAM

cdef extern from "post.h" nogil:
    # the update a GEMM carries, run after a GEMM the step makes alone (pool.c runs it per block)
    void fm_post_f32(const fm_post* q, Py_ssize_t off, Py_ssize_t n, const float* G)
    void fm_post_f64(const fm_post* q, Py_ssize_t off, Py_ssize_t n, const double* G)

if (FM_POST_SGD, FM_POST_MOMENTUM, FM_POST_NESTEROV, FM_POST_ADAM) != (
        OPT_SGD, OPT_MOMENTUM, OPT_NESTEROV, OPT_ADAM):
    raise ImportError("pool.h's FM_POST_* and the optimizer kinds disagree")

cdef struct _Plan:
    _Layer* L
    double* acc    # (widest layer,) double accumulators for column sums
    void* dZ       # (n_max, C)
    int n_layers, n_max, kind
    int activation, output   # codes: contract.ACTIVATIONS, contract.OUTPUTS
    double mu, b1, b2
    _gemm_f gemm   # the provider's sgemm or dgemm
    fm_gemm_entry pool       # fastmlp's GEMM threads (NULL: none built)
    int chunks     # blocks a GEMM of at least min_flops is cut into (the pool's threads)
    int use_workers          # whether the pool's workers take part (TrainStep.set_threads)
    double min_flops
    bint bf16      # precision="bf16": every GEMM is gemm16 on bfloat16 operands
    _gemm_f gemm16           # oneDNN's gemm_bf16bf16f32 with the Fortran signature
    void* X16      # (n_max, D_0) bfloat16 batch converted from a float32 X
    uint64_t seed  # the dropout masks' key (contract.py, "dropout masks")
    double smooth  # the softmax output's label smoothing
    double bn_momentum, bn_eps   # batch normalisation's (contract.BatchNorm)


cdef void _gemm(_Plan* p, char ta, char tb, int m, int n, int k, floating alpha,
                const void* A, int lda, const void* B, int ldb, floating beta,
                floating* C, int ldc, const fm_post* post) noexcept nogil:
    """Column-major C = alpha·op(A)·op(B) + beta·C (all of m, n, k >= 1) through the step's
    GEMM provider (a bf16 step: gemm16, A and B bfloat16), then the update `post` (NULL:
    none) with C as its gradient (ldc = m): a GEMM of at least min_flops is cut into
    p.chunks blocks for fastmlp's threads (pool.c, each block updated after its GEMM), a
    smaller one is one call and one update.  A bf16 GEMM's blocks are oneDNN calls, which
    oneDNN may thread further (TBB): cutting them measured faster than one oneDNN call on
    its own threads followed by the update on fastmlp's (784-256-10, bf16 step ÷ float32
    step in one run: 0.77 -> 0.64 at N=128, 0.70 -> 0.64 at N=256, 0.64 either way at
    N=512 H=1024), since each thread then updates the block of W it has just computed."""
    cdef fm_job job
    cdef _gemm_f f = p.gemm16 if p.bf16 else p.gemm
    if p.pool == NULL or 2.0 * m * n * k < p.min_flops:
        f(&ta, &tb, &m, &n, &k, &alpha, A, &lda, B, &ldb, &beta, C, &ldc)
        if post != NULL:
            if floating is float:
                fm_post_f32(post, 0, <Py_ssize_t>m * n, C)
            else:
                fm_post_f64(post, 0, <Py_ssize_t>m * n, C)
        return
    job.gemm, job.ta, job.tb = f, ta, tb
    job.m, job.n, job.k, job.lda, job.ldb, job.ldc = m, n, k, lda, ldb, ldc
    job.itemsize, job.chunks, job.use_workers = sizeof(floating), p.chunks, p.use_workers
    job.opsize = 2 if p.bf16 else sizeof(floating)
    job.alpha, job.A, job.B, job.beta, job.C, job.post = &alpha, A, B, &beta, C, post
    p.pool(&job)


cdef void _update(int kind, floating* P, const floating* G, floating* s1, floating* s2,
                         Py_ssize_t n, floating lr, floating wd2, floating mu, floating b1,
                         floating b2, floating c1, floating c2, floating eps) noexcept nogil:
    """The loops of updates.h on one parameter (P, gradient G, state s1/s2) of n elements."""
    if floating is float:
        if kind == OPT_SGD:
            sgd_plain_f32(P, G, n, lr, wd2)
        elif kind == OPT_ADAM:
            adam_f32(P, G, s1, s2, n, lr, b1, b2, 1 - b1, 1 - b2, c1, c2, eps, wd2)
        else:
            sgd_momentum_f32(P, G, s1, n, lr, wd2, mu, kind == OPT_NESTEROV)
    else:
        if kind == OPT_SGD:
            sgd_plain_f64(P, G, n, lr, wd2)
        elif kind == OPT_ADAM:
            adam_f64(P, G, s1, s2, n, lr, b1, b2, 1 - b1, 1 - b2, c1, c2, eps, wd2)
        else:
            sgd_momentum_f64(P, G, s1, n, lr, wd2, mu, kind == OPT_NESTEROV)


cdef double _loss(int out, const floating* Z, const int64_t* labels, const floating* Y,
                  floating* dZ, const floating* sw, Py_ssize_t m, Py_ssize_t C,
                  double smooth) noexcept nogil:
    """_output_loss on the batch (serially: C is small at MLP sizes), after checking that
    every label is in [0, C) for a softmax output (the rows would be read and written out of
    bounds otherwise): -1 if one is not, and dZ is left as it was."""
    # Z (m, C) IN, labels (m,) IN or Y (m, C) IN, dZ (m, C) OUT, sw (m,) IN or NULL
    cdef Py_ssize_t r
    if out == OUT_SOFTMAX:
        for r in range(m):
            if labels[r] < 0 or labels[r] >= C:
                return -1
    return _output_loss(out, Z, labels, Y, dZ, sw, m, C, False, smooth)


cdef inline const _Drop* _dropout(_Layer* L) noexcept nogil:
    """Layer L's dropout for this step (its stream set by _run), or NULL if it has none."""
    return &L.drop if L.drop.p > 0 else NULL


cdef inline const void* _op(_Plan* p, const void* full, const void* half) noexcept nogil:
    """A GEMM operand: its bfloat16 copy `half` in a bf16 step, else `full`."""
    return half if p.bf16 else full


cdef double _run(_Plan* p, const floating* X, const floating* Xdata, const int64_t* Xind,
                 const int64_t* Xptr, const uint16_t* X16, const int64_t* y, const floating* Y,
                 const floating* sw, int m, double lr_d, double step, double wd,
                 double eps_d) noexcept nogil:
    """One training step on the batch X (m, D) -- dense, or when Xptr is not NULL the CSR
    Xdata, Xind, Xptr (sparse_loops.h); X16 its bfloat16 copy in a bf16 step (X is then not
    read) -- with labels y (m,) (softmax output) or target values
    Y (m, C) (the others), optional weights sw (m,); returns the batch's loss (before the
    update); a non-finite loss returns before anything changes; -1 (a loss is never
    negative) when a label is outside [0, C), -2 when a column index of a sparse X is outside
    [0, D) or its offsets decrease: nothing changed either."""
    cdef int i, last = p.n_layers - 1, fi, fo
    cdef _Layer* L
    cdef const floating* a = X
    cdef const uint16_t* a16 = X16
    cdef floating* delta
    cdef floating* W
    cdef floating* prod
    cdef _Layer* Lp
    cdef floating lr = <floating>lr_d, wd2 = <floating>(2 * wd), mu = <floating>p.mu
    cdef floating b1 = <floating>p.b1, b2 = <floating>p.b2, eps = <floating>eps_d
    cdef floating c1 = <floating>(1.0 - pow(p.b1, step)), c2 = <floating>(1.0 - pow(p.b2, step))
    cdef floating one = 1, zero = 0
    cdef double loss
    cdef Py_ssize_t C = p.L[last].fan_out
    cdef floating* Z = <floating*>p.L[last].act
    cdef floating* dZ = <floating*>p.dZ
    cdef fm_post post
    cdef fm_drop_f32 d32
    post.kind, post.lr, post.wd2, post.mu, post.eps = p.kind, lr_d, 2 * wd, p.mu, eps_d
    post.b1, post.b2, post.c1, post.c2 = p.b1, p.b2, 1.0 - pow(p.b1, step), 1.0 - pow(p.b2, step)
    post.P16 = NULL

    # forward: act_i = f(a · W_i + b_i) (the last layer stays linear); with batch
    # normalisation act_i = f(γ_i·ẑ + b_i), ẑ the normalised a · W_i (in zhat)
    for i in range(p.n_layers):
        L = &p.L[i]
        prod = <floating*>(L.zhat if L.zhat != NULL else L.act)   # (m, fo) the product
        if i == 0 and Xptr != NULL:   # X·W_0, one row of W_0 per stored entry
            if _csr_forward(Xdata, Xind, Xptr, m, <floating*>L.W, L.fan_in, L.fan_out, prod):
                return -2
        else:
            # prodᵀ (fo, m) = W_iᵀ (fo, fi) · aᵀ (fi, m), column-major views of row-major
            _gemm(p, c'N', c'N', L.fan_out, m, L.fan_in, one, _op(p, L.W, L.W16), L.fan_out,
                  _op(p, a, a16), L.fan_in, zero, prod, L.fan_out, NULL)
        if L.drop.p > 0:   # this step's mask of the layer's output (dropout.h)
            L.drop.stream = fm_dropout_stream(p.seed, <uint64_t>step, i)
        if L.zhat != NULL:   # statistics, then ẑ, γ·ẑ + b, f, dropout (bf16: A16) by rows
            _bn_stats(prod, m, L.fan_out, <floating*>L.mean, <floating*>L.var)
            _bn_act(prod, <floating*>L.act, m, L.fan_out, <floating*>L.mean,
                    <floating*>L.var, p.bn_eps, <floating*>L.gamma, <floating*>L.b,
                    p.activation, _dropout(L), <uint16_t*>L.A16)
        elif p.bf16 and i < last:   # (dropout and) the activations' bf16 copy, row by row
            if L.drop.p > 0:
                d32 = _drop_f32(&L.drop)
            bias_act_bf16(<float*>L.act, <float*>L.b, m, L.fan_out, p.activation,
                          <uint16_t*>L.A16, &d32 if L.drop.p > 0 else NULL)
        else:
            _bias_act_drop(<floating*>L.act, <floating*>L.b, m, L.fan_out,
                           p.activation if i < last else ACT_IDENTITY, _dropout(L))
        a, a16 = <floating*>L.act, <uint16_t*>L.A16

    # loss and dZ
    loss = _loss(p.output, Z, y, Y, dZ, sw, m, C, p.smooth)
    if not isfinite(loss) or loss < 0:
        return loss

    # backward, last layer first
    delta = dZ
    if p.bf16:   # and dZ's bf16 copy
        mask_colsum_bf16(<float*>dZ, NULL, m, C, ACT_IDENTITY, p.acc, <float*>p.L[last].db,
                         <uint16_t*>p.L[last].D16, NULL)
    else:
        _mask_colsum(delta, <floating*>NULL, m, C, ACT_IDENTITY, p.acc,
                     <floating*>p.L[last].db, NULL)
    for i in range(last, -1, -1):
        L = &p.L[i]
        fi, fo, W = L.fan_in, L.fan_out, <floating*>L.W
        a = <const floating*>p.L[i - 1].act if i > 0 else X
        a16 = <const uint16_t*>p.L[i - 1].A16 if i > 0 else X16
        if i > 0:
            # dXᵀ (fi, m) = W (fi, fo) · δᵀ (fo, m); then the activation backward and the bias
            # gradient of layer i-1 in one pass (and, bf16, the delta's bf16 copy)
            _gemm(p, c'T', c'N', fi, m, fo, one, _op(p, W, L.W16), fo, _op(p, delta, L.D16),
                  fo, zero, <floating*>L.dX, fi, NULL)
            # (through layer i-1's dropout mask first, when it has one)
            Lp = &p.L[i - 1]
            if Lp.zhat != NULL:   # and dγ; then dX becomes the gradient w.r.t. its product
                _bn_backward(<floating*>L.dX, a, <floating*>Lp.zhat, m, fi, p.activation,
                             _dropout(Lp), <floating*>Lp.gamma, <floating*>Lp.var, p.bn_eps,
                             <floating*>Lp.db, <floating*>Lp.dgamma, <uint16_t*>Lp.D16)
            elif p.bf16:
                if p.L[i - 1].drop.p > 0:
                    d32 = _drop_f32(&p.L[i - 1].drop)
                mask_colsum_bf16(<float*>L.dX, <float*>a, m, fi, p.activation, p.acc,
                                 <float*>p.L[i - 1].db, <uint16_t*>p.L[i - 1].D16,
                                 &d32 if p.L[i - 1].drop.p > 0 else NULL)
            else:
                _mask_colsum(<floating*>L.dX, a, m, fi, p.activation, p.acc,
                             <floating*>p.L[i - 1].db, _dropout(&p.L[i - 1]))
        # weight gradient Xᵀδ as dWᵀ (fo, fi) = δᵀ (fo, m) · a (m, fi), fused with the update
        if i == 0 and Xptr != NULL:   # a sparse input: dW = Xᵀδ scattered by rows, the loops
            _csr_weight_grad(delta, Xdata, Xind, Xptr, m, fi, fo, <floating*>L.dW)
            _update(p.kind, W, <floating*>L.dW, <floating*>L.sW1, <floating*>L.sW2,
                    <Py_ssize_t>fi * fo, lr, wd2, mu, b1, b2, c1, c2, eps)
        elif p.kind == OPT_SGD and not p.bf16:
            _gemm(p, c'N', c'T', fo, fi, m, -lr, delta, fo, a, fi, 1 - wd2 * lr, W, fo, NULL)
        else:   # dW, and the update of W (block by block on fastmlp's threads; bf16: and W16)
            post.P, post.s1, post.s2, post.P16 = W, L.sW1, L.sW2, L.W16
            _gemm(p, c'N', c'T', fo, fi, m, one, _op(p, delta, L.D16), fo, _op(p, a, a16), fi,
                  zero, <floating*>L.dW, fo, &post)
        _update(p.kind, <floating*>L.b, <floating*>L.db, <floating*>L.sb1, <floating*>L.sb2,
                fo, lr, zero, mu, b1, b2, c1, c2, eps)
        delta = <floating*>L.dX
    # batch normalisation: the gammas (not decayed), then the running estimates
    for i in range(last):
        L = &p.L[i]
        if L.zhat != NULL:
            _update(p.kind, <floating*>L.gamma, <floating*>L.dgamma, <floating*>L.sg1,
                    <floating*>L.sg2, L.fan_out, lr, zero, mu, b1, b2, c1, c2, eps)
            _bn_running(<floating*>L.rmean, <floating*>L.rvar, <floating*>L.mean,
                        <floating*>L.var, L.fan_out, m, p.bn_momentum)
    return loss


cdef inline void* _ptr(size_t address):
    """An address from contract.step_layout (0 = unused) as a pointer."""
    return <void*>address


cdef class TrainStep:
    """A whole training step of one network in one call: see docs/kernels.md.

    TrainStep(weights, biases, dweights, dbiases, acts, deltas, dZ, state, optimizer,
              momentum=0.0, nesterov=False, beta1=0.9, beta2=0.999, activation='relu',
              output='softmax', gemm='auto', precision=None, dropout=0.0, dropout_seed=0,
              label_smoothing=0.0, batch_norm=None)

    weights[i] (D_i, D_i+1), biases[i] (D_i+1,), dweights/dbiases the same shapes; acts[i]
    (n_max, D_i+1); deltas[i] (n_max, D_i) for i >= 1 (deltas[0] is ignored); dZ (n_max, C);
    state: per parameter (weights then biases) None (plain SGD), the velocity (momentum), or
    an (m, v) pair (Adam).  All C-contiguous, one dtype.  dropout: one probability or one
    per hidden layer; the masks are keyed by (dropout_seed, run's step, layer, row, column)
    (contract.py, "dropout masks").  `run(X, y, sample_weight, lr, step,
    weight_decay=0.0, eps=1e-8)` trains on X (m, D_0) (dense, or a
    fastmlp.backends.csr.CSR), y (m,) int64 labels (softmax) or (m, C) values, with
    m <= n_max, and returns the loss.  precision="bf16" (float32 arrays, oneDNN installed):
    bfloat16 GEMM operands, X float32 or uint16 bfloat16 bits; `sync()` re-reads W into
    its bf16 copy after the weights were changed outside the step.  batch_norm: None, or a
    contract.BatchNorm of the hidden layers (zhats (n_max, H_i)): every hidden layer is then
    batch-normalised (its bias is the shift), the gammas trained with their own state and
    the running estimates moved after each step with a finite loss.
    """
    cdef _Plan p
    cdef bint f64
    cdef object _layout
    cdef list _params
    cdef list _keep
    cdef object _bf16
    cdef readonly object dtype
    cdef readonly object provider
    cdef readonly object precision
    cdef readonly tuple dropout

    def __cinit__(self):
        self.p.L = NULL
        self.p.acc = NULL

    def __dealloc__(self):
        free(self.p.L)
        free(self.p.acc)

    def __init__(self, weights, biases, dweights, dbiases, acts, deltas, dZ, state, optimizer,
                 momentum=0.0, nesterov=False, beta1=0.9, beta2=0.999, activation="relu",
                 output="softmax", gemm="auto", precision=None, dropout=0.0, dropout_seed=0,
                 label_smoothing=0.0, batch_norm=None):
        cdef int i, nl
        cdef _Layer* L
        cdef size_t gemm_f, pool_f
        self.provider = pv = _get_provider(gemm)
        lay = self._layout = _contract.step_layout(
            weights, biases, dweights, dbiases, acts, deltas, dZ, state, optimizer, momentum,
            nesterov, activation, output, precision, dropout, dropout_seed, label_smoothing,
            batch_norm)
        self.precision = precision
        self.dropout = lay.dropout[:-1]
        self.p.seed, self.p.smooth = lay.dropout_seed, lay.label_smoothing
        self.p.bn_momentum, self.p.bn_eps = lay.bn_momentum, lay.bn_eps
        if lay.bf16:
            self.p.gemm16 = <_gemm_f><size_t>_onednn.load().gemm_bf16   # ImportError: extra
            self._bf16 = _contract.bf16_buffers(lay)
        layers, nl = lay.layers, len(lay.layers)
        self.dtype, self.f64 = lay.dtype, lay.dtype == _F64
        self.p.kind, self.p.n_layers, self.p.n_max = lay.kind, nl, lay.n_max
        self.p.activation, self.p.output = lay.activation, lay.output
        gemm_f = pv.dgemm if self.f64 else pv.sgemm
        pool_f, chunks = _gemm_pool()
        self.p.gemm = <_gemm_f>gemm_f
        self.p.pool, self.p.chunks = <fm_gemm_entry>pool_f, chunks
        self.p.use_workers, self.p.min_flops = 0, _contract.MIN_GEMM_FLOPS
        self.p.mu, self.p.b1, self.p.b2 = momentum, beta1, beta2
        self.p.L = <_Layer*>calloc(nl, sizeof(_Layer))
        self.p.acc = <double*>calloc(max(max(r[0], r[1]) for r in layers), sizeof(double))
        if self.p.L == NULL or self.p.acc == NULL:
            raise MemoryError()
        self._params = list(weights) + list(biases)
        self._keep = [weights, biases, dweights, dbiases, acts, deltas, dZ, state, batch_norm]
        for i in range(nl):
            L = &self.p.L[i]
            rec = layers[i]
            L.fan_in, L.fan_out = rec[0], rec[1]
            L.W, L.b, L.dW, L.db = _ptr(rec[2]), _ptr(rec[3]), _ptr(rec[4]), _ptr(rec[5])
            L.act, L.dX = _ptr(rec[6]), _ptr(rec[7])
            L.sW1, L.sW2, L.sb1, L.sb2 = _ptr(rec[8]), _ptr(rec[9]), _ptr(rec[10]), _ptr(rec[11])
            L.drop.p, L.drop.thr = lay.dropout[i], _contract.dropout_threshold(lay.dropout[i])
            if lay.bf16:
                b16 = self._bf16
                L.W16, L.D16 = _ptr(b16.W16[i].ctypes.data), _ptr(b16.D16[i].ctypes.data)
                L.A16 = _ptr(b16.A16[i].ctypes.data) if i < nl - 1 else NULL
            if i < len(lay.batch_norm):   # (gamma, dgamma, sg1, sg2, zhat, mean, var, rm, rv)
                bn = lay.batch_norm[i]
                L.gamma, L.dgamma = _ptr(bn[0]), _ptr(bn[1])
                L.sg1, L.sg2 = _ptr(bn[2]), _ptr(bn[3])
                L.zhat, L.mean, L.var = _ptr(bn[4]), _ptr(bn[5]), _ptr(bn[6])
                L.rmean, L.rvar = _ptr(bn[7]), _ptr(bn[8])
        self.p.dZ = _ptr(lay.dZ)
        if lay.bf16:
            self.p.bf16, self.p.X16 = True, _ptr(self._bf16.X16.ctypes.data)
            self.sync()

    def sync(self):
        """Re-read the weights into their bfloat16 copies (a bf16 step keeps them in step as
        it updates W; call this after changing W outside the step).  A no-op otherwise."""
        if self.p.bf16:
            for W, W16 in zip(self._params, self._bf16.W16):
                to_bf16(W, W16)

    def set_threads(self, n):
        """From now on GEMMs of at least contract.MIN_GEMM_FLOPS run on up to n of fastmlp's
        threads (the caller and n - 1 workers), smaller ones on the caller alone.  The
        result does not depend on n.  The provider's own pool should run one thread
        (fastmlp.threads.ThreadPolicy sees to it)."""
        self.p.use_workers = 1 if int(n) >= 2 else 0

    def uses(self, weights, biases):
        """True if `weights + biases` are the very arrays this step was built on."""
        return _contract.same_arrays(self._params, weights, biases)

    def run(self, X, y, sample_weight, double lr, double step, double weight_decay=0.0,
            double eps=1e-8):
        """Train on X (m, D_0), y (m,) int64, optional sample_weight (m,); returns the mean NLL
        of the batch before the update (NaN/inf: nothing was updated).  `step` (>= 1) is the
        optimiser step number (Adam's bias correction); the loss penalised is
        weight_decay·Σ‖W‖², eps is Adam's."""
        cdef int m = _check_batch(X, y, sample_weight, self._layout)
        cdef bint labels = self.p.output == OUT_SOFTMAX, sparse = isinstance(X, _CSR)
        cdef const int64_t[::1] yv = y if labels else None
        cdef const int64_t[::1] ind = X.indices if sparse else None
        cdef const int64_t[::1] ptr = X.indptr if sparse else None
        cdef const float[:, ::1] Xf, Yf
        cdef const double[:, ::1] Xd, Yd
        cdef const float[::1] swf, dataf
        cdef const double[::1] swd, datad
        cdef const int64_t* y_p = &yv[0] if labels else NULL
        cdef const int64_t* ind_p = &ind[0] if sparse and ind.shape[0] else NULL
        cdef const int64_t* ptr_p = &ptr[0] if sparse else NULL
        cdef const float* Xf_p = NULL
        cdef const double* Xd_p = NULL
        cdef const float* swf_p = NULL
        cdef const double* swd_p = NULL
        cdef const float* Yf_p = NULL
        cdef const double* Yd_p = NULL
        cdef const uint16_t[:, ::1] X16
        cdef const uint16_t* X16_p = NULL
        cdef double loss
        if self.f64:
            if sparse:
                datad = X.data
                Xd_p = &datad[0] if datad.shape[0] else NULL
            else:
                Xd = X
                Xd_p = &Xd[0, 0]
            if not labels:
                Yd = y
                Yd_p = &Yd[0, 0]
            if sample_weight is not None:
                swd = sample_weight
                swd_p = &swd[0]
            with nogil:
                loss = _run[double](&self.p, Xd_p, Xd_p, ind_p, ptr_p, NULL, y_p, Yd_p, swd_p,
                                    m, lr, step, weight_decay, eps)
        else:
            if sparse:
                dataf = X.data
                Xf_p = &dataf[0] if dataf.shape[0] else NULL
            elif self.p.bf16:   # bf16 bits as they are, or a float32 X converted
                if X.dtype != _U16:
                    X = to_bf16(X, self._bf16.X16[:m])
                X16 = X
                X16_p = &X16[0, 0]
            else:
                Xf = X
                Xf_p = &Xf[0, 0]
            if not labels:
                Yf = y
                Yf_p = &Yf[0, 0]
            if sample_weight is not None:
                swf = sample_weight
                swf_p = &swf[0]
            with nogil:
                loss = _run[float](&self.p, Xf_p, Xf_p, ind_p, ptr_p, X16_p, y_p, Yf_p, swf_p,
                                   m, lr, step, weight_decay, eps)
        if loss == -1:
            raise ValueError("TrainStep.run: labels must be in [0, n_classes)")
        if loss == -2:
            raise ValueError("TrainStep.run: a column index of X is outside [0, D) or its "
                             "indptr decreases")
        return loss
