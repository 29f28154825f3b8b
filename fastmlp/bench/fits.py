"""The whole-fit groups of `fastmlp bench`: time to accuracy, the sparse problem against
scikit-learn, and MLPClassifier.fit against Trainer.fit (each run_* returns JSON-ready rows,
each format_* their lines)."""
import time

import numpy as np

from . import cases as B
from . import tta
from .cases import COMPILED
from .timing import interleave, ratio

# --quick runs the whole-fit groups smaller (the benchmark smoke test runs every group; these
# two were 110 of its ~230 s); the report's headers print the case that ran
QUICK_SPARSE = dict(rows=B.SPARSE_CASE["rows"] // 5, epochs=1)
QUICK_ESTIMATOR_EPOCHS = 100   # a fit's fixed ~2.5 ms validation cost: ~2% of it


def run_tta(a, say):
    plan = [("digits", tta.TTA_EPOCHS["digits"])]
    if not a.quick:
        plan.insert(0, ("fashion-mnist", tta.TTA_EPOCHS["fashion-mnist"]))
    out = []
    for name, epochs in plan:
        try:
            data = tta.dataset(name)
        except B.Unavailable as exc:
            out.append({"dataset": name, "skipped": str(exc)})
            continue
        runs = {}
        for c in COMPILED + ("torch", "sklearn"):
            say(f"  time to accuracy {name} {epochs} epochs: {c}")
            time.sleep(a.settle)
            try:
                runs[c] = tta.time_to_accuracy(c, data, epochs)
            except B.Unavailable as exc:
                runs[c] = {"skipped": str(exc)}
        out.append({"dataset": name, "epochs": epochs, "n_train": int(data[0].shape[0]),
                    "recipe": dict(tta.RECIPE), "runs": runs})
    return out


def run_sparse(a, say):
    """fastmlp.MLPClassifier against scikit-learn's on a TF-IDF-like sparse problem
    (cases.SPARSE_CASE; --quick: QUICK_SPARSE, a fifth of its rows for one epoch),
    interleaved fits; seconds per epoch and the speed-up."""
    out, case = [], QUICK_SPARSE if a.quick else {}
    for b in COMPILED:
        say(f"  sparse input {b}")
        try:
            fits = B.sparse_fits(b, **case)
        except B.Unavailable as exc:
            out.append({"backend": b, "skipped": str(exc)})
            continue
        epochs = fits["epochs"]
        best = interleave([[("fastmlp", fits["fastmlp"]), ("sklearn", fits["sklearn"])]],
                          2 if a.quick else 3, a.settle, turn_seconds=0.0)
        X, y = fits["data"]
        out.append({"backend": b, "epochs": epochs, "nnz": fits["nnz"], "shape": list(X.shape),
                    "s_per_epoch": {k: float(np.median(v)) / epochs for k, v in best.items()},
                    "x_sklearn": ratio(best, "sklearn", "fastmlp"),
                    "train_accuracy": float(fits["model"].score(X, y))})
    return out


def format_sparse(rows):
    lines = []
    for r in rows:
        if "skipped" in r:
            lines.append(f"{r['backend']:<7}skipped: {r['skipped']}")
            continue
        q1, v, q3 = r["x_sklearn"]
        t = r["s_per_epoch"]
        lines.append(f"{r['backend']:<7}fastmlp {t['fastmlp']:.2f} s/epoch, sklearn "
                     f"{t['sklearn']:.2f} s/epoch: {v:.2f}× faster [{q1:.2f}-{q3:.2f}] "
                     f"(train accuracy {r['train_accuracy']:.3f})")
    return "\n".join(lines)


ESTIMATOR_LIMIT = 1.05   # MLPClassifier.fit per step <= 1.05 x Trainer.fit per step


def run_estimator(a, say):
    """MLPClassifier.fit against Trainer.fit on the same data, net and optimizer (digits,
    64-100-10, Adam, batch 200, 200 epochs; --quick: QUICK_ESTIMATOR_EPOCHS), interleaved;
    per-step times and their ratio."""
    out = []
    epochs = QUICK_ESTIMATOR_EPOCHS if a.quick else B.ESTIMATOR_CASE["epochs"]
    for b in COMPILED:
        say(f"  estimator overhead {b}")
        fits = B.estimator_vs_trainer(b, epochs=epochs)
        steps = fits.pop("steps")
        rounds = 2 if a.quick else max(3, a.repeat // 3)
        best = interleave([list(fits.items())], rounds, a.settle, turn_seconds=0.0)
        q1, v, q3 = ratio(best, "MLPClassifier.fit", "Trainer.fit")
        out.append({"backend": b, "steps": steps, "epochs": epochs, "ratio": (q1, v, q3),
                    "us_per_step": {k: float(np.median(t)) / steps * 1e6
                                    for k, t in best.items()},
                    "status": "PASS" if v <= ESTIMATOR_LIMIT else "FAIL"})
    return out


def format_estimator(est):
    lines = []
    for r in est:
        us = r["us_per_step"]
        q1, v, q3 = r["ratio"]
        lines.append(f"{r['status']}  {r['backend']:<7}MLPClassifier.fit {us['MLPClassifier.fit']:.1f} "
                     f"µs/step, Trainer.fit {us['Trainer.fit']:.1f} µs/step ({r['steps']} steps): "
                     f"{v:.3f}× [{q1:.2f}-{q3:.2f}] (target ≤ {ESTIMATOR_LIMIT:.2f})")
    return "\n".join(lines)


def format_tta(tta):
    lines = [f"{'dataset':<15}{'epochs':>6}  {'contender':<10}{'seconds':>9}{'test acc':>10}"
             f"{'vs torch':>10}{'vs sklearn':>11}"]
    for d in tta:
        head = f"{d['dataset']:<15}{d.get('epochs', ''):>6}  "
        for c, r in d.get("runs", {"": d}).items():
            if "skipped" in r:
                lines.append(f"{head}{c:<10}skipped: {r['skipped']}")
                continue
            vs = [f"{d['runs'][p]['seconds'] / r['seconds']:.2f}×"
                  if "seconds" in d["runs"].get(p, {}) else "" for p in ("torch", "sklearn")]
            lines.append(f"{head}{c:<10}{r['seconds']:9.2f}{r['accuracy']:10.4f}"
                         f"{vs[0]:>10}{vs[1]:>11}")
    return "\n".join(lines)
