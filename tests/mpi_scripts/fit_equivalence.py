"""Run under ``mpiexec -n N``: a distributed fit against one process on the ranks' batches stacked.

Every rank trains on its own shard with ``fit(..., comm=COMM_WORLD)``; rank 0 then trains the
reference in one process (``fit`` with batch N*b on the rows reordered so that each batch is the
ranks' batches stacked in rank order or, for unequal shards, a plain loop over those stacked
batches) and writes a JSON report: the largest relative differences of the parameters and of
the History, and whether every rank ended with the same parameters.

    mpiexec -n 2 python tests/mpi_scripts/fit_equivalence.py OUT.json --dtype float64 --rows 50,50
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from mpi4py import MPI

import fastbp
from fastbp.loop import backward_update, forward_loss


def make_data(total, features, classes, dtype, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((total, features)).astype(dtype)
    y = rng.integers(0, classes, total)
    return X, y


def make_model(features, classes, dtype):
    return fastbp.Sequential(
        fastbp.Linear(features, 16, activation="tanh", dtype=dtype, seed=1),
        fastbp.Linear(16, 12, activation="relu", dtype=dtype, seed=2),
        fastbp.Linear(12, classes, dtype=dtype, seed=3),
    )


def make_loss(name, classes):
    if name == "mse":
        return fastbp.MSELoss()
    if name == "wce":
        return fastbp.SoftmaxCrossEntropy(weight=np.linspace(0.5, 2.0, classes))
    return fastbp.SoftmaxCrossEntropy()


def targets(loss_name, y, classes, dtype):
    return np.eye(classes, dtype=dtype)[y] if loss_name == "mse" else y


def stacked_batches(shards, b):
    """The reference's batches: step k stacks rows [k*b, (k+1)*b) of every shard that has any, in rank order."""
    steps = max(-(-len(s) // b) for s in shards)
    return [np.concatenate([s[k * b : (k + 1) * b] for s in shards if k * b < len(s)]) for k in range(steps)]


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--dtype", default="float64")
    ap.add_argument("--rows", required=True, help="rows of each rank, comma-separated")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--loss", default="ce", choices=["ce", "wce", "mse"])
    ap.add_argument("--optimizer", default="adam", choices=["adam", "sgd"])
    ap.add_argument("--clip", type=float)
    ap.add_argument("--validation", action="store_true")
    args = ap.parse_args()
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    rows = [int(r) for r in args.rows.split(",")]
    assert len(rows) == size, f"--rows gives {len(rows)} shards for {size} ranks"
    dtype, features, classes = np.dtype(args.dtype), 6, 4
    X, labels = make_data(sum(rows), features, classes, dtype)
    y = targets(args.loss, labels, classes, dtype)
    bounds = np.cumsum([0] + rows)
    shard_idx = [np.arange(bounds[r], bounds[r + 1]) for r in range(size)]
    Xv, lv = make_data(10 * size + 3, features, classes, dtype, seed=5)
    yv = targets(args.loss, lv, classes, dtype)
    val_idx = np.array_split(np.arange(len(Xv)), size)

    def opt_for(model):
        if args.optimizer == "sgd":
            return fastbp.SGD(model.parameters(), lr=0.05, momentum=0.9)
        return fastbp.Adam(model.parameters(), lr=0.01)

    common = dict(epochs=args.epochs, shuffle=False, clip_norm=args.clip, progress=False)
    model = make_model(features, classes, dtype)
    mine = shard_idx[rank]
    val = (Xv[val_idx[rank]], yv[val_idx[rank]]) if args.validation else None
    hist = fastbp.fit(
        model,
        X[mine],
        y[mine],
        loss=make_loss(args.loss, classes),
        optimizer=opt_for(model),
        batch_size=args.batch,
        validation_data=val,
        comm=comm,
        **common,
    )
    params = [p.data.copy() for p in model.parameters()]
    everyone = comm.gather(params, root=0)
    if rank != 0:
        return
    identical = all(all(np.array_equal(a, b) for a, b in zip(params, other)) for other in everyone)
    ref = make_model(features, classes, dtype)
    ref_loss = make_loss(args.loss, classes)
    ref_opt = opt_for(ref)
    batches = stacked_batches(shard_idx, args.batch)
    ref_hist = None
    if len(set(rows)) == 1:  # equal shards: fit with batch N*b on the rows in stacked order
        order = np.concatenate(batches)
        ref_hist = fastbp.fit(
            ref,
            X[order],
            y[order],
            loss=ref_loss,
            optimizer=ref_opt,
            batch_size=args.batch * size,
            validation_data=(Xv, yv) if args.validation else None,
            **common,
        )
        kind = "fit"
    else:
        ref.train()
        for _ in range(args.epochs):
            for idx in batches:
                forward_loss(ref, ref_loss, X[idx], np.ascontiguousarray(y[idx]))
                backward_update(ref, ref_loss, ref_opt, ref.parameters(), args.clip)
        kind = "loop"
    report = {
        "reference": kind,
        "identical_across_ranks": identical,
        "param_rel": max(rel(a, b) for a, b in zip(params, (p.data for p in ref.parameters()))),
        "dtype": str(params[0].dtype),
        "epochs": hist.epochs,
    }
    if ref_hist is not None:
        report["loss_rel"] = rel(hist.loss, ref_hist.loss)
        if hist.accuracy:
            report["accuracy_diff"] = float(np.abs(np.subtract(hist.accuracy, ref_hist.accuracy)).max())
        if args.validation:
            report["val_loss_rel"] = rel(hist.val_loss, ref_hist.val_loss)
            if hist.val_accuracy:
                report["val_accuracy_diff"] = float(np.abs(np.subtract(hist.val_accuracy, ref_hist.val_accuracy)).max())
    with open(args.out, "w") as fh:
        json.dump(report, fh)


if __name__ == "__main__":
    main()
