"""`fastmlp train` and `fastmlp predict` on the user's own table (--csv, --npz, --parquet).

Design: the table is read and checked by tabular.py; the task is the --task option or
inferred from the target.  Training standardises the features (and a regression target) on
the training rows, trains an MLP with a softmax output (classify) or an identity output
(regress) through the same Trainer options as the built-in datasets, then folds the scaling
into the first layer (and the output layer), so the saved model takes the raw features and
gives raw targets: it predicts, exports to ONNX and loads in Python like any other.  With
--standardize the model keeps the features' statistics itself (MLP(standardize=True)) and
only a regression target's scaling is folded.  The column names, task and class labels go
to `<model>.json` (tabular.save_columns), which `predict` reads to build the same features
from a new table and to name its predictions.
"""
import json
import sys

import numpy as np

from . import tabular as T
from .cli import _dropout, _fit, _say, _split_validation, _trainer
from .model import r2_score


def _standardize(X):
    """(mean, scale) of the columns of X; a constant column gets scale 1."""
    mean = X.mean(axis=0, dtype=np.float64)
    scale = X.std(axis=0, dtype=np.float64)
    return mean, np.where(scale > 0, scale, 1.0)


def _fold_scaling(model, x_mean, x_scale, y_mean=None, y_scale=None):
    """Make `model`, trained on (X - x_mean) / x_scale (and targets (y - y_mean) / y_scale),
    take X and give y directly: W0 /= x_scale (by rows), b0 -= (x_mean / x_scale)·W0;
    W_last *= y_scale, b_last = b_last·y_scale + y_mean.  x_mean None: X is left alone."""
    if x_mean is not None:
        W0 = model.weights[0].astype(np.float64) / x_scale[:, None]
        model.biases[0][...] = model.biases[0] - x_mean @ W0
        model.weights[0][...] = W0
    if y_mean is not None:
        model.weights[-1][...] = model.weights[-1] * y_scale
        model.biases[-1][...] = model.biases[-1] * y_scale + y_mean


def _classes_json(classes):
    return [c.item() if hasattr(c, "item") else str(c) for c in classes]


def train_table(a, fmt, path):
    """The train command on a table: returns the exit code."""
    import fastmlp
    table = T.read_table(path, fmt)
    name = a.target or ("y" if fmt == "npz" else None)
    if name is None:
        raise ValueError(f"--{fmt} needs --target COLUMN: the column to predict")
    task = a.task if a.task != "auto" else T.infer_task(table.column(name, "--target"))
    y, classes = T.target(table, name, task)
    if a.id is not None:
        table.column(a.id, "--id", typed=False)
    for col in a.drop:
        table.column(col, "--drop", typed=False)
    names = [c for c in table.columns if c not in (name, a.id, *a.drop)]
    X = T.features(table, names, np.float64)
    stratify = task == "classify" and np.bincount(y).min() >= 2
    Xt, yt, Xv, yv = _split_validation(X, y, a.validation_fraction, a.seed, stratify)
    x_mean, x_scale = (None, None) if a.standardize else _standardize(Xt)
    y_mean = y_scale = None
    if task == "regress":
        y_mean, y_scale = _standardize(yt)
    prep = [None if Z is None else (Z if x_mean is None else (Z - x_mean) / x_scale)
            .astype(a.dtype) for Z in (Xt, Xv)]
    targets = [yt, yv] if task == "classify" else \
        [None if t is None else ((t - y_mean) / y_scale).astype(a.dtype) for t in (yt, yv)]
    sizes = (X.shape[1], *a.hidden, len(classes) if task == "classify" else 1)
    model = fastmlp.MLP(sizes, dtype=a.dtype, seed=a.seed, backend=a.backend,
                        output="softmax" if task == "classify" else "identity",
                        dropout=_dropout(a),
                        standardize=a.standardize, batch_norm=a.batch_norm)
    trainer, lr = _trainer(a, model, Xv is not None)
    say = _say(a)
    say(f"fastmlp {fastmlp.__version__}: {path} {Xt.shape[0]} train / "
        f"{0 if Xv is None else Xv.shape[0]} validation rows, {X.shape[1]} features, "
        f"{task} {name!r}" + (f" ({len(classes)} classes)" if task == "classify" else "")
        + f", layers {sizes}, {a.optimizer} lr={lr:g}, backend {model.backend.name}")
    interrupted, seconds = _fit(trainer, prep[0], targets[0], prep[1], targets[1], say)
    _fold_scaling(model, x_mean, x_scale, y_mean, y_scale)
    metric = "accuracy" if task == "classify" else "R²"
    scores = {"train": model.score(Xt, yt)}
    if Xv is not None:
        scores["validation"] = model.score(Xv, yv)
    say(", ".join(f"{k} {metric}: {v:.4f}" for k, v in scores.items())
        + f"  ({len(trainer.history)} epochs, {seconds:.1f} s)")
    info = {"format": "fastmlp columns 1", "source": path, "features": names, "target": name,
            "task": task, "id": a.id,
            "classes": None if classes is None else _classes_json(classes)}
    if a.save:
        model.save(a.save)
        T.save_columns(a.save, info)
        say(f"saved model to {a.save} (columns in {T.columns_path(a.save)})")
    if a.plot and len(trainer.history):
        trainer.history.plot(a.plot)
        say(f"saved curves to {a.plot}")
    if a.json:
        print(json.dumps({**info, "layer_sizes": list(sizes), "backend": model.backend.name,
                          "dtype": a.dtype, "optimizer": a.optimizer, "lr": lr,
                          "epochs_run": len(trainer.history), "interrupted": interrupted,
                          "metric": metric, "scores": scores, "train_seconds": seconds,
                          "history": trainer.history.as_dict(), "saved": a.save,
                          "plot": a.plot}))
    return 130 if interrupted else 0


def predict_table(a, fmt, path):
    """The predict command on a table: a CSV of ids and predictions; returns the exit code."""
    import fastmlp
    info = T.load_columns(a.model)
    model = fastmlp.MLP.load(a.model, backend=a.backend)
    if info is None:
        raise ValueError(f"{a.model} has no column description ({T.columns_path(a.model)}): "
                         f"predict on tables needs a model trained with --csv, --npz or "
                         f"--parquet")
    if len(info["features"]) != model.n_features:
        raise ValueError(f"{T.columns_path(a.model)} names {len(info['features'])} features, "
                         f"the model takes {model.n_features}")
    if a.json and not a.out:
        raise ValueError("--json with table data needs --out (the predictions go there)")
    table = T.read_table(path, fmt)
    X = T.features(table, info["features"], model.dtype)
    id_name = a.id or (info.get("id") if info.get("id") in table.columns else None)
    ids = T.row_ids(table, id_name)
    classify = info["task"] == "classify"
    if classify:
        P = model.predict_proba(X)
        labels = np.array(info["classes"], dtype=object)[np.argmax(P, axis=1)]
    else:
        P, values = None, model.predict(X)
        labels = [f"{v:.9g}" for v in values[:, 0]]
    target, score = info["target"], None
    if target in table.columns and target != id_name:   # the answers are there: score them
        try:
            y, _ = T.target(table, target, "regress" if not classify else "classify")
            if classify:
                truth = [str(v) for v in table.column(target, "--target")]
                score = float(np.mean(np.array(truth) == labels.astype(str)))
            else:
                score = r2_score(y, values)
        except T.TableError:
            score = None   # not a complete answer column: predict without a score
    T.write_predictions(a.out, id_name or "row", ids, target, labels,
                        P if a.proba and classify else None, info.get("classes"))
    metric = "accuracy" if classify else "R²"
    if a.json:
        print(json.dumps({"model": a.model, "data": path, "n": table.n, "out": a.out,
                          "task": info["task"], "metric": metric, "score": score}))
        return 0
    note = print if a.out else (lambda *x: print(*x, file=sys.stderr))
    if score is not None:
        note(f"{metric}: {score:.4f} on {table.n} rows of {path} (column {target!r})")
    if a.out:
        note(f"wrote {table.n} predictions to {a.out}")
    return 0
