"""The `fastmlp` command line: train, predict, info (and bench, see bench/).

Every user error (bad option, missing data, bad value) is one line on stderr and exit code 2.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

from . import recipes
from .recipes import RECIPE_CHOICES

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(EXIT_USAGE, f"fastmlp: error: {message} (see 'fastmlp {self._sub} --help')\n"
                  if getattr(self, "_sub", None) else f"fastmlp: error: {message}\n")


def _positive_int(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 1")
    return v


def _finite_float(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not np.isfinite(v) or v < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number >= 0")
    return v


def _positive_float(text):
    v = _finite_float(text)
    if v == 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
    return v


def _momentum(text):
    v = _finite_float(text)
    if v >= 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be in [0, 1)")
    return v


def _seed(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 0 <= v < 2 ** 32:
        raise argparse.ArgumentTypeError(f"{text!r} must be in [0, 2**32)")
    return v


def _check_writable(option, path):
    """Refuse an output path before training rather than lose the model after it."""
    if path is None:
        return
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{option} {path}: folder {folder} does not exist")
    if os.path.isdir(path):
        raise IsADirectoryError(f"{option} {path} is a directory")
    if not os.access(folder, os.W_OK):
        raise PermissionError(f"{option} {path}: folder {folder} is not writable")


def _table_options(p):
    g = p.add_mutually_exclusive_group()
    g.add_argument("--csv", metavar="PATH", help="a CSV file with a header row")
    g.add_argument("--npz", metavar="PATH", help="an .npz file with arrays X (and y)")
    g.add_argument("--parquet", metavar="PATH", help="a Parquet file (needs pandas, pyarrow)")
    p.add_argument("--id", metavar="COLUMN", help="the row-id column: not a feature, written "
                   "beside each prediction (default: row numbers)")


def _table_source(a):
    """(format, path) of --csv / --npz / --parquet, or None for a built-in dataset."""
    from fastmlp.tabular import FORMATS
    for fmt in FORMATS:
        if getattr(a, fmt, None):
            if a.dataset is not None:
                raise ValueError(f"give --dataset or --{fmt}, not both")
            return fmt, getattr(a, fmt)
    if a.id is not None or getattr(a, "target", None) is not None or getattr(a, "drop", None):
        raise ValueError("--target, --id and --drop need table data (--csv, --npz or "
                         "--parquet)")
    return None


def build_parser():
    p = _Parser(prog="fastmlp", description="Train and use ReLU MLPs on the CPU.")
    sub = p.add_subparsers(dest="command", parser_class=_Parser, metavar="COMMAND")
    sub.required = True

    t = sub.add_parser("train", help="train a model (default: the 8x8 digits)")
    t._sub = "train"
    t.add_argument("--dataset", default=None,
                   help="digits (default) | fashion-mnist | mnist | a folder of IDX files")
    _table_options(t)
    t.add_argument("--target", metavar="COLUMN",
                   help="the column to predict (--csv, --parquet; an .npz has y)")
    t.add_argument("--task", choices=("auto", "classify", "regress"), default="auto",
                   help="auto: integers and text classify, floats of many values regress")
    t.add_argument("--drop", nargs="+", default=[], metavar="COLUMN",
                   help="columns that are not features (besides --target and --id)")
    t.add_argument("--recipe", choices=RECIPE_CHOICES, default="auto",
                   help="auto (default): a built-in dataset's recipe (fastmlp/recipes.py: "
                        "digits, fashion-mnist), the plain defaults otherwise; none: the plain "
                        "defaults.  Options given here override the recipe's")
    t.add_argument("--hidden", type=_positive_int, nargs="+", default=None,
                   metavar="N", help="hidden layer sizes (plain default: 256)")
    t.add_argument("--dropout", type=_finite_float, nargs="+", default=None, metavar="P",
                   help="dropout on the hidden layers while training: one p, or one per "
                        "hidden layer (plain default 0)")
    t.add_argument("--label-smoothing", type=_finite_float, default=None, metavar="EPS",
                   help="train on targets (1 - EPS) onehot + EPS / classes (plain default 0)")
    t.add_argument("--optimizer", choices=("sgd", "adam"), default=None,
                   help="plain default adam")
    t.add_argument("--lr", type=_positive_float, default=None,
                   help="learning rate (default 1e-3 for adam, 0.05 for sgd)")
    t.add_argument("--momentum", type=_momentum, default=0.9, help="sgd momentum (0.9)")
    t.add_argument("--weight-decay", type=_finite_float, default=0.0,
                   help="L2 penalty: loss += wd * sum ||W||^2")
    t.add_argument("--lr-decay", type=_finite_float, default=1.0,
                   help="multiply the lr by this every epoch (e.g. 0.92; default 1 = constant)")
    t.add_argument("--lr-schedule", choices=("constant", "onecycle", "cosine"),
                   default=None,
                   help="per-step lr: onecycle warms up to --lr (the peak) over 30%% of the "
                        "steps, then anneals to --lr/2.5e5 (PyTorch's OneCycleLR); cosine "
                        "anneals from --lr towards 0 (plain default constant; not with "
                        "--lr-decay)")
    t.add_argument("--epochs", type=_positive_int, default=None, help="plain default 20")
    t.add_argument("--batch-size", type=_positive_int, default=None, help="plain default 128")
    t.add_argument("--backend", choices=("auto", "numpy", "numba", "cython"), default="auto")
    t.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    t.add_argument("--precision", choices=("full", "bf16"), default="full",
                   help="bf16: the training step's products in bfloat16, accumulated in "
                        "float32 (float32 models; pip install \"fastmlp[onednn]\")")
    t.add_argument("--standardize", action="store_true", default=None,
                   help="the model standardises its inputs with the training set's mean and "
                        "std (MLP(standardize=True); saved with the model)")
    t.add_argument("--batch-norm", action="store_true", default=None,
                   help="batch normalisation on every hidden layer (MLP(batch_norm=True): the "
                        "batch's statistics while training, running estimates at inference; "
                        "saved with the model)")
    t.add_argument("--seed", type=_seed, default=0)
    t.add_argument("--validation-fraction", type=_finite_float, default=None,
                   help="share of the training set held out for validation (plain default "
                        "0.1)")
    t.add_argument("--early-stopping", type=_positive_int, nargs="?", const=5, default=None,
                   metavar="PATIENCE", help="stop when validation loss stalls (patience 5)")
    t.add_argument("--save", metavar="PATH", help="write the trained model (.npz)")
    t.add_argument("--plot", metavar="PATH", help="loss/accuracy curves (PNG, PDF, ...)")
    t.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    t.add_argument("--quiet", action="store_true", help="no progress bars")

    pr = sub.add_parser("predict", help="evaluate a saved model on a dataset's test split")
    pr._sub = "predict"
    pr.add_argument("--model", required=True, metavar="PATH")
    pr.add_argument("--dataset", default=None, help="a built-in dataset's test split "
                    "(default digits), or one of:")
    _table_options(pr)
    pr.add_argument("--proba", action="store_true",
                    help="with table data: add one probability column per class")
    pr.add_argument("--backend", choices=("auto", "numpy", "numba", "cython"), default="auto")
    pr.add_argument("--out", metavar="PATH", help="write one predicted label per line; with "
                    "table data a CSV of id and prediction (default: on stdout)")
    pr.add_argument("--json", action="store_true")

    e = sub.add_parser("export", help="write a saved model as ONNX (needs the onnx extra)")
    e._sub = "export"
    e.add_argument("--model", required=True, metavar="PATH", help="a model saved by train")
    e.add_argument("--out", required=True, metavar="PATH", help="the .onnx file to write")
    e.add_argument("--dtype", choices=("float32", "float64"), default=None,
                   help="the graph's input and arithmetic (default: the model's)")

    i = sub.add_parser("info", help="version, backends, BLAS and threads")
    i._sub = "info"

    b = sub.add_parser("bench", help="run the benchmark report (see README, Performance)")
    b._sub = "bench"
    b.add_argument("args", nargs=argparse.REMAINDER, help="options passed to the report")
    return p


def _split_validation(X, y, fraction, seed, stratify=True):
    if fraction <= 0:
        return X, y, None, None
    if fraction >= 1:
        raise ValueError(f"--validation-fraction must be < 1, got {fraction}")
    from sklearn.model_selection import train_test_split
    Xt, Xv, yt, yv = train_test_split(X, y, test_size=fraction, random_state=seed,
                                      stratify=y if stratify else None)
    return Xt, yt, Xv, yv


def _say(a):
    """print, or print to stderr when stdout carries JSON."""
    return (lambda *x: print(*x, file=sys.stderr)) if a.json else print


def _trainer(a, model, validation):
    """(the Trainer the train options ask for, its lr); `validation`: is there a validation
    set (early stopping needs one)."""
    import fastmlp
    lr = a.lr if a.lr is not None else (1e-3 if a.optimizer == "adam" else 0.05)
    if a.lr_schedule == "onecycle":
        schedule = fastmlp.OneCycle()   # peak: lr
    elif a.lr_schedule == "cosine":
        schedule = fastmlp.Cosine()
    else:
        schedule = fastmlp.StepDecay(a.lr_decay) if a.lr_decay < 1 else None
    if a.early_stopping and not validation:
        raise ValueError("--early-stopping needs --validation-fraction > 0")
    es = fastmlp.EarlyStopping("val_loss", patience=a.early_stopping) \
        if a.early_stopping else None
    trainer = fastmlp.Trainer(
        model, optimizer=a.optimizer, lr=lr, momentum=a.momentum if a.optimizer == "sgd" else 0,
        weight_decay=a.weight_decay, batch_size=a.batch_size, epochs=a.epochs,
        lr_schedule=schedule, seed=a.seed, early_stopping=es, verbose=not a.quiet,
        precision=None if a.precision == "full" else a.precision,
        label_smoothing=a.label_smoothing)
    return trainer, lr


def _dropout(a):
    """MLP's dropout from --dropout: one p for every hidden layer, or one p per layer."""
    return a.dropout[0] if len(a.dropout) == 1 else a.dropout


def _fit(trainer, Xt, yt, Xv, yv, say):
    """trainer.fit; Ctrl-C keeps the model as it is.  Returns (interrupted, seconds)."""
    t0 = time.perf_counter()
    try:
        trainer.fit(Xt, yt, Xv, yv)
    except KeyboardInterrupt:
        say(f"interrupted after {len(trainer.history)} epochs; keeping the model as it is")
        return True, time.perf_counter() - t0
    return False, time.perf_counter() - t0


def cmd_train(a):
    import fastmlp
    from fastmlp.datasets import load_dataset

    if not 0 < a.lr_decay <= 1:
        raise ValueError(f"--lr-decay must be in (0, 1], got {a.lr_decay}")
    source = _table_source(a)
    if a.lr_decay < 1 and a.lr_schedule is None:
        a.lr_schedule = "constant"   # --lr-decay is the schedule, whatever the recipe's
    a.recipe_used, opts = recipes.settings(None if source else (a.dataset or "digits"),
                                           a.recipe, {k: getattr(a, k) for k in recipes.BASE})
    for k, v in opts.items():
        setattr(a, k, list(v) if isinstance(v, tuple) else v)
    if a.lr_decay < 1 and a.lr_schedule != "constant":
        raise ValueError(f"--lr-decay {a.lr_decay:g} and --lr-schedule {a.lr_schedule} both "
                         f"set the learning rate: give one")
    _check_writable("--save", a.save)
    _check_writable("--plot", a.plot)
    if source is not None:
        from fastmlp.cli_table import train_table
        return train_table(a, *source)
    a.dataset = a.dataset or "digits"
    if a.task != "auto":
        raise ValueError("--task needs table data (--csv, --npz or --parquet)")
    Xtr, ytr, Xte, yte = load_dataset(a.dataset)
    n_classes = int(max(ytr.max(), yte.max())) + 1
    Xt, yt, Xv, yv = _split_validation(Xtr, ytr, a.validation_fraction, a.seed)
    sizes = (Xtr.shape[1], *a.hidden, n_classes)
    model = fastmlp.MLP(sizes, dtype=a.dtype, seed=a.seed, backend=a.backend,
                        dropout=_dropout(a),
                        standardize=a.standardize, batch_norm=a.batch_norm)
    trainer, lr = _trainer(a, model, Xv is not None)
    say = _say(a)
    say(f"fastmlp {fastmlp.__version__}: {a.dataset} {Xt.shape[0]} train / "
        f"{0 if Xv is None else Xv.shape[0]} validation / {Xte.shape[0]} test, "
        f"layers {sizes}, {a.optimizer} lr={lr:g}, backend {model.backend.name}, {a.dtype}"
        + (f", {a.precision} products" if a.precision != "full" else "")
        + (", standardized inputs" if a.standardize else "")
        + (", batch norm" if a.batch_norm else "")
        + (f", recipe {a.recipe_used}" if a.recipe_used else ""))
    interrupted, seconds = _fit(trainer, Xt, yt, Xv, yv, say)
    hist = trainer.history
    acc = model.score(Xte, yte)
    say(f"test accuracy: {acc:.4f}  ({len(hist)} epochs, {seconds:.1f} s)")
    if a.save:
        model.save(a.save)
        say(f"saved model to {a.save}")
    if a.plot and len(hist):
        hist.plot(a.plot)
        say(f"saved curves to {a.plot}")
    if a.json:
        print(json.dumps({"dataset": a.dataset, "layer_sizes": list(sizes),
                          "backend": model.backend.name, "dtype": a.dtype,
                          "precision": a.precision, "standardize": a.standardize,
                          "batch_norm": a.batch_norm, "recipe": a.recipe_used,
                          "epochs": a.epochs,
                          "batch_size": a.batch_size, "hidden": list(a.hidden),
                          "dropout": list(a.dropout), "lr_schedule": a.lr_schedule,
                          "label_smoothing": a.label_smoothing,
                          "optimizer": a.optimizer, "lr": lr, "epochs_run": len(hist),
                          "interrupted": interrupted, "test_accuracy": acc,
                          "train_seconds": seconds, "history": hist.as_dict(),
                          "saved": a.save, "plot": a.plot}))
    return 130 if interrupted else 0


def cmd_predict(a):
    import fastmlp
    from fastmlp.datasets import load_dataset

    _check_writable("--out", a.out)
    source = _table_source(a)
    if source is not None:
        from fastmlp.cli_table import predict_table
        return predict_table(a, *source)
    a.dataset = a.dataset or "digits"
    model = fastmlp.MLP.load(a.model, backend=a.backend)
    _, _, X, y = load_dataset(a.dataset)
    if X.shape[1] != model.n_features:
        raise ValueError(f"the model expects {model.n_features} features, dataset "
                         f"{a.dataset!r} has {X.shape[1]}")
    pred = model.predict(X)
    acc = float(np.mean(pred == y))
    if a.out:
        np.savetxt(a.out, pred, fmt="%d")
    if a.json:
        print(json.dumps({"model": a.model, "dataset": a.dataset, "n": int(len(y)),
                          "accuracy": acc, "out": a.out}))
    else:
        print(f"accuracy: {acc:.4f} on {len(y)} test samples of {a.dataset}")
        if a.out:
            print(f"wrote {len(pred)} predictions to {a.out}")
    return 0


def cmd_export(a):
    import fastmlp
    _check_writable("--out", a.out)
    model = fastmlp.MLP.load(a.model, backend="numpy")
    model.to_onnx(a.out, dtype=a.dtype)
    print(f"wrote {a.out}: {model.layer_sizes} {model.activation}/{model.output}, "
          f"{a.dtype or model.dtype.name} input X")
    return 0


def cmd_info(a):
    import numba
    import scipy
    from threadpoolctl import threadpool_info

    import fastmlp
    print(f"fastmlp {fastmlp.__version__} ({os.path.dirname(fastmlp.__file__)})")
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, scipy {scipy.__version__}, "
          f"numba {numba.__version__}")
    print(f"backends: {', '.join(fastmlp.available_backends())} "
          f"(auto = {fastmlp.get_backend('auto').name})")
    print(f"cpus: {os.cpu_count()}, numba threads: {numba.config.NUMBA_NUM_THREADS}, "
          f"numba threading layer: {numba.config.THREADING_LAYER}")
    for pool in threadpool_info():
        print(f"threadpool: {pool.get('internal_api')} {pool.get('version')} "
              f"({pool.get('user_api')}, {pool.get('num_threads')} threads) "
              f"{os.path.basename(pool.get('filepath', ''))}")
    from fastmlp.backends import blas, onednn
    for name in blas.POOLS:
        p = blas._try(name)
        print(f"GEMM library: {p.describe() if p else name + ' (not installed)'}")
    cpu = onednn.cpu_bf16()
    print(f"CPU bf16 instructions: {', '.join(cpu) if cpu else 'none'}")
    try:
        engine = onednn.load()
    except ImportError as e:
        print(f"GEMM library: onednn (not available: {e})")
        precisions = "full (float32, float64)"
    else:
        print(f"GEMM library: {engine.describe()}")
        precisions = "full (float32, float64), bf16" + (
            "" if cpu else " (emulated by oneDNN on this CPU: correct, but slow)")
    auto = blas.auto_name()
    why = (f"oneDNN runs its {blas.AUTO_ONEDNN_ISA} kernels" if auto == "onednn" else
           f"oneDNN's sgemm is used by default only on its {blas.AUTO_ONEDNN_ISA} kernels")
    print(f"fused float32 step GEMM (gemm='auto'): {auto} ({why}; FASTMLP_GEMM or gemm= "
          f"picks one of {', '.join(blas.available_providers())})")
    print(f"precisions: {precisions}")
    return 0


def cmd_bench(a):
    from fastmlp.bench.report import main as bench_main
    return bench_main(a.args)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:  # the report parses its own options (REMAINDER rejects --quick)
        return cmd_bench(argparse.Namespace(args=argv[1:]))
    parser = build_parser()
    a = parser.parse_args(argv)
    try:
        return {"train": cmd_train, "predict": cmd_predict, "info": cmd_info,
                "export": cmd_export, "bench": cmd_bench}[a.command](a)
    except (ValueError, TypeError, FileNotFoundError, ImportError, OSError) as exc:
        print(f"fastmlp: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
