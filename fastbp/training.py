"""Training loop and batched inference: ``fit``, ``evaluate``, ``predict``, ``predict_proba``."""

from __future__ import annotations

import contextlib
import copy
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from . import _validate as v
from ._buffers import BufferPool
from .backend import get
from .losses import BCEWithLogits, CrossEntropy, Loss, SoftmaxCrossEntropy
from .model import Sequential
from .optim import Optimizer, clip_grad_norm
from .schedules import ReduceLROnPlateau


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss; the message says where."""


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
        return {k: getattr(self, k) for k in ("loss", "val_loss", "accuracy", "val_accuracy", "lr",
                                               "samples_per_sec", "best_epoch", "stopped_early")}


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


def _is_classifier(loss) -> bool:
    return isinstance(loss, (SoftmaxCrossEntropy, CrossEntropy, BCEWithLogits))


def _correct(out: np.ndarray, y: np.ndarray, loss) -> int:
    """Number of correct predictions in a batch (classification losses only)."""
    if isinstance(loss, BCEWithLogits):
        return int(((out > 0) == (y > 0.5)).all(axis=1).sum())
    if y.ndim == 1:  # the training hot path: counted by a kernel, no temporaries
        return int(get(loss.backend).count_hits(out, y))
    return int((out.argmax(axis=1) == y.argmax(axis=1)).sum())


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
    from .layers import Softmax
    from .ops import softmax

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
    # A private copy summing over each batch keeps the caller's loss and its buffers untouched.
    probe = copy.copy(loss)
    probe.reduction = "sum"
    probe._bufs = type(loss._bufs)()
    total, correct, n = 0.0, 0, X.shape[0]
    norm = 0.0
    for start in range(0, n, batch_size):
        xb, yb = X[start:start + batch_size], y[start:start + batch_size]
        out = model.predict(xb, batch_size=batch_size)
        total += probe.forward(out, yb)
        norm += _mean_norm(loss, out, yb)
        if _is_classifier(loss):
            correct += _correct(out, yb, loss)
    result = {"loss": total / norm}
    if _is_classifier(loss):
        result["accuracy"] = correct / n
    return result


def _mean_norm(loss, out, y) -> float:
    """What ``loss``'s mean reduction divides this batch's sum by."""
    if isinstance(loss, SoftmaxCrossEntropy) and loss.weight is not None and y.ndim == 1:
        return float(np.asarray(loss.weight, dtype=np.float64)[y].sum())
    if isinstance(loss, (SoftmaxCrossEntropy, CrossEntropy)):
        return float(out.shape[0])
    return float(out.size)


# -- Ctrl-C --------------------------------------------------------------------

@contextlib.contextmanager
def _defer_interrupts():
    """Hold Ctrl-C until the current step has finished, so no update is half applied."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    pending = []
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):
        if pending:  # a second Ctrl-C: stop waiting
            previous_handler = previous if callable(previous) else signal.default_int_handler
            previous_handler(signum, frame)
        pending.append(signum)

    signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: bool(pending)
    finally:
        signal.signal(signal.SIGINT, previous)


# -- fit -----------------------------------------------------------------------

def _progress_bar(total, enabled, desc):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    # disable=None: tqdm turns itself off when stderr is not a terminal.
    return tqdm(total=total, desc=desc, unit="sample", unit_scale=True, leave=False, disable=None)


def _all_finite(params) -> bool:
    return all(np.isfinite(p.data).all() for p in params)


class _Batches:
    """Minibatches gathered by index into buffers allocated once per batch size."""

    def __init__(self, X, y):
        self.X, self.y = X, y
        self._bufs = BufferPool()

    def gather(self, idx):
        m = idx.shape[0]
        xb = self._bufs.get("x", (m, self.X.shape[1]), self.X.dtype)
        yb = self._bufs.get("y", (m,) + self.y.shape[1:], self.y.dtype)
        # mode="raise" (the default) makes numpy buffer ``out`` in a temporary;
        # the indices come from a permutation of range(n), so "clip" never clips.
        np.take(self.X, idx, axis=0, out=xb, mode="clip")
        np.take(self.y, idx, axis=0, out=yb, mode="clip")
        return xb, yb


def _forward_loss(model, loss, xb, yb):
    out = model.forward(xb)
    return out, loss.forward(out, yb)


def _backward_update(model, loss, optimizer, params, clip_norm):
    model.backward(loss.backward(), input_grad=False)
    if clip_norm is not None:
        clip_grad_norm(params, clip_norm)
    optimizer.step()


def fit(model: Sequential, X, y, *, loss: Loss, optimizer: Optimizer, epochs: int = 10, batch_size: int = 32,
        shuffle: bool = True, seed=None, validation_data=None, validation_split: float = 0.0,
        early_stopping: bool = False, patience: int = 10, min_delta: float = 0.0, restore_best: bool = True,
        lr_schedule=None, clip_norm: float | None = None, callbacks=(), progress: bool = True) -> History:
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
    progress : show a tqdm bar (when tqdm is installed and stderr is a terminal)

    Returns
    -------
    History

    Raises
    ------
    NonFiniteLossError
        When a batch's loss is NaN or infinite; the model is left at its last finite
        parameters (those before the failing batch, or the start of the epoch if an
        update had already made them non-finite).
    KeyboardInterrupt
        On Ctrl-C, raised after the running step completes, so the model is consistent.
    """
    if not isinstance(model, Sequential):
        raise TypeError(f"model: expected a fastbp Sequential, got {type(model).__name__}")
    if not isinstance(loss, Loss):
        raise TypeError(f"loss: expected a fastbp Loss, got {type(loss).__name__}")
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"optimizer: expected a fastbp optimizer, got {type(optimizer).__name__}")
    epochs = v.positive_int(epochs, "epochs")
    batch_size = v.positive_int(batch_size, "batch_size")
    patience = v.positive_int(patience, "patience")
    validation_split = v.fraction(validation_split, "validation_split")
    X, y = _check_xy(model, X, y, loss)
    if validation_data is not None and validation_split:
        raise ValueError("validation_split: give either validation_data or validation_split, not both")
    if validation_split:
        n_val = int(round(X.shape[0] * validation_split))
        if n_val < 1 or n_val >= X.shape[0]:
            raise ValueError(f"validation_split: {validation_split} leaves no training or no validation rows "
                             f"of {X.shape[0]}")
        X, y, validation_data = X[:-n_val], y[:-n_val], (X[-n_val:], y[-n_val:])
    if validation_data is not None:
        try:
            X_val, y_val = validation_data
        except (TypeError, ValueError):
            raise ValueError("validation_data: expected a pair (X_val, y_val)") from None
        X_val, y_val = _check_xy(model, X_val, y_val, loss, "validation_data[0]", "validation_data[1]")

    n = X.shape[0]
    rng = np.random.default_rng(seed)
    params = model.parameters()
    classifier = _is_classifier(loss)
    full = min(batch_size, n)
    batches = _Batches(X, y)

    order = np.arange(n)
    history = History()
    best, best_state, bad_epochs = math.inf, None, 0
    model.train()
    with _defer_interrupts() as interrupted:
        for epoch in range(1, epochs + 1):
            if shuffle:
                rng.shuffle(order)
            safe_state = (model.state_dict(), optimizer.state_dict())  # once per epoch, for a NaN rollback
            bar = _progress_bar(n, progress, f"epoch {epoch}/{epochs}")
            t0 = time.perf_counter()
            total, correct = 0.0, 0
            for b, start in enumerate(range(0, n, full)):
                idx = order[start:start + full]
                xb, yb = batches.gather(idx)
                out, batch_loss = _forward_loss(model, loss, xb, yb)
                if not math.isfinite(batch_loss):
                    if bar is not None:
                        bar.close()
                    where = f"epoch {epoch}, batch {b + 1} (rows {start}..{start + idx.shape[0] - 1} of the epoch order)"
                    if not _all_finite(params):
                        model.load_state_dict(safe_state[0])
                        optimizer.load_state_dict(safe_state[1])
                        where += "; the parameters had become non-finite, so the model was restored to the start of the epoch"
                    raise NonFiniteLossError(f"loss became {batch_loss} at {where}. Lower the learning rate, "
                                             "clip gradients (clip_norm=...) or check the data for NaN/inf.")
                if classifier:
                    correct += _correct(out, yb, loss)
                _backward_update(model, loss, optimizer, params, clip_norm)
                total += batch_loss * idx.shape[0]
                if bar is not None:
                    bar.update(idx.shape[0])
                    if b % 20 == 0:
                        bar.set_postfix(loss=f"{batch_loss:.4f}", refresh=False)
                if interrupted():
                    if bar is not None:
                        bar.close()
                    raise KeyboardInterrupt(f"training interrupted after epoch {epoch}, batch {b + 1}; "
                                            "the model holds the weights after that batch")
            elapsed = time.perf_counter() - t0
            if bar is not None:
                bar.close()
            history.loss.append(total / n)
            history.samples_per_sec.append(n / elapsed if elapsed > 0 else float("inf"))
            history.lr.append(optimizer.lr)
            if classifier:
                history.accuracy.append(correct / n)
            logs = {"loss": history.loss[-1], "samples_per_sec": history.samples_per_sec[-1]}
            if validation_data is not None:
                ev = evaluate(model, X_val, y_val, loss=loss, batch_size=max(full, 1024))
                history.val_loss.append(ev["loss"])
                logs["val_loss"] = ev["loss"]
                if "accuracy" in ev:
                    history.val_accuracy.append(ev["accuracy"])
                    logs["val_accuracy"] = ev["accuracy"]
            if classifier:
                logs["accuracy"] = history.accuracy[-1]
            monitored = logs.get("val_loss", logs["loss"])
            if monitored < best - min_delta:
                best, bad_epochs, history.best_epoch = monitored, 0, epoch
                if early_stopping and restore_best:
                    best_state = model.state_dict()
            else:
                bad_epochs += 1
            if lr_schedule is not None:
                lr_schedule.step(monitored) if isinstance(lr_schedule, ReduceLROnPlateau) else lr_schedule.step()
            stop = any(bool(cb(epoch, logs, model)) for cb in callbacks)
            if progress and bar is None and sys.stderr.isatty():
                print(f"epoch {epoch}/{epochs} " + " ".join(f"{k}={val:.4g}" for k, val in logs.items()),
                      file=sys.stderr)
            if early_stopping and bad_epochs >= patience:
                history.stopped_early = True
                stop = True
            if stop:
                break
    if early_stopping and restore_best and best_state is not None:
        model.load_state_dict(best_state)
    return history
