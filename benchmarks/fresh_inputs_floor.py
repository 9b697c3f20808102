"""The matmul floor when each matmul's inputs were just written, as they are in every training step.

The floor of ``python -m fastbp.bench.sklearn_fit`` and of the step benchmarks
(``fastbp.bench.mlp.BlasFloor``) runs a step's matmuls on inputs that never change.
A training step cannot: the batch was just gathered, every activation and delta was
just written by a bias, activation or loss pass, and the weights by the optimizer, all
on the calling thread's core. When OpenBLAS splits a matmul over two threads, the
second one must first pull those inputs out of the first core's cache.

For each of a step's matmuls in order (forward ``h_l = h_{l-1} W_l``; backward
``gW_l = h_{l-1}^T d_l`` and ``d_{l-1} = d_l W_l^T``), this times, interleaved in one
process, medians per step:

* ``unchanged``: the matmuls alone, as the floor runs them;
* ``fresh``: the same matmuls, each input rewritten in place (``a += 0``, one
  read+write pass on the calling thread) just before the matmul that reads it first;
* ``writes alone``: those passes without the matmuls;

each with numpy's BLAS at its default thread count and at one thread. ``fresh -
writes alone`` is what the matmuls cost with inputs as a training step has them.

    python benchmarks/fresh_inputs_floor.py [--rounds 40] [--cases digits wide16 wide32]
"""

from __future__ import annotations

import argparse

import numba
import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from fastbp.bench.timing import interleaved

CASES = {
    # name: (units, batch, dtype, steps per timed call)
    "digits": ((64, 100, 10), 200, np.float32, 160),  # scikit-learn's digits fit, 20 epochs of 8 batches
    "digits64": ((64, 100, 10), 200, np.float64, 160),
    "wide16": ((784, 512, 256, 10), 16, np.float32, 40),  # the layer kit's small batches (issue 10)
    "wide32": ((784, 512, 256, 10), 32, np.float32, 40),
    "wide256": ((784, 512, 256, 10), 256, np.float32, 10),
    "wide200": ((784, 512, 256, 10), 200, np.float32, 10),  # scikit-learn's 784-512-256-10 fit, float32
    "wide200_64": ((784, 512, 256, 10), 200, np.float64, 10),
    "cancer": ((30, 100, 1), 455, np.float64, 100),  # L-BFGS on breast cancer: one full-batch evaluation a step
}


@numba.njit(nogil=True)
def _rewrite(a):
    """``a += 0`` in place: every cache line of ``a`` written by this thread (``x + 0.0`` is not folded)."""
    f = a.reshape(-1)
    zero = f.dtype.type(0.0)
    for i in range(f.shape[0]):
        f[i] = f[i] + zero


def _problem(units, batch, dtype):
    rng = np.random.default_rng(0)
    Ws = [(rng.standard_normal((a, b)) * 0.05).astype(dtype) for a, b in zip(units[:-1], units[1:])]
    hs = [rng.standard_normal((batch, units[0])).astype(dtype)] + [np.empty((batch, b), dtype) for b in units[1:]]
    ds = [rng.standard_normal((batch, b)).astype(dtype) for b in units[1:]]
    gWs = [np.empty_like(W) for W in Ws]
    return Ws, hs, ds, gWs


def _step_fns(units, batch, dtype, steps):
    """(unchanged, fresh, writes alone): callables running ``steps`` steps each."""
    Ws, hs, ds, gWs = _problem(units, batch, dtype)
    n = len(Ws)

    def step(gemm, write):
        for _ in range(steps):
            write(hs[0])  # the gathered batch
            for W in Ws:
                write(W)  # the optimizer's update of the last step
            for i in range(n):
                if i:
                    write(hs[i])  # the bias and activation pass
                if gemm:
                    np.matmul(hs[i], Ws[i], out=hs[i + 1])
            for i in range(n - 1, -1, -1):
                write(ds[i])  # the loss pass, or the activation derivative
                if gemm:
                    np.matmul(hs[i].T, ds[i], out=gWs[i])
                    if i:
                        np.matmul(ds[i], Ws[i].T, out=ds[i - 1])

    def skip(_a):
        return None

    return (lambda: step(True, skip)), (lambda: step(True, _rewrite)), (lambda: step(False, _rewrite))


def _limited(fn, threads):
    if threads is None:
        return fn

    def run():
        with threadpool_limits(threads, "blas"):
            fn()

    return run


def measure(name, rounds):
    units, batch, dtype, steps = CASES[name]
    unchanged, fresh, writes = _step_fns(units, batch, dtype, steps)
    fns = {}
    for label, threads in (("default threads", None), ("1 thread", 1)):
        fns[(label, "unchanged")] = _limited(unchanged, threads)
        fns[(label, "fresh")] = _limited(fresh, threads)
    fns[("", "writes alone")] = writes
    t = interleaved(fns, rounds=rounds)
    per = {k: v / steps * 1e6 for k, v in t.items()}
    w = per[("", "writes alone")]
    floor = per[("default threads", "unchanged")]
    shape = "-".join(map(str, units))
    head = f"{name}: {shape}, batch {batch}, {np.dtype(dtype).name}"
    print(f"\n{head}; us per step, medians of {rounds} interleaved rounds")
    print(f"  the rewrite passes alone: {w:8.1f}")
    for label in ("default threads", "1 thread"):
        u, f = per[(label, "unchanged")], per[(label, "fresh")]
        print(
            f"  BLAS {label:15s} unchanged {u:8.1f} ({u / floor:4.2f} floors)   "
            f"fresh - writes {f - w:8.1f} ({(f - w) / floor:4.2f} floors)"
        )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--cases", nargs="+", default=["digits", "digits64", "wide16", "wide32"], choices=sorted(CASES))
    args = ap.parse_args(argv)
    blas = [(i["internal_api"], i["num_threads"]) for i in threadpool_info() if i["user_api"] == "blas"]
    print(f"BLAS libraries (api, threads): {blas}")
    for name in args.cases:
        measure(name, args.rounds)


if __name__ == "__main__":
    main()
