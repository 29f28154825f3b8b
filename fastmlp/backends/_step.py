"""The whole training step composed from a backend's kernels (the oracle of `TrainStep`).

Design: `ComposedTrainStep` has the constructor and `run` of the contract's `TrainStep`
(docs/kernels.md) and runs the step as the kernel calls it stands for: forward, softmax
cross-entropy, backward, then the update of every parameter.  The NumPy reference backend
uses it with its own kernels (so it is the oracle the fused compiled steps are tested
against), and any backend object without a `TrainStep` of its own gets it with its kernels.
"""
import math

import numpy as np

# optimizer kinds of the fused TrainSteps (the same values as the enum in _train_step.pxi)
OPT_SGD, OPT_MOMENTUM, OPT_NESTEROV, OPT_ADAM = 0, 1, 2, 3


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


def step_layout(weights, biases, dweights, dbiases, acts, deltas, dZ, state, optimizer,
                momentum, nesterov):
    """Validate the arrays of a fused `TrainStep` (shapes as in docs/kernels.md) and return
    `(kind, dtype, n_max, layers, dZ_address)`: `kind` one of OPT_*, and per layer the tuple
    (fan_in, fan_out, W, b, dW, db, act, dX, sW1, sW2, sb1, sb2) of sizes and data addresses
    (0 where unused: dX of layer 0, the state slots plain SGD or momentum does not have).
    Raises TypeError/ValueError naming the argument.  Shared by the Cython and Numba steps."""
    nl = len(weights)
    if nl < 1 or not all(len(s) == nl for s in (biases, dweights, dbiases, acts, deltas)):
        raise ValueError("TrainStep: weights, biases, dweights, dbiases, acts and deltas "
                         "need one entry per layer")
    if len(state) != 2 * nl:
        raise ValueError("TrainStep: state needs one entry per parameter")
    if optimizer == "adam":
        kind = OPT_ADAM
    elif optimizer == "sgd":
        kind = OPT_SGD if momentum == 0 else (OPT_NESTEROV if nesterov else OPT_MOMENTUM)
    else:
        raise ValueError(f"TrainStep: unknown optimizer {optimizer!r}")
    dt = weights[0].dtype if isinstance(weights[0], np.ndarray) else None
    if dt != np.float32 and dt != np.float64:
        raise TypeError(f"TrainStep: weights must be float32 or float64, got {dt}")
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
    return kind, dt, n, layers, dZ_address


def check_batch(X, y, sample_weight, n_max, n_features, dtype):
    """The batch of a fused `TrainStep.run`: X (m, n_features) of `dtype`, y (m,) int64,
    sample_weight None or (m,) of `dtype`, 1 <= m <= n_max (contiguity is the caller's to
    check).  Returns m; raises ValueError/TypeError naming the argument."""
    m = y.shape[0]
    if not 0 < m <= n_max:
        raise ValueError(f"TrainStep.run: batch of {m} rows, expected 1 to {n_max}")
    if X.shape != (m, n_features):
        raise ValueError(f"TrainStep.run: X has shape {X.shape}, expected ({m}, {n_features})")
    if X.dtype != dtype:
        raise TypeError(f"TrainStep.run: X has dtype {X.dtype}, expected {dtype}")
    if y.ndim != 1 or y.dtype != np.int64:
        raise TypeError(f"TrainStep.run: y must be 1-D int64, got {y.ndim}-D {y.dtype}")
    if sample_weight is not None:
        if sample_weight.shape != (m,):
            raise ValueError(f"TrainStep.run: sample_weight has shape {sample_weight.shape}, "
                             f"expected ({m},)")
        if sample_weight.dtype != dtype:
            raise TypeError(f"TrainStep.run: sample_weight has dtype {sample_weight.dtype}, "
                            f"expected {dtype}")
    return m


class ComposedTrainStep:
    """TrainStep(weights, biases, dweights, dbiases, acts, deltas, dZ, state, optimizer,
    momentum=0.0, nesterov=False, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0),
    driving the raw kernels of module/object `kernels`.  See docs/kernels.md."""

    def __init__(self, kernels, weights, biases, dweights, dbiases, acts, deltas, dZ, state,
                 optimizer, momentum=0.0, nesterov=False, beta1=0.9, beta2=0.999, eps=1e-8,
                 weight_decay=0.0):
        if optimizer not in ("sgd", "adam"):
            raise ValueError(f"TrainStep: unknown optimizer {optimizer!r}")
        self.k = kernels
        self.weights, self.biases = list(weights), list(biases)
        self.dweights, self.dbiases = list(dweights), list(dbiases)
        self.acts, self.deltas, self.dZ, self.state = list(acts), list(deltas), dZ, list(state)
        self.optimizer, self.momentum, self.nesterov = optimizer, momentum, nesterov
        self.beta1, self.beta2, self.eps, self.weight_decay = beta1, beta2, eps, weight_decay
        self.n_max = self.acts[0].shape[0]

    def uses(self, weights, biases):
        """True if `weights + biases` are the very arrays this step was built on."""
        mine = self.weights + self.biases
        theirs = list(weights) + list(biases)
        return len(mine) == len(theirs) and all(a is b for a, b in zip(mine, theirs))

    def run(self, X, y, sample_weight, lr, step):
        """Train on X (m, D), y (m,), optional sample_weight (m,); returns the batch's mean NLL
        before the update (non-finite: nothing was updated).  `step` >= 1 counts updates."""
        k, m, last = self.k, X.shape[0], len(self.weights) - 1
        if not 1 <= m <= self.n_max:
            raise ValueError(f"TrainStep.run: batch of {m} rows, expected 1 to {self.n_max}")
        acts = [a[:m] for a in self.acts]
        a = X
        for i, (W, b) in enumerate(zip(self.weights, self.biases)):
            k.linear_forward(a, W, b, acts[i], i < last)
            a = acts[i]
        loss = k.softmax_xent_grad(a, y, self.dZ[:m], sample_weight)
        if not math.isfinite(loss):
            return loss
        delta = self.dZ[:m]
        for i in range(last, -1, -1):
            inp = acts[i - 1] if i else X
            dX = self.deltas[i][:m] if i else None
            k.linear_backward(delta, inp, self.weights[i], self.dweights[i], self.dbiases[i], dX)
            if i:
                delta = k.relu_backward(dX, inp)
        params = self.weights + self.biases
        grads = self.dweights + self.dbiases
        for i, (p, g, s) in enumerate(zip(params, grads, self.state)):
            wd = self.weight_decay if i < len(self.weights) else 0.0
            if self.optimizer == "adam":
                k.adam_update(p, g, s[0], s[1], step, lr, self.beta1, self.beta2, self.eps, wd)
            else:
                k.sgd_update(p, g, lr, wd, s, self.momentum, self.nesterov)
        return loss
