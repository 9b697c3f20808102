"""The regularized MLP's training step: ratios to the matmul floor, numpy and PyTorch, and a per-layer profile.

MLP 784-512-256-10 with each hidden Linear followed by BatchNorm1d, ReLU and
Dropout(0.2) as separate layers (``fastbp.bench.mlp.make_regularized_problem``),
softmax cross-entropy, SGD with momentum 0.9 or Adam.

    python benchmarks/regularized_step.py                  # the ratio table: batch 32, 256, 1024, float32, SGD and Adam
    python benchmarks/regularized_step.py --profile        # where fastbp's step time goes, layer by layer, at batch 256
    python benchmarks/regularized_step.py --kernels        # fused BatchNorm1d+ReLU+Dropout vs chain and twin
    python benchmarks/regularized_step.py --overhead       # the step's Python overhead (8-8-8-2, batch 4)

The table comes from the ``fastbp bench`` machinery (``fastbp.bench.report.step_table``):
every side in a worker process, taking turns, medians, unstable points flagged
and measured again. Only its ratios mean anything on a busy machine.

The profile runs in this process: ``time.perf_counter`` around each layer's
``forward`` and ``backward``, the loss and the optimizer step, over many steps,
interleaved with the BLAS floor timed matmul by matmul and with one read+write
pass (``np.copyto``) over each activation shape; medians. "above floor" is a
part's time minus its matmuls' time. The plain MLP's step is timed afterwards, in a
loop of its own.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from fastbp.bench.mlp import SGD_MOMENTUM, BlasFloor, FastbpStep, make_problem, make_regularized_problem
from fastbp.bench.report import print_step_table, step_table
from fastbp.layers import Dropout, Linear, ReLU
from fastbp.layers.norm import BatchNorm1d
from fastbp.threads import threading_info

SIZES = (784, 512, 256, 10)


def table(batches, optimizers, dtypes, rounds, json_path=None):
    plan = dict(
        mlps=[],  # only the regularized MLP
        batches=batches,
        optimizers=optimizers,
        dtypes=dtypes,
        rounds=rounds,
        regularized=dict(mlps=[list(SIZES)], batches=batches, optimizers=optimizers, dtypes=dtypes),
    )
    rows = step_table(plan, log=lambda msg: print(msg, flush=True))
    print_step_table(rows)
    if json_path:
        with open(json_path, "w") as fh:
            json.dump({"plan": plan, "threading": threading_info(), "steps": rows}, fh, indent=2)
        print(f"wrote {json_path}")
    return rows


def _name(layer):
    if isinstance(layer, Linear):
        return f"Linear {layer.in_features}-{layer.out_features}"
    if isinstance(layer, BatchNorm1d):
        return f"BatchNorm1d({layer.num_features})"
    if isinstance(layer, ReLU):
        return "ReLU"
    if isinstance(layer, Dropout):
        return f"Dropout({layer.p})"
    return type(layer).__name__


def profile(batch=256, optimizer="sgd", dtype="float32", steps=400, warmup=30):
    """Median ms per part of fastbp's regularized step, next to the matmuls of the same layers."""
    momentum = SGD_MOMENTUM if optimizer == "sgd" else 0.0
    model, x, y = make_regularized_problem(SIZES, batch, np.dtype(dtype))
    fb = FastbpStep(model, x, y, optimizer, momentum=momentum)
    floor = BlasFloor(model, x)
    plain_model, px, py = make_problem(SIZES, batch, np.dtype(dtype))
    plain = FastbpStep(plain_model, px, py, optimizer, momentum=momentum)
    layers = model.layers
    # The parts Sequential runs: single layers, and the fused BatchNorm1d -> ReLU -> Dropout runs.
    runs = {run.start: run for run in model._plan()}
    parts, i = [], 0  # (first layer index, object with forward/backward, name)
    while i < len(layers):
        if i in runs:
            run = runs[i]
            parts.append((i, run, " + ".join(_name(layer) for layer in run.layers) + " (fused)"))
            i = run.stop
        else:
            parts.append((i, layers[i], _name(layers[i])))
            i += 1
    need, needed = [], False  # as Sequential.backward: no dx for the first layer
    for _, part, _ in parts:
        need.append(needed)
        members = part.layers if hasattr(part, "stop") else [part]
        needed = needed or any(layer.parameters() for layer in members)
    n_lin = len(floor.Ws)
    shapes = sorted({(batch, w) for w in SIZES[1:-1]})
    src = {s: np.ones(s, dtype) for s in shapes}
    dst = {s: np.empty(s, dtype) for s in shapes}
    t = {}

    def add(key, dt):
        t.setdefault(key, []).append(dt)

    pc = time.perf_counter
    for s in range(warmup + steps):
        rec = s >= warmup
        # fastbp, layer by layer (the very calls FastbpStep.step makes)
        h = x
        for i, (_, part, _) in enumerate(parts):
            t0 = pc()
            h = part.forward(h)
            t1 = pc()
            if rec:
                add(("fwd", i), t1 - t0)
        t0 = pc()
        fb.loss.forward(h, y)
        dy = fb.loss.backward()
        t1 = pc()
        for i in range(len(parts) - 1, -1, -1):
            t2 = pc()
            dy = parts[i][1].backward(dy, need_dx=need[i])
            t3 = pc()
            if rec:
                add(("bwd", i), t3 - t2)
        t4 = pc()
        fb.opt.step()
        t5 = pc()
        if rec:
            add(("loss",), t1 - t0)
            add(("opt",), t5 - t4)
        # the floor, matmul by matmul
        hh = floor.x
        for i, (W, out) in enumerate(zip(floor.Ws, floor.h)):
            t0 = pc()
            np.matmul(hh, W, out=out)
            t1 = pc()
            hh = out
            if rec:
                add(("mm_fwd", i), t1 - t0)
        d = floor.h[-1]
        for i in reversed(range(n_lin)):
            t0 = pc()
            np.matmul(floor.x.T if i == 0 else floor.h[i - 1].T, d, out=floor.gW[i])
            t1 = pc()
            if i:
                np.matmul(d, floor.Ws[i].T, out=floor.dx[i])
                d = floor.h[i - 1]
            t2 = pc()
            if rec:
                add(("mm_bwd", i), t2 - t0)
        # whole steps, uninstrumented, and one memory pass per activation shape
        for key, fn in (("step",), fb.step), (("floor",), floor.step):
            t0 = pc()
            fn()
            t1 = pc()
            if rec:
                add(key, t1 - t0)
        for shape in shapes:
            t0 = pc()
            np.copyto(dst[shape], src[shape])
            t1 = pc()
            if rec:
                add(("copy", shape), t1 - t0)
    # The plain MLP in a loop of its own: interleaved, its 2 MB of weights, gradients and
    # optimizer state pushed the profiled model's out of the caches, and the optimizer row
    # measured 1.4 ms (SGD, batch 256) against 0.3 ms in the real step.
    for s in range(warmup + steps):
        t0 = pc()
        plain.step()
        t1 = pc()
        if s >= warmup:
            add(("plain",), t1 - t0)
    med = {k: float(np.median(v)) * 1e3 for k, v in t.items()}

    lin_index = {}
    for i, layer in enumerate(layers):
        if isinstance(layer, Linear):
            lin_index[i] = len(lin_index)
    rows = []
    for p, (i, _part, name) in enumerate(parts):
        layer = layers[i]
        mm_f = mm_b = 0.0
        if i in lin_index:
            mm_f, mm_b = med[("mm_fwd", lin_index[i])], med[("mm_bwd", lin_index[i])]
        width = getattr(layer, "out_features", None) or getattr(layer, "num_features", None)
        if width is None:  # ReLU, Dropout: the width of what they get
            width = next(layers[k].out_features for k in range(i, -1, -1) if isinstance(layers[k], Linear))
        rows.append(
            dict(
                part=f"{i} {name}",
                fwd=med[("fwd", p)],
                bwd=med[("bwd", p)],
                mm_fwd=mm_f,
                mm_bwd=mm_b,
                copy=med.get(("copy", (batch, width))),
            )
        )
    for part, key in (("loss (softmax-xent fwd+bwd)", "loss"), (f"optimizer step ({optimizer})", "opt")):
        rows.append(dict(part=part, fwd=med[(key,)], bwd=0.0, mm_fwd=0.0, mm_bwd=0.0, copy=None))
    return rows, med


def print_profile(rows, med, batch, optimizer, dtype):
    print(f"fastbp regularized step, batch {batch}, {dtype}, {optimizer}: median ms per part")
    print(
        f"{'part':28s} {'fwd':>6s} {'of it':>6s} {'bwd':>6s} {'of it':>6s} {'total':>6s} {'above':>6s} "
        f"{'share':>5s} {'passes':>6s}"
    )
    print(f"{'':50s} {'':6s} {'matmul':>6s} {'':6s} {'matmul':>6s} {'':6s} {'floor':>6s}")
    above_all = sum(r["fwd"] + r["bwd"] - r["mm_fwd"] - r["mm_bwd"] for r in rows)
    for r in rows:
        tot = r["fwd"] + r["bwd"]
        above = tot - r["mm_fwd"] - r["mm_bwd"]
        # "passes": the time above the matmuls in units of one read+write pass over the part's activations.
        passes = f"{above / r['copy']:6.1f}" if r["copy"] else ""
        print(
            f"{r['part']:50s} {r['fwd']:6.3f} {r['mm_fwd']:6.3f} {r['bwd']:6.3f} {r['mm_bwd']:6.3f} {tot:6.3f} "
            f"{above:6.3f} {above / above_all:5.0%} {passes}"
        )
    total = sum(r["fwd"] + r["bwd"] for r in rows)
    mm = sum(r["mm_fwd"] + r["mm_bwd"] for r in rows)
    print(f"{'sum of parts':50s} {'':6s} {'':6s} {'':6s} {mm:6.3f} {total:6.3f} {above_all:6.3f}")
    print(
        f"whole step (uninstrumented) {med[('step',)]:.3f} ms; BLAS floor step {med[('floor',)]:.3f} ms "
        f"(ratio {med[('step',)] / med[('floor',)]:.2f}); plain MLP step (fused ReLU, no norm or dropout, "
        f"same optimizer) {med[('plain',)]:.3f} ms"
    )
    copies = ", ".join(f"{k[1][0]}x{k[1][1]} {v:.3f} ms" for k, v in med.items() if k[0] == "copy")
    print(f"one read+write pass (np.copyto): {copies}")


def overhead(optimizers=("sgd", "adam"), steps=5000, warmup=100):
    """Median us of fastbp's regularized step on a 8-8-8-2 MLP at batch 4: all but nothing of it is Python."""
    for opt in optimizers:
        model, x, y = make_regularized_problem((8, 8, 8, 2), 4, np.dtype("float32"))
        fb = FastbpStep(model, x, y, opt, momentum=SGD_MOMENTUM if opt == "sgd" else 0.0)
        for _ in range(warmup):
            fb.step()
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            fb.step()
            times.append(time.perf_counter() - t0)
        print(f"regularized step overhead (8-8-8-2, batch 4, {opt}): {np.median(times) * 1e6:.1f} us")


def _kernel_sides(n, m, dtype):
    """BatchNorm1d -> ReLU -> Dropout forward + backward at (n, m): fused kernels, the unfused chain, the numpy twin."""
    from fastbp.jit import RELU
    from fastbp.kernels import activations as KA
    from fastbp.kernels import dropout as KD
    from fastbp.kernels import fused_norm as KF
    from fastbp.kernels import norm as KN
    from fastbp.reference import fused_norm as RF

    t = np.dtype(dtype).type
    rng = np.random.default_rng(0)
    x, dy = rng.standard_normal((2, n, m)).astype(dtype)
    gamma, beta, zero = np.ones(m, dtype), np.zeros(m, dtype), np.zeros(m, dtype)
    h, a, y, g1, g2, dx = (np.empty((n, m), dtype) for _ in range(6))
    mask, empty = np.empty((n, m), np.uint8), np.empty((0, m), dtype)
    stats, save, acc = np.empty((2, m)), np.empty((5, m), dtype), np.empty((2, KN.CHUNKS, m))
    dg, db, work = np.empty(m, dtype), np.empty(m, dtype), np.empty((2, m), dtype)
    drop = (np.uint64(1), np.uint64(0), np.uint64(int(np.ceil(0.2 * 2.0**53))), t(1.25))
    ds = drop[3]
    steps = np.zeros(1, np.uint64)  # the fused forward advances the Dropout step itself
    running = (np.zeros(m, dtype), np.ones(m, dtype), 0.1, np.zeros(1, np.int64))  # and the running statistics

    def fused(mod=KF):
        mod.bn_act_drop_forward(
            x, gamma, beta, 1e-5, RELU, t(0), True, drop[0], steps, *drop[2:], y, empty, mask, stats, save, acc,
            *running,
        )  # fmt: skip
        mod.bn_act_drop_backward(dy, x, save, empty, mask, RELU, t(0), True, ds, True, dx, dg, db, acc, work)

    def chain():
        KN.batchnorm_forward(x, gamma, beta, 1e-5, h, stats, save, acc)
        KN.batchnorm_running(running[0], running[1], stats, 0.1, n)
        np.copyto(a, h)
        KA.bias_act(a, zero, RELU)
        KD.dropout_forward(a, y, mask, *drop)
        KD.dropout_backward(dy, mask, ds, g1)
        KA.act_backward(g1, a, RELU, g2)
        KN.batchnorm_backward(g2, x, save, True, True, dx, dg, db, acc, work)

    return {"fused": fused, "chain": chain, "twin": lambda: fused(RF)}


def kernels(shapes=((256, 512), (1024, 2048)), rounds=100, dtype=np.float32):
    """Median ms of the three sides of :func:`_kernel_sides`, interleaved, per shape."""
    rows = []
    for n, m in shapes:
        sides = _kernel_sides(n, m, dtype)
        for f in sides.values():
            f()
        times: dict = {k: [] for k in sides}
        for _ in range(rounds):
            for k, f in sides.items():
                t0 = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t0)
        med = {k: float(np.median(v)) * 1e3 for k, v in times.items()}
        rows.append(((n, m), med))
        print(
            f"BatchNorm1d+ReLU+Dropout fwd+bwd {n}x{m} {np.dtype(dtype).name}: fused {med['fused']:.3f} ms, "
            f"unfused kernels {med['chain']:.3f} ms ({med['chain'] / med['fused']:.2f}x), "
            f"numpy twin {med['twin']:.3f} ms ({med['twin'] / med['fused']:.2f}x)"
        )
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", action="store_true", help="per-layer profile instead of the ratio table")
    ap.add_argument(
        "--kernels", action="store_true", help="fused BatchNorm1d+ReLU+Dropout kernels vs the chain and twin"
    )
    ap.add_argument("--overhead", action="store_true", help="the step's Python overhead on a tiny MLP")
    ap.add_argument("--batches", type=int, nargs="+", default=[32, 256, 1024])
    ap.add_argument("--optimizers", nargs="+", default=["sgd", "adam"], choices=["sgd", "adam"])
    ap.add_argument("--dtypes", nargs="+", default=["float32"], choices=["float32", "float64"])
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--json", default=None, help="write the table as JSON here")
    ap.add_argument("--batch", type=int, default=256, help="the profile's batch")
    ap.add_argument("--steps", type=int, default=400, help="the profile's steps")
    args = ap.parse_args(argv)
    if args.kernels:
        kernels()
    elif args.overhead:
        overhead(args.optimizers)
    elif args.profile:
        for opt in args.optimizers:
            rows, med = profile(args.batch, opt, args.dtypes[0], args.steps)
            print_profile(rows, med, args.batch, opt, args.dtypes[0])
            print()
    else:
        table(args.batches, args.optimizers, args.dtypes, args.rounds, args.json)


if __name__ == "__main__":
    main()
