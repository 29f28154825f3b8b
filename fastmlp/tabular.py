"""The user's own data for the command line: CSV, .npz (arrays X and y) and Parquet tables,
the task they ask for, and the column description saved beside a model.

Design: `read_table` turns a file into a `Table` of named 1-D columns, each numeric
(float64 or int64) or text (an object array of str); a CSV is read with the standard library
and every column's type is decided from all its cells (all integers, all numbers, or all
text; a column mixing numbers and text can only serve as the id column).  `features` / `target` pick and check the columns
(`TableError`, a ValueError with a one-line message naming the file and column, for a missing
column, non-numeric or missing features, an empty file or a target of mixed types).
`infer_task` says classify or regress from the target's values.  `Columns` is what predict
needs to rebuild the same features and labels from a new table, stored as JSON next to the
model file (`<model>.json`): the model itself stays a plain fastmlp model file.
"""
import csv
import json
import math
import os

import numpy as np

FORMATS = ("csv", "npz", "parquet")
MAX_CLASSES_FOR_FLOAT = 20   # a float target of at most this many integral values: classes


class TableError(ValueError):
    """The data file cannot be used as asked; the message is one line for the user."""


class Table:
    """columns: {name: 1-D array} in file order, all of length n; mixed: {name: why} for the
    columns that mix numbers and text (usable as ids only); path: for messages."""

    def __init__(self, path, columns, mixed=None):
        self.path, self.columns, self.mixed = path, columns, dict(mixed or {})
        self.n = len(next(iter(columns.values()))) if columns else 0

    def column(self, name, option, typed=True):
        """Column `name` (asked for by `option`); TableError when it is missing or, with
        `typed`, mixes types."""
        if name not in self.columns:
            shown = ", ".join(list(self.columns)[:12]) + (", ..." if len(self.columns) > 12
                                                           else "")
            raise TableError(f"{option} {name!r}: no such column in {self.path} "
                             f"(columns: {shown})")
        if typed and name in self.mixed:
            raise TableError(f"{self.path}: column {name!r} mixes {self.mixed[name]}")
        return self.columns[name]


# --------------------------------------------------------------------------- reading

def _cell_number(text):
    """int, float, or None (empty / not a number) for one CSV cell."""
    text = text.strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return None


def _typed(cells):
    """A CSV column's cells -> (array, None): int64, float64 (empty cells NaN) or str
    (empty cells None); or (str array, why) for a column mixing numbers and text."""
    numbers = [_cell_number(c) for c in cells]
    text = [i for i, (c, v) in enumerate(zip(cells, numbers)) if v is None and c.strip()]
    if text:
        strings = np.array([c.strip() or None for c in cells], dtype=object)
        num = next((i for i, v in enumerate(numbers) if v is not None), None)
        return strings, None if num is None else \
            (f"numbers and text (row {num + 1}: {cells[num].strip()!r}, row {text[0] + 1}: "
             f"{cells[text[0]].strip()!r})")
    if all(isinstance(v, int) for v in numbers):
        return np.array(numbers, dtype=np.int64), None
    return np.array([math.nan if v is None else float(v) for v in numbers], np.float64), None


def _read_csv(path):
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = [r for r in csv.reader(f) if any(c.strip() for c in r)]
    if not rows:
        raise TableError(f"{path} is empty")
    header, body = [h.strip() for h in rows[0]], rows[1:]
    if not body:
        raise TableError(f"{path} has a header but no rows")
    if len(set(header)) != len(header) or not all(header):
        raise TableError(f"{path}: the header needs distinct, non-empty column names")
    for i, r in enumerate(body):
        if len(r) != len(header):
            raise TableError(f"{path}: row {i + 1} has {len(r)} cells, the header "
                             f"{len(header)}")
    typed = {h: _typed(list(c)) for h, c in zip(header, zip(*body))}
    return Table(path, {h: a for h, (a, _) in typed.items()},
                 {h: why for h, (_, why) in typed.items() if why})


def _read_npz(path):
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError) as exc:
        raise TableError(f"{path}: not a readable .npz file ({exc})") from None
    for key in ("X", "y"):
        if key not in arrays:
            raise TableError(f"{path} has no array {key!r} (it has {sorted(arrays)}); "
                             f"save the features as X and the targets as y")
    X, y = arrays["X"], arrays["y"]
    if X.ndim != 2 or X.shape[0] == 0:
        raise TableError(f"{path}: X must be 2-D with at least one row, got shape {X.shape}")
    if X.dtype.kind not in "fiub":
        raise TableError(f"{path}: X must be numeric, got dtype {X.dtype}")
    columns = {f"x{i}": X[:, i].astype(np.float64) for i in range(X.shape[1])}
    if y.ndim != 1 or y.shape[0] != X.shape[0]:
        raise TableError(f"{path}: y must be 1-D with one entry per row of X, got shape "
                         f"{y.shape}")
    columns["y"] = y.astype(object) if y.dtype.kind in "US" else y
    return Table(path, columns)


def _read_parquet(path):
    try:
        import pandas as pd
        frame = pd.read_parquet(path)
    except ImportError as exc:
        raise ImportError(f"reading Parquet needs pandas and pyarrow (pip install pandas "
                          f"pyarrow): {exc}") from None
    except (OSError, ValueError) as exc:
        raise TableError(f"{path}: not a readable Parquet file ({exc})") from None
    if frame.shape[0] == 0:
        raise TableError(f"{path} has no rows")
    columns, mixed = {}, {}
    for name in frame.columns:
        s, name = frame[name], str(name)
        if s.dtype.kind in "iub" and not s.isna().any():
            columns[name] = s.to_numpy(np.int64)
        elif s.dtype.kind in "iubf":
            columns[name] = s.to_numpy(np.float64, na_value=np.nan)
        else:   # object / string columns: text, or a mix the user must fix
            values = [None if v is None or v != v else v for v in s.to_numpy(object)]
            kinds = sorted({type(v).__name__ for v in values if v is not None})
            if len(kinds) > 1:
                mixed[name] = f"types ({', '.join(kinds)})"
            columns[name] = np.array([v if v is None else str(v) for v in values], object)
    return Table(path, columns, mixed)


def read_table(path, fmt):
    """A Table from `path` in format `fmt` ('csv', 'npz' or 'parquet')."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"--{fmt} {path}: no such file")
    if os.path.isdir(path):
        raise IsADirectoryError(f"--{fmt} {path} is a directory")
    if os.path.getsize(path) == 0:
        raise TableError(f"{path} is empty")
    return {"csv": _read_csv, "npz": _read_npz, "parquet": _read_parquet}[fmt](path)


# --------------------------------------------------------------------------- columns

def features(table, names, dtype):
    """The columns `names` as a C-contiguous (n, len(names)) array of `dtype`; TableError for
    a missing, non-numeric or incomplete column."""
    if not names:
        raise TableError(f"{table.path}: no feature columns left besides the target, the id "
                         f"and the dropped ones")
    X = np.empty((table.n, len(names)), dtype)
    for j, name in enumerate(names):
        col = table.column(name, "feature")
        if col.dtype == object:
            first = next((v for v in col if v is not None), None)   # all text here
            raise TableError(f"{table.path}: feature column {name!r} is not numeric (e.g. "
                             f"{first!r}); encode it as numbers or drop it")
        bad = ~np.isfinite(col.astype(np.float64))
        if bad.any():
            raise TableError(f"{table.path}: feature column {name!r} has {int(bad.sum())} "
                             f"empty or non-finite values (first in row "
                             f"{int(np.argmax(bad)) + 1})")
        X[:, j] = col
    return X


def infer_task(y):
    """'classify' for text, bool and integer targets and for floats of few integral values;
    'regress' for other floats."""
    if y.dtype == object or y.dtype.kind in "iub":
        return "classify"
    values = np.unique(y[np.isfinite(y)])
    integral = np.all(values == np.round(values))
    return "classify" if integral and values.size <= MAX_CLASSES_FOR_FLOAT else "regress"


def target(table, name, task):
    """(targets, classes): int64 class indices and the labels (classify), or (n, 1) float
    values and None (regress); TableError for missing values, a wrong task, one class."""
    col = table.column(name, "--target")
    missing = np.array([v is None for v in col]) if col.dtype == object else \
        ~np.isfinite(col.astype(np.float64))
    if missing.any():
        raise TableError(f"{table.path}: target column {name!r} has {int(missing.sum())} "
                         f"empty or non-finite values (first in row "
                         f"{int(np.argmax(missing)) + 1})")
    if task == "regress":
        if col.dtype == object:
            raise TableError(f"{table.path}: --task regress needs a numeric target; column "
                             f"{name!r} holds text (e.g. {col[0]!r})")
        return col.astype(np.float64).reshape(-1, 1), None
    classes, index = np.unique(col.astype(str) if col.dtype == object else col,
                               return_inverse=True)
    if classes.size < 2:
        only = classes.tolist()[0]   # a Python value: 7, not np.int64(7)
        raise TableError(f"{table.path}: target column {name!r} has a single class "
                         f"{only!r}; nothing to learn")
    return index.astype(np.int64), classes


def row_ids(table, id_column):
    """The id column's values as strings, or the row numbers 0..n-1."""
    if id_column is None:
        return [str(i) for i in range(table.n)]
    return [str(v) for v in table.column(id_column, "--id", typed=False)]


# --------------------------------------------------------------------------- the sidecar

def columns_path(model_path):
    return os.fspath(model_path) + ".json"


def save_columns(model_path, info):
    """Write the column description `info` (features, target, task, classes, id) next to
    the model."""
    with open(columns_path(model_path), "w") as f:
        json.dump(info, f, indent=1)


def load_columns(model_path):
    """The column description saved by `save_columns`, or None when there is none (a model
    trained on a built-in dataset)."""
    path = columns_path(model_path)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            info = json.load(f)
        info["features"], info["task"]   # noqa: B018  (present, or KeyError)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise TableError(f"{path}: not a readable column description ({exc})") from None
    return info


def write_predictions(path, id_name, ids, target_name, labels, proba=None, classes=None):
    """A CSV: the id column, the prediction, and with `proba` one column per class."""
    f = open(path, "w", newline="") if path else None
    try:
        import sys
        w = csv.writer(f or sys.stdout)
        header = [id_name, target_name]
        if proba is not None:
            header += [f"p_{c}" for c in classes]
        w.writerow(header)
        for i, (rid, lab) in enumerate(zip(ids, labels)):
            row = [rid, lab]
            if proba is not None:
                row += [f"{p:.6g}" for p in proba[i]]
            w.writerow(row)
    finally:
        if f:
            f.close()
