"""fastbp.sklearn estimators: dtypes, targets, weights, scikit-learn tooling, threads, bad input."""

import pickle
import threading
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")
import scipy.sparse as sp  # noqa: E402
import threadpoolctl  # noqa: E402
from sklearn import neural_network as sk  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.datasets import load_breast_cancer, load_digits  # noqa: E402
from sklearn.exceptions import ConvergenceWarning, NotFittedError  # noqa: E402
from sklearn.model_selection import GridSearchCV, train_test_split  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.class_weight import compute_sample_weight  # noqa: E402

from fastbp.sklearn import MLPClassifier, MLPRegressor  # noqa: E402


def _quiet(fn, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return fn(*args, **kw)


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X[:600] / 16.0, y[:600]


def _blas_threads():
    return [p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]


# -- dtypes -------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_trains_and_predicts_in_the_input_dtype(digits, dtype):
    X, y = digits
    clf = _quiet(MLPClassifier((16,), max_iter=3, random_state=0).fit, X.astype(dtype), y)
    assert clf._net.data.dtype == dtype  # the buffer every kernel and matmul works on
    assert all(c.dtype == dtype for c in clf.coefs_ + clf.intercepts_)
    assert clf.predict_proba(X.astype(dtype)).dtype == dtype
    reg = _quiet(MLPRegressor(hidden_layer_sizes=(8,), max_iter=3, random_state=0).fit, X.astype(dtype), X[:, 3])
    assert reg._net.data.dtype == dtype and reg.predict(X.astype(dtype)).dtype == dtype


def test_dtype_parameter_overrides_the_input(digits):
    X, y = digits
    clf = _quiet(MLPClassifier((16,), max_iter=2, dtype="float32").fit, X, y)  # float64 data
    assert clf.coefs_[0].dtype == np.float32 and clf.predict_proba(X).dtype == np.float32
    clf = _quiet(MLPClassifier((16,), max_iter=2, dtype=np.float64).fit, X.astype(np.float32), y)
    assert clf.coefs_[0].dtype == np.float64
    # integer input becomes float64, as in scikit-learn
    clf = _quiet(MLPClassifier((16,), max_iter=2).fit, (X * 16).astype(np.int64), y)
    assert clf.coefs_[0].dtype == np.float64


def test_float32_model_matches_float64_model(digits):
    X, y = digits
    a = _quiet(MLPClassifier((16,), max_iter=5, random_state=0).fit, X, y)
    b = _quiet(MLPClassifier((16,), max_iter=5, random_state=0, dtype="float32").fit, X, y)
    np.testing.assert_allclose(b.loss_curve_, a.loss_curve_, rtol=1e-4)


# -- targets ------------------------------------------------------------------


def test_binary_string_labels(digits):
    X, y = digits
    labels = np.where(y < 5, "low", "high")
    clf = _quiet(MLPClassifier((16,), random_state=0, max_iter=50).fit, X, labels)
    ref = _quiet(sk.MLPClassifier((16,), random_state=0, max_iter=50).fit, X, labels)
    assert clf.out_activation_ == "logistic" and clf.n_outputs_ == 1
    assert list(clf.classes_) == ["high", "low"]
    proba = clf.predict_proba(X)
    assert proba.shape == (600, 2)
    np.testing.assert_allclose(proba.sum(1), 1)
    np.testing.assert_array_equal(clf.predict(X), clf.classes_[proba.argmax(1)])
    assert clf.score(X, labels) == pytest.approx(ref.score(X, labels)) and clf.score(X, labels) > 0.8


def test_multilabel(digits):
    X, y = digits
    Y = np.stack([y % 2 == 0, y < 5, y == 7], axis=1).astype(int)
    clf = _quiet(MLPClassifier((32,), random_state=0, max_iter=80).fit, X, Y)
    assert clf.out_activation_ == "logistic" and clf.n_outputs_ == 3
    pred = clf.predict(X)
    assert pred.shape == (600, 3) and set(np.unique(pred)) <= {0, 1}
    np.testing.assert_array_equal(pred, (clf.predict_proba(X) > 0.5).astype(int))
    assert clf.score(X, Y) > 0.8  # subset accuracy


def test_multioutput_regression(digits):
    X, _ = digits
    Y = np.stack([X[:, :8].sum(1), X[:, 30:40].mean(1)], axis=1)
    reg = _quiet(MLPRegressor(hidden_layer_sizes=(32,), random_state=0, max_iter=300).fit, X, Y)
    ref = _quiet(sk.MLPRegressor(hidden_layer_sizes=(32,), random_state=0, max_iter=300).fit, X, Y)
    assert reg.predict(X).shape == (600, 2) and reg.n_outputs_ == 2
    assert reg.score(X, Y) == pytest.approx(ref.score(X, Y), rel=1e-6) and reg.score(X, Y) > 0.8


def test_predict_log_proba_stays_finite_where_proba_underflows(digits):
    X, y = digits
    clf = _quiet(MLPClassifier((16,), random_state=0, max_iter=5).fit, X, y)
    clf.coefs_[-1] *= 1e4  # saturate the softmax: many probabilities are exactly 0
    proba = clf.predict_proba(X)
    assert (proba == 0).any()
    log_proba = clf.predict_log_proba(X)
    assert np.isfinite(log_proba).all()
    ok = proba > 1e-300
    np.testing.assert_allclose(log_proba[ok], np.log(proba[ok]), rtol=1e-6, atol=1e-9)


# -- weights ------------------------------------------------------------------


def test_class_weight_balanced_is_sample_weight(digits):
    X, y = digits
    y = np.where(y == 0, 0, 1)  # unbalanced binary problem
    a = _quiet(MLPClassifier((16,), random_state=0, max_iter=5, class_weight="balanced").fit, X, y)
    b = _quiet(
        MLPClassifier((16,), random_state=0, max_iter=5).fit, X, y, sample_weight=compute_sample_weight("balanced", y)
    )
    np.testing.assert_allclose(a.loss_curve_, b.loss_curve_, rtol=1e-12)


def test_class_weight_dict_multiplies_sample_weight(digits):
    X, y = digits
    sw = np.random.default_rng(0).uniform(0.5, 2, len(y))
    a = _quiet(
        MLPClassifier((16,), random_state=0, max_iter=4, class_weight={3: 5.0, 7: 0.5}).fit, X, y, sample_weight=sw
    )
    b = _quiet(
        MLPClassifier((16,), random_state=0, max_iter=4).fit,
        X,
        y,
        sample_weight=sw * np.where(y == 3, 5.0, np.where(y == 7, 0.5, 1.0)),
    )
    np.testing.assert_allclose(a.loss_curve_, b.loss_curve_, rtol=1e-12)
    c = _quiet(MLPClassifier((16,), random_state=0, max_iter=4).fit, X, y, sample_weight=sw)
    assert not np.allclose(a.loss_curve_, c.loss_curve_)


def test_zero_weight_samples_are_ignored(digits):
    X, y = digits
    sw = np.ones(len(y))
    sw[::2] = 0
    params = dict(hidden_layer_sizes=(16,), random_state=0, max_iter=4, batch_size=600, shuffle=False)
    a = _quiet(MLPClassifier(**params).fit, X, y, sample_weight=sw)
    b = _quiet(MLPClassifier(**params).fit, X[1::2], y[1::2])
    np.testing.assert_allclose(a.loss_curve_[0], b.loss_curve_[0], rtol=1e-12)  # whole-batch gradient: same steps
    for ca, cb in zip(a.coefs_, b.coefs_):
        np.testing.assert_allclose(ca, cb, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_integer_weights_equal_repeated_samples(digits, dtype):
    X, y = digits
    sw = np.random.default_rng(0).integers(0, 4, len(y))
    params = dict(hidden_layer_sizes=(16,), random_state=0, max_iter=10, batch_size=2000, dtype=dtype)
    a = _quiet(MLPRegressor(**params).fit, X, X[:, 5], sample_weight=sw)
    b = _quiet(MLPRegressor(**params).fit, np.repeat(X, sw, axis=0), np.repeat(X[:, 5], sw))
    rtol = 1e-4 if dtype == "float32" else 1e-10
    np.testing.assert_allclose(a.predict(X), b.predict(X), rtol=rtol, atol=rtol)


# -- fitting modes --------------------------------------------------------------


def test_partial_fit_continues_fit_state(digits):
    X, y = digits
    classes = np.unique(y)
    clf = MLPClassifier((16,), random_state=0)
    for _ in range(3):
        clf.partial_fit(X, y, classes=classes)
    assert clf.n_iter_ == 1 and clf.t_ == 3 * 600 and len(clf.loss_curve_) == 3
    assert clf.loss_curve_[2] < clf.loss_curve_[0]


def test_partial_fit_with_a_subset_of_classes(digits):
    X, y = digits
    clf = MLPClassifier((16,), random_state=0).partial_fit(X[y < 5], y[y < 5], classes=np.arange(10))
    assert clf.predict_proba(X).shape == (600, 10)
    clf.partial_fit(X[y >= 5], y[y >= 5])
    with pytest.raises(ValueError, match="classes not in"):
        clf.partial_fit(X, y + 20)


def test_warm_start_continues_and_refit_restarts(digits):
    X, y = digits
    clf = _quiet(MLPClassifier((16,), random_state=0, max_iter=3, warm_start=True).fit, X, y)
    first = clf.coefs_[0].copy()
    _quiet(clf.fit, X, y)
    assert len(clf.loss_curve_) == 6 and not np.array_equal(clf.coefs_[0], first)
    clf.set_params(warm_start=False)
    _quiet(clf.fit, X, y)
    assert len(clf.loss_curve_) == 3


def test_sparse_input_equals_dense(digits):
    X, y = digits
    dense = _quiet(MLPClassifier((16,), random_state=0, max_iter=4).fit, X, y)
    for fmt in (sp.csr_matrix, sp.csc_array):
        sparse = _quiet(MLPClassifier((16,), random_state=0, max_iter=4).fit, fmt(X), y)
        np.testing.assert_allclose(sparse.loss_curve_, dense.loss_curve_, rtol=1e-12)
        np.testing.assert_allclose(sparse.predict_proba(fmt(X)), dense.predict_proba(X), rtol=1e-12)


def test_early_stopping_restores_the_best_weights(digits):
    X, y = digits
    clf = _quiet(
        MLPClassifier(
            (16,),
            random_state=0,
            max_iter=60,
            early_stopping=True,
            n_iter_no_change=3,
            validation_fraction=0.25,
            learning_rate_init=0.05,
        ).fit,
        X,
        y,
    )
    assert clf.best_loss_ is None and len(clf.validation_scores_) == clf.n_iter_
    assert clf.n_iter_ < 60
    best = int(np.argmax(clf.validation_scores_))
    assert clf.best_validation_score_ == clf.validation_scores_[best]
    # the validation rows: the split is drawn right after the initial weights (not stratified for multiclass)
    _, X_val, _, y_val = train_test_split(X, y, random_state=_draws_after_init(clf), test_size=0.25)
    assert clf.score(X_val, y_val) == pytest.approx(clf.best_validation_score_)


def _draws_after_init(clf):
    """The RandomState as it is after the initial weights are drawn (where the split happens)."""
    rs = np.random.RandomState(clf.random_state)
    for c, b in zip(clf.coefs_, clf.intercepts_):
        rs.uniform(size=c.size)
        rs.uniform(size=b.size)
    return rs


def test_stops_when_the_loss_stops_improving(digits):
    X, y = digits
    clf = MLPClassifier((16,), random_state=0, max_iter=500, tol=1e-2, n_iter_no_change=2).fit(X, y)
    assert clf.n_iter_ < 500
    with pytest.warns(ConvergenceWarning, match="Maximum iterations"):
        MLPClassifier((16,), random_state=0, max_iter=2).fit(X, y)


def test_verbose_prints_like_sklearn(digits, capsys):
    X, y = digits
    _quiet(MLPClassifier((8,), max_iter=2, verbose=True).fit, X, y)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("Iteration 1, loss = ") and out[1].startswith("Iteration 2, loss = ")


# -- accuracy against scikit-learn --------------------------------------------------


def _test_accuracy(model, X, y):
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
    return _quiet(model.fit, Xtr, ytr).score(Xte, yte)


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["digits", "breast_cancer"])
@pytest.mark.parametrize("solver", ["adam", "sgd"])
def test_accuracy_not_below_sklearn(dataset, solver):
    loader = load_digits if dataset == "digits" else load_breast_cancer
    X, y = loader(return_X_y=True)
    params = dict(solver=solver, random_state=0, learning_rate_init=0.01 if solver == "sgd" else 0.001)
    ours = _test_accuracy(make_pipeline(StandardScaler(), MLPClassifier(**params)), X, y)
    ref = _test_accuracy(make_pipeline(StandardScaler(), sk.MLPClassifier(**params)), X, y)
    ours32 = _test_accuracy(make_pipeline(StandardScaler(), MLPClassifier(**params, dtype="float32")), X, y)
    assert ours >= ref - 0.01 and ours32 >= ref - 0.01
    assert ours > 0.9


# -- scikit-learn tooling -----------------------------------------------------------


def test_clone_and_params():
    clf = MLPClassifier((7, 3), solver="sgd", alpha=0.5, dtype="float32", n_threads=1, class_weight="balanced")
    twin = clone(clf)
    assert twin.get_params() == clf.get_params() and twin is not clf
    assert set(sk.MLPClassifier().get_params()) <= set(clf.get_params())
    assert set(sk.MLPRegressor().get_params()) <= set(MLPRegressor().get_params())


def test_pickle_round_trip_keeps_predictions_and_solver_state(digits):
    X, y = digits
    clf = MLPClassifier((16,), random_state=0).partial_fit(X, y, classes=np.unique(y))
    copy = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(copy.predict_proba(X), clf.predict_proba(X))
    clf.partial_fit(X, y)
    copy.partial_fit(X, y)
    np.testing.assert_array_equal(copy.loss_curve_, clf.loss_curve_)
    np.testing.assert_array_equal(copy.coefs_[0], clf.coefs_[0])


def test_pipeline(digits):
    X, y = digits
    pipe = _quiet(make_pipeline(StandardScaler(), MLPClassifier((32,), random_state=0, max_iter=50)).fit, X, y)
    assert pipe.score(X, y) > 0.95


def _seen(key):
    """A scorer reporting one fact recorded in the process that ran fit (a joblib worker)."""
    return lambda est, X, y: float(est.threads_seen_[key])


class _Probe(MLPClassifier):
    def _fit_stochastic(self, *args, **kw):
        import os

        from fastbp.threads import effective_num_threads

        self.threads_seen_ = {
            "pid": os.getpid(),
            "fastbp": effective_num_threads(),  # what fastbp's kernels may use here
            "blas": max(_blas_threads(), default=0),
            # what joblib put in this process's environment (-1: not set)
            "env_numba": int(os.environ.get("NUMBA_NUM_THREADS", -1)),
            "env_openblas": int(os.environ.get("OPENBLAS_NUM_THREADS", -1)),
        }
        return super()._fit_stochastic(*args, **kw)


def test_grid_search_in_processes_limits_threads_and_matches_serial(digits):
    import os

    from joblib import cpu_count

    X, y = digits
    grid = {"alpha": [1e-4, 1e-1], "hidden_layer_sizes": [(8,), (16,)]}
    keys = ["pid", "fastbp", "blas", "env_numba", "env_openblas"]
    scoring = {"accuracy": "accuracy", **{k: _seen(k) for k in keys}}
    est = _Probe(random_state=0, max_iter=20)
    parallel = _quiet(GridSearchCV(est, grid, cv=2, n_jobs=2, scoring=scoring, refit="accuracy").fit, X, y)
    serial = _quiet(GridSearchCV(est, grid, cv=2, n_jobs=1, scoring="accuracy").fit, X, y)
    seen = {k: np.concatenate([parallel.cv_results_[f"split{i}_test_{k}"] for i in range(2)]) for k in keys}
    assert os.getpid() not in seen["pid"]  # every fit ran in a worker process
    # joblib gives each of the n_jobs workers NUMBA_NUM_THREADS and OPENBLAS_NUM_THREADS: the
    # parent's value where it sets one, else max(cores // n_jobs, 1) (one each for two workers
    # on two cores). fastbp must take its thread count from the worker's NUMBA_NUM_THREADS, and
    # BLAS must stay within OPENBLAS_NUM_THREADS.
    for key, var in (("env_numba", "NUMBA_NUM_THREADS"), ("env_openblas", "OPENBLAS_NUM_THREADS")):
        np.testing.assert_array_equal(seen[key], int(os.environ.get(var, max(cpu_count() // 2, 1))), err_msg=var)
    np.testing.assert_array_equal(seen["fastbp"], seen["env_numba"])
    assert (seen["blas"] <= seen["env_openblas"]).all(), seen
    np.testing.assert_allclose(parallel.cv_results_["mean_test_accuracy"], serial.cv_results_["mean_test_score"])
    assert parallel.best_params_ == serial.best_params_


def test_n_threads_limits_during_fit_and_restores(digits):
    X, y = digits
    before = _blas_threads()
    est = _quiet(_Probe((16,), random_state=0, max_iter=3, n_threads=1).fit, X, y)
    assert est.threads_seen_["fastbp"] == 1 and est.threads_seen_["blas"] == 1
    assert _blas_threads() == before
    free = _quiet(MLPClassifier((16,), random_state=0, max_iter=3).fit, X, y)
    np.testing.assert_allclose(est.loss_curve_, free.loss_curve_, rtol=1e-12)


def test_concurrent_fits_in_threads_match_one_at_a_time(digits):
    X, y = digits
    jobs = [
        dict(hidden_layer_sizes=(32,), random_state=s, max_iter=6, solver=solver)
        for s, solver in [(0, "adam"), (1, "sgd"), (2, "adam")]
    ]
    serial = [_quiet(MLPClassifier(**p).fit, X, y) for p in jobs]
    results = [None] * len(jobs)

    def run(i):
        results[i] = _quiet(MLPClassifier(**jobs[i]).fit, X, y)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a, b in zip(results, serial):
        np.testing.assert_allclose(a.loss_curve_, b.loss_curve_, rtol=1e-12)
        np.testing.assert_allclose(a.predict_proba(X), b.predict_proba(X), rtol=1e-10)


def test_many_threads_predict_with_one_model(digits):
    X, y = digits
    clf = _quiet(MLPClassifier((32,), random_state=0, max_iter=5).fit, X, y)
    expected = clf.predict_proba(X)
    out = [None] * 4

    def run(i):
        out[i] = [clf.predict_proba(X) for _ in range(5)]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for results in out:
        for p in results:
            np.testing.assert_array_equal(p, expected)


def test_replacing_coefs_is_followed(digits):
    X, y = digits
    clf = _quiet(MLPClassifier((16,), random_state=0, max_iter=2).fit, X, y)
    clf.coefs_[-1] = np.zeros_like(clf.coefs_[-1])
    clf.intercepts_[-1] = np.zeros_like(clf.intercepts_[-1])
    np.testing.assert_allclose(clf.predict_proba(X), 0.1)


# -- bad input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "param, value, match",
    [
        ("solver", "rmsprop", "solver"),
        ("activation", "softmax", "activation"),
        ("hidden_layer_sizes", (10, 0), "hidden_layer_sizes"),
        ("hidden_layer_sizes", "ten", "hidden_layer_sizes"),
        ("alpha", -1.0, "alpha"),
        ("batch_size", 0, "batch_size"),
        ("batch_size", "all", "batch_size"),
        ("learning_rate", "cyclic", "learning_rate"),
        ("learning_rate_init", 0.0, "learning_rate_init"),
        ("momentum", 1.5, "momentum"),
        ("beta_1", 1.0, "beta_1"),
        ("epsilon", 0.0, "epsilon"),
        ("n_iter_no_change", 0, "n_iter_no_change"),
        ("validation_fraction", 1.0, "validation_fraction"),
        ("max_iter", 0, "max_iter"),
        ("max_fun", 0, "max_fun"),
        ("tol", -1.0, "tol"),
        ("shuffle", "yes", "shuffle"),
        ("dtype", "float16", "dtype"),
        ("n_threads", 0, "n_threads"),
        ("class_weight", "even", "class_weight"),
    ],
)
def test_bad_parameters_name_themselves(digits, param, value, match):
    X, y = digits
    with pytest.raises((ValueError, TypeError), match=match):
        MLPClassifier(**{param: value}).fit(X, y)


def test_bad_calls_give_clear_errors(digits):
    X, y = digits
    with pytest.raises(NotFittedError):
        MLPClassifier().predict(X)
    with pytest.raises(ValueError, match="classes"):
        MLPClassifier().partial_fit(X, y)
    with pytest.raises(ValueError, match="early_stopping"):
        MLPClassifier(early_stopping=True).partial_fit(X, y, classes=np.unique(y))
    with pytest.raises(ValueError, match="balanced.*partial_fit"):
        MLPClassifier(class_weight="balanced").partial_fit(X, y, classes=np.unique(y))
    with pytest.raises(ValueError, match="class_weight.*multilabel"):
        MLPClassifier(class_weight="balanced").fit(X, np.stack([y % 2, y % 3 == 0], axis=1))
    with pytest.raises(ValueError, match="class_weight.*42"):
        MLPClassifier(class_weight={42: 1.0}).fit(X, y)
    with pytest.raises(ValueError, match="poisson.*non-negative"):
        MLPRegressor(loss="poisson").fit(X, X[:, 0] - 1)
    with pytest.raises(ValueError, match="loss"):
        MLPRegressor(loss="huber").fit(X, X[:, 0])
    with pytest.raises(ValueError, match="sample_weight.*shape"):
        MLPClassifier().fit(X, y, sample_weight=np.ones(3))
    with pytest.raises(ValueError, match="sample_weight.*non-negative"):
        MLPClassifier().fit(X, y, sample_weight=-np.ones(len(y)))
    clf = _quiet(MLPClassifier((8,), max_iter=2).fit, X, y)
    with pytest.raises(ValueError, match="64 features"):
        clf.predict(X[:, :10])
    with pytest.raises(ValueError, match="NaN"):
        MLPClassifier().fit(np.where(X > 0.5, np.nan, X), y)
    clf.set_params(warm_start=True, hidden_layer_sizes=(9,))
    with pytest.raises(ValueError, match="coefs_"):
        clf.fit(X, y)


def test_divergence_raises_instead_of_returning_nan(digits):
    X, y = digits
    with pytest.raises(ValueError, match="non-finite"):
        _quiet(
            MLPRegressor(
                hidden_layer_sizes=(16,),
                activation="identity",
                solver="sgd",
                learning_rate_init=1.0,
                max_iter=20,
                random_state=0,
            ).fit,
            X * 100,
            X[:, 0] * 1e3,
        )


def test_ctrl_c_stops_after_a_whole_step_and_keeps_the_model(digits, monkeypatch, default_sigint):
    import os
    import signal

    from fastbp.sklearn import _base, _outputs

    X, y = digits
    monkeypatch.setattr(_base, "COMPILED", False)  # the Python loop; the compiled one: tests/test_sklearn_compiled.py
    calls = []
    real = _outputs.OutputLoss.__call__

    def interrupting(self, *args):
        calls.append(1)
        if len(calls) == 5:
            os.kill(os.getpid(), signal.SIGINT)  # arrives mid-step
        return real(self, *args)

    monkeypatch.setattr(_outputs.OutputLoss, "__call__", interrupting)
    params = dict(hidden_layer_sizes=(16,), random_state=0, batch_size=50, shuffle=False, max_iter=5)
    with pytest.warns(UserWarning, match="interrupted"):
        clf = MLPClassifier(**params).fit(X, y)
    monkeypatch.setattr(_outputs.OutputLoss, "__call__", real)
    ref = _quiet(
        MLPClassifier(**{**params, "batch_size": 50, "max_iter": 1}).partial_fit, X[:250], y[:250], classes=np.unique(y)
    )
    assert clf.loss_curve_ == [] and clf.n_iter_ == 0
    for a, b in zip(clf.coefs_, ref.coefs_):
        np.testing.assert_array_equal(a, b)  # exactly five whole steps of 50 rows
    assert signal.getsignal(signal.SIGINT) is default_sigint  # the handler from before fit is back
