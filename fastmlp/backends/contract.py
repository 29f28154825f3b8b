"""The kernel contract, in one place: the names, argument orders and shapes every backend
implements (docs/kernels.md explains them), the arrays of the fused `TrainStep`, and the
optimizer kinds.

Design: the tables below are data, read by the backend registry (which functions a backend
must have), the checked boundary, the tests (every backend's signatures against the table)
and the benchmarks (which arguments a kernel writes).  `step_layout` / `check_batch`
validate a `TrainStep`'s arrays and batch once for both compiled steps, which then trust the
addresses they return.  The meaning of every kernel is the NumPy reference (reference.py).
"""
from typing import NamedTuple

import numpy as np

from .csr import CSR


class Kernel(NamedTuple):
    """One function of the contract: its parameters in order (defaults as in the signature),
    shapes, the parameters it writes in place, and what it returns."""
    name: str
    params: tuple
    shapes: str
    writes: tuple
    returns: str          # the name of the returned buffer, "loss" (a Python float) or "nnz"


KERNELS = (
    Kernel("linear_forward", ("X", "W", "b", "out", "activation='identity'"),
           "X (N,D), W (D,H), b (H,), out (N,H)", ("out",), "out"),
    Kernel("linear_backward", ("dY", "X", "W", "dW", "db", "dX=None"),
           "dY (N,H), X (N,D), W (D,H), dW (D,H), db (H,), dX (N,D) or None",
           ("dW", "db", "dX"), "dW"),
    Kernel("activation_backward", ("dH", "H", "activation='relu'"), "dH, H (N,H)", ("dH",),
           "dH"),
    Kernel("softmax_xent_grad", ("Z", "y", "dZ", "sample_weight=None", "label_smoothing=0.0"),
           "Z (N,C), y (N,) int, dZ (N,C), sample_weight (N,) or None, label_smoothing in "
           "[0, 1]", ("dZ",), "loss"),
    Kernel("logistic_xent_grad", ("Z", "Y", "dZ", "sample_weight=None"),
           "Z (N,K), Y (N,K) of 0/1, dZ (N,K), sample_weight (N,) or None", ("dZ",), "loss"),
    Kernel("squared_error_grad", ("Z", "Y", "dZ", "sample_weight=None"),
           "Z (N,K), Y (N,K), dZ (N,K), sample_weight (N,) or None", ("dZ",), "loss"),
    Kernel("poisson_grad", ("Z", "Y", "dZ", "sample_weight=None"),
           "Z (N,K), Y (N,K) >= 0, dZ (N,K), sample_weight (N,) or None", ("dZ",), "loss"),
    Kernel("csr_linear_forward", ("data", "indices", "indptr", "W", "b", "out",
                                  "activation='identity'"),
           "X (N,D) as CSR: data (nnz,), indices (nnz,) int64, indptr (N+1,) int64; W (D,H), "
           "b (H,), out (N,H)", ("out",), "out"),
    Kernel("csr_linear_backward", ("dY", "data", "indices", "indptr", "dW", "db"),
           "dY (N,H), X (N,D) as CSR, dW (D,H), db (H,)", ("dW", "db"), "dW"),
    Kernel("csr_gather_rows", ("data", "indices", "indptr", "rows", "out_data", "out_indices",
                               "out_indptr"),
           "X as CSR, rows (m,) int64, out_* a CSR buffer of m rows", ("out_data", "out_indices",
                                                                      "out_indptr"), "nnz"),
    Kernel("gather_rows", ("X", "rows", "out", "mean=None", "scale=None"),
           "X (N,D) float or uint16 bf16 bits, rows (m,) int64 in [0, N), out (m,D), mean, "
           "scale (D,) or None (always None for bits)",
           ("out",), "out"),
    Kernel("sgd_update", ("W", "dW", "lr", "weight_decay=0.0", "velocity=None", "momentum=0.0",
                          "nesterov=False"),
           "W, dW, velocity: one shape, any rank", ("W", "velocity"), "W"),
    Kernel("adam_update", ("W", "dW", "m", "v", "step", "lr", "beta1=0.9", "beta2=0.999",
                           "eps=1e-8", "weight_decay=0.0"),
           "W, dW, m, v: one shape, any rank", ("W", "m", "v"), "W"),
    Kernel("to_bf16", ("x", "out"), "x float32, out uint16: one shape, any rank", ("out",),
           "out"),
    Kernel("dropout", ("A", "p", "seed", "step", "layer"),
           "A (N, H); p in [0, 1), seed, step, layer ints >= 0", ("A",), "A"),
    Kernel("batch_norm_forward", ("Z", "gamma", "beta", "out", "mean", "var", "eps=1e-05",
                                  "activation='identity'"),
           "Z (N,H) in: X·W, out: its normalisation; gamma, beta, mean, var (H,), out (N,H)",
           ("Z", "out", "mean", "var"), "out"),
    Kernel("batch_norm_backward", ("dY", "Zhat", "gamma", "var", "dgamma", "dbeta",
                                   "eps=1e-05"),
           "dY (N,H) in: dL/d(γẑ+β), out: dL/dZ; Zhat (N,H); gamma, var, dgamma, dbeta (H,)",
           ("dY", "dgamma", "dbeta"), "dY"),
    Kernel("batch_norm_running", ("mean", "var", "n", "running_mean", "running_var",
                                  "momentum=0.1"),
           "mean, var, running_mean, running_var (H,); n the batch's rows", ("running_mean",
                                                                            "running_var"),
           "running_mean"),
)
KERNEL_NAMES = tuple(k.name for k in KERNELS)

# TrainStep(*TRAIN_STEP_PARAMS) and its run(*TRAIN_STEP_RUN_PARAMS); shapes in docs/kernels.md
TRAIN_STEP_PARAMS = ("weights", "biases", "dweights", "dbiases", "acts", "deltas", "dZ",
                     "state", "optimizer", "momentum=0.0", "nesterov=False", "beta1=0.9",
                     "beta2=0.999", "activation='relu'", "output='softmax'", "gemm='auto'",
                     "precision=None", "dropout=0.0", "dropout_seed=0", "label_smoothing=0.0",
                     "batch_norm=None")
TRAIN_STEP_RUN_PARAMS = ("X", "y", "sample_weight", "lr", "step", "weight_decay=0.0",
                         "eps=1e-8")

# A fused step runs GEMMs of at least this many flops (2·m·n·k) on the threads it is allowed
# (TrainStep.set_threads), smaller ones on one thread.  Measured (`fastmlp bench`, Crossover;
# docs/benchmarks.md): on an idle 2-core machine a second thread gains from ~0.2 MFLOP
# (0.6-0.7x the time), gains nothing at 0.05 MFLOP, and 0.4 MFLOP is mixed.
MIN_GEMM_FLOPS = 500_000


def gemm_threads(flops, cap):
    """The threads the fused step gives one GEMM of `flops` (2·m·n·k) when it may use `cap`:
    1 below MIN_GEMM_FLOPS, else `cap` (csrc/train_step.pxi `_gemm`, numba `_gemm`)."""
    return 1 if flops < MIN_GEMM_FLOPS else max(1, int(cap))


def step_gemms(layer_sizes, m, sparse=False):
    """The GEMMs of one fused step on a batch of m rows, as (name, flops): per layer l the
    forward H_l = H_{l-1}·W_l, the weight gradient dW_l = H_{l-1}ᵀ·δ_l, and, above the first
    layer, δ_{l-1} = δ_l·W_lᵀ.  A sparse X makes the first layer's two CSR kernels, not
    GEMMs."""
    out = []
    for l in range(len(layer_sizes) - 1):
        flops = 2.0 * m * layer_sizes[l] * layer_sizes[l + 1]
        if l == 0 and sparse:
            continue
        out += [(f"forward {l + 1}", flops), (f"dW {l + 1}", flops)]
        if l > 0:
            out.append((f"delta {l}", flops))
    return out

# optimizer kinds of the fused TrainSteps (csrc/train_step.pxi has the same enum)
OPT_SGD, OPT_MOMENTUM, OPT_NESTEROV, OPT_ADAM = 0, 1, 2, 3
OPTIMIZERS = ("sgd", "adam")
# what the fused steps' GEMMs take: None, the model's dtype; "bf16", bfloat16 operands
# accumulated in float32 (a float32 model; oneDNN, fastmlp.backends.onednn)
PRECISIONS = (None, "bf16")

# --------------------------------------------------------------------------- dropout masks
# Inverted dropout draws its mask from a counter-based generator, so every backend draws the
# same mask and a run is reproducible from its seed, with nothing stored between the forward
# and the backward pass (which recomputes it).  Entry (r, j) of hidden layer `layer`'s
# (N, H) activations at optimizer step `step` is kept when
#     u = mix64(stream + (r·H + j + 1)·GOLDEN) >> 40      (SplitMix64's (r·H + j + 1)-th draw)
#     stream = mix64(mix64(seed) ^ (step·2¹⁶ + layer))
# satisfies u >= dropout_threshold(p) = round(p·2²⁴); arithmetic modulo 2⁶⁴.  A kept entry
# is scaled by 1 / (1 - p), a dropped one set to 0 (csrc/dropout.h, numba/kernels.py
# `_dropout_row` and reference.dropout are the three copies of this formula).
GOLDEN = 0x9E3779B97F4A7C15
MIX1, MIX2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
_U64 = (1 << 64) - 1
DROPOUT_BITS = 24
MAX_DROPOUT_LAYERS = 1 << 16


def mix64(z):
    """SplitMix64's finaliser of a Python int (taken modulo 2⁶⁴)."""
    z &= _U64
    z = ((z ^ (z >> 30)) * MIX1) & _U64
    z = ((z ^ (z >> 27)) * MIX2) & _U64
    return z ^ (z >> 31)


def dropout_stream(seed, step, layer):
    """The 64-bit key of one layer's mask at one step (see above)."""
    return mix64(mix64(int(seed)) ^ (((int(step) << 16) | int(layer)) & _U64))


def dropout_threshold(p):
    """round(p·2²⁴): an entry is kept when its 24-bit draw is at least this."""
    return int(round(float(p) * (1 << DROPOUT_BITS)))


def check_dropout(dropout, n_hidden):
    """The dropout probability of each of `n_hidden` hidden layers, as a tuple of floats in
    [0, 1): from one number (every hidden layer) or a sequence of one per hidden layer.
    ValueError/TypeError naming the problem otherwise."""
    if dropout is None:
        dropout = 0.0
    if isinstance(dropout, (int, float, np.integer, np.floating)) and \
            not isinstance(dropout, bool):
        ps = (float(dropout),) * n_hidden
    else:
        try:
            if isinstance(dropout, (str, bytes)):
                raise TypeError
            ps = tuple(float(p) for p in dropout)
        except (TypeError, ValueError):
            raise TypeError(f"dropout must be a number or a sequence of one per hidden layer, "
                            f"got {dropout!r}") from None
        if len(ps) != n_hidden:
            raise ValueError(f"dropout needs one probability per hidden layer ({n_hidden}), "
                             f"got {len(ps)}")
    for p in ps:
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probabilities must be in [0, 1), got {p}")
    return ps


# --------------------------------------------------------------------------- batch normalisation
# A hidden layer with batch normalisation computes Z = A·W (no bias), normalises each column
# with the batch's mean and biased variance, ẑ = (Z - mean) / sqrt(var + eps), and applies
# its activation to γ·ẑ + b: the layer's bias b is BN's shift β, and γ its learned scale.
# Training steps update running estimates with PyTorch's momentum convention (the unbiased
# variance); inference uses them, folded into the layer: W·s and b - s·running_mean with
# s = γ / sqrt(running_var + eps).
BN_EPS, BN_MOMENTUM = 1e-5, 0.1


class BatchNorm(NamedTuple):
    """The arrays of batch normalisation on every hidden layer i (of width H_i), for the
    composition (reference.forward / backward) and `TrainStep(batch_norm=...)`:

    gammas[i] (H_i,)             the scales γ, trained with the weights (not decayed)
    dgammas[i] (H_i,)            their gradients (written by backward)
    zhats[i] (n_max, H_i)        workspace: the layer's product, then its normalisation ẑ
    means[i], vars[i] (H_i,)     workspace: the batch's column means and biased variances
    running_means[i], running_vars[i] (H_i,)   updated by each training step
    state[i]                     γ's optimizer state, as TrainStep's state entries (None,
                                 a velocity, or Adam's (m, v)); TrainStep only
    momentum, eps                the running estimates' momentum and the variance's eps"""
    gammas: list
    dgammas: list
    zhats: list
    means: list
    vars: list
    running_means: list
    running_vars: list
    state: list = None
    momentum: float = BN_MOMENTUM
    eps: float = BN_EPS


def check_bn_settings(momentum, eps):
    """(momentum, eps) as floats, momentum in [0, 1] and eps > 0 (ValueError otherwise)."""
    for name, v, ok in (("momentum", momentum, lambda x: 0.0 <= x <= 1.0),
                        ("eps", eps, lambda x: x > 0.0 and x < float("inf"))):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) \
                or not ok(float(v)):
            raise ValueError(f"batch norm {name} must be "
                             f"{'in [0, 1]' if name == 'momentum' else 'a finite number > 0'},"
                             f" got {v!r}")
    return float(momentum), float(eps)


def check_label_smoothing(label_smoothing, output="softmax"):
    """label_smoothing as a float in [0, 1], for the softmax output only (ValueError)."""
    if isinstance(label_smoothing, bool) or \
            not isinstance(label_smoothing, (int, float, np.integer, np.floating)) or \
            not 0.0 <= float(label_smoothing) <= 1.0:
        raise ValueError(f"label_smoothing must be a number in [0, 1], got "
                         f"{label_smoothing!r}")
    if label_smoothing and output != "softmax":
        raise ValueError(f"label_smoothing is for the softmax output, not {output!r}")
    return float(label_smoothing)


def check_seed(seed, name="dropout_seed"):
    """An int in [0, 2⁶⁴) (the dropout mask's key), or ValueError."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or \
            not 0 <= int(seed) <= _U64:
        raise ValueError(f"{name} must be an int in [0, 2**64), got {seed!r}")
    return int(seed)


# hidden activations and output layers, in the order of their codes (the compiled kernels
# take the code; csrc/kernels.pyx and numba/kernels.py use the same numbers)
ACTIVATIONS = ("identity", "relu", "tanh", "logistic")
OUTPUTS = ("softmax", "logistic", "identity", "exp")
# the loss kernel of each output layer, and the targets it takes: "labels" (N,) int64 class
# indices, or "values" (N, K) of the model's dtype
OUTPUT_LOSS = {"softmax": "softmax_xent_grad", "logistic": "logistic_xent_grad",
               "identity": "squared_error_grad", "exp": "poisson_grad"}
OUTPUT_TARGETS = {"softmax": "labels", "logistic": "values", "identity": "values",
                  "exp": "values"}


def kernel(name):
    """The `Kernel` entry called `name`."""
    for k in KERNELS:
        if k.name == name:
            return k
    raise KeyError(name)


def activation_code(activation):
    """The code of a hidden activation name (ValueError naming the choices otherwise)."""
    try:
        return ACTIVATIONS.index(activation)
    except ValueError:
        raise ValueError(f"unknown activation {activation!r}; choose from {ACTIVATIONS}") \
            from None


def output_code(output):
    """The code of an output layer name (ValueError naming the choices otherwise)."""
    try:
        return OUTPUTS.index(output)
    except ValueError:
        raise ValueError(f"unknown output {output!r}; choose from {OUTPUTS}") from None


def optimizer_kind(optimizer, momentum, nesterov):
    """OPT_* for an optimizer name ('sgd' or 'adam') and its momentum settings."""
    if optimizer == "adam":
        return OPT_ADAM
    if optimizer == "sgd":
        return OPT_SGD if momentum == 0 else (OPT_NESTEROV if nesterov else OPT_MOMENTUM)
    raise ValueError(f"TrainStep: unknown optimizer {optimizer!r}; choose from {OPTIMIZERS}")


# --------------------------------------------------------------------------- TrainStep layout

def _address(a, name, shape, dtype):
    """The data address of `a`, a writeable C-contiguous array of exactly this shape and dtype."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"TrainStep: {name} must be a NumPy array, got {type(a).__name__}")
    if a.dtype != dtype:
        raise TypeError(f"TrainStep: {name} has dtype {a.dtype}, expected {dtype}")
    if a.shape != shape:
        raise ValueError(f"TrainStep: {name} has shape {a.shape}, expected {shape}")
    if not a.flags.c_contiguous or not a.flags.writeable:
        raise ValueError(f"TrainStep: {name} must be C-contiguous and writeable")
    return a.__array_interface__["data"][0]


class Layout(NamedTuple):
    """A fused TrainStep's arrays, validated: see `step_layout`."""
    kind: int            # OPT_*
    activation: int      # the hidden layers' activation code (ACTIVATIONS)
    output: int          # the output layer's code (OUTPUTS)
    dtype: np.dtype
    n_max: int
    layers: list         # per layer (fan_in, fan_out, W, b, dW, db, act, dX, sW1, sW2, sb1, sb2)
    dZ: int              # address of dZ (n_max, C)
    bf16: bool = False   # precision="bf16"
    dropout: tuple = ()  # per layer the dropout probability of its output (0.0 for the last)
    dropout_seed: int = 0
    label_smoothing: float = 0.0   # the softmax output's
    # batch normalisation: per hidden layer (gamma, dgamma, sg1, sg2, zhat, mean, var,
    # running_mean, running_var) addresses (sg1/sg2: γ's optimizer state, 0 where unused);
    # () without it
    batch_norm: tuple = ()
    bn_momentum: float = BN_MOMENTUM
    bn_eps: float = BN_EPS


def check_precision(precision, dtype):
    """precision (contract.PRECISIONS) for a model of `dtype`: ValueError for an unknown one,
    TypeError when bf16 is asked of a model that is not float32."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose from {PRECISIONS}")
    if precision == "bf16" and np.dtype(dtype) != np.float32:
        raise TypeError(f"precision='bf16' trains a float32 model (bf16 products, float32 "
                        f"weights and sums); this one is {np.dtype(dtype)}")
    return precision


class BF16Buffers(NamedTuple):
    """The bf16 step's own uint16 (bfloat16) copies, written by the passes that write their
    float32 originals: W16[i] (D_i, D_i+1) of the weights (by the update), A16[i] (n_max,
    D_i+1) of the hidden activations (by the bias + activation pass; None for the output
    layer), D16[i] (n_max, D_i+1) of the deltas, the gradients w.r.t. layer i's
    pre-activation (by the loss pass or the activation backward), X16 (n_max, D_0) of a
    float32 batch (run() converts one; a uint16 batch is used as it is)."""
    W16: list
    A16: list
    D16: list
    X16: np.ndarray


def bf16_buffers(layout):
    """Allocate the BF16Buffers of a bf16 step's `layout` (contents undefined)."""
    n, layers = layout.n_max, layout.layers
    last = len(layers) - 1
    return BF16Buffers([np.empty((r[0], r[1]), np.uint16) for r in layers],
                       [np.empty((n, r[1]), np.uint16) if i < last else None
                        for i, r in enumerate(layers)],
                       [np.empty((n, r[1]), np.uint16) for r in layers],
                       np.empty((n, layers[0][0]), np.uint16))


def step_layout(weights, biases, dweights, dbiases, acts, deltas, dZ, state, optimizer,
                momentum, nesterov, activation="relu", output="softmax", precision=None,
                dropout=0.0, dropout_seed=0, label_smoothing=0.0, batch_norm=None):
    """Validate the arrays of a fused `TrainStep` (shapes as in docs/kernels.md) and return
    their `Layout`: the optimizer kind, activation and output codes, dtype, n_max, and per
    layer the tuple (fan_in, fan_out, W, b, dW, db, act, dX, sW1, sW2, sb1, sb2) of sizes and
    data addresses (0 where unused: dX of layer 0, the state slots plain SGD or momentum does
    not have), whether the step is bf16 (`check_precision`), the dropout probability of
    each layer's output (`check_dropout`; 0.0 for the output layer), the mask's seed and
    the softmax output's label smoothing (`check_label_smoothing`), and the addresses of
    the hidden layers' `BatchNorm` arrays (`bn_layout`).
    Raises TypeError/ValueError naming the argument.  Shared by the Cython and Numba steps."""
    nl = len(weights)
    if nl < 1 or not all(len(s) == nl for s in (biases, dweights, dbiases, acts, deltas)):
        raise ValueError("TrainStep: weights, biases, dweights, dbiases, acts and deltas "
                         "need one entry per layer")
    if len(state) != 2 * nl:
        raise ValueError("TrainStep: state needs one entry per parameter")
    kind = optimizer_kind(optimizer, momentum, nesterov)
    act_code, out_code = activation_code(activation), output_code(output)
    dt = weights[0].dtype if isinstance(weights[0], np.ndarray) else None
    if dt != np.float32 and dt != np.float64:
        raise TypeError(f"TrainStep: weights must be float32 or float64, got {dt}")
    check_precision(precision, dt)
    drop = check_dropout(dropout, nl - 1) + (0.0,)
    dropout_seed = check_seed(dropout_seed)
    smooth = check_label_smoothing(label_smoothing, output)
    n = acts[0].shape[0] if isinstance(acts[0], np.ndarray) and acts[0].ndim else 0
    if n < 1:
        raise ValueError("TrainStep: acts[0] must be an array with at least one row")
    layers = []
    for i in range(nl):
        W = weights[i]
        fi, fo = W.shape if isinstance(W, np.ndarray) and W.ndim == 2 else (0, 0)
        if fi < 1 or fo < 1:
            raise ValueError(f"TrainStep: weights[{i}] must be 2-D and non-empty")
        if i and fi != weights[i - 1].shape[1]:
            raise ValueError(f"TrainStep: weights[{i}] does not follow weights[{i - 1}]")
        rec = [fi, fo, _address(W, f"weights[{i}]", (fi, fo), dt),
               _address(biases[i], f"biases[{i}]", (fo,), dt),
               _address(dweights[i], f"dweights[{i}]", (fi, fo), dt),
               _address(dbiases[i], f"dbiases[{i}]", (fo,), dt),
               _address(acts[i], f"acts[{i}]", (n, fo), dt),
               _address(deltas[i], f"deltas[{i}]", (n, fi), dt) if i else 0]
        for shape, slot in (((fi, fo), i), ((fo,), nl + i)):
            s = state[slot]
            if kind == OPT_ADAM:
                if not isinstance(s, tuple) or len(s) != 2:
                    raise ValueError(f"TrainStep: state[{slot}] must be an (m, v) pair")
                rec += [_address(s[0], f"state[{slot}][0]", shape, dt),
                        _address(s[1], f"state[{slot}][1]", shape, dt)]
            elif kind == OPT_SGD:
                rec += [0, 0]
            else:
                rec += [_address(s, f"state[{slot}]", shape, dt), 0]
        layers.append(tuple(rec))
    dZ_address = _address(dZ, "dZ", (n, weights[-1].shape[1]), dt)
    bn, bn_momentum, bn_eps = (), BN_MOMENTUM, BN_EPS
    if batch_norm is not None:
        bn = bn_layout(batch_norm, [r[1] for r in layers[:-1]], n, dt, kind)
        for i, z in enumerate(batch_norm.zhats):
            if any(np.shares_memory(z, a) for a in (acts[i], deltas[i + 1], dZ)):
                raise ValueError(f"TrainStep: batch_norm.zhats[{i}] must not overlap the "
                                 f"activations or deltas")
        bn_momentum, bn_eps = check_bn_settings(batch_norm.momentum, batch_norm.eps)
    return Layout(kind, act_code, out_code, dt, n, layers, dZ_address, precision == "bf16",
                  drop, dropout_seed, smooth, bn, bn_momentum, bn_eps)


def bn_layout(bn, widths, n, dt, kind):
    """The per hidden layer address records of a `BatchNorm` (Layout.batch_norm) for hidden
    widths `widths`, a workspace of n rows, dtype dt and optimizer kind (OPT_*); TypeError /
    ValueError naming the array otherwise."""
    if not isinstance(bn, BatchNorm):
        raise TypeError(f"TrainStep: batch_norm must be a contract.BatchNorm or None, got "
                        f"{type(bn).__name__}")
    nh = len(widths)
    fields = ("gammas", "dgammas", "zhats", "means", "vars", "running_means", "running_vars")
    for f in fields + ("state",):
        v = getattr(bn, f)
        if not isinstance(v, (list, tuple)) or len(v) != nh:
            raise ValueError(f"TrainStep: batch_norm.{f} needs one entry per hidden layer "
                             f"({nh})")
    out = []
    for i, h in enumerate(widths):
        a = {f: _address(getattr(bn, f)[i], f"batch_norm.{f}[{i}]",
                         (n, h) if f == "zhats" else (h,), dt) for f in fields}
        s = bn.state[i]
        if kind == OPT_ADAM:
            if not isinstance(s, tuple) or len(s) != 2:
                raise ValueError(f"TrainStep: batch_norm.state[{i}] must be an (m, v) pair")
            sg = (_address(s[0], f"batch_norm.state[{i}][0]", (h,), dt),
                  _address(s[1], f"batch_norm.state[{i}][1]", (h,), dt))
        elif kind == OPT_SGD:
            sg = (0, 0)
        else:
            sg = (_address(s, f"batch_norm.state[{i}]", (h,), dt), 0)
        out.append((a["gammas"], a["dgammas"]) + sg + (a["zhats"], a["means"], a["vars"],
                                                      a["running_means"], a["running_vars"]))
    return tuple(out)


def same_arrays(mine, weights, biases):
    """TrainStep.uses: True if `weights + biases` are the very arrays in the list `mine`
    (a plain loop: no generator or list per call, it runs once per epoch)."""
    if len(weights) + len(biases) != len(mine):
        return False
    i = 0
    for group in (weights, biases):
        for a in group:
            if a is not mine[i]:
                return False
            i += 1
    return True


def check_batch(X, y, sample_weight, layout):
    """The batch of a fused `TrainStep.run` built on `layout`: X (m, n_features) of its
    dtype (a C-contiguous array, or a CSR with int64 indices and indptr (m+1,); a bf16 step
    takes a dense X, float32 or uint16 bfloat16 bits), y (m,)
    int64 labels (softmax output) or (m, n_outputs) C-contiguous values of its dtype,
    sample_weight None or (m,) of its dtype, 1 <= m <= n_max (a dense X's contiguity is the
    caller's to check).  Returns m; raises ValueError/TypeError naming the argument."""
    dtype, n_max = layout.dtype, layout.n_max
    n_features, n_outputs = layout.layers[0][0], layout.layers[-1][1]
    m = y.shape[0] if isinstance(y, np.ndarray) and y.ndim else 0
    if not 0 < m <= n_max:
        raise ValueError(f"TrainStep.run: batch of {m} rows, expected 1 to {n_max}")
    if X.shape != (m, n_features):
        raise ValueError(f"TrainStep.run: X has shape {X.shape}, expected ({m}, {n_features})")
    if layout.bf16 and isinstance(X, CSR):
        raise TypeError("TrainStep.run: a bf16 step takes a dense X (precision='bf16' does "
                        "not train on sparse input)")
    if X.dtype != dtype and not (layout.bf16 and X.dtype == np.uint16):
        raise TypeError(f"TrainStep.run: X has dtype {X.dtype}, expected {dtype}"
                        + (" or uint16 (bfloat16 bits)" if layout.bf16 else ""))
    if isinstance(X, CSR):   # the kernels check the column indices and offsets they read
        for name, a in (("indices", X.indices), ("indptr", X.indptr)):
            if a.dtype != np.int64 or a.ndim != 1 or not a.flags.c_contiguous:
                raise TypeError(f"TrainStep.run: X.{name} must be 1-D C-contiguous int64")
        if not (X.data.ndim == 1 and X.data.flags.c_contiguous
                and X.indices.shape == X.data.shape and X.indptr.shape == (m + 1,)
                and 0 <= X.indptr[0] and X.indptr[m] <= X.data.shape[0]):
            raise ValueError("TrainStep.run: X's CSR arrays do not fit together")
    if OUTPUTS[layout.output] == "softmax":
        if y.ndim != 1 or y.dtype != np.int64:
            raise TypeError(f"TrainStep.run: y must be 1-D int64, got {y.ndim}-D {y.dtype}")
    else:
        if y.dtype != dtype:
            raise TypeError(f"TrainStep.run: y has dtype {y.dtype}, expected {dtype}")
        if y.shape != (m, n_outputs) or not y.flags.c_contiguous:
            raise ValueError(f"TrainStep.run: y must be C-contiguous of shape "
                             f"({m}, {n_outputs}), got {y.shape}")
    if sample_weight is not None:
        if sample_weight.shape != (m,):
            raise ValueError(f"TrainStep.run: sample_weight has shape {sample_weight.shape}, "
                             f"expected ({m},)")
        if sample_weight.dtype != dtype:
            raise TypeError(f"TrainStep.run: sample_weight has dtype {sample_weight.dtype}, "
                            f"expected {dtype}")
    return m
