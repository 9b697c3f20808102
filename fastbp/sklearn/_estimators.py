"""``MLPClassifier`` and ``MLPRegressor``: scikit-learn's MLPs, trained by fastbp."""

from __future__ import annotations

import numpy as np
from sklearn.base import ClassifierMixin, RegressorMixin, _fit_context
from sklearn.metrics import accuracy_score, r2_score
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import _check_partial_fit_first_call, type_of_target, unique_labels
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from .._validate import check
from ._base import BaseMLP
from ._outputs import log_activate
from ._params import CLASS_WEIGHT, SKLEARN_CONSTRAINTS

# The parameter and attribute descriptions both estimators share, written once.
# Each class docstring holds a line ``{shared parameters}`` / ``{shared attributes}``
# that _fill_doc replaces with this text, at that line's indentation.
_SHARED_PARAMETERS = """\
hidden_layer_sizes, activation, solver, alpha, batch_size, learning_rate, learning_rate_init,
power_t, max_iter, shuffle, random_state, tol, verbose, warm_start, momentum, nesterovs_momentum,
early_stopping, validation_fraction, beta_1, beta_2, epsilon, n_iter_no_change, max_fun
    As in scikit-learn, with the same defaults, meanings and checks (the
    same errors and messages). ``solver="lbfgs"`` runs scipy's L-BFGS-B over
    fastbp's full-data loss and gradient, as scikit-learn does (``max_iter``
    iterations, ``max_fun`` loss evaluations, ``tol`` the gradient
    tolerance); it takes neither ``dropout`` nor ``batch_norm``.
dtype : None, "float32" or "float64", default=None
    The dtype the network trains and predicts in. None follows the input
    of the first ``fit``: float32 stays float32 end to end, float64 stays
    float64, other inputs become float64 (as scikit-learn). Later calls
    convert their input to the fitted dtype.
n_threads : int or None, default=None
    Threads for fastbp's kernels and for BLAS during ``fit`` and
    prediction. None uses the process settings (which joblib's workers
    already limit); an int caps both for the call, e.g. 1 when several
    models train in threads of one process.
dropout : float in [0, 1) or sequence of them, default=0.0
    Inverted dropout after each hidden activation during training, with
    this drop probability (a sequence: one per hidden layer); the identity
    at prediction. The masks are drawn from a seed taken from
    ``random_state``, so a given ``random_state`` gives the same model.
    Not in scikit-learn: with the defaults training is exactly scikit-learn's.
batch_norm : bool, default=False
    Put a batch normalization (``fastbp.BatchNorm1d``, PyTorch's defaults:
    ``eps=1e-5``, ``momentum=0.1``) between each hidden layer's linear map
    and its activation. Training normalizes with each batch's statistics
    (a last batch of one sample is skipped); prediction uses the running
    statistics (``batch_norm_``). Its weights and biases are trained by the
    same solver, without the L2 term. Not in scikit-learn.
checkpoint : path or None, default=None
    With ``solver="sgd"`` or ``"adam"``: write everything the fit needs to
    continue to this file (atomically) every ``checkpoint_every``
    iterations and at the last one; a ``fit`` that finds the file continues
    that fit and ends with the model of the fit never stopped, bit for bit
    (same thread count). It must be the same fit: other parameters
    (``max_iter`` may grow, ``verbose`` and ``n_threads`` may change) or
    other data are a ValueError naming them; delete the file to start
    anew. A fit that had converged continues no further. Not with
    ``partial_fit``. Not in scikit-learn (docs/checkpoints.md).
checkpoint_every : int >= 1, default=1
    Iterations (epochs) between checkpoints.
"""

_SHARED_ATTRIBUTES = """\
loss_, best_loss_, loss_curve_, validation_scores_, best_validation_score_, t_, coefs_, intercepts_,
n_features_in_, feature_names_in_, n_iter_, n_layers_, n_outputs_, out_activation_
    As in scikit-learn. ``coefs_[i]`` has shape (units in, units out). With
    ``solver="lbfgs"``, as in scikit-learn, ``n_iter_`` counts this run's
    iterations, ``t_`` is not advanced, and no ``loss_curve_``,
    ``best_loss_``, ``validation_scores_`` or ``best_validation_score_`` is set.
batch_norm_ : list of dict, or None
    With ``batch_norm=True``, one dict per hidden layer with the arrays
    ``weight``, ``bias``, ``running_mean``, ``running_var`` (units,) and
    ``num_batches_tracked`` (1,): hidden layer ``i`` computes
    ``act((z - running_mean) / sqrt(running_var + 1e-5) * weight + bias)``
    at prediction, ``z = x @ coefs_[i] + intercepts_[i]``. None without.
"""


_SHARED_DOC = {"{shared parameters}": _SHARED_PARAMETERS, "{shared attributes}": _SHARED_ATTRIBUTES}


def _fill_doc(cls):
    """Put the shared descriptions into ``cls.__doc__`` (a no-op when docstrings are stripped, ``-OO``)."""
    if not cls.__doc__:
        return cls
    lines = []
    for line in cls.__doc__.splitlines(keepends=True):
        text = _SHARED_DOC.get(line.strip())
        if text is None:
            lines.append(line)
        else:
            indent = line[: len(line) - len(line.lstrip())]
            lines.extend(indent + t if t.strip() else t for t in text.splitlines(keepends=True))
    cls.__doc__ = "".join(lines)
    return cls


def _binarize(lb: LabelBinarizer, y) -> np.ndarray:
    """``lb.transform(y).astype(bool)``; for 1-D binary or multiclass labels, without its type checks.

    ``LabelBinarizer.transform`` runs ``type_of_target`` on ``y`` again (a third time per
    fit), about 0.7 ms on digits' 1347 labels: a seventh of a 20-epoch fit. Labels are
    found by ``searchsorted`` in the sorted ``classes_``; anything else, or a label not
    among the classes, goes to ``transform`` (and its error).
    """
    classes = lb.classes_
    if y.ndim == 1 and lb.y_type_ in ("binary", "multiclass") and len(classes) >= 2 and y.dtype.kind in "biufUS":
        try:
            idx = np.searchsorted(classes, y)
        except TypeError:  # labels that do not compare with the classes
            idx = None
        if idx is not None and (idx < len(classes)).all() and (classes[np.minimum(idx, len(classes) - 1)] == y).all():
            if lb.y_type_ == "binary":
                return (idx == 1).reshape(-1, 1)
            Y = np.zeros((y.shape[0], len(classes)), bool)
            Y[np.arange(y.shape[0]), idx] = True
            return Y
    return lb.transform(y).astype(bool)


@_fill_doc
class MLPClassifier(ClassifierMixin, BaseMLP):
    """Multi-layer perceptron classifier: ``sklearn.neural_network.MLPClassifier``, trained by fastbp.

    Multiclass (softmax output), binary and multilabel (logistic outputs).
    With the same ``random_state`` it starts from the same weights and sees
    the same batches as scikit-learn's, and its ``loss_curve_`` agrees to
    float tolerance.

    Parameters
    ----------
    {shared parameters}
    class_weight : None, "balanced" or dict {class: weight}, default=None
        Multiplies each sample's weight by its class's weight (binary and
        multiclass targets; scikit-learn's MLP has no such parameter).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The class labels, in the column order of ``predict_proba``; for
        multilabel targets, the label indices ``0 .. n_labels - 1``.
    {shared attributes}

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from fastbp.sklearn import MLPClassifier
    >>> X, y = load_digits(return_X_y=True)
    >>> clf = MLPClassifier(max_iter=30, random_state=0).fit(X / 16, y)
    >>> clf.score(X / 16, y) > 0.95
    True
    """

    _score_function = staticmethod(accuracy_score)
    _parameter_constraints: dict = SKLEARN_CONSTRAINTS["classifier"]

    def __init__(
        self,
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate="constant",
        learning_rate_init=0.001,
        power_t=0.5,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        warm_start=False,
        momentum=0.9,
        nesterovs_momentum=True,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        max_fun=15000,
        class_weight=None,
        dtype=None,
        n_threads=None,
        dropout=0.0,
        batch_norm=False,
        checkpoint=None,
        checkpoint_every=1,
    ):
        super().__init__(
            hidden_layer_sizes=hidden_layer_sizes,
            activation=activation,
            solver=solver,
            alpha=alpha,
            batch_size=batch_size,
            learning_rate=learning_rate,
            learning_rate_init=learning_rate_init,
            power_t=power_t,
            max_iter=max_iter,
            shuffle=shuffle,
            random_state=random_state,
            tol=tol,
            verbose=verbose,
            warm_start=warm_start,
            momentum=momentum,
            nesterovs_momentum=nesterovs_momentum,
            early_stopping=early_stopping,
            validation_fraction=validation_fraction,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            n_iter_no_change=n_iter_no_change,
            max_fun=max_fun,
            dtype=dtype,
            n_threads=n_threads,
            dropout=dropout,
            batch_norm=batch_norm,
            checkpoint=checkpoint,
            checkpoint_every=checkpoint_every,
        )
        self.class_weight = class_weight

    def _check_params(self):
        hidden = super()._check_params()
        check(self.class_weight, "class_weight", *CLASS_WEIGHT)
        return hidden

    def _is_classifier(self):
        return True

    def _validate_input(self, X, y, incremental, reset):
        X, y = validate_data(
            self, X, y, accept_sparse=["csr", "csc"], multi_output=True, dtype=(np.float64, np.float32), reset=reset
        )
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        # Which labels are allowed, as in scikit-learn: fresh classes on a new fit,
        # the same classes for warm_start, a subset of classes_ for partial_fit.
        if not hasattr(self, "classes_") or (not self.warm_start and not incremental):
            self._label_binarizer = LabelBinarizer()
            self._label_binarizer.fit(y)
            self.classes_ = self._label_binarizer.classes_
        else:
            classes = unique_labels(y)
            if self.warm_start:
                if set(classes) != set(self.classes_):
                    raise ValueError(
                        "warm_start can only be used where `y` has the same classes as in the "
                        f"previous call to fit. Previously got {self.classes_}, `y` has {classes}"
                    )
            elif len(np.setdiff1d(classes, self.classes_, assume_unique=True)):
                raise ValueError(
                    f"`y` has classes not in `self.classes_`. `self.classes_` has {self.classes_}. 'y' has {classes}."
                )
        return X, _binarize(self._label_binarizer, y)

    def _out_activation(self):
        return "softmax" if self._label_binarizer.y_type_ == "multiclass" else "logistic"

    def _loss_targets(self, Y, dtype):
        if self.out_activation_ == "softmax":  # class indices for the fused softmax-cross-entropy
            return np.ascontiguousarray(Y.argmax(axis=1), dtype=np.int64)
        return np.ascontiguousarray(Y, dtype=dtype)

    def _val_targets(self, Y_val):
        return self._label_binarizer.inverse_transform(Y_val)

    def _extra_sample_weight(self, Y, incremental):
        if self.class_weight is None:
            return None
        if self._label_binarizer.y_type_.startswith("multilabel"):
            raise ValueError("class_weight: not supported for multilabel targets; pass sample_weight instead")
        if incremental and self.class_weight == "balanced":
            raise ValueError(
                "class_weight: 'balanced' is not supported by partial_fit, which sees one batch at a "
                "time; pass a dict of weights computed on the whole training set"
            )
        classes = self.classes_
        # Y is the binarized target: one column (binary) or one-hot rows (multiclass).
        index = Y[:, 0].astype(np.intp) if Y.shape[1] == 1 else Y.argmax(axis=1)
        if len(classes) == 1:
            index = np.zeros(Y.shape[0], np.intp)
        if isinstance(self.class_weight, dict):
            unknown = [c for c in self.class_weight if c not in set(classes.tolist())]
            if unknown:
                raise ValueError(f"class_weight: classes {unknown} are not among the classes {classes.tolist()}")
            weights = np.array([float(self.class_weight.get(c, 1.0)) for c in classes.tolist()])
            if not np.isfinite(weights).all() or (weights < 0).any():
                raise ValueError("class_weight: expected finite non-negative weights")
        else:
            weights = compute_class_weight("balanced", classes=classes, y=classes[index])
        return weights[index]

    # -- prediction -------------------------------------------------------------
    def predict(self, X):
        """Predicted classes: (n_samples,), or (n_samples, n_classes) indicators for multilabel."""
        check_is_fitted(self)
        return self._predict(X)

    def _predict(self, X, check_input=True):
        y_pred = self._forward(X, check_input=check_input)
        if self.n_outputs_ == 1:
            y_pred = y_pred.ravel()
        return self._label_binarizer.inverse_transform(y_pred)

    def predict_proba(self, X):
        """Class probabilities (n_samples, n_classes), columns ordered as ``classes_``.

        Binary targets give two columns ``[1 - p, p]``; multilabel targets one
        probability per label.
        """
        check_is_fitted(self)
        p = self._forward(X)
        if self.n_outputs_ == 1:
            p = p.ravel()
            return np.vstack([1 - p, p]).T
        return p

    def predict_log_proba(self, X):
        """``log(predict_proba(X))``, computed from the scores so that tiny probabilities stay finite."""
        check_is_fitted(self)
        z = self._scores(X)
        if self.n_outputs_ == 1:
            return np.hstack([log_activate("logistic", -z), log_activate("logistic", z)])
        return log_activate(self.out_activation_, z)

    # -- training (fit is BaseMLP's) ------------------------------------------------
    @available_if(lambda est: est._check_solver())
    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One epoch over ``(X, y)``; ``classes`` (all labels) is required on the first call.

        Only with the stochastic solvers: with ``solver="lbfgs"`` the estimator
        has no ``partial_fit`` attribute, as in scikit-learn.

        Returns
        -------
        self
        """
        # scikit-learn's checks and messages for ``classes``
        if _check_partial_fit_first_call(self, classes):
            self._label_binarizer = LabelBinarizer()
            if type_of_target(y).startswith("multilabel"):
                self._label_binarizer.fit(y)
            else:
                self._label_binarizer.fit(classes)
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


@_fill_doc
class MLPRegressor(RegressorMixin, BaseMLP):
    """Multi-layer perceptron regressor: ``sklearn.neural_network.MLPRegressor``, trained by fastbp.

    One or several outputs; ``loss="squared_error"`` (identity output) or
    ``"poisson"`` (half Poisson deviance, exponential output, ``y >= 0``).

    Parameters
    ----------
    loss : "squared_error" or "poisson", default="squared_error"
        The loss minimised, as in scikit-learn; it also sets the output
        activation (``out_activation_`` "identity" or "exp").
    {shared parameters}

    Attributes
    ----------
    {shared attributes}

    Examples
    --------
    >>> import numpy as np
    >>> from fastbp.sklearn import MLPRegressor
    >>> X = np.linspace(-1, 1, 200).reshape(-1, 1)
    >>> reg = MLPRegressor(hidden_layer_sizes=(32,), random_state=0, max_iter=500).fit(X, X.ravel() ** 2)
    >>> reg.predict(X).shape
    (200,)
    """

    _score_function = staticmethod(r2_score)
    _parameter_constraints: dict = SKLEARN_CONSTRAINTS["regressor"]

    def __init__(
        self,
        loss="squared_error",
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate="constant",
        learning_rate_init=0.001,
        power_t=0.5,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        warm_start=False,
        momentum=0.9,
        nesterovs_momentum=True,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        max_fun=15000,
        dtype=None,
        n_threads=None,
        dropout=0.0,
        batch_norm=False,
        checkpoint=None,
        checkpoint_every=1,
    ):
        super().__init__(
            hidden_layer_sizes=hidden_layer_sizes,
            activation=activation,
            solver=solver,
            alpha=alpha,
            batch_size=batch_size,
            learning_rate=learning_rate,
            learning_rate_init=learning_rate_init,
            power_t=power_t,
            max_iter=max_iter,
            shuffle=shuffle,
            random_state=random_state,
            tol=tol,
            verbose=verbose,
            warm_start=warm_start,
            momentum=momentum,
            nesterovs_momentum=nesterovs_momentum,
            early_stopping=early_stopping,
            validation_fraction=validation_fraction,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            n_iter_no_change=n_iter_no_change,
            max_fun=max_fun,
            dtype=dtype,
            n_threads=n_threads,
            dropout=dropout,
            batch_norm=batch_norm,
            checkpoint=checkpoint,
            checkpoint_every=checkpoint_every,
        )
        self.loss = loss

    def _validate_input(self, X, y, incremental, reset):
        X, y = validate_data(
            self,
            X,
            y,
            accept_sparse=["csr", "csc"],
            multi_output=True,
            y_numeric=True,
            dtype=(np.float64, np.float32),
            reset=reset,
        )
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if y.dtype.kind in "SU":
            # y_numeric converts only object arrays: scikit-learn's first loss evaluation then
            # fails in numpy, on y - prediction (squared error) or y / prediction (poisson).
            # The same operation on no rows raises that error, with numpy's exact text.
            (np.divide if self.loss == "poisson" else np.subtract)(y[:0], np.empty((0,) + y.shape[1:], X.dtype))
        if self.loss == "poisson" and (y < 0).any():
            raise ValueError(f"y: loss='poisson' requires non-negative targets, got a minimum of {float(np.min(y))}")
        return X, y

    def _out_activation(self):
        return "exp" if self.loss == "poisson" else "identity"

    def predict(self, X):
        """Predictions (n_samples,) for one output, else (n_samples, n_outputs)."""
        check_is_fitted(self)
        return self._predict(X)

    def _predict(self, X, check_input=True):
        y_pred = self._forward(X, check_input=check_input)
        return y_pred.ravel() if y_pred.shape[1] == 1 else y_pred

    # scikit-learn's regressor passes ``est._check_solver`` uncalled (always true), so its
    # ``partial_fit`` exists with every solver, and with "lbfgs" runs a whole L-BFGS fit from
    # the current weights. Copied as is: code written for scikit-learn sees the same methods.
    @available_if(lambda est: est._check_solver)
    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over ``(X, y)``, continuing from the current weights and solver state.

        With ``solver="lbfgs"`` (as in scikit-learn): an L-BFGS run of up to
        ``max_iter`` iterations from the current weights.

        Returns
        -------
        self
        """
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)
