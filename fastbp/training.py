"""Training loop and batched inference: ``fit``, ``evaluate``, ``predict``, ``predict_proba``."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from . import _validate as v
from . import checkpoint as _ckpt
from .checkpoint import Position, TrainingState
from .layers import Softmax
from .loop import Batches, backward_update, count_correct, defer_interrupts, forward_loss, is_classifier
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
    batches, batches_per_epoch : steps done in that epoch, and in a whole one
    history : :class:`History` of the epochs that completed
    """

    def __init__(self, epoch: int, batches: int, batches_per_epoch: int, history):
        self.epoch, self.batches, self.batches_per_epoch, self.history = epoch, batches, batches_per_epoch, history
        super().__init__(
            f"training interrupted in epoch {epoch} after batch {batches} of {batches_per_epoch}; "
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
    X = v.batch(X, name_x, dtype=model.dtype, width=_input_width(model), contiguous=True)
    y = np.asarray(y)
    if y.ndim == 0 or y.shape[0] != X.shape[0]:
        raise ValueError(f"{name_y}: expected {X.shape[0]} rows to match {name_x}, got shape {y.shape}")
    if isinstance(loss, (SoftmaxCrossEntropy, CrossEntropy)) and y.ndim == 1:
        y = v.labels(y, name_y, X.shape[0], _output_width(model))
    else:
        y = v.float_array(y, name_y, ndim=2, dtype=model.dtype)
    return X, y


def _output_width(model: Sequential):
    for layer in reversed(model.layers):
        if hasattr(layer, "out_features"):
            return layer.out_features
    return _input_width(model)


# -- inference -----------------------------------------------------------------


def predict(model: Sequential, X, *, batch_size: int = 4096) -> np.ndarray:
    """Model outputs for ``X`` (n, in), ``batch_size`` rows at a time (thread-safe)."""
    return model.predict(X, batch_size=batch_size)


def predict_proba(model: Sequential, X, *, batch_size: int = 4096) -> np.ndarray:
    """Class probabilities: softmax of the outputs row by row (unless the model ends in Softmax).

    Returns
    -------
    (n, k) array of the model's dtype, rows summing to 1.
    """
    out = model.predict(X, batch_size=batch_size)
    return out if isinstance(model.layers[-1], Softmax) else softmax(out)


def evaluate(model: Sequential, X, y, *, loss: Loss, batch_size: int = 4096) -> dict:
    """Mean loss (and accuracy for classification losses) over ``X``, in batches.

    Returns
    -------
    dict with ``"loss"`` and, for classification losses, ``"accuracy"``.
    """
    batch_size = v.positive_int(batch_size, "batch_size")
    X, y = _check_xy(model, X, y, loss)
    probe = loss.clone(reduction="sum")  # its own buffers: the caller's loss is untouched
    total, correct, n = 0.0, 0, X.shape[0]
    norm = 0.0
    for start in range(0, n, batch_size):
        xb, yb = X[start : start + batch_size], y[start : start + batch_size]
        out = model.predict(xb, batch_size=batch_size)
        total += probe.forward(out, yb)
        norm += _mean_norm(loss, out, yb)
        if is_classifier(loss):
            correct += count_correct(out, yb, loss)
    result = {"loss": total / norm}
    if is_classifier(loss):
        result["accuracy"] = correct / n
    return result


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


def _training_and_validation(model, X, y, loss, validation_data, validation_split):
    """Checked ``(X, y)`` to train on and ``(X_val, y_val)`` or None, split off the end of the rows if asked."""
    validation_split = v.fraction(validation_split, "validation_split")
    X, y = _check_xy(model, X, y, loss)
    if validation_data is not None and validation_split:
        raise ValueError("validation_split: give either validation_data or validation_split, not both")
    if validation_split:
        n_val = int(round(X.shape[0] * validation_split))
        if n_val < 1 or n_val >= X.shape[0]:
            raise ValueError(
                f"validation_split: {validation_split} leaves no training or no validation rows of {X.shape[0]}"
            )
        return X[:-n_val], y[:-n_val], (X[-n_val:], y[-n_val:])
    if validation_data is None:
        return X, y, None
    try:
        X_val, y_val = validation_data
    except (TypeError, ValueError):
        raise ValueError("validation_data: expected a pair (X_val, y_val)") from None
    return X, y, _check_xy(model, X_val, y_val, loss, "validation_data[0]", "validation_data[1]")


class _Epoch:
    """One pass over the training rows in a given order, with the NaN rollback and Ctrl-C checks."""

    def __init__(self, model, loss, optimizer, X, y, batch_size, clip_norm, progress):
        self.model, self.loss, self.optimizer = model, loss, optimizer
        self.params = model.parameters()
        self.batches = Batches(X, y)
        self.n, self.batch = X.shape[0], min(batch_size, X.shape[0])
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
        safe_state = (self.model.state_dict(), self.optimizer.state_dict())  # for a NaN rollback
        for b in range(position.batches, self.n_batches):
            t0 = time.perf_counter()
            start = b * self.batch
            idx = order[start : start + self.batch]
            xb, yb = self.batches.gather(idx)
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
        if not all(np.isfinite(p.data).all() for p in self.params):
            # The last update made them non-finite: no later forward would tell.
            self.model.load_state_dict(safe_state[0])
            self.optimizer.load_state_dict(safe_state[1])
            raise NonFiniteLossError(
                f"parameters became non-finite in the last update of epoch {epoch} (batch {self.n_batches}); "
                "the model was restored to the start of the epoch. Lower the learning rate, "
                "clip gradients (clip_norm=...) or check the data for NaN/inf."
            )
        elapsed = position.elapsed
        logs = {"loss": position.total / self.n, "samples_per_sec": self.n / elapsed if elapsed > 0 else float("inf")}
        if self.classifier:
            logs["accuracy"] = position.correct / self.n
        return logs

    def _fail(self, batch_loss, epoch, b, start, m, safe_state):
        where = f"epoch {epoch}, batch {b + 1} (rows {start}..{start + m - 1} of the epoch order)"
        if not all(np.isfinite(p.data).all() for p in self.params):
            self.model.load_state_dict(safe_state[0])
            self.optimizer.load_state_dict(safe_state[1])
            where += "; the parameters had become non-finite, so the model was restored to the start of the epoch"
        raise NonFiniteLossError(
            f"loss became {batch_loss} at {where}. Lower the learning rate, "
            "clip gradients (clip_norm=...) or check the data for NaN/inf."
        )


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


def _validation_logs(model, loss, validation, batch: int) -> dict:
    ev = evaluate(model, *validation, loss=loss, batch_size=max(batch, 1024))
    logs = {"val_loss": ev["loss"]}
    if "accuracy" in ev:
        logs["val_accuracy"] = ev["accuracy"]
    return logs


def _epochs(
    state: TrainingState, one_epoch: _Epoch, epochs, shuffle, validation, callbacks, progress_, interrupted, saver
):
    """Train from ``state.position`` until ``epochs``, early stopping or a callback says stop."""
    model, optimizer, lr_schedule, history = state.model, state.optimizer, state.lr_schedule, state.history
    if history.stopped_early:  # resumed from the end of a run early stopping ended: nothing is left to do
        return
    for epoch in range(state.position.epochs + 1, epochs + 1):
        if shuffle and state.position.batches == 0:  # else resumed mid-epoch, in the order the checkpoint saved
            state.rng.shuffle(state.order)
        logs = one_epoch.run(epoch, state.order, interrupted, history, state.position, lambda: saver.after_step(state))
        if validation is not None:
            logs.update(_validation_logs(model, one_epoch.loss, validation, one_epoch.batch))
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
        state.position = Position(epochs=epoch)
        saver.after_epoch(state)
        progress_.epoch(epoch, logs, last=stop)
        if interrupted():  # pressed during validation or callbacks: the epoch is whole
            n = one_epoch.n_batches
            raise TrainingInterrupted(epoch, n, n, history)
        if stop:
            break


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
) -> History:
    """Train ``model`` on ``(X, y)`` with minibatch gradient descent.

    Parameters
    ----------
    model : Sequential
    X : (n, in) float array
    y : (n,) integer labels for classification losses, or (n, out) targets
    loss : a :class:`~fastbp.losses.Loss` (its reduction should be "mean")
    optimizer : an optimizer over ``model.parameters()``
    epochs, batch_size : int; the last batch of an epoch may be smaller
    shuffle, seed : a fresh permutation each epoch from ``numpy.random.default_rng(seed)``
    validation_data : (X_val, y_val), or use ``validation_split`` (the last fraction of the rows)
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
    X, y, validation = _training_and_validation(model, X, y, loss, validation_data, validation_split)
    monitor = _Monitor(early_stopping, patience, min_delta, restore_best)
    state = TrainingState(
        model, optimizer, lr_schedule, np.random.default_rng(seed), np.arange(X.shape[0]), monitor, History()
    )
    fingerprint = None
    if path is not None or source is not None:
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
        fingerprint = _ckpt.fingerprint(model, loss, optimizer, lr_schedule, X, y, validation, settings)
        if source is not None:
            _ckpt.restore(_ckpt.read(source), state, fingerprint, epochs)
    progress_ = Progress(epochs, X.shape[0], progress)
    one_epoch = _Epoch(model, loss, optimizer, X, y, batch_size, clip_norm, progress_)
    # A resumed run's bar starts where its checkpoint was.
    progress_.batch(state.position.epochs * one_epoch.n + min(state.position.batches * one_epoch.batch, one_epoch.n))
    saver = _ckpt.Saver(path, every, unit, fingerprint, one_epoch.n_batches)
    model.train()
    try:
        with defer_interrupts() as interrupted:
            try:
                _epochs(state, one_epoch, epochs, shuffle, validation, callbacks, progress_, interrupted, saver)
            except TrainingInterrupted:
                saver.save(state)  # the step it stopped after is whole: a resume continues from there
                raise
            saver.save(state)
    finally:
        progress_.close()
    monitor.restore(model)
    return state.history
