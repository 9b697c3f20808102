"""Per-step cost of averaging gradients over MPI ranks: one flat all-reduce after the backward, or one
non-blocking all-reduce per layer started as soon as that layer's backward is done (overlapped with
the backward of the layers below).

    mpiexec -n 2 python tests/mpi_scripts/allreduce_cost.py [--batch 128] [--steps 200] [--dtype float32]

MLP 784-512-256-10 (535k parameters), ReLU, softmax cross-entropy, per-rank batch ``--batch``.
Rank 0 prints the median time per step of: the backward alone, backward + flat Allreduce,
backward + per-layer Iallreduce/Waitall, and the flat Allreduce alone. Each rank runs one thread.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from mpi4py import MPI

import fastbp


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--dtype", default="float32")
    args = ap.parse_args()
    comm = MPI.COMM_WORLD
    fastbp.set_num_threads(1)
    dtype = np.dtype(args.dtype)
    sizes = (784, 512, 256, 10)
    layers = [
        fastbp.Linear(a, b, activation="relu" if i < 2 else None, dtype=dtype, seed=i)
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))
    ]
    model = fastbp.Sequential(*layers)
    loss = fastbp.SoftmaxCrossEntropy()
    params = model.parameters()
    flat = np.zeros(sum(p.size for p in (q.data for q in params)) + 8, dtype)
    start = 0
    segments = []  # each layer's slice of the flat buffer (its parameters are contiguous there)
    for layer in model.layers:
        first = start
        for p in layer.parameters():
            p.grad = flat[start : start + p.data.size].reshape(p.shape)
            start += p.data.size
        segments.append(flat[first:start])
    rng = np.random.default_rng(comm.Get_rank())
    X = rng.standard_normal((args.batch, 784)).astype(dtype)
    y = rng.integers(0, 10, args.batch)
    model.train()

    def step(kind):
        out = model.forward(X)
        loss.forward(out, y)
        if kind == "per-layer":
            dy, requests = loss.backward(), []
            for i in range(len(model.layers) - 1, -1, -1):
                dy = model.layers[i].backward(dy, need_dx=i > 0)
                requests.append(comm.Iallreduce(MPI.IN_PLACE, segments[i], op=MPI.SUM))
            MPI.Request.Waitall(requests)
            return
        model.backward(loss.backward(), input_grad=False)
        if kind == "flat":
            comm.Allreduce(MPI.IN_PLACE, flat, op=MPI.SUM)
        else:  # the baseline waits for the slower rank too, as any all-reduce does
            comm.Barrier()

    def allreduce_alone():
        comm.Allreduce(MPI.IN_PLACE, flat, op=MPI.SUM)

    results = {}
    kinds = ["forward+backward+barrier", "flat", "per-layer"]
    for _ in range(20):  # compile and warm up
        for kind in kinds:
            step(kind)
    times = {k: [] for k in kinds + ["flat all-reduce alone"]}
    for _ in range(args.steps):
        for kind in kinds:  # taking turns: a busy machine slows every kind alike
            comm.Barrier()
            t0 = time.perf_counter()
            step(kind)
            times[kind].append(time.perf_counter() - t0)
        comm.Barrier()
        t0 = time.perf_counter()
        allreduce_alone()
        times["flat all-reduce alone"].append(time.perf_counter() - t0)
    for k, ts in times.items():
        results[k] = float(np.median(ts)) * 1e3
    if comm.Get_rank() == 0:
        n = sum(p.data.size for p in params)
        print(f"{comm.Get_size()} ranks, batch {args.batch} per rank, {args.dtype}, {n:,} parameters, median ms/step:")
        for k, ms in results.items():
            extra = (
                ""
                if k in ("forward+backward+barrier", "flat all-reduce alone")
                else f"  (+{ms - results['forward+backward+barrier']:.3f})"
            )
            print(f"  {k:26s} {ms:8.3f}{extra}")


if __name__ == "__main__":
    main()
