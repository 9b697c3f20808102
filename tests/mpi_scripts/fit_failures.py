"""Run under ``mpiexec -n N``: rank 1 fails in the way CASE says; every rank prints how its fit ended.

Each rank prints one line ``RESULT rank=<r> type=<exception type> message=<message>`` (or
``type=none`` when fit returned) and exits 0; a job that aborts prints nothing of the kind.

    mpiexec -n 2 python tests/mpi_scripts/fit_failures.py nan
"""

from __future__ import annotations

import os
import signal
import sys

import numpy as np
from mpi4py import MPI

import fastbp

CASES = ("bad_data", "settings", "nan", "step_error", "interrupt", "callback_error", "empty")


def on_call(k, action, f):
    """``f`` that runs ``action()`` before its ``k``-th call."""
    calls = [0]

    def wrapped(*args, **kwargs):
        calls[0] += 1
        if calls[0] == k:
            action()
        return f(*args, **kwargs)

    return wrapped


def main(case):
    # What a terminal gives (a job started in the background may inherit SIGINT ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    rng = np.random.default_rng(rank)
    X = rng.standard_normal((40, 5)).astype(np.float32)
    y = rng.integers(0, 3, 40)
    model = fastbp.Sequential(fastbp.Linear(5, 8, activation="relu", seed=0), fastbp.Linear(8, 3, seed=1))
    kw = dict(
        loss=fastbp.SoftmaxCrossEntropy(),
        optimizer=fastbp.SGD(model.parameters(), lr=0.1),
        epochs=3,
        batch_size=8,
        progress=False,
    )
    failing = rank == 1
    if failing and case == "bad_data":
        X = X[:, :4]
    if failing and case == "empty":
        X, y = X[:0], y[:0]
    if failing and case == "settings":
        kw["batch_size"] = 16
    if failing and case == "nan":
        X[13, 2] = np.nan  # in the second batch of its first epoch
    if failing and case == "step_error":

        def boom():
            raise RuntimeError("boom in the third step")

        model.layers[0].forward = on_call(3, boom, model.layers[0].forward)
    if failing and case == "interrupt":
        model.layers[0].forward = on_call(3, lambda: os.kill(os.getpid(), signal.SIGINT), model.layers[0].forward)
    if case == "callback_error":

        def callback(epoch, logs, model):
            if failing:
                raise RuntimeError("callback failed on this rank")

        kw["callbacks"] = [callback]
    try:
        fastbp.fit(model, X, y, comm=comm, **kw)
        kind, message = "none", ""
    except BaseException as e:  # noqa: BLE001 - the test reads what each rank raised
        kind, message = type(e).__name__, str(e)
    # One write (print writes the newline apart): mpiexec forwards the ranks' writes interleaved.
    sys.stdout.write(f"RESULT rank={rank} type={kind} message={message}\n")
    sys.stdout.flush()


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in CASES:
        sys.exit(f"usage: fit_failures.py {{{','.join(CASES)}}}")
    main(sys.argv[1])
