"""Interleaved timing: every candidate runs once per round (A B C A B C ...), medians reported.

The machine is shared and noisy; interleaving exposes all sides to the same
drift, so their ratio is meaningful even when absolute times are not. It does
not help when a side's times have several modes (a busy machine turns a 1 ms
step with threaded BLAS into one of tens of ms): :func:`rel_iqr` measures the
spread and :func:`settle` measures such a point again, and reports it unstable
if it stays so.
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


# A point is unstable when the middle half of any side's per-step times spans more than
# half its median: the distribution is then wide or has several modes, and which mode the
# median lands in (hence the ratio) is luck. One outlier, or a few, leaves the IQR alone.
MAX_REL_IQR = 0.5


def rel_iqr(times) -> float:
    """Interquartile range of ``times`` divided by their median (0 for fewer than 2 times)."""
    if len(times) < 2:
        return 0.0
    q1, med, q3 = np.percentile(times, [25, 50, 75])
    return float((q3 - q1) / med) if med > 0 else float("inf")


def settle(attempt, *, reruns: int = 2, max_rel_iqr: float = MAX_REL_IQR, on_rerun=None):
    """Call ``attempt()`` until no side's spread exceeds ``max_rel_iqr``, at most ``1 + reruns`` times.

    Parameters
    ----------
    attempt : callable
        Measures one point, all sides interleaved: returns ``{side: [seconds per step]}``.
    reruns : int
        Extra attempts allowed after an unstable one.
    max_rel_iqr : float
        Threshold on :func:`rel_iqr` of each side's times.
    on_rerun : callable, optional
        Called with ``{side: rel_iqr}`` of the unstable sides before each rerun.

    Returns
    -------
    times : dict
        The kept attempt: the first stable one, else the one whose worst side spreads least.
        Attempts are never pooled, so a rerun's ratio comes from one interleaved run.
    attempts : int
    unstable : dict
        ``{side: rel_iqr}`` of the kept attempt's sides above the threshold (empty if stable).
    """
    best = None
    for n in range(1, reruns + 2):
        times = attempt()
        spread = {k: rel_iqr(v) for k, v in times.items()}
        bad = {k: s for k, s in spread.items() if s > max_rel_iqr}
        if best is None or max(spread.values()) < best[2]:
            best = (times, bad, max(spread.values()))
        if not bad:
            break
        if n <= reruns and on_rerun:
            on_rerun(bad)
    assert best is not None
    return best[0], n, best[1]
