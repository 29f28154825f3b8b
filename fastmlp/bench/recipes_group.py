"""Recipes: `fastmlp train`'s recipes (fastmlp/recipes.py) run by the command itself, beside
the same recipe written in PyTorch in the same run, and the seed network.

Design: the fastmlp side is the CLI (`fastmlp train --dataset D --json --quiet`, called in
this process), so the figures are the command's own: its train_seconds (Trainer.fit, input
standardisation included) and test accuracy.  The PyTorch side is the loop a PyTorch user
writes for the same recipe: the same training rows (the CLI's validation split), the same
initial weights (fastmlp's for seed 0), standardisation by the training set's statistics
inside the timed region, nn.Dropout, Adam under OneCycleLR (cycle_momentum=False: fastmlp's
OneCycle keeps beta1 fixed), CrossEntropyLoss(label_smoothing=), the recipe's batch size,
fp32 or bf16 autocast.  The seed network is the CIFAR-10 report's 2000-700 with batch
normalisation and dropout 0.4 on Fashion-MNIST, trained for a few epochs with each (PyTorch:
Linear without bias, BatchNorm1d, ReLU, Dropout per hidden layer; fastmlp's bias is BN's
shift, so the two networks have the same parameters).
"""
import contextlib
import io
import json
import math
import time

import numpy as np

from .. import recipes
from ..model import MLP
from ..schedules import OneCycle
from ..trainer import Trainer
from .cases import COMPILED, Unavailable
from .peers import need, torch_epochs
from .tta import dataset

# the targets of the recipes (issue 15): Fashion-MNIST with one hidden layer
FASHION_ACC, FASHION_FP32_S, FASHION_BF16_S, VS_TORCH = 0.900, 5.0, 3.0, 0.4
DIGITS_ACC = 0.98
SEED_NET = dict(sizes=(784, 2000, 700, 10), dropout=0.4, batch_norm=True, lr=1e-3,
                batch_size=128, epochs=2)


def cli_run(name, backend, precision=None, extra=()):
    """`fastmlp train --dataset name --backend backend [--precision bf16] --json --quiet`
    (plus `extra` options), run in this process: {"seconds": its train_seconds,
    "accuracy": its test accuracy}."""
    from ..cli import main
    argv = ["train", "--dataset", name, "--backend", backend, "--json", "--quiet", *extra]
    if precision:
        argv += ["--precision", precision]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    if code != 0:
        raise Unavailable(err.getvalue().strip().splitlines()[-1] if err.getvalue()
                          else f"exit code {code}")
    summary = json.loads(out.getvalue())
    return {"seconds": summary["train_seconds"], "accuracy": summary["test_accuracy"]}


def _torch_mlp(torch, sizes, dropout, init, batch_norm=False):
    """nn.Sequential of Linear, ReLU, Dropout per hidden layer (batch_norm: Linear without
    bias, BatchNorm1d whose shift starts at fastmlp's bias, ReLU, Dropout), then the output
    Linear, with fastmlp's initial weights `init` [(W (fan_in, fan_out), b)]."""
    layers, shifts = [], []
    for i, (d, h) in enumerate(zip(sizes[:-1], sizes[1:])):
        hidden = i < len(sizes) - 2
        layers.append(torch.nn.Linear(d, h, bias=not (hidden and batch_norm)))
        if hidden:
            if batch_norm:
                layers.append(torch.nn.BatchNorm1d(h))
                shifts.append(layers[-1])
            layers += [torch.nn.ReLU(), torch.nn.Dropout(dropout[i])]
    net = torch.nn.Sequential(*layers)
    with torch.no_grad():
        for layer, (W, b) in zip([m for m in net if isinstance(m, torch.nn.Linear)], init):
            layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(W.T)))
            if layer.bias is not None:
                layer.bias.copy_(torch.from_numpy(b))
        for bn, (_, b) in zip(shifts, init):
            bn.bias.copy_(torch.from_numpy(b))
    return net


def torch_train(Xt, yt, Xte, yte, sizes, r, seed=0, autocast=False):
    """The recipe `r` (a recipes.settings dict) in PyTorch on training rows Xt, yt; returns
    {"seconds", "accuracy"} (test accuracy on Xte, yte, in eval mode)."""
    torch = need("torch")
    torch.manual_seed(seed)
    dropout = tuple(r["dropout"]) * (len(sizes) - 2) if len(r["dropout"]) == 1 \
        else tuple(r["dropout"])
    init = MLP(sizes, seed=seed, backend="numpy")
    net = _torch_mlp(torch, sizes, dropout, list(zip(init.weights, init.biases)),
                     r.get("batch_norm", False))
    optim = torch.optim.Adam(net.parameters(), lr=r["lr"])
    bs, epochs, n = r["batch_size"], r["epochs"], Xt.shape[0]
    total = epochs * math.ceil(n / bs)
    sched = torch.optim.lr_scheduler.OneCycleLR(optim, max_lr=r["lr"], total_steps=total,
                                                cycle_momentum=False) \
        if r["lr_schedule"] == "onecycle" else None
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=r["label_smoothing"])
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    mean = scale = None
    if r["standardize"]:
        mean = Xt.mean(axis=0, dtype=np.float64)
        scale = Xt.std(axis=0, dtype=np.float64)
        scale[scale < 1e-12] = 1.0
        Xs = ((Xt - mean) / scale).astype(np.float32)
    else:
        Xs = Xt
    X, y = torch.from_numpy(Xs), torch.from_numpy(yt.astype(np.int64))
    net.train()
    torch_epochs(torch, net, optim, X, y, epochs, bs, gen, autocast, loss_fn, sched)
    seconds = time.perf_counter() - t0
    net.eval()
    Xe = Xte if mean is None else ((Xte - mean) / scale).astype(np.float32)
    with torch.inference_mode():
        pred = net(torch.from_numpy(Xe)).argmax(dim=1).numpy()
    return {"seconds": seconds, "accuracy": float(np.mean(pred == yte))}


def torch_recipe(name, autocast=False, seed=0):
    """The CLI's recipe for `name`, in PyTorch, on the CLI's training rows."""
    from ..cli import _split_validation
    _, r = recipes.settings(name)
    Xtr, ytr, Xte, yte = dataset(name)
    Xt, yt, _, _ = _split_validation(Xtr, ytr, r["validation_fraction"], seed)
    sizes = (Xtr.shape[1], *r["hidden"], int(max(ytr.max(), yte.max())) + 1)
    return torch_train(Xt, yt, Xte, yte, sizes, r, seed, autocast)


def seed_net(contender, epochs, precision=None):
    """The seed network (SEED_NET) on Fashion-MNIST: fastmlp's Trainer (contender a
    backend) or PyTorch ("torch"); standardised inputs, batch normalisation, Adam under
    one-cycle."""
    Xtr, ytr, Xte, yte = dataset("fashion-mnist")
    c = SEED_NET
    r = dict(recipes.BASE, lr=c["lr"], batch_size=c["batch_size"], epochs=epochs,
             lr_schedule="onecycle", dropout=(c["dropout"],), standardize=True,
             batch_norm=c["batch_norm"])
    if contender == "torch":
        return torch_train(Xtr, ytr, Xte, yte, c["sizes"], r, 0, precision == "bf16")
    model = MLP(c["sizes"], seed=0, backend=contender, dropout=c["dropout"], standardize=True,
                batch_norm=c["batch_norm"])
    tr = Trainer(model, optimizer="adam", lr=c["lr"], batch_size=c["batch_size"],
                 epochs=epochs, lr_schedule=OneCycle(), seed=0, precision=precision)
    t0 = time.perf_counter()
    tr.fit(Xtr, ytr)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "accuracy": model.score(Xte, yte)}


def _attempt(f, *args, **kw):
    try:
        return f(*args, **kw)
    except Unavailable as exc:
        return {"skipped": str(exc)}


def run_recipes(a, say):
    """{"recipes": [{"dataset", "recipe", "runs": {contender: result}}], "seed_net": {...}}:
    each recipe with fastmlp's compiled backends (fp32 and bf16) and PyTorch (fp32 and bf16
    autocast); the seed network unless --quick."""
    out = {"recipes": [], "seed_net": {}}
    names = ("digits",) if a.quick else ("fashion-mnist", "digits")
    for name in names:
        try:
            dataset(name)
        except Unavailable as exc:
            out["recipes"].append({"dataset": name, "skipped": str(exc)})
            continue
        runs = {}
        for prec in (None, "bf16"):
            tag = "bf16" if prec else "fp32"
            for b in COMPILED:
                say(f"  recipe {name}: fastmlp {b} {tag}")
                # warm-up: one epoch of the same command compiles (Numba), loads (oneDNN)
                # and first touches the memory the run uses (on this VM the first touch of
                # a new peak of memory cost ~3 ms/MB, 0.5-0.8 s of a Fashion-MNIST fit)
                _attempt(cli_run, name, b, prec, ("--epochs", "1"))
                time.sleep(a.settle)
                runs[f"{b} {tag}"] = _attempt(cli_run, name, b, prec)
            say(f"  recipe {name}: torch {tag}")
            time.sleep(a.settle)
            runs[f"torch {tag}"] = _attempt(torch_recipe, name, autocast=prec == "bf16")
        out["recipes"].append({"dataset": name, "recipe": recipes.settings(name)[1],
                               "runs": runs})
    if not a.quick:
        try:
            dataset("fashion-mnist")
        except Unavailable as exc:
            out["seed_net"] = {"skipped": str(exc)}
        else:
            for prec in (None, "bf16"):
                tag = "bf16" if prec else "fp32"
                for who in COMPILED[:1] + ("torch",):
                    say(f"  seed network: {who} {tag}")
                    time.sleep(a.settle)
                    out["seed_net"][f"{who} {tag}"] = _attempt(seed_net, who,
                                                               SEED_NET["epochs"], prec)
    return out


def evaluate(res):
    """PASS/FAIL/SKIP lines for the recipe targets."""
    out = []

    def line(ok, text):
        out.append({"status": "PASS" if ok else "FAIL", "line": f"{'PASS' if ok else 'FAIL'}  "
                    + text})
    for d in res.get("recipes", []):
        if "skipped" in d:
            out.append({"status": "SKIP", "line": f"SKIP  recipe {d['dataset']}: "
                        f"{d['skipped']}"})
            continue
        runs = d["runs"]
        for key, r in runs.items():
            if key.startswith("torch") or "seconds" not in r:
                continue
            tag = key.split()[1]
            if d["dataset"] == "digits":
                if tag == "fp32":
                    line(r["accuracy"] >= DIGITS_ACC, f"{key:<13} digits default: test "
                         f"accuracy {r['accuracy']:.4f} (target ≥ {DIGITS_ACC})")
                continue
            limit = FASHION_FP32_S if tag == "fp32" else FASHION_BF16_S
            line(r["accuracy"] >= FASHION_ACC, f"{key:<13} Fashion-MNIST recipe: test "
                 f"accuracy {r['accuracy']:.4f} (target ≥ {FASHION_ACC})")
            line(r["seconds"] <= limit, f"{key:<13} Fashion-MNIST recipe: "
                 f"{r['seconds']:.2f} s training (target ≤ {limit:g} s)")
            t = runs.get(f"torch {tag}", {})
            if "seconds" in t:
                q = r["seconds"] / t["seconds"]
                line(q <= VS_TORCH and r["accuracy"] >= t["accuracy"],
                     f"{key:<13} Fashion-MNIST recipe: {q:.2f}× PyTorch's time ({tag}), "
                     f"accuracy {r['accuracy']:.4f} vs {t['accuracy']:.4f} (target ≤ "
                     f"{VS_TORCH}× at equal or better accuracy)")
    return out


def format_recipes(res):
    lines = [f"{'recipe':<15}{'contender':<14}{'seconds':>9}{'test acc':>10}{'vs torch':>10}"]
    for d in res.get("recipes", []):
        if "skipped" in d:
            lines.append(f"{d['dataset']:<15}skipped: {d['skipped']}")
            continue
        for key, r in d["runs"].items():
            if "skipped" in r:
                lines.append(f"{d['dataset']:<15}{key:<14}skipped: {r['skipped']}")
                continue
            t = d["runs"].get(f"torch {key.split()[1]}", {})
            vs = f"{t['seconds'] / r['seconds']:.2f}×" if "seconds" in t and \
                not key.startswith("torch") else ""
            lines.append(f"{d['dataset']:<15}{key:<14}{r['seconds']:9.2f}{r['accuracy']:10.4f}"
                         f"{vs:>10}")
    sn = res.get("seed_net", {})
    if sn:
        c = SEED_NET
        lines.append(f"seed network {'-'.join(map(str, c['sizes']))}, dropout {c['dropout']}, "
                     f"{c['epochs']} epochs, Adam one-cycle lr {c['lr']:g}, batch "
                     f"{c['batch_size']}" + (", batch normalisation:" if c["batch_norm"]
                                             else ":"))
        if "skipped" in sn:
            lines.append(f"  skipped: {sn['skipped']}")
        for who, r in sn.items() if "skipped" not in sn else ():
            if "skipped" in r:
                lines.append(f"  {who:<12}skipped: {r['skipped']}")
                continue
            t = sn.get(f"torch {who.split()[-1]}", {})
            vs = f"{t['seconds'] / r['seconds']:.2f}×" if "seconds" in t and \
                not who.startswith("torch") else ""
            lines.append(f"  {who:<26}{r['seconds']:9.2f}{r['accuracy']:10.4f}{vs:>10}")
    return "\n".join(lines)
