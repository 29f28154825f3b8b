"""What fastmlp's scikit-learn estimators share: parameters, initialisation, the stochastic and
L-BFGS solvers, stopping rules and the link to an MLP.

Design: scikit-learn's `BaseMultilayerPerceptron` line for line where its behaviour is
visible (the parameters and their validation, Glorot-uniform initialisation drawn in its
order, the shuffles, batch sizes, loss curve, L2 convention, learning-rate schedules and
stopping rules), with every forward/backward pass and optimizer update done by an `MLP` and
a `Trainer`.  The epochs are `Trainer.fit_epoch`; scikit-learn's per-batch conventions (the
L2 term 0.5·alpha·Σ‖W‖² divided by the batch's weight, and Adam's epsilon added to the
uncorrected sqrt(v)) are `_SklearnTrainer.batch_hyperparameters`, so the fused step is built
once per fit.  `coefs_` / `intercepts_` are the model's own parameter arrays (trained in
place).  The MLP holds a backend object (not picklable) and is rebuilt lazily after
unpickling; the optimizer state lives on the estimator as plain arrays, so `partial_fit`
resumes exactly after a pickle.  The classifier (classifier.py) adds the labels and the
output layer.
"""
import math
import warnings
from numbers import Integral, Real

import numpy as np
import scipy.optimize
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils import shuffle as _shuffle
from sklearn.utils._param_validation import Interval, Options, StrOptions
from sklearn.utils.optimize import _check_optimize_result
from sklearn.utils.validation import check_is_fitted, validate_data

from ..model import MLP
from ..trainer import Trainer, TrainingDivergedError

STOCHASTIC = ("sgd", "adam")


def _lbfgs_print_options(verbose):
    try:  # scipy renamed/deprecated `iprint`; sklearn keeps the shim
        from sklearn.utils.fixes import _get_additional_lbfgs_options_dict
    except ImportError:
        return {}
    return _get_additional_lbfgs_options_dict("iprint", 1 if verbose else -1)


class _SklearnTrainer(Trainer):
    """A Trainer with scikit-learn's per-batch hyper-parameters: weight decay
    0.5·alpha / (the batch's weight), and for Adam eps / sqrt(1 - beta2**t) (scikit-learn adds
    epsilon to sqrt(v) before the bias correction; the Trainer adds it after)."""

    def __init__(self, model, alpha, **kwargs):
        super().__init__(model, **kwargs)
        self.alpha = float(alpha)

    def batch_hyperparameters(self, batch_weight, step):
        eps = self.eps
        if self.optimizer == "adam":
            eps = self.eps / math.sqrt(1.0 - self.beta2 ** step)
        return 0.5 * self.alpha / batch_weight, eps


class BaseMLP(BaseEstimator):
    """Parameters, fitting and the MLP behind MLPClassifier (see its docstring)."""

    _parameter_constraints: dict = {
        "hidden_layer_sizes": ["array-like", Interval(Integral, 1, None, closed="left")],
        "activation": [StrOptions({"identity", "logistic", "tanh", "relu"})],
        "solver": [StrOptions({"lbfgs", "sgd", "adam"})],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "batch_size": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "learning_rate": [StrOptions({"constant", "invscaling", "adaptive"})],
        "learning_rate_init": [Interval(Real, 0, None, closed="neither")],
        "power_t": [Interval(Real, 0, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "shuffle": ["boolean"],
        "random_state": ["random_state"],
        "tol": [Interval(Real, 0, None, closed="left")],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
        "momentum": [Interval(Real, 0, 1, closed="left")],
        "nesterovs_momentum": ["boolean"],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "beta_1": [Interval(Real, 0, 1, closed="left")],
        "beta_2": [Interval(Real, 0, 1, closed="left")],
        "epsilon": [Interval(Real, 0, None, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left"), Options(Real, {np.inf})],
        "max_fun": [Interval(Integral, 1, None, closed="left")],
        "backend": [StrOptions({"auto", "numpy", "numba", "cython"})],
        "dtype": [StrOptions({"float32", "float64"}), Options(type, {np.float32, np.float64}),
                  Options(np.dtype, {np.dtype(np.float32), np.dtype(np.float64)})],
    }

    def __init__(self, hidden_layer_sizes, activation, solver, alpha, batch_size, learning_rate,
                 learning_rate_init, power_t, max_iter, shuffle, random_state, tol, verbose,
                 warm_start, momentum, nesterovs_momentum, early_stopping, validation_fraction,
                 beta_1, beta_2, epsilon, n_iter_no_change, max_fun, backend, dtype):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.backend = backend
        self.dtype = dtype

    def _check_solver(self):
        if self.solver not in STOCHASTIC:
            raise AttributeError(f"partial_fit is only available for stochastic optimizers. "
                                 f"{self.solver} is not stochastic.")
        return True

    def __getstate__(self):
        state = dict(super().__getstate__())  # BaseEstimator may hand back __dict__ itself
        state.pop("_model", None)  # holds a backend object; rebuilt from coefs_ on demand
        return state

    # ---- fitting (subclasses provide _targets, _sample_weight, _n_outputs, _validation_score,
    # _stratify and _init_output) -------------------------------------------------------------
    def _fit(self, X, y, sample_weight, incremental):
        if self.activation != "relu":
            raise ValueError(f"activation={self.activation!r} is not supported: fastmlp trains "
                             f"ReLU networks only (use sklearn.neural_network.MLPClassifier "
                             f"for other activations)")
        hidden = self.hidden_layer_sizes
        hidden = list(hidden) if np.iterable(hidden) else [hidden]
        if not all(isinstance(h, Integral) and not isinstance(h, bool) and h > 0
                   for h in hidden):
            raise ValueError(f"hidden_layer_sizes must be positive integers, got "
                             f"{self.hidden_layer_sizes!r}")
        dtype = np.dtype(self.dtype)
        first_pass = not hasattr(self, "coefs_") or (not self.warm_start and not incremental)
        X, y = validate_data(self, X, y, dtype=dtype, order="C", reset=first_pass)
        y_enc = self._targets(y, incremental)
        sw = self._sample_weight(sample_weight, X, y, incremental)
        sizes = [X.shape[1]] + [int(h) for h in hidden] + [self._n_outputs()]
        self._random_state = check_random_state(self.random_state)
        if first_pass:
            self._initialize(sizes, dtype)
        elif [c.shape for c in self.coefs_] != list(zip(sizes[:-1], sizes[1:])):
            raise ValueError(f"warm_start / partial_fit needs the same layer sizes: the "
                             f"network has {[c.shape for c in self.coefs_]}, the parameters "
                             f"and data give {sizes}")
        model = self._get_model(fit=True)
        if self.solver == "lbfgs":
            self._fit_lbfgs(model, X, y_enc, sw)
        else:
            self._fit_stochastic(model, X, y_enc, sw, incremental)
        return self

    def _initialize(self, sizes, dtype):
        """sklearn's Glorot-uniform draws, in its order: per layer coefs then intercepts."""
        self.n_iter_, self.t_ = 0, 0
        self.n_layers_ = len(sizes)
        self.n_outputs_ = sizes[-1]
        self.coefs_, self.intercepts_ = [], []
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            drawn = self._drawn_units(fan_out) if i == len(sizes) - 2 else fan_out
            bound = np.sqrt(6.0 / (fan_in + drawn))
            W = self._random_state.uniform(-bound, bound, (fan_in, drawn))
            b = self._random_state.uniform(-bound, bound, drawn)
            W, b = self._init_output(W, b, fan_out) if i == len(sizes) - 2 else (W, b)
            self.coefs_.append(np.ascontiguousarray(W, dtype))
            self.intercepts_.append(np.ascontiguousarray(b, dtype))
        for attr in ("_model", "_opt_state", "_best_params"):
            self.__dict__.pop(attr, None)
        if self.solver in STOCHASTIC:
            self.loss_curve_ = []
            self._no_improvement_count = 0
            if self.early_stopping:
                self.validation_scores_, self.best_validation_score_ = [], -np.inf
                self.best_loss_ = None
            else:
                self.best_loss_ = np.inf
                self.validation_scores_ = self.best_validation_score_ = None

    def _drawn_units(self, fan_out):
        """Output units sklearn draws initial weights for (the classifier's binary case: 1)."""
        return fan_out

    def _init_output(self, W, b, fan_out):
        """The output layer's initial (W, b) from sklearn's draws."""
        return W, b

    def _get_model(self, fit=False):
        """The MLP whose parameter arrays are coefs_ / intercepts_ (built when missing)."""
        params = self.coefs_ + self.intercepts_
        m = self.__dict__.get("_model")
        if (m is not None and len(m.weights) + len(m.biases) == len(params)
                and all(p is q for p, q in zip(m.weights + m.biases, params))
                and (not fit or (m.dtype == np.dtype(self.dtype)
                                 and self.backend in ("auto", m.backend.name)))):
            return m
        dtype = np.dtype(self.dtype) if fit else self.coefs_[0].dtype
        if dtype not in (np.float32, np.float64):
            dtype = np.dtype(self.dtype)
        sizes = [self.coefs_[0].shape[0]] + [c.shape[1] for c in self.coefs_]
        m = MLP(sizes, dtype=dtype, seed=0, backend=self.backend)
        for own, src in ((m.weights, self.coefs_), (m.biases, self.intercepts_)):
            for i, a in enumerate(src):
                if (isinstance(a, np.ndarray) and a.dtype == dtype and a.shape == own[i].shape
                        and a.flags.c_contiguous and (a.flags.writeable or not fit)):
                    own[i] = a  # share: training updates coefs_ in place
                else:
                    np.copyto(own[i], a)
                    if fit:
                        src[i] = own[i]
        self._model = m
        return m

    def _batch_size(self, n):
        if self.batch_size == "auto":
            return min(200, n)
        if self.batch_size > n:
            warnings.warn("Got `batch_size` less than 1 or larger than sample size. It is "
                          "going to be clipped")
        return int(np.clip(self.batch_size, 1, n))

    def _make_trainer(self, model, batch_size, fresh):
        """A Trainer on `model`; it resumes the saved optimizer state unless `fresh`."""
        sgd = self.solver == "sgd"
        mom = float(self.momentum) if sgd else 0.0
        tr = _SklearnTrainer(model, self.alpha, optimizer=self.solver,
                             lr=self.learning_rate_init, momentum=mom,
                             nesterov=bool(sgd and self.nesterovs_momentum and mom > 0),
                             beta1=self.beta_1, beta2=self.beta_2, eps=self.epsilon,
                             batch_size=batch_size, epochs=1, shuffle=False)
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

    def _split(self, X, y, sw):
        """sklearn's validation split: the same RNG use, stratified where sklearn stratifies."""
        arrays = (X, y) if sw is None else (X, y, sw)
        parts = train_test_split(*arrays, random_state=self._random_state,
                                 test_size=self.validation_fraction, stratify=self._stratify(y))
        if parts[1].shape[0] < 2:
            raise ValueError("The validation set is too small. Increase 'validation_fraction' "
                             "or the size of your dataset.")
        parts = [np.ascontiguousarray(p) for p in parts] + [None, None]
        return parts[0], parts[2], parts[4], parts[1], parts[3], parts[5]

    def _fit_stochastic(self, model, X, y, sw, incremental):
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
            X, y, sw, X_val, y_val, sw_val = self._split(X, y, sw)
        else:
            X_val = y_val = sw_val = None
        n = X.shape[0]
        tr = self._make_trainer(model, self._batch_size(n), fresh=not incremental)
        sample_idx = np.arange(n)
        try:
            self.n_iter_ = 0
            for _ in range(self.max_iter):
                order = None
                if self.shuffle:
                    order = sample_idx = _shuffle(sample_idx, random_state=self._random_state)
                self.loss_, _ = tr.fit_epoch(X, y, sw, order=order, lr=self._lr,
                                             check_input=False)
                self._opt_t = tr.t
                self.n_iter_ += 1
                self.t_ += n
                self.loss_curve_.append(self.loss_)
                if self.verbose:
                    print("Iteration %d, loss = %.8f" % (self.n_iter_, self.loss_))
                self._update_no_improvement_count(model, X_val, y_val, sw_val)
                if self.solver == "sgd" and self.learning_rate == "invscaling":
                    self._set_lr(tr, self.learning_rate_init / (self.t_ + 1) ** self.power_t)
                if self._no_improvement_count > self.n_iter_no_change:
                    what = "Validation score" if self.early_stopping else "Training loss"
                    msg = (f"{what} did not improve more than tol={self.tol:f} for "
                           f"{self.n_iter_no_change} consecutive epochs.")
                    if self.solver == "adam" or self.learning_rate != "adaptive":
                        if self.verbose:
                            print(msg + " Stopping.")
                        break
                    if self._lr <= 1e-6:
                        if self.verbose:
                            print(msg + " Learning rate too small. Stopping.")
                        break
                    self._set_lr(tr, self._lr / 5.0)
                    if self.verbose:
                        print(msg + " Setting learning rate to %f" % self._lr)
                    self._no_improvement_count = 0
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
        """scipy's L-BFGS-B on the model's loss and gradients, parameters packed as float64."""
        params = model.weights + model.biases
        bounds = np.cumsum([0] + [p.size for p in params])
        spans = list(zip(bounds[:-1], bounds[1:]))
        wd = 0.5 * self.alpha / (X.shape[0] if sw is None else float(sw.sum(dtype=np.float64)))

        def unpack(x):
            for p, (a, b) in zip(params, spans):
                np.copyto(p.reshape(-1), x[a:b], casting="same_kind")

        x_good = None  # the last parameters with a finite loss, restored on divergence

        def loss_grad(x):
            nonlocal x_good
            unpack(x)
            loss, dW, db = model.loss_and_grads(X, y, wd, sw)
            if not math.isfinite(loss):
                unpack(x0 if x_good is None else x_good)
                raise TrainingDivergedError(f"L-BFGS loss became {loss}; the network was reset "
                                            f"to the last parameters with a finite loss. Scale "
                                            f"the inputs or change alpha")
            if x_good is None:
                x_good = x.copy()
            else:
                np.copyto(x_good, x)
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
        unpack(res.x)

    # ---- prediction -------------------------------------------------------------------------
    def to_onnx(self, path=None, dtype=None, opset=18):
        """Export the fitted network to ONNX (fastmlp/onnx.py; the `onnx` extra): input `X`,
        outputs `label` and `probabilities` (classifiers) or `variable` (regressors), as
        predict / predict_proba give them.  Writes `path` when given; returns the ModelProto."""
        check_is_fitted(self)
        from ..onnx import estimator_to_onnx
        return estimator_to_onnx(self, path, dtype, opset)

    def _logits(self, X):
        """Output-layer pre-activations (n_samples, n_outputs) in the model's dtype."""
        check_is_fitted(self)
        model = self._get_model()
        X = validate_data(self, X, reset=False, dtype=model.dtype, order="C")
        return model.forward(X)
