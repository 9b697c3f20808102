"""A benchmark worker process: reads one JSON request per line, answers the step times.

Each implementation family runs in its own persistent process (see
:mod:`fastbp.bench.runner`): PyTorch's OpenMP workers spin after every op and
slow any BLAS work sharing the process with them, so torch never shares one.

Request: ``{"impl": "fastbp"|"numpy"|"floor"|"torch", "sizes": [...], "batch": int,
"optimizer": "sgd"|"adam", "dtype": "float32", "steps": int}``; answer: a JSON list
of seconds per step. The first request for a configuration also runs warm-up steps
(numba compilation) and reports their time as ``{"warmup": s}`` in a first line.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np


def _build(spec):
    from .mlp import BlasFloor, FastbpStep, NumpyMLP, make_problem
    from .torch_mlp import TorchMLP

    model, x, y = make_problem(tuple(spec["sizes"]), spec["batch"], np.dtype(spec["dtype"]), seed=0)
    impl, opt = spec["impl"], spec["optimizer"]
    if impl == "fastbp":
        return FastbpStep(model, x, y, opt).step
    if impl == "numpy":
        return NumpyMLP(model, x, y, opt).step
    if impl == "floor":
        return BlasFloor(model, x).step
    if impl == "torch":
        return TorchMLP(model, x, y, opt).step
    raise ValueError(f"impl: unknown {impl!r}")


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--threads":
        from ..threads import set_num_threads

        set_num_threads(int(sys.argv[2]))
    steps_cache = {}
    for line in sys.stdin:
        spec = json.loads(line)
        key = json.dumps({k: spec[k] for k in ("impl", "sizes", "batch", "optimizer", "dtype")}, sort_keys=True)
        warm = None
        if key not in steps_cache:
            t0 = time.perf_counter()
            fn = steps_cache[key] = _build(spec)
            for _ in range(3):  # warm-up: numba compilation, buffer allocation, torch's first-call setup
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
