"""Interleaved timing: every candidate runs once per round (A B C A B C ...), medians reported.

The machine is shared and noisy; interleaving exposes all sides to the same
drift, so their ratio is meaningful even when absolute times are not.
"""

from __future__ import annotations

import time

import numpy as np


def interleaved(fns: dict, *, rounds: int = 50, warmup: int = 3, min_time: float = 0.0) -> dict:
    """Median seconds per call of each callable in ``fns``, measured in interleaved rounds.

    ``warmup`` rounds (which include numba compilation on first calls) are not
    counted. With ``min_time`` > 0, rounds continue until the total measured time
    exceeds it.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    start = time.perf_counter()
    r = 0
    while r < rounds or (time.perf_counter() - start) < min_time:
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
        r += 1
    return {k: float(np.median(v)) for k, v in times.items()}
