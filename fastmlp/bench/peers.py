"""The peers fastmlp is measured against -- PyTorch and scikit-learn -- on the cases of
cases.py, and `check_step`, which holds one step of any contender to the NumPy reference's.

Optional peers raise `cases.Unavailable` (with the reason) when not installed.
"""
import functools

import numpy as np

from ..model import MLP
from ..testing import Mostly, Rel
from .cases import (C, D, OPTIMIZERS, STEP_LR, TOL_EPS, _config, batch, fastmlp_trainer,
                    need)


def _torch_net(torch, d, h, c, init=None):
    net = torch.nn.Sequential(torch.nn.Linear(d, h), torch.nn.ReLU(), torch.nn.Linear(h, c))
    if init is not None:   # fastmlp's initial weights (W (fan_in, fan_out), b): same start
        with torch.no_grad():
            for layer, (W, b) in zip((net[0], net[2]), init):
                layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(W.T)))
                layer.bias.copy_(torch.from_numpy(b))
    return net


def torch_epochs(torch, net, optim, X, y, epochs, batch_size, generator=None,
                 autocast=False, loss_fn=None, scheduler=None):
    """`epochs` epochs of shuffled mini-batch training of `net` with `optim` on the tensors X,
    y (cross-entropy, or `loss_fn`), the loop a PyTorch user writes; the time-to-accuracy,
    recipe and trainings-at-once contenders.  autocast: the forward pass and loss under
    torch.autocast("cpu", bfloat16), PyTorch's bf16 mixed precision; scheduler: an lr
    scheduler stepped after every optimizer step."""
    import contextlib
    loss_fn = torch.nn.CrossEntropyLoss() if loss_fn is None else loss_fn
    n = X.shape[0]
    mixed = (functools.partial(torch.autocast, "cpu", dtype=torch.bfloat16) if autocast
             else contextlib.nullcontext)
    for _ in range(epochs):
        perm = torch.randperm(n, generator=generator)
        for s in range(0, n, batch_size):
            idx = perm[s:s + batch_size]
            optim.zero_grad(set_to_none=True)
            with mixed():
                loss = loss_fn(net(X[idx]), y[idx])
            loss.backward()
            optim.step()
            if scheduler is not None:
                scheduler.step()


def _torch_optimizer(torch, opt, params, lr=None):
    cfg = _config(opt, lr)
    if opt == "sgd":
        return torch.optim.SGD(params, lr=cfg["lr"], momentum=cfg["momentum"])
    return torch.optim.Adam(params, lr=cfg["lr"])


def torch_step(opt, n, h, d=D, c=C, seed=0, lr=STEP_LR):
    """One PyTorch CPU step (default threads): zero_grad(set_to_none), forward, backward, step."""
    torch = need("torch")
    torch.manual_seed(seed)
    net = _torch_net(torch, d, h, c)
    optim = _torch_optimizer(torch, opt, net.parameters(), lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    Xn, yn = batch(n, d, c, np.float32, seed)
    X, y = torch.from_numpy(Xn), torch.from_numpy(yn)

    def step():
        optim.zero_grad(set_to_none=True)
        loss = loss_fn(net(X), y)
        loss.backward()
        optim.step()
    step()
    return step


def _sklearn_mlp(opt, h, batch_size, max_iter=1, seed=0, lr=None):
    need("sklearn")
    from sklearn.neural_network import MLPClassifier
    cfg = _config(opt, lr)
    extra = dict(momentum=cfg["momentum"], nesterovs_momentum=False) if opt == "sgd" else {}
    return MLPClassifier(hidden_layer_sizes=(h,), solver=opt, learning_rate_init=cfg["lr"],
                         alpha=0.0, batch_size=batch_size, max_iter=max_iter, tol=0.0,
                         n_iter_no_change=max_iter + 1, random_state=seed, **extra)


def sklearn_step(opt, n, h, d=D, c=C, seed=0, lr=STEP_LR):
    """One scikit-learn step: `MLPClassifier.partial_fit` on the batch (batch_size=n, no
    shuffle, alpha=0), which includes scikit-learn's own input validation."""
    clf = _sklearn_mlp(opt, h, n, seed=seed, lr=lr)
    clf.set_params(shuffle=False)
    X, y = batch(n, d, c, np.float32, seed)
    classes = np.arange(c)
    clf.partial_fit(X, y, classes=classes)
    return functools.partial(clf.partial_fit, X, y)


def _sklearn_from(opt, h, n, init):
    """An MLPClassifier set up for one partial_fit step from parameters `init`."""
    clf = _sklearn_mlp(opt, h, n)
    clf.set_params(shuffle=False)
    X, y = batch(n, init[0][0].shape[0], init[-1][0].shape[1], init[0][0].dtype, seed=1)
    clf.partial_fit(X, y, classes=np.arange(init[-1][0].shape[1]))
    del clf._optimizer   # the next partial_fit starts a fresh optimizer, as at step 1
    clf.coefs_ = [W.copy() for W, _ in init]
    clf.intercepts_ = [b.copy() for _, b in init]
    return clf


def _params(model):
    return [p for pair in zip(model.weights, model.biases) for p in pair]   # W1 b1 W2 b2


def check_step(contender, opt, n, h, seed=0):
    """Hold one step of `contender` to one step of the NumPy reference backend, from the same
    parameters on the same batch, at the recipe's lr.

    Parameters
    ----------
    contender : a fastmlp backend name (rtol = TOL_EPS·eps), "torch" or "sklearn" (rtol 1e-4:
        other summation orders); atol = rtol·max|W|.  Adam's first step moves a weight by
        lr·g/(|g| + eps), about ±lr whatever |g|, so where g is rounding noise two correct
        implementations differ: for Adam 99% of entries must agree within rtol·|W| + lr/100
        and all within 2·lr.  scikit-learn's Adam adds eps before the bias correction; it is
        held to that formula applied to the reference's gradients.

    Raises
    ------
    AssertionError on a mismatch; Unavailable when a peer is not installed.
    """
    ref, X, y = fastmlp_trainer("numpy", opt, n, h, seed=seed)   # has taken the step
    init = MLP((D, h, C), seed=seed, backend="numpy")
    init = list(zip(init.weights, init.biases))
    want, rtol = _params(ref.model), 1e-4
    if contender == "torch":
        torch = need("torch")
        net = _torch_net(torch, D, h, C, init=init)
        optim = _torch_optimizer(torch, opt, net.parameters())
        torch.nn.CrossEntropyLoss()(net(torch.from_numpy(X)), torch.from_numpy(y)).backward()
        optim.step()
        got = [p.detach().numpy().T for p in net.parameters()]
    elif contender == "sklearn":
        clf = _sklearn_from(opt, h, n, init)
        clf.partial_fit(X, y)
        got = [p for pair in zip(clf.coefs_, clf.intercepts_) for p in pair]
        if opt == "adam":   # lr·sqrt(1-b2)/(1-b1) · (1-b1) g / (sqrt((1-b2) g²) + eps)
            grads = [g for pair in zip(ref.model.dweights, ref.model.dbiases) for g in pair]
            lr_t = OPTIMIZERS[opt]["lr"] * np.sqrt(1 - 0.999) / (1 - 0.9)
            want = [p0 - lr_t * 0.1 * g / (np.sqrt(0.001) * np.abs(g) + 1e-8)
                    for p0, g in zip((p for pair in init for p in pair), grads)]
    else:
        got = _params(fastmlp_trainer(contender, opt, n, h, seed=seed)[0].model)
        rtol = TOL_EPS * float(np.finfo(np.float32).eps)
    what = f"{contender} {opt} step differs from the NumPy reference's"
    if opt == "sgd":
        rule = Rel(rtol=rtol, floor=0.0)
        for name, g, w in zip(("W1", "b1", "W2", "b2"), got, want):
            rule.check(g, w, np.float32, f"{what}: {name}")
        return
    lr = OPTIMIZERS[opt]["lr"]
    Mostly(rtol, lr / 100, share=0.99, cap=2 * lr).check(
        np.concatenate([g.ravel() for g in got]), np.concatenate([w.ravel() for w in want]),
        what=what)


def torch_predict(rows, h=256, d=D, c=C, seed=0):
    """PyTorch argmax of the logits under torch.inference_mode(), same weights and rows as
    `fastmlp_predict(..., seed)`; returns labels as a tensor."""
    torch = need("torch")
    init = MLP((d, h, c), seed=seed, backend="numpy")
    net = _torch_net(torch, d, h, c, init=list(zip(init.weights, init.biases))).eval()
    X = torch.from_numpy(batch(rows, d, c, np.float32, seed)[0])

    def predict():
        with torch.inference_mode():
            return net(X).argmax(dim=1)
    predict()
    return predict
