"""The regularized step with its Python bookkeeping as it was before 2026-12-03, against now, interleaved.

    python benchmarks/step_bookkeeping.py                      # batch 16, 32, 256; SGD and Adam
    python benchmarks/step_bookkeeping.py --batches 32 --optimizers sgd --steps 800

MLP 784-512-256-10 with BatchNorm1d, ReLU and Dropout(0.2) after each hidden Linear
(``fastbp.bench.mlp.make_regularized_problem``), float32, the step ``fastbp.fit`` runs.
"before" puts back, by swapping class attributes in this process, what a step did in
Python before (see :func:`_previous`); the two alternate step by step, with the BLAS
floor (the step's matmuls alone) timed in the same rounds. Both compute the same numbers.

What changed: the fused BatchNorm run updates the running statistics,
``num_batches_tracked`` and the Dropout step inside its kernel instead of in three more
calls from Python, and looks its buffers up once per batch shape; ``Parameter.data`` /
``.grad`` and the layers' checked attributes are read through C (``operator.attrgetter``)
instead of Python getters; a buffer pool answers "is this one of mine" from a set of ids.
Python calls per step (cProfile, batch 16, SGD) went from 360 to 229. Right after a matmul
each Python operation costs several times its warm cost (``benchmarks/cold_dispatch.py``).
"""

import argparse
import time

import numpy as np

from fastbp import _validate as v
from fastbp._buffers import BufferPool
from fastbp.bench.mlp import SGD_MOMENTUM, BlasFloor, FastbpStep, make_regularized_problem
from fastbp.layers import fused as F
from fastbp.layers.linear import Linear
from fastbp.layers.norm import BatchNorm1d, _batch_of_one
from fastbp.parameter import Parameter

SIZES = (784, 512, 256, 10)


class _PythonGetter:
    """A checked attribute read through a Python ``__get__``, as the layers' slots were."""

    def __init__(self, prop, attr):
        self.prop, self.attr = prop, attr

    def __get__(self, obj, objtype=None):
        return self if obj is None else getattr(obj, self.attr)

    def __set__(self, obj, value):
        self.prop.fset(obj, value)


def _old_forward(self, x):
    """FusedNorm.forward as it was: full checks, buffer lookups and the bookkeeping in Python."""
    bn, act, drop = self.bn, self.act, self.drop
    x = bn._keep(v.float_array(x, "x", ndim=2, dtype=bn.dtype))
    if x.shape[0] == 1:
        raise _batch_of_one(x.shape)
    dt = x.dtype
    y = self.layers[-1]._buf("y", x.shape, dt)
    if drop is not None:
        mask = drop._buf("mask", x.shape, np.uint8)
        a = act._buf("y", x.shape, dt) if self.reads else bn._no_dx
        seed, threshold, dscale = drop._seed[0], drop._threshold, dt.type(drop._scale)
        steps = np.array([drop._step[0]], np.uint64)  # a copy: the Dropout step advances below, in Python
    else:
        mask, a, seed, threshold, dscale = self._no_mask, bn._no_dx, np.uint64(0), np.uint64(0), dt.type(1.0)
        steps = self._no_step
    F._BACKENDS[bn.backend].bn_act_drop_forward(
        x, bn._gamma, bn._beta, bn.eps, self.code, dt.type(self.p1), drop is not None,
        seed, steps, threshold, dscale, y, a, mask, bn._stats, bn._save, bn._acc, *self._no_running, self._no_tracked,
    )  # fmt: skip
    if bn.track_running_stats:
        bn.num_batches_tracked += 1
        factor = 1.0 / float(bn.num_batches_tracked[0]) if bn.momentum is None else bn.momentum
        bn._n.batchnorm_running(bn.running_mean, bn.running_var, bn._stats, factor, x.shape[0])
    if drop is not None:
        drop._step += np.uint64(1)
    self._leave_state(x, y, a, mask)
    return y


def _old_holds(self, x):
    owner = x if x.base is None else x.base
    return any(owner is a for a in self._arrays.values())


def _previous():
    """``{(class, attribute): (before, now)}`` for everything this benchmark swaps."""
    swaps = {}
    for name, attr in (("data", "_data"), ("grad", "_grad")):
        now = Parameter.__dict__[name]
        swaps[(Parameter, name)] = (property(lambda self, _a=attr: getattr(self, _a), now.fset), now)
    for cls, names in ((Linear, ("W", "b")), (BatchNorm1d, ("weight", "bias", "running_mean", "running_var"))):
        for name in names + (("num_batches_tracked",) if cls is BatchNorm1d else ()):
            owner = next(c for c in cls.__mro__ if name in c.__dict__)
            now = owner.__dict__[name]
            swaps[(owner, name)] = (_PythonGetter(now, "_slot_" + name), now)
    swaps[(BufferPool, "holds")] = (_old_holds, BufferPool.holds)
    swaps[(F.FusedNorm, "forward")] = (_old_forward, F.FusedNorm.forward)
    return swaps


def _use(swaps, which):
    for (cls, name), sides in swaps.items():
        setattr(cls, name, sides[which])


def measure(batch, optimizer, steps=400, warmup=50):
    model, x, y = make_regularized_problem(SIZES, batch, np.float32)
    fb = FastbpStep(model, x, y, optimizer, momentum=SGD_MOMENTUM if optimizer == "sgd" else 0.0)
    floor = BlasFloor(model, x)
    swaps = _previous()
    times: dict = {"before": [], "now": [], "floor": []}
    try:
        for s in range(warmup + steps):
            for which, key in ((0, "before"), (1, "now")):
                _use(swaps, which)
                t0 = time.perf_counter()
                fb.step()
                t1 = time.perf_counter()
                if s >= warmup:
                    times[key].append(t1 - t0)
            t0 = time.perf_counter()
            floor.step()
            t1 = time.perf_counter()
            if s >= warmup:
                times["floor"].append(t1 - t0)
    finally:
        _use(swaps, 1)
    return {k: float(np.median(t)) * 1e3 for k, t in times.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[16, 32, 256])
    ap.add_argument("--optimizers", nargs="+", default=["sgd", "adam"], choices=["sgd", "adam"])
    ap.add_argument("--steps", type=int, default=400)
    args = ap.parse_args()
    print("batch opt   before ms  now ms  floor ms  before/floor  now/floor  now/before")
    for batch in args.batches:
        for opt in args.optimizers:
            m = measure(batch, opt, args.steps)
            f = m["floor"]
            print(
                f"{batch:5d} {opt:4s} {m['before']:9.3f} {m['now']:7.3f} {f:9.3f} {m['before'] / f:13.3f}"
                f" {m['now'] / f:10.3f} {m['now'] / m['before']:11.3f}"
            )


if __name__ == "__main__":
    main()
