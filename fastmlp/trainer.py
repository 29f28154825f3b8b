"""Trainer: mini-batch SGD / momentum / Nesterov / Adam over an MLP, with no per-step allocation.

Design: the one training loop of the package.  `fit_epoch` is one pass over the data: it
gathers each (shuffled) batch into a Workspace with the backend's `gather_rows` (float rows or
bf16 bits; one workspace per batch size, the last, smaller batch uses a cached row-slice of
it; CSR rows have their own gather) and makes one call to the backend's
fused `TrainStep` (docs/kernels.md): forward, backward and the in-place update of every
parameter.  The step is built once on the workspace, parameters and optimizer state; what
changes between steps (the learning rate, the step number, and the weight decay and Adam eps
of `batch_hyperparameters`) goes into `run` as arguments.  `fit` adds the epochs around it:
the lr schedule (per epoch, or per step: `_epoch` then asks it before every batch),
validation, callbacks, early stopping and the progress bar.  MLPClassifier
trains through `fit_epoch` too, with its own `batch_hyperparameters`.  A model with
standardize=True trains on (X - input_mean) / input_scale: `fit` sets the statistics from
its training set when they are not set yet; `fit` and `fit_epoch` standardise each batch as
they gather it (`gather_rows` with the statistics: no standardised copy of the training set;
precision="bf16" standardises X once, into its bf16 bits), `fit` standardises X_val once, and
`step` standardises its batch into the workspace.
"""
import math
import time
import weakref

import numpy as np

from .backends import onednn, reference
from .backends import validation as V
from .backends.blas import gemm_pool
from .backends.contract import (check_label_smoothing, check_precision, check_seed,
                                gemm_threads)
from .backends.csr import CSR, batch_capacity
from .history import History
from .model import MLP, r2_score
from .threads import ThreadPolicy, check_threads
from .schedules import EarlyStopping, _improved, make_schedule

try:
    from .backends._pool import gather as _pool_gather_rows
except ImportError:   # no pool built: Trainer._pool_gather finds no pool either
    _pool_gather_rows = None


class TrainingDivergedError(FloatingPointError):
    """The training loss became NaN or infinite; the model holds the last finite weights."""


class _Steered:
    """`with trainer._steered:` -- the steps inside run under the thread policy
    (fastmlp.threads): the fused step's large GEMMs on the policy's cap of threads, the GEMM
    provider's pool at 1 thread until the block ends, when it gets its count back.
    `recheck()` applies the policy's current cap (an epoch calls it before each batch); for
    the reference step, which steers nothing, both are no-ops.  One per Trainer, reused, so
    an epoch allocates nothing for it; not re-entrant (nor is the policy)."""

    __slots__ = ("trainer", "policy", "cap")

    def __init__(self, trainer):
        self.trainer, self.policy, self.cap = trainer, None, 1

    def __enter__(self):
        tr = self.trainer
        self.policy = tr._steering(tr._train_step())
        if self.policy is not None:
            try:
                self.cap = self.policy.begin()
                tr._plan.set_threads(self.cap)
            except BaseException:
                self.__exit__()
                raise
        return self

    def recheck(self):
        if self.policy is not None:
            cap = self.policy.cap()
            if cap != self.cap:
                self.cap = cap
                self.trainer._plan.set_threads(cap)

    def __exit__(self, *exc):
        policy, self.policy = self.policy, None
        if policy is not None:
            policy.end()


class Trainer:
    """Trains `model` (an MLP) with mini-batch SGD (plain, momentum, Nesterov) or Adam.

    The loss minimised is the model's output loss (mean NLL for softmax, binary
    cross-entropy for logistic, half squared error for identity, half Poisson deviance for
    exp) + weight_decay * sum ||W||^2 (biases are not decayed).
    Momentum is PyTorch's form: v = momentum v + g; W -= lr v (Nesterov: W -= lr (g + momentum v)).
    lr_schedule: None, a schedule from fastmlp.schedules, or a callable f(epoch, lr0).
        A per-epoch schedule (StepDecay, ...) sets the lr of each epoch of `fit`; a per-step
        one (OneCycle, Cosine: `per_step = True`) sets it before every batch of `fit`, as
        lr_at(k, total_steps, lr) with k = 0, 1, ... the batch over the fit (batches skipped
        for zero total weight count too) and total_steps = epochs * ceil(N / min(batch_size,
        N)); early stopping just ends it early.  History's lr column holds each epoch's lr,
        for a per-step schedule that of the epoch's last batch.  `fit_epoch` and `step` never
        consult the schedule: they train at `current_lr` (or fit_epoch's `lr`).
    early_stopping: None, True (val_loss, patience 5) or an EarlyStopping.
    callbacks: callables f(history) called after each epoch; returning True stops training.
    threads: "auto" (default) or an int >= 1: the BLAS threads the step's large GEMMs may use
        (fastmlp.threads): never more than the user's limit (OPENBLAS_NUM_THREADS, a
        threadpoolctl limit, the CPU affinity, ...), and with "auto" only while no other
        work is running on those cores; the pool's count is restored after every epoch.
    precision: None (default), the model's dtype in every product; or "bf16" (a float32
        model, `pip install "fastmlp[onednn]"`): every GEMM of the fused step takes bfloat16
        operands and accumulates in float32 (oneDNN), while the weights, optimizer state,
        biases and the loss stay float32.  `fit` converts a dense training set to bf16 once;
        `fit_epoch` also takes X as bf16 bits (uint16, from `bf16_input`).  Dense X only.
    dropout_seed: the key of the model's dropout masks (an int in [0, 2**64)); None: drawn
        from `seed` (a fresh one when seed is None).  Step k of the trainer (its `t` + 1)
        draws the masks of (dropout_seed, k), so a run is reproducible from its seeds.
    label_smoothing: ε in [0, 1] (softmax output): train on the targets (1 - ε)·onehot + ε/C.
        train_loss is then that smoothed cross-entropy; val_loss and evaluate() report the
        plain NLL.
    snapshot_every: steps between copies of the parameters taken right after a finite loss.
        When the loss turns NaN/inf and the current weights are finite they are kept; when
        they are not, the latest copy is restored: with 1 that is exactly the last finite
        weights, at the price of one copy of the parameters per step (about 2-4% of a step).
    """

    def __init__(self, model, optimizer="sgd", lr=0.01, momentum=0.0, nesterov=False,
                 beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, batch_size=128,
                 epochs=10, lr_schedule=None, shuffle=True, seed=None, early_stopping=None,
                 callbacks=(), verbose=False, snapshot_every=10, threads="auto",
                 precision=None, dropout_seed=None, label_smoothing=0.0):
        if not isinstance(model, MLP):
            raise TypeError(f"model must be a fastmlp.MLP, got {type(model).__name__}")
        if optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")
        self.model, self.optimizer = model, optimizer
        self.lr = V.check_number("lr", lr, low=0.0, low_inclusive=False)
        self.momentum = V.check_number("momentum", momentum, low=0.0)
        if self.momentum >= 1.0:
            raise ValueError(f"momentum must be < 1, got {momentum}")
        self.nesterov = bool(nesterov)
        if self.nesterov and optimizer == "sgd" and self.momentum == 0:
            raise ValueError("nesterov=True needs momentum > 0")
        self.beta1 = V.check_number("beta1", beta1, low=0.0)
        self.beta2 = V.check_number("beta2", beta2, low=0.0)
        if self.beta1 >= 1 or self.beta2 >= 1:
            raise ValueError(f"beta1 and beta2 must be in [0, 1), got {beta1}, {beta2}")
        self.eps = V.check_number("eps", eps, low=0.0, low_inclusive=False)
        self.weight_decay = V.check_number("weight_decay", weight_decay, low=0.0)
        self.batch_size = V.check_number("batch_size", batch_size, low=1, integer=True)
        self.epochs = V.check_number("epochs", epochs, low=1, integer=True)
        self.schedule = make_schedule(lr_schedule)
        self.shuffle = bool(shuffle)
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        if early_stopping is True:
            early_stopping = EarlyStopping()
        if early_stopping not in (None, False) and not isinstance(early_stopping, EarlyStopping):
            raise TypeError("early_stopping must be None, True or a fastmlp.EarlyStopping")
        self.early_stopping = early_stopping or None
        self.callbacks = tuple(callbacks)
        for cb in self.callbacks:
            if not callable(cb):
                raise TypeError(f"callbacks must be callables f(history), got {cb!r}")
        self.verbose = bool(verbose)
        self.snapshot_every = V.check_number("snapshot_every", snapshot_every, low=1,
                                             integer=True)
        self.threads = check_threads(threads)
        self.precision = check_precision(precision, model.dtype)
        self.dropout_seed = None if dropout_seed is None else check_seed(dropout_seed)
        self.label_smoothing = check_label_smoothing(label_smoothing, model.output)
        if self.precision == "bf16":
            onednn.load()   # ImportError naming the extra, now rather than at the first step
        self._policy = None
        self._steered = _Steered(self)
        self.history = History()
        self.current_lr = self.lr
        self._fit_steps = None   # per-step schedule inside fit: [next batch k, total_steps]
        self.t = 0  # optimizer steps taken (Adam's bias correction counts them)
        self._ws = None
        self._state = None
        self._snapshot = None
        self._plan, self._plan_key = None, None

    # ---- optimizer state -------------------------------------------------------------------
    def get_state(self):
        """(state, t): per parameter (weights, biases, then a batch_norm model's gammas:
        MLP.params) None (plain SGD), the velocity
        (momentum) or Adam's (m, v) -- the arrays themselves, updated in place by training --
        and the number of steps taken."""
        self._ensure_state()
        return self._state, self.t

    def set_state(self, state, t):
        """Resume from `get_state()`'s (state, t), e.g. saved from an earlier Trainer on the
        same model and optimizer.  The arrays are adopted, not copied."""
        params = self.model.params
        t = V.check_number("t", t, low=0, integer=True)
        if not isinstance(state, (list, tuple)) or len(state) != len(params):
            raise ValueError(f"state needs one entry per parameter ({len(params)})")
        for i, (p, s) in enumerate(zip(params, state)):
            if self.optimizer == "adam":
                if not (isinstance(s, tuple) and len(s) == 2):
                    raise ValueError(f"state[{i}] must be an (m, v) pair for Adam")
                arrays = s
            elif self.momentum > 0:
                arrays = (s,)
            elif s is not None:
                raise ValueError(f"state[{i}] must be None for plain SGD")
            else:
                arrays = ()
            for a in arrays:
                if not (isinstance(a, np.ndarray) and a.shape == p.shape and a.dtype == p.dtype
                        and a.flags.c_contiguous and a.flags.writeable):
                    raise ValueError(f"state[{i}] must be writeable C-contiguous arrays of "
                                     f"shape {p.shape} and dtype {p.dtype}")
        self._ensure_state()
        self._state, self.t = list(state), t

    def batch_hyperparameters(self, batch_weight, step):
        """(weight_decay, eps) for optimizer step number `step` (>= 1) on a batch whose total
        weight is `batch_weight` (its number of rows, or the sum of its sample weights): the
        constructor's values.  A subclass may vary them per step -- MLPClassifier's trainer
        does, for scikit-learn's conventions -- without rebuilding the fused step."""
        return self.weight_decay, self.eps

    # ---- buffers ---------------------------------------------------------------------------
    def _workspace(self, m, x_capacity=None):
        """Workspace rows for a batch of m rows: dense, or (x_capacity an int) with a CSR
        buffer of at least x_capacity entries; kept while it fits."""
        ws = self._ws
        if (ws is None or ws.n < m or (ws.x_capacity is None) != (x_capacity is None)
                or (x_capacity is not None and ws.x_capacity < x_capacity)):
            self._ws = self.model.workspace(max(m, min(self.batch_size, 1 << 20)), x_capacity)
        return self._ws.rows(m)

    def _ensure_state(self):
        if self._state is not None:
            return
        params = self.model.params
        if self.optimizer == "adam":
            self._state = [(np.zeros_like(p), np.zeros_like(p)) for p in params]
        elif self.momentum > 0:
            self._state = [np.zeros_like(p) for p in params]
        else:
            self._state = [None] * len(params)
        kept = params + self.model.buffers   # what a divergence restores
        self._snapshot = [p.copy() for p in kept]
        self._spare = [p.copy() for p in kept]
        self._snapshot_step = self.t

    # ---- one step ----------------------------------------------------------------------------
    def _train_step(self):
        """The backend's TrainStep for the current workspace, parameters and optimizer state
        (built once, rebuilt only when one of them is replaced)."""
        m, plan = self.model, self._plan
        raw = m.backend.raw
        hyper = (self.optimizer, self.momentum, self.nesterov, self.beta1, self.beta2,
                 self.precision, m.dropout, self.label_smoothing)
        key = self._plan_key
        if (plan is not None and key[0] is self._ws and key[1] is raw and key[2] is self._state
                and key[3] == hyper and plan.uses(m.weights, m.biases)
                and all(a is b for a, b in zip(key[4], m.gammas + m.buffers))):
            return plan
        ws, nl = self._ws, m.n_layers
        self._plan = raw.TrainStep(m.weights, m.biases, m.dweights, m.dbiases, ws.acts,
                                   ws.deltas, ws.dZ, self._state[:2 * nl], self.optimizer,
                                   momentum=self.momentum, nesterov=self.nesterov,
                                   beta1=self.beta1, beta2=self.beta2,
                                   activation=m.activation, output=m.output,
                                   precision=self.precision, dropout=m.dropout,
                                   dropout_seed=self._mask_seed() if any(m.dropout) else 0,
                                   label_smoothing=self.label_smoothing,
                                   batch_norm=m.bn_arrays(ws, self._state[2 * nl:]))
        self._plan_key = (self._ws, raw, self._state, hyper, m.gammas + m.buffers)
        return self._plan

    def _mask_seed(self):
        """dropout_seed, drawn once from `seed` when it was not given."""
        if self.dropout_seed is None:
            seed = self.seed if isinstance(self.seed, (int, np.integer)) else None
            self.dropout_seed = int(np.random.SeedSequence(seed).generate_state(
                1, np.uint64)[0])
        return self.dropout_seed

    def _steering(self, plan):
        """The ThreadPolicy of the step's GEMM provider (None for the reference step)."""
        provider = getattr(plan, "provider", None)
        if provider is None:
            return None
        if (self._policy is None or self._policy.provider is not provider
                or self._policy.threads != self.threads):
            self._policy = ThreadPolicy(provider, self.threads)
        return self._policy

    def _step(self, ws, X, y, sw=None, weight_decay=None, eps=None):
        """One optimizer step on the batch X, y (rows of the workspace `ws`, or checked
        arrays that fit it): the backend's fused TrainStep, plus the divergence snapshot.
        weight_decay / eps: this step's (the constructor's when None)."""
        plan = self._train_step()
        take = self.t % self.snapshot_every == 0
        if take:  # copy now, keep it only if this step's loss is finite
            for dst, src in zip(self._spare, self.model.params + self.model.buffers):
                np.copyto(dst, src)
        loss = plan.run(X, y, sw, self.current_lr, self.t + 1,
                        self.weight_decay if weight_decay is None else weight_decay,
                        self.eps if eps is None else eps)
        if not math.isfinite(loss):
            self._diverged(loss)  # the step updated nothing
        if take:
            self._snapshot, self._spare = self._spare, self._snapshot
            self._snapshot_step = self.t
        self.t += 1
        return loss

    def _diverged(self, loss):
        params = self.model.params + self.model.buffers
        restored = not all(V.all_finite(p) for p in params)
        if restored:
            for dst, src in zip(params, self._snapshot):
                np.copyto(dst, src)
            self._plan.sync()
        raise TrainingDivergedError(
            f"training loss became {loss} at step {self.t + 1} (lr={self.current_lr:g}); "
            + (f"the weights had become non-finite and were reset to those before step "
               f"{self._snapshot_step + 1}, the last copy (snapshot_every={self.snapshot_every})"
               if restored else "the weights are still finite and were kept")
            + ". Lower the learning rate.")

    def step(self, X_batch, y_batch):
        """Exactly one optimizer step on one batch X_batch (m, n_features), y_batch (m,) or
        (m, n_outputs); returns the batch's loss (before the update, without the weight-decay
        penalty).  A standardize model standardises X_batch into its workspace first (its
        statistics must be set: fit_input_stats)."""
        m = self.model
        X = m.check_X(X_batch, name="X_batch")
        y = m.check_targets(y_batch, X.shape[0], name="y_batch")
        self._ensure_state()
        self._dense_for_bf16(X)
        ws = self._workspace(X.shape[0], 0 if isinstance(X, CSR) else None)
        if m.standardize:
            X = m._standardized(X, out=ws.X)
        wd, eps = self.batch_hyperparameters(X.shape[0], self.t + 1)
        self._train_step().sync()   # the weights may have changed since the last step
        with self._steered:
            return self._step(ws, X, y, None, wd, eps)

    # ---- bf16 --------------------------------------------------------------------------------
    def _dense_for_bf16(self, X):
        if self.precision == "bf16" and isinstance(X, CSR):
            raise TypeError("precision='bf16' trains on dense input; this X is sparse "
                            "(densify it, or train it in full precision)")

    def _standardized_bf16(self, X):
        """The bf16 bits (N, D) uint16 of the standardised X (N, D), made block by block of
        rows through one ~4 MB float32 buffer: the same values as bf16_input of the
        standardised X, without a float32 copy of the training set."""
        m = self.model
        out = np.empty(X.shape, np.uint16)
        rows = max(1, min(X.shape[0], (1 << 20) // max(1, X.shape[1])))
        buf = np.empty((rows, X.shape[1]), m.dtype)
        order, stats, raw = self._in_order(X.shape[0]), m._input_stats(), m.backend.raw
        for s in range(0, X.shape[0], rows):
            e = min(s + rows, X.shape[0])
            raw.to_bf16(raw.gather_rows(X, order[s:e], buf[:e - s], *stats), out[s:e])
        return out

    def bf16_input(self, X):
        """X (N, D), checked, as the bf16 step reads it: its bfloat16 bits (uint16 (N, D),
        rounded to nearest even), converted once for many epochs.  X itself when precision is
        not "bf16" or X is bf16 already."""
        if self.precision != "bf16" or X.dtype == np.uint16:
            return X
        self._dense_for_bf16(X)
        return self.model.backend.raw.to_bf16(X, np.empty(X.shape, np.uint16))

    # ---- epochs ------------------------------------------------------------------------------
    def fit_epoch(self, X, y, sample_weight=None, *, order=None, lr=None, check_input=True,
                  accuracy=True):
        """One pass over X (N, D), y (N,) in mini-batches of `batch_size`, one optimizer step
        each.  Returns (loss, accuracy): the mean over the epoch's rows of each batch's loss
        (the output's loss plus the weight-decay penalty at that step's weight decay, both
        before its update) and the training accuracy seen along the way (None for a
        regression output).

        order : None, or a permutation (N,) of the rows to visit (the caller's shuffle);
            None visits them shuffled by the trainer's seed when `shuffle`, else in order.
        lr : this epoch's learning rate (default: the current one, `current_lr`).  The
            trainer's lr_schedule is not consulted, per-epoch or per-step (that is `fit`'s).
        check_input : False when X, y, sample_weight already passed the checks of `fit`
            (C-contiguous arrays of the model's dtype, int64 labels in range, weights of the
            model's dtype): skips a pass over X.  A batch whose weights sum to 0 is skipped.
        accuracy : False skips counting the correct predictions of each batch (an argmax over
            its outputs per step); the accuracy returned is then None.

        A standardize model standardises X (raw features, never bf16 bits) batch by batch as
        it gathers them (the `gather_rows` kernel: no standardised copy of X), with the
        statistics already set (by fit, or fit_input_stats; ValueError otherwise)."""
        m = self.model
        bits = self.precision == "bf16" and getattr(X, "dtype", None) == np.uint16
        if bits and m.standardize:
            raise TypeError("X: a standardize model standardises the float X it is given; "
                            "pass X itself to fit_epoch, not its bf16 bits")
        if bits and (X.ndim != 2 or X.shape[1] != m.n_features or not X.flags.c_contiguous):
            raise ValueError(f"X: bf16 bits must be a C-contiguous (N, {m.n_features}) array")
        if check_input:
            X = X if bits else m.check_X(X)
            y = m.check_targets(y, X.shape[0])
            if sample_weight is not None:
                sample_weight = V.check_sample_weight(sample_weight, X.shape[0], m.dtype)
        std = None
        if m.standardize:
            m._refuse_sparse(X)
            std = m._input_stats()   # ValueError without the statistics
        if lr is not None:
            self.current_lr = V.check_number("lr", lr, low=0.0, low_inclusive=False)
        n = X.shape[0]
        if order is None and self.shuffle:
            order = self._rng.permutation(n)
        elif order is not None and check_input:
            order = np.asarray(order)
            if order.shape != (n,) or order.dtype.kind not in "iu" or \
                    (n and (order.min() < 0 or order.max() >= n)):
                raise ValueError(f"order must be a permutation of the {n} rows, got "
                                 f"{order.dtype} {order.shape}")
            order = np.ascontiguousarray(order, dtype=np.int64)
        return self._epoch(X, y, sample_weight, order, None, std, accuracy)

    def _epoch(self, X, y, sw, order, bar, std=None, accuracy=True):
        """fit_epoch on checked arrays; `bar` a tqdm bar or None; std None, or the model's
        (input_mean, input_scale) to standardise each dense batch with as it is gathered;
        accuracy False: no training accuracy (None), no per-batch count."""
        m = self.model
        self._ensure_state()
        self._dense_for_bf16(X)
        n, bs = X.shape[0], min(self.batch_size, X.shape[0])
        sparse = isinstance(X, CSR)
        ws_full = self._workspace(bs, self._capacity(X, bs) if sparse else None)
        self._train_step().sync()   # the weights may have changed since the last epoch
        xbuf = ws_full.X if X.dtype != np.uint16 else self._bf16_batch(ws_full.n, X.shape[1])
        if (sparse or std is not None) and order is None:   # always gathered: rows in order
            order = self._in_order(n)
        if sw is not None and (getattr(self, "_sw_buf", None) is None
                               or self._sw_buf.shape[0] < bs or self._sw_buf.dtype != m.dtype):
            self._sw_buf = np.empty(bs, m.dtype)
        loss_sum, correct, classify = 0.0, 0, m.is_classifier and accuracy
        per_step = self._fit_steps
        self._gather_blocks = 0 if order is None else self._pool_gather(X, bs, sparse)
        with self._steered as steered:
            for s in range(0, n, bs):
                steered.recheck()
                if per_step is not None:
                    self.current_lr = self._step_lr(per_step)
                loss_sum, correct = self._batch(X, y, sw, order, ws_full, xbuf, s,
                                                min(n, s + bs), sparse, std, classify,
                                                loss_sum, correct, bar)
        return loss_sum / n, (correct / n if classify else None)

    def _pool_gather(self, X, bs, sparse):
        """The blocks of columns in which fastmlp's pool gathers this epoch's dense batches
        (its `gather`: the columns each thread's blocks of the first layer's K-split forward
        product, and of its weight gradient, read, so that part of the batch is written on
        the core that reads it; float rows, or a bf16 step's bits), or 0 for the backend's
        gather_rows: sparse input, the reference step, no pool, or a first product the pool
        does not cut along its inputs (csrc/pool.c fm_ksplit; below contract.MIN_GEMM_FLOPS,
        or a hidden layer or batch wider than the input)."""
        m = self.model
        bits = self.precision == "bf16" and X.dtype == np.uint16
        if sparse or (X.dtype != m.dtype and not bits) or \
                getattr(self._train_step(), "provider", None) is None:
            return 0
        address, chunks = gemm_pool()
        d, h = m.layer_sizes[0], m.layer_sizes[1]
        if not address or gemm_threads(2.0 * bs * d * h, chunks) < 2:
            return 0
        from .backends._pool import ksplit
        return chunks if ksplit(h, bs, d, chunks) else 0

    def _bf16_batch(self, n, d):
        """A (n, d) uint16 buffer for mini-batches of bf16 bits, kept while it fits."""
        buf = getattr(self, "_x16", None)
        if buf is None or buf.shape != (n, d):
            self._x16 = buf = np.empty((n, d), np.uint16)
        return buf

    def _batch(self, X, y, sw, order, ws_full, xbuf, s, e, sparse, std, classify, loss_sum,
               correct, bar):
        """One mini-batch, rows s..e-1 (of `order` when given), for _epoch: gathered into the
        workspace (X's rows into xbuf: the workspace's, or the bf16 bits' buffer; dense rows
        by the backend's `gather_rows`, float ones standardised by `std` when given), one step;
        returns the running (loss_sum, correct)."""
        m = self.model
        ws = ws_full.rows(e - s)
        if order is not None:
            idx = order[s:e]
            if sparse:
                Xb = ws.X
                if m.backend.raw.csr_gather_rows(X.data, X.indices, X.indptr, idx, Xb.data,
                                                 Xb.indices, Xb.indptr) < 0:
                    raise RuntimeError("a sparse mini-batch did not fit its buffer: X "
                                       "changed during the epoch")
            elif self._gather_blocks:   # on the pool's threads, as the step's GEMMs read it
                # (float rows, standardised when std is given, or bf16 bits)
                Xb = _pool_gather_rows(X, idx, xbuf[: e - s], *(std or (None, None)),
                                       self._gather_blocks, self._steered.cap >= 2)
            else:   # float rows (standardised when std is given), or bf16 bits
                Xb = m.backend.raw.gather_rows(X, idx, xbuf[: e - s], *(std or ()))
            yb = np.take(y, idx, axis=0, out=ws.y)
            swb = None if sw is None else np.take(sw, idx, out=self._sw_buf[: e - s])
        else:
            Xb, yb, swb = X[s:e], y[s:e], None if sw is None else sw[s:e]
        weight = e - s if swb is None else float(swb.sum(dtype=np.float64))
        if not weight > 0:
            return loss_sum, correct  # a batch with zero total weight carries no gradient
        wd, eps = self.batch_hyperparameters(weight, self.t + 1)
        penalty = m.penalty(wd)
        loss = self._step(ws, Xb, yb, swb, wd, eps)
        loss_sum += (loss + penalty) * (e - s)
        if classify:
            correct += m._n_correct(ws, yb)
        if bar is not None:
            bar.update(e - s)
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False,
                            **({"acc": f"{correct / e:.3f}"} if classify else {}))
        return loss_sum, correct

    def _capacity(self, X, bs):
        """Stored entries the largest mini-batch of CSR X can hold (batch_capacity), computed
        once per X (an O(N) pass) and kept, with a weak reference to X, for later epochs."""
        kept = getattr(self, "_capacity_of", None)
        if kept is None or kept[0]() is not X or kept[1] != bs:
            self._capacity_of = kept = (weakref.ref(X), bs, batch_capacity(X, bs))
        return kept[2]

    def _in_order(self, n):
        """np.arange(n), kept between epochs."""
        rows = getattr(self, "_rows", None)
        if rows is None or rows.shape[0] != n:
            self._rows = rows = np.arange(n, dtype=np.int64)
        return rows

    def fit(self, X, y, X_val=None, y_val=None, sample_weight=None):
        """Train for `epochs` epochs (fewer with early stopping).  X (N, D), y the targets of
        the model's output (N,) integer labels in [0, C) for softmax, (N, K) values
        otherwise); optional validation set; optional sample_weight (N,).  History rows hold
        train_loss, train_acc (classifiers), val_loss and val_acc (classifiers) or val_r2
        (regression), lr (a per-step schedule's: that of the epoch's last batch) and seconds.
        A standardize model whose statistics are not set yet gets them from this X
        (MLP.fit_input_stats); a later fit keeps them.  X's batches are standardised as they
        are gathered (no copy of X; precision="bf16": X is standardised once, into its bf16
        bits), X_val once, into one copy in the model's dtype.
        Returns the History (also kept as self.history).  On KeyboardInterrupt the model keeps
        its current weights and self.history holds the finished epochs; the interrupt is
        re-raised."""
        m = self.model
        X = m.check_X(X)
        y = m.check_targets(y, X.shape[0])
        sw = None if sample_weight is None else \
            V.check_sample_weight(sample_weight, X.shape[0], m.dtype)
        if (X_val is None) != (y_val is None):
            raise ValueError("give both X_val and y_val, or neither")
        if X_val is not None:
            X_val = m.check_X(X_val, name="X_val")
            y_val = m.check_targets(y_val, X_val.shape[0], name="y_val")
        es = self.early_stopping
        if es is not None and es.monitor.startswith("val") and X_val is None:
            raise ValueError(f"early stopping monitors {es.monitor!r} but no X_val/y_val given")
        score = "acc" if m.is_classifier else "r2"
        reported = ("train_loss", "val_loss") + (("train_acc", "val_acc") if m.is_classifier
                                                 else ("val_r2",))
        if es is not None and es.monitor not in reported:
            raise ValueError(f"early stopping monitors {es.monitor!r}, which a model with a "
                             f"{m.output!r} output does not report: choose from {reported}")
        std = None
        if m.standardize:
            m._refuse_sparse(X)
            if m.input_mean is None:
                m._fit_input_stats(X)
            if self.precision == "bf16":
                X = self._standardized_bf16(X)
            else:   # each batch is standardised as it is gathered: no copy of X
                std = m._input_stats()
            X_val = None if X_val is None else m._standardized(X_val)
        X = self.bf16_input(X)   # bf16: the (standardised) training set's bits, once per fit
        n = X.shape[0]
        perm = np.arange(n)
        per_step = getattr(self.schedule, "per_step", False)
        if per_step:
            self._fit_steps = [0, self.epochs * -(-n // min(self.batch_size, n))]
        try:
            return self._fit_epochs(X, y, sw, X_val, y_val, es, score, perm, per_step, std)
        finally:
            self._fit_steps = None

    def _fit_epochs(self, X, y, sw, X_val, y_val, es, score, perm, per_step, std):
        """fit's epochs on checked data (std: _epoch's)."""
        m, n = self.model, X.shape[0]
        best, wait, best_params = None, 0, None
        self.history = hist = History()
        for epoch in range(self.epochs):
            t0 = time.perf_counter()
            if not per_step:
                self.current_lr = self._epoch_lr(epoch, hist)
            if self.shuffle:
                self._rng.shuffle(perm)
            bar = self._progress(epoch, n)
            loss, acc = self._epoch(X, y, sw, perm if self.shuffle else None, bar, std)
            row = dict(epoch=epoch + 1, train_loss=loss)
            if acc is not None:
                row["train_acc"] = acc
            row["lr"] = self.current_lr
            if X_val is not None:
                row["val_loss"], row["val_" + score] = self._evaluate(X_val, y_val, True)
            row["seconds"] = time.perf_counter() - t0
            hist.append(**row)
            if bar is not None:
                bar.set_postfix({k: f"{v:.4f}" for k, v in row.items()
                                 if k.startswith(("train_", "val_"))})
                bar.close()
            stop = any(cb(hist) is True for cb in self.callbacks)
            if es is not None:
                value = row[es.monitor]
                if _improved(es.monitor, value, best, es.min_delta):
                    best, wait = value, 0
                    best_params = self._copy_params(best_params)
                else:
                    wait += 1
                    stop = stop or wait > es.patience
            if stop:
                break
        if es is not None and es.restore_best and best_params is not None:
            for dst, src in zip(m.params + m.buffers, best_params):
                np.copyto(dst, src)
            self._plan.sync()
        return hist

    def evaluate(self, X, y):
        """(loss + penalty, score) of the model on (X, y): the score is the accuracy for the
        classifier outputs, R² for regression (MLP.score).  X (N, n_features) raw: a
        standardize model standardises it."""
        m = self.model
        X = m.check_X(X)
        return self._evaluate(X, m.check_targets(y, X.shape[0]))

    def _evaluate(self, X, y, standardized=False):
        """evaluate() on X, y already validated (fit checks its validation set once, and
        standardises it once: `standardized`)."""
        m = self.model
        Z = m._forward(X, standardized)
        loss = reference.loss_grad(m.backend.raw, m.output, Z, y, np.empty_like(Z), None)
        if m.output == "softmax":
            score = float(np.mean(np.argmax(Z, axis=1) == y))
        elif m.output == "logistic":
            score = float(np.mean(np.all((Z > 0) == (y > 0.5), axis=1)))
        else:
            score = r2_score(y, np.exp(Z) if m.output == "exp" else Z)
        return loss + m.penalty(self.weight_decay), score

    def _epoch_lr(self, epoch, hist):
        lr = self.schedule.lr(epoch, self.lr, hist)
        if not (isinstance(lr, (int, float, np.floating)) and math.isfinite(lr) and lr > 0):
            raise ValueError(f"lr_schedule gave a non-finite or non-positive lr {lr!r} "
                             f"at epoch {epoch}")
        return float(lr)

    def _step_lr(self, steps):
        """The per-step schedule's lr for batch steps[0] of steps[1], checked as _epoch_lr
        checks; advances steps[0]."""
        k, total = steps
        lr = self.schedule.lr_at(k, total, self.lr)
        if not (isinstance(lr, (int, float, np.floating)) and math.isfinite(lr) and lr > 0):
            raise ValueError(f"lr_schedule gave a non-finite or non-positive lr {lr!r} "
                             f"at step {k} of {total}")
        steps[0] = k + 1
        return float(lr)

    def _copy_params(self, buf):
        params = self.model.params + self.model.buffers
        if buf is None:
            return [p.copy() for p in params]
        for dst, src in zip(buf, params):
            np.copyto(dst, src)
        return buf

    def _progress(self, epoch, n):
        if not self.verbose:
            return None
        from tqdm.auto import tqdm
        return tqdm(total=n, desc=f"epoch {epoch + 1}/{self.epochs}", unit="sample",
                    leave=True, dynamic_ncols=True, mininterval=0.2)
