"""History: per-epoch training record, with a matplotlib plot of the curves."""
import json

FIELDS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_r2", "lr", "seconds")


class History:
    """Lists indexed by epoch: epoch (1-based), train_loss, train_acc (classifiers), val_loss,
    val_acc (classifiers) or val_r2 (regression) -- None without validation data or where
    they do not apply -- lr, seconds (wall time of the epoch)."""

    def __init__(self):
        for f in FIELDS:
            setattr(self, f, [])

    def append(self, **row):
        for f in FIELDS:
            getattr(self, f).append(row.get(f))

    def __len__(self):
        return len(self.epoch)

    def has(self, key):
        values = getattr(self, key)
        return bool(values) and values[-1] is not None

    def last(self, key):
        return getattr(self, key)[-1]

    def as_dict(self):
        return {f: list(getattr(self, f)) for f in FIELDS}

    def to_json(self):
        return json.dumps(self.as_dict())

    def __repr__(self):
        if not len(self):
            return "History(empty)"
        acc = "" if self.train_acc[-1] is None else f", train_acc={self.train_acc[-1]:.4f}"
        return f"History({len(self)} epochs, last train_loss={self.train_loss[-1]:.4f}{acc})"

    def plot(self, path):
        """Loss and accuracy (or validation R² for regression) per epoch, train vs validation,
        saved to `path` (PNG, PDF, ...).  Uses matplotlib's Agg canvas: no display needed."""
        from matplotlib.figure import Figure

        def curve(values):
            return [float("nan") if v is None else v for v in values]
        score = "r2" if any(v is not None for v in self.val_r2) else "acc"
        fig = Figure(figsize=(9, 3.6), layout="constrained")
        for ax, key in zip(fig.subplots(1, 2), ("loss", score)):
            train = getattr(self, f"train_{key}", [None] * len(self))
            if any(v is not None for v in train):
                ax.plot(self.epoch, curve(train), "o-", label="train")
            val = getattr(self, f"val_{key}")
            if any(v is not None for v in val):
                ax.plot(self.epoch, curve(val), "s-", label="validation")
            ax.set_xlabel("epoch")
            ax.set_ylabel({"loss": "loss", "acc": "accuracy", "r2": "R²"}[key])
            ax.grid(alpha=0.3)
            ax.legend()
        fig.savefig(path)
        return path
