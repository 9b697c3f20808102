"""The estimators' compiled epoch (fastbp/sklearn/_compiled.py) against their Python loop, and numpy's gemm from numba.

Both run the same kernels in the same order and numpy's own BLAS, so on this machine
they agree bit for bit; the tests allow what another BLAS build could change: the
matmuls' summation order, amplified over a few epochs (relative 1e-4 in float32,
1e-9 in float64), and the loss's float64 row sum (relative 1e-12).
"""

import threading

import numba
import numpy as np
import pytest
import scipy.sparse as sp

from fastbp.kernels.blas import gemm, gemm_addresses
from fastbp.sklearn import MLPClassifier, MLPRegressor, _base, _compiled

pytestmark = pytest.mark.skipif(gemm_addresses() is None, reason="numpy's BLAS is not an ILP64 OpenBLAS")

RTOL = {np.float32: 1e-4, np.float64: 1e-9}


def _data(kind, dtype, n=157, d=9, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(dtype)
    if kind == "multiclass":
        y = rng.integers(0, 4, n)
    elif kind == "binary":
        y = (X[:, 0] + 0.3 * rng.standard_normal(n) > 0).astype(int)
    elif kind == "multilabel":
        y = (X[:, :3] + 0.3 * rng.standard_normal((n, 3)) > 0).astype(int)
    else:
        y = X[:, :2] @ np.array([[1.0, -2.0], [0.5, 1.0]]) + 0.1 * rng.standard_normal((n, 2))
    return X, y


def _fit(cls, X, y, compiled, monkeypatch, **params):
    monkeypatch.setattr(_base, "COMPILED", compiled)
    used = []
    real = _compiled.CompiledEpoch.run

    def run(self, order, interrupted):
        used.append(True)
        return real(self, order, interrupted)

    monkeypatch.setattr(_compiled.CompiledEpoch, "run", run)
    model = cls(**params).fit(X, y)
    monkeypatch.undo()
    return model, bool(used)


def _assert_same(a, b, dtype):
    for p, q in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_):
        np.testing.assert_allclose(p, q, rtol=RTOL[dtype], atol=RTOL[dtype] * np.abs(q).max())
    np.testing.assert_allclose(a.loss_curve_, b.loss_curve_, rtol=max(1e-12, RTOL[dtype]))
    assert a.n_iter_ == b.n_iter_


CASES = [
    (MLPClassifier, "multiclass", dict(solver="adam")),
    (MLPClassifier, "binary", dict(solver="sgd", momentum=0.9, nesterovs_momentum=True, learning_rate="invscaling")),
    (MLPClassifier, "multilabel", dict(solver="sgd", momentum=0.0, activation="tanh")),
    (MLPRegressor, "regression", dict(solver="adam", activation="logistic", alpha=0.01)),
    (MLPRegressor, "regression", dict(solver="sgd", learning_rate_init=0.01, activation="identity", shuffle=False)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("cls", "kind", "params"), CASES)
def test_compiled_epoch_matches_the_python_loop(cls, kind, params, dtype, monkeypatch):
    X, y = _data(kind, dtype)
    common = dict(hidden_layer_sizes=(11, 6), batch_size=40, max_iter=6, tol=0, random_state=1, **params)
    fast, used = _fit(cls, X, y, True, monkeypatch, **common)
    slow, used_slow = _fit(cls, X, y, False, monkeypatch, **common)
    assert used and not used_slow
    assert fast.coefs_[0].dtype == dtype
    _assert_same(fast, slow, dtype)


def test_early_stopping_split_reads_the_training_rows(monkeypatch):
    # The training subset is a row index into X: the compiled gather must map through it.
    X, y = _data("multiclass", np.float64, n=300)
    common = dict(hidden_layer_sizes=(8,), early_stopping=True, max_iter=8, tol=0, random_state=3)
    fast, used = _fit(MLPClassifier, X, y, True, monkeypatch, **common)
    slow, _ = _fit(MLPClassifier, X, y, False, monkeypatch, **common)
    assert used
    _assert_same(fast, slow, np.float64)
    np.testing.assert_allclose(fast.validation_scores_, slow.validation_scores_)


def test_partial_fit_continues_the_same_trajectory(monkeypatch):
    X, y = _data("multiclass", np.float32)
    runs = []
    for compiled in (True, False):
        monkeypatch.setattr(_base, "COMPILED", compiled)
        m = MLPClassifier(hidden_layer_sizes=(7,), solver="adam", random_state=0)
        for _ in range(3):
            m.partial_fit(X, y, classes=np.arange(4))
        runs.append(m)
    _assert_same(*runs, np.float32)


@pytest.mark.parametrize(
    ("params", "fit_kw", "sparse"),
    [
        (dict(), dict(sample_weight=True), False),  # sample weights: the Python loop
        (dict(), dict(), True),  # sparse X: densified per batch
        (dict(dropout=0.2), dict(), False),  # fastbp layers
    ],
)
def test_cases_it_does_not_cover_run_the_python_loop(params, fit_kw, sparse, monkeypatch):
    X, y = _data("multiclass", np.float64)
    if fit_kw.get("sample_weight"):
        fit_kw = dict(sample_weight=np.linspace(0.5, 1.5, X.shape[0]))
    if sparse:
        X = sp.csr_matrix(X)
    monkeypatch.setattr(_base, "COMPILED", True)
    made = []
    real = _compiled.compiled_epoch
    monkeypatch.setattr(_base, "compiled_epoch", lambda *a: made.append(real(*a)) or made[-1])
    MLPClassifier(hidden_layer_sizes=(5,), max_iter=2, **params).fit(X, y, **fit_kw)
    assert made == [None]


def test_two_threads_fit_as_one_at_a_time():
    X, y = _data("multiclass", np.float32, n=400)
    kw = dict(hidden_layer_sizes=(16,), max_iter=5, tol=0)
    alone = [MLPClassifier(random_state=s, **kw).fit(X, y) for s in (0, 1)]
    together = [MLPClassifier(random_state=s, **kw) for s in (0, 1)]
    threads = [threading.Thread(target=m.fit, args=(X, y)) for m in together]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a, b in zip(alone, together):
        for p, q in zip(a.coefs_, b.coefs_):
            np.testing.assert_array_equal(p, q)  # one implementation, the same calls: the same bits


# -- numpy's gemm called from numba -------------------------------------------------------


def _gemms(fn, a, b, c, d, e):
    gemm(fn, a, False, b, False, c)  # c = a @ b
    gemm(fn, a, True, c, False, d)  # d = a.T @ c
    gemm(fn, c, False, b, True, e)  # e = c @ b.T


_gemms_jit = numba.njit(_gemms)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("n", "k", "m"), [(1, 1, 1), (1, 7, 3), (5, 1, 4), (33, 17, 1), (64, 100, 10)])
def test_gemm_matches_numpy_matmul(n, k, m, dtype):
    rng = np.random.default_rng(n * 100 + k * 10 + m)
    a, b = rng.standard_normal((n, k)).astype(dtype), rng.standard_normal((k, m)).astype(dtype)
    c, d, e = np.empty((n, m), dtype), np.empty((k, m), dtype), np.empty((n, k), dtype)
    _gemms_jit(gemm_addresses()[dtype == np.float64], a, b, c, d, e)
    # Two BLAS call paths: a dot product of K terms, each off by at most K ulps of the magnitudes' sum.
    eps = np.finfo(dtype).eps
    for got, x, y in ((c, a, b), (d, a.T, c), (e, c, b.T)):
        want = x.astype(np.float64) @ y.astype(np.float64)
        bound = x.shape[1] * eps * (np.abs(x).astype(np.float64) @ np.abs(y).astype(np.float64)) + np.finfo(dtype).tiny
        assert (np.abs(got - want) <= bound).all()


@pytest.mark.parametrize(
    "y",
    [
        np.array([3, 1, 2, 3, 1, 1]),
        np.array([1.0, 4.0, 1.0, 2.0]),  # float class labels (integral: LabelBinarizer refuses others)
        np.array(["b", "a", "c", "a"]),
        np.array([True, False, False]),
        np.array([7, 9, 9, 7]),  # binary: one column
        np.array(["no", "yes", "yes"]),
    ],
)
def test_binarize_matches_label_binarizer(y):
    from sklearn.preprocessing import LabelBinarizer

    from fastbp.sklearn._estimators import _binarize

    lb = LabelBinarizer().fit(y)
    got = _binarize(lb, y)
    assert got.dtype == bool
    np.testing.assert_array_equal(got, lb.transform(y).astype(bool))
    # labels of a subset (partial_fit), and one outside the classes: LabelBinarizer's own answer or error
    np.testing.assert_array_equal(_binarize(lb, y[:2]), lb.transform(y[:2]).astype(bool))
    lb3 = LabelBinarizer().fit(np.concatenate([y, y[:1]]))
    other = np.array(["zz"]) if y.dtype.kind == "U" else np.array([123], y.dtype)
    try:
        want = lb3.transform(other).astype(bool)
    except ValueError:
        with pytest.raises(ValueError):
            _binarize(lb3, other)
    else:
        np.testing.assert_array_equal(_binarize(lb3, other), want)


def test_ctrl_c_stops_the_compiled_loop_after_a_whole_call(monkeypatch, default_sigint):
    # One batch a call (CHUNK_FLOPS tiny): a Ctrl-C during the fifth call stops after it,
    # with five whole steps applied, as the Python loop stops after the step it arrives in.
    import os
    import signal

    from fastbp.kernels import mlp_epoch

    X, y = _data("multiclass", np.float64, n=400)
    monkeypatch.setattr(_compiled, "CHUNK_FLOPS", 1.0)
    real = mlp_epoch.epoch_kernel
    calls = []

    def interrupting_kernel(out, solver):
        kern = real(out, solver)

        def call(*args):
            calls.append(1)
            if len(calls) == 5:
                os.kill(os.getpid(), signal.SIGINT)  # arrives while the call runs
            return kern(*args)

        return call

    monkeypatch.setattr(mlp_epoch, "epoch_kernel", interrupting_kernel)
    params = dict(hidden_layer_sizes=(16,), random_state=0, batch_size=50, shuffle=False, max_iter=5)
    with pytest.warns(UserWarning, match="interrupted"):
        clf = MLPClassifier(**params).fit(X, y)
    monkeypatch.undo()
    ref = MLPClassifier(**{**params, "max_iter": 1}).partial_fit(X[:250], y[:250], classes=np.unique(y))
    assert clf.loss_curve_ == [] and clf.n_iter_ == 0 and len(calls) == 5
    for a, b in zip(clf.coefs_, ref.coefs_):
        np.testing.assert_array_equal(a, b)  # exactly five whole steps of 50 rows
    assert signal.getsignal(signal.SIGINT) is default_sigint


def _fit_and_count_entries(cache_dir):
    """A small fit in this process; the number of compiled-loop cache files afterwards."""
    import pathlib

    X, y = _data("multiclass", np.float64, n=60)
    MLPClassifier(hidden_layer_sizes=(5,), max_iter=2, tol=0).fit(X, y)
    return len(list(pathlib.Path(cache_dir).rglob("mlp_epoch*.nbc")))


def test_the_compiled_loop_is_loaded_from_the_cache_in_a_new_process(tmp_path, monkeypatch):
    # Its cache key once held the pickled kernels it calls, which differ per process: every
    # process compiled the loop again (4 s a first fit instead of 0.3 s) and added an entry.
    import json
    import subprocess
    import sys

    monkeypatch.setenv("FASTBP_CACHE_DIR", str(tmp_path))
    code = (
        "import json, sys, warnings; warnings.simplefilter('ignore'); sys.path.insert(0, sys.argv[1]); "
        "import test_sklearn_compiled as t; print(json.dumps(t._fit_and_count_entries(sys.argv[2])))"
    )
    here = str(__import__("pathlib").Path(__file__).resolve().parent)
    counts = []
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-c", code, here, str(tmp_path)], capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, done.stderr
        counts.append(json.loads(done.stdout.strip().splitlines()[-1]))
    assert counts[0] >= 1
    assert counts[1] == counts[0], "the second process compiled the loop again"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1), (5, 3), (9, 17), (200, 100)])
def test_relu_backward_bias_grad_is_the_two_kernels_in_one_pass(dtype, shape):
    # Exactly equal by construction, on any instruction set: a ReLU derivative is a select, and each
    # bias sum adds the same rounded values in the same order (bias_grad's row chunks, then their total).
    from fastbp import kernels, reference
    from fastbp.jit import RELU
    from fastbp.kernels.mlp_epoch import relu_backward_bias_grad

    rng = np.random.default_rng(3)
    dy = rng.standard_normal(shape).astype(dtype)
    y = np.maximum(rng.standard_normal(shape), 0).astype(dtype)  # ReLU outputs, exact zeros included
    n, m = shape
    dz, db = np.full(shape, np.nan, dtype), np.full(m, np.nan, dtype)
    relu_backward_bias_grad(dy, y, dz, db, np.full((8, m), np.nan, dtype))
    want_dz, want_db = np.empty(shape, dtype), np.empty(m, dtype)
    kernels.act_backward.serial(dy, y, RELU, want_dz)
    kernels.bias_grad.serial(want_dz, want_db, np.empty((8, m), dtype))
    np.testing.assert_array_equal(dz, want_dz)
    np.testing.assert_array_equal(db, want_db)
    twin_dz = np.empty(shape, dtype)
    reference.act_backward(dy, y, RELU, twin_dz)
    np.testing.assert_array_equal(dz, twin_dz)  # a select: no rounding
    np.testing.assert_allclose(db, twin_dz.sum(axis=0), rtol=RTOL[dtype], atol=RTOL[dtype])
