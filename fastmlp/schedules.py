"""Learning-rate schedules and early stopping, evaluated once per epoch.

A schedule is an object with `lr(epoch, lr0, history) -> float` (epoch counts from 0; history
holds the finished epochs).  Any callable `f(epoch, lr0) -> float` works too.
"""
import math

from .backends.validation import check_number


class Constant:
    """lr = lr0."""

    def lr(self, epoch, lr0, history):
        return lr0

    def __repr__(self):
        return "Constant()"


class StepDecay:
    """lr = lr0 * factor ** (epoch // every): factor=0.92 is the classic "x0.92 every epoch",
    factor=0.5 halves it every `every` epochs."""

    def __init__(self, factor=0.5, every=1):
        self.factor = check_number("factor", factor, low=0.0, low_inclusive=False, high=1.0)
        self.every = check_number("every", every, low=1, integer=True)

    def lr(self, epoch, lr0, history):
        return lr0 * self.factor ** (epoch // self.every)

    def __repr__(self):
        return f"StepDecay(factor={self.factor}, every={self.every})"


class ExponentialDecay:
    """lr = lr0 * exp(-rate * epoch)."""

    def __init__(self, rate=0.1):
        self.rate = check_number("rate", rate, low=0.0)

    def lr(self, epoch, lr0, history):
        return lr0 * math.exp(-self.rate * epoch)

    def __repr__(self):
        return f"ExponentialDecay(rate={self.rate})"


class InverseScaling:
    """lr = lr0 / (1 + epoch) ** power_t (scikit-learn's 'invscaling' counts steps instead;
    the estimator does that itself)."""

    def __init__(self, power_t=0.5):
        self.power_t = check_number("power_t", power_t, low=0.0)

    def lr(self, epoch, lr0, history):
        return lr0 / (1.0 + epoch) ** self.power_t

    def __repr__(self):
        return f"InverseScaling(power_t={self.power_t})"


class ReduceOnPlateau:
    """Multiply the lr by `factor` when `monitor` has not improved by `min_delta` for
    `patience` epochs; never below `min_lr`."""

    def __init__(self, monitor="val_loss", factor=0.5, patience=2, min_delta=0.0, min_lr=0.0):
        self.monitor = _check_monitor(monitor)
        self.factor = check_number("factor", factor, low=0.0, low_inclusive=False, high=1.0)
        self.patience = check_number("patience", patience, low=0, integer=True)
        self.min_delta = check_number("min_delta", min_delta, low=0.0)
        self.min_lr = check_number("min_lr", min_lr, low=0.0)
        self._best, self._wait, self._scale = None, 0, 1.0

    def lr(self, epoch, lr0, history):
        if epoch == 0:
            self._best, self._wait, self._scale = None, 0, 1.0
        elif history.has(self.monitor):
            value = history.last(self.monitor)
            if _improved(self.monitor, value, self._best, self.min_delta):
                self._best, self._wait = value, 0
            else:
                self._wait += 1
                if self._wait > self.patience:
                    self._scale *= self.factor
                    self._wait = 0
        return max(self.min_lr, lr0 * self._scale)

    def __repr__(self):
        return f"ReduceOnPlateau(monitor={self.monitor!r}, factor={self.factor}, " \
               f"patience={self.patience})"


class EarlyStopping:
    """Stop when `monitor` has not improved by more than `min_delta` for `patience` epochs;
    with restore_best (default) the model gets back the weights of its best epoch."""

    def __init__(self, monitor="val_loss", patience=5, min_delta=0.0, restore_best=True):
        self.monitor = _check_monitor(monitor)
        self.patience = check_number("patience", patience, low=0, integer=True)
        self.min_delta = check_number("min_delta", min_delta, low=0.0)
        self.restore_best = bool(restore_best)

    def __repr__(self):
        return f"EarlyStopping(monitor={self.monitor!r}, patience={self.patience}, " \
               f"min_delta={self.min_delta})"


_MONITORS = ("val_loss", "val_acc", "val_r2", "train_loss", "train_acc")


def _check_monitor(monitor):
    if monitor not in _MONITORS:
        raise ValueError(f"monitor must be one of {_MONITORS}, got {monitor!r}")
    return monitor


def _improved(monitor, value, best, min_delta):
    """Whether `value` beats `best` by more than min_delta (losses go down, accuracies up)."""
    if best is None:
        return True
    return value < best - min_delta if monitor.endswith("loss") else value > best + min_delta


def make_schedule(spec):
    """None/'constant' -> Constant; a schedule object or a callable f(epoch, lr0) as is."""
    if spec is None or spec == "constant":
        return Constant()
    if hasattr(spec, "lr"):
        return spec
    if callable(spec):
        return _Callable(spec)
    raise ValueError(f"lr_schedule must be None, 'constant', a schedule object or a callable "
                     f"f(epoch, lr0), got {spec!r}")


class _Callable:
    def __init__(self, f):
        self.f = f

    def lr(self, epoch, lr0, history):
        return self.f(epoch, lr0)
