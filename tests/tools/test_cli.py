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
