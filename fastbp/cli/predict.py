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


def _load_model(path: str):
    """The model in ``path``, or a one-line ValueError naming ``--model`` (main prints it, exit status 2)."""
    import fastbp

    try:
        model = fastbp.load(path)
    except ValueError as e:
        raise ValueError(f"--model: {_one_line(e)}") from e
    _check_metadata(model, path)
    return model


def _one_line(e: Exception) -> str:
    return " ".join(str(e).splitlines())


def _inputs(model) -> int | None:
    """The features the model takes (its first sized layer's), or None when no layer fixes them."""
    return next((layer.in_features for layer in model.layers if hasattr(layer, "in_features")), None)


def _outputs(model) -> int | None:
    """The model's outputs (its last sized layer's), or None when no layer fixes them."""
    return next((layer.out_features for layer in reversed(model.layers) if hasattr(layer, "out_features")), None)


def _check_metadata(model, path: str) -> None:
    """What predict reads from ``model.metadata`` (any JSON object in a file from fastbp.save) has the right form."""
    meta = model.metadata
    bad = f"--model: {path}: metadata"
    task = meta.get("task")
    if task not in (None, "classification", "regression"):
        raise ValueError(f"{bad} 'task': expected 'classification' or 'regression', got {task!r}")
    if meta.get("target") is not None and not isinstance(meta["target"], str):
        raise ValueError(f"{bad} 'target': expected a string or null, got {meta['target']!r:.80}")
    names, n_in = meta.get("feature_names"), _inputs(model)
    if names is not None:
        if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
            raise ValueError(f"{bad} 'feature_names': expected a list of strings, got {names!r:.80}")
        if n_in is not None and len(names) != n_in:
            raise ValueError(f"{bad} 'feature_names': {len(names)} names for a model of {n_in} features")
    if task == "classification":
        classes, n_out = meta.get("classes"), _outputs(model)
        scalars = isinstance(classes, list) and all(isinstance(c, (str, int, float)) for c in classes)
        if not scalars or not classes:
            raise ValueError(f"{bad} 'classes': expected a list of class labels, got {classes!r:.80}")
        if n_out is not None and len(classes) != n_out:
            raise ValueError(f"{bad} 'classes': {len(classes)} labels for a model of {n_out} outputs")


def cmd_predict(args) -> int:
    import fastbp

    if args.proba and args.out.lower().endswith(".npy"):
        raise ValueError("--proba: a .npy file holds one array; write probabilities to a .csv or .npz --out")
    model = _load_model(args.model)
    meta = model.metadata
    if args.proba and meta.get("task") != "classification":
        raise ValueError(f"--proba: {args.model} is a regression model; it has no class probabilities")
    X, _, names, _ = _data.load(args.data, args.target, model.dtype)
    X = _data.select_features(X, names, meta, args.data, args.target)
    width = _inputs(model) or X.shape[1]
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
