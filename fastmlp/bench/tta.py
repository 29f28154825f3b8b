"""Time to accuracy: one recipe trained with each contender, wall time and test accuracy."""
import functools
import time
import warnings

import numpy as np

from ..model import MLP
from ..trainer import Trainer
from .cases import Unavailable
from .peers import _sklearn_mlp, _torch_net, _torch_optimizer, need, torch_epochs


@functools.lru_cache(maxsize=None)
def dataset(name):
    """(X_train, y_train, X_test, y_test) of 'digits' or 'fashion-mnist', cached; raises
    Unavailable when Fashion-MNIST is not installed."""
    from .. import datasets
    if name == "digits":
        return datasets.load_digits()
    try:
        return datasets.load_fashion_mnist()
    except FileNotFoundError as exc:
        raise Unavailable(" ".join(str(exc).split())) from None


RECIPE = dict(hidden=256, lr=1e-3, batch_size=128)   # Adam, as in the issue


TTA_EPOCHS = {"fashion-mnist": 10, "digits": 30}


def time_to_accuracy(contender, data, epochs, seed=0, precision=None):
    """Train a D-256-10 net with Adam (lr 1e-3, batch 128) and measure it.

    Parameters
    ----------
    contender : a fastmlp backend name, "torch" or "sklearn".  PyTorch starts from fastmlp's
        initial weights for `seed`; scikit-learn uses its own (Glorot) initialisation.
    precision : None, or "bf16": fastmlp's Trainer(precision="bf16"), PyTorch's bf16 autocast
    data : (X_train (n, D) float32, y_train (n,) int64, X_test, y_test)
    epochs : int

    Returns
    -------
    {"seconds": training wall time, "accuracy": test accuracy}
    """
    Xtr, ytr, Xte, yte = data
    sizes = (Xtr.shape[1], RECIPE["hidden"], int(ytr.max()) + 1)
    if contender == "torch":
        return _torch_tta(data, sizes, epochs, seed, autocast=precision == "bf16")
    if contender == "sklearn":
        clf = _sklearn_mlp("adam", RECIPE["hidden"], RECIPE["batch_size"], epochs, seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # ConvergenceWarning after max_iter epochs
            t0 = time.perf_counter()
            clf.fit(Xtr, ytr)
            seconds = time.perf_counter() - t0
        return {"seconds": seconds, "accuracy": float(clf.score(Xte, yte))}
    model = MLP(sizes, seed=seed, backend=contender)
    trainer = Trainer(model, optimizer="adam", lr=RECIPE["lr"],
                      batch_size=RECIPE["batch_size"], epochs=epochs, seed=seed,
                      precision=precision)
    t0 = time.perf_counter()
    trainer.fit(Xtr, ytr)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "accuracy": model.score(Xte, yte)}


def _torch_tta(data, sizes, epochs, seed, autocast=False):
    torch = need("torch")
    Xtr, ytr, Xte, yte = data
    torch.manual_seed(seed)
    init = MLP(sizes, seed=seed, backend="numpy")
    net = _torch_net(torch, *sizes, init=list(zip(init.weights, init.biases)))
    optim = _torch_optimizer(torch, "adam", net.parameters())
    X, y = torch.from_numpy(Xtr), torch.from_numpy(ytr)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    torch_epochs(torch, net, optim, X, y, epochs, RECIPE["batch_size"], gen, autocast)
    seconds = time.perf_counter() - t0
    with torch.inference_mode():
        pred = net(torch.from_numpy(Xte)).argmax(dim=1).numpy()
    return {"seconds": seconds, "accuracy": float(np.mean(pred == yte))}
