# Included by _ckernels.pyx (one extension module, so the helpers there are shared).
#
# Design
# ------
# `TrainStep` is the whole training step of a fixed network: forward, softmax cross-entropy,
# backward and the optimiser update of every parameter, in one call that holds no GIL and
# allocates nothing.  The constructor takes the arrays once (parameters, gradient buffers, the
# workspace's activations and deltas, the optimiser state) and keeps raw pointers to them plus
# references that keep them alive, so `run` only takes the batch and two scalars.  It is the
# fused form of `fastmlp.backends._step.ComposedTrainStep`, which composes the contract's
# kernels the same way and is what the tests hold it to.
#
# What fusing buys, beyond one Python call per step instead of about ten:
# * The weight-gradient GEMM writes straight into the optimiser's target with BLAS's
#   alpha/beta: plain SGD as W = (1 - 2·wd·lr)·W - lr·Xᵀδ; momentum as v = μ·v + Xᵀδ followed by
#   BLAS axpys (v += 2·wd·W, W -= lr·v).  That removes a write and a read of dW, and the axpys
#   run on OpenBLAS's own thread pool (its threads are awake right after the GEMM; an OpenMP
#   pool would fight them for the cores).  Nesterov and Adam need g itself: GEMM into dW, then
#   the loops of _updates.h.  In these fused cases `dweights` is not written.
# * The ReLU mask of a delta and the column sums that are the previous layer's bias gradient
#   are one pass.
# * A non-finite loss returns before the backward pass: nothing is updated.
#
# Order inside a layer's backward: dX = δ·Wᵀ first (it needs W before its update), then the
# weight GEMM/update, then the bias update.  Float32 and float64 share `_run` (fused type).

from libc.stdlib cimport calloc, free
from libc.math cimport isfinite
from scipy.linalg.cython_blas cimport daxpy, saxpy

cdef enum:
    OPT_SGD = 0
    OPT_MOMENTUM = 1
    OPT_NESTEROV = 2
    OPT_ADAM = 3

cdef struct _Layer:
    int fan_in, fan_out
    void* W        # (fan_in, fan_out)
    void* b        # (fan_out,)
    void* dW       # (fan_in, fan_out) gradient buffer (Nesterov/Adam only)
    void* db       # (fan_out,)
    void* act      # (n_max, fan_out) this layer's output (ReLU'd unless last)
    void* dX       # (n_max, fan_in) gradient w.r.t. this layer's input; NULL for layer 0
    void* sW1      # velocity or Adam m of W; NULL for plain SGD
    void* sW2      # Adam v of W
    void* sb1
    void* sb2

cdef struct _Plan:
    _Layer* L
    double* acc    # (widest layer,) double accumulators for column sums
    void* dZ       # (n_max, C)
    int n_layers, n_max, kind
    double mu, b1, b2, eps, wd


cdef void _gemm_ab(char ta, char tb, int m, int n, int k, floating alpha,
                   const floating* A, int lda, const floating* B, int ldb, floating beta,
                   floating* C, int ldc) noexcept nogil:
    """Column-major C = alpha·op(A)·op(B) + beta·C (all of m, n, k >= 1)."""
    if floating is float:
        sgemm(&ta, &tb, &m, &n, &k, &alpha, <float*>A, &lda, <float*>B, &ldb, &beta, C, &ldc)
    else:
        dgemm(&ta, &tb, &m, &n, &k, &alpha, <double*>A, &lda, <double*>B, &ldb, &beta, C, &ldc)


cdef void _axpy(Py_ssize_t n, floating a, const floating* x, floating* y) noexcept nogil:
    """y += a·x over n elements (BLAS; chunks so every call's count fits an int)."""
    cdef int one = 1, chunk
    cdef Py_ssize_t done = 0
    while done < n:
        chunk = <int>min(n - done, <Py_ssize_t>(1 << 30))
        if floating is float:
            saxpy(&chunk, &a, <float*>(x + done), &one, y + done, &one)
        else:
            daxpy(&chunk, &a, <double*>(x + done), &one, y + done, &one)
        done += chunk


cdef extern from "_step_loops.h" nogil:
    void bias_act_f32(float* out, const float* b, Py_ssize_t N, Py_ssize_t H, int relu)
    void bias_act_f64(double* out, const double* b, Py_ssize_t N, Py_ssize_t H, int relu)
    void mask_colsum_f32(float* D, const float* A, Py_ssize_t N, Py_ssize_t H, double* acc,
                         float* out)
    void mask_colsum_f64(double* D, const double* A, Py_ssize_t N, Py_ssize_t H, double* acc,
                         double* out)


cdef inline void _bias_act(floating* out, const floating* b, Py_ssize_t N, Py_ssize_t H,
                           bint relu) noexcept nogil:
    """out (N, H) += b (H,) per row, then max(., 0) if relu."""
    if floating is float:
        bias_act_f32(out, b, N, H, relu)
    else:
        bias_act_f64(out, b, N, H, relu)


cdef inline void _colsum_masked(floating* D, const floating* A, Py_ssize_t N, Py_ssize_t H,
                                double* acc, floating* out) noexcept nogil:
    """out (H,) = column sums of D (N, H) (in double); first D[A <= 0] = 0 unless A is NULL."""
    if floating is float:
        mask_colsum_f32(D, A, N, H, acc, out)
    else:
        mask_colsum_f64(D, A, N, H, acc, out)


cdef void _update_vector(int kind, floating* P, const floating* G, floating* s1, floating* s2,
                         Py_ssize_t n, floating lr, floating wd2, floating mu, floating b1,
                         floating b2, floating c1, floating c2, floating eps) noexcept nogil:
    """The loops of _updates.h on one parameter (P, gradient G, state s1/s2) of n elements."""
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


cdef double _run(_Plan* p, const floating* X, const int64_t* y, const floating* sw,
                 int m, double lr_d, double step) noexcept nogil:
    """One training step on the batch X (m, D), y (m,), optional weights sw (m,); returns the
    batch's mean NLL (before the update); a non-finite loss returns before anything changes."""
    cdef int i, last = p.n_layers - 1, fi, fo
    cdef _Layer* L
    cdef const floating* a = X
    cdef floating* delta
    cdef floating* W
    cdef floating lr = <floating>lr_d, wd2 = <floating>(2 * p.wd), mu = <floating>p.mu
    cdef floating b1 = <floating>p.b1, b2 = <floating>p.b2, eps = <floating>p.eps
    cdef floating c1 = <floating>(1.0 - pow(p.b1, step)), c2 = <floating>(1.0 - pow(p.b2, step))
    cdef floating one = 1, zero = 0
    cdef double loss = 0, total = m, w
    cdef Py_ssize_t r, C = p.L[last].fan_out
    cdef floating* Z = <floating*>p.L[last].act
    cdef floating* dZ = <floating*>p.dZ

    # forward: act_i = relu(a · W_i + b_i) (the last layer stays linear)
    for i in range(p.n_layers):
        L = &p.L[i]
        # act_iᵀ (fo, m) = W_iᵀ (fo, fi) · aᵀ (fi, m), column-major views of row-major arrays
        _gemm_ab(c'N', c'N', L.fan_out, m, L.fan_in, one, <floating*>L.W, L.fan_out,
                 a, L.fan_in, zero, <floating*>L.act, L.fan_out)
        _bias_act(<floating*>L.act, <floating*>L.b, m, L.fan_out, i < last)
        a = <floating*>L.act

    # loss and dZ, as _softmax_xent_grad (serially: C is small at MLP sizes)
    if sw != NULL:
        total = 0
        for r in range(m):
            total += sw[r]
    for r in range(m):
        w = sw[r] if sw != NULL else 1.0
        loss += w * _xent_row(Z + r * C, dZ + r * C, C, y[r], <floating>(w / total))
    loss /= total
    if not isfinite(loss):
        return loss

    # backward, last layer first
    delta = dZ
    _colsum_masked(delta, <floating*>NULL, m, C, p.acc, <floating*>p.L[last].db)
    for i in range(last, -1, -1):
        L = &p.L[i]
        fi, fo, W = L.fan_in, L.fan_out, <floating*>L.W
        a = <const floating*>p.L[i - 1].act if i > 0 else X
        if i > 0:
            # dXᵀ (fi, m) = W (fi, fo) · δᵀ (fo, m); then the ReLU mask and the bias gradient
            # of layer i-1 in one pass
            _gemm_ab(c'T', c'N', fi, m, fo, one, W, fo, delta, fo, zero,
                     <floating*>L.dX, fi)
            _colsum_masked(<floating*>L.dX, a, m, fi, p.acc, <floating*>p.L[i - 1].db)
        # weight gradient Xᵀδ as dWᵀ (fo, fi) = δᵀ (fo, m) · a (m, fi), fused with the update
        if p.kind == OPT_SGD:
            _gemm_ab(c'N', c'T', fo, fi, m, -lr, delta, fo, a, fi, 1 - wd2 * lr, W, fo)
        elif p.kind == OPT_MOMENTUM:
            _gemm_ab(c'N', c'T', fo, fi, m, one, delta, fo, a, fi, mu, <floating*>L.sW1, fo)
            if wd2 != 0:
                _axpy(<Py_ssize_t>fi * fo, wd2, W, <floating*>L.sW1)
            _axpy(<Py_ssize_t>fi * fo, -lr, <floating*>L.sW1, W)
        else:
            _gemm_ab(c'N', c'T', fo, fi, m, one, delta, fo, a, fi, zero, <floating*>L.dW, fo)
            _update_vector(p.kind, W, <floating*>L.dW, <floating*>L.sW1, <floating*>L.sW2,
                           <Py_ssize_t>fi * fo, lr, wd2, mu, b1, b2, c1, c2, eps)
        _update_vector(p.kind, <floating*>L.b, <floating*>L.db, <floating*>L.sb1,
                       <floating*>L.sb2, fo, lr, zero, mu, b1, b2, c1, c2, eps)
        delta = <floating*>L.dX
    return loss


cdef size_t _address(a, name, shape, dtype, bint writeable=True) except 0:
    """The data pointer of a C-contiguous array of exactly this shape and dtype."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"TrainStep: {name} must be a NumPy array, got {type(a).__name__}")
    if a.dtype != dtype:
        raise TypeError(f"TrainStep: {name} has dtype {a.dtype}, expected {dtype}")
    if a.shape != shape:
        raise ValueError(f"TrainStep: {name} has shape {a.shape}, expected {shape}")
    if not a.flags.c_contiguous or (writeable and not a.flags.writeable):
        raise ValueError(f"TrainStep: {name} must be C-contiguous and writeable")
    return <size_t>a.__array_interface__["data"][0] or 1   # 0-size arrays are never read


cdef class TrainStep:
    """A whole training step of one network in one call: see docs/kernels.md.

    TrainStep(weights, biases, dweights, dbiases, acts, deltas, dZ, state, optimizer,
              momentum=0.0, nesterov=False, beta1=0.9, beta2=0.999, eps=1e-8,
              weight_decay=0.0)

    weights[i] (D_i, D_i+1), biases[i] (D_i+1,), dweights/dbiases the same shapes; acts[i]
    (n_max, D_i+1); deltas[i] (n_max, D_i) for i >= 1 (deltas[0] is ignored); dZ (n_max, C);
    state: per parameter (weights then biases) None (plain SGD), the velocity (momentum), or
    an (m, v) pair (Adam).  All C-contiguous, one dtype.  `run(X, y, sample_weight, lr, step)`
    trains on X (m, D_0), y (m,) int64 with m <= n_max and returns the loss.
    """
    cdef _Plan p
    cdef bint f64
    cdef list _params
    cdef list _keep
    cdef readonly object dtype

    def __cinit__(self):
        self.p.L = NULL
        self.p.acc = NULL

    def __dealloc__(self):
        free(self.p.L)
        free(self.p.acc)

    def __init__(self, weights, biases, dweights, dbiases, acts, deltas, dZ, state, optimizer,
                 momentum=0.0, nesterov=False, beta1=0.9, beta2=0.999, eps=1e-8,
                 weight_decay=0.0):
        cdef int i, nl = len(weights)
        cdef _Layer* L
        if nl < 1 or not all(len(s) == nl for s in (biases, dweights, dbiases, acts, deltas)):
            raise ValueError("TrainStep: weights, biases, dweights, dbiases, acts and deltas "
                             "need one entry per layer")
        if len(state) != 2 * nl:
            raise ValueError("TrainStep: state needs one entry per parameter")
        if optimizer == "adam":
            self.p.kind = OPT_ADAM
        elif optimizer == "sgd":
            self.p.kind = OPT_SGD if momentum == 0 else (OPT_NESTEROV if nesterov else OPT_MOMENTUM)
        else:
            raise ValueError(f"TrainStep: unknown optimizer {optimizer!r}")
        dt = weights[0].dtype if isinstance(weights[0], np.ndarray) else None
        if dt != np.float32 and dt != np.float64:
            raise TypeError(f"TrainStep: weights must be float32 or float64, got {dt}")
        self.dtype, self.f64 = dt, dt == _F64
        self.p.mu, self.p.b1, self.p.b2 = momentum, beta1, beta2
        self.p.eps, self.p.wd = eps, weight_decay
        self.p.n_layers = nl
        self.p.n_max = acts[0].shape[0] if isinstance(acts[0], np.ndarray) else -1
        if self.p.n_max < 1:
            raise ValueError("TrainStep: acts[0] must be an array with at least one row")
        self.p.L = <_Layer*>calloc(nl, sizeof(_Layer))
        widest = max(max(W.shape) for W in weights)
        self.p.acc = <double*>calloc(widest, sizeof(double))
        if self.p.L == NULL or self.p.acc == NULL:
            raise MemoryError()
        self._params = list(weights) + list(biases)
        self._keep = [weights, biases, dweights, dbiases, acts, deltas, dZ, state]
        n = self.p.n_max
        for i in range(nl):
            fi, fo = weights[i].shape if weights[i].ndim == 2 else (0, 0)
            if fi < 1 or fo < 1:
                raise ValueError(f"TrainStep: weights[{i}] must be 2-D and non-empty")
            if i and fi != weights[i - 1].shape[1]:
                raise ValueError(f"TrainStep: weights[{i}] does not follow weights[{i - 1}]")
            L = &self.p.L[i]
            L.fan_in, L.fan_out = fi, fo
            L.W = <void*>_address(weights[i], f"weights[{i}]", (fi, fo), dt)
            L.b = <void*>_address(biases[i], f"biases[{i}]", (fo,), dt)
            L.dW = <void*>_address(dweights[i], f"dweights[{i}]", (fi, fo), dt)
            L.db = <void*>_address(dbiases[i], f"dbiases[{i}]", (fo,), dt)
            L.act = <void*>_address(acts[i], f"acts[{i}]", (n, fo), dt)
            if i:
                L.dX = <void*>_address(deltas[i], f"deltas[{i}]", (n, fi), dt)
            for k, (p, slot) in enumerate(((weights[i], i), (biases[i], nl + i))):
                s = state[slot]
                if self.p.kind == OPT_ADAM:
                    if not isinstance(s, tuple) or len(s) != 2:
                        raise ValueError(f"TrainStep: state[{slot}] must be an (m, v) pair")
                    s1 = _address(s[0], f"state[{slot}][0]", p.shape, dt)
                    s2 = _address(s[1], f"state[{slot}][1]", p.shape, dt)
                elif self.p.kind == OPT_SGD:
                    s1 = s2 = 0
                else:
                    s1, s2 = _address(s, f"state[{slot}]", p.shape, dt), 0
                if k == 0:
                    L.sW1, L.sW2 = <void*>s1, <void*>s2
                else:
                    L.sb1, L.sb2 = <void*>s1, <void*>s2
        self.p.dZ = <void*>_address(dZ, "dZ", (n, self.p.L[nl - 1].fan_out), dt)

    def uses(self, weights, biases):
        """True if `weights + biases` are the very arrays this step was built on."""
        cdef Py_ssize_t i
        cdef list mine = self._params
        if len(weights) + len(biases) != len(mine):
            return False
        for i in range(len(weights)):
            if weights[i] is not mine[i]:
                return False
        for i in range(len(biases)):
            if biases[i] is not mine[len(weights) + i]:
                return False
        return True

    def run(self, X, y, sample_weight, double lr, double step):
        """Train on X (m, D_0), y (m,) int64, optional sample_weight (m,); returns the mean NLL
        of the batch before the update (NaN/inf: nothing was updated).  `step` (>= 1) is the
        optimiser step number (Adam's bias correction)."""
        cdef const int64_t[::1] yv = y
        cdef const float[:, ::1] Xf
        cdef const double[:, ::1] Xd
        cdef const float[::1] swf
        cdef const double[::1] swd
        cdef const float* swf_p = NULL
        cdef const double* swd_p = NULL
        cdef int m = yv.shape[0]
        cdef double loss
        if not 1 <= m <= self.p.n_max:
            raise ValueError(f"TrainStep.run: batch of {m} rows, expected 1 to {self.p.n_max}")
        if X.shape != (m, self.p.L[0].fan_in):
            raise ValueError(f"TrainStep.run: X has shape {X.shape}, expected "
                             f"({m}, {self.p.L[0].fan_in})")
        if sample_weight is not None and sample_weight.shape != (m,):
            raise ValueError(f"TrainStep.run: sample_weight has shape {sample_weight.shape}, "
                             f"expected ({m},)")
        if self.f64:
            Xd = X
            if sample_weight is not None:
                swd = sample_weight
                swd_p = &swd[0]
            with nogil:
                loss = _run[double](&self.p, &Xd[0, 0], &yv[0], swd_p, m, lr, step)
        else:
            Xf = X
            if sample_weight is not None:
                swf = sample_weight
                swf_p = &swf[0]
            with nogil:
                loss = _run[float](&self.p, &Xf[0, 0], &yv[0], swf_p, m, lr, step)
        return loss
