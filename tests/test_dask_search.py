"""scikit-learn searches over fastbp estimators on a Dask cluster: same scores as loky, one thread per worker."""

import contextlib
import logging
import os
import signal
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")
distributed = pytest.importorskip("dask.distributed")
import joblib  # noqa: E402
import threadpoolctl  # noqa: E402
from scipy.stats import loguniform  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import GridSearchCV, RandomizedSearchCV  # noqa: E402

from fastbp.sklearn import MLPClassifier, MLPRegressor  # noqa: E402

START_TIMEOUT = 120  # seconds for the cluster to start (spawning 2 workers, importing fastbp in each)
SEARCH_TIMEOUT = 300  # seconds for one search (a few seconds on the 2-core machine)
N_WORKERS = 2


@contextlib.contextmanager
def deadline(seconds, what):
    """Fail instead of hanging when a block takes longer than ``seconds`` (POSIX main thread; else no limit)."""
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def expire(signum, frame):
        raise TimeoutError(f"{what} took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def client():
    """A LocalCluster of 2 worker processes with 1 thread each, shared by the module."""
    # The nanny writes its pre-spawn-environ (OMP/MKL/OPENBLAS_NUM_THREADS=1) into *this*
    # process's os.environ before spawning workers; put it back afterwards so later tests
    # (and their subprocesses) see the environment pytest started with.
    import dask

    touched = list(dask.config.get("distributed.nanny.pre-spawn-environ", {})) + ["PYTHONHASHSEED"]
    saved = {k: os.environ.get(k) for k in touched}

    def restore_environ():
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    cluster = None
    try:
        with deadline(START_TIMEOUT, "starting the LocalCluster"):
            cluster = distributed.LocalCluster(
                n_workers=N_WORKERS,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,  # no fixed port: other processes may hold 8787
                silence_logs=logging.ERROR,
            )
            c = distributed.Client(cluster, timeout=f"{START_TIMEOUT}s")
            c.wait_for_workers(N_WORKERS, timeout=START_TIMEOUT)
    except Exception as e:  # whatever stops the start (timeout, ports, spawn): fail with it, never hang
        if cluster is not None:
            cluster.close(timeout=30)
        restore_environ()
        pytest.fail(f"a LocalCluster with {N_WORKERS} worker processes did not start: {e}")
    try:
        yield c
    finally:
        c.close(timeout=30)
        cluster.close(timeout=30)
        restore_environ()


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return (X[:300] / 16.0).astype(np.float32), y[:300]


def _thread_facts():
    """What a fit could use in the process and Python thread that runs this."""
    from fastbp import threads

    return {
        "pid": os.getpid(),
        "fastbp": threads.effective_num_threads(),  # the count fastbp's kernels may use here
        "fastbp_global": threads.get_num_threads(),
        "blas": max((p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"), default=0),
        "parallel": int(threads.use_parallel(1 << 40)),  # would a huge kernel launch its parallel version?
    }


def _seen(key):
    """A scorer reporting one fact recorded in the process that ran fit."""
    return lambda est, X, y: float(est.threads_seen_[key])


class _ProbeClassifier(MLPClassifier):
    def _fit_stochastic(self, *args, **kw):
        self.threads_seen_ = _thread_facts()
        return super()._fit_stochastic(*args, **kw)


class _ProbeRegressor(MLPRegressor):
    def _fit_stochastic(self, *args, **kw):
        self.threads_seen_ = _thread_facts()
        return super()._fit_stochastic(*args, **kw)


FACTS = ("pid", "fastbp", "blas", "parallel")
GRID = {"alpha": [1e-4, 1e-1], "hidden_layer_sizes": [(8,), (16,)]}
# Sampled in the calling process from random_state, so both backends get the same candidates.
DISTRIBUTIONS = {"alpha": loguniform(1e-5, 1e-1), "learning_rate_init": loguniform(1e-3, 1e-1)}


def _search(kind, task):
    est, main = (
        (_ProbeClassifier(batch_size=32, random_state=0, max_iter=30), "accuracy")
        if task == "classifier"
        else (_ProbeRegressor(hidden_layer_sizes=(16,), batch_size=32, random_state=0, max_iter=30), "r2")
    )
    scoring = {main: main, **{k: _seen(k) for k in FACTS}}
    common = dict(cv=2, scoring=scoring, refit=main, n_jobs=N_WORKERS)
    if kind == "grid":
        return GridSearchCV(est, GRID, **common), main
    return RandomizedSearchCV(est, DISTRIBUTIONS, n_iter=4, random_state=0, **common), main


def _fit(search, X, y, backend):
    with warnings.catch_warnings(), deadline(SEARCH_TIMEOUT, f"a {backend} search"):
        warnings.simplefilter("ignore", ConvergenceWarning)
        with joblib.parallel_backend(backend):
            return search.fit(X, y)


def _facts(search):
    return {k: np.concatenate([search.cv_results_[f"split{i}_test_{k}"] for i in range(2)]) for k in FACTS}


@pytest.mark.parametrize("kind", ["grid", "random"])
@pytest.mark.parametrize("task", ["classifier", "regressor"])
def test_search_on_dask_matches_loky_bit_for_bit(client, digits, kind, task):
    X, labels = digits
    y = labels if task == "classifier" else labels.astype(np.float32)
    on_dask, main = _search(kind, task)
    on_loky, _ = _search(kind, task)
    _fit(on_dask, X, y, "dask")
    _fit(on_loky, X, y, "loky")

    # Tolerance 0: each fit runs one thread of fastbp kernels and one of OpenBLAS on both
    # backends, on the same data, seeds and candidates, so the arithmetic is the same.
    for key in [f"split{i}_test_{main}" for i in range(2)] + [f"mean_test_{main}", f"rank_test_{main}"]:
        np.testing.assert_array_equal(on_dask.cv_results_[key], on_loky.cv_results_[key], err_msg=key)
    assert on_dask.cv_results_["params"] == on_loky.cv_results_["params"]
    assert on_dask.best_params_ == on_loky.best_params_

    # Every fit ran on a Dask worker, with one thread for fastbp and for BLAS.
    seen = _facts(on_dask)
    worker_pids = set(client.run(os.getpid).values())
    assert set(seen["pid"].astype(int)) <= worker_pids and os.getpid() not in worker_pids
    np.testing.assert_array_equal(seen["fastbp"], 1)
    np.testing.assert_array_equal(seen["blas"], 1)
    np.testing.assert_array_equal(seen["parallel"], 0)

    # refit ran here on the whole data; the best estimator predicts the same on both.
    pred = on_dask.best_estimator_.predict(X)
    assert pred.shape == y.shape
    np.testing.assert_array_equal(pred, on_loky.best_estimator_.predict(X))
    if task == "classifier":
        assert (pred == labels).mean() > 0.5  # 10 classes: chance is 0.1
    else:
        assert (
            pred.dtype == np.float32 and on_dask.best_estimator_.score(X, y) > 0.2
        )  # better than predicting the mean (r2 = 0)


def test_task_on_a_worker_uses_one_thread(client):
    """The thread counts a task sees on a threads_per_worker=1 worker: 1 for fastbp and BLAS, no parallel kernels."""
    # ncores() asks the scheduler now; scheduler_info() may return an identity cached before the workers joined
    nthreads = client.ncores()
    assert set(nthreads.values()) == {1}, nthreads
    workers = list(nthreads)
    assert len(workers) == N_WORKERS
    futures = [client.submit(_thread_facts, workers=[w], pure=False) for w in workers]
    for facts in [f.result(timeout=SEARCH_TIMEOUT) for f in futures]:
        assert facts["pid"] != os.getpid()
        # nanny sets OMP/MKL/OPENBLAS_NUM_THREADS=1 but not NUMBA_NUM_THREADS: fastbp's
        # default must honour the former, or a huge kernel would launch one numba thread per core.
        assert facts["fastbp_global"] == facts["fastbp"] == 1, facts
        assert facts["blas"] == 1, facts
        assert facts["parallel"] == 0, facts
