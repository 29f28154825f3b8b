"""The solvers of fastmlp's scikit-learn estimators: sgd / adam epochs through
`Trainer.fit_epoch`, scipy's L-BFGS on `MLP.loss_and_grads`, and scikit-learn's stopping rules.

Design: `BaseMultilayerPerceptron._fit_stochastic` / `_fit_lbfgs` of scikit-learn line for line
where the behaviour is visible (shuffles, batch sizes, the loss curve, learning-rate schedules,
stopping rules, early stopping and its split, divergence), with every step done by the MLP's
backend.  scikit-learn's per-batch conventions (the L2 term 0.5·alpha·Σ‖W‖² divided by the
batch's weight, Adam's epsilon added to the uncorrected sqrt(v), and the squared error
reported as a mean over outputs while its gradient is that of the sum) are
`_SklearnTrainer`'s, so the fused step is built once per fit.

Divergence follows scikit-learn, not the Trainer: a non-finite batch loss leaves the network's
parameters non-finite, as scikit-learn's update with that batch's gradient does (they are set
to NaN: the fused step updates nothing on a non-finite loss), the remaining epochs report a
NaN loss, and `BaseMLP._fit` raises scikit-learn's ValueError at the end unless early
stopping restored a finite epoch.  L-BFGS hands non-finite losses to scipy, as scikit-learn.
"""
import math
import warnings

import numpy as np
import scipy.optimize
import scipy.sparse
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.utils.optimize import _check_optimize_result

from ..backends.csr import as_csr
from ..trainer import Trainer, TrainingDivergedError

STOCHASTIC = ("sgd", "adam")


def as_model_input(X, dtype):
    """X, validated already (validate_data: 2-D, finite, C-ordered, in the model's dtype), as
    the Trainer and MLP._forward take it unchecked: a scipy.sparse X as a CSR (converted
    once), anything else as it is (None too)."""
    return as_csr(X, dtype) if scipy.sparse.issparse(X) else X


def _lbfgs_print_options(verbose):
    try:  # scipy renamed/deprecated `iprint`; sklearn keeps the shim
        from sklearn.utils.fixes import _get_additional_lbfgs_options_dict
    except ImportError:
        return {}
    return _get_additional_lbfgs_options_dict("iprint", 1 if verbose else -1)


class _SklearnTrainer(Trainer):
    """A Trainer with scikit-learn's per-batch conventions: weight decay 0.5·alpha / (the
    batch's weight); for Adam eps / sqrt(1 - beta2**t) (scikit-learn adds epsilon to sqrt(v)
    before the bias correction, the Trainer after); and each batch's loss reported times
    `loss_scale` (1 / n_outputs for the squared error, which scikit-learn reports as a mean
    over the outputs while training on the gradient of their sum)."""

    def __init__(self, model, alpha, loss_scale=1.0, **kwargs):
        super().__init__(model, **kwargs)
        self.alpha, self.loss_scale = float(alpha), float(loss_scale)

    def batch_hyperparameters(self, batch_weight, step):
        eps = self.eps
        if self.optimizer == "adam":
            eps = self.eps / math.sqrt(1.0 - self.beta2 ** step)
        return 0.5 * self.alpha / batch_weight, eps

    def _step(self, *args):
        return super()._step(*args) * self.loss_scale


def _shuffle(sample_idx, random_state):
    """sklearn.utils.shuffle(sample_idx, random_state=random_state) for a 1-D index array:
    the same draw (`random_state.shuffle` of an arange) without its per-call validation
    (~140 µs, per epoch)."""
    perm = np.arange(sample_idx.shape[0])
    random_state.shuffle(perm)
    return sample_idx[perm]


class SolversMixin:
    """The sgd / adam / lbfgs solvers of BaseMLP (see the module docstring)."""

    def _loss_scale(self):
        """What scikit-learn's reported loss is per unit of the loss trained on."""
        return 1.0

    def _batch_size(self, n):
        if self.batch_size == "auto":
            return min(200, n)
        if self.batch_size > n:
            warnings.warn("Got `batch_size` less than 1 or larger than sample size. It is "
                          "going to be clipped")
        return int(np.clip(self.batch_size, 1, n))

    def _dropout_seed(self, model):
        """The key of the dropout masks: drawn from random_state once per estimator state
        (only when the model has dropout, so that random_state's other draws are
        scikit-learn's otherwise)."""
        if not any(model.dropout):
            return None
        if self.__dict__.get("_mask_seed") is None:
            self._mask_seed = int(self._random_state.randint(0, 2**31 - 1)) << 32 | \
                int(self._random_state.randint(0, 2**31 - 1))
        return self._mask_seed

    def _make_trainer(self, model, batch_size, fresh):
        """A Trainer on `model`; it resumes the saved optimizer state unless `fresh`."""
        sgd = self.solver == "sgd"
        mom = float(self.momentum) if sgd else 0.0
        tr = _SklearnTrainer(model, self.alpha, self._loss_scale(), optimizer=self.solver,
                             lr=self.learning_rate_init, momentum=mom,
                             nesterov=bool(sgd and self.nesterovs_momentum and mom > 0),
                             beta1=self.beta_1, beta2=self.beta_2, eps=self.epsilon,
                             batch_size=batch_size, epochs=1, shuffle=False,
                             threads=self.threads, precision=self.precision,
                             dropout_seed=self._dropout_seed(model))
        kind = (self.solver, mom > 0, model.dtype.name,
                tuple(p.shape for p in model.weights + model.biases))
        saved = self.__dict__.get("_opt_state")
        if not fresh and saved is not None and self.__dict__.get("_opt_kind") == kind:
            tr.set_state(saved, self._opt_t)
        else:
            self._lr, self._opt_t = float(self.learning_rate_init), 0
        self._opt_state, self._opt_kind = tr.get_state()[0], kind
        return tr

    def _set_lr(self, tr, lr):
        """Change the SGD learning rate.  The Trainer keeps PyTorch-style velocities (gradient
        units); rescaling them by old/new keeps the update equal to sklearn's velocities."""
        if self.solver == "sgd" and self.momentum > 0 and lr != self._lr:
            for v in tr.get_state()[0]:
                v *= self._lr / lr
        self._lr = float(lr)

    def _split(self, X, y, sw, stratify):
        """sklearn's validation split: the same RNG use, stratified where sklearn stratifies."""
        arrays = (X, y) if sw is None else (X, y, sw)
        parts = train_test_split(*arrays, random_state=self._random_state,
                                 test_size=self.validation_fraction, stratify=stratify)
        if parts[1].shape[0] < 2:
            raise ValueError("The validation set is too small. Increase 'validation_fraction' "
                             "or the size of your dataset.")
        parts = [p if scipy.sparse.issparse(p) else np.ascontiguousarray(p)
                 for p in parts] + [None, None]
        return parts[0], parts[2], parts[4], parts[1], parts[3], parts[5]

    def _fit_stochastic(self, model, X, y, sw, incremental, stratify):
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        # a warm start may switch solver or early_stopping: fill in what that run lacked
        if not hasattr(self, "loss_curve_"):
            self.loss_curve_, self._no_improvement_count = [], 0
        if not self.early_stopping and getattr(self, "best_loss_", None) is None:
            self.best_loss_ = np.inf
        if self.early_stopping:
            if getattr(self, "validation_scores_", None) is None:
                self.validation_scores_, self.best_validation_score_ = [], -np.inf
            if "_best_params" not in self.__dict__:
                self._best_params = [p.copy() for p in model.weights + model.biases]
            X, y, sw, X_val, y_val, sw_val = self._split(X, y, sw, stratify)
        else:
            X_val = y_val = sw_val = None
        n = X.shape[0]
        # converted once, not per epoch (the validation score runs every epoch)
        X, X_val = as_model_input(X, model.dtype), as_model_input(X_val, model.dtype)
        tr = self._make_trainer(model, self._batch_size(n), fresh=not incremental)
        X = tr.bf16_input(X)   # precision="bf16": the training set's bf16 bits, once
        sample_idx, diverged = np.arange(n), False
        try:
            self.n_iter_ = 0
            for _ in range(self.max_iter):
                order = None
                if self.shuffle:
                    order = sample_idx = _shuffle(sample_idx, random_state=self._random_state)
                self.loss_ = np.nan
                if not diverged:
                    try:
                        self.loss_, _ = tr.fit_epoch(X, y, sw, order=order, lr=self._lr,
                                                     check_input=False, accuracy=False)
                    except TrainingDivergedError:  # what sklearn's update would leave
                        diverged = True
                        for p in model.weights + model.biases:
                            p.fill(np.nan)
                self._opt_t = tr.t
                self.n_iter_ += 1
                self.t_ += n
                self.loss_curve_.append(self.loss_)
                if self.verbose:
                    print("Iteration %d, loss = %.8f" % (self.n_iter_, self.loss_))
                self._update_no_improvement_count(model, X_val, y_val, sw_val)
                if self.solver == "sgd" and self.learning_rate == "invscaling":
                    self._set_lr(tr, self.learning_rate_init / (self.t_ + 1) ** self.power_t)
                if self._no_improvement_count > self.n_iter_no_change and self._stops(tr):
                    break
                if incremental:
                    break
                if self.n_iter_ == self.max_iter:
                    warnings.warn(f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) "
                                  f"reached and the optimization hasn't converged yet.",
                                  ConvergenceWarning)
        except KeyboardInterrupt:
            warnings.warn("Training interrupted by user.")
        finally:
            self._opt_t = tr.t
        if self.early_stopping:  # restore the best weights, in place
            for dst, src in zip(model.weights + model.biases, self._best_params):
                np.copyto(dst, src)

    def _stops(self, tr):
        """n_iter_no_change epochs without improvement: stop, or (sgd with the adaptive
        schedule) divide the learning rate by 5, as sklearn's optimizers' trigger_stopping."""
        what = "Validation score" if self.early_stopping else "Training loss"
        msg = (f"{what} did not improve more than tol={self.tol:f} for "
               f"{self.n_iter_no_change} consecutive epochs.")
        if self.solver == "adam" or self.learning_rate != "adaptive":
            if self.verbose:
                print(msg + " Stopping.")
            return True
        if self._lr <= 1e-6:
            if self.verbose:
                print(msg + " Learning rate too small. Stopping.")
            return True
        self._set_lr(tr, self._lr / 5.0)
        if self.verbose:
            print(msg + " Setting learning rate to %f" % self._lr)
        self._no_improvement_count = 0
        return False

    def _update_no_improvement_count(self, model, X_val, y_val, sw_val):
        if self.early_stopping:
            score = self._validation_score(model, X_val, y_val, sw_val)
            self.validation_scores_.append(score)
            if self.verbose:
                print("Validation score: %f" % score)
            if score < self.best_validation_score_ + self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if score > self.best_validation_score_:
                self.best_validation_score_ = score
                for dst, src in zip(self._best_params, model.weights + model.biases):
                    np.copyto(dst, src)
        else:
            last = self.loss_curve_[-1]
            if last > self.best_loss_ - self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if last < self.best_loss_:
                self.best_loss_ = last

    def _fit_lbfgs(self, model, X, y, sw):
        """scipy's L-BFGS-B on the model's loss and gradients, parameters packed as float64;
        the loss as sklearn reports it (loss_scale), the gradient of the loss trained on."""
        params = model.weights + model.biases
        bounds = np.cumsum([0] + [p.size for p in params])
        spans = list(zip(bounds[:-1], bounds[1:]))
        wd = 0.5 * self.alpha / (X.shape[0] if sw is None else float(sw.sum(dtype=np.float64)))
        scale = self._loss_scale()
        X = as_model_input(X, model.dtype)

        def loss_grad(x):
            for p, (a, b) in zip(params, spans):
                np.copyto(p.reshape(-1), x[a:b], casting="same_kind")
            loss, dW, db = model.loss_and_grads(X, y, wd, sw)
            if scale != 1.0:
                penalty = model.penalty(wd)
                loss = (loss - penalty) * scale + penalty
            g = np.empty(bounds[-1])
            for d, (a, b) in zip(dW + db, spans):
                g[a:b] = d.reshape(-1)
            return loss, g

        x0 = np.concatenate([p.reshape(-1) for p in params]).astype(np.float64)
        res = scipy.optimize.minimize(
            loss_grad, x0, method="L-BFGS-B", jac=True,
            options={"maxfun": self.max_fun, "maxiter": self.max_iter, "gtol": self.tol,
                     **_lbfgs_print_options(self.verbose is True or self.verbose >= 1)})
        self.n_iter_ = _check_optimize_result("lbfgs", res, self.max_iter)
        self.loss_ = float(res.fun)
        for p, (a, b) in zip(params, spans):
            np.copyto(p.reshape(-1), res.x[a:b], casting="same_kind")
