"""Run under ``mpiexec -n N``: the fault CASE (tests/test_issue13_faults.py); every rank prints how its fit ended.

Each rank prints ``RESULT rank=<r> type=<exception type or none> message=<message>`` and exits 0.

    mpiexec -n 2 python tests/mpi_scripts/faults_mpi.py val_stream
"""

from __future__ import annotations

import sys

import numpy as np
from mpi4py import MPI

import fastbp
from fastbp.data import Stream

CASES = ("loss", "val_stream", "val_memmap", "save", "resume")


def main(case, path=""):
    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    rng = np.random.default_rng(rank)
    X = rng.standard_normal((40, 5)).astype(np.float32)
    y = rng.integers(0, 3, 40)
    model = fastbp.Sequential(fastbp.Linear(5, 8, activation="relu", seed=0), fastbp.Linear(8, 3, seed=1))
    kw = dict(
        loss=fastbp.SoftmaxCrossEntropy(),
        optimizer=fastbp.SGD(model.parameters(), lr=0.1),
        epochs=2,
        batch_size=8,
        progress=False,
        seed=0,
    )
    if case == "loss" and rank == 1:
        kw["loss"] = fastbp.SoftmaxCrossEntropy(label_smoothing=0.1)
    if case == "val_stream":
        kw["validation_data"] = Stream([(X[:8], y[:8]), (X[8:16], y[8:16])])
    if case == "val_memmap":
        np.save(f"{path}.{rank}.x.npy", X[:16])
        np.save(f"{path}.{rank}.y.npy", y[:16])
        kw["validation_data"] = (np.load(f"{path}.{rank}.x.npy", mmap_mode="r"), f"{path}.{rank}.y.npy")
    if case in ("save", "resume"):
        kw["checkpoint"] = path
        kw["resume"] = case == "resume"
    try:
        history = fastbp.fit(model, X, y, comm=comm, **kw)
        kind, message = "none", repr(history.val_loss or history.loss)
    except BaseException as e:  # noqa: BLE001 - the test reads what each rank raised
        kind, message = type(e).__name__, str(e)
    sys.stdout.write(f"RESULT rank={rank} type={kind} message={message}\n")
    sys.stdout.flush()


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3) or sys.argv[1] not in CASES:
        sys.exit(f"usage: faults_mpi.py {{{','.join(CASES)}}} [path]")
    main(*sys.argv[1:])
