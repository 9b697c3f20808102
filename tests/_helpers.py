"""Constants and tolerances shared by the tests."""

import numpy as np

DTYPES = [np.float32, np.float64]
# batch 1, one feature, widths that are not a multiple of the vector length (16 floats)
SHAPES = [(1, 1), (1, 7), (5, 1), (3, 17), (64, 33), (130, 100)]


def tol(dtype):
    """Tolerances for comparing a kernel with its twin in ``dtype``."""
    return dict(rtol=2e-5, atol=2e-6) if np.dtype(dtype) == np.float32 else dict(rtol=1e-12, atol=1e-13)


def in_fresh_process(module: str, function: str, *args):
    """``tests/<module>.py``'s ``function(*args)`` run in a new interpreter; its JSON-able result.

    For tracemalloc measurements: tracemalloc counts every thread's allocations, and threads that
    earlier tests leave behind (a Dask client's event loop, a prefetch thread being joined) would
    make a step's peak depend on what ran before it.
    """
    import json
    import pathlib
    import subprocess
    import sys

    here = pathlib.Path(__file__).resolve().parent
    code = (
        f"import json, sys; sys.path.insert(0, {str(here)!r}); import {module}; "
        f"print(json.dumps({module}.{function}(*json.loads(sys.argv[1]))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(args)], capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def ctrl_c_in_batch(k: int):
    """A stand-in for :func:`fastbp.loop.defer_interrupts` (monkeypatched into ``fastbp.training``)
    whose function says Ctrl-C was pressed during batch ``k`` (its ``k``-th call) and after."""
    calls = []

    def pressed():
        calls.append(1)
        return len(calls) >= k

    class Pressed:
        def __enter__(self):
            return pressed

        def __exit__(self, *exc):
            return False

    return Pressed
