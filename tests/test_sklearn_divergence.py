"""Training that diverges, for every solver: fastbp ends as scikit-learn ends.

scikit-learn does not stop on a non-finite loss: it records NaN (or inf) losses and
trains on until a stopping rule or ``max_iter``. With early stopping the best
weights are put back, so the fit succeeds with finite predictions; without, the
non-finite weights raise its ValueError after the loop. fastbp must leave the
same attributes (``loss_curve_`` with its NaNs, ``validation_scores_``,
``n_iter_``, ``t_``, ...), emit the same warnings, and raise the same error.
numpy's floating-point RuntimeWarnings ("overflow encountered in matmul") are
not compared: they come from whichever numpy operations an implementation uses.
"""

import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")
from sklearn import neural_network as sk  # noqa: E402
from sklearn.datasets import load_iris  # noqa: E402

from fastbp import sklearn as fb  # noqa: E402

RTOL = 1e-9  # the exploding losses agree to ~1e-14; values near a blow-up to less


@pytest.fixture(scope="module")
def iris():
    return load_iris(return_X_y=True)


def _run(cls, params, X, y):
    """(model or None, (exception type, message) or None, [(warning category, message)])."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model, error = cls(**params).fit(X, y), None
        except Exception as e:  # noqa: BLE001 - any exception is compared with scikit-learn's
            model, error = None, (type(e), str(e))
    return model, error, [(w.category, str(w.message)) for w in caught if not issubclass(w.category, RuntimeWarning)]


def _both(name, params, X, y):
    ref = _run(getattr(sk, name), params, X, y)
    ours = _run(getattr(fb, name), params, X, y)
    assert ours[1] == ref[1]  # the same exception, or none
    assert ours[2] == ref[2]  # the same warnings
    return ref[0], ours[0]


def _same_list(a, b):
    if a is None or b is None:
        assert a is b
        return
    np.testing.assert_allclose(np.asarray(a, float), np.asarray(b, float), rtol=RTOL, equal_nan=True)


def _assert_same_attributes(ref, ours, X):
    assert ours.n_iter_ == ref.n_iter_ and ours.t_ == ref.t_
    for name in ("loss_curve_", "validation_scores_"):
        assert hasattr(ours, name) == hasattr(ref, name)
        if hasattr(ref, name):
            _same_list(getattr(ref, name), getattr(ours, name))
    for name in ("loss_", "best_loss_", "best_validation_score_"):
        assert hasattr(ours, name) == hasattr(ref, name)
        if hasattr(ref, name):
            _same_list(getattr(ref, name), getattr(ours, name))
    for a, b in zip(ours.coefs_ + ours.intercepts_, ref.coefs_ + ref.intercepts_):
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=1e-12)
    np.testing.assert_allclose(ours.predict(X), ref.predict(X), rtol=RTOL)


def test_the_issues_example_finishes_with_the_best_weights(iris):
    X, y = iris
    params = dict(
        activation="identity", solver="sgd", learning_rate_init=1, max_iter=20, early_stopping=True, random_state=0
    )
    ref, ours = _both("MLPRegressor", params, X, y)
    _assert_same_attributes(ref, ours, X)
    # the facts the issue quotes
    assert np.isnan(ours.loss_curve_[5]) and np.isfinite(ours.loss_curve_[:5]).all()
    assert np.isnan(ours.validation_scores_[-1]) and ours.n_iter_ == 20
    assert ours.best_validation_score_ == pytest.approx(ours.validation_scores_[0], rel=1e-12)
    assert np.isfinite(ours.predict(X)).all()


DIVERGING = [
    ("MLPRegressor", dict(activation="identity", solver="sgd", learning_rate_init=1), 1),
    ("MLPRegressor", dict(solver="adam", learning_rate_init=1e3), 1e300),  # an inf loss, then NaN
    ("MLPClassifier", dict(activation="identity", solver="sgd", learning_rate_init=10), 1e100),
    ("MLPClassifier", dict(solver="sgd", learning_rate_init=1), 1e150),
]


@pytest.mark.parametrize("name, params, scale", DIVERGING)
def test_divergence_with_early_stopping_keeps_the_best_state(iris, name, params, scale):
    X, y = iris
    params = dict(params, max_iter=25, early_stopping=True, random_state=0, hidden_layer_sizes=(16,))
    ref, ours = _both(name, params, X * scale, y)
    _assert_same_attributes(ref, ours, X * scale)
    assert not np.isfinite(ours.loss_curve_).all()  # it did diverge
    assert all(np.isfinite(a).all() for a in ours.coefs_ + ours.intercepts_)


@pytest.mark.parametrize("name, params, scale", DIVERGING)
def test_divergence_without_early_stopping_raises_sklearns_error(iris, name, params, scale):
    X, y = iris
    params = dict(params, max_iter=15, random_state=0, hidden_layer_sizes=(16,))
    ref, ours = _both(name, params, X * scale, y)  # _both compares the error and the warnings before it
    assert ref is None and ours is None


def test_partial_fit_that_diverges_raises_sklearns_error(iris):
    X, y = iris
    errors = []
    for module in (sk, fb):
        model = module.MLPRegressor(solver="sgd", learning_rate_init=1e3, activation="identity", random_state=0)
        with pytest.raises(ValueError) as err:
            for _ in range(5):
                model.partial_fit(X * 1e150, y)
        errors.append((str(err.value), model.n_iter_, len(model.loss_curve_)))
    assert errors[1] == errors[0]


@pytest.mark.parametrize(
    "name, scale_X, scale_y",
    [("MLPRegressor", 1e200, 1), ("MLPRegressor", 1, 1e160), ("MLPClassifier", 1e300, 1)],
)
def test_lbfgs_on_huge_values_ends_as_sklearn(iris, name, scale_X, scale_y):
    X, y = iris
    params = dict(solver="lbfgs", max_iter=50, random_state=0)
    ref, ours = _both(name, params, X * scale_X, y * scale_y if name == "MLPRegressor" else y)
    _assert_same_attributes(ref, ours, X * scale_X)
    assert ours.n_iter_ == 0 and np.isnan(ours.loss_)  # L-BFGS-B's line search gave up at once
