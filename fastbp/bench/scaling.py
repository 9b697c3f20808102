"""The cost model of data-parallel training with one flat ring all-reduce per step (docs/scaling.md).

Per step on ``N`` nodes, each with a batch of ``b`` rows::

    T(N)           = T_compute(b) + T_allreduce(N, bytes)
    T_allreduce    = 2 (N - 1) / N * bytes / B  +  2 (N - 1) * alpha      (ring; 0 for N = 1)
    samples/s      = N * b / T(N)
    speed-up       = samples/s(N) / samples/s(1) = N * T_compute(b) / T(N)

``B`` is the link bandwidth in bytes per second and ``alpha`` the latency of one
message in seconds. A ring all-reduce is a reduce-scatter then an all-gather,
``N - 1`` rounds each, every round sending ``bytes / N`` to the next node.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from .._validate import NON_NEGATIVE, POSITIVE, POSITIVE_INT, Interval, check

# float32 gradients: what fastbp's default dtype all-reduces.
FLOAT32_BYTES = 4


def mlp_parameter_count(sizes) -> int:
    """Weights and biases of an MLP with layer widths ``sizes`` (in, hidden..., out): sum of a*b + b."""
    if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__iter__"):
        raise TypeError(f"sizes: expected a sequence of ints >= 1, got {type(sizes).__name__}")
    widths = [check(s, f"sizes[{i}]", POSITIVE_INT) for i, s in enumerate(sizes)]
    if len(widths) < 2:
        raise ValueError(f"sizes: expected at least 2 widths (input and output), got {len(widths)}")
    return sum(a * b + b for a, b in zip(widths[:-1], widths[1:]))


def gbit_to_bytes_per_sec(gbit_per_sec: float) -> float:
    """A link speed in Gbit/s (10**9 bits) as bytes per second."""
    return check(gbit_per_sec, "gbit_per_sec", POSITIVE) * 1e9 / 8


def _nodes(n_nodes) -> int:
    return check(n_nodes, "n_nodes", POSITIVE_INT)


def ring_allreduce_seconds(n_nodes: int, nbytes: float, bandwidth: float, latency: float) -> float:
    """Time of one ring all-reduce of ``nbytes`` over ``n_nodes``: 2(N-1)/N * nbytes/bandwidth + 2(N-1) * latency.

    ``bandwidth`` in bytes/s, ``latency`` in seconds; 0 for one node (nothing to exchange).
    """
    n = _nodes(n_nodes)
    nbytes = check(nbytes, "nbytes", NON_NEGATIVE)
    bandwidth = check(bandwidth, "bandwidth", POSITIVE)
    latency = check(latency, "latency", NON_NEGATIVE)
    return 2 * (n - 1) / n * nbytes / bandwidth + 2 * (n - 1) * latency


def halving_doubling_allreduce_seconds(n_nodes: int, nbytes: float, bandwidth: float, latency: float) -> float:
    """Rabenseifner's all-reduce (recursive halving, then doubling) for comparison with the ring.

    The same bytes as the ring, 2(N-1)/N * nbytes/bandwidth, but 2 ceil(log2 N) messages
    instead of 2(N-1): what MPI libraries pick for large messages on many nodes.
    """
    n = _nodes(n_nodes)
    ring = ring_allreduce_seconds(n, nbytes, bandwidth, 0.0)
    return ring + 2 * math.ceil(math.log2(n)) * check(latency, "latency", NON_NEGATIVE)


def step_seconds(n_nodes: int, compute_seconds: float, nbytes: float, bandwidth: float, latency: float) -> float:
    """T(N) = compute_seconds + :func:`ring_allreduce_seconds` (no overlap of compute and communication)."""
    compute_seconds = check(compute_seconds, "compute_seconds", POSITIVE)
    return compute_seconds + ring_allreduce_seconds(n_nodes, nbytes, bandwidth, latency)


def samples_per_sec(n_nodes: int, batch: int, step: float) -> float:
    """Global throughput N * batch / step of ``n_nodes`` each training ``batch`` rows per ``step`` seconds."""
    return _nodes(n_nodes) * check(batch, "batch", POSITIVE_INT) / check(step, "step", POSITIVE)


def speedup(n_nodes: int, compute_seconds: float, nbytes: float, bandwidth: float, latency: float) -> float:
    """samples/s on ``n_nodes`` over samples/s on one (same batch per node): N * T_compute / T(N)."""
    step = step_seconds(n_nodes, compute_seconds, nbytes, bandwidth, latency)
    return n_nodes * compute_seconds / step


def fit_latency_bandwidth(nbytes, seconds, n_nodes: int = 2) -> dict:
    """Fit ``seconds = 2(N-1)/N * nbytes/B + 2(N-1) * alpha`` to measured all-reduce times.

    Least squares on the relative error (each point weighted by 1/seconds), so that
    the microsecond points fix the latency as much as the 100 ms points fix the
    bandwidth.

    Parameters
    ----------
    nbytes, seconds : (k,) array-likes, k >= 2, at least two distinct sizes
    n_nodes : the ranks the times were measured on (>= 2)

    Returns
    -------
    dict: ``latency`` (alpha, s), ``bandwidth`` (B, bytes/s), ``intercept`` (s) and
    ``seconds_per_byte`` of the straight line, ``max_rel_residual``.
    """
    n = check(n_nodes, "n_nodes", Interval(numbers.Integral, 2))
    x = np.asarray(nbytes, dtype=np.float64)
    t = np.asarray(seconds, dtype=np.float64)
    if x.ndim != 1 or t.shape != x.shape or x.size < 2:
        raise ValueError(
            f"nbytes, seconds: expected two 1-d arrays of the same length >= 2, got shapes {x.shape} and {t.shape}"
        )
    if not (np.isfinite(x).all() and np.isfinite(t).all() and (x >= 0).all() and (t > 0).all()):
        raise ValueError("nbytes, seconds: expected finite sizes >= 0 and times > 0")
    if np.unique(x).size < 2:
        raise ValueError("nbytes: expected at least two distinct sizes to fit a line")
    w = 1.0 / t
    A = np.stack([np.ones_like(x), x], axis=1) * w[:, None]
    (intercept, slope), *_ = np.linalg.lstsq(A, t * w, rcond=None)
    if slope <= 0:
        raise ValueError("seconds: the times do not grow with nbytes; no bandwidth can be fitted")
    fitted = intercept + slope * x
    return {
        "latency": max(float(intercept), 0.0) / (2 * (n - 1)),
        "bandwidth": 2 * (n - 1) / n / float(slope),
        "intercept": float(intercept),
        "seconds_per_byte": float(slope),
        "max_rel_residual": float(np.max(np.abs(fitted - t) / t)),
    }


def projection(
    nodes, *, compute_seconds: float, batch: int, nbytes: float, bandwidth: float, latency: float
) -> list[dict]:
    """One row per node count: all-reduce and step seconds, samples/s, speed-up and efficiency (speed-up / N)."""
    rows = []
    base = samples_per_sec(1, batch, compute_seconds)
    for n in nodes:
        comm = ring_allreduce_seconds(n, nbytes, bandwidth, latency)
        step = step_seconds(n, compute_seconds, nbytes, bandwidth, latency)
        rate = samples_per_sec(n, batch, step)
        rows.append(
            {
                "nodes": int(n),
                "allreduce_s": comm,
                "step_s": step,
                "samples_per_sec": rate,
                "speedup": rate / base,
                "efficiency": rate / base / n,
            }
        )
    return rows
