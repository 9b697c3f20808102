"""Bad input, bad parameters, stopping and convergence: the same exception and warnings as scikit-learn's.

Each case runs the same call on scikit-learn's estimator and on fastbp's, for
every solver, and compares the exception (type and message) and the warnings
(category and message, in order). numpy's floating-point RuntimeWarnings are
left out (they come from whichever numpy operations an implementation runs).
fastbp's own parameters (``dtype``, ``n_threads``, ``dropout``, ``batch_norm``,
``class_weight``) have fastbp's messages, tested with them elsewhere; the few
places where fastbp knowingly differs are pinned at the end.
"""

import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")
import pandas as pd  # noqa: E402
from sklearn import neural_network as sk  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

from fastbp import sklearn as fb  # noqa: E402

SOLVERS = ["sgd", "adam", "lbfgs"]
ESTIMATORS = ["MLPClassifier", "MLPRegressor"]

_X, _Y = load_digits(return_X_y=True)
X = _X[:120] / 16.0
Y = _Y[:120]
R = X[:, :10].sum(1)  # a regression target


def _target(name):
    return Y if name == "MLPClassifier" else R


def _outcome(module, name, solver, params, action):
    """What ``action(estimator)`` does: (exception type, message, its cause's message) or None, and the
    warnings as [(category, message)]."""
    est = getattr(module, name)(**{"hidden_layer_sizes": (5,), "max_iter": 5, "random_state": 0, **params})
    if solver is not None:
        est.set_params(solver=solver)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            action(est)
            error = None
        except Exception as e:  # noqa: BLE001 - every exception is compared with scikit-learn's
            error = (type(e), str(e), None if e.__cause__ is None else str(e.__cause__))
    return error, [(w.category, str(w.message)) for w in caught if not issubclass(w.category, RuntimeWarning)]


def _assert_same(name, solver, params, action, *, raises=None):
    ref = _outcome(sk, name, solver, params, action)
    ours = _outcome(fb, name, solver, params, action)
    assert ours[0] == ref[0]
    assert ours[1] == ref[1]
    if raises is not None:  # the case does what it is meant to (so that it cannot pass vacuously)
        assert ref[0] is not None and issubclass(ref[0][0], raises), ref[0]
    return ref


def _fit(name, **kw):
    return lambda est: est.fit(X, _target(name), **kw)


# -- constructor parameters --------------------------------------------------------------------

BAD_PARAMS = [
    ("solver", "rmsprop"),
    ("activation", "softmax"),
    ("hidden_layer_sizes", -3),
    ("hidden_layer_sizes", None),
    ("hidden_layer_sizes", "ten"),
    ("hidden_layer_sizes", (10, 0)),
    ("hidden_layer_sizes", (8.5,)),
    ("hidden_layer_sizes", ("a",)),
    ("alpha", -1.0),
    ("alpha", "big"),
    ("batch_size", 0),
    ("batch_size", "all"),
    ("learning_rate", "cyclic"),
    ("learning_rate_init", 0.0),
    ("power_t", -0.5),
    ("max_iter", 0),
    ("max_iter", 2.5),
    ("shuffle", "yes"),
    ("random_state", "seed"),
    ("tol", -1.0),
    ("verbose", "loud"),
    ("warm_start", "no"),
    ("momentum", 1.5),
    ("nesterovs_momentum", None),
    ("early_stopping", 1.5),
    ("validation_fraction", 1.0),
    ("beta_1", 1.0),
    ("beta_2", -0.1),
    ("epsilon", 0.0),
    ("n_iter_no_change", 0),
    ("n_iter_no_change", -np.inf),
    ("max_fun", 0),
]


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("name", ESTIMATORS)
@pytest.mark.parametrize("param, value", BAD_PARAMS)
def test_bad_parameters(name, solver, param, value):
    if param == "solver":
        solver = None
    _assert_same(name, solver, {param: value}, _fit(name), raises=(ValueError, TypeError))


@pytest.mark.parametrize("solver", SOLVERS)
def test_bad_loss(solver):
    _assert_same("MLPRegressor", solver, {"loss": "huber"}, _fit("MLPRegressor"), raises=ValueError)


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("name", ESTIMATORS)
def test_parameters_are_checked_at_fit_not_at_construction_or_set_params(name, solver):
    def action(est):
        est.set_params(alpha=-1, activation="nope")
        est.get_params()

    assert _assert_same(name, solver, {}, action) == (None, [])


# -- input data ----------------------------------------------------------------------------------

_nan = X.copy()
_nan[3, 4] = np.nan

BAD_FITS = {
    "X with NaN": lambda name: lambda est: est.fit(_nan, _target(name)),
    "X with inf": lambda name: lambda est: est.fit(X * np.inf, _target(name)),
    "X of strings": lambda name: lambda est: est.fit(np.full((4, 3), "a"), _target(name)[:4]),
    "X empty": lambda name: lambda est: est.fit(X[:0], _target(name)[:0]),
    "X 1-D": lambda name: lambda est: est.fit(X[:, 0], _target(name)),
    "X 3-D": lambda name: lambda est: est.fit(X.reshape(120, 8, 8), _target(name)),
    "y too short": lambda name: lambda est: est.fit(X, _target(name)[:-1]),
    "y with NaN": lambda name: lambda est: est.fit(X, np.where(np.arange(120) == 5, np.nan, 1.0)),
    "y of strings": lambda name: lambda est: est.fit(X, np.where(Y > 4, "a", "b")),
    "y 3-D": lambda name: lambda est: est.fit(X, np.zeros((120, 2, 2))),
    "sample_weight shape": lambda name: lambda est: est.fit(X, _target(name), sample_weight=np.ones(3)),
    "sample_weight 2-D": lambda name: lambda est: est.fit(X, _target(name), sample_weight=np.ones((120, 1))),
    "sample_weight NaN": lambda name: lambda est: est.fit(X, _target(name), sample_weight=np.full(120, np.nan)),
    "sample_weight strings": lambda name: lambda est: est.fit(X, _target(name), sample_weight=["a"] * 120),
    "sample_weight zeros": lambda name: lambda est: est.fit(X, _target(name), sample_weight=np.zeros(120)),
    "sample_weight 0 scalar": lambda name: lambda est: est.fit(X, _target(name), sample_weight=0),
}


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("name", ESTIMATORS)
@pytest.mark.parametrize("case", list(BAD_FITS))
def test_bad_fit_input(name, solver, case):
    if case == "y of strings" and name == "MLPClassifier":
        pytest.skip("string labels are valid classes")
    _assert_same(name, solver, {}, BAD_FITS[case](name), raises=(ValueError, TypeError))


def _fitted(name, solver, **params):
    def make(module):
        est = getattr(module, name)(hidden_layer_sizes=(5,), max_iter=3, random_state=0, solver=solver, **params)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return est.fit(X, _target(name))

    return make


BAD_PREDICTS = {
    "wrong feature count": lambda est, m: m(est, X[:, :10]),
    "NaN": lambda est, m: m(est, _nan),
    "strings": lambda est, m: m(est, np.full((2, 64), "a")),
    "1-D": lambda est, m: m(est, X[0]),
    "empty": lambda est, m: m(est, X[:0]),
}
METHODS = ["predict", "predict_proba", "predict_log_proba", "score"]


def _call(method):
    def run(est, data):
        if method == "score":
            return est.score(data, np.zeros(len(data)) if data.ndim == 2 else [0])
        return getattr(est, method)(data)

    return run


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("name", ESTIMATORS)
@pytest.mark.parametrize("case", list(BAD_PREDICTS))
@pytest.mark.parametrize("method", METHODS)
def test_bad_predict_input(name, solver, case, method):
    make = _fitted(name, solver)
    results = []
    for module in (sk, fb):
        est = make(module)
        if not hasattr(est, method):
            results.append("no such method")
            continue
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                BAD_PREDICTS[case](est, _call(method))
                results.append((None, [(w.category, str(w.message)) for w in caught]))
            except Exception as e:  # noqa: BLE001
                results.append(((type(e), str(e)), [(w.category, str(w.message)) for w in caught]))
    assert results[1] == results[0]
    assert results[0] == "no such method" or results[0][0] is not None


@pytest.mark.parametrize("name", ESTIMATORS)
@pytest.mark.parametrize("method", METHODS)
def test_not_fitted(name, method):
    def action(est):
        _call(method)(est, X)

    _assert_same(name, "adam", {}, action, raises=Exception)


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("name", ESTIMATORS)
def test_feature_names(name, solver):
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(64)])
    renamed = frame.rename(columns={"f0": "zero"})
    cases = {
        "fitted with names, predicted without": lambda est: est.fit(frame, _target(name)).predict(X),
        "fitted without names, predicted with": lambda est: est.fit(X, _target(name)).predict(frame),
        "other names": lambda est: est.fit(frame, _target(name)).predict(renamed),
    }
    for action in cases.values():
        _assert_same(name, solver, {}, action)
    error, warned = _outcome(fb, name, solver, {}, cases["fitted with names, predicted without"])
    assert any("feature names" in message for _, message in warned)


# -- training: stopping, convergence, early stopping ---------------------------------------------------


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("name", ESTIMATORS)
def test_max_iter_convergence_warning(name, solver):
    _, warned = _assert_same(name, solver, {"max_iter": 3}, _fit(name))
    assert len(warned) == 1 and "3" in warned[0][1]


@pytest.mark.parametrize("name", ESTIMATORS)
def test_max_fun_convergence_warning(name):
    _, warned = _assert_same(name, "lbfgs", {"max_iter": 500, "max_fun": 4}, _fit(name))
    assert len(warned) == 1 and "EVALUATIONS" in warned[0][1]


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("name", ESTIMATORS)
def test_training_messages(name, solver):
    cases = [
        ({"batch_size": 500}, _fit(name)),  # clipped, with scikit-learn's UserWarning (not for lbfgs)
        ({"early_stopping": True, "validation_fraction": 0.01}, _fit(name)),  # too small a validation set
        ({"early_stopping": True}, lambda est: est.fit(X[:4], _target(name)[:4])),
        ({"early_stopping": True, "max_iter": 40, "n_iter_no_change": 2, "tol": 0.5}, _fit(name)),
        ({"max_iter": 40, "n_iter_no_change": 2, "tol": 10.0}, _fit(name)),  # stops on the training loss
        ({"learning_rate": "adaptive", "max_iter": 40, "n_iter_no_change": 1, "tol": 10.0}, _fit(name)),
        ({}, lambda est: est.fit(X, _target(name)[:, None])),  # a column vector y
        ({"verbose": True}, _fit(name)),
        ({"warm_start": True}, lambda est: est.fit(X, _target(name)).fit(X[:60], _target(name)[:60])),
    ]
    for params, action in cases:
        _assert_same(name, solver, params, action)


def test_early_stopping_stratification_error():
    # one sample of one class: train_test_split's stratification refuses it, in both
    action = lambda est: est.fit(X[:3], [0, 1, 0])  # noqa: E731
    _assert_same("MLPClassifier", "adam", {"early_stopping": True}, action, raises=ValueError)


@pytest.mark.parametrize("solver", SOLVERS)
def test_warm_start_with_other_classes(solver):
    action = lambda est: est.fit(X, Y).fit(X, Y % 3)  # noqa: E731
    _assert_same("MLPClassifier", solver, {"warm_start": True}, action, raises=ValueError)


@pytest.mark.parametrize("solver", SOLVERS)
def test_divergence_error(solver):
    action = lambda est: est.fit(X * 1e300, R * 1e300)  # noqa: E731
    params = {"learning_rate_init": 1e3, "activation": "identity", "max_iter": 10}
    error, _ = _assert_same("MLPRegressor", solver, params, action)
    if solver != "lbfgs":  # L-BFGS-B's line search refuses the non-finite values and stops instead
        assert error is not None and "non-finite parameter weights" in error[1]


# -- partial_fit ---------------------------------------------------------------------------------------

PARTIAL_FITS = {
    "no classes": lambda est: est.partial_fit(X, Y),
    "other classes": lambda est: est.partial_fit(X, Y, classes=np.arange(10)).partial_fit(X, Y, classes=np.arange(11)),
    "unknown class": lambda est: est.partial_fit(X, Y, classes=np.arange(10)).partial_fit(X, Y + 20),
    "early_stopping": lambda est: est.set_params(early_stopping=True).partial_fit(X, Y, classes=np.arange(10)),
    "subset of classes": lambda est: est.partial_fit(X[Y < 5], Y[Y < 5], classes=np.arange(10)).partial_fit(X, Y),
    "bad solver": lambda est: est.set_params(solver="nope").partial_fit(X, Y, classes=np.arange(10)),
    "bad solver once fitted": lambda est: (
        est.partial_fit(X, Y, classes=np.arange(10)).set_params(alpha=-1.0).partial_fit(X, Y)
    ),
}


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("case", list(PARTIAL_FITS))
def test_classifier_partial_fit(solver, case):
    _assert_same("MLPClassifier", solver, {}, PARTIAL_FITS[case])


@pytest.mark.parametrize("solver", SOLVERS)
def test_regressor_partial_fit(solver):
    cases = [
        lambda est: est.partial_fit(X, R),
        lambda est: est.set_params(early_stopping=True).partial_fit(X, R),
        lambda est: est.partial_fit(X, R, sample_weight=np.ones(2)),
        lambda est: est.set_params(learning_rate_init=-1.0).partial_fit(X, R),
    ]
    for action in cases:
        _assert_same("MLPRegressor", solver, {}, action)


def test_lbfgs_classifier_has_no_partial_fit():
    _assert_same("MLPClassifier", "lbfgs", {}, lambda est: est.partial_fit, raises=AttributeError)


# -- where fastbp knowingly differs ------------------------------------------------------------------


def test_documented_differences():
    # negative sample weights: scikit-learn trains with them; fastbp refuses them
    sk.MLPRegressor(hidden_layer_sizes=(5,), max_iter=2).fit(X, R, sample_weight=-np.ones(120))
    with pytest.raises(ValueError, match=r"^sample_weight: expected non-negative weights, got a minimum of -1.0$"):
        fb.MLPRegressor(hidden_layer_sizes=(5,), max_iter=2).fit(X, R, sample_weight=-np.ones(120))
    # a Poisson target below 0: scikit-learn trains on a NaN loss; fastbp refuses it
    with pytest.raises(ValueError, match="^y: loss='poisson' requires non-negative targets"):
        fb.MLPRegressor(loss="poisson").fit(X, R - 5)
    # warm_start with other hidden_layer_sizes: scikit-learn's stochastic solvers silently keep
    # training the old shapes (and L-BFGS fails in a reshape); fastbp says why it cannot continue
    est = fb.MLPRegressor(hidden_layer_sizes=(5,), max_iter=2, warm_start=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(X, R)
    with pytest.raises(ValueError, match="^coefs_/intercepts_: the fitted layers have shapes"):
        est.set_params(hidden_layer_sizes=(6,)).fit(X, R)
