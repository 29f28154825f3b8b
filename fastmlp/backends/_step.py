"""The whole training step composed from a backend's kernels (the oracle of `TrainStep`).

Design: `ComposedTrainStep` has the constructor and `run` of the contract's `TrainStep`
(docs/kernels.md) and runs the step as the kernel calls it stands for: forward, softmax
cross-entropy, backward, then the update of every parameter.  The NumPy reference backend
uses it with its own kernels (so it is the oracle the fused compiled steps are tested
against), and any backend object without a `TrainStep` of its own gets it with its kernels.
"""
import math


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
