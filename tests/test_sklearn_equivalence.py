"""fastbp.sklearn against scikit-learn's MLPs: same weights, data order and hyperparameters -> same training.

Both models get the same initial weights set by hand (fit once to create
them, overwrite ``coefs_``/``intercepts_``, continue with ``warm_start``), so
the comparison does not depend on fastbp reproducing scikit-learn's
initialisation; that it does is tested separately.
"""

import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")
from _sklearn_cases import digits_rows, targets  # noqa: E402
from sklearn import neural_network as sk  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402

from fastbp import sklearn as fb  # noqa: E402

# float64 agrees to rounding; float32 accumulates rounding differences (BLAS
# order, fused updates) over a few hundred steps.
RTOL = {np.float64: 1e-9, np.float32: 2e-4}


@pytest.fixture(scope="module")
def digits():
    return digits_rows()


_targets = targets


def _pair(kind, **params):
    if kind.startswith("regression") or kind == "poisson":
        loss = "poisson" if kind == "poisson" else "squared_error"
        return sk.MLPRegressor(loss=loss, **params), fb.MLPRegressor(loss=loss, **params)
    return sk.MLPClassifier(**params), fb.MLPClassifier(**params)


def _fit(model, X, y, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(X, y, **kw)


def _train_from_same_weights(kind, X, y, *, epochs=8, sample_weight=None, **params):
    """Both models, started from one set of weights and trained ``epochs`` more iterations."""
    ref, ours = _pair(kind, random_state=0, max_iter=1, **params)
    _fit(ref, X, y)
    _fit(ours, X, y)
    rng = np.random.default_rng(42)
    coefs = [rng.normal(0, 0.2, c.shape).astype(c.dtype) for c in ref.coefs_]
    intercepts = [rng.normal(0, 0.1, b.shape).astype(b.dtype) for b in ref.intercepts_]
    for model in (ref, ours):
        model.coefs_ = [c.copy() for c in coefs]
        model.intercepts_ = [b.copy() for b in intercepts]
        model.set_params(warm_start=True, max_iter=epochs)
        _fit(model, X, y, sample_weight=sample_weight)
    return ref, ours


def _assert_same_training(ref, ours, dtype):
    rtol = RTOL[dtype]
    np.testing.assert_allclose(ours.loss_curve_, ref.loss_curve_, rtol=rtol)
    assert ours.n_iter_ == ref.n_iter_ and ours.t_ == ref.t_
    for a, b in zip(ours.coefs_ + ours.intercepts_, ref.coefs_ + ref.intercepts_):
        assert a.dtype == b.dtype == dtype
        np.testing.assert_allclose(a, b, rtol=rtol * 10, atol=rtol)


# predict_proba agrees to rtol 1e-9 (test_predictions_match_sklearn_for_the_same_weights). A row
# whose decision is closer to a tie than that (top two classes for softmax outputs, a probability and
# 0.5 for logistic ones) may be labelled either way by two correct implementations, depending on
# how BLAS and exp round on the CPU; every other row must get the same label.
TIE_MARGIN = 1e-9


def _clear_rows(ref, X):
    """Rows where scikit-learn's decision is at least TIE_MARGIN away from a tie."""
    p = ref.predict_proba(X)
    if ref.out_activation_ == "softmax":
        top2 = np.sort(p, axis=1)[:, -2:]
        return top2[:, 1] - top2[:, 0] >= TIE_MARGIN
    if p.shape[1] == 2 and ref.n_outputs_ == 1:  # binary: columns 1 - p and p
        return np.abs(p[:, 1] - p[:, 0]) >= TIE_MARGIN
    return (np.abs(2 * p - 1) >= TIE_MARGIN).all(axis=1)  # multilabel: every output clear


def _assert_same_labels(ours, ref, X):
    clear = _clear_rows(ref, X)
    assert clear.mean() > 0.9  # the comparison below covers nearly every row
    same = ours.predict(X) == ref.predict(X)
    if same.ndim > 1:
        same = same.all(axis=1)
    assert (same | ~clear).all(), f"labels differ on {int((~same & clear).sum())} rows with a clear decision"
    return clear


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("solver", ["sgd", "adam"])
@pytest.mark.parametrize("kind", ["multiclass", "binary", "multilabel", "regression", "regression1", "poisson"])
def test_loss_curve_matches_sklearn(digits, kind, solver, dtype):
    X, y = digits
    X = X.astype(dtype)
    lr = 1e-3 if kind == "poisson" else (0.05 if solver == "sgd" else 1e-3)
    ref, ours = _train_from_same_weights(
        kind,
        X,
        _targets(kind, X, y),
        solver=solver,
        hidden_layer_sizes=(24, 12),
        learning_rate_init=lr,
        batch_size=64,
        tol=0.0,
    )
    assert len(ours.loss_curve_) == 9  # one epoch to create the weights, then eight
    assert ours.out_activation_ == ref.out_activation_
    _assert_same_training(ref, ours, dtype)


@pytest.mark.parametrize(
    "params",
    [
        dict(solver="sgd", learning_rate="invscaling", power_t=0.3, learning_rate_init=0.2),
        dict(solver="sgd", learning_rate="adaptive", learning_rate_init=0.3, n_iter_no_change=1, tol=0.05),
        dict(solver="sgd", nesterovs_momentum=False, momentum=0.5),
        dict(solver="sgd", momentum=0.0),
        dict(solver="adam", beta_1=0.8, beta_2=0.99, epsilon=1e-6, alpha=0.01),
        dict(solver="adam", activation="tanh", shuffle=False, alpha=0.0),
        dict(solver="sgd", activation="logistic", learning_rate_init=0.5),
        dict(solver="adam", activation="identity", batch_size=450),
        dict(solver="adam", hidden_layer_sizes=()),
    ],
)
def test_options_match_sklearn(digits, params):
    X, y = digits
    params = {"hidden_layer_sizes": (16,), "batch_size": 50, "learning_rate_init": 0.05, **params}
    ref, ours = _train_from_same_weights("multiclass", X, y, epochs=12, **params)
    _assert_same_training(ref, ours, np.float64)


def test_sample_weight_matches_sklearn(digits):
    X, y = digits
    sw = np.random.default_rng(1).integers(0, 4, X.shape[0]).astype(float)
    for kind in ("multiclass", "regression"):
        ref, ours = _train_from_same_weights(
            kind,
            X,
            _targets(kind, X, y),
            solver="adam",
            batch_size=64,
            hidden_layer_sizes=(16,),
            alpha=0.1,
            sample_weight=sw,
        )
        _assert_same_training(ref, ours, np.float64)


@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_same_random_state_same_initialisation_and_batches(digits, solver):
    # No weights set by hand: fastbp draws scikit-learn's initial weights and
    # permutations from the same stream, so a fresh fit agrees too.
    X, y = digits
    params = dict(
        hidden_layer_sizes=(20,),
        solver=solver,
        random_state=7,
        max_iter=6,
        tol=0.0,
        learning_rate_init=0.05 if solver == "sgd" else 1e-3,
    )
    ref, ours = _fit(sk.MLPClassifier(**params), X, y), _fit(fb.MLPClassifier(**params), X, y)
    _assert_same_training(ref, ours, np.float64)


def test_early_stopping_matches_sklearn(digits):
    X, y = digits
    params = dict(
        hidden_layer_sizes=(20,),
        random_state=3,
        max_iter=40,
        early_stopping=True,
        validation_fraction=0.2,
        n_iter_no_change=3,
        learning_rate_init=0.01,
    )
    ref, ours = _fit(sk.MLPClassifier(**params), X, y), _fit(fb.MLPClassifier(**params), X, y)
    # Exact: validation scores are accuracies, counts of rows; with the trainings agreeing to ~1e-15
    # relative a count differs only if a validation row sits within ~1e-15 of a tie at some epoch.
    assert ours.validation_scores_ == ref.validation_scores_
    assert ours.best_validation_score_ == ref.best_validation_score_
    assert ours.best_loss_ is None and ref.best_loss_ is None
    _assert_same_training(ref, ours, np.float64)
    _assert_same_labels(ours, ref, X)


def test_partial_fit_matches_sklearn(digits):
    X, y = digits
    ref = sk.MLPClassifier(hidden_layer_sizes=(16,), random_state=0, learning_rate_init=0.01)
    ours = fb.MLPClassifier(hidden_layer_sizes=(16,), random_state=0, learning_rate_init=0.01)
    classes = np.unique(y)
    for start in range(0, 450, 150):
        for model in (ref, ours):
            model.partial_fit(X[start : start + 150], y[start : start + 150], classes=classes)
    _assert_same_training(ref, ours, np.float64)


def test_predictions_match_sklearn_for_the_same_weights(digits):
    X, y = digits
    for kind in ("multiclass", "binary", "multilabel", "regression", "poisson"):
        ref, ours = _train_from_same_weights(kind, X, _targets(kind, X, y), hidden_layer_sizes=(16,), epochs=2)
        if hasattr(ref, "predict_proba"):
            np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), rtol=1e-9, atol=1e-12)
            with np.errstate(divide="ignore"):
                np.testing.assert_allclose(ours.predict_log_proba(X), ref.predict_log_proba(X), rtol=1e-9)
        target = _targets(kind, X, y)
        if hasattr(ref, "predict_proba"):
            clear = _assert_same_labels(ours, ref, X)
            # accuracy: each row that is not clear may count for one side only
            assert abs(ours.score(X, target) - ref.score(X, target)) <= (~clear).sum() / len(X) + 1e-12
        else:
            np.testing.assert_allclose(ours.predict(X), ref.predict(X), rtol=1e-9)
            assert ours.score(X, target) == pytest.approx(ref.score(X, target), rel=1e-9)
