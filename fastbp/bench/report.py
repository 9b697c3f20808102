"""``fastbp bench``: the step table (time, GFLOP/s, ratios), kernel ratios, cold start, scikit-learn."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from .. import kernels as K
from .. import reference as R
from ..threads import get_num_threads
from ..version import __version__
from .runner import measure, torch_available
from .sklearn_fit import format_row
from .timing import interleaved
from .torch_mlp import step_flops

MLPS = {"784-512-256-10": [784, 512, 256, 10], "1024-2048-2048-10": [1024, 2048, 2048, 10]}
QUICK = dict(mlps=["784-512-256-10"], batches=[32, 256, 1024], optimizers=["sgd", "adam"], dtypes=["float32"], rounds=6)
FULL = dict(
    mlps=list(MLPS),
    batches=[16, 32, 64, 128, 256, 512, 1024],
    optimizers=["sgd", "adam"],
    dtypes=["float32", "float64"],
    rounds=8,
)


def _sizes(mlp):
    """Layer sizes from a name in MLPS or a list of ints."""
    return MLPS[mlp] if isinstance(mlp, str) else [int(v) for v in mlp]


def step_table(plan, *, threads=None, log=print):
    impls = ["fastbp", "numpy", "floor"] + (["torch"] if torch_available() else [])
    configs = [
        dict(sizes=_sizes(m), batch=b, optimizer=o, dtype=d)
        for m in plan["mlps"]
        for d in plan["dtypes"]
        for o in plan["optimizers"]
        for b in plan["batches"]
    ]
    done = []

    def progress(cfg):
        done.append(cfg)
        log(f"  measured {len(done)}/{len(configs)}", end="\r")

    results = measure(
        configs, impls, rounds=plan["rounds"], threads=threads, progress=progress, handover=plan.get("handover", 0.25)
    )
    rows = {}
    for r in results:
        key = ("-".join(map(str, r["sizes"])), r["dtype"], r["optimizer"], r["batch"])
        rows.setdefault(key, {})[r["impl"]] = r
    table = []
    for (mlp, dtype, opt, batch), by in rows.items():
        fb = by["fastbp"]["median"]
        row = {
            "mlp": mlp,
            "dtype": dtype,
            "optimizer": opt,
            "batch": batch,
            "fastbp_ms": fb * 1e3,
            "gflops": step_flops(by["fastbp"]["sizes"], batch) / fb / 1e9,
            "numpy_ms": by["numpy"]["median"] * 1e3,
            "floor_ms": by["floor"]["median"] * 1e3,
            "speedup_vs_numpy": by["numpy"]["median"] / fb,
            "ratio_to_floor": fb / by["floor"]["median"],
            "fastbp_warmup_s": by["fastbp"]["warmup"],
        }
        if "torch" in by:
            row["torch_ms"] = by["torch"]["median"] * 1e3
            row["speedup_vs_torch"] = by["torch"]["median"] / fb
        table.append(row)
    return table


def print_step_table(table, out=print):
    out(
        f"{'MLP':18s} {'dtype':7s} {'opt':4s} {'batch':>5s} {'fastbp ms':>9s} {'GFLOP/s':>8s} "
        f"{'numpy ms':>9s} {'x numpy':>8s} {'torch ms':>9s} {'x torch':>8s} {'/floor':>7s}"
    )
    for r in table:
        tms = f"{r['torch_ms']:9.2f}" if "torch_ms" in r else f"{'-':>9s}"
        tx = f"{r['speedup_vs_torch']:8.2f}" if "speedup_vs_torch" in r else f"{'-':>8s}"
        out(
            f"{r['mlp']:18s} {r['dtype']:7s} {r['optimizer']:4s} {r['batch']:5d} {r['fastbp_ms']:9.2f} "
            f"{r['gflops']:8.1f} {r['numpy_ms']:9.2f} {r['speedup_vs_numpy']:8.2f} {tms} {tx} "
            f"{r['ratio_to_floor']:7.2f}"
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


def plot(table, path):
    """PNG chart of fastbp's step speed-up over numpy and PyTorch against batch size; needs matplotlib.

    One panel per (MLP, dtype); colour is the optimizer, line style the baseline.
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
    fig, axes = plt.subplots(nrows, cols, figsize=(5.2 * cols, 3.4 * nrows), squeeze=False, sharey=True)
    colours = {"sgd": "tab:blue", "adam": "tab:orange"}
    for ax, (mlp, dtype) in zip(axes.flat, panels):
        for opt in ("sgd", "adam"):
            rows = sorted(
                (r for r in table if r["mlp"] == mlp and r["dtype"] == dtype and r["optimizer"] == opt),
                key=lambda r: r["batch"],
            )
            if not rows:
                continue
            b = [r["batch"] for r in rows]
            ax.plot(b, [r["speedup_vs_numpy"] for r in rows], color=colours[opt], marker="o", label=f"vs numpy, {opt}")
            if "speedup_vs_torch" in rows[0]:
                ax.plot(
                    b,
                    [r["speedup_vs_torch"] for r in rows],
                    color=colours[opt],
                    marker="s",
                    linestyle="--",
                    label=f"vs PyTorch, {opt}",
                )
        ax.axhline(1.0, color="grey", linewidth=0.8)
        ax.set_xscale("log", base=2)
        ax.set_title(f"MLP {mlp}, {dtype}", fontsize=10)
        ax.set_xlabel("batch size")
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel("step speed-up (x)")
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=8)
    fig.suptitle("fastbp training step vs numpy and PyTorch (medians; > 1 means fastbp is faster)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def run(
    full=False,
    json_path="fastbp-bench.json",
    png_path="fastbp-bench.png",
    threads=None,
    sklearn=None,
    cold=True,
    out=print,
):
    plan = FULL if full else QUICK

    report = {
        "fastbp_version": __version__,
        "threads": threads or get_num_threads(),
        "cpu_count": os.cpu_count(),
        "plan": plan,
        "method": "each implementation family in its own process, taking turns in blocks "
        "of steps; medians over all steps; warm-up excluded",
    }
    out(
        f"fastbp {__version__} bench ({'full' if full else 'quick'}), {report['threads']} threads, "
        f"{os.cpu_count()} cores; torch {'found' if torch_available() else 'not installed'}"
    )
    t0 = time.perf_counter()

    def log(msg, end="\n"):
        print(msg, end=end, file=sys.stderr, flush=True)

    report["steps"] = step_table(plan, threads=threads, log=log)
    log(" " * 40, end="\r")
    print_step_table(report["steps"], out)
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
    if png_path and plot(report["steps"], png_path):
        out(f"wrote {png_path}")
    return report
