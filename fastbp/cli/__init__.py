"""Command line: ``fastbp train``, ``fastbp predict``, ``fastbp export``, ``fastbp bench``, ``fastbp info``.

Every argument is checked when it is parsed, before anything prints or trains;
an error is one line naming the argument, and the exit status is 2. Ctrl-C
exits with status 130 (``fastbp train`` first saves the model so far to ``--out``).
"""

from __future__ import annotations

import argparse
import sys

from . import checks as c

ACTIVATIONS = ["relu", "tanh", "sigmoid", "leaky_relu", "elu", "gelu", "gelu_tanh", "silu", "softplus"]


def cmd_bench(args) -> int:
    from ..bench.report import run

    run(
        full=args.full,
        json_path=args.json,
        png_path=args.png,
        threads=args.threads,
        sklearn=True if args.sklearn else None,
        cold=not args.no_cold_start,
    )
    return 0


def cmd_info(args) -> int:
    import fastbp

    print(f"fastbp {fastbp.__version__}")
    print(f"kernel cache: {fastbp.jit.cache_dir() or 'none (kernels compile in every process)'}")
    for k, val in fastbp.threading_info().items():
        print(f"{k}: {val}")
    return 0


def _train_parser(sub):
    from .train import cmd_train

    tr = sub.add_parser(
        "train",
        help="train an MLP (default data: digits) and report test accuracy and throughput",
        description="Train an MLP on a .csv or .npz (default: scikit-learn's digits) and report "
        "train and test scores. The task (classification or regression) is chosen from the target "
        "and printed; features (and regression targets) are standardized unless --no-standardize.",
    )
    tr.add_argument(
        "--data",
        type=c.input_file(".csv", ".npz"),
        help=".csv with a header row, or .npz with arrays X and y (default: digits)",
    )
    tr.add_argument("--target", help="the target column (.csv) or array (.npz; default: y); needed for a .csv")
    tr.add_argument(
        "--task",
        choices=["classification", "regression"],
        help="default: classification for text labels or whole numbers with few distinct values, else regression",
    )
    tr.add_argument(
        "--no-standardize",
        dest="standardize",
        action="store_false",
        help="use features and targets as given (default: standardize them with the training rows' statistics)",
    )
    tr.add_argument("--hidden", type=c.hidden_sizes, default=[128, 64], help="hidden layer sizes (default: 128,64)")
    tr.add_argument("--activation", default="relu", choices=ACTIVATIONS, help="default: %(default)s")
    norm = tr.add_mutually_exclusive_group()
    norm.add_argument("--batchnorm", action="store_true", help="BatchNorm1d after each hidden Linear (default: off)")
    norm.add_argument("--layernorm", action="store_true", help="LayerNorm after each hidden Linear (default: off)")
    tr.add_argument(
        "--dropout",
        type=c.unit_fraction,
        default=0.0,
        metavar="P",
        help="dropout probability after each hidden activation (default: 0, none)",
    )
    tr.add_argument("--optimizer", default="adam", choices=["adam", "adamw", "sgd"], help="default: %(default)s")
    tr.add_argument("--lr", type=c.positive_float, default=2e-3, help="learning rate (default: %(default)s)")
    tr.add_argument("--epochs", type=c.positive_int, default=40, help="default: %(default)s")
    tr.add_argument("--batch-size", type=c.positive_int, default=32, help="default: %(default)s")
    tr.add_argument(
        "--test-size", type=c.open_fraction, default=0.2, help="fraction of rows held out (default: %(default)s)"
    )
    tr.add_argument("--seed", type=c.non_negative_int, default=0, help="split, shuffling and init (default: 0)")
    tr.add_argument("--threads", type=c.threads, help="threads for numba and BLAS (default: all cores)")
    tr.add_argument("--dtype", default="float32", choices=["float32", "float64"], help="default: %(default)s")
    tr.add_argument(
        "--out", type=c.output_file(), help="save the model (with optimizer state) to this path (default: not saved)"
    )
    tr.add_argument(
        "--no-progress", action="store_true", help="no progress bar or epoch lines (default: shown on stderr)"
    )
    ck = tr.add_argument_group("checkpoints", "continue a killed or interrupted run exactly (docs/checkpoints.md)")
    ck.add_argument(
        "--checkpoint",
        type=c.output_file(),
        metavar="PATH",
        help="write everything needed to continue here, atomically, every --checkpoint-every epochs and when "
        "training stops (default: none)",
    )
    ck.add_argument(
        "--checkpoint-every",
        type=c.positive_int,
        metavar="N",
        help="epochs (or steps) between checkpoints (default: 1)",
    )
    ck.add_argument(
        "--checkpoint-unit", choices=["epoch", "step"], help="what --checkpoint-every counts (default: epoch)"
    )
    ck.add_argument(
        "--resume",
        nargs="?",
        const=True,
        type=c.input_file(),
        metavar="PATH",
        help="continue the run this checkpoint holds, with the same options (--epochs may be larger); bare "
        "--resume: from --checkpoint if that file exists, else start afresh (default: start afresh)",
    )
    tr.set_defaults(func=cmd_train)


def _predict_parser(sub):
    from .predict import FORMATS, cmd_predict

    pr = sub.add_parser("predict", help="predict with a saved model")
    pr.add_argument(
        "--model", required=True, type=c.input_file(), help="a file from fastbp train --out or fastbp.save (required)"
    )
    pr.add_argument(
        "--data", required=True, type=c.input_file(".csv", ".npz"), help=".csv with a header, or .npz with X (required)"
    )
    pr.add_argument("--target", help="a .csv column to leave out of the features (default: none)")
    pr.add_argument(
        "--out",
        type=c.output_file(*FORMATS),
        default="predictions.csv",
        help="written exactly here, in the format of its extension: .csv, .npy or .npz (default: %(default)s)",
    )
    pr.add_argument("--proba", action="store_true", help="also write class probabilities (default: off)")
    pr.add_argument("--batch-size", type=c.positive_int, default=4096, help="rows per batch (default: %(default)s)")
    pr.set_defaults(func=cmd_predict)


def _bench_parser(sub):
    be = sub.add_parser("bench", help="benchmark report: step times, GFLOP/s, ratios to numpy, PyTorch, BLAS floor")
    be.add_argument(
        "--full", action="store_true", help="both MLPs, batch 16-1024, float32 and float64 (default: quick plan)"
    )
    be.add_argument("--sklearn", action="store_true", help="include the scikit-learn comparison (default: --full only)")
    be.add_argument("--no-cold-start", action="store_true", help="skip the cold-start measurement (default: run it)")
    be.add_argument("--threads", type=c.threads, help="threads for numba, BLAS and PyTorch (default: all cores)")
    be.add_argument("--json", type=c.output_file(".json"), default="fastbp-bench.json", help="default: %(default)s")
    be.add_argument(
        "--png",
        type=c.output_file(".png"),
        default="fastbp-bench.png",
        help="chart (needs matplotlib; default: %(default)s)",
    )
    be.set_defaults(func=cmd_bench)


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line (the usage block buries the message)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def parser() -> argparse.ArgumentParser:
    """The ``fastbp`` argument parser and its subcommands."""
    ap = _Parser(prog="fastbp", description="JIT-accelerated backpropagation for MLPs on the CPU")
    sub = ap.add_subparsers(dest="command", required=True)
    _train_parser(sub)
    _predict_parser(sub)
    from .export import add_parser as _export_parser

    _export_parser(sub)
    _bench_parser(sub)
    sub.add_parser("info", help="version, kernel cache and threading").set_defaults(func=cmd_info)
    return ap


def main(argv=None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"fastbp {args.command}: interrupted; nothing saved", file=sys.stderr)
        return 130
    except (ValueError, TypeError, ImportError, OSError) as e:
        print(f"fastbp {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
