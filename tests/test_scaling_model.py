"""The data-parallel cost model (fastbp.bench.scaling) against hand-computed cases."""

import math

import numpy as np
import pytest

from fastbp.bench import scaling as S

REL = 1e-12  # closed forms in float64: only rounding separates them


def close(a, b, rel=REL):
    return math.isclose(a, b, rel_tol=rel, abs_tol=0.0)


def test_parameter_counts():
    assert S.mlp_parameter_count((2, 3)) == 2 * 3 + 3
    assert S.mlp_parameter_count((784, 512, 256, 10)) == 784 * 512 + 512 + 512 * 256 + 256 + 256 * 10 + 10 == 535_818
    assert S.mlp_parameter_count([1024, 2048, 2048, 10]) == 6_316_042


def test_one_node_has_no_communication():
    assert S.ring_allreduce_seconds(1, 25e6, 1.25e9, 50e-6) == 0.0
    assert S.step_seconds(1, 0.04, 25e6, 1.25e9, 50e-6) == 0.04
    assert S.speedup(1, 0.04, 25e6, 1.25e9, 50e-6) == 1.0


def test_two_nodes_send_the_bytes_once_plus_two_latencies():
    # 2(N-1)/N = 1 and 2(N-1) = 2 for N = 2: 1 MB over 1 GB/s is 1 ms, plus 2 x 10 us.
    assert close(S.ring_allreduce_seconds(2, 1e6, 1e9, 10e-6), 1e-3 + 20e-6)


def test_four_nodes_by_hand():
    # 2 * 3/4 * 8 MB / 1 GB/s = 12 ms; 2 * 3 latencies of 1 us = 6 us.
    assert close(S.ring_allreduce_seconds(4, 8e6, 1e9, 0.0), 12e-3)
    assert close(S.ring_allreduce_seconds(4, 8e6, 1e9, 1e-6), 12e-3 + 6e-6)


def test_many_nodes_approach_twice_the_bytes():
    t = S.ring_allreduce_seconds(10_000, 1e6, 1e9, 0.0)
    assert close(t, 2e-3 * (10_000 - 1) / 10_000)
    assert t < 2e-3


def test_halving_doubling_has_log_latency():
    # 8 nodes: the ring's bytes term, and 2 * log2(8) = 6 latencies instead of 14.
    ring = S.ring_allreduce_seconds(8, 2e6, 1e9, 0.0)
    assert close(S.halving_doubling_allreduce_seconds(8, 2e6, 1e9, 5e-6), ring + 6 * 5e-6)
    assert S.halving_doubling_allreduce_seconds(1, 2e6, 1e9, 5e-6) == 0.0
    assert close(S.halving_doubling_allreduce_seconds(2, 1e6, 1e9, 5e-6), S.ring_allreduce_seconds(2, 1e6, 1e9, 5e-6))


def test_throughput_and_speedup():
    assert close(S.samples_per_sec(2, 256, 0.01), 51_200.0)
    # 8 nodes, 10 ms compute, 2 MB at 1.25 GB/s (10 Gbit/s), 5 us:
    # all-reduce = 2 * 7/8 * 2e6 / 1.25e9 + 14 * 5e-6 = 2.8 ms + 0.07 ms = 2.87 ms.
    comm = 2.8e-3 + 70e-6
    assert close(S.ring_allreduce_seconds(8, 2e6, S.gbit_to_bytes_per_sec(10), 5e-6), comm)
    assert close(S.speedup(8, 10e-3, 2e6, 1.25e9, 5e-6), 8 * 10e-3 / (10e-3 + comm))


def test_gbit_conversion():
    assert S.gbit_to_bytes_per_sec(10) == 1.25e9
    assert S.gbit_to_bytes_per_sec(25) == 3.125e9


def test_projection_rows_agree_with_the_formulas():
    rows = S.projection((1, 8, 32), compute_seconds=0.02, batch=256, nbytes=4e6, bandwidth=1.25e9, latency=50e-6)
    assert [r["nodes"] for r in rows] == [1, 8, 32]
    assert rows[0]["speedup"] == 1.0 and rows[0]["allreduce_s"] == 0.0
    for r in rows:
        n = r["nodes"]
        comm = 2 * (n - 1) / n * 4e6 / 1.25e9 + 2 * (n - 1) * 50e-6
        assert close(r["allreduce_s"], comm)
        assert close(r["samples_per_sec"], n * 256 / (0.02 + comm))
        assert close(r["efficiency"], r["speedup"] / n)


@pytest.mark.parametrize("n_nodes", [2, 4])
def test_fit_recovers_latency_and_bandwidth(n_nodes):
    latency, bandwidth = 3e-6, 5e9
    nbytes = np.geomspace(4e4, 1.2e8, 9)
    seconds = [S.ring_allreduce_seconds(n_nodes, b, bandwidth, latency) for b in nbytes]
    fit = S.fit_latency_bandwidth(nbytes, seconds, n_nodes=n_nodes)
    assert close(fit["latency"], latency, rel=1e-6)
    assert close(fit["bandwidth"], bandwidth, rel=1e-6)
    assert fit["max_rel_residual"] < 1e-9


def test_fit_weights_relative_error():
    # A 10% error on the largest point must not swamp the latency the small points show.
    nbytes = np.array([4e3, 4e4, 4e5, 4e6, 4e7])
    seconds = 2e-6 + nbytes / 4e9
    seconds[-1] *= 1.1
    fit = S.fit_latency_bandwidth(nbytes, seconds)
    assert abs(fit["latency"] - 1e-6) / 1e-6 < 0.2


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: S.ring_allreduce_seconds(0, 1e6, 1e9, 0.0), "n_nodes"),
        (lambda: S.ring_allreduce_seconds(2, -1.0, 1e9, 0.0), "nbytes"),
        (lambda: S.ring_allreduce_seconds(2, 1e6, 0.0, 0.0), "bandwidth"),
        (lambda: S.ring_allreduce_seconds(2, 1e6, 1e9, -1e-6), "latency"),
        (lambda: S.step_seconds(2, 0.0, 1e6, 1e9, 0.0), "compute_seconds"),
        (lambda: S.samples_per_sec(2, 0, 0.01), "batch"),
        (lambda: S.gbit_to_bytes_per_sec(float("nan")), "gbit_per_sec"),
        (lambda: S.mlp_parameter_count((784,)), "sizes"),
        (lambda: S.mlp_parameter_count((784, 0, 10)), r"sizes\[1\]"),
        (lambda: S.fit_latency_bandwidth([1e6, 1e6], [1e-3, 1e-3]), "two distinct sizes"),
        (lambda: S.fit_latency_bandwidth([1e3, 1e6], [1e-3]), "same length"),
        (lambda: S.fit_latency_bandwidth([1e3, 1e6], [1e-3, 0.0]), "times > 0"),
        (lambda: S.fit_latency_bandwidth([1e3, 1e6], [1e-3, 1e-4]), "do not grow"),
        (lambda: S.fit_latency_bandwidth([1e3, 1e6], [1e-3, 2e-3], n_nodes=1), "n_nodes"),
    ],
)
def test_bad_input_names_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_wrong_types_are_type_errors():
    with pytest.raises(TypeError, match="sizes"):
        S.mlp_parameter_count(784)
    with pytest.raises(TypeError, match="n_nodes"):
        S.ring_allreduce_seconds("8", 1e6, 1e9, 0.0)
    with pytest.raises(TypeError, match="n_nodes"):
        S.ring_allreduce_seconds(2.5, 1e6, 1e9, 0.0)
