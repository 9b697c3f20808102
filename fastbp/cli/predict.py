"""``fastbp predict``: a saved model's predictions for a .csv or .npz, written as .csv, .npy or .npz."""

from __future__ import annotations

import csv
import io

import numpy as np

from . import data as _data

FORMATS = (".csv", ".npy", ".npz")


def _columns(out: dict, classes) -> tuple[list[str], list[np.ndarray]]:
    """CSV header and columns: the prediction(s), then one probability per class."""
    pred = out["predictions"]
    if pred.ndim == 1:
        names, cols = ["prediction"], [pred]
    else:
        names = [f"prediction_{j}" for j in range(pred.shape[1])]
        cols = list(pred.T)
    if "proba" in out:
        names += [f"proba_{c}" for c in classes]
        cols += list(out["proba"].T)
    return names, cols


def _csv_text(out: dict, classes) -> str:
    names, cols = _columns(out, classes)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(names)
    # str() of a numpy float is its shortest round-trip form: the file holds the exact values.
    w.writerows(zip(*[[str(v) for v in c] for c in cols]))
    return buf.getvalue()


def write(path: str, out: dict, classes) -> None:
    """Write ``out`` ({"predictions": (n,) or (n, k), "proba": (n, c)}) to ``path``, atomically.

    The extension names the format: .csv (a header row, then one row per input row),
    .npy (the predictions alone) or .npz (arrays ``predictions`` and ``proba``).
    """
    from ..io import write_atomically

    kind = path.lower()[path.rfind(".") :]
    if kind == ".csv":
        text = _csv_text(out, classes).encode()
        write_atomically(path, lambda fh: fh.write(text))
    elif kind == ".npy":
        write_atomically(path, lambda fh: np.save(fh, out["predictions"], allow_pickle=False))
    elif kind == ".npz":
        write_atomically(path, lambda fh: np.savez(fh, **out))
    else:  # the argument check refuses these first
        raise ValueError(f"--out: expected a name ending in {', '.join(FORMATS)}, got {path!r}")


def cmd_predict(args) -> int:
    import fastbp

    if args.proba and args.out.lower().endswith(".npy"):
        raise ValueError("--proba: a .npy file holds one array; write probabilities to a .csv or .npz --out")
    model = fastbp.load(args.model)
    meta = model.metadata
    if args.proba and meta.get("task") != "classification":
        raise ValueError(f"--proba: {args.model} is a regression model; it has no class probabilities")
    X, _, names, _ = _data.load(args.data, args.target, model.dtype)
    X = _data.select_features(X, names, meta, args.data, args.target)
    width = getattr(model.layers[0], "in_features", X.shape[1])
    if X.shape[1] != width:
        hint = "; pass --target NAME to leave the target column out" if X.shape[1] == width + 1 else ""
        raise ValueError(f"--data: the model takes {width} features, {args.data} has {X.shape[1]}{hint}")
    out = {}
    if meta.get("task") == "classification":
        proba = fastbp.predict_proba(model, X, batch_size=args.batch_size)
        out["predictions"] = np.asarray(meta["classes"])[proba.argmax(axis=1)]
        if args.proba:
            out["proba"] = proba
    else:
        pred = fastbp.predict(model, X, batch_size=args.batch_size)
        out["predictions"] = pred[:, 0] if pred.shape[1] == 1 else pred
    write(args.out, out, meta.get("classes"))
    print(f"wrote {len(X)} predictions to {args.out}")
    return 0
