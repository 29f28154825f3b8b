"""Learning-rate schedules and early stopping.

A per-epoch schedule is an object with `lr(epoch, lr0, history) -> float` (epoch counts from
0; history holds the finished epochs), evaluated once per epoch; any callable
`f(epoch, lr0) -> float` works too.  A per-step schedule (`OneCycle`, `Cosine`) has the class
attribute `per_step = True` and `lr_at(step, total_steps, lr0) -> float`, evaluated before
every optimizer step of `Trainer.fit` (step counts 0..total_steps-1 over the whole fit).
"""
import math

from .backends.validation import check_number


class Constant:
    """lr = lr0."""

    per_step = False

    def lr(self, epoch, lr0, history):
        return lr0

    def __repr__(self):
        return "Constant()"


class StepDecay:
    """lr = lr0 * factor ** (epoch // every): factor=0.92 is the classic "x0.92 every epoch",
    factor=0.5 halves it every `every` epochs."""

    per_step = False

    def __init__(self, factor=0.5, every=1):
        self.factor = check_number("factor", factor, low=0.0, low_inclusive=False, high=1.0)
        self.every = check_number("every", every, low=1, integer=True)

    def lr(self, epoch, lr0, history):
        return lr0 * self.factor ** (epoch // self.every)

    def __repr__(self):
        return f"StepDecay(factor={self.factor}, every={self.every})"


class ExponentialDecay:
    """lr = lr0 * exp(-rate * epoch)."""

    per_step = False

    def __init__(self, rate=0.1):
        self.rate = check_number("rate", rate, low=0.0)

    def lr(self, epoch, lr0, history):
        return lr0 * math.exp(-self.rate * epoch)

    def __repr__(self):
        return f"ExponentialDecay(rate={self.rate})"


class InverseScaling:
    """lr = lr0 / (1 + epoch) ** power_t (scikit-learn's 'invscaling' counts steps instead;
    the estimator does that itself)."""

    per_step = False

    def __init__(self, power_t=0.5):
        self.power_t = check_number("power_t", power_t, low=0.0)

    def lr(self, epoch, lr0, history):
        return lr0 / (1.0 + epoch) ** self.power_t

    def __repr__(self):
        return f"InverseScaling(power_t={self.power_t})"


class ReduceOnPlateau:
    """Multiply the lr by `factor` when `monitor` has not improved by `min_delta` for
    `patience` epochs; never below `min_lr`."""

    per_step = False

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


class OneCycle:
    """PyTorch's OneCycleLR learning-rate curve (two phases, `three_phase=False`), per step.

    peak = max_lr (default: lr0, the Trainer's lr), initial = peak / div_factor,
    min = initial / final_div_factor.  Phase 1 warms up from initial to peak and ends at step
    e1 = pct_start * total_steps - 1; phase 2 anneals from peak to min and ends at step
    total_steps - 1.  Within a phase (start s, end e; phase 1 starts at 0, phase 2 at e1)
    pct = (step - s) / (e - s) and lr = end + (start - end) / 2 * (cos(pi pct) + 1) for
    anneal="cos", start + (end - start) pct for "linear": PyTorch's arithmetic, operation for
    operation.  Where PyTorch divides by zero (pct_start * total_steps == 1: phase 1 is the
    single step 0) that step takes the phase's end value, the peak.  With pct_start < 1 the
    last step trains at min (so total_steps == 1 gives min); every lr is > 0.
    Momentum (SGD's momentum, Adam's beta1) is not cycled: it stays the Trainer's constant
    (PyTorch's cycle_momentum=False).
    """

    per_step = True

    def __init__(self, max_lr=None, pct_start=0.3, div_factor=25.0, final_div_factor=1e4,
                 anneal="cos"):
        self.max_lr = None if max_lr is None else \
            check_number("max_lr", max_lr, low=0.0, low_inclusive=False)
        self.pct_start = check_number("pct_start", pct_start, low=0.0, high=1.0)
        self.div_factor = check_number("div_factor", div_factor, low=0.0, low_inclusive=False)
        self.final_div_factor = check_number("final_div_factor", final_div_factor, low=0.0,
                                             low_inclusive=False)
        if anneal not in ("cos", "linear"):
            raise ValueError(f"anneal must be 'cos' or 'linear', got {anneal!r}")
        self.anneal = anneal

    def lr_at(self, step, total_steps, lr0):
        _check_step(step, total_steps)
        peak = lr0 if self.max_lr is None else self.max_lr
        initial = peak / self.div_factor
        low = initial / self.final_div_factor
        end1 = float(self.pct_start * total_steps) - 1
        if step <= end1:
            start_step, end_step, start, end = 0.0, end1, initial, peak
        else:
            start_step, end_step, start, end = end1, total_steps - 1, peak, low
        pct = 1.0 if end_step == start_step else (step - start_step) / (end_step - start_step)
        if self.anneal == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def __repr__(self):
        return f"OneCycle(max_lr={self.max_lr}, pct_start={self.pct_start}, " \
               f"div_factor={self.div_factor}, final_div_factor={self.final_div_factor}, " \
               f"anneal={self.anneal!r})"


class Cosine:
    """Linear warm-up, then cosine annealing from lr0 towards min_lr, per step.

    Steps 0..warmup-1: lr = lr0 * (step + 1) / (warmup + 1), a ramp that would reach lr0 at
    step `warmup` (every warm-up lr is > 0).  Then, with t = step - warmup and
    T = total_steps - warmup: lr = min_lr + (lr0 - min_lr) * (1 + cos(pi t / T)) / 2, which is
    PyTorch's CosineAnnealingLR(T_max=T, eta_min=min_lr) stepped once per batch.  t runs
    0..T-1, so the first annealed step trains at lr0 and the last one above min_lr: min_lr
    itself (0 by default) would be the lr of the step after the fit, and every lr of the fit
    is > 0.  (1 + cos x) / 2 is computed as cos(x / 2) ** 2, equal but without the
    cancellation near x = pi, so the last lr stays > min_lr however many steps.
    total_steps == 1 (no warm-up) gives lr0.  warmup must be < total_steps: lr_at raises
    ValueError otherwise.
    """

    per_step = True

    def __init__(self, min_lr=0.0, warmup=0):
        self.min_lr = check_number("min_lr", min_lr, low=0.0)
        self.warmup = check_number("warmup", warmup, low=0, integer=True)

    def lr_at(self, step, total_steps, lr0):
        _check_step(step, total_steps)
        w = self.warmup
        if w >= total_steps:
            raise ValueError(f"Cosine(warmup={w}) needs more than {w} steps; the fit has "
                             f"{total_steps}")
        if step < w:
            return lr0 * (step + 1) / (w + 1)
        return self.min_lr + (lr0 - self.min_lr) * \
            math.cos(math.pi * (step - w) / (2 * (total_steps - w))) ** 2

    def __repr__(self):
        return f"Cosine(min_lr={self.min_lr}, warmup={self.warmup})"


def _check_step(step, total_steps):
    if not 0 <= step < total_steps:
        raise ValueError(f"step must be in [0, total_steps) = [0, {total_steps}), got {step}")


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
    """None/'constant' -> Constant; a schedule object (per-epoch `lr` or per-step `lr_at`)
    as is; a callable f(epoch, lr0) wrapped."""
    if spec is None or spec == "constant":
        return Constant()
    if hasattr(spec, "lr_at" if getattr(spec, "per_step", False) else "lr"):
        return spec
    if callable(spec):
        return _Callable(spec)
    raise ValueError(f"lr_schedule must be None, 'constant', a schedule object or a callable "
                     f"f(epoch, lr0), got {spec!r}")


class _Callable:
    per_step = False

    def __init__(self, f):
        self.f = f

    def lr(self, epoch, lr0, history):
        return self.f(epoch, lr0)
