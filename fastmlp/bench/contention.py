"""Trainings at once: k processes started together, each timing one digits-size fit.

Design: a fit is scikit-learn's default `MLPClassifier` problem at digits size -- the 1347
training rows x 64 features of fastmlp.datasets.load_digits, 100 hidden units, Adam, batch
200, `epochs` epochs (no early stop) -- run by fastmlp's MLPClassifier, scikit-learn's, or the
same loop in PyTorch.  Each worker is a fresh process (`python -m fastmlp.bench.contention
WHO EPOCHS`) that imports, builds its data and trains once untimed (JIT, caches), prints
"ready", waits for "go" on stdin, then times one fit from scratch and prints its seconds.
The parent starts k workers of one contender, waits until all are ready and releases them at
once; the ratio of a contender at k is the median of its k times over its solo time (k = 1)
measured in the same run.  Every worker inherits this process's environment (BLAS
threads, OPENBLAS_CORETYPE) and nothing is pinned: what a user running k trainings gets.
"""
import json
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np

CONTENDERS = ("fastmlp", "sklearn", "torch", "fastmlp-wide")
CASE = dict(hidden=100, batch_size=200, epochs=200)
# fastmlp-wide: a Fashion-MNIST-size net whose step GEMMs go to fastmlp's threads (4096 random
# rows x 784, 256 hidden units, batch 128): the digits fit's GEMMs are all below the crossover
WIDE = dict(rows=4096, features=784, hidden=256, batch_size=128, epochs_per_200=10)
# fastmlp's targets: k trainings at once each take at most LIMITS[k] x their solo time; a solo
# digits fit is at least FIT_SPEEDUP x faster than scikit-learn's
LIMITS = {2: 2.5, 4: 5.0}
FIT_SPEEDUP = 3.0


def _data(wide=False):
    if wide:
        rng = np.random.default_rng(0)
        X = rng.random((WIDE["rows"], WIDE["features"]), dtype=np.float32)
        return X, np.argmax(X @ rng.standard_normal((WIDE["features"], 10)), axis=1)
    from ..datasets import load_digits
    X, y = load_digits()[:2]
    return np.ascontiguousarray(X, np.float32), np.asarray(y)


def fit_closure(who, epochs, seed=0):
    """A closure training the digits problem from scratch with `who`; its training accuracy
    after the fit is returned by the closure (a check that it trained)."""
    wide = who == "fastmlp-wide"
    X, y = _data(wide)
    kw = dict(hidden_layer_sizes=(CASE["hidden"],), batch_size=CASE["batch_size"],
              max_iter=epochs, tol=0.0, n_iter_no_change=np.inf, random_state=seed)
    if wide:   # about as long as the digits fit
        kw.update(hidden_layer_sizes=(WIDE["hidden"],), batch_size=WIDE["batch_size"],
                  max_iter=max(1, epochs * WIDE["epochs_per_200"] // CASE["epochs"]))
    if who in ("fastmlp", "sklearn", "fastmlp-wide"):
        if who != "sklearn":
            from ..estimators import MLPClassifier
        else:
            from sklearn.neural_network import MLPClassifier

        def fit():
            clf = MLPClassifier(**kw)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")   # ConvergenceWarning: fixed epochs, on purpose
                clf.fit(X, y)
            return float(clf.score(X, y))
        return fit
    if who != "torch":
        raise ValueError(f"unknown contender {who!r}; one of {CONTENDERS}")
    import torch

    from .peers import _torch_net, torch_epochs
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y.astype(np.int64))

    def fit():
        torch.manual_seed(seed)
        net = _torch_net(torch, X.shape[1], CASE["hidden"], 10)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-4)   # sklearn's alpha
        torch_epochs(torch, net, opt, Xt, yt, epochs, CASE["batch_size"])
        with torch.inference_mode():
            return float((net(Xt).argmax(1) == yt).float().mean())
    return fit


def _worker(who, epochs):
    fit = fit_closure(who, epochs)
    fit()
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return
    t0 = time.perf_counter()
    acc = fit()
    print(json.dumps({"seconds": time.perf_counter() - t0, "accuracy": acc}), flush=True)


def available(who):
    """None if `who` can run here, else the reason it cannot."""
    try:
        __import__({"fastmlp": "fastmlp", "sklearn": "sklearn", "torch": "torch",
                    "fastmlp-wide": "fastmlp"}[who])
    except ImportError as exc:
        return f"{who} is not installed ({exc})"
    return None


def run_together(who, k, epochs, timeout=600.0):
    """Start k workers of `who`, release them together; their [{"seconds", "accuracy"}]."""
    cmd = [sys.executable, "-m", "fastmlp.bench.contention", who, str(epochs)]
    # run from the temporary directory: `-m` puts the working directory first on sys.path,
    # and a source checkout's fastmlp/ (no compiled extensions) would shadow the installed one
    procs = [subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              cwd=tempfile.gettempdir()) for _ in range(k)]
    try:
        for p in procs:
            line = p.stdout.readline().strip()
            if line != "ready":
                raise RuntimeError(f"{who} worker did not start (said {line!r})")
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        out = []
        deadline = time.monotonic() + timeout
        for p in procs:
            left = max(1.0, deadline - time.monotonic())
            stdout, _ = p.communicate(timeout=left)
            out.append(json.loads(stdout.strip().splitlines()[-1]))
        return out
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def contention(whos=CONTENDERS, ks=(2, 4), epochs=CASE["epochs"], solo_runs=3, say=print):
    """{who: {"solo": [s...], k: [s...] for k in ks, "ratio": {k: median(k times) / median
    solo}, "accuracy": min accuracy}} or {who: {"skipped": reason}}.  The solo runs of all
    contenders come first, alternating contenders, then each k."""
    res, live = {}, []
    for who in whos:
        why = available(who)
        if why:
            res[who] = {"skipped": why}
        else:
            res[who] = {"solo": [], "accuracy": 1.0}
            live.append(who)
    for _ in range(solo_runs):
        for who in live:
            r = run_together(who, 1, epochs)[0]
            res[who]["solo"].append(r["seconds"])
            res[who]["accuracy"] = min(res[who]["accuracy"], r["accuracy"])
    for k in ks:
        for who in live:
            say(f"  contention: {k} x {who} at once")
            rs = run_together(who, k, epochs)
            res[who][k] = [r["seconds"] for r in rs]
            res[who]["accuracy"] = min([res[who]["accuracy"]] + [r["accuracy"] for r in rs])
    for who in live:
        solo = float(np.median(res[who]["solo"]))
        res[who]["ratio"] = {k: float(np.median(res[who][k])) / solo for k in ks}
    return res


def evaluate(res):
    """Target dicts (status PASS/FAIL/SKIP, line) for fastmlp's contention ratios and its solo
    fit against scikit-learn's."""
    out, ours = [], res.get("fastmlp", {})
    for who in ("fastmlp", "fastmlp-wide"):
        for k, limit in LIMITS.items():
            r = res.get(who, {})
            if "ratio" not in r or k not in r["ratio"]:
                out.append({"status": "SKIP", "line": f"SKIP  {k} {who} fits at once: not run"})
                continue
            v = r["ratio"][k]
            status = "PASS" if v <= limit else "FAIL"
            out.append({"who": who, "k": k, "value": v, "limit": limit, "status": status,
                        "line": f"{status}  {k} {who} fits at once: {v:.2f}× solo each "
                                f"(target ≤ {limit:.1f})"})
    theirs = res.get("sklearn", {})
    if "solo" in ours and "solo" in theirs:
        v = float(np.median(theirs["solo"]) / np.median(ours["solo"]))
        status = "PASS" if v >= FIT_SPEEDUP else "FAIL"
        out.append({"value": v, "limit": FIT_SPEEDUP, "status": status,
                    "line": f"{status}  digits MLPClassifier.fit {v:.2f}× faster than "
                            f"scikit-learn's (target ≥ {FIT_SPEEDUP:.0f})"})
    return out


def format_contention(res):
    ks = sorted({k for r in res.values() for k in r.get("ratio", {})})
    lines = [f"{'contender':<13}{'solo s':>8}" + "".join(f"{f'{k} at once s':>14}{'× solo':>8}"
                                                        for k in ks) + f"{'accuracy':>10}"]
    for who, r in res.items():
        if "skipped" in r:
            lines.append(f"{who:<13}skipped: {r['skipped']}")
            continue
        row = f"{who:<13}{np.median(r['solo']):8.3f}"
        row += "".join(f"{np.median(r[k]):14.3f}{r['ratio'][k]:7.2f}×" for k in ks)
        lines.append(row + f"{r['accuracy']:10.4f}")
    return "\n".join(lines)


if __name__ == "__main__":
    _worker(sys.argv[1], int(sys.argv[2]))
