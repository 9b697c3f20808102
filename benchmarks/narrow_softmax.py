"""Softmax cross-entropy on narrow rows: the blocked kernel against the row-at-a-time form it replaced.

``fastbp.kernels.softmax_xent_labels`` on (200, 10) scores (digits' batch and
classes), serial build, against the same formula one row at a time (the loop that
``softmax_xent_labels`` runs for 64 classes and more: ``vmath.exp_shifted`` per row,
then the row's log and gradient). Both in numba loops of 500 calls, interleaved,
medians in us per call.

    python benchmarks/narrow_softmax.py [--rows 200] [--classes 10]
"""

from __future__ import annotations

import argparse

import numpy as np

from fastbp.bench.timing import interleaved
from fastbp.jit import REDUCTION, jit
from fastbp.kernels import softmax_xent_labels
from fastbp.kernels.vmath import exp_shifted


def _row_form(z, labels, scale, grad, row_loss):
    """Unweighted, unsmoothed softmax cross-entropy, one row at a time (the wide-row path's loop)."""
    one = z.dtype.type(1.0)
    total = 0.0
    for i in range(z.shape[0]):
        zr, gr, t = z[i], grad[i], labels[i]
        m, s64 = exp_shifted(zr, gr)
        s = z.dtype.type(s64)
        inv_s = one / s
        li = (m - zr[t]) + np.log(s)
        row_loss[i] = li
        total += li
        for j in range(zr.shape[0]):
            gr[j] = scale * (gr[j] * inv_s)
        gr[t] -= scale
    return total


row_form = jit(_row_form, fastmath=set(REDUCTION))
kernel = softmax_xent_labels.serial


def _loop_kernel(n, z, labels, weights, grad, rows):
    zero, scale = z.dtype.type(0.0), z.dtype.type(1.0 / z.shape[0])
    for _ in range(n):
        kernel(z, labels, weights, zero, scale, grad, rows)


def _loop_rows(n, z, labels, grad, rows):
    scale = z.dtype.type(1.0 / z.shape[0])
    for _ in range(n):
        row_form(z, labels, scale, grad, rows)


loop_kernel, loop_rows = jit(_loop_kernel), jit(_loop_rows)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=200)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=21)
    args = ap.parse_args(argv)
    calls = 500
    for dt in (np.float32, np.float64):
        rng = np.random.default_rng(0)
        z = (rng.standard_normal((args.rows, args.classes)) * 3).astype(dt)
        labels = rng.integers(0, args.classes, args.rows)
        g, rows, none = np.empty_like(z), np.empty(args.rows, dt), np.empty(0, dt)
        fns = {
            "blocked kernel": lambda a=(z, labels, none, g, rows): loop_kernel(calls, *a),
            "row at a time": lambda a=(z, labels, g, rows): loop_rows(calls, *a),
        }
        t = interleaved(fns, rounds=args.rounds, warmup=1)
        us = {k: v / calls * 1e6 for k, v in t.items()}
        print(
            f"{np.dtype(dt).name} ({args.rows}, {args.classes}): blocked kernel {us['blocked kernel']:.2f} us, "
            f"row at a time {us['row at a time']:.2f} us ({us['row at a time'] / us['blocked kernel']:.2f}x)"
        )


if __name__ == "__main__":
    main()
