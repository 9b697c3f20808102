"""``fastbp bench``: the step table (time, GFLOP/s, ratios), kernel ratios, cold start, scikit-learn."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np

from .. import kernels as K
from .. import reference as R
from ..threads import get_num_threads
from ..version import __version__
from .latency import format_latency, latency_table
from .mlp import DROPOUT_P, REGULARIZED, SGD_MOMENTUM
from .runner import measure, torch_available
from .sklearn_fit import format_row
from .timing import MAX_REL_IQR, interleaved
from .torch_mlp import step_flops

MLPS = {"784-512-256-10": [784, 512, 256, 10], "1024-2048-2048-10": [1024, 2048, 2048, 10]}
# A plan's "latency" entry: Sequential.predict against numpy, the matmuls alone, PyTorch and
# ONNX Runtime, each in its own process (fastbp.bench.latency.latency_table).
LATENCY = dict(mlps=[[784, 512, 256, 10], [64, 100, 10]], batches=[1, 8, 64], dtype="float32")
# A plan's "regularized" entry: the MLPs measured again with each hidden Linear followed by
# BatchNorm1d, ReLU and Dropout(dropout) as separate layers, SGD with momentum sgd_momentum
# (fastbp.bench.mlp.make_regularized_problem); rows named "<sizes> bn+drop". Same rounds.
QUICK = dict(
    mlps=["784-512-256-10"],
    batches=[32, 256, 1024],
    optimizers=["sgd", "adam"],
    dtypes=["float32"],
    rounds=6,
    regularized=dict(
        mlps=["784-512-256-10"],
        batches=[32, 256],
        optimizers=["sgd"],
        dtypes=["float32"],
        sgd_momentum=SGD_MOMENTUM,
        dropout=DROPOUT_P,
    ),
    latency=dict(LATENCY, rounds=4),
)
FULL = dict(
    mlps=list(MLPS),
    batches=[16, 32, 64, 128, 256, 512, 1024],
    optimizers=["sgd", "adam"],
    dtypes=["float32", "float64"],
    rounds=8,
    regularized=dict(
        mlps=["784-512-256-10"],
        batches=[16, 32, 64, 128, 256, 512, 1024],
        optimizers=["sgd", "adam"],
        dtypes=["float32", "float64"],
        sgd_momentum=SGD_MOMENTUM,
        dropout=DROPOUT_P,
    ),
    latency=dict(LATENCY, rounds=8),
)


def _sizes(mlp):
    """Layer sizes from a name in MLPS or a list of ints."""
    return MLPS[mlp] if isinstance(mlp, str) else [int(v) for v in mlp]


def _mlp_name(cfg):
    """The step table's MLP column: the sizes, and " bn+drop" for the regularized MLP."""
    name = "-".join(map(str, cfg["sizes"]))
    return f"{name} {REGULARIZED}" if cfg.get("model") == REGULARIZED else name


def plan_configs(plan):
    """The configs a plan measures: its MLPs, then those of its ``"regularized"`` entry, if any."""
    configs = [
        dict(sizes=_sizes(m), batch=b, optimizer=o, dtype=d)
        for m in plan["mlps"]
        for d in plan["dtypes"]
        for o in plan["optimizers"]
        for b in plan["batches"]
    ]
    reg = plan.get("regularized")
    if reg:
        momentum = float(reg.get("sgd_momentum", SGD_MOMENTUM))
        configs += [
            dict(
                sizes=_sizes(m),
                batch=b,
                optimizer=o,
                dtype=d,
                model=REGULARIZED,
                momentum=momentum if o == "sgd" else 0.0,
                dropout=float(reg.get("dropout", DROPOUT_P)),
            )
            for m in reg["mlps"]
            for d in reg["dtypes"]
            for o in reg["optimizers"]
            for b in reg["batches"]
        ]
    return configs


def step_table(plan, *, threads=None, log=None):
    """One row per config: medians in ms, their IQRs, GFLOP/s and the ratios of medians.

    The plan's ``"regularized"`` entry, if any, adds rows whose ``mlp`` is
    ``"<sizes> bn+drop"`` (and whose ``model`` is ``"bn+drop"``; the others' is
    ``"mlp"``). A row whose sides still spread too widely after the reruns (see
    :func:`fastbp.bench.timing.settle`) lists them in ``unstable`` and its
    ratios are None. ``log(line)`` gets one progress message per event.
    """
    impls = ["fastbp", "numpy", "floor"] + (["torch"] if torch_available() else [])
    configs = plan_configs(plan)
    done = []

    def progress(cfg, rerun=None):
        if not log:
            return
        name = f"{_mlp_name(cfg)} {cfg['dtype']} {cfg['optimizer']} batch {cfg['batch']}"
        if rerun:
            spread = ", ".join(f"{k} {v:.0%}" for k, v in rerun.items())
            log(f"{name}: IQR/median {spread}, measuring again")
        else:
            done.append(cfg)
            log(f"measured {len(done)}/{len(configs)}: {name}")

    results = measure(
        configs,
        impls,
        rounds=plan["rounds"],
        threads=threads,
        progress=progress,
        handover=plan.get("handover", 0.25),
        reruns=plan.get("reruns", 2),
        max_rel_iqr=plan.get("max_rel_iqr", MAX_REL_IQR),
    )
    rows = {}
    for r in results:
        key = (_mlp_name(r), r["dtype"], r["optimizer"], r["batch"])
        rows.setdefault(key, {})[r["impl"]] = r
    table = []
    for (mlp, dtype, opt, batch), by in rows.items():
        fb = by["fastbp"]["median"]
        cfg = by["fastbp"]
        row = {
            "mlp": mlp,
            "dtype": dtype,
            "optimizer": opt,
            "batch": batch,
            "model": cfg.get("model", "mlp"),
            "gflops": step_flops(cfg["sizes"], batch) / fb / 1e9,
        }
        if row["model"] == REGULARIZED:
            row["momentum"], row["dropout"] = cfg["momentum"], cfg["dropout"]
        for impl, r in by.items():
            row[f"{impl}_ms"] = r["median"] * 1e3
            row[f"{impl}_iqr_ms"] = r["iqr"] * 1e3
        # An unstable point loses all its ratios, not only those of its widest sides: the machine
        # was disturbed while it ran, and a side can be slowed throughout and still look tight.
        unstable = [impl for impl, r in by.items() if r["unstable"]]
        ratios = {"speedup_vs_numpy": ("numpy", "fastbp"), "ratio_to_floor": ("fastbp", "floor")}
        if "torch" in by:
            ratios["speedup_vs_torch"] = ("torch", "fastbp")
        for name, (num, den) in ratios.items():
            row[name] = None if unstable else by[num]["median"] / by[den]["median"]
        row["unstable"] = unstable
        row["attempts"] = by["fastbp"]["attempts"]
        row["fastbp_warmup_s"] = by["fastbp"]["warmup"]
        table.append(row)
    return table


def _spread(r, impl):
    """IQR / median of ``impl``'s step times in row ``r``, as a short percentage ("12%")."""
    return f"{r[f'{impl}_iqr_ms'] / r[f'{impl}_ms']:4.0%}"


def print_step_table(table, out=print, max_rel_iqr=MAX_REL_IQR):
    """The step table; "iqr" is each side's interquartile range over its median, "?" a ratio left out.

    Ends with a one-line warning naming the unstable points, if any.
    """
    torch = any("torch_ms" in r for r in table)
    w = max([18] + [len(r["mlp"]) for r in table])
    out(
        f"{'MLP':{w}s} {'dtype':7s} {'opt':4s} {'batch':>5s} {'fastbp ms':>9s} {'iqr':>4s} {'GFLOP/s':>7s} "
        f"{'numpy ms':>9s} {'iqr':>4s} {'x numpy':>7s}"
        + (f" {'torch ms':>9s} {'iqr':>4s} {'x torch':>7s}" if torch else "")
        + f" {'/floor':>6s}"
    )

    def ratio(r, key, width):
        return f"{'?':>{width}s}" if r.get(key) is None else f"{r[key]:{width}.2f}"

    for r in table:
        line = (
            f"{r['mlp']:{w}s} {r['dtype']:7s} {r['optimizer']:4s} {r['batch']:5d} {r['fastbp_ms']:9.2f} "
            f"{_spread(r, 'fastbp')} {r['gflops']:7.1f} {r['numpy_ms']:9.2f} {_spread(r, 'numpy')} "
            f"{ratio(r, 'speedup_vs_numpy', 7)}"
        )
        if torch:
            line += (
                f" {r['torch_ms']:9.2f} {_spread(r, 'torch')} {ratio(r, 'speedup_vs_torch', 7)}"
                if "torch_ms" in r
                else f" {'-':>9s} {'-':>4s} {'-':>7s}"
            )
        out(line + f" {ratio(r, 'ratio_to_floor', 6)}")
    warning = unstable_warning(table, max_rel_iqr)
    if warning:
        out(warning)


def unstable_warning(table, max_rel_iqr=MAX_REL_IQR):
    """One line naming the rows with unstable sides and their spreads, or "" if there are none."""
    bad = [r for r in table if r.get("unstable")]
    if not bad:
        return ""
    names = [
        f"{r['mlp']} {r['dtype']} {r['optimizer']} batch {r['batch']} ("
        + ", ".join(f"{impl} {_spread(r, impl).strip()}" for impl in r["unstable"])
        + ")"
        for r in bad
    ]
    # The usual cause, seen on a 2-core machine: another process running makes threaded
    # BLAS steps of ~1 ms take ~80 ms some of the time, never with one BLAS thread.
    return (
        f"warning: {len(bad)} unstable point(s), a side's IQR above {max_rel_iqr:.0%} of its median after "
        f"{bad[0]['attempts']} runs (other load on the machine?); their ratios are left out (?): " + "; ".join(names)
    )


def kernel_ratios(rounds=40):
    """Fused softmax-cross-entropy forward+backward, numba vs its numpy twin."""
    rows = []
    f = np.float32
    for n, k in ((256, 10), (1024, 1000)):
        rng = np.random.default_rng(0)
        z = rng.standard_normal((n, k)).astype(f) * 3
        t = rng.integers(0, k, n)
        g, rl, w = np.empty_like(z), np.empty(n, f), np.empty(0, f)
        args = (z, t, w, f(0), f(1 / n), g, rl)
        r = interleaved(
            {"numba": lambda a=args: K.softmax_xent_labels(*a), "numpy": lambda a=args: R.softmax_xent_labels(*a)},
            rounds=rounds,
        )
        rows.append(
            {
                "kernel": "softmax_xent_labels",
                "shape": [n, k],
                "numba_us": r["numba"] * 1e6,
                "numpy_us": r["numpy"] * 1e6,
                "speedup": r["numpy"] / r["numba"],
            }
        )
    return rows


_COLD_SCRIPT = """
import time
t0 = time.perf_counter()
import fastbp
from fastbp.bench import make_problem, FastbpStep
t1 = time.perf_counter()
m, x, y = make_problem(batch=32)
FastbpStep(m, x, y, "{opt}").step()
t2 = time.perf_counter()
print(t1 - t0, t2 - t0)
"""


def cold_start(opt="adam", repeats=3):
    """Fresh process: import fastbp and run one training step, with the kernel cache cold and warm.

    Cold uses an empty cache folder (``FASTBP_CACHE_DIR``; ``NUMBA_CACHE_DIR``
    too, for any other numba code): everything compiles. Warm runs the same
    command again with that folder filled.
    """
    out = {}
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, FASTBP_CACHE_DIR=cache, NUMBA_CACHE_DIR=cache)
        script = _COLD_SCRIPT.format(opt=opt)
        for label in ("cold", "warm"):
            runs = []
            for _ in range(repeats if label == "warm" else 1):
                t0 = time.perf_counter()
                res = subprocess.run(
                    [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
                )
                wall = time.perf_counter() - t0
                imp, first = map(float, res.stdout.split())
                runs.append({"import_s": imp, "import_and_first_step_s": first, "process_wall_s": wall})
            out[label] = min(runs, key=lambda r: r["import_and_first_step_s"])
    return out


def sklearn_fits():
    """Whole ``fit`` calls against scikit-learn's MLPClassifier (see :mod:`fastbp.bench.sklearn_fit`)."""
    try:
        import sklearn  # noqa: F401
    except ImportError:
        return None
    from .sklearn_fit import compare

    return compare()


def chart_title(table, width=60):
    """The chart's title, wrapped to ``width`` characters.

    It names PyTorch only if the table has torch ratios, and says how many unstable ratios are left out.
    """
    torch = any(r.get("speedup_vs_torch") is not None for r in table)
    versus = "numpy and PyTorch" if torch else "numpy"
    text = f"fastbp training step speed-up over {versus} (ratio of median step times; > 1: fastbp is faster)"
    left_out = sum(r.get(k, 0) is None for r in table for k in ("speedup_vs_numpy", "speedup_vs_torch"))
    if left_out:
        text += f"; {left_out} unstable ratio{'s' if left_out > 1 else ''} left out"
    return textwrap.fill(text, width)


def plot(table, path):
    """PNG chart of fastbp's step speed-up over numpy and PyTorch against batch size; needs matplotlib.

    One panel per (MLP, dtype); colour is the optimizer, line style the baseline.
    Unstable points (ratio None) leave a gap. Returns False if matplotlib is missing.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    panels = sorted({(r["mlp"], r["dtype"]) for r in table})
    cols = min(2, len(panels))
    nrows = (len(panels) + cols - 1) // cols
    # constrained layout makes room for the suptitle, which tight_layout ignores (it was clipped).
    fig, axes = plt.subplots(
        nrows, cols, figsize=(5.2 * cols, 3.4 * nrows + 0.4), squeeze=False, sharey=True, layout="constrained"
    )
    colours = {"sgd": "tab:blue", "adam": "tab:orange"}
    for ax, (mlp, dtype) in zip(axes.flat, panels):
        for opt in ("sgd", "adam"):
            rows = sorted(
                (r for r in table if r["mlp"] == mlp and r["dtype"] == dtype and r["optimizer"] == opt),
                key=lambda r: r["batch"],
            )
            for key, name, style in (("speedup_vs_numpy", "numpy", "o-"), ("speedup_vs_torch", "PyTorch", "s--")):
                y = [np.nan if r.get(key) is None else r[key] for r in rows]  # NaN: a gap, not a bridge
                if not np.isnan(y).all():
                    ax.plot([r["batch"] for r in rows], y, style, color=colours[opt], label=f"vs {name}, {opt}")
        ax.axhline(1.0, color="grey", linewidth=0.8)
        ax.set_xscale("log", base=2)
        momenta = {r["momentum"] for r in table if r["mlp"] == mlp and r.get("momentum")}
        sgd_note = f", SGD momentum {momenta.pop():g}" if len(momenta) == 1 else ""
        ax.set_title(f"MLP {mlp}, {dtype}{sgd_note}", fontsize=10)
        ax.set_xlabel("batch size")
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel("step speed-up (x)")
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    for ax in axes.flat:  # the first panel with a curve (a panel whose points are all unstable has none)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
            break
    fig.suptitle(chart_title(table, width=int(10 * 5.2 * cols)), fontsize=11)  # ~10 characters per inch
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_chart(table, path, out=print):
    """Write the chart to ``path`` and say so, or say why no chart was written."""
    if plot(table, path):
        out(f"wrote {path}")
    else:
        out('no chart written: matplotlib is not installed (pip install "fastbp[plot]")')


class Progress:
    """Progress messages on ``stream``: one line rewritten in place on a terminal, else plain full lines.

    ``\\r`` only makes sense on a terminal; in a log file or a pipe it would glue
    every message and the table that follows into one line.
    """

    def __init__(self, stream=None):
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self.width = 0

    def __call__(self, msg):
        if self.tty:
            msg = msg[: shutil.get_terminal_size().columns - 1]  # a wrapped line cannot be rewritten with \r
            self.stream.write("\r" + msg.ljust(self.width))
            self.width = max(self.width, len(msg))
        else:
            self.stream.write(msg + "\n")
        self.stream.flush()

    def clear(self):
        """Blank the progress line (terminal only), so what is printed next starts at column 0."""
        if self.tty and self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()
        self.width = 0


def run(
    full=False,
    json_path="fastbp-bench.json",
    png_path="fastbp-bench.png",
    threads=None,
    sklearn=None,
    cold=True,
    out=print,
    progress_stream=None,
):
    """Run the benchmark report: print it with ``out``, write JSON and a chart; return the report dict.

    Progress goes to ``progress_stream`` (default ``sys.stderr``), rewritten in
    place only if it is a terminal.
    """
    plan = FULL if full else QUICK

    report = {
        "fastbp_version": __version__,
        "threads": threads or get_num_threads(),
        "cpu_count": os.cpu_count(),
        "plan": plan,
        "models": {
            "mlp": "Linear layers with the ReLU fused (Linear(..., activation='relu')); SGD without momentum",
            REGULARIZED: "each hidden Linear followed by BatchNorm1d, ReLU and Dropout(dropout) as separate "
            "layers; SGD with momentum (the plan's regularized sgd_momentum)",
        },
        "method": "each implementation family in its own process, taking turns in blocks of steps, "
        "the order rotating every round; medians and interquartile ranges over all steps; warm-up excluded; "
        "ratios are of medians from the same run",
        "stability": {
            "rule": "a point is unstable if any side's IQR of per-step times exceeds max_rel_iqr times its "
            "median; it is measured again up to `reruns` times; if still unstable, its ratios are null",
            "max_rel_iqr": plan.get("max_rel_iqr", MAX_REL_IQR),
            "reruns": plan.get("reruns", 2),
        },
    }
    out(
        f"fastbp {__version__} bench ({'full' if full else 'quick'}), {report['threads']} threads, "
        f"{os.cpu_count()} cores; torch {'found' if torch_available() else 'not installed'}"
    )
    t0 = time.perf_counter()

    progress = Progress(progress_stream)
    report["steps"] = step_table(plan, threads=threads, log=progress)
    progress.clear()
    print_step_table(report["steps"], out, max_rel_iqr=report["stability"]["max_rel_iqr"])
    lat = plan.get("latency")
    if lat:
        report["latency"] = latency_table(
            lat["mlps"], lat["batches"], dtype=lat["dtype"], rounds=lat["rounds"], threads=threads, log=progress
        )
        progress.clear()
        format_latency(report["latency"], out)
    report["kernels"] = kernel_ratios()
    for k in report["kernels"]:
        out(
            f"fused softmax-cross-entropy {tuple(k['shape'])}: {k['numba_us']:.1f} us vs numpy twin "
            f"{k['numpy_us']:.1f} us ({k['speedup']:.2f}x)"
        )
    if cold:
        report["cold_start"] = cold_start()
        c, w = report["cold_start"]["cold"], report["cold_start"]["warm"]
        out(
            f"cold start (import + first Adam step, fresh process): {c['import_and_first_step_s']:.2f} s with an "
            f"empty numba cache, {w['import_and_first_step_s']:.2f} s warm (import alone {w['import_s']:.2f} s)"
        )
    if sklearn if sklearn is not None else full:
        rows = sklearn_fits()
        report["sklearn"] = rows
        if rows:
            out("fit time, fastbp.sklearn vs scikit-learn MLPClassifier (same settings unless a row says otherwise):")
        for r in rows or []:
            out(format_row(r))
    report["elapsed_s"] = time.perf_counter() - t0
    if json_path:
        with open(json_path, "w") as fh:
            json.dump(report, fh, indent=2)
        out(f"wrote {json_path}")
    if png_path:
        write_chart(report["steps"], png_path, out)
    return report
