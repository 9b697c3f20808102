"""Thread control and concurrency: two models trained at once equal the same runs one at a time."""

import contextlib
import threading

import numba
import numpy as np
import pytest

import fastbp
from fastbp import jit, threads
from fastbp import kernels as K


def train(seed, steps=15, batch=64):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, 30)).astype(np.float32)
    t = rng.integers(0, 5, batch)
    model = fastbp.Sequential(fastbp.Linear(30, 64, activation="relu", seed=seed), fastbp.Linear(64, 5, seed=seed + 1))
    loss_fn = fastbp.SoftmaxCrossEntropy()
    losses = []
    for _ in range(steps):
        losses.append(loss_fn(model(x), t))
        model.backward(loss_fn.backward(), input_grad=False)
        for p in model.parameters():
            p.data -= np.float32(0.1) * p.grad
    return losses, [p.data.copy() for p in model.parameters()]


def run_concurrently(fn, args):
    results = [None] * len(args)
    errors = []

    def work(i):
        try:
            results[i] = fn(*args[i])
        except BaseException as e:  # noqa: BLE001 - re-raised in the main thread
            errors.append(e)

    ts = [threading.Thread(target=work, args=(i,)) for i in range(len(args))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise errors[0]
    return results


def assert_same_runs(a, b):
    for (la, pa), (lb, pb) in zip(a, b):
        np.testing.assert_allclose(la, lb, rtol=1e-6)
        for x, y in zip(pa, pb):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


@contextlib.contextmanager
def forced_parallel():
    """Make every kernel call take its parallel version, or skip where this process cannot run one."""
    if fastbp.get_num_threads() < 2:
        pytest.skip("parallel kernels need 2+ threads (NUMBA_NUM_THREADS / set_num_threads)")  # an environment fact
    if not threads.resolve_layer():
        layer = threads.threading_info()["numba_threading_layer"]
        pytest.skip(f"no thread-safe numba threading layer here ({layer!r})")  # an installation fact
    with threads.parallel_min_work(0):
        assert threads.use_parallel(1)
        yield


@pytest.mark.parametrize("force_parallel", [False, True])
def test_two_models_in_two_threads_match_sequential(force_parallel):
    with forced_parallel() if force_parallel else contextlib.nullcontext():  # every kernel launches numba threads
        seq = [train(1), train(2)]
        conc = run_concurrently(train, [(1,), (2,)])
    assert_same_runs(seq, conc)


def test_threadsafe_layer_chosen_for_parallel_kernels():
    # Resolved directly: threading_info() only loads the layer with 2+ threads, so with
    # NUMBA_NUM_THREADS=1 the old check asserted nothing. The choice does not depend on the count.
    ok = threads.resolve_layer()
    layer = threads.threading_info()["numba_threading_layer"]
    assert ok == (layer in ("omp", "tbb")), layer  # parallel kernels never on workqueue: not thread-safe
    info = fastbp.threading_info()
    assert info["numba_threading_layer"] == layer
    assert info["parallel_kernels"] == (ok and fastbp.get_num_threads() > 1)
    if not ok:
        pytest.skip(f"no thread-safe numba threading layer could be loaded (got {layer!r}): kernels stay serial")


def test_concurrent_predict_with_one_model():
    rng = np.random.default_rng(0)
    model = fastbp.Sequential(fastbp.Linear(20, 32, activation="tanh", seed=0), fastbp.Linear(32, 4, seed=1))
    xs = [rng.standard_normal((500, 20)).astype(np.float32) for _ in range(4)]
    expected = [model.predict(x, batch_size=64) for x in xs]
    got = run_concurrently(lambda x: model.predict(x, batch_size=64), [(x,) for x in xs])
    for e, g in zip(expected, got):
        np.testing.assert_array_equal(e, g)


def test_eight_threads_predicting_request_sized_batches_give_the_sequential_results():
    # The serving case: many small calls (batch 1-64, the fast path of Sequential.predict), a model
    # with every kind of inference layer, 8 threads at once, each repeating its calls.
    rng = np.random.default_rng(1)
    model = fastbp.Sequential(
        fastbp.Linear(16, 24, activation="gelu", seed=0),
        fastbp.BatchNorm1d(24),
        fastbp.Dropout(0.3, seed=0),
        fastbp.LayerNorm(24),
        fastbp.SiLU(),
        fastbp.Linear(24, 5, seed=1),
        fastbp.Softmax(),
    )
    model.forward(rng.standard_normal((32, 16)).astype(np.float32))  # running statistics move off 0 and 1
    model.eval()
    xs = [rng.standard_normal((b, 16)).astype(np.float32) for b in (1, 2, 8, 64, 1, 7, 33, 64)]
    expected = [model.predict(x) for x in xs]
    got = run_concurrently(lambda x: [model.predict(x) for _ in range(50)], [(x,) for x in xs])
    for e, calls in zip(expected, got):
        for g in calls:
            np.testing.assert_array_equal(e, g)


def test_set_num_threads_reaches_numba_and_blas():
    from threadpoolctl import threadpool_info

    before = fastbp.get_num_threads()
    try:
        fastbp.set_num_threads(1)
        assert fastbp.get_num_threads() == 1
        assert all(p["num_threads"] == 1 for p in threadpool_info() if p["user_api"] == "blas")
        assert not threads.use_parallel(1 << 40)  # one thread: kernels run serially
        r1 = train(3)
        fastbp.set_num_threads(before)
        assert all(p["num_threads"] == before for p in threadpool_info() if p["user_api"] == "blas")
        assert_same_runs([r1], [train(3)])
    finally:
        fastbp.set_num_threads(before)


def test_numba_thread_count_follows_into_other_threads():
    """numba's thread count is per calling thread; fastbp's setting must win in whichever thread calls."""
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs at least 2 numba threads")  # a machine fact
    if not threads.resolve_layer():
        pytest.skip(
            f"no thread-safe numba threading layer here ({threads.threading_info()['numba_threading_layer']!r})"
        )
    seen = []

    def work():
        numba.set_num_threads(1)  # a stale per-thread value, as a worker pool may leave
        assert threads.use_parallel(10)
        seen.append(numba.get_num_threads())

    before = fastbp.get_num_threads()
    try:
        fastbp.set_num_threads(2)
        with threads.parallel_min_work(0):
            t = threading.Thread(target=work)
            t.start()
            t.join()
    finally:
        fastbp.set_num_threads(before)
    assert seen == [2]


@pytest.mark.parametrize("n,err", [(0, ValueError), (10**6, ValueError), (1.5, TypeError), (True, TypeError)])
def test_set_num_threads_rejects_bad_values(n, err):
    with pytest.raises(err, match="n: expected an int in"):
        fastbp.set_num_threads(n)


def _bias_grad(version, dy):
    db = np.empty(dy.shape[1], np.float32)
    (K.bias_grad if version is None else getattr(K.bias_grad, version))(dy, db, np.empty((8, dy.shape[1]), np.float32))
    return db


# Bit-equal by design, not by luck: a constant number of row chunks (CHUNKS), so each column
# is summed in the same order whatever the thread count and in both compiled versions.
def test_parallel_and_serial_versions_give_same_results():
    dy = np.random.default_rng(1).standard_normal((300, 129)).astype(np.float32)
    np.testing.assert_array_equal(_bias_grad("parallel", dy), _bias_grad("serial", dy))  # any thread count


def test_parallel_and_serial_dispatch_give_same_results():
    dy = np.random.default_rng(1).standard_normal((300, 129)).astype(np.float32)
    serial = _bias_grad("serial", dy)
    with forced_parallel():
        np.testing.assert_array_equal(_bias_grad(None, dy), serial)


def test_bad_parallel_threshold_env_is_a_clear_error():
    import os
    import subprocess
    import sys

    env = dict(os.environ, FASTBP_PARALLEL_MIN_WORK="lots")
    r = subprocess.run([sys.executable, "-c", "import fastbp"], env=env, capture_output=True, text=True)
    assert r.returncode != 0
    assert "FASTBP_PARALLEL_MIN_WORK: expected an int >= 0, got 'lots'" in r.stderr


def test_jit_falls_back_to_no_cache_when_there_is_nowhere_to_write(monkeypatch, tmp_path):
    """With no writable cache folder fastbp must still import and run its kernels (after a warning)."""
    blocker = tmp_path / "file"
    blocker.write_text("")  # a file where the cache folder would go: it cannot be created
    monkeypatch.setattr(jit, "cache_dir", lambda: blocker / "cache")

    def double(a, out):
        for i in range(a.shape[0]):
            out[i] = 2 * a[i]

    with pytest.warns(RuntimeWarning, match="no writable kernel cache folder"):
        k = jit.Kernel(double)
    out = np.empty(3)
    k(np.arange(3.0), out)
    np.testing.assert_array_equal(out, [0, 2, 4])


# -- limit_threads ---------------------------------------------------------------


def _blas_threads():
    return [p["num_threads"] for p in threads.blas_controller().info() if p["user_api"] == "blas"]


def test_limit_threads_caps_blas_and_kernels_then_restores():
    before = _blas_threads()
    with threads.limit_threads(1):
        assert _blas_threads() == [1] * len(before)
        assert threads.effective_num_threads() == 1
        with threads.limit_threads(2):  # an inner block cannot raise the outer limit
            assert threads.effective_num_threads() == 1 and _blas_threads() == [1] * len(before)
    assert _blas_threads() == before and threads.effective_num_threads() == fastbp.get_num_threads()
    with threads.limit_threads(None):  # None changes nothing
        assert _blas_threads() == before


def test_limit_threads_overlapping_in_threads_restores_the_original():
    before = _blas_threads()
    inside = threading.Barrier(2)
    leave_first = threading.Event()
    seen = {}

    def block(name, n, wait_for=None):
        with threads.limit_threads(n):
            inside.wait()
            seen[name] = threads.effective_num_threads()
            if wait_for is not None:
                wait_for.wait()
        if wait_for is None:
            leave_first.set()  # the first block ends while the second is still active

    a = threading.Thread(target=block, args=("a", 1))
    b = threading.Thread(target=block, args=("b", 2, leave_first))
    a.start()
    b.start()
    a.join()
    b.join()
    assert seen["a"] == 1 and seen["b"] == min(2, fastbp.get_num_threads())  # numba's count is per thread
    assert _blas_threads() == before


def test_limit_threads_rejects_bad_counts():
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises((ValueError, TypeError), match="n_threads: expected None or an int >= 1"):
            with threads.limit_threads(bad):
                pass


# -- the default thread count ----------------------------------------------------


def test_default_thread_count_honours_the_smallest_limit_in_the_environment(monkeypatch):
    # What numba could launch, fixed: on a 1-thread setting no limit could lower it.
    cores = 4
    monkeypatch.setattr(numba.config, "NUMBA_NUM_THREADS", cores)
    assert threads.default_num_threads({}) == (cores, "NUMBA_NUM_THREADS")
    # Dask's nanny: OMP/MKL/OPENBLAS_NUM_THREADS=1 but no NUMBA_NUM_THREADS.
    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    assert threads.default_num_threads(env) == (1, "OMP_NUM_THREADS")
    assert threads.default_num_threads({"OMP_NUM_THREADS": "3", "OPENBLAS_NUM_THREADS": "1"}) == (
        1,
        "OPENBLAS_NUM_THREADS",
    )
    # A limit above what numba can launch changes nothing; OpenMP's per-level list counts its first level.
    assert threads.default_num_threads({"OMP_NUM_THREADS": str(cores + 1)}) == (cores, "NUMBA_NUM_THREADS")
    assert threads.default_num_threads({"OMP_NUM_THREADS": f"1,{cores}"}) == (1, "OMP_NUM_THREADS")
    assert threads.default_num_threads({"OMP_NUM_THREADS": " "}) == (cores, "NUMBA_NUM_THREADS")  # empty: unset


@pytest.mark.parametrize("raw", ["lots", "0", "-2"])
def test_default_thread_count_warns_about_and_ignores_unusable_limits(raw):
    with pytest.warns(RuntimeWarning, match=f"OMP_NUM_THREADS='{raw}' is not a positive int: fastbp ignores it"):
        n, source = threads.default_num_threads({"OMP_NUM_THREADS": raw})
    assert (n, source) == (max(1, numba.config.NUMBA_NUM_THREADS), "NUMBA_NUM_THREADS")


def test_process_started_with_a_limit_uses_it_until_set_num_threads():
    import json
    import os
    import subprocess
    import sys

    code = (
        "import json, fastbp; from fastbp import threads; i = fastbp.threading_info();"
        "a = [i['n_threads'], i['n_threads_from'], threads.use_parallel(1 << 40)];"
        "n = threads.default_num_threads({})[0]; fastbp.set_num_threads(n);"
        "b = [fastbp.get_num_threads(), fastbp.threading_info()['n_threads_from'],"
        " max(p['num_threads'] for p in threads.blas_controller().info() if p['user_api'] == 'blas')];"
        "print(json.dumps([a, b, n]))"
    )
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    env["OPENBLAS_NUM_THREADS"] = "1"  # as Dask's nanny and loky leave it; NUMBA_NUM_THREADS unset
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    before, after, cores = json.loads(r.stdout.splitlines()[-1])
    assert before == [1, "OPENBLAS_NUM_THREADS", False]  # no parallel kernels on a 1-thread process
    assert after == [cores, "set_num_threads", cores]  # an explicit call wins, for numba and BLAS
