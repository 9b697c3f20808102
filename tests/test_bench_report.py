"""The bench report's honesty: spread per point, the stability rule and reruns, chart title, messages, progress.

All with synthetic timings: what is checked is the logic, never how fast anything ran.
"""

import io
import sys

import numpy as np
import pytest

from fastbp.bench import report
from fastbp.bench.report import Progress, chart_title, print_step_table, unstable_warning, write_chart
from fastbp.bench.timing import MAX_REL_IQR, rel_iqr, settle


def steady(ms, n=200, seed=0):
    """``n`` step times around ``ms`` milliseconds, +-5% uniform jitter (relative IQR about 5%)."""
    return list(np.random.default_rng(seed).uniform(0.95, 1.05, n) * ms * 1e-3)


def fake_runs(*attempts):
    """An ``attempt`` callable returning the given measurements in turn; it counts its calls."""
    it = iter(attempts)

    def attempt():
        attempt.calls += 1
        return next(it)

    attempt.calls = 0
    return attempt


def test_rel_iqr():
    assert rel_iqr([1.0, 2.0, 3.0, 4.0, 5.0]) == pytest.approx((4 - 2) / 3)
    assert rel_iqr([2.0]) == 0.0  # one time has no spread


def test_one_huge_outlier_is_stable_and_leaves_the_median_alone():
    # The reported case: one 84 ms step among ~1 ms steps. The median and the IQR ignore it.
    numpy = steady(1.0)
    numpy[17] = 84e-3
    attempt = fake_runs({"fastbp": steady(1.0, seed=1), "numpy": numpy})
    times, attempts, unstable = settle(attempt)
    assert (attempts, unstable) == (1, {})
    assert rel_iqr(times["numpy"]) < 0.15
    assert np.median(times["numpy"]) / np.median(times["fastbp"]) == pytest.approx(1.0, abs=0.05)


def bimodal(fast_ms, slow_ms, n=200):
    """Half the steps fast, half slow, interleaved: the median lands in either mode by luck."""
    return [(fast_ms if i % 2 else slow_ms) * 1e-3 for i in range(n)]


def test_bimodal_side_is_rerun_and_kept_only_once_stable():
    first = {"fastbp": steady(1.0), "numpy": bimodal(1.2, 84.0)}
    second = {"fastbp": steady(1.0, seed=2), "numpy": steady(1.2, seed=3)}
    reruns = []
    attempt = fake_runs(first, second)
    times, attempts, unstable = settle(attempt, on_rerun=reruns.append)
    assert (attempt.calls, attempts, unstable) == (2, 2, {})
    assert times is second  # the stable rerun, not pooled with the unstable attempt
    assert list(reruns[0]) == ["numpy"] and reruns[0]["numpy"] > MAX_REL_IQR


def test_the_reported_82x_is_flagged():
    # 55% of numpy's steps in an ~84 ms mode (threaded BLAS on a busy 2-core machine), fastbp's all ~1 ms:
    # the median lands in the slow mode, and the old report printed the ratio of medians as is.
    numpy = [(84.0 if i % 20 < 11 else 1.0) * 1e-3 for i in range(200)]
    point = {"fastbp": steady(1.0), "numpy": numpy}
    assert np.median(numpy) / np.median(point["fastbp"]) > 80
    _, attempts, unstable = settle(fake_runs(point, point, point))
    assert attempts == 3 and list(unstable) == ["numpy"]


def test_step_table_leaves_out_the_ratios_of_unstable_points(monkeypatch):
    def fake_measure(configs, impls, **kw):
        assert kw["reruns"] == 2 and kw["max_rel_iqr"] == MAX_REL_IQR
        medians = {"fastbp": 1.0, "numpy": 2.0, "floor": 0.5, "torch": 1.5}
        return [
            dict(
                cfg,
                impl=i,
                median=medians[i] * 1e-3,
                iqr=1e-4,
                unstable=cfg["batch"] == 64 and i == "torch",
                attempts=3 if cfg["batch"] == 64 else 1,
                warmup=0.1,
            )
            for cfg in configs
            for i in impls
        ]

    monkeypatch.setattr(report, "measure", fake_measure)
    monkeypatch.setattr(report, "torch_available", lambda: True)
    plan = dict(mlps=[[4, 3, 2]], batches=[32, 64], optimizers=["sgd"], dtypes=["float32"], rounds=1)
    ok, bad = report.step_table(plan)
    assert (ok["speedup_vs_numpy"], ok["speedup_vs_torch"], ok["ratio_to_floor"]) == pytest.approx((2, 1.5, 2))
    assert ok["unstable"] == [] and ok["fastbp_iqr_ms"] == pytest.approx(0.1)
    # Only torch spread too widely, yet every ratio of that point is left out.
    assert (bad["speedup_vs_numpy"], bad["speedup_vs_torch"], bad["ratio_to_floor"]) == (None, None, None)
    assert bad["unstable"] == ["torch"] and bad["attempts"] == 3 and bad["numpy_ms"] == pytest.approx(2.0)


def test_still_unstable_after_the_reruns_is_reported_with_the_least_bad_attempt():
    worst = {"fastbp": steady(1.0), "numpy": bimodal(1.0, 84.0)}
    less_bad = {"fastbp": steady(1.0), "numpy": bimodal(1.0, 2.0)}
    attempt = fake_runs(worst, less_bad, worst, steady(1.0))  # the fourth is never asked for
    times, attempts, unstable = settle(attempt, reruns=2)
    assert (attempt.calls, attempts) == (3, 3)
    assert times is less_bad and list(unstable) == ["numpy"]


def test_no_reruns_and_the_threshold_are_respected():
    attempt = fake_runs({"a": bimodal(1.0, 1.4)})  # relative IQR 0.4 / 1.2 = 1/3
    assert settle(attempt, reruns=0, max_rel_iqr=0.5)[1:] == (1, {})
    attempt = fake_runs({"a": bimodal(1.0, 1.4)})
    _, attempts, unstable = settle(attempt, reruns=0, max_rel_iqr=0.2)
    assert attempts == 1 and unstable == {"a": pytest.approx(1 / 3)}


def row(batch=32, torch=True, unstable=(), numpy_iqr=0.1):
    """A step-table row as step_table makes it: an unstable row has its ratios set to None."""
    r = dict(mlp="784-512-256-10", dtype="float32", optimizer="adam", batch=batch, gflops=40.0)
    ms = {"fastbp": 1.0, "numpy": 2.0, "floor": 0.5} | ({"torch": 1.5} if torch else {})
    for impl, v in ms.items():
        r[f"{impl}_ms"], r[f"{impl}_iqr_ms"] = v, v * (numpy_iqr if impl == "numpy" else 0.1)
    r["speedup_vs_numpy"], r["ratio_to_floor"] = (None, None) if unstable else (2.0, 2.0)
    if torch:
        r["speedup_vs_torch"] = None if unstable else 1.5
    r["unstable"], r["attempts"] = list(unstable), 3 if unstable else 1
    return r


def test_table_shows_spread_and_flags_unstable_points():
    lines = []
    print_step_table([row(32), row(1024, unstable=["numpy"], numpy_iqr=1.3)], out=lines.append)
    head, stable, flagged, warning = lines
    assert head.split().count("iqr") == 3  # fastbp, numpy, torch
    assert " 10% " in stable and "2.00" in stable and "?" not in stable
    assert "130%" in flagged
    assert flagged.split()[9:] == ["?", "1.50", "10%", "?", "?"]  # x numpy, x torch, /floor: none shown
    assert warning.startswith("warning: 1 unstable point")
    assert "784-512-256-10 float32 adam batch 1024 (numpy 130%)" in warning and "batch 32" not in warning


def test_no_warning_and_no_torch_columns_without_torch_or_unstable_points():
    lines = []
    print_step_table([row(torch=False)], out=lines.append)
    assert len(lines) == 2 and "torch" not in lines[0]
    assert unstable_warning([row()]) == ""


def test_chart_title_names_pytorch_only_with_torch_results():
    with_torch = chart_title([row()])
    assert "PyTorch" in with_torch and "numpy" in with_torch
    assert "PyTorch" not in chart_title([row(torch=False)])
    # The title is wrapped to fit the figure (a one-panel chart is about 52 characters wide).
    assert max(len(line) for line in chart_title([row()], width=52).splitlines()) <= 52
    # Torch measured, but only at unstable points: no PyTorch curve, so no PyTorch in the title.
    title = chart_title([row(32, unstable=["torch"]), row(256)], width=1000)
    assert "PyTorch" in title and title.endswith("; 2 unstable ratios left out")  # vs numpy and vs torch
    title = chart_title([row(32, unstable=["torch"])], width=1000)
    assert "PyTorch" not in title


def test_no_matplotlib_says_so(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    lines = []
    write_chart([row()], tmp_path / "chart.png", out=lines.append)
    assert lines == ['no chart written: matplotlib is not installed (pip install "fastbp[plot]")']
    assert not (tmp_path / "chart.png").exists()


def test_chart_leaves_out_unstable_points(tmp_path):
    pytest.importorskip("matplotlib")
    lines = []
    write_chart([row(32), row(256, unstable=["numpy"]), row(1024)], tmp_path / "c.png", out=lines.append)
    assert lines == [f"wrote {tmp_path / 'c.png'}"]
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


class Tty(io.StringIO):
    def isatty(self):
        return True


def test_progress_off_a_terminal_is_plain_lines():
    stream = io.StringIO()
    p = Progress(stream)
    p("measured 1/2: a")
    p("measured 2/2: b")
    p.clear()
    assert "\r" not in stream.getvalue()
    assert stream.getvalue() == "measured 1/2: a\nmeasured 2/2: b\n"


def test_progress_on_a_terminal_rewrites_one_line_and_clears_it():
    stream = Tty()
    p = Progress(stream)
    p("a long first message")
    p("short")
    p.clear()
    out = stream.getvalue()
    assert "\n" not in out
    # The shorter message blanks the longer one's tail, and clear() blanks the whole line and returns.
    assert out.endswith("\r" + " " * len("a long first message") + "\r")
    assert "\rshort" + " " * (len("a long first message") - len("short")) in out
