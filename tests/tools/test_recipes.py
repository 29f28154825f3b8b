"""`fastmlp train`'s recipes (fastmlp/recipes.py): how a run's options are resolved, and
that the recipes train what they claim (digits ≥ 0.98 by default; the Fashion-MNIST recipe
near 0.90 -- its exact figure and time are the benchmark's, Recipes group)."""
import json
import os

import pytest

from fastmlp import recipes
from fastmlp.cli import main

FASHION = "/usr/share/datasets/fashion-mnist"


def test_settings_layers_base_recipe_and_given():
    name, s = recipes.settings("digits")
    assert name == "digits" and s["lr"] == recipes.RECIPES["digits"]["lr"]
    assert set(s) == set(recipes.BASE)
    name, s = recipes.settings("digits", "none")
    assert name is None and s == recipes.BASE
    name, s = recipes.settings(None)            # a table: no recipe
    assert name is None and s == recipes.BASE
    name, s = recipes.settings("mnist")         # a dataset without a recipe
    assert name is None
    _, s = recipes.settings("digits", given={"epochs": 3, "lr": None})
    assert s["epochs"] == 3 and s["lr"] == recipes.RECIPES["digits"]["lr"]
    _, s = recipes.settings("digits", "fashion-mnist")
    assert s["batch_size"] == recipes.RECIPES["fashion-mnist"]["batch_size"]
    with pytest.raises(ValueError, match="unknown recipe"):
        recipes.settings("digits", "fast")


def test_cli_reports_the_settings_it_used(capsys):
    assert main(["train", "--epochs", "2", "--batch-size", "64", "--json", "--quiet"]) == 0
    s = json.loads(capsys.readouterr().out)
    r = recipes.RECIPES["digits"]
    assert s["recipe"] == "digits" and s["epochs"] == 2 and s["batch_size"] == 64
    assert s["lr"] == r["lr"] and s["lr_schedule"] == r["lr_schedule"]
    assert s["dropout"] == list(r["dropout"]) and s["label_smoothing"] == r["label_smoothing"]
    assert main(["train", "--recipe", "none", "--epochs", "2", "--json", "--quiet"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["recipe"] is None and s["batch_size"] == 128 and s["dropout"] == [0.0]
    # --lr-decay is a schedule of its own: it replaces the recipe's one-cycle
    assert main(["train", "--epochs", "2", "--lr-decay", "0.9", "--json", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["lr_schedule"] == "constant"
    with pytest.raises(SystemExit) as exc:
        main(["train", "--recipe", "fast", "--quiet"])
    assert exc.value.code == 2


def test_digits_default_reaches_098(capsys):
    """The issue's target: `fastmlp train` on digits reaches 0.98 by default."""
    assert main(["train", "--json", "--quiet"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["recipe"] == "digits" and s["test_accuracy"] >= 0.98, s["test_accuracy"]


@pytest.mark.skipif(not os.path.isdir(FASHION), reason="apt-get install dataset-fashion-mnist")
def test_fashion_recipe_trains_one_hidden_layer_near_090(capsys):
    """The Fashion-MNIST recipe: one hidden layer.  Measured 0.898-0.904 over seeds and
    precisions (fastmlp/recipes.py); held here to 0.895, since the last digits depend on
    the BLAS kernels of the machine."""
    assert main(["train", "--dataset", "fashion-mnist", "--json", "--quiet"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["recipe"] == "fashion-mnist" and len(s["layer_sizes"]) == 3
    assert s["test_accuracy"] >= 0.895, s["test_accuracy"]
