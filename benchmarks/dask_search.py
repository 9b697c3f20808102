"""GridSearchCV over fastbp.sklearn.MLPClassifier: n_jobs=1, loky (n_jobs=2) and Dask (2 workers x 1 thread).

The three run interleaved in one process (serial, loky, dask, serial, ...) after one warm-up
round each (worker start, imports, kernel cache), and the medians are reported. The scores of
the three are checked equal, and the thread counts a task sees on a Dask worker are printed.
Backs the figures in docs/dask.md.

    python benchmarks/dask_search.py [--repeats 5] [--samples 1797] [--max-iter 20]
"""

import argparse
import logging
import os
import statistics
import time
import warnings

import joblib
import numpy as np
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV

from fastbp.sklearn import MLPClassifier

GRID = {"alpha": [1e-4, 1e-2], "hidden_layer_sizes": [(32,), (64,)], "learning_rate_init": [1e-3, 1e-2]}


def thread_facts():
    """fastbp's and BLAS's thread counts where this runs."""
    from threadpoolctl import threadpool_info

    from fastbp import threads

    return {
        "pid": os.getpid(),
        "fastbp": threads.effective_num_threads(),
        "from": threads.threading_info()["n_threads_from"],
        "blas": [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"],
        "parallel_kernels": threads.use_parallel(1 << 40),
    }


def search(X, y, max_iter, backend, n_jobs):
    gs = GridSearchCV(MLPClassifier(batch_size=64, max_iter=max_iter, random_state=0), GRID, cv=3, n_jobs=n_jobs)
    with warnings.catch_warnings(), joblib.parallel_backend(backend):
        warnings.simplefilter("ignore", ConvergenceWarning)
        t0 = time.perf_counter()
        gs.fit(X, y)
        return time.perf_counter() - t0, gs.cv_results_["mean_test_score"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--samples", type=int, default=1797)
    ap.add_argument("--max-iter", type=int, default=20)
    args = ap.parse_args()

    from distributed import Client, LocalCluster

    X, y = load_digits(return_X_y=True)
    X, y = (X[: args.samples] / 16.0).astype(np.float32), y[: args.samples]
    n_fits = 3 * int(np.prod([len(v) for v in GRID.values()]))
    print(f"digits {X.shape}, {n_fits} fits of max_iter={args.max_iter}, {os.cpu_count()} cores")
    print("here:", thread_facts())
    kw = dict(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=logging.ERROR)
    with LocalCluster(**kw) as cluster, Client(cluster) as client:
        facts = [client.submit(thread_facts, workers=[w], pure=False) for w in client.ncores()]
        print("task on each Dask worker:", [f.result(timeout=120) for f in facts])
        configs = {"n_jobs=1": ("loky", 1), "loky n_jobs=2": ("loky", 2), "dask 2x1": ("dask", -1)}
        times: dict[str, list[float]] = {k: [] for k in configs}
        scores = {}
        for rep in range(args.repeats + 1):  # round 0 warms up workers, imports and the kernel cache
            for name, (backend, n_jobs) in configs.items():
                t, scores[name] = search(X, y, args.max_iter, backend, n_jobs)
                if rep:
                    times[name].append(t)
    for name in configs:
        np.testing.assert_array_equal(scores[name], scores["loky n_jobs=2"], err_msg=name)
    base = statistics.median(times["n_jobs=1"])
    print(f"median of {args.repeats} interleaved rounds (s), ratio to n_jobs=1; scores identical:")
    for name, ts in times.items():
        m = statistics.median(ts)
        print(f"  {name:14s} {m:7.3f}  ({m / base:.2f})   all: {' '.join(f'{t:.3f}' for t in ts)}")


if __name__ == "__main__":
    main()
