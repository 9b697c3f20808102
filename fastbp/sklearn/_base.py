"""What the two estimators share: parameters, input checks, the training loops, the forward pass.

The stochastic loop is scikit-learn's ``BaseMultilayerPerceptron._fit_stochastic``
step for step (initialisation from the same random stream, batch order, loss
bookkeeping, stopping rules, messages), with the arithmetic done by fastbp's
layers and fused kernels. So ``random_state`` gives the same initial weights
and the same batches as scikit-learn, and ``loss_curve_`` agrees to float
tolerance (``tests/test_sklearn_equivalence.py``). ``solver="lbfgs"`` is
scikit-learn's ``_fit_lbfgs`` over fastbp's full-data objective
(:mod:`fastbp.sklearn._lbfgs`, ``tests/test_sklearn_lbfgs.py``).

As in scikit-learn, a training that diverges is not stopped: NaN losses are
recorded and training runs on until a stopping rule or ``max_iter``; then
early stopping puts back the best weights, and otherwise non-finite weights
raise scikit-learn's ValueError (``tests/test_sklearn_divergence.py``).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from .. import kernels
from ..data import ArraySource, Rows
from ..loop import defer_interrupts
from ..threads import limit_threads
from . import _checkpoint, _lbfgs, _params
from ._compiled import compiled_epoch
from ._network import BN_KEYS, Network, RegularizedNetwork, new_batch_norm_state
from ._outputs import OutputLoss, activate
from ._solvers import SGD, Adam

# Whether the plain MLP's epochs run compiled (fastbp/sklearn/_compiled.py); the tests turn it off to
# compare with the Python loop.
COMPILED = True
_PREDICT_ROWS = 4096  # rows per chunk when predicting: bounds the activations' memory


class BaseMLP(BaseEstimator):
    """Shared implementation of :class:`MLPClassifier` and :class:`MLPRegressor`."""

    def __init__(
        self,
        *,
        hidden_layer_sizes,
        activation,
        solver,
        alpha,
        batch_size,
        learning_rate,
        learning_rate_init,
        power_t,
        max_iter,
        shuffle,
        random_state,
        tol,
        verbose,
        warm_start,
        momentum,
        nesterovs_momentum,
        early_stopping,
        validation_fraction,
        beta_1,
        beta_2,
        epsilon,
        n_iter_no_change,
        max_fun,
        dtype,
        n_threads,
        dropout,
        batch_norm,
        checkpoint,
        checkpoint_every,
    ):
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
        self.dtype = dtype
        self.n_threads = n_threads
        self.dropout = dropout
        self.batch_norm = batch_norm
        self.checkpoint = checkpoint
        self.checkpoint_every = checkpoint_every

    # -- hooks for the subclasses -------------------------------------------
    def _check_params(self) -> list[int]:
        """Check fastbp's own parameters (scikit-learn's are checked by ``_fit_context``); the hidden sizes."""
        return _params.check(self)

    def _check_solver(self):
        """For ``available_if``: ``partial_fit`` only exists for the stochastic solvers (scikit-learn's text)."""
        if self.solver not in _params.STOCHASTIC_SOLVERS:
            raise AttributeError(
                f"partial_fit is only available for stochastic optimizers. {self.solver} is not stochastic."
            )
        return True

    def _validate_input(self, X, y, incremental, reset):  # pragma: no cover - abstract
        """(X, Y): checked X and the training targets, 2-D."""
        raise NotImplementedError

    def _out_activation(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def _extra_sample_weight(self, Y, incremental):
        """Per-sample weights implied by other parameters (class_weight), or None."""
        return None

    _score_function: Callable[..., float] | None = (
        None  # accuracy_score or r2_score: what validation scores use, as in scikit-learn
    )

    _net: Network | RegularizedNetwork  # set by _network(), not pickled

    # -- pickling: the layers are rebuilt from coefs_ on demand ---------------
    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_net", None)
        return state

    # -- inputs ---------------------------------------------------------------
    def _model_dtype(self, X, first_pass):
        if not first_pass:
            return self.coefs_[0].dtype
        return _params.resolve_dtype(self.dtype) or X.dtype

    @staticmethod
    def _as(X, dtype):
        """X read in ``dtype``: dense input as :class:`~fastbp.data.Rows` (converted a batch or block
        at a time, never copied whole: float64 data for a float32 network costs no float32 copy);
        sparse input as CSR (rows are gathered by index)."""
        if sp.issparse(X):
            return X.tocsr().astype(dtype, copy=False)
        if isinstance(X, Rows):
            return X if X.dtype == dtype else Rows(X.array, dtype, X.index)
        return Rows(np.asarray(X), dtype)

    @staticmethod
    def _sample_weight(sample_weight, X):
        """scikit-learn's ``_check_sample_weight`` (its errors and messages), then float64, non-negative."""
        if sample_weight is None:
            return None
        sw = np.asarray(_check_sample_weight(sample_weight, X), dtype=np.float64)
        if (sw < 0).any():
            # scikit-learn accepts negative weights; fastbp's minibatch normalisation assumes a
            # positive weight sum per batch, so they are refused instead of silently misused.
            raise ValueError(f"sample_weight: expected non-negative weights, got a minimum of {sw.min()}")
        return sw

    # -- fitting ----------------------------------------------------------------
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Train on ``X`` (n_samples, n_features) and ``y``: class labels (n_samples,) or label
        indicators (n_samples, n_labels) for the classifier, targets (n_samples,) or
        (n_samples, n_outputs) for the regressor.

        Returns
        -------
        self
        """
        return self._fit(X, y, sample_weight=sample_weight, incremental=False)

    def _fit(self, X, y, sample_weight=None, incremental=False):
        hidden = self._check_params()
        first_pass = not hasattr(self, "coefs_") or (not self.warm_start and not incremental)
        X, Y = self._validate_input(X, y, incremental, reset=first_pass)
        n_samples, n_features = X.shape
        sw = self._sample_weight(sample_weight, X)
        dtype = self._model_dtype(X, first_pass)
        X = self._as(X, dtype)
        extra = self._extra_sample_weight(Y, incremental)
        if extra is not None:
            sw = extra if sw is None else sw * extra
        if sw is not None and not sw.any():
            raise ValueError(
                "sample_weight: all sample weights are zero (after class_weight); at least one must be positive"
            )
        if Y.ndim == 1:
            Y = Y.reshape(-1, 1)
        self.n_outputs_ = Y.shape[1]
        units = [n_features, *hidden, self.n_outputs_]
        self._random_state = check_random_state(self.random_state)
        self._resume = self._open_checkpoint(X, Y, sw, incremental)
        if first_pass:
            self._initialize(units, dtype)
        else:
            shapes = [np.shape(c) for c in self.coefs_] + [np.shape(b) for b in self.intercepts_]
            expected = list(zip(units[:-1], units[1:])) + [(u,) for u in units[1:]]
            if shapes != expected:
                raise ValueError(
                    f"coefs_/intercepts_: the fitted layers have shapes {shapes}, which do not match "
                    f"the layer sizes {units} (features, hidden_layer_sizes, outputs); "
                    "fit again with warm_start=False"
                )
        self._prepare_regularization(hidden, dtype, first_pass)
        with limit_threads(self.n_threads):
            if self.solver in _params.STOCHASTIC_SOLVERS:
                self._fit_stochastic(X, Y, sw, incremental)
            else:
                self._fit_lbfgs(X, Y, sw)
        if not all(np.isfinite(a).all() for a in (*self.coefs_, *self.intercepts_)):
            raise ValueError(
                "Solver produced non-finite parameter weights. The input data may contain large "
                "values and need to be preprocessed."
            )
        return self

    def _open_checkpoint(self, X, Y, sw, incremental):
        """``(path, fingerprint, checkpoint found or None, random state at the start)``, or None.

        A checkpoint found puts the random state back where that fit started, so the
        initialisation and the early-stopping split are drawn again as they were.
        """
        path = _checkpoint.check_arguments(self)
        if path is None:
            return None
        if incremental:
            raise ValueError("checkpoint: partial_fit does not write checkpoints; set checkpoint=None or call fit")
        if self.solver not in _params.STOCHASTIC_SOLVERS:
            raise ValueError(
                f"checkpoint: needs solver='sgd' or 'adam' (L-BFGS runs in scipy), got solver={self.solver!r}"
            )
        fp = _checkpoint.fingerprint(self, X, Y, sw)
        found = _checkpoint.read(path) if os.path.exists(path) else None
        if found is not None:
            _checkpoint.check_fingerprint(found, fp)
            _checkpoint._set_rng(self._random_state, *found.start_rng())
        return path, fp, found, _checkpoint._rng_state(self._random_state)

    def _initialize(self, units, dtype):
        """scikit-learn's initialisation, drawing the same numbers from the same stream."""
        self.n_iter_ = 0
        self.t_ = 0
        self.n_layers_ = len(units)
        self.out_activation_ = self._out_activation()
        self.coefs_, self.intercepts_ = [], []
        for fan_in, fan_out in zip(units[:-1], units[1:]):
            factor = 2.0 if self.activation == "logistic" else 6.0  # Glorot et al.
            bound = np.sqrt(factor / (fan_in + fan_out))
            coef = self._random_state.uniform(-bound, bound, (fan_in, fan_out))
            intercept = self._random_state.uniform(-bound, bound, fan_out)
            self.coefs_.append(coef.astype(dtype, copy=False))
            self.intercepts_.append(intercept.astype(dtype, copy=False))
        self._best_coefs = [c.copy() for c in self.coefs_]
        self._best_intercepts = [i.copy() for i in self.intercepts_]
        self._best_extra: list = []
        if self.solver in _params.STOCHASTIC_SOLVERS:  # as scikit-learn: L-BFGS keeps no loss curve
            self._init_stochastic_state()

    def _init_stochastic_state(self):
        """The bookkeeping of the stochastic loop (loss curve, stopping counters, validation scores)."""
        self.loss_curve_ = []
        self._no_improvement_count = 0
        if self.early_stopping:
            self.validation_scores_ = []
            self.best_validation_score_ = -np.inf
            self.best_loss_ = None
        else:
            self.best_loss_ = np.inf
            self.validation_scores_ = None
            self.best_validation_score_ = None

    def _prepare_regularization(self, hidden, dtype, first_pass):
        """The dropout generator and batch-norm state for this fit (fresh on a first pass)."""
        rates = _params.dropout_rates(self.dropout, len(hidden))
        if any(rates) and (first_pass or getattr(self, "_dropout_seed", None) is None):
            # One draw from the fit's stream, after the initial weights: a given random_state
            # gives the same masks. (Only with dropout: the default path draws as scikit-learn.)
            self._dropout_seed = int(self._random_state.randint(0, 2**31 - 1))
            self._dropout_step = 0
        elif first_pass:
            self._dropout_seed, self._dropout_step = None, 0
        if not self.batch_norm:
            self.batch_norm_ = None
        elif first_pass or getattr(self, "batch_norm_", None) is None:
            self.batch_norm_ = new_batch_norm_state(hidden, dtype)

    def _network(self, training: bool = False) -> Network | RegularizedNetwork:
        """The layers over ``coefs_``/``intercepts_`` (and ``batch_norm_``); rebuilt (copying them in)
        when those arrays were replaced.

        ``training``: for ``fit``, which also needs the current ``dropout`` rates; prediction
        takes any network over the fitted arrays (dropout is the identity there).
        """
        bn = getattr(self, "batch_norm_", None)
        rates = None
        if training:
            rates = _params.dropout_rates(self.dropout, len(self.coefs_) - 1)
        net: Network | RegularizedNetwork | None = getattr(self, "_net", None)
        if bn is None and (rates is None or not any(rates)):  # the fast path: scikit-learn's network
            if isinstance(net, Network) and net.wraps(self.coefs_, self.intercepts_, self.activation):
                return net
            net = self._net = Network(self.coefs_, self.intercepts_, self.activation)
        else:
            if isinstance(net, RegularizedNetwork) and net.wraps(
                self.coefs_, self.intercepts_, self.activation, bn, rates
            ):
                return net
            if rates is None:
                rates = [0.0] * (len(self.coefs_) - 1)
            seed = getattr(self, "_dropout_seed", None) or 0
            net = RegularizedNetwork(
                self.coefs_, self.intercepts_, self.activation, rates, bn, seed, getattr(self, "_dropout_step", 0)
            )
            self._net = net
            if net.batch_norm is not None:
                self.batch_norm_ = [dict(s) for s in net.batch_norm]
        # New lists: replacing an item of coefs_ must not change the network's own list.
        self.coefs_, self.intercepts_ = list(net.coefs), list(net.intercepts)
        return net

    def _extra_state(self) -> list:
        """The fitted arrays besides coefs_/intercepts_ that early stopping keeps the best of."""
        bn = getattr(self, "batch_norm_", None)
        return [] if bn is None else [s[k] for s in bn for k in BN_KEYS]

    def _make_solver(self, net):
        params = [w for w, _, _ in net.segments]
        if self.solver == "sgd":
            return SGD(
                params,
                self.learning_rate_init,
                self.learning_rate,
                self.momentum,
                self.nesterovs_momentum,
                self.power_t,
            )
        return Adam(params, self.learning_rate_init, self.beta_1, self.beta_2, self.epsilon)

    def _split(self, X, Y, sw):
        """scikit-learn's early-stopping split: same stream, same stratification.

        Dense rows are split by their row numbers (the same draw), so both parts read X through
        an index instead of copying it.
        """
        stratify = Y if (self._is_classifier() and self.n_outputs_ == 1) else None
        rows = isinstance(X, Rows)
        first = np.arange(X.shape[0]) if rows else X
        arrays = (first, Y) if sw is None else (first, Y, sw)
        parts = train_test_split(
            *arrays, random_state=self._random_state, test_size=self.validation_fraction, stratify=stratify
        )
        X_tr, X_val, Y_tr, Y_val = parts[:4]
        if rows:
            X_tr, X_val = X.subset(X_tr), X.subset(X_val)
        sw_tr, sw_val = (parts[4], parts[5]) if sw is not None else (None, None)
        if X_val.shape[0] < 2:
            raise ValueError(
                "The validation set is too small. Increase 'validation_fraction' or the size of your dataset."
            )
        return X_tr, Y_tr, sw_tr, X_val, self._val_targets(Y_val), sw_val

    def _val_targets(self, Y_val):
        return Y_val

    def _is_classifier(self):
        return False

    def _loss_targets(self, Y, dtype):
        """Targets in the form the output loss takes: float rows here; labels for softmax."""
        return np.ascontiguousarray(Y, dtype=dtype)

    def _fit_lbfgs(self, X, Y, sw):
        """scikit-learn's ``_fit_lbfgs``: L-BFGS-B over the full-data objective (see :mod:`._lbfgs`)."""
        net = self._network(training=True)
        net.reset()
        assert isinstance(net, Network)  # _params.check refuses dropout and batch_norm with lbfgs
        objective = _lbfgs.Objective(
            net, OutputLoss(self.out_activation_, X.dtype), X, self._loss_targets(Y, X.dtype), sw, self.alpha
        )
        _lbfgs.minimize(self, objective)
        self._lbfgs_calls = objective.n_calls  # loss/gradient evaluations (the benchmark's floor uses it)

    def _fit_stochastic(self, X, Y, sw, incremental):
        if not hasattr(self, "loss_curve_"):
            # warm_start after an L-BFGS fit, which keeps none of this (scikit-learn then fails
            # with an AttributeError; fastbp starts the bookkeeping instead)
            self._init_stochastic_state()
        net = self._network(training=True)
        net.reset()
        layout = [w.size for w, _, _ in net.segments]
        if not incremental or not hasattr(self, "_solver") or getattr(self, "_solver_layout", layout) != layout:
            self._solver = self._make_solver(net)  # also when batch_norm changed between partial_fit calls
        self._solver_layout = layout
        solver = self._solver
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        if self.early_stopping:
            X_tr, Y_tr, sw_tr, X_val, y_val, sw_val = self._split(X, Y, sw)
        else:
            X_tr, Y_tr, sw_tr = X, Y, sw
            X_val = y_val = sw_val = None
        T = self._loss_targets(Y_tr, X.dtype)
        n = X_tr.shape[0]
        if self.batch_norm and n < 2:
            raise ValueError(
                f"batch_norm: training needs batches of at least 2 samples (batch statistics), got {n} sample"
            )
        if self.batch_size == "auto":
            batch_size = min(200, n)
        else:
            if self.batch_size > n:
                warnings.warn(
                    "Got `batch_size` less than 1 or larger than sample size. It is going to be clipped", stacklevel=3
                )
            batch_size = int(np.clip(self.batch_size, 1, n))
        epoch = _Epoch(
            net,
            solver,
            OutputLoss(self.out_activation_, X.dtype),
            _Gather(X_tr, T, sw_tr),
            batch_size,
            float(self.alpha),
        )
        sample_idx = np.arange(n, dtype=int)
        if self._resume is not None and self._resume[2] is not None:  # continue the checkpoint's fit
            sample_idx = _checkpoint.restore(self._resume[2], self, solver, net)
        regularized = isinstance(net, RegularizedNetwork)
        if regularized:
            net.train(True)
        try:
            self._epochs(epoch, n, sample_idx, incremental, X_val, y_val, sw_val)
        finally:
            if regularized:
                net.train(False)
                self._dropout_step = net.step
        if self.early_stopping:  # put back the best weights, in the arrays the layers share
            best = self._best_coefs + self._best_intercepts + getattr(self, "_best_extra", [])
            for dst, src in zip(self.coefs_ + self.intercepts_ + self._extra_state(), best):
                np.copyto(dst, src)

    def _epochs(self, epoch, n, sample_idx, incremental, X_val, y_val, sw_val):
        try:
            with defer_interrupts() as interrupted:
                resumed = self._resume is not None and self._resume[2] is not None
                if not resumed:
                    self.n_iter_ = 0
                elif self._resume[2].meta["stopped"]:  # that fit had converged or stopped early
                    return
                for _ in range(self.n_iter_, self.max_iter):
                    if self.shuffle:
                        # sklearn.utils.shuffle(sample_idx, random_state=...) draws exactly this
                        # permutation; called directly, its parameter checks cost ~1 ms per epoch.
                        perm = np.arange(n)
                        self._random_state.shuffle(perm)
                        sample_idx = sample_idx[perm]
                    loss_sum = epoch.run(sample_idx if self.shuffle else None, interrupted)
                    if loss_sum is None:  # Ctrl-C: the last batch was applied whole
                        raise KeyboardInterrupt
                    self._end_epoch(loss_sum / (n - epoch.skipped), n, X_val, y_val, sw_val)
                    stop = self._stop_now(incremental)
                    self._write_checkpoint(epoch.net, sample_idx, stop)
                    if stop:
                        break
        except KeyboardInterrupt:
            # scikit-learn's handling of a Ctrl-C during training: warn and keep the model (early
            # stopping then puts back the best weights). defer_interrupts raises a Ctrl-C still
            # pending when its body ends (one that came after the last batch), and that one too.
            warnings.warn("Training interrupted by user.", stacklevel=5)

    def _write_checkpoint(self, net, sample_idx, stopped: bool) -> None:
        """Every ``checkpoint_every`` iterations, and at the last one, when ``checkpoint`` is set."""
        if self._resume is None:
            return
        path, fp, _, start_rng = self._resume
        if stopped or self.n_iter_ == self.max_iter or self.n_iter_ % self.checkpoint_every == 0:
            _checkpoint.save(path, self, self._solver, net, sample_idx, start_rng, stopped, fp)

    def _end_epoch(self, loss, n, X_val, y_val, sw_val):
        self.n_iter_ += 1
        self.loss_ = loss
        self.t_ += n
        self.loss_curve_.append(self.loss_)
        if self.verbose:
            print(f"Iteration {self.n_iter_:d}, loss = {self.loss_:.8f}")
        self._update_no_improvement_count(X_val, y_val, sw_val)
        self._solver.iteration_ends(self.t_)

    def _stop_now(self, incremental) -> bool:
        if self._no_improvement_count > self.n_iter_no_change:
            if self.early_stopping:
                msg = (
                    f"Validation score did not improve more than tol={self.tol:f} "
                    f"for {self.n_iter_no_change:d} consecutive epochs."
                )
            else:
                msg = (
                    f"Training loss did not improve more than tol={self.tol:f} "
                    f"for {self.n_iter_no_change:d} consecutive epochs."
                )
            if self._solver.trigger_stopping(msg, self.verbose):
                return True
            self._no_improvement_count = 0
        if incremental:
            return True
        if self.n_iter_ == self.max_iter:
            warnings.warn(
                f"Stochastic Optimizer: Maximum iterations ({self.max_iter:d}) reached and the optimization "
                "hasn't converged yet.",
                ConvergenceWarning,
                stacklevel=5,
            )
        return False

    def _update_no_improvement_count(self, X_val, y_val, sw_val):
        if self.early_stopping:
            score = self._score(X_val, y_val, sw_val)
            self.validation_scores_.append(score)
            if self.verbose:
                print(f"Validation score: {score:f}")
            if score < self.best_validation_score_ + self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if score > self.best_validation_score_:
                self.best_validation_score_ = score
                self._best_coefs = [c.copy() for c in self.coefs_]
                self._best_intercepts = [i.copy() for i in self.intercepts_]
                self._best_extra = [a.copy() for a in self._extra_state()]
        else:
            if self.loss_curve_[-1] > self.best_loss_ - self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if self.loss_curve_[-1] < self.best_loss_:
                self.best_loss_ = self.loss_curve_[-1]

    # -- prediction -------------------------------------------------------------
    def _scores(self, X, check_input=True):
        """Raw scores of the last layer (n, n_outputs_), before the output activation.

        Thread-safe: ``Sequential.predict`` touches no layer buffers.
        """
        if check_input:
            check_is_fitted(self)
            # scikit-learn's check (its messages); the cast to the model's dtype follows
            X = validate_data(self, X, accept_sparse=["csr", "csc"], reset=False)
        model = self._network().model
        X = self._as(X, self.coefs_[0].dtype)
        with limit_threads(self.n_threads):
            if not sp.issparse(X):
                return model.predict(X, batch_size=_PREDICT_ROWS)
            return np.concatenate(
                [
                    model.predict(X[i : i + _PREDICT_ROWS].toarray(), batch_size=_PREDICT_ROWS)
                    for i in range(0, X.shape[0], _PREDICT_ROWS)
                ]
            )

    def _forward(self, X, check_input=True):
        """Network output after the output activation (sklearn's ``_forward_pass_fast``)."""
        return activate(self.out_activation_, self._scores(X, check_input))

    def _score(self, X, y, sample_weight=None):
        """The validation score for early stopping (NaN when predictions are not finite)."""
        y_pred = self._predict(X, check_input=False)
        if np.issubdtype(y_pred.dtype, np.floating) and not np.isfinite(y_pred).all():
            return np.nan
        return self._score_function(y, y_pred, sample_weight=sample_weight)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags


class _Epoch:
    """One pass over the data: per batch, forward, loss, backward and the solver step."""

    def __init__(self, net, solver, out_loss, gather, batch_size, alpha):
        self.net, self.solver, self.out_loss, self.gather = net, solver, out_loss, gather
        self.batch_size, self.alpha = batch_size, alpha
        # BatchNorm1d cannot train on one row: such a batch (the last of an epoch) is skipped.
        self.min_rows = 2 if getattr(net, "batch_norm", None) is not None else 1
        self.skipped = 0  # rows skipped in the last epoch
        # The plain MLP's batches in compiled calls (the same step, without the Python around it).
        self.compiled = compiled_epoch(net, solver, out_loss, gather, batch_size, alpha) if COMPILED else None

    def run(self, order, interrupted):
        """Sum over batches of (batch loss x batch rows), as scikit-learn accumulates; None if interrupted.

        ``order``: the epoch's sample permutation, or None for the stored order.
        """
        if self.compiled is not None:
            self.skipped = 0
            return self.compiled.run(order, interrupted)
        net, alpha = self.net, self.alpha
        n = self.gather.X.shape[0]
        total = 0.0
        self.skipped = 0
        for start in range(0, n, self.batch_size):  # sklearn.utils.gen_batches
            batch = slice(start, min(start + self.batch_size, n))
            if batch.stop - batch.start < self.min_rows:
                self.skipped += batch.stop - batch.start
                continue
            xb, tb, wb = self.gather(batch if order is None else order[batch])
            norm = xb.shape[0] if wb is None else float(wb.sum())
            if norm <= 0:  # every sample weighs 0: nothing to learn from this batch
                continue
            z = net.forward(xb)
            loss, delta = self.out_loss(z, tb, wb)
            if alpha:
                loss += 0.5 * alpha * kernels.sum_squares(net.weights) / norm
            # A non-finite loss does not stop training: scikit-learn trains on (see the module docstring).
            net.backward(delta)
            self.solver.step(net.segments, alpha / norm)
            total += loss * xb.shape[0]
            if interrupted():
                return None
        return total


class _Gather:
    """Minibatches by index (fit's reused buffers for dense X; sparse rows are densified per batch)."""

    def __init__(self, X, T, sw):
        self.X, self.T, self.sw = X, T, sw
        self._dense = None if sp.issparse(X) else ArraySource(X, T)

    def __call__(self, idx):
        wb = None if self.sw is None else self.sw[idx]
        if isinstance(idx, slice):  # no shuffling: contiguous views (or the batch converted), no copies of X
            if self._dense is not None:
                return (*self._dense.rows(idx.start, idx.stop), wb)
            return self.X[idx].toarray(), self.T[idx], wb
        if self._dense is not None:
            return (*self._dense.gather(idx), wb)
        return self.X[idx].toarray(), self.T[idx], wb
