"""What ``fit`` shows while training: one bar on a terminal, throttled epoch lines elsewhere."""

import io

import numpy as np
import pytest

import fastbp
from fastbp.progress import Progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def _fit(progress, epochs=4):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 3)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    model = fastbp.Sequential(fastbp.Linear(3, 2, seed=0))
    opt = fastbp.SGD(model.parameters(), lr=0.1)
    fastbp.fit(model, X, y, loss=fastbp.SoftmaxCrossEntropy(), optimizer=opt, epochs=epochs, batch_size=16, seed=0)
    return model


def test_one_bar_over_the_whole_run_on_a_terminal(monkeypatch):
    tqdm = pytest.importorskip("tqdm.auto")
    made = []
    real = tqdm.tqdm

    def recording(*a, **kw):
        made.append(kw)
        return real(*a, **kw)

    monkeypatch.setattr(tqdm, "tqdm", recording)
    stream = Terminal()
    p = Progress(4, 64, True, stream=stream)
    for epoch in range(1, 5):
        for _ in range(4):
            p.batch(16)
        p.epoch(epoch, {"loss": 0.5, "val_loss": 0.25, "val_accuracy": 0.75})
    assert p.bar.n == 4 * 64
    p.close()
    assert len(made) == 1 and made[0]["total"] == 4 * 64
    assert "val_loss 0.25" in stream.getvalue() and "epoch 4/4" in stream.getvalue()


def test_lines_elsewhere_first_last_and_at_most_every_few_seconds(monkeypatch):
    stream = io.StringIO()
    clock = iter([0.0, 1.0, 2.0, 7.0, 8.0, 9.0])
    monkeypatch.setattr("fastbp.progress.time.monotonic", lambda: next(clock))
    p = Progress(6, 10, True, stream=stream, every=5.0)
    for epoch in range(1, 7):
        p.epoch(epoch, {"loss": 1.0 / epoch, "samples_per_sec": 1000.0})
    lines = stream.getvalue().splitlines()
    assert [ln.split(":")[0] for ln in lines] == ["epoch 1/6", "epoch 4/6", "epoch 6/6"]
    assert lines[0] == "epoch 1/6: loss 1, 1,000 samples/s"


def test_early_stop_prints_its_last_epoch_and_disabled_prints_nothing():
    stream = io.StringIO()
    p = Progress(100, 10, True, stream=stream, every=1e9)
    p.epoch(1, {"loss": 1.0})
    p.epoch(2, {"loss": 0.5}, last=True)
    assert stream.getvalue().splitlines()[-1].startswith("epoch 2/100")
    quiet = io.StringIO()
    Progress(3, 10, False, stream=quiet).epoch(3, {"loss": 1.0})
    assert quiet.getvalue() == ""


def test_fit_without_a_terminal_writes_epoch_lines_to_stderr(capsys):
    _fit(True)
    err = capsys.readouterr().err
    assert err.splitlines()[0].startswith("epoch 1/4: loss ") and "\r" not in err
