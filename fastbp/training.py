"""Training loop and batched inference: ``fit``, ``evaluate``, ``predict``, ``predict_proba``."""

from __future__ import annotations

import contextlib
import itertools
import math
import time
from dataclasses import dataclass, field

import numpy as np

from . import _validate as v
from . import checkpoint as _ckpt
from . import data
from . import distributed as _dist
from .checkpoint import Position, TrainingState
from .layers import Softmax
from .loop import backward_update, count_correct, defer_interrupts, forward_loss, is_classifier
from .losses import CrossEntropy, Loss, SoftmaxCrossEntropy
from .model import Sequential
from .ops import softmax
from .optim import Optimizer
from .progress import Progress
from .schedules import ReduceLROnPlateau


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss; the message says where."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped :func:`fit` between two steps; the model holds the weights after the last one.

    Attributes
    ----------
    epoch : the epoch (from 1) that was running
    batches, batches_per_epoch : steps done in that epoch, and in a whole one (0: not known yet, an iterable's first)
    history : :class:`History` of the epochs that completed
    """

    def __init__(self, epoch: int, batches: int, batches_per_epoch: int, history):
        self.epoch, self.batches, self.batches_per_epoch, self.history = epoch, batches, batches_per_epoch, history
        # 0 batches per epoch: an iterable of batches interrupted in its first epoch (its length is not known yet).
        of = f" of {batches_per_epoch}" if batches_per_epoch else ""
        super().__init__(
            f"training interrupted in epoch {epoch} after batch {batches}{of}; "
            "the model holds the weights after that batch"
        )

    @property
    def completed_epochs(self) -> int:
        """Whole epochs trained."""
        return self.epoch if self.batches == self.batches_per_epoch else self.epoch - 1


@dataclass
class History:
    """Per-epoch records of :func:`fit` (validation entries only when there is validation data)."""

    loss: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    accuracy: list = field(default_factory=list)
    val_accuracy: list = field(default_factory=list)
    lr: list = field(default_factory=list)
    samples_per_sec: list = field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False

    @property
    def epochs(self) -> int:
        return len(self.loss)

    def as_dict(self) -> dict:
        return {
            k: getattr(self, k)
            for k in (
                "loss",
                "val_loss",
                "accuracy",
                "val_accuracy",
                "lr",
                "samples_per_sec",
                "best_epoch",
                "stopped_early",
            )
        }


# -- data checks ---------------------------------------------------------------


def _input_width(model: Sequential):
    return getattr(model.layers[0], "in_features", None)


def _check_xy(model, X, y, loss, name_x="X", name_y="y"):
    """``(X, y)`` checked: X as :class:`~fastbp.data.Rows` (checked on its metadata, read in the model's
    dtype a batch at a time, never copied whole), y converted (it is small); an iterable of
    batches (``y`` None) as a :class:`~fastbp.data.StreamSource` and None."""
    if isinstance(X, (data.Rows, data.StreamSource)):  # checked already (validation data, each epoch)
        return X, y
    if data.is_stream(X, y):
        return _stream(model, X, y, loss, name_x, name_y), None
    X = v.batch(data.open_array(X, name_x), name_x, dtype=model.dtype, width=_input_width(model), convert=False)
    X = data.Rows(X, model.dtype if model.dtype is not None else X.dtype)
    return X, _targets(model, loss, X.shape[0], data.open_array(y, name_y), name_x, name_y)


def _targets(model, loss, n, y, name_x, name_y):
    """``y`` checked against ``n`` rows of ``name_x``: int64 labels (n,) or float targets (n, k)."""
    y = np.asarray(y)
    if y.ndim == 0 or y.shape[0] != n:
        raise ValueError(f"{name_y}: expected {n} rows to match {name_x}, got shape {y.shape}")
    if isinstance(loss, (SoftmaxCrossEntropy, CrossEntropy)) and y.ndim == 1:
        return v.labels(y, name_y, n, _output_width(model))
    return v.float_array(y, name_y, ndim=2, dtype=model.dtype)


def _stream(model, X, y, loss, name_x, name_y):
    """An iterable of ``(X_batch, y_batch)`` as a source whose batches are checked as they arrive."""
    if y is not None and isinstance(X, data.Stream):
        raise ValueError(
            f"{name_y}: expected None when {name_x} is an iterable of (X_batch, y_batch) pairs, got {type(y).__name__}"
        )
    width = _input_width(model)

    def check(i, xb, yb):
        nx, ny = f"{name_x} batch {i} (X_batch)", f"{name_x} batch {i} (y_batch)"
        xb = v.batch(data.open_array(xb, nx), nx, dtype=model.dtype, width=width)
        return xb, _targets(model, loss, xb.shape[0], yb, nx, ny)

    return data.StreamSource(X if isinstance(X, data.Stream) else data.Stream(X), check, name_x, width)


def _output_width(model: Sequential):
    for layer in reversed(model.layers):
        if hasattr(layer, "out_features"):
            return layer.out_features
    return _input_width(model)


# -- inference -----------------------------------------------------------------


def predict(model: Sequential, X, *, batch_size: int = 4096) -> np.ndarray:
    """Model outputs for ``X`` (n, in), ``batch_size`` rows at a time (thread-safe).

    ``X`` may be any float array (converted block by block), an ``np.memmap`` or the path of a ``.npy`` file.
    """
    return model.predict(data.open_array(X, "X"), batch_size=batch_size)


def predict_proba(model: Sequential, X, *, batch_size: int = 4096) -> np.ndarray:
    """Class probabilities: softmax of the outputs row by row (unless the model ends in Softmax).

    Returns
    -------
    (n, k) array of the model's dtype, rows summing to 1.
    """
    out = model.predict(data.open_array(X, "X"), batch_size=batch_size)
    return out if isinstance(model.layers[-1], Softmax) else softmax(out)


def evaluate(model: Sequential, X, y, *, loss: Loss, batch_size: int = 4096) -> dict:
    """Mean loss (and accuracy for classification losses) over ``X``, in batches.

    ``X`` and ``y`` may be arrays of any float dtype and layout (read block by block in the
    model's dtype), ``np.memmap`` s or ``.npy`` paths; or ``X`` an iterable of ``(X_batch, y_batch)``
    pairs with ``y=None``.

    Returns
    -------
    dict with ``"loss"`` and, for classification losses, ``"accuracy"``.
    """
    batch_size = v.positive_int(batch_size, "batch_size")
    X, y = _check_xy(model, X, y, loss)
    probe = loss.clone(reduction="sum")  # its own buffers: the caller's loss is untouched
    total, correct, n = 0.0, 0, 0
    norm = 0.0
    with _blocks(X, y, batch_size) as blocks:
        for xb, yb in blocks:
            out = model.predict(xb, batch_size=max(batch_size, xb.shape[0]))
            total += probe.forward(out, yb)
            norm += _mean_norm(loss, out, yb)
            n += xb.shape[0]
            if is_classifier(loss):
                correct += count_correct(out, yb, loss)
    result = {"loss": total / norm}
    if is_classifier(loss):
        result["accuracy"] = correct / n
    return result


@contextlib.contextmanager
def _blocks(X, y, rows: int):
    """The ``(X_block, y_block)`` of checked data in order: ``rows`` rows of :class:`~fastbp.data.Rows`
    at a time (converted into one buffer), or a stream's batches (its thread joined on leaving)."""
    if isinstance(X, data.StreamSource):
        with X.epoch() as feed:
            yield (batch[2:] for batch in iter(feed.next, None))
    else:
        yield ((xb, y[start : start + xb.shape[0]]) for start, xb in X.blocks(rows))


def _mean_norm(loss, out, y) -> float:
    """What ``loss``'s mean reduction divides this batch's sum by."""
    if isinstance(loss, SoftmaxCrossEntropy) and loss.weight is not None and y.ndim == 1:
        return float(np.asarray(loss.weight, dtype=np.float64)[y].sum())
    if isinstance(loss, (SoftmaxCrossEntropy, CrossEntropy)):
        return float(out.shape[0])
    return float(out.size)


# -- fit -----------------------------------------------------------------------


def _check_components(model, loss, optimizer) -> None:
    if not isinstance(model, Sequential):
        raise TypeError(f"model: expected a fastbp Sequential, got {type(model).__name__}")
    if not isinstance(loss, Loss):
        raise TypeError(f"loss: expected a fastbp Loss, got {type(loss).__name__}")
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"optimizer: expected a fastbp optimizer, got {type(optimizer).__name__}")
    # An optimizer built over another model's (or a rebuilt layer's) parameters would train
    # nothing here while the loss stays constant: refuse it. A subset is fine (frozen layers).
    own = {id(p) for p in model.parameters()}
    foreign = [i for i, p in enumerate(optimizer.params) if id(p) not in own]
    if foreign:
        raise ValueError(
            f"optimizer: expected an optimizer over this model's parameters (model.parameters()), got one whose "
            f"parameters {foreign[:5]}{'...' if len(foreign) > 5 else ''} ({len(foreign)} of "
            f"{len(optimizer.params)}) are not the model's"
        )


def _training_and_validation(
    model, X, y, loss, validation_data, validation_split, *, shuffle: bool = False, checkpointing: bool = False
):
    """Checked ``(X, y)`` to train on and ``(X_val, y_val)`` or None, split off the end of the rows if asked.

    The split of an array is two views; nothing is copied (:func:`_check_xy`).
    """
    validation_split = v.fraction(validation_split, "validation_split")
    X, y = _check_xy(model, X, y, loss)
    if validation_data is not None and validation_split:
        raise ValueError("validation_split: give either validation_data or validation_split, not both")
    if isinstance(X, data.StreamSource):
        _check_stream_settings(validation_split, shuffle, checkpointing)
    if validation_split:
        n_val = int(round(X.shape[0] * validation_split))
        if n_val < 1 or n_val >= X.shape[0]:
            raise ValueError(
                f"validation_split: {validation_split} leaves no training or no validation rows of {X.shape[0]}"
            )
        return X[:-n_val], y[:-n_val], (X[-n_val:], y[-n_val:])
    if validation_data is None:
        return X, y, None
    if isinstance(validation_data, data.Stream):  # batches (X_val, y_val) to evaluate after each epoch
        return X, y, _check_xy(model, validation_data, None, loss, "validation_data")
    try:
        X_val, y_val = validation_data
    except (TypeError, ValueError):
        raise ValueError("validation_data: expected a pair (X_val, y_val)") from None
    return X, y, _check_xy(model, X_val, y_val, loss, "validation_data[0]", "validation_data[1]")


def _check_stream_settings(validation_split, shuffle, checkpointing) -> None:
    """What training on an iterable of batches cannot do: its rows are neither indexed nor stored."""
    if validation_split:
        raise ValueError(
            "validation_split: an iterable of batches (X) cannot be split; pass validation_data=(X_val, y_val)"
        )
    if shuffle:
        raise ValueError(
            "shuffle: an iterable of batches (X) is read in its own order; pass shuffle=False "
            "(and shuffle in the iterable, if its batches should change order between epochs)"
        )
    if checkpointing:
        raise ValueError(
            "checkpoint: an iterable of batches (X) cannot be fingerprinted or resumed mid-epoch; "
            "pass X as an array, np.memmap or .npy path, or checkpoint=None and resume=None"
        )


class _Epoch:
    """One pass over the training rows in a given order, with the NaN rollback and Ctrl-C checks."""

    def __init__(self, model, loss, optimizer, X, y, batch_size, clip_norm, progress):
        self.model, self.loss, self.optimizer = model, loss, optimizer
        self.params = model.parameters()
        # Rows by index of an array (data.Rows), or a stream's own batches (its size known after an epoch)
        self.batches = X if isinstance(X, data.StreamSource) else data.ArraySource(X, y)
        self.n, self.batch = X.shape[0], min(batch_size, X.shape[0]) or batch_size
        self.n_batches = -(-self.n // self.batch)
        self.clip_norm, self.progress = clip_norm, progress
        self.classifier = is_classifier(loss)

    def run(self, epoch: int, order: np.ndarray, interrupted, history, position: Position, after_step) -> dict:
        """Train on the batches of ``order`` (n,) from ``position.batches`` on; returns the logs: loss, accuracy
        and throughput.

        ``position`` holds the epoch's running sums and is brought up to date after every step,
        before ``after_step()`` runs (to write a checkpoint: outside the timed part); a resumed
        epoch so continues from the sums its checkpoint saved.
        """
        # The feed reads the next batch in a thread while a step runs; leaving joins it, however the epoch ends.
        with self.batches.epoch(order, self.batch, position.batches) as feed:
            return self._run(feed, epoch, interrupted, history, position, after_step)

    def _run(self, feed, epoch: int, interrupted, history, position: Position, after_step) -> dict:
        safe_state = (self.model.state_dict(), self.optimizer.state_dict())  # for a NaN rollback
        for b in itertools.count(position.batches):
            t0 = time.perf_counter()
            batch = feed.next()  # (start, idx (m,), xb, yb), gathered meanwhile; None after the last
            if batch is None:
                break
            start, idx, xb, yb = batch
            out, batch_loss = forward_loss(self.model, self.loss, xb, yb)
            if not math.isfinite(batch_loss):
                self._fail(batch_loss, epoch, b, start, idx.shape[0], safe_state)
            if self.classifier:
                position.correct += count_correct(out, yb, self.loss)
            backward_update(self.model, self.loss, self.optimizer, self.params, self.clip_norm)
            position.total += batch_loss * idx.shape[0]
            position.batches = b + 1
            position.elapsed += time.perf_counter() - t0
            self.progress.batch(idx.shape[0])
            after_step()
            if interrupted():
                raise TrainingInterrupted(epoch, b + 1, self.n_batches, history)
        self.n, self.n_batches = self.batches.n, b  # a stream's size is known once it has been read
        self.check_finite(epoch, self.n_batches, safe_state)
        return self.logs(position, self.n)

    def logs(self, position: Position, n: int) -> dict:
        """The epoch's logs from its running sums over ``n`` rows: loss, accuracy and throughput."""
        elapsed = position.elapsed
        logs = {"loss": position.total / n, "samples_per_sec": n / elapsed if elapsed > 0 else float("inf")}
        if self.classifier:
            logs["accuracy"] = position.correct / n
        return logs

    def restore_if_broken(self, safe_state) -> bool:
        """Put back ``safe_state`` (model, optimizer) if a parameter is non-finite; whether it did."""
        if all(np.isfinite(p.data).all() for p in self.params):
            return False
        self.model.load_state_dict(safe_state[0])
        self.optimizer.load_state_dict(safe_state[1])
        return True

    def check_finite(self, epoch: int, n_batches: int, safe_state) -> None:
        """After the epoch's last update, which may have made the parameters non-finite: no later forward would tell."""
        if self.restore_if_broken(safe_state):
            raise NonFiniteLossError(
                f"parameters became non-finite in the last update of epoch {epoch} (batch {n_batches}); "
                "the model was restored to the start of the epoch. Lower the learning rate, "
                "clip gradients (clip_norm=...) or check the data for NaN/inf."
            )

    def loss_error(self, batch_loss, where: str, safe_state) -> NonFiniteLossError:
        """The error for a non-finite loss at ``where``, after restoring ``safe_state`` if the parameters broke."""
        if self.restore_if_broken(safe_state):
            where += "; the parameters had become non-finite, so the model was restored to the start of the epoch"
        return NonFiniteLossError(
            f"loss became {batch_loss} at {where}. Lower the learning rate, "
            "clip gradients (clip_norm=...) or check the data for NaN/inf."
        )

    def _fail(self, batch_loss, epoch, b, start, m, safe_state):
        where = f"epoch {epoch}, batch {b + 1} (rows {start}..{start + m - 1} of the epoch order)"
        raise self.loss_error(batch_loss, where, safe_state)


class _Monitor:
    """The best monitored loss so far, its epoch, and when to stop early (keeping the best weights if asked)."""

    def __init__(self, early_stopping, patience, min_delta, restore_best):
        self.early_stopping, self.patience, self.min_delta = early_stopping, patience, min_delta
        self.keep_best = early_stopping and restore_best
        self.best, self.best_state, self.bad_epochs = math.inf, None, 0

    def update(self, model, epoch: int, monitored: float, history: History) -> bool:
        """Record this epoch's value; True when early stopping says stop."""
        if monitored < self.best - self.min_delta:
            self.best, self.bad_epochs, history.best_epoch = monitored, 0, epoch
            if self.keep_best:
                self.best_state = model.state_dict()
        else:
            self.bad_epochs += 1
        if self.early_stopping and self.bad_epochs >= self.patience:
            history.stopped_early = True
        return history.stopped_early

    def restore(self, model) -> None:
        if self.keep_best and self.best_state is not None:
            model.load_state_dict(self.best_state)

    def state_dict(self) -> dict:
        """``best`` (float, inf before any epoch), ``bad_epochs`` and ``best_state`` (weights, or None); not copies."""
        return {"best": self.best, "bad_epochs": self.bad_epochs, "best_state": self.best_state}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.bad_epochs = float(state["best"]), int(state["bad_epochs"])
        self.best_state = state["best_state"] if self.keep_best else None


def _record(history: History, logs: dict, lr: float) -> None:
    history.loss.append(logs["loss"])
    history.samples_per_sec.append(logs["samples_per_sec"])
    history.lr.append(lr)
    if "accuracy" in logs:
        history.accuracy.append(logs["accuracy"])
    if "val_loss" in logs:
        history.val_loss.append(logs["val_loss"])
    if "val_accuracy" in logs:
        history.val_accuracy.append(logs["val_accuracy"])


def _validation_logs(model, loss, validation, batch: int, world=None) -> dict:
    ev = evaluate(model, *validation, loss=loss, batch_size=max(batch, 1024))
    logs = {"val_loss": ev["loss"]}
    if "accuracy" in ev:
        logs["val_accuracy"] = ev["accuracy"]
    if world is not None:  # the mean over every rank's validation rows
        y_val = np.asarray(validation[1])
        # The outputs' shape is the targets' (their rows, for labels): all _mean_norm reads of it.
        norm = _mean_norm(loss, y_val, y_val)
        logs = world.validation(logs, norm, y_val.shape[0])
    return logs


def _epochs(
    state: TrainingState,
    one_epoch: _Epoch,
    epochs,
    shuffle,
    validation,
    callbacks,
    progress_,
    interrupted,
    saver,
    world=None,
):
    """Train from ``state.position`` until ``epochs``, early stopping or a callback says stop.

    With a ``world`` (:class:`fastbp.distributed.World`) the epoch's end is agreed: rank 0's
    buffers, validation over every rank's rows, and a stop or Ctrl-C on any rank stops all.
    """
    model, optimizer, lr_schedule, history = state.model, state.optimizer, state.lr_schedule, state.history
    if history.stopped_early:  # resumed from the end of a run early stopping ended: nothing is left to do
        return
    for epoch in range(state.position.epochs + 1, epochs + 1):
        if shuffle and state.position.batches == 0:  # else resumed mid-epoch, in the order the checkpoint saved
            state.rng.shuffle(state.order)
        logs = one_epoch.run(epoch, state.order, interrupted, history, state.position, lambda: saver.after_step(state))
        if world is not None:
            world.sync_buffers(model)
        if validation is not None:
            logs.update(_validation_logs(model, one_epoch.loss, validation, one_epoch.batch, world))
            if not math.isfinite(logs["val_loss"]):
                raise NonFiniteLossError(
                    f"validation loss became {logs['val_loss']} after epoch {epoch} (the parameters are "
                    "finite: the validation data may hold NaN/inf or values far outside the training "
                    "data's range)"
                )
        _record(history, logs, optimizer.lr)
        monitored = logs.get("val_loss", logs["loss"])
        stop = state.monitor.update(model, epoch, monitored, history)
        if lr_schedule is not None:
            lr_schedule.step(monitored) if isinstance(lr_schedule, ReduceLROnPlateau) else lr_schedule.step()
        stop = any(bool(cb(epoch, logs, model)) for cb in callbacks) or stop
        pressed = interrupted()
        if world is not None:  # one rank's callback or Ctrl-C stops every rank
            stop, pressed = world.any_of(stop, pressed)
        state.position = Position(epochs=epoch)
        saver.after_epoch(state)
        progress_.epoch(epoch, logs, last=stop)
        if pressed:  # pressed during validation or callbacks: the epoch is whole
            n = one_epoch.n_batches
            raise _dist.mark_agreed(TrainingInterrupted(epoch, n, n, history))
        if stop:
            break


@_dist.collective
def fit(
    model: Sequential,
    X,
    y,
    *,
    loss: Loss,
    optimizer: Optimizer,
    epochs: int = 10,
    batch_size: int = 32,
    shuffle: bool = True,
    seed=None,
    validation_data=None,
    validation_split: float = 0.0,
    early_stopping: bool = False,
    patience: int = 10,
    min_delta: float = 0.0,
    restore_best: bool = True,
    lr_schedule=None,
    clip_norm: float | None = None,
    callbacks=(),
    progress: bool = True,
    checkpoint=None,
    checkpoint_every: int = 1,
    checkpoint_unit: str = "epoch",
    resume=None,
    comm=None,
) -> History:
    """Train ``model`` on ``(X, y)`` with minibatch gradient descent.

    Parameters
    ----------
    model : Sequential
    X : (n, in) float array of any float dtype and layout, an ``np.memmap``, or the path of a
        ``.npy`` file (opened memory-mapped); read a batch at a time in the model's dtype, never
        copied whole. Or an iterable of ``(X_batch, y_batch)`` pairs with ``y=None`` and
        ``shuffle=False`` (``iter()`` is called each epoch). docs/data.md
    y : (n,) integer labels for classification losses, or (n, out) targets (an array or a ``.npy`` path)
    loss : a :class:`~fastbp.losses.Loss` (its reduction should be "mean")
    optimizer : an optimizer over ``model.parameters()``
    epochs, batch_size : int; the last batch of an epoch may be smaller
    shuffle, seed : a fresh permutation each epoch from ``numpy.random.default_rng(seed)``
    validation_data : (X_val, y_val) (arrays, memmaps or paths; or ``fastbp.data.Stream(batches)``),
        or use ``validation_split`` (the last fraction of the rows)
    early_stopping, patience, min_delta : stop after ``patience`` epochs without the monitored
        loss (validation loss if any, else training loss) improving by ``min_delta``
    restore_best : with early stopping, put back the weights of the best epoch
    lr_schedule : a schedule from :mod:`fastbp.schedules`, stepped once per epoch
    clip_norm : clip the global gradient norm to this value each step
    callbacks : callables ``cb(epoch, logs, model)``; returning True stops training
    progress : on a terminal, one tqdm bar over the run (needs tqdm: the ``progress`` extra);
        elsewhere a line per epoch on stderr, at most every 5 seconds
    checkpoint : path or None
        Write a checkpoint (:mod:`fastbp.checkpoint`, docs/checkpoints.md) here, atomically:
        every ``checkpoint_every`` epochs or steps, and when training ends (all epochs,
        early stopping, a callback, or Ctrl-C); not on NonFiniteLossError, which keeps the
        last one written.
    checkpoint_every : int >= 1
    checkpoint_unit : "epoch" or "step" (optimizer steps, counted over the whole run)
    resume : path, True or None
        Continue the run a checkpoint file holds; it ends as the run that was never stopped
        would have, bit for bit given the same thread count (but for ``samples_per_sec``). The
        other arguments must be those of that run: ``epochs`` may be larger (to train longer);
        a different model, loss or optimizer type, data, ``batch_size``, ``shuffle``, ``seed``,
        schedule, early-stopping setting or ``clip_norm`` is a ValueError naming it. The
        optimizer's hyperparameters and rates are the checkpoint's. ``True``: continue from
        ``checkpoint`` if that file exists, else start afresh (a script that can be rerun).
    comm : mpi4py intracommunicator or None
        Data-parallel training over MPI (docs/distributed.md; needs the ``mpi`` extra): run
        the same script on every rank (``mpiexec -n N python script.py``), each passing only
        its own rows; ``batch_size`` is per rank. Every step averages the gradients over the
        ranks, weighted so that it equals one step on the ranks' batches stacked; the logs
        and validation metrics are over all ranks' rows; rank 0 alone shows progress and
        writes checkpoints. None (the default): this process alone.

    Returns
    -------
    History

    Raises
    ------
    NonFiniteLossError
        When a batch's loss is NaN or infinite; the model is left at its last finite
        parameters (those before the failing batch, or the start of the epoch if an
        update had already made them non-finite; after a resume mid-epoch, the resume point).
    TrainingInterrupted
        On Ctrl-C (a KeyboardInterrupt), raised after the running step completes, so the
        model is consistent; it says how far training got and carries the History.
    FileNotFoundError
        When ``resume`` names a file that does not exist.
    """
    _check_components(model, loss, optimizer)
    epochs = v.positive_int(epochs, "epochs")
    batch_size = v.positive_int(batch_size, "batch_size")
    patience = v.positive_int(patience, "patience")
    if clip_norm is not None:
        clip_norm = v.check(clip_norm, "clip_norm", v.POSITIVE)
    min_delta = v.check(min_delta, "min_delta", v.NON_NEGATIVE)
    path, every, unit, source = _ckpt.check_arguments(
        checkpoint, checkpoint_every, checkpoint_unit, resume, lr_schedule
    )
    X, y, validation = _training_and_validation(
        model, X, y, loss, validation_data, validation_split, shuffle=shuffle, checkpointing=path or source
    )
    monitor = _Monitor(early_stopping, patience, min_delta, restore_best)
    state = TrainingState(
        model, optimizer, lr_schedule, np.random.default_rng(seed), np.arange(X.shape[0]), monitor, History()
    )
    world = comm  # a fastbp.distributed.World (made by the wrapper) or None
    if world is not None and isinstance(X, data.StreamSource):
        raise TypeError(
            "X: a distributed fit (comm=...) needs each rank's rows as an array, np.memmap or .npy path, "
            "got an iterable of (X_batch, y_batch) pairs, whose size is not known up front to share the steps"
        )
    if world is not None and validation is not None and isinstance(validation[0], data.StreamSource):
        # The mean over the ranks weights each rank's validation loss by its rows (and targets), read from y_val.
        raise TypeError(
            "validation_data: a distributed fit (comm=...) needs each rank's validation rows as (X_val, y_val) "
            "arrays, np.memmaps or .npy paths, got fastbp.data.Stream of batches"
        )
    fingerprint = None
    settings = {
        "batch_size": batch_size,
        "shuffle": bool(shuffle),
        "seed": seed,
        "early_stopping": bool(early_stopping),
        "patience": patience,
        "min_delta": min_delta,
        "restore_best": bool(restore_best),
        "clip_norm": clip_norm,
    }
    if path is not None or source is not None:
        fingerprint = _ckpt.fingerprint(model, loss, optimizer, lr_schedule, X, y, validation, settings)
    if world is not None:
        agreed = _dist_settings(settings, epochs, loss, optimizer, lr_schedule, (path, every, unit, source))
        fingerprint = world.agree(model, X, validation, agreed, fingerprint)
        state.rng = world.shuffler(seed)
        world.begin_local()
    if source is not None:
        assert fingerprint is not None
        _ckpt.restore(_ckpt.read(source), state, fingerprint, epochs, world)
    if world is not None:
        world.settle()  # every rank read the checkpoint, or all raise
        if source is None:
            world.broadcast_start(model, optimizer)
    rows = X.shape[0] if world is None else world.rows
    progress_ = Progress(epochs, rows, progress and (world is None or world.rank == 0))
    one_epoch = _Epoch(model, loss, optimizer, X, y, batch_size, clip_norm, progress_)
    if world is not None:
        one_epoch = world.epoch(one_epoch, batch_size)
    # A resumed run's bar starts where its checkpoint was.
    progress_.batch(state.position.epochs * one_epoch.n + min(state.position.batches * one_epoch.batch, one_epoch.n))
    saver = _ckpt.Saver(path, every, unit, fingerprint, one_epoch.n_batches, world)
    model.train()
    try:
        with defer_interrupts() as interrupted:
            try:
                _epochs(state, one_epoch, epochs, shuffle, validation, callbacks, progress_, interrupted, saver, world)
            except TrainingInterrupted:
                saver.save(state)  # the step it stopped after is whole: a resume continues from there
                raise
            saver.save(state)
    finally:
        progress_.close()
        if world is not None:
            one_epoch.close()  # type: ignore[attr-defined]
    monitor.restore(model)
    return state.history


def _dist_settings(settings: dict, epochs, loss, optimizer, lr_schedule, checkpointing) -> dict:
    """What every rank of a distributed fit must give alike (compared at its start, named as fit names them)."""
    path, every, unit, source = checkpointing
    return {
        **{k: _ckpt._jsonable(x) for k, x in settings.items() if k != "seed"},
        "seed": _ckpt._seed(settings["seed"]),
        "epochs": epochs,
        "loss": _ckpt._loss(loss),
        "optimizer": {"type": type(optimizer).__name__, **_ckpt._jsonable(optimizer.hyperparameters())},
        "lr_schedule": None if lr_schedule is None else type(lr_schedule).__name__,
        "checkpoint": path,
        "checkpoint_every": every,
        "checkpoint_unit": unit,
        "resume": source,
    }
