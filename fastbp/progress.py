"""What :func:`fastbp.fit` shows while it trains.

On a terminal: one tqdm bar over the whole run (every sample of every epoch),
with the last epoch's loss and validation metrics as its postfix. Elsewhere (a
log file, a pipe, CI, or no tqdm installed): one line per epoch, at most every
few seconds, plus the first and the last epoch, so that logs show progress
without drowning in it.
"""

from __future__ import annotations

import sys
import time

# Shown in this order, under these short names; anything else in the logs is left out.
_SHOWN = {"loss": "loss", "accuracy": "acc", "val_loss": "val_loss", "val_accuracy": "val_acc"}


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def format_logs(logs: dict) -> str:
    """``"loss 0.1234, acc 0.9612, val_loss ..."``: the metrics of an epoch's logs, 4 significant digits."""
    return ", ".join(f"{short} {logs[k]:.4g}" for k, short in _SHOWN.items() if k in logs)


class Progress:
    """Progress of a run of ``epochs`` epochs of ``n_samples`` samples each.

    Parameters
    ----------
    epochs, n_samples : int
    enabled : False shows nothing
    stream : where to write (default ``sys.stderr``)
    every : seconds between two epoch lines when there is no bar
    """

    def __init__(self, epochs: int, n_samples: int, enabled: bool, *, stream=None, every: float = 5.0):
        self.epochs, self.every = epochs, every
        self.stream = sys.stderr if stream is None else stream
        self.bar = None
        self.lines = False
        self._last_line = -float("inf")
        if not enabled:
            return
        if _is_terminal(self.stream):
            try:
                from tqdm.auto import tqdm  # optional: the ``progress`` extra
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(
                    total=epochs * n_samples,
                    desc=f"epoch 1/{epochs}",
                    unit="sample",
                    unit_scale=True,
                    leave=False,
                    file=self.stream,
                    dynamic_ncols=True,
                )
                return
        self.lines = True

    def batch(self, m: int) -> None:
        """``m`` more samples trained on."""
        if self.bar is not None:
            self.bar.update(m)

    def epoch(self, epoch: int, logs: dict, *, last: bool = False) -> None:
        """Epoch ``epoch`` (from 1) ended with these logs; ``last`` when training stops after it."""
        if self.bar is not None:
            if epoch < self.epochs:
                self.bar.set_description(f"epoch {epoch + 1}/{self.epochs}", refresh=False)
            self.bar.set_postfix_str(format_logs(logs))
        elif self.lines:
            now = time.monotonic()
            if last or epoch in (1, self.epochs) or now - self._last_line >= self.every:
                self._last_line = now
                rate = logs.get("samples_per_sec")
                speed = f", {rate:,.0f} samples/s" if rate is not None else ""
                print(f"epoch {epoch}/{self.epochs}: {format_logs(logs)}{speed}", file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
