"""``fastbp train``: read the data, choose the task, standardize, train (with checkpoints if asked), report, save."""

from __future__ import annotations

import contextlib
import os
import sys
import time

import numpy as np

from . import data as _data


def _read(args, dtype):
    """``(source, X, y, feature_names)`` from ``--data``/``--target``, or the default data."""
    if not args.data:
        source, X, y = _data.default(dtype, args.seed)
        return source, X, y, None
    X, y, names, columns = _data.load(args.data, args.target, dtype)
    if y is None:
        if args.target:
            raise ValueError(f"--target: {args.data} has no array {args.target!r} (arrays: {columns})")
        raise ValueError(
            f"--target: which column of {args.data} is the target? Pass --target NAME (columns: {columns})"
        )
    where = f", target {args.target!r}" if args.target else ""
    return f"{args.data}: {X.shape[0]} rows x {X.shape[1]} features{where}", X, y, names


def _targets(y, task, dtype):
    """``(y for training, classes or None, output width)``."""
    from .. import tabular

    if task == "classification":
        if y.ndim != 1:
            raise ValueError(f"--task: classification needs one label per row, got targets of shape {y.shape}")
        classes, codes = tabular.encode_labels(y)
        if len(classes) < 2:
            raise ValueError(f"target: expected at least 2 classes, got only {classes}")
        return codes, classes, len(classes)
    y = np.asarray(y, dtype=dtype).reshape(len(y), -1)
    return y, None, y.shape[1]


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _describe_task(task, why, classes):
    if classes is None:
        return f"task: regression ({why}; --task classification to change)"
    shown = ", ".join(map(str, classes[:10])) + (", ..." if len(classes) > 10 else "")
    return f"task: classification, {len(classes)} classes: {shown} ({why}; --task regression to change)"


def _activation_layer(name):
    import fastbp

    if name == "gelu_tanh":
        return fastbp.GELU(approximate="tanh")
    classes = {
        "relu": fastbp.ReLU,
        "tanh": fastbp.Tanh,
        "sigmoid": fastbp.Sigmoid,
        "leaky_relu": fastbp.LeakyReLU,
        "elu": fastbp.ELU,
        "gelu": fastbp.GELU,
        "silu": fastbp.SiLU,
        "softplus": fastbp.Softplus,
    }
    return classes[name]()


def _build(args, sizes, dtype, X_tr):
    """``[Standardize] + (Linear [-> norm -> activation] [-> Dropout]) per hidden layer + Linear``.

    Without a norm the activation is fused into its Linear; with one it must
    follow the norm, so it is a layer of its own.
    """
    import fastbp

    layers = [fastbp.Standardize.from_data(X_tr, dtype=dtype)] if args.standardize else []
    norm = fastbp.BatchNorm1d if args.batchnorm else fastbp.LayerNorm if args.layernorm else None
    last = len(sizes) - 2
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        hidden = i < last
        fused = args.activation if hidden and norm is None else None
        layers.append(fastbp.Linear(a, b, activation=fused, dtype=dtype, seed=args.seed + i))
        if hidden and norm is not None:
            layers += [norm(b, dtype=dtype), _activation_layer(args.activation)]
        if hidden and args.dropout:
            layers.append(fastbp.Dropout(args.dropout, seed=args.seed + i))
    return fastbp.Sequential(*layers)


def _describe_model(args, sizes, dtype):
    extras = ["batchnorm"] if args.batchnorm else ["layernorm"] if args.layernorm else []
    extras += [f"dropout {args.dropout}"] if args.dropout else []
    return f"{'-'.join(map(str, sizes))} {args.activation}" + (f" ({', '.join(extras)})" if extras else "")


def _scores(model, X, y, classes, loss):
    """One line of results on ``(X, y)``: accuracy and loss, or RMSE, R^2 and MSE in the target's units."""
    import fastbp

    if classes is not None:
        ev = fastbp.evaluate(model, X, y, loss=loss)
        return f"accuracy {ev['accuracy']:.4f}, loss {ev['loss']:.4f} (mean cross-entropy)"
    pred = fastbp.predict(model, X).astype(np.float64)
    err = ((pred - y) ** 2).mean(axis=0)
    var = y.astype(np.float64).var(axis=0)
    r2 = float(np.mean(1.0 - err / np.where(var > 0, var, np.nan)))
    return f"RMSE {float(np.sqrt(err.mean())):.4g}, R^2 {r2:.4f} (target units)"


def _check_checkpoint_options(args) -> None:
    """The checkpoint options that only make sense together, refused before anything runs."""
    for option, value in (("--checkpoint-every", args.checkpoint_every), ("--checkpoint-unit", args.checkpoint_unit)):
        if value is not None and not args.checkpoint:
            raise ValueError(f"{option}: needs --checkpoint PATH (where to write), got {option} alone")
    if args.resume is True and not args.checkpoint:
        raise ValueError("--resume: without a PATH it continues from --checkpoint PATH, which was not given")


def _describe_checkpoints(args) -> list[str]:
    """Lines saying where checkpoints go and what the run continues from (reads the checkpoint's position)."""
    from .. import checkpoint

    lines = []
    if args.checkpoint:
        every, unit = args.checkpoint_every or 1, args.checkpoint_unit or "epoch"
        lines.append(f"checkpoint: {args.checkpoint}, every {every} {unit}{'' if every == 1 else 's'} and at the end")
    source = args.checkpoint if args.resume is True else args.resume
    if source and os.path.exists(source):
        lines.append(f"resume: from {source}, {checkpoint.read(source).position.describe()} done")
    elif args.resume is True:
        lines.append(f"resume: no checkpoint at {source} yet; starting afresh")
    return lines


# What the fit arguments a resume compares are called here.
_OPTIONS = {
    "model": "--hidden/--activation/--batchnorm/--layernorm/--dropout/--dtype/--seed",
    "X, y": "--data/--target/--task/--test-size/--seed/--no-standardize",
    "batch_size": "--batch-size",
    "seed": "--seed",
    "optimizer": "--optimizer",
    "loss": "--task",
    "epochs": "--epochs",
}


def _as_option(error: ValueError) -> ValueError:
    """``error`` of fit's resume checks, naming the command line's options instead of fit's arguments."""
    text = str(error)
    for name, option in _OPTIONS.items():
        if text.startswith(name + ":") and "checkpoint" in text:
            return ValueError(option + text[len(name) :])
    return error


def _mpi_comm():
    """``MPI.COMM_WORLD`` when started by ``mpiexec -n N`` with N > 1 (seen in the launcher's environment), or None."""
    from .. import distributed

    if distributed.launched_size() <= 1:
        return None
    try:
        return distributed.comm_world()
    except ImportError:
        raise ImportError(
            f"running under mpiexec with {distributed.launched_size()} processes, but mpi4py is not installed: "
            'pip install "fastbp[mpi]" (or run without mpiexec)'
        ) from None


def cmd_train(args) -> int:
    """``fastbp train``; under ``mpiexec -n N`` each rank trains on its block of the training rows, and rank 0
    alone prints and saves (docs/distributed.md)."""
    from .. import distributed

    _check_checkpoint_options(args)
    comm = _mpi_comm()
    if comm is None or comm.Get_rank() == 0:
        return _train(args, comm)
    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
        try:
            return _train(args, comm)
        except Exception as e:
            if distributed.is_agreed(e):  # rank 0 says it, with the failing rank's message
                return 2
            raise
        except KeyboardInterrupt as e:
            if distributed.is_agreed(e):
                return 130
            raise


def _train(args, comm) -> int:
    import fastbp

    from .. import datasets, tabular

    t_start = time.perf_counter()
    rank, size = (0, 1) if comm is None else (comm.Get_rank(), comm.Get_size())
    if args.threads:
        fastbp.set_num_threads(args.threads)
    elif size > 1:  # each rank its share of the cores
        fastbp.set_num_threads(max(1, (os.cpu_count() or 1) // size))
    dtype = np.dtype(args.dtype)
    source, X, y, names = _read(args, dtype)
    task, why = tabular.choose_task(y, args.task)
    y, classes, n_out = _targets(y, task, dtype)
    X_tr, X_te, y_tr, y_te = datasets.train_test_split(X, y, test_size=args.test_size, seed=args.seed)
    sizes = [X.shape[1]] + args.hidden + [n_out]
    model = _build(args, sizes, dtype, X_tr)
    y_fit, unscale = y_tr, None
    if classes is None and args.standardize:  # train on standardized targets, predict in their units
        scale = fastbp.Standardize.from_data(y_tr, dtype=dtype)
        y_fit = scale.infer(np.ascontiguousarray(y_tr))
        unscale = fastbp.Standardize(scale.mean, scale.std, inverse=True, dtype=dtype)
    loss = fastbp.SoftmaxCrossEntropy() if classes is not None else fastbp.MSELoss()
    opt_cls = {"sgd": fastbp.SGD, "adam": fastbp.Adam, "adamw": fastbp.AdamW}[args.optimizer]
    opt = opt_cls(model.parameters(), lr=args.lr, **({"momentum": 0.9} if args.optimizer == "sgd" else {}))
    what = "features and target" if unscale is not None else "features"
    print(f"data: {source}")
    print(_describe_task(task, why, classes))
    print(
        f"scaling: {what} standardized with the training rows' mean and std, saved in the model"
        if args.standardize
        else "scaling: none (--no-standardize)"
    )
    print(f"split: {len(X_tr)} train rows, {len(X_te)} test rows (--test-size {args.test_size}, --seed {args.seed})")
    if size > 1:
        print(f"mpi: {size} ranks, each training on its block of about {len(X_tr) // size} rows (batch per rank)")
    print(
        f"model: {_describe_model(args, sizes, dtype)}, {dtype}, {args.optimizer} lr={args.lr}, "
        f"batch {args.batch_size}, {args.epochs} epochs, {_count(fastbp.get_num_threads(), 'thread')}"
    )
    for line in _describe_checkpoints(args):
        print(line)
    meta = {"task": task, "feature_names": names, "target": args.target, "standardized": args.standardize}
    if classes is not None:
        meta["classes"] = classes
    # Under MPI, each rank its contiguous block of the training rows.
    mine = np.array_split(np.arange(len(X_tr)), size)[rank]
    try:
        hist = fastbp.fit(
            model,
            X_tr[mine] if size > 1 else X_tr,
            y_fit[mine] if size > 1 else y_fit,
            loss=loss,
            optimizer=opt,
            epochs=args.epochs,
            batch_size=args.batch_size,
            seed=args.seed,
            progress=not args.no_progress,
            checkpoint=args.checkpoint,
            checkpoint_every=args.checkpoint_every or 1,
            checkpoint_unit=args.checkpoint_unit or "epoch",
            resume=args.resume,
            comm=comm,
        )
    except fastbp.TrainingInterrupted as stop:
        if rank:
            raise
        final = _finish(model, unscale, meta)
        saved = _save(final, opt, args.out)
        resumable = f"; checkpoint in {args.checkpoint} (--resume continues)" if args.checkpoint else ""
        print(
            f"interrupted in epoch {stop.epoch} after batch {stop.batches} of {stop.batches_per_epoch} "
            f"({stop.completed_epochs} full epoch{'' if stop.completed_epochs == 1 else 's'}); {saved}{resumable}",
            file=sys.stderr,
        )
        return 130
    except ValueError as e:
        from .. import distributed

        converted = _as_option(e)
        if distributed.is_agreed(e):  # raised alike on every rank: rank 0 alone says it
            distributed.mark_agreed(converted)
        raise converted from None
    if rank:
        return 0
    final = _finish(model, unscale, meta)
    print(f"train: {_scores(final, X_tr, y_tr, classes, loss)}")
    print(f"test:  {_scores(final, X_te, y_te, classes, loss)}")
    rate = float(np.median(hist.samples_per_sec))
    print(
        f"throughput {rate:,.0f} samples/s (median epoch); total {time.perf_counter() - t_start:.1f} s "
        "including compilation"
    )
    if args.out:
        print(_save(final, opt, args.out))
    return 0


def _finish(model, unscale, meta):
    """The model to save and report: with the target's scaling undone at its end."""
    import fastbp

    final = model if unscale is None else fastbp.Sequential(*model.layers, unscale)
    final.metadata = meta
    return final


def _save(model, opt, out) -> str:
    import fastbp

    if not out:
        return "nothing saved (no --out)"
    fastbp.save(model, out, optimizer=opt)
    return f"model saved to {out}"
