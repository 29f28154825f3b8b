"""The `fastmlp` command line: train / predict / info, and clean errors with exit code 2."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from fastmlp.cli import main


def run_cli(*args, cwd=None):
    """The installed console script, in a child process (exit code, stdout, stderr)."""
    exe = os.path.join(os.path.dirname(sys.executable), "fastmlp")
    proc = subprocess.run([exe, *args], capture_output=True, text=True, timeout=600, cwd=cwd)
    return proc.returncode, proc.stdout, proc.stderr


def test_train_default_digits_end_to_end(tmp_path):
    code, out, err = run_cli("train", "--epochs", "3", cwd=tmp_path)
    assert code == 0, err
    assert "test accuracy:" in out and "epoch 3/3" in err  # tqdm bar per epoch on stderr
    acc = float(out.split("test accuracy:")[1].split()[0])
    assert 0.8 < acc <= 1.0


def test_train_json_save_plot_then_predict(tmp_path, capsys):
    model, plot = tmp_path / "m.npz", tmp_path / "curves.png"
    code = main(["train", "--epochs", "4", "--hidden", "32", "16", "--optimizer", "sgd",
                 "--lr", "0.05", "--lr-decay", "0.9", "--weight-decay", "1e-4",
                 "--batch-size", "64", "--backend", "numba", "--dtype", "float64",
                 "--seed", "3", "--save", str(model), "--plot", str(plot), "--json",
                 "--quiet"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["layer_sizes"] == [64, 32, 16, 10] and summary["epochs_run"] == 4
    np.testing.assert_allclose(summary["history"]["lr"], [0.05 * 0.9 ** k for k in range(4)])
    assert plot.stat().st_size > 10_000 and plot.read_bytes()[:4] == b"\x89PNG"
    out_file = tmp_path / "pred.txt"
    assert main(["predict", "--model", str(model), "--json", "--out", str(out_file)]) == 0
    pred = json.loads(capsys.readouterr().out)
    assert pred["accuracy"] == pytest.approx(summary["test_accuracy"])
    assert len(out_file.read_text().split()) == pred["n"]


def test_train_onecycle_lr_schedule(capsys):
    assert main(["train", "--recipe", "none", "--lr-schedule", "onecycle", "--epochs", "2",
                 "--hidden", "16", "--validation-fraction", "0", "--quiet", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    # digits: 1347 training rows, 11 batches of 128 an epoch, 22 steps; adam's lr 1e-3 is the
    # peak, initial 1e-3/25 = 4e-5, min 4e-5/1e4 = 4e-9.  Phase 1 ends at step
    # 0.3 * 22 - 1 = 5.6; epoch 1's last step (10) anneals with pct = (10 - 5.6) / (21 - 5.6),
    # epoch 2's last step (21) ends at the min.
    pct = (10 - 5.6) / (21 - 5.6)
    first = 4e-9 + (1e-3 - 4e-9) / 2 * (np.cos(np.pi * pct) + 1)
    assert summary["lr"] == 1e-3 and summary["epochs_run"] == 2
    np.testing.assert_allclose(summary["history"]["lr"], [first, 4e-9], rtol=1e-12)


def test_train_standardize_then_predict(tmp_path, capsys):
    import fastmlp
    model = tmp_path / "s.npz"
    assert main(["train", "--epochs", "10", "--hidden", "64", "--standardize", "--seed", "1",
                 "--save", str(model), "--json", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["standardize"] is True and summary["test_accuracy"] > 0.8
    m = fastmlp.MLP.load(model)
    assert m.standardize and m.input_scale.shape == (64,)
    assert m.input_scale[0] == 1   # the digits' always-blank corner pixel: a constant feature
    assert main(["predict", "--model", str(model), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == \
        pytest.approx(summary["test_accuracy"])


def test_train_early_stopping(capsys):
    assert main(["train", "--epochs", "200", "--early-stopping", "2", "--hidden", "16",
                 "--quiet", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["epochs_run"] < 200


def test_info(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "backends: numpy, numba, cython" in out and "threadpool" in out


@pytest.mark.parametrize("args, text", [
    (["train", "--epochs", "0"], "--epochs"),
    (["train", "--lr", "nan"], "--lr"),
    (["train", "--lr", "abc"], "--lr"),
    (["train", "--optimizer", "rmsprop"], "--optimizer"),
    (["train", "--hidden", "0"], "--hidden"),
    (["train", "--dataset", "/no/such/dir"], "dataset"),
    (["train", "--dataset", "fashion-mnist-typo"], "dataset"),
    (["train", "--lr-decay", "1.5"], "--lr-decay"),
    (["train", "--lr-schedule", "cosine", "--lr-decay", "0.9"], "--lr-schedule"),
    (["train", "--lr-schedule", "step"], "--lr-schedule"),
    (["train", "--bogus"], "unrecognized"),
    (["predict"], "--model"),
    (["predict", "--model", "/no/such/model.npz"], "no/such/model.npz"),
    ([], "COMMAND"),
])
def test_bad_arguments_give_one_line_and_exit_2(args, text, tmp_path):
    code, out, err = run_cli(*args, cwd=tmp_path)
    assert code == 2
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("fastmlp: error:") and text in lines[0], err


def test_predict_refuses_corrupt_model(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"garbage")
    code, _, err = run_cli("predict", "--model", str(bad), cwd=tmp_path)
    assert code == 2 and "not a readable fastmlp model" in err and "Traceback" not in err


def test_bench_passes_its_options_to_the_report(capsys):
    assert main(["bench", "--help"]) == 0
    assert "--quick" in capsys.readouterr().out


# ---- the user's own tables ------------------------------------------------------------------

def _write_csv(path, header, rows):
    import csv
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return str(path)


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    """A CSV of 400 rows: id, four features on very different scales, a text label (3
    classes, from the features), an integer label and a float value (regression)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((400, 4)) * [1, 10, 100, 0.1] + [0, 5, -50, 1]
    k = np.argmax((X[:, :3] - [0, 5, -50]) / [1, 10, 100], axis=1)
    value = 3 * X[:, 0] + 0.2 * X[:, 1] + 0.1 * rng.standard_normal(400)
    rows = [[f"r{i}", *(f"{v:.6f}" for v in X[i]), ["cat", "dog", "eel"][k[i]], int(k[i]),
             f"{value[i]:.6f}"] for i in range(400)]
    folder = tmp_path_factory.mktemp("table")
    path = _write_csv(folder / "data.csv", ["id", "a", "b", "c", "d", "label", "code",
                                            "value"], rows)
    return {"csv": path, "X": X, "label": k, "value": value, "folder": folder}


def _predictions(path):
    import csv
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_train_and_predict_a_csv_classifier(table, tmp_path, capsys):
    model = str(tmp_path / "m.npz")
    assert main(["train", "--csv", table["csv"], "--target", "label", "--id", "id",
                 "--drop", "code", "value", "--hidden", "32", "--epochs", "40", "--quiet",
                 "--save", model, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["task"] == "classify" and summary["classes"] == ["cat", "dog", "eel"]
    assert summary["features"] == ["a", "b", "c", "d"]
    assert summary["scores"]["validation"] > 0.85   # the features are on scales 0.1..100
    out = str(tmp_path / "p.csv")
    assert main(["predict", "--model", model, "--csv", table["csv"], "--out", out,
                 "--proba"]) == 0
    assert "accuracy:" in capsys.readouterr().out
    rows = _predictions(out)
    assert rows[0] == ["id", "label", "p_cat", "p_dog", "p_eel"]
    assert [r[0] for r in rows[1:]] == [f"r{i}" for i in range(400)]
    labels = np.array([r[1] for r in rows[1:]])
    assert np.mean(labels == np.array(["cat", "dog", "eel"])[table["label"]]) > 0.85
    np.testing.assert_allclose([sum(map(float, r[2:])) for r in rows[1:]], 1, rtol=1e-4)
    # the saved model takes the raw features (the scaling is folded into its first layer)
    import fastmlp
    m = fastmlp.MLP.load(model)
    np.testing.assert_array_equal(np.array(["cat", "dog", "eel"])[m.predict(table["X"])],
                                  labels)


def test_csv_classifier_with_standardize_keeps_the_statistics(table, tmp_path, capsys):
    """--standardize on a table: the model holds the features' statistics, nothing folded."""
    import fastmlp
    model = str(tmp_path / "s.npz")
    assert main(["train", "--csv", table["csv"], "--target", "label", "--id", "id",
                 "--drop", "code", "value", "--hidden", "32", "--epochs", "40", "--quiet",
                 "--standardize", "--save", model, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["scores"]["validation"] > 0.85
    m = fastmlp.MLP.load(model)
    assert m.standardize
    np.testing.assert_allclose(m.input_scale, table["X"].std(axis=0), rtol=0.2)
    out = str(tmp_path / "p.csv")
    assert main(["predict", "--model", model, "--csv", table["csv"], "--out", out]) == 0
    labels = np.array([r[1] for r in _predictions(out)[1:]])
    np.testing.assert_array_equal(np.array(["cat", "dog", "eel"])[m.predict(table["X"])],
                                  labels)


def test_train_and_predict_a_csv_regressor_inferred(table, tmp_path, capsys):
    model = str(tmp_path / "r.npz")
    assert main(["train", "--csv", table["csv"], "--target", "value", "--id", "id",
                 "--drop", "label", "code", "--hidden", "32", "--epochs", "60", "--lr", "0.01",
                 "--quiet", "--save", model, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["task"] == "regress" and summary["metric"] == "R²"
    assert summary["scores"]["validation"] > 0.95
    assert main(["predict", "--model", model, "--csv", table["csv"]]) == 0   # CSV on stdout
    out, err = capsys.readouterr()
    rows = [line.split(",") for line in out.splitlines()]
    assert rows[0] == ["id", "value"] and len(rows) == 401
    pred = np.array([float(r[1]) for r in rows[1:]])
    assert np.corrcoef(pred, table["value"])[0, 1] > 0.97 and "R²:" in err


def test_task_is_inferred_or_chosen(table, tmp_path, capsys):
    from fastmlp.tabular import infer_task
    assert infer_task(np.array([1, 2, 3, 2])) == "classify"
    assert infer_task(np.array(["a", "b"], dtype=object)) == "classify"
    assert infer_task(np.array([0.0, 1.0, 1.0])) == "classify"        # few integral floats
    assert infer_task(np.linspace(0, 1, 50)) == "regress"
    args = ["train", "--csv", table["csv"], "--drop", "id", "label", "value", "--epochs",
            "2", "--quiet", "--json", "--target", "code"]
    assert main(args) == 0 and json.loads(capsys.readouterr().out)["task"] == "classify"
    assert main(args + ["--task", "regress"]) == 0
    assert json.loads(capsys.readouterr().out)["task"] == "regress"


def test_npz_and_parquet_tables(table, tmp_path, capsys):
    X, y = table["X"], table["label"]
    np.savez(tmp_path / "d.npz", X=X, y=y)
    model = str(tmp_path / "n.npz")
    assert main(["train", "--npz", str(tmp_path / "d.npz"), "--hidden", "32", "--epochs",
                 "30", "--quiet", "--save", model]) == 0
    out = str(tmp_path / "pn.csv")
    assert main(["predict", "--model", model, "--npz", str(tmp_path / "d.npz"), "--out",
                 out]) == 0
    rows = _predictions(out)
    assert rows[0] == ["row", "y"] and rows[1][0] == "0" and len(rows) == 401
    capsys.readouterr()
    pd = pytest.importorskip("pandas", reason="pandas is not installed")
    pytest.importorskip("pyarrow", reason="pyarrow is not installed")
    frame = pd.DataFrame({"a": X[:, 0], "b": X[:, 1], "c": X[:, 2], "d": X[:, 3],
                          "kind": np.array(["cat", "dog", "eel"])[y]})
    frame.to_parquet(tmp_path / "d.parquet")
    model = str(tmp_path / "q.npz")
    assert main(["train", "--parquet", str(tmp_path / "d.parquet"), "--target", "kind",
                 "--epochs", "30", "--quiet", "--json", "--save", model]) == 0
    assert json.loads(capsys.readouterr().out)["scores"]["validation"] > 0.85
    assert main(["predict", "--model", model, "--parquet", str(tmp_path / "d.parquet"),
                 "--out", str(tmp_path / "pq.csv")]) == 0
    assert _predictions(tmp_path / "pq.csv")[1][1] in ("cat", "dog", "eel")


def test_a_table_model_exports_to_onnx(table, tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    pytest.importorskip("onnx", reason="the onnx extra is not installed")
    model = str(tmp_path / "m.npz")
    assert main(["train", "--csv", table["csv"], "--target", "value", "--drop", "id",
                 "label", "--epochs", "5", "--quiet", "--save", model]) == 0
    assert main(["export", "--model", model, "--out", str(tmp_path / "m.onnx")]) == 0
    import fastmlp
    X = np.c_[table["X"], table["label"]].astype(np.float32)    # a b c d code
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"X": X})[0]
    np.testing.assert_allclose(got, fastmlp.MLP.load(model).predict(X), rtol=1e-5, atol=1e-4)
