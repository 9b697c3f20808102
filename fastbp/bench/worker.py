"""A benchmark worker process: reads one JSON request per line, answers each with one JSON line.

:func:`fastbp.bench.runner.measure` starts one persistent worker per family
(``runner.FAMILY``): ``"main"`` runs ``fastbp``, ``numpy`` and ``floor``, and
``"torch"`` runs torch alone, because PyTorch's OpenMP workers spin after every
op and slow any BLAS work sharing the process with them. The parent starts it as
``python -m fastbp.bench.worker [--threads N]``; ``--threads N`` (passed when
``measure`` gets a non-zero ``threads``) calls
:func:`fastbp.threads.set_num_threads` before the first request.

The exchange is strictly one request, then one answer, on stdin/stdout:

- request: the config's keys plus ``impl`` and ``steps``, e.g.
  ``{"sizes": [784, 512, 256, 10], "batch": 256, "optimizer": "sgd"|"adam",
  "dtype": "float32", "impl": "fastbp"|"numpy"|"floor"|"torch", "steps": 8}``.
  ``dtype`` is any numpy dtype name. Optional keys: ``"task"``, ``"step"`` (the
  default: a training step) or ``"predict"`` (one inference call of
  :mod:`fastbp.bench.latency`, whose ``impl`` is ``"fastbp"``, ``"numpy"``,
  ``"torch"`` or ``"onnxruntime"``, and no ``optimizer``); ``"model"``, ``"mlp"`` (the
  default: :func:`fastbp.bench.mlp.make_problem`) or ``"bn+drop"`` (the
  regularized MLP of :func:`fastbp.bench.mlp.make_regularized_problem`, with
  ``"dropout"``, its dropout probability, default 0.2); ``"momentum"``, of SGD
  (default 0). Other keys are ignored.
- answer: ``{"times": [seconds of each of the steps], "warmup": seconds or null}``.
  The step function is built once per process for each (impl, sizes, batch,
  optimizer, dtype, model, momentum, dropout): the first request for it builds the problem
  (``seed=0``) and the step, runs 3 warm-up
  steps (numba compilation, buffers, torch's first-call setup) and then more for
  0.1 s (allocator and caches settle), and reports the time of all that as
  ``warmup``; later requests reuse the same step function (its weights keep
  training) and answer ``"warmup": null``.

The parent turns the implementations over, ``steps`` steps per turn, and takes
the median and interquartile range of all the times of an implementation. It
stops a worker by closing its stdin: the worker's loop ends at EOF and it exits
with status 0. An error in the worker (an unknown ``impl``, say) ends it with a
traceback on the inherited stderr; the parent then reads EOF and raises
``RuntimeError``.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

from ..threads import set_num_threads
from .mlp import (
    DROPOUT_P,
    REGULARIZED,
    BlasFloor,
    FastbpStep,
    NumpyMLP,
    NumpyRegularizedMLP,
    make_problem,
    make_regularized_problem,
)
from .torch_mlp import TorchMLP, TorchRegularizedMLP

WARMUP_STEPS, WARMUP_S = 3, 0.1
# The optional keys of a request, with their defaults; they are part of the step's identity.
DEFAULTS = {"task": "step", "optimizer": None, "model": "mlp", "momentum": 0.0, "dropout": DROPOUT_P}


def _build(spec):
    spec = {**DEFAULTS, **spec}
    if spec["task"] == "predict":
        from .latency import build

        return build(spec["impl"], spec["sizes"], spec["batch"], spec["dtype"])
    if spec["task"] != "step":
        raise ValueError(f"task: expected 'step' or 'predict', got {spec['task']!r}")
    kind, impl, opt, mom = spec["model"], spec["impl"], spec["optimizer"], float(spec["momentum"])
    args = (tuple(spec["sizes"]), spec["batch"], np.dtype(spec["dtype"]))
    if kind == "mlp":
        model, x, y = make_problem(*args, seed=0)
        numpy_step, torch_step = NumpyMLP, TorchMLP
    elif kind == REGULARIZED:
        model, x, y = make_regularized_problem(*args, seed=0, p=float(spec["dropout"]))
        numpy_step, torch_step = NumpyRegularizedMLP, TorchRegularizedMLP
    else:
        raise ValueError(f"model: unknown {kind!r} (expected 'mlp' or {REGULARIZED!r})")
    if impl == "fastbp":
        return FastbpStep(model, x, y, opt, momentum=mom).step
    if impl == "numpy":
        return numpy_step(model, x, y, opt, momentum=mom).step
    if impl == "floor":
        return BlasFloor(model, x).step
    if impl == "torch":
        return torch_step(model, x, y, opt, momentum=mom).step
    raise ValueError(f"impl: unknown {impl!r}")


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--threads":
        set_num_threads(int(sys.argv[2]))
    steps_cache = {}
    for line in sys.stdin:
        spec = json.loads(line)
        ident = {**DEFAULTS, **spec}
        keys = ("impl", "sizes", "batch", "dtype", *DEFAULTS)
        key = json.dumps({k: ident[k] for k in keys}, sort_keys=True)
        warm = None
        if key not in steps_cache:
            t0 = time.perf_counter()
            fn = steps_cache[key] = _build(spec)
            for _ in range(WARMUP_STEPS):  # numba compilation, buffer allocation, torch's first-call setup
                fn()
            # Then WARMUP_S more of steps: at small batches 3 steps are a few ms, too few for
            # the allocator and caches to settle, and the first timed turn came out slower.
            t1 = time.perf_counter()
            while time.perf_counter() - t1 < WARMUP_S:
                fn()
            warm = time.perf_counter() - t0
        fn = steps_cache[key]
        times = []
        for _ in range(int(spec["steps"])):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        print(json.dumps({"times": times, "warmup": warm}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
