"""Per-step learning-rate schedules (OneCycle, Cosine): their values against their formulas at
every step, PyTorch's OneCycleLR numbers worked out by hand, the Trainer really stepping at
them (bit-identical to manual steps), bad arguments; per-epoch schedules unchanged."""
import math

import numpy as np
import pytest
from helpers import small_data

import fastmlp
from fastmlp import MLP, Cosine, OneCycle, Trainer
from fastmlp.schedules import make_schedule


# ---- the formulas ---------------------------------------------------------------------------

def onecycle_reference(step, total, lr0, max_lr=None, pct_start=0.3, div=25.0, final=1e4,
                       anneal="cos"):
    """torch.optim.lr_scheduler.OneCycleLR.get_lr (three_phase=False) transcribed: the phase
    loop as PyTorch writes it; a zero-length phase (where PyTorch divides by zero) takes
    pct = 1."""
    peak = lr0 if max_lr is None else max_lr
    lrs = {"initial_lr": peak / div, "max_lr": peak}
    lrs["min_lr"] = lrs["initial_lr"] / final
    phases = [(float(pct_start * total) - 1, "initial_lr", "max_lr"),
              (total - 1, "max_lr", "min_lr")]
    start_step = 0.0
    for i, (end_step, start, end) in enumerate(phases):
        if step <= end_step or i == len(phases) - 1:
            pct = 1.0 if end_step == start_step else (step - start_step) / (end_step - start_step)
            a, b = lrs[start], lrs[end]
            if anneal == "cos":
                return b + (a - b) / 2.0 * (math.cos(math.pi * pct) + 1)
            return (b - a) * pct + a
        start_step = end_step


TOTALS = [(1, 0.3), (2, 0.3), (2, 0.5), (3, 0.3), (4, 0.25), (5, 0.0), (5, 1.0), (1, 1.0),
          (7, 0.25), (10, 0.3), (100, 0.1), (333, 0.45)]


@pytest.mark.parametrize("anneal", ["cos", "linear"])
@pytest.mark.parametrize("total, pct_start", TOTALS)
def test_onecycle_is_pytorchs_curve_at_every_step(total, pct_start, anneal):
    s = OneCycle(pct_start=pct_start, anneal=anneal)
    got = [s.lr_at(k, total, 0.1) for k in range(total)]
    assert got == [onecycle_reference(k, total, 0.1, pct_start=pct_start, anneal=anneal)
                   for k in range(total)]   # the same operations: the same floats
    assert all(lr > 0 for lr in got) and max(got) <= 0.1 * (1 + 1e-15)
    if pct_start < 1:
        assert got[-1] == pytest.approx(0.1 / 25 / 1e4, rel=1e-12)   # the min, at the last step
    if pct_start * total == 1:   # phase 1 is step 0 alone (PyTorch: ZeroDivisionError): peak
        assert got[0] == 0.1


def test_onecycle_small_totals():
    s = OneCycle()
    assert s.lr_at(0, 1, 1.0) == pytest.approx(4e-6, rel=1e-14)   # one step: phase 2's end
    # 2 steps: phase 1 ends at 0.3 * 2 - 1 = -0.4, so both are in phase 2 (from -0.4 to 1)
    assert s.lr_at(0, 2, 1.0) == pytest.approx(4e-6 + (1 - 4e-6) / 2 * (math.cos(
        math.pi * 0.4 / 1.4) + 1), rel=1e-14)
    assert s.lr_at(1, 2, 1.0) == pytest.approx(4e-6, rel=1e-14)
    assert OneCycle(pct_start=0.5).lr_at(0, 2, 1.0) == 1.0   # 0.5 * 2 == 1: the peak
    assert OneCycle(pct_start=1.0).lr_at(0, 1, 1.0) == 1.0


def test_onecycle_hand_computed_pytorch_values():
    # OneCycleLR(max_lr=1.0, total_steps=10) (pct_start 0.3, div_factor 25, final_div_factor
    # 1e4, cos): initial = 1/25 = 0.04, min = 0.04/1e4 = 4e-6.  Phase 1 ends at step
    # 0.3 * 10 - 1 = 2: pct = k/2, lr = 1 + (0.04 - 1)/2 (cos(pi k/2) + 1) = 0.04, 0.52, 1.
    # Phase 2 runs from step 2 to 9: pct = (k - 2)/7,
    # lr = 4e-6 + (1 - 4e-6)/2 (cos(pi (k-2)/7) + 1); k = 3: cos(pi/7) = 0.9009688679,
    # lr = 4e-6 + 0.999996 * 0.9504844340 = 0.9504846320; ... k = 9: cos(pi) = -1, lr = 4e-6.
    expected = [0.04, 0.52, 1.0, 0.9504846320134737, 0.8117456539497631, 0.6112620219362893,
                0.38874197806371075, 0.18825834605023697, 0.049519367986526286, 4e-06]
    got = [OneCycle().lr_at(k, 10, 1.0) for k in range(10)]
    np.testing.assert_allclose(got, expected, rtol=1e-14)
    # anneal="linear", max_lr=2.0 (ignores lr0), total 5: initial 0.08, min 8e-6; phase 1 ends
    # at 0.3 * 5 - 1 = 0.5: step 0 is pct 0 (0.08); phase 2 from 0.5 to 4: pct = (k - 0.5)/3.5,
    # lr = 2 + (8e-6 - 2) pct: k=1: 2 - 1.999992/7 = 1.714286857142857, k=2: 2 - 1.999992 * 3/7
    # = 1.142860571428571, k=3: 2 - 1.999992 * 5/7 = 0.571434285714286, k=4: 8e-6, which
    # PyTorch's (end - start) * 1 + start rounds to 8.000000000008e-6 in float64.
    got = [OneCycle(max_lr=2.0, anneal="linear").lr_at(k, 5, 123.0) for k in range(5)]
    np.testing.assert_allclose(got, [0.08, 1.714286857142857, 1.142860571428571,
                                     0.571434285714286, 8.000000000008e-6], rtol=1e-13)


@pytest.mark.parametrize("total, warmup, min_lr", [(1, 0, 0.0), (2, 0, 0.0), (2, 1, 0.0),
                                                   (3, 2, 1e-4), (10, 0, 0.0), (10, 3, 1e-3),
                                                   (97, 10, 0.0)])
def test_cosine_against_its_formula_at_every_step(total, warmup, min_lr):
    lr0 = 0.1
    s = Cosine(min_lr=min_lr, warmup=warmup)
    got = [s.lr_at(k, total, lr0) for k in range(total)]
    T = total - warmup
    want = [lr0 * (k + 1) / (warmup + 1) if k < warmup else
            min_lr + (lr0 - min_lr) * (1 + math.cos(math.pi * (k - warmup) / T)) / 2
            for k in range(total)]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert got[warmup] == pytest.approx(lr0, rel=1e-15)   # the first annealed step: lr0
    assert all(lr > min_lr for lr in got)   # min_lr would be the step after the fit


def test_cosine_endpoints():
    assert Cosine().lr_at(0, 1, 0.1) == 0.1
    assert [Cosine().lr_at(k, 2, 0.1) for k in range(2)] == [0.1, pytest.approx(0.05)]
    # the last of a very long fit still trains at lr > min_lr = 0: (1 + cos(pi (T-1)/T)) / 2
    # = sin(pi / 2T)^2 ~ 2.5e-18, which 1 + cos would round to 0
    last = Cosine().lr_at(10 ** 9 - 1, 10 ** 9, 1.0)
    assert last == pytest.approx(math.sin(math.pi / 2e9) ** 2, rel=1e-6) and last > 0
    with pytest.raises(ValueError, match=r"warmup=5.*5"):
        Cosine(warmup=5).lr_at(0, 5, 0.1)


@pytest.mark.parametrize("make, err, text", [
    (lambda: OneCycle(pct_start=1.5), ValueError, "pct_start"),
    (lambda: OneCycle(pct_start=-0.1), ValueError, "pct_start"),
    (lambda: OneCycle(pct_start=float("nan")), ValueError, "pct_start"),
    (lambda: OneCycle(div_factor=0), ValueError, "div_factor"),
    (lambda: OneCycle(final_div_factor=-1), ValueError, "final_div_factor"),
    (lambda: OneCycle(max_lr=0), ValueError, "max_lr"),
    (lambda: OneCycle(max_lr="1"), TypeError, "max_lr"),
    (lambda: OneCycle(anneal="exp"), ValueError, "anneal"),
    (lambda: Cosine(min_lr=-1), ValueError, "min_lr"),
    (lambda: Cosine(min_lr=float("inf")), ValueError, "min_lr"),
    (lambda: Cosine(warmup=-1), ValueError, "warmup"),
    (lambda: Cosine(warmup=1.5), TypeError, "warmup"),
    (lambda: OneCycle().lr_at(10, 10, 0.1), ValueError, "step"),
    (lambda: Cosine().lr_at(-1, 10, 0.1), ValueError, "step"),
])
def test_bad_arguments(make, err, text):
    with pytest.raises(err, match=text):
        make()


def test_repr_and_kinds():
    assert repr(OneCycle(max_lr=0.5, anneal="linear")) == (
        "OneCycle(max_lr=0.5, pct_start=0.3, div_factor=25.0, final_div_factor=10000.0, "
        "anneal='linear')")
    assert repr(Cosine(1e-4, 3)) == "Cosine(min_lr=0.0001, warmup=3)"
    assert OneCycle.per_step and Cosine.per_step
    for per_epoch in (fastmlp.Constant(), fastmlp.StepDecay(), fastmlp.ExponentialDecay(),
                      fastmlp.InverseScaling(), fastmlp.ReduceOnPlateau(),
                      make_schedule(lambda e, lr0: lr0)):
        assert per_epoch.per_step is False
    s = Cosine()
    assert make_schedule(s) is s and "Cosine" in fastmlp.__all__ and "OneCycle" in fastmlp.__all__


# ---- the Trainer ----------------------------------------------------------------------------

class Recording(OneCycle):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.calls = []

    def lr_at(self, step, total_steps, lr0):
        self.calls.append((step, total_steps, lr0))
        return super().lr_at(step, total_steps, lr0)


def _step_lrs(trainer):
    """The lr of every optimizer step the trainer takes (recorded in _step)."""
    seen, orig = [], trainer._step
    trainer._step = lambda *a: (seen.append(trainer.current_lr), orig(*a))[1]
    return seen


def test_trainer_asks_before_every_step_and_history_has_the_last():
    X, y = small_data(10)
    s = Recording()
    tr = Trainer(MLP((8, 4, 3), backend="numpy"), lr=0.2, batch_size=4, epochs=3, lr_schedule=s)
    seen = _step_lrs(tr)
    h = tr.fit(X, y)
    assert s.calls == [(k, 9, 0.2) for k in range(9)]   # 3 batches (4, 4, 2) an epoch
    assert seen == [OneCycle().lr_at(k, 9, 0.2) for k in range(9)] and tr.t == 9
    assert h.lr == [seen[2], seen[5], seen[8]] and tr._fit_steps is None
    # a batch larger than the data: one step an epoch
    s = Recording()
    Trainer(MLP((8, 4, 3)), batch_size=128, epochs=3, lr_schedule=s).fit(X, y)
    assert [c[:2] for c in s.calls] == [(0, 3), (1, 3), (2, 3)]


def test_skipped_zero_weight_batches_count():
    X, y = small_data(12)
    sw = np.ones(12)
    sw[4:8] = 0   # the second batch of each epoch carries no weight and takes no step
    s = Recording()
    tr = Trainer(MLP((8, 4, 3), backend="numpy"), batch_size=4, epochs=2, shuffle=False,
                 lr_schedule=s)
    seen = _step_lrs(tr)
    tr.fit(X, y, sample_weight=sw)
    assert [c[0] for c in s.calls] == list(range(6)) and tr.t == 4
    assert seen == [OneCycle().lr_at(k, 6, 0.01) for k in (0, 2, 3, 5)]


@pytest.mark.parametrize("backend", ["numpy", None], ids=["numpy", "default"])
@pytest.mark.parametrize("schedule, opt", [
    (OneCycle(), dict(optimizer="sgd", lr=0.2, momentum=0.9, weight_decay=1e-3)),
    (Cosine(min_lr=1e-4, warmup=3), dict(optimizer="adam", lr=1e-2))], ids=["onecycle", "cosine"])
def test_fit_equals_manual_steps_at_the_schedules_lr(backend, schedule, opt):
    X, y = small_data(50)
    kw = {} if backend is None else dict(backend=backend)
    a, b = MLP((8, 16, 3), seed=1, **kw), MLP((8, 16, 3), seed=1, **kw)
    Trainer(a, batch_size=16, epochs=3, shuffle=False, lr_schedule=schedule, **opt).fit(X, y)
    tr = Trainer(b, batch_size=16, epochs=3, **opt)
    total = 3 * 4   # batches of 16, 16, 16, 2
    for k in range(total):
        s = 16 * (k % 4)
        tr.current_lr = schedule.lr_at(k, total, opt["lr"])
        tr.step(X[s:s + 16], y[s:s + 16])
    for p, q in zip(a.weights + a.biases, b.weights + b.biases):
        assert p.tobytes() == q.tobytes()


def test_early_stopping_callbacks_and_fit_epoch():
    Xtr, ytr = small_data(200, seed=1)
    Xva, yva = small_data(60, seed=2)
    s = Recording()
    tr = Trainer(MLP((8, 16, 3), seed=0), batch_size=50, epochs=10, lr_schedule=s,
                 callbacks=[lambda h: len(h) == 3])
    h = tr.fit(Xtr, ytr, Xva, yva)
    assert len(h) == 3 and [c[:2] for c in s.calls] == [(k, 40) for k in range(12)]
    s = Recording(max_lr=0.05)
    h = Trainer(MLP((8, 16, 3), seed=0), batch_size=50, epochs=40, lr_schedule=s,
                early_stopping=fastmlp.EarlyStopping("val_loss", patience=0,
                                                     min_delta=1e9)).fit(Xtr, ytr, Xva, yva)
    assert len(h) == 2 and len(s.calls) == 8   # stopped early: the schedule just stops
    assert h.lr == [s.lr_at(3, 160, 0.01), s.lr_at(7, 160, 0.01)]
    # outside fit the schedule is not consulted: fit_epoch trains at current_lr (the fit's
    # last) or at its lr
    last, seen = OneCycle().lr_at(11, 40, 0.01), _step_lrs(tr)
    tr.fit_epoch(Xtr, ytr)
    tr.fit_epoch(Xtr, ytr, lr=0.003)
    assert seen == [last] * 4 + [0.003] * 4 and len(tr.schedule.calls) == 12


def test_bad_lr_from_a_per_step_schedule_stops_the_fit():
    class Zero:
        per_step = True

        def lr_at(self, step, total_steps, lr0):
            return 0.0 if step == 2 else lr0
    X, y = small_data(20)
    tr = Trainer(MLP((8, 4, 3)), batch_size=5, epochs=2, lr_schedule=Zero())
    with pytest.raises(ValueError, match="non-positive lr 0.0 at step 2 of 8"):
        tr.fit(X, y)
    assert tr.t == 2 and tr._fit_steps is None
    with pytest.raises(ValueError, match="warmup=8"):
        Trainer(MLP((8, 4, 3)), batch_size=5, epochs=2, lr_schedule=Cosine(warmup=8)).fit(X, y)
    with pytest.raises(ValueError, match="lr_schedule"):   # per_step without lr_at
        Trainer(MLP((8, 4, 3)), lr_schedule=type("S", (), {"per_step": True})())


def test_divergence_under_a_per_step_schedule():
    class Blowup:
        per_step = True

        def lr_at(self, step, total_steps, lr0):
            return lr0 if step < 3 else 1e300
    X, y = small_data(40)
    m = MLP((8, 16, 3), seed=0)
    tr = Trainer(m, lr=0.05, batch_size=5, epochs=2, lr_schedule=Blowup(), snapshot_every=1)
    with pytest.raises(fastmlp.TrainingDivergedError, match="lr=1e\\+300"):
        tr.fit(X, y)
    assert all(np.isfinite(p).all() for p in m.weights + m.biases)


def test_per_epoch_schedules_unchanged(digits):
    # a per-epoch schedule's fit is fit_epoch at each epoch's lr, bit for bit
    Xtr, ytr = digits[:2]
    a, b = MLP((64, 16, 10), seed=2), MLP((64, 16, 10), seed=2)
    h = Trainer(a, lr=0.1, epochs=3, seed=5, lr_schedule=fastmlp.StepDecay(0.5)).fit(Xtr, ytr)
    assert h.lr == [0.1, 0.05, 0.025]
    tr = Trainer(b, lr=0.1, epochs=3, seed=5)
    perm = np.arange(len(ytr))
    for lr in h.lr:
        tr._rng.shuffle(perm)
        tr.fit_epoch(Xtr, ytr, order=perm, lr=lr)
    for p, q in zip(a.weights + a.biases, b.weights + b.biases):
        assert p.tobytes() == q.tobytes()
