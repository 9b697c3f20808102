"""Run under ``mpiexec -n N``: a distributed fit stopped by Ctrl-C and resumed from its checkpoint
ends as the run that was never stopped.

Every rank trains (unequal shards, shuffled, BatchNorm, validation): once straight through;
once with a checkpoint every step, stopped by Ctrl-C on rank 1 in the middle of epoch 2;
once resumed from that checkpoint. Rank 0 writes a JSON report comparing the two ends.

    mpiexec -n 2 python tests/mpi_scripts/fit_resume.py OUT.json CHECKPOINT.npz
"""

from __future__ import annotations

import json
import os
import signal
import sys

import numpy as np
from mpi4py import MPI

import fastbp

EPOCHS, BATCH = 4, 8


def make_model():
    return fastbp.Sequential(
        fastbp.Linear(5, 12, seed=0), fastbp.BatchNorm1d(12), fastbp.ReLU(), fastbp.Linear(12, 3, seed=1)
    )


def train(comm, X, y, val, **kw):
    model = make_model()
    opt = fastbp.Adam(model.parameters(), lr=0.01)
    loss = fastbp.SoftmaxCrossEntropy()
    hist = fastbp.fit(
        model, X, y, loss=loss, optimizer=opt, batch_size=BATCH, seed=7, validation_data=val, progress=False,
        comm=comm, **kw,
    )  # fmt: skip
    return model, hist


def main(out, path):
    signal.signal(signal.SIGINT, signal.default_int_handler)
    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    rng = np.random.default_rng(100 + rank)
    n = 37 + 11 * rank  # unequal shards: the ranks need different numbers of steps
    X = rng.standard_normal((n, 5)).astype(np.float32)
    y = rng.integers(0, 3, n)
    val = (rng.standard_normal((9, 5)).astype(np.float32), rng.integers(0, 3, 9))
    straight, h_straight = train(comm, X, y, val, epochs=EPOCHS)

    stopped = make_model()  # the interrupted run: Ctrl-C on rank 1 in its 9th step (epoch 2)
    if rank == 1:
        calls = [0]
        forward = stopped.layers[0].forward

        def forward_then_ctrl_c(x):
            calls[0] += 1
            if calls[0] == 9:
                os.kill(os.getpid(), signal.SIGINT)
            return forward(x)

        stopped.layers[0].forward = forward_then_ctrl_c
    interrupted_at = None
    try:
        fastbp.fit(
            stopped, X, y, loss=fastbp.SoftmaxCrossEntropy(), optimizer=fastbp.Adam(stopped.parameters(), lr=0.01),
            batch_size=BATCH, seed=7, validation_data=val, progress=False, comm=comm, epochs=EPOCHS,
            checkpoint=path, checkpoint_unit="step",
        )  # fmt: skip
    except fastbp.TrainingInterrupted as stop:
        interrupted_at = [stop.epoch, stop.batches]
    resumed, h_resumed = train(comm, X, y, val, epochs=EPOCHS, checkpoint=path, resume=path)
    same = [np.array_equal(a, b) for a, b in zip(straight.state_dict().values(), resumed.state_dict().values())]
    result = {
        "interrupted_at": interrupted_at,
        "resumed_equal": all(same),
        "history_equal": all(
            getattr(h_straight, k) == getattr(h_resumed, k) for k in ("loss", "val_loss", "accuracy", "val_accuracy")
        ),
        "epochs": h_resumed.epochs,
    }
    everyone = comm.gather(result, root=0)
    if rank == 0:
        with open(out, "w") as fh:
            json.dump(everyone, fh)


if __name__ == "__main__":
    main(*sys.argv[1:])
