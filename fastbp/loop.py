"""The pieces of a training loop: minibatches, one step, accuracy counts, Ctrl-C.

Shared by :func:`fastbp.fit`, the :mod:`fastbp.sklearn` estimators and the
benchmarks, so that each times and runs the same step.
"""

from __future__ import annotations

import contextlib
import signal
import threading

import numpy as np

from .backend import get
from .data import ArraySource as Batches  # noqa: F401  (minibatches by index: fit, the estimators, benchmarks)
from .losses import BCEWithLogits, CrossEntropy, SoftmaxCrossEntropy
from .optim import clip_grad_norm


def forward_loss(model, loss, xb: np.ndarray, yb: np.ndarray) -> tuple[np.ndarray, float]:
    """The model's output for ``xb`` and the loss against ``yb``."""
    out = model.forward(xb)
    return out, loss.forward(out, yb)


def backward_update(model, loss, optimizer, params, clip_norm: float | None) -> None:
    """Backpropagate the last :func:`forward_loss`, clip the global gradient norm if asked, and step."""
    model.backward(loss.backward(), input_grad=False)
    if clip_norm is not None:
        clip_grad_norm(params, clip_norm)
    optimizer.step()


def is_classifier(loss) -> bool:
    """Whether ``loss`` trains a classifier (so accuracy means something)."""
    return isinstance(loss, (SoftmaxCrossEntropy, CrossEntropy, BCEWithLogits))


def count_correct(out: np.ndarray, y: np.ndarray, loss) -> int:
    """Correct predictions in a batch: ``out`` (n, k) against labels (n,) or targets (n, k)."""
    if isinstance(loss, BCEWithLogits):
        return int(((out > 0) == (y > 0.5)).all(axis=1).sum())
    if y.ndim == 1:  # the training hot path: counted by a kernel, no temporaries
        return int(get(loss.backend).count_hits(out, y))
    return int((out.argmax(axis=1) == y.argmax(axis=1)).sum())


@contextlib.contextmanager
def defer_interrupts():
    """Hold Ctrl-C until the current step has finished, so no update is half applied.

    Yields a function that says whether Ctrl-C was pressed; a second Ctrl-C
    stops waiting. A Ctrl-C still pending when the body ends normally is
    raised then, as a KeyboardInterrupt. Outside the main thread signals cannot be handled, and where
    SIGINT is ignored (``nohup``, a background job) it stays ignored; in both
    cases the function always says no.
    """
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if main else None
    if not main or previous is signal.SIG_IGN:
        yield lambda: False
        return
    pending = []

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
    # Reached only when the body ended normally: a Ctrl-C it did not act on is never swallowed.
    if pending:
        raise KeyboardInterrupt
