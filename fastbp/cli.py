"""Command line: ``fastbp train``, ``fastbp predict``, ``fastbp bench``, ``fastbp info``."""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def _hidden(text):
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive ints, got {text!r}") from None
    if any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"expected positive sizes, got {text!r}")
    return sizes


def _load_data(path, target, dtype):
    from . import datasets

    if path.endswith(".csv"):
        X, y, names = datasets.load_csv(path, target=target, dtype=dtype)
        return X, y, names
    X, y = datasets.load_npz(path, x_key="X", y_key=target or "y")
    return X, y, None


def _default_data(dtype, seed):
    from . import datasets

    try:
        X, y = datasets.digits(dtype=dtype)
        return "digits (scikit-learn, 1797 x 64)", X, y
    except ImportError:
        X, y = datasets.make_classification(5000, 20, 4, seed=seed, dtype=dtype)
        return "synthetic classification (5000 x 20, 4 classes; install scikit-learn for digits)", X, y


def cmd_train(args) -> int:
    import fastbp
    from fastbp import datasets

    t_start = time.perf_counter()
    if args.threads:
        fastbp.set_num_threads(args.threads)
    dtype = np.dtype(args.dtype)
    if args.data:
        X, y, names = _load_data(args.data, args.target, dtype)
        if y is None:
            print(f"fastbp train: {args.data} has no target (use --target)", file=sys.stderr)
            return 2
        source = args.data
    else:
        source, X, y = _default_data(dtype, args.seed)
        names = None
    X = np.asarray(X, dtype=dtype)
    classification = y.ndim == 1 and y.dtype.kind in "iu"
    metadata = {"task": "classification" if classification else "regression", "feature_names": names}
    if classification:
        classes, y = np.unique(y, return_inverse=True)
        metadata["classes"] = classes.tolist()
        n_out = len(classes)
        if n_out < 2:
            print("fastbp train: the target has a single class", file=sys.stderr)
            return 2
    else:
        y = y.reshape(len(y), -1).astype(dtype)
        n_out = y.shape[1]
    X_tr, X_te, y_tr, y_te = datasets.train_test_split(X, y, test_size=args.test_size, seed=args.seed)
    sizes = [X.shape[1]] + args.hidden + [n_out]
    layers = [
        fastbp.Linear(a, b, activation=args.activation if i < len(sizes) - 2 else None, dtype=dtype, seed=args.seed + i)
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))
    ]
    model = fastbp.Sequential(*layers)
    model.metadata = metadata
    loss = fastbp.SoftmaxCrossEntropy() if classification else fastbp.MSELoss()
    opt_cls = {"sgd": fastbp.SGD, "adam": fastbp.Adam, "adamw": fastbp.AdamW}[args.optimizer]
    kw = {"momentum": 0.9} if args.optimizer == "sgd" else {}
    opt = opt_cls(model.parameters(), lr=args.lr, **kw)
    print(f"data: {source}; train {len(X_tr)}, test {len(X_te)}")
    print(
        f"model: {'-'.join(map(str, sizes))} {args.activation}, {dtype}, {args.optimizer} lr={args.lr}, "
        f"batch {args.batch_size}, {args.epochs} epochs, {fastbp.get_num_threads()} threads"
    )
    hist = fastbp.fit(
        model,
        X_tr,
        y_tr,
        loss=loss,
        optimizer=opt,
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        progress=not args.no_progress,
    )
    ev = fastbp.evaluate(model, X_te, y_te, loss=loss)
    rate = float(np.median(hist.samples_per_sec))
    total = time.perf_counter() - t_start
    print(
        f"train loss {hist.loss[-1]:.4f}; test loss {ev['loss']:.4f}"
        + (f"; test accuracy {ev['accuracy']:.4f}" if "accuracy" in ev else "")
    )
    print(f"throughput {rate:,.0f} samples/s (median epoch); total {total:.1f} s including compilation")
    if args.out:
        fastbp.save(model, args.out, optimizer=opt)
        print(f"saved {args.out}")
    return 0


def cmd_predict(args) -> int:
    import fastbp

    model = fastbp.load(args.model)
    X, _, _ = _load_data(args.data, args.target, model.dtype)
    X = np.asarray(X, dtype=model.dtype)
    meta = model.metadata
    out = {}
    if meta.get("task") == "classification":
        proba = fastbp.predict_proba(model, X, batch_size=args.batch_size)
        classes = np.asarray(meta["classes"])
        out["predictions"] = classes[proba.argmax(axis=1)]
        if args.proba:
            out["proba"] = proba
    else:
        out["predictions"] = fastbp.predict(model, X, batch_size=args.batch_size)
    if args.out.endswith(".csv"):
        pred = out["predictions"].reshape(len(X), -1)
        cols = pred if "proba" not in out else np.column_stack([pred, out["proba"]])
        head = ["prediction"] * pred.shape[1] + [f"proba_{c}" for c in meta.get("classes", [])][: cols.shape[1] - 1]
        np.savetxt(args.out, cols, delimiter=",", header=",".join(head), comments="", fmt="%.8g")
    else:
        np.savez(args.out, **out)
    print(f"wrote {len(X)} predictions to {args.out}")
    return 0


def cmd_bench(args) -> int:
    from .bench.report import run

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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="fastbp", description="JIT-accelerated backpropagation for MLPs on the CPU")
    sub = ap.add_subparsers(dest="command", required=True)

    tr = sub.add_parser("train", help="train an MLP (default: digits) and report test accuracy and throughput")
    tr.add_argument("--data", help=".npz (arrays X, y) or .csv with a header; default: digits")
    tr.add_argument("--target", help="target column (.csv) or array name (.npz, default y)")
    tr.add_argument("--hidden", type=_hidden, default=[128, 64], help="hidden sizes, e.g. 128,64 (default)")
    tr.add_argument("--activation", default="relu", choices=["relu", "tanh", "sigmoid"])
    tr.add_argument("--optimizer", default="adam", choices=["adam", "adamw", "sgd"])
    tr.add_argument("--lr", type=float, default=2e-3)
    tr.add_argument("--epochs", type=int, default=40)
    tr.add_argument("--batch-size", type=int, default=32)
    tr.add_argument("--test-size", type=float, default=0.2)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--threads", type=int, help="threads for numba and BLAS (default: all cores)")
    tr.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    tr.add_argument("--out", help="save the trained model (with optimizer state) to this .npz path")
    tr.add_argument("--no-progress", action="store_true", help="no progress bar")
    tr.set_defaults(func=cmd_train)

    pr = sub.add_parser("predict", help="predict with a saved model")
    pr.add_argument("--model", required=True, help="model file from fastbp train --out or fastbp.save")
    pr.add_argument("--data", required=True, help=".npz with an array X, or .csv with a header")
    pr.add_argument("--target", help="a .csv column to leave out of the features")
    pr.add_argument("--out", default="predictions.npz", help=".npz or .csv (default predictions.npz)")
    pr.add_argument("--proba", action="store_true", help="also write class probabilities")
    pr.add_argument("--batch-size", type=int, default=4096)
    pr.set_defaults(func=cmd_predict)

    be = sub.add_parser("bench", help="benchmark report: step times, GFLOP/s, ratios to numpy, PyTorch, BLAS floor")
    be.add_argument("--full", action="store_true", help="both MLPs, batch 16-1024, float32 and float64, scikit-learn")
    be.add_argument("--sklearn", action="store_true", help="include the scikit-learn epoch comparison")
    be.add_argument("--no-cold-start", action="store_true", help="skip the cold-start measurement")
    be.add_argument("--threads", type=int, help="threads for numba, BLAS and PyTorch (default: all cores)")
    be.add_argument("--json", default="fastbp-bench.json", help="write results here (default fastbp-bench.json)")
    be.add_argument("--png", default="fastbp-bench.png", help="chart of speed-up vs batch (needs matplotlib)")
    be.set_defaults(func=cmd_bench)

    info = sub.add_parser("info", help="version and threading")
    info.set_defaults(func=cmd_info)

    args = ap.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, ImportError, FileNotFoundError) as e:
        print(f"fastbp {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
