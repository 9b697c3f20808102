"""``solver="lbfgs"`` against scikit-learn's: same objective, same scipy run, same attributes and warnings.

scikit-learn (the installed version) keeps no ``loss_curve_`` with L-BFGS, so the
per-iteration losses of both are taken from scipy itself: ``scipy.optimize.minimize``
is wrapped to record each iteration's objective value (``callback``), which is the
L-BFGS loss curve of either library.

Why the strict comparisons stop at 20 iterations: L-BFGS amplifies rounding
differences (its line search and curvature pairs feed back every value). Two
float64 implementations that differ anywhere by one ulp agree to ~1e-13 for the
first 20-30 iterations and then drift apart; scikit-learn against itself with
its initial weights scaled by (1 + 1e-15) is 1e-10 apart by iteration ~45 and
~5% apart in ``loss_`` after 200 on the two-output regression below. A run that converges early
(the classifiers) is compared to the end.
"""

import tracemalloc
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")
import scipy.optimize  # noqa: E402
import scipy.sparse as sp  # noqa: E402
from _sklearn_cases import KINDS, digits_rows, targets  # noqa: E402
from sklearn import neural_network as sk  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from fastbp import sklearn as fb  # noqa: E402
from fastbp.sklearn import _lbfgs  # noqa: E402
from fastbp.sklearn._outputs import OutputLoss  # noqa: E402

RTOL = 1e-10


@pytest.fixture(scope="module")
def digits():
    return digits_rows()


_targets = targets


def _pair(kind, **params):
    params = {"solver": "lbfgs", "random_state": 0, **params}
    if kind.startswith("regression") or kind == "poisson":
        loss = "poisson" if kind == "poisson" else "squared_error"
        return sk.MLPRegressor(loss=loss, **params), fb.MLPRegressor(loss=loss, **params)
    return sk.MLPClassifier(**params), fb.MLPClassifier(**params)


@pytest.fixture
def curves(monkeypatch):
    """Each ``scipy.optimize.minimize`` call's per-iteration objective values, one list per call."""
    real = scipy.optimize.minimize
    recorded = []

    def recording(*args, **kw):
        assert "callback" not in kw
        values = []
        recorded.append(values)
        return real(*args, callback=lambda intermediate_result: values.append(intermediate_result.fun), **kw)

    monkeypatch.setattr(scipy.optimize, "minimize", recording)
    return recorded


def _fit_both(ref, ours, X, y, **kw):
    """Fit both; returns the warnings each emitted, as (category, message) lists."""
    seen = []
    for model in (ref, ours):
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            model.fit(X, y, **kw)
        seen.append([(x.category, str(x.message)) for x in w if not issubclass(x.category, RuntimeWarning)])
    return seen


def _output(model, X):
    return model.predict_proba(X) if hasattr(model, "predict_proba") else model.predict(X)


def _assert_same_run(ref, ours, X, curves, rtol=RTOL):
    assert ours.n_iter_ == ref.n_iter_ and ours.t_ == ref.t_ == 0
    np.testing.assert_allclose(ours.loss_, ref.loss_, rtol=rtol)
    ref_curve, our_curve = curves[-2], curves[-1]
    assert len(our_curve) == len(ref_curve) == ref.n_iter_
    np.testing.assert_allclose(our_curve, ref_curve, rtol=rtol)
    for a, b in zip(ours.coefs_ + ours.intercepts_, ref.coefs_ + ref.intercepts_):
        assert a.dtype == b.dtype == np.float64
        np.testing.assert_allclose(a, b, rtol=1e3 * rtol, atol=rtol)
    np.testing.assert_allclose(_output(ours, X), _output(ref, X), rtol=rtol, atol=1e-14)


# -- the same run as scikit-learn -------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_lbfgs_matches_sklearn(digits, curves, kind):
    X, y = digits
    ref, ours = _pair(kind, hidden_layer_sizes=(24, 12), max_iter=20)
    warned = _fit_both(ref, ours, X, _targets(kind, X, y))
    assert warned[0] == warned[1] and warned[0][0][0] is ConvergenceWarning  # max_iter reached: the same text
    _assert_same_run(ref, ours, X, curves)
    assert ours.out_activation_ == ref.out_activation_ and ours.n_layers_ == ref.n_layers_


@pytest.mark.parametrize(
    "params",
    [
        dict(activation="tanh"),
        dict(activation="logistic", alpha=1.0),
        dict(activation="identity", alpha=0.0),
        dict(hidden_layer_sizes=()),
        dict(tol=1e-2),  # stops on the gradient tolerance: no warning
    ],
)
def test_lbfgs_options_match_sklearn(digits, curves, params):
    X, y = digits
    ref, ours = _pair("multiclass", **{"hidden_layer_sizes": (16,), "max_iter": 20, **params})
    warned = _fit_both(ref, ours, X, y)
    assert warned[0] == warned[1]
    _assert_same_run(ref, ours, X, curves)


@pytest.mark.parametrize("kind", ["multiclass", "binary"])
def test_lbfgs_run_to_convergence_matches_sklearn(digits, curves, kind):
    X, y = digits
    ref, ours = _pair(kind, hidden_layer_sizes=(24, 12), max_iter=200)
    warned = _fit_both(ref, ours, X, _targets(kind, X, y))
    assert warned == [[], []]  # converged (gtol) well before max_iter, in both
    assert ours.n_iter_ < 100
    # converged: the weights are where both implementations' rounding has stopped mattering
    _assert_same_run(ref, ours, X, curves, rtol=1e-9)
    np.testing.assert_array_equal(ours.predict(X), ref.predict(X))


def test_lbfgs_sample_weight_matches_sklearn(digits, curves):
    X, y = digits
    sw = np.random.default_rng(1).integers(0, 4, X.shape[0]).astype(float)
    for kind in ("multiclass", "regression"):
        ref, ours = _pair(kind, hidden_layer_sizes=(16,), max_iter=20, alpha=0.1)
        _fit_both(ref, ours, X, _targets(kind, X, y), sample_weight=sw)
        _assert_same_run(ref, ours, X, curves)


def test_lbfgs_integer_weights_equal_repeated_rows(digits):
    X, y = digits
    sw = np.random.default_rng(0).integers(0, 4, len(y))
    params = dict(hidden_layer_sizes=(16,), solver="lbfgs", max_iter=15, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        a = fb.MLPRegressor(**params).fit(X, X[:, 5], sample_weight=sw)
        b = fb.MLPRegressor(**params).fit(np.repeat(X, sw, axis=0), np.repeat(X[:, 5], sw))
    np.testing.assert_allclose(a.loss_, b.loss_, rtol=1e-10)
    np.testing.assert_allclose(a.predict(X), b.predict(X), rtol=1e-9)


def test_lbfgs_warm_start_matches_sklearn(digits, curves):
    X, y = digits
    ref, ours = _pair("multiclass", hidden_layer_sizes=(16,), max_iter=8, warm_start=True)
    _fit_both(ref, ours, X, y)
    _fit_both(ref, ours, X, y)  # continues from the fitted weights; n_iter_ counts this run only
    assert ours.n_iter_ == 8
    _assert_same_run(ref, ours, X, curves)
    assert curves[-1][0] < curves[0][-1] * (1 + 1e-12)  # the second run starts where the first stopped


def test_lbfgs_sparse_input_equals_dense_and_sklearn(digits, curves):
    X, y = digits
    ref, ours = _pair("multiclass", hidden_layer_sizes=(16,), max_iter=15)
    _fit_both(ref, ours, sp.csr_matrix(X), y)
    _assert_same_run(ref, ours, X, curves)
    for fmt in (sp.csr_array, sp.csc_matrix):
        sparse = fb.MLPClassifier((16,), solver="lbfgs", max_iter=15, random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            sparse.fit(fmt(X), y)
        np.testing.assert_allclose(sparse.loss_, ours.loss_, rtol=1e-12)
        np.testing.assert_allclose(sparse.predict_proba(fmt(X)), ours.predict_proba(X), rtol=1e-10, atol=1e-14)


# -- the objective: row blocks, reused buffers ------------------------------------------------------


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_row_blocks_give_the_full_batch_objective(digits, monkeypatch, sparse, weighted):
    X, y = digits
    sw = np.random.default_rng(2).uniform(0, 2, len(y)) if weighted else None
    data = sp.csr_matrix(X) if sparse else X

    def fit():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return fb.MLPClassifier((16,), solver="lbfgs", max_iter=10, random_state=0).fit(data, y, sample_weight=sw)

    whole = fit()
    monkeypatch.setattr(_lbfgs, "BLOCK_BYTES", 40_000)  # ~60 rows a block: 8 blocks, the last one shorter
    blocked = fit()
    n_rows = _lbfgs.block_rows(len(y), [64, 16, 10], 10, 8, sparse)
    assert 1 < n_rows < len(y) and len(y) % n_rows
    np.testing.assert_allclose(blocked.loss_, whole.loss_, rtol=1e-12)
    for a, b in zip(blocked.coefs_, whole.coefs_):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("sparse", [False, True])
def test_objective_allocates_nothing_proportional_to_the_rows(monkeypatch, sparse):
    rng = np.random.default_rng(0)
    n = 20_000
    X = rng.random((n, 64))
    if sparse:
        X = sp.csr_matrix(np.where(X > 0.7, X, 0.0))
    y = rng.integers(0, 10, n)
    clf = fb.MLPClassifier((24, 12), solver="lbfgs", max_iter=1, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X[:200], y[:200])
    net = clf._network(training=True)
    monkeypatch.setattr(_lbfgs, "BLOCK_BYTES", 1 << 20)
    objective = _lbfgs.Objective(net, OutputLoss("softmax", np.float64), X, y.astype(np.int64), rng.random(n), 1e-4)
    assert len(objective.blocks) > 10
    x = net.data.astype(np.float64)
    objective(x)  # first call: the plans' buffers
    tracemalloc.start()
    try:
        loss, grad = objective(x * 1.01)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert np.isfinite(loss) and grad.shape == x.shape
    # what a call may allocate: the float64 gradient for scipy and small scratch; the rows'
    # activations alone would be n * (24 + 12 + 10) * 8 = 7.4 MB
    assert peak < 20 * x.nbytes, peak


def test_scipys_own_blas_runs_one_thread_during_lbfgs_only(digits, monkeypatch):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    X, y = digits

    def blas_threads(folder):
        info = threadpoolctl.threadpool_info()
        return {lib["filepath"]: lib["num_threads"] for lib in info if f"{folder}.libs" in lib["filepath"]}

    scipy_before, numpy_before = blas_threads("scipy"), blas_threads("numpy")
    if not scipy_before:
        pytest.skip("scipy shares numpy's BLAS here: nothing to limit")
    seen = []
    real = _lbfgs.Objective.__call__

    def spying(self, packed):
        seen.append((blas_threads("scipy"), blas_threads("numpy")))
        return real(self, packed)

    monkeypatch.setattr(_lbfgs.Objective, "__call__", spying)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fb.MLPClassifier((8,), solver="lbfgs", max_iter=2, random_state=0).fit(X, y)
    assert seen
    for scipy_threads, numpy_threads in seen:
        assert set(scipy_threads.values()) == {1}  # L-BFGS-B's own vector work: one thread
        assert numpy_threads == numpy_before  # the objective's matmuls: as configured
    assert blas_threads("scipy") == scipy_before  # restored


def test_float32_trains_in_float32_close_to_float64(digits):
    X, y = digits
    params = dict(hidden_layer_sizes=(16,), solver="lbfgs", max_iter=15, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        a = fb.MLPClassifier(**params).fit(X, y)
        b = fb.MLPClassifier(**params, dtype="float32").fit(X, y)
        c = fb.MLPClassifier(**params).fit(X.astype(np.float32), y)
    assert b._net.data.dtype == np.float32 and b.coefs_[0].dtype == np.float32
    assert b.predict_proba(X).dtype == np.float32 and c.coefs_[0].dtype == np.float32
    np.testing.assert_allclose(b.loss_, a.loss_, rtol=1e-3)
    np.testing.assert_allclose(c.loss_, b.loss_, rtol=1e-12)


# -- attributes, warnings and methods as scikit-learn's --------------------------------------------


def test_max_fun_stops_with_sklearns_warning(digits, curves):
    X, y = digits
    ref, ours = _pair("regression1", hidden_layer_sizes=(16,), max_fun=7)
    warned = _fit_both(ref, ours, X, X[:, :10].sum(1))
    assert warned[0] == warned[1] and len(warned[0]) == 1
    assert "F,G EVALUATIONS EXCEEDS LIMIT" in warned[0][0][1]
    assert ours._lbfgs_calls in (7, 8)  # scipy may finish the line search's last evaluation
    _assert_same_run(ref, ours, X, curves)


def test_attributes_are_sklearns(digits):
    X, y = digits
    ref, ours = _pair("multiclass", hidden_layer_sizes=(8,), max_iter=5, early_stopping=True, batch_size=10_000)
    warned = _fit_both(ref, ours, X, y)
    assert warned[0] == warned[1]  # early_stopping and batch_size do not concern L-BFGS: no split, no clipping
    public = {k for k in vars(ref) if k.endswith("_") and not k.startswith("_")}
    assert public == {k for k in vars(ours) if k.endswith("_") and not k.startswith("_")} - {"batch_norm_"}
    assert not hasattr(ours, "loss_curve_") and not hasattr(ours, "validation_scores_")


def test_warm_start_across_solvers(digits):
    X, y = digits
    ref, ours = _pair("multiclass", hidden_layer_sizes=(8,), solver="sgd", max_iter=3, warm_start=True)
    _fit_both(ref, ours, X, y)
    for model in (ref, ours):
        model.set_params(solver="lbfgs")
    _fit_both(ref, ours, X, y)
    # the stochastic fit's loss curve and t_ stay as they were, in both
    assert len(ours.loss_curve_) == len(ref.loss_curve_) == 3 and ours.t_ == ref.t_ == 3 * len(y)
    np.testing.assert_allclose(ours.loss_, ref.loss_, rtol=1e-9)
    # back to sgd: scikit-learn fails (its L-BFGS left the loss curve, not its counters, in place);
    # fastbp continues from the L-BFGS weights
    ours.set_params(solver="sgd", warm_start=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours.fit(X, y)
    assert len(ours.loss_curve_) == 6
    fresh = fb.MLPClassifier((8,), solver="lbfgs", max_iter=3, random_state=0, warm_start=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fresh.fit(X, y).set_params(solver="adam").fit(X, y)
    assert len(fresh.loss_curve_) == 3 and fresh.t_ == 3 * len(y)


def test_partial_fit_exists_as_in_sklearn(digits, curves):
    X, y = digits
    for cls in ("MLPClassifier", "MLPRegressor"):
        for solver in ("lbfgs", "sgd", "adam"):
            ref, ours = getattr(sk, cls)(solver=solver), getattr(fb, cls)(solver=solver)
            assert hasattr(ours, "partial_fit") == hasattr(ref, "partial_fit"), (cls, solver)
    with pytest.raises(AttributeError) as ref_err:
        getattr(sk.MLPClassifier(solver="lbfgs"), "partial_fit")  # noqa: B009 - the access is what is tested
    with pytest.raises(AttributeError) as our_err:
        getattr(fb.MLPClassifier(solver="lbfgs"), "partial_fit")  # noqa: B009
    assert str(our_err.value) == str(ref_err.value)
    assert str(our_err.value.__cause__) == str(ref_err.value.__cause__) != "None"
    # scikit-learn's regressor keeps partial_fit with lbfgs: one whole L-BFGS run from the current weights
    ref = sk.MLPRegressor(hidden_layer_sizes=(8,), solver="lbfgs", max_iter=5, random_state=0)
    ours = fb.MLPRegressor(hidden_layer_sizes=(8,), solver="lbfgs", max_iter=5, random_state=0)
    for _ in range(2):
        for model in (ref, ours):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                model.partial_fit(X, X[:, 3])
    _assert_same_run(ref, ours, X, curves)


@pytest.mark.parametrize(
    "extra, names",
    [(dict(dropout=0.2), "dropout"), (dict(dropout=[0.0, 0.1]), "dropout"), (dict(batch_norm=True), "batch_norm")],
)
def test_dropout_and_batch_norm_are_refused_with_lbfgs(digits, extra, names):
    X, y = digits
    with pytest.raises(ValueError, match=f"^{names}: solver='lbfgs' needs .*got {names}="):
        fb.MLPClassifier((8, 8), solver="lbfgs", **extra).fit(X, y)
    with warnings.catch_warnings():  # the same parameters train with the stochastic solvers
        warnings.simplefilter("ignore", ConvergenceWarning)
        fb.MLPClassifier((8, 8), solver="adam", max_iter=2, **extra).fit(X, y)


# -- scikit-learn's estimator checks, with lbfgs ------------------------------------------------

_LOG_PROBA = (
    "predict_log_proba is computed from the scores (finite where predict_proba underflows to 0); "
    "L-BFGS fits confidently enough that the check's np.log(predict_proba) is -inf there"
)


def _expected_failures(estimator):
    if not isinstance(estimator, fb.MLPClassifier):
        return {}
    return {
        "check_classifiers_train": _LOG_PROBA,
    }


@parametrize_with_checks(
    [fb.MLPClassifier(solver="lbfgs", max_iter=100), fb.MLPRegressor(solver="lbfgs", max_iter=100)],
    expected_failed_checks=_expected_failures,
    xfail_strict=True,
)
def test_sklearn_estimator_checks_with_lbfgs(estimator, check):
    check(estimator)
