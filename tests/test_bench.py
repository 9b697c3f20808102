"""The benchmark machinery: FLOP counts, worker processes taking turns, the report table, the chart."""

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest

from fastbp import cli
from fastbp.bench import BlasFloor, FastbpStep, NumpyMLP, make_problem, step_flops
from fastbp.bench.mlp import REGULARIZED, NumpyRegularizedMLP, make_regularized_problem
from fastbp.bench.report import FULL, QUICK, kernel_ratios, plan_configs, plot, print_step_table, step_table
from fastbp.bench.runner import measure, torch_available
from fastbp.layers import Dropout, Linear, ReLU
from fastbp.layers.norm import BatchNorm1d

TINY = [8, 16, 4]


def test_step_flops_counts_forward_dw_and_dx_but_not_the_input_dx():
    # sizes 3-4-5, batch 2: MACs 12 and 20; forward + dW for both, dx for the second only
    assert step_flops([3, 4, 5], 2) == 2 * 2 * (2 * (12 + 20) + 20)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_baselines_run_the_same_algorithm(optimizer):
    model, x, y = make_problem((20, 16, 3), batch=8, dtype=np.float64)
    fb, npy = FastbpStep(model, x, y, optimizer, lr=0.01), NumpyMLP(model, x, y, optimizer, lr=0.01)
    for _ in range(5):
        np.testing.assert_allclose(fb.step(), npy.step(), rtol=1e-10)
    for layer, W in zip(model.layers, npy.Ws):
        np.testing.assert_allclose(layer.W.data, W, rtol=1e-9, atol=1e-12)
    BlasFloor(model, x).step()


def test_regularized_problem_is_the_pytorch_composition():
    model, x, y = make_regularized_problem((20, 16, 12, 3), batch=8)
    kinds = [type(layer) for layer in model.layers]
    assert kinds == [Linear, BatchNorm1d, ReLU, Dropout] * 2 + [Linear]
    assert all(layer.act_code == 0 for layer in model.layers if isinstance(layer, Linear))  # no fused activation
    assert [layer.p for layer in model.layers if isinstance(layer, Dropout)] == [0.2, 0.2]
    plain, x0, y0 = make_problem((20, 16, 12, 3), batch=8)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(y, y0)
    for a, b in zip([layer for layer in model.layers if isinstance(layer, Linear)], plain.layers):
        np.testing.assert_array_equal(a.W.data, b.W.data)


@pytest.mark.parametrize("optimizer,momentum", [("sgd", 0.9), ("adam", 0.0)])
def test_regularized_baselines_run_the_same_algorithm(optimizer, momentum):
    # p = 0: every mask keeps everything, so the generators' different masks do not matter.
    model, x, y = make_regularized_problem((20, 16, 12, 3), batch=8, dtype=np.float64, p=0.0)
    sides = [
        FastbpStep(model, x, y, optimizer, lr=0.01, momentum=momentum),
        NumpyRegularizedMLP(model, x, y, optimizer, lr=0.01, momentum=momentum),
    ]
    if torch_available():
        from fastbp.bench.torch_mlp import TorchRegularizedMLP

        sides.append(TorchRegularizedMLP(model, x, y, optimizer, lr=0.01, momentum=momentum))
    fb, npy = sides[:2]
    for _ in range(5):
        losses = [s.step() for s in sides]
        np.testing.assert_allclose(losses[1:], losses[0], rtol=1e-10)
    linears = [layer for layer in model.layers if isinstance(layer, Linear)]
    norms = [layer for layer in model.layers if isinstance(layer, BatchNorm1d)]
    for layer, W in zip(linears, npy.Ws):
        np.testing.assert_allclose(layer.W.data, W, rtol=1e-9, atol=1e-12)
    # A bias right before a batch norm gets a gradient of 0 plus rounding (~1e-11), which Adam
    # normalises into steps of about lr: those biases differ (harmlessly: the norm removes them).
    np.testing.assert_allclose(linears[-1].b.data, npy.bs[-1], rtol=1e-9, atol=1e-12)
    for layer, g, beta, rm, rv in zip(norms, npy.gammas, npy.betas_bn, npy.running_mean, npy.running_var):
        np.testing.assert_allclose(layer.weight.data, g, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(layer.bias.data, beta, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(layer.running_mean, rm, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(layer.running_var, rv, rtol=1e-9, atol=1e-12)
    if len(sides) == 3:
        import torch

        tW = [m.weight.detach().numpy().T for m in sides[2].net if isinstance(m, torch.nn.Linear)]
        for layer, W in zip(linears, tW):
            np.testing.assert_allclose(layer.W.data, W, rtol=1e-9, atol=1e-12)
    BlasFloor(model, x).step()  # the three Linear layers' matmuls


def test_regularized_dropout_masks_follow_p():
    model, x, y = make_regularized_problem((20, 64, 3), batch=256, p=0.2)
    npy = NumpyRegularizedMLP(model, x, y)
    rng = np.random.default_rng(0)
    keep = rng.random((256, 64), dtype=np.float32) >= 0.2
    assert abs(keep.mean() - 0.8) < 0.02 and keep.dtype == bool
    assert np.isfinite(npy.step()) and np.isfinite(FastbpStep(model, x, y).step())


def test_plans_include_the_regularized_mlp():
    quick = [c for c in plan_configs(QUICK) if c.get("model") == REGULARIZED]
    assert [(c["batch"], c["optimizer"], c["dtype"], c["momentum"]) for c in quick] == [
        (32, "sgd", "float32", 0.9),
        (256, "sgd", "float32", 0.9),
    ]
    full = [c for c in plan_configs(FULL) if c.get("model") == REGULARIZED]
    assert {c["optimizer"] for c in full} == {"sgd", "adam"} and {c["dtype"] for c in full} == {"float32", "float64"}
    assert {c["batch"] for c in full} == {16, 32, 64, 128, 256, 512, 1024}
    assert all(c["momentum"] == (0.9 if c["optimizer"] == "sgd" else 0.0) for c in full)
    assert all("model" not in c for c in plan_configs(dict(QUICK, regularized=None)))


def test_measure_takes_turns_in_worker_processes():
    impls = ["fastbp", "numpy", "floor"] + (["torch"] if torch_available() else [])
    cfg = dict(sizes=TINY, batch=4, optimizer="sgd", dtype="float32")
    res = measure([cfg], impls, rounds=2, block=3, handover=0)
    assert [r["impl"] for r in res] == impls
    assert all(r["median"] > 0 and r["steps"] == 6 and r["warmup"] > 0 for r in res)
    assert all(r["iqr"] >= 0 and r["rel_iqr"] == pytest.approx(r["iqr"] / r["median"]) for r in res)
    assert len({r["attempts"] for r in res}) == 1 and 1 <= res[0]["attempts"] <= 3  # one verdict per config


def test_measure_runs_the_regularized_mlp():
    impls = ["fastbp", "numpy", "floor"] + (["torch"] if torch_available() else [])
    cfg = dict(sizes=TINY, batch=4, optimizer="sgd", dtype="float32", model=REGULARIZED, momentum=0.9, dropout=0.2)
    res = measure([cfg], impls, rounds=1, block=2, handover=0)
    assert [r["impl"] for r in res] == impls and all(r["median"] > 0 and r["model"] == REGULARIZED for r in res)


def test_measure_reruns_unstable_configs():
    # Every spread is above a threshold of -1: each config runs 1 + reruns times and stays unstable.
    cfg = dict(sizes=TINY, batch=4, optimizer="sgd", dtype="float32")
    calls = []
    res = measure(
        [cfg],
        ["fastbp", "numpy"],
        rounds=1,
        block=3,
        handover=0,
        reruns=1,
        max_rel_iqr=-1.0,
        progress=lambda c, rerun=None: calls.append(rerun),
    )
    assert [r["attempts"] for r in res] == [2, 2] and all(r["unstable"] for r in res)
    assert sorted(calls[0]) == ["fastbp", "numpy"] and calls[1:] == [None]  # one rerun note, then done


def test_worker_reports_bad_requests():
    spec = dict(impl="nope", sizes=TINY, batch=2, optimizer="sgd", dtype="float32", steps=1)
    r = subprocess.run(
        [sys.executable, "-m", "fastbp.bench.worker"], input=json.dumps(spec) + "\n", capture_output=True, text=True
    )
    assert r.returncode != 0 and "impl: unknown 'nope'" in r.stderr


def test_step_table_and_chart(tmp_path, capsys):
    reg = dict(mlps=[TINY], batches=[4], optimizers=["sgd"], dtypes=["float32"])
    plan = dict(
        mlps=[TINY], batches=[2, 4], optimizers=["adam"], dtypes=["float32"], rounds=2, handover=0, regularized=reg
    )
    table = step_table(plan, log=lambda *a, **k: None)
    assert [(r["mlp"], r["batch"]) for r in table] == [("8-16-4", 2), ("8-16-4", 4), ("8-16-4 bn+drop", 4)]
    assert [r["model"] for r in table] == ["mlp", "mlp", REGULARIZED] and table[2]["momentum"] == 0.9
    for r in table:
        assert r["gflops"] > 0 and r["fastbp_iqr_ms"] >= 0
        assert ("speedup_vs_torch" in r) == torch_available()
        # Microsecond steps on a busy machine may stay unstable; then, and only then, the ratios are left out.
        for key in ("speedup_vs_numpy", "ratio_to_floor") + (("speedup_vs_torch",) if torch_available() else ()):
            assert (r[key] is None) == bool(r["unstable"])
            assert r[key] is None or r[key] > 0
    print_step_table(table)
    printed = capsys.readouterr().out.splitlines()
    assert printed[1].startswith("8-16-4 ") and printed[3].startswith("8-16-4 bn+drop ")
    pytest.importorskip("matplotlib")
    assert plot(table, tmp_path / "chart.png")
    assert (tmp_path / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_kernel_ratios_rows():
    rows = kernel_ratios(rounds=2)
    assert [tuple(r["shape"]) for r in rows] == [(256, 10), (1024, 1000)]
    assert all(r["numba_us"] > 0 and r["numpy_us"] > 0 for r in rows)


def test_bench_cli_help():
    with pytest.raises(SystemExit) as e:
        cli.main(["bench", "--help"])
    assert e.value.code == 0


def test_sklearn_fit_comparison_row():
    pytest.importorskip("sklearn")
    from sklearn import neural_network as sk

    from fastbp.bench.sklearn_fit import compare, format_row, load_case

    params = dict(hidden_layer_sizes=(8,), max_iter=2)
    (row,) = compare(cases=[("tiny", "digits", params, {}, 1)])
    assert row["samples"] == 1347 and row["features"] == 64 and row["same_settings"]
    Xtr, Xte, ytr, yte = load_case("digits")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tol=0: "maximum iterations reached"
        ref = sk.MLPClassifier(random_state=0, tol=0.0, **params).fit(Xtr, ytr)
    assert row["sklearn_accuracy"] == ref.score(Xte, yte)  # one implementation, same data: deterministic
    # Same settings, float64: fastbp trains like scikit-learn to ~1e-15 relative and predict_proba
    # agrees to 1e-9 (test_sklearn_equivalence.py), but BLAS and exp round differently on other CPUs,
    # so a test row whose top two probabilities are within 1e-9 may be labelled either way.
    # Each such row may move the accuracy by one row; every other row must get the same label.
    top2 = np.sort(ref.predict_proba(Xte), axis=1)[:, -2:]
    near_ties = int(np.sum(top2[:, 1] - top2[:, 0] < 1e-9))
    assert abs(row["fastbp_accuracy"] - row["sklearn_accuracy"]) <= near_ties / len(yte) + 1e-12
    assert row["speedup"] == pytest.approx(row["sklearn_s"] / row["fastbp_s"])
    assert row["matmul_floor_s"] > 0 and "tiny" in format_row(row)
