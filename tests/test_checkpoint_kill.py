"""A training process killed with SIGKILL at random moments and resumed from its last checkpoint, again
and again, ends with the parameters and History (but for its timings) of a run never killed, bit for bit.

Each run is a child Python process (``CHILD`` below) training a 20-16-3 MLP with BatchNorm and
Dropout, a schedule and early stopping on validation rows, writing checkpoints and resuming
from them (``resume=True``). Its loss sleeps a little each step, so that kills land anywhere in
training: in a step, between steps, in validation, or while a checkpoint is being written. After
every kill the checkpoint must still read whole.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import fastbp
from fastbp import checkpoint as ck

pytestmark = pytest.mark.slow

CHILD = r'''
import json, sys, time
import numpy as np
import fastbp
from fastbp.schedules import ReduceLROnPlateau, StepLR

cfg = json.loads(sys.argv[1])
fastbp.set_num_threads(cfg["threads"])
dtype = np.dtype(cfg["dtype"])


class SlowLoss(fastbp.SoftmaxCrossEntropy):
    """Sleeps before each training step's loss: the process spends its time spread over the steps."""

    def forward(self, pred, target):
        time.sleep(cfg["sleep"])
        return super().forward(pred, target)


if cfg.get("block_write"):  # hang inside the n-th checkpoint write, after its bytes are out, until killed
    import fastbp.checkpoint as ck

    real, writes = ck.write_atomically, []

    def blocking(path, write):
        writes.append(path)

        def slow(fh):
            write(fh)
            if len(writes) == cfg["block_write"]:
                fh.flush()
                open(cfg["signal"], "w").close()
                time.sleep(600)

        real(path, slow)

    ck.write_atomically = blocking

X, y = fastbp.datasets.make_classification(300, 20, 3, seed=0)
rs = np.random.default_rng(5)
y = np.where(rs.random(300) < 0.1, rs.integers(0, 3, 300), y)  # noisy labels: early stopping ends the run
model = fastbp.Sequential(
    fastbp.Linear(20, 16, seed=0, dtype=dtype),
    fastbp.BatchNorm1d(16, dtype=dtype),
    fastbp.ReLU(),
    fastbp.Dropout(0.2, seed=3),
    fastbp.Linear(16, 3, seed=1, dtype=dtype),
)
if cfg["optimizer"] == "sgd":
    opt = fastbp.SGD(model.parameters(), lr=0.01, momentum=0.9)
    schedule = StepLR(opt, 4, 0.7)
else:
    opt = fastbp.Adam(model.parameters(), lr=2e-3)
    schedule = ReduceLROnPlateau(opt, patience=1, factor=0.5)
history = fastbp.fit(
    model, X, y, loss=SlowLoss(), optimizer=opt, epochs=40, batch_size=16, seed=0, validation_split=0.2,
    early_stopping=True, patience=3, lr_schedule=schedule, progress=False,
    checkpoint=cfg.get("checkpoint"), checkpoint_every=cfg.get("every", 1), checkpoint_unit=cfg.get("unit", "epoch"),
    resume=True if cfg.get("checkpoint") else None,
)
arrays = {"param/" + k: a for k, a in model.state_dict().items()}
arrays["history"] = np.array(json.dumps(history.as_dict()))
fastbp.io.write_atomically(cfg["result"], lambda fh: np.savez(fh, **arrays))
'''


def start(tmp_path, cfg):
    script = tmp_path / "child.py"
    if not script.exists():
        script.write_text(CHILD)
    cfg = {"threads": fastbp.get_num_threads(), "sleep": 0.0, **cfg}
    return subprocess.Popen(
        [sys.executable, str(script), json.dumps(cfg)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish(proc, timeout=120):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return out


def result(path):
    with np.load(path) as f:
        params = {k: f[k] for k in f.files if k.startswith("param/")}
        history = json.loads(str(f["history"][()]))
    return params, history


def assert_same_result(a, b):
    (pa, ha), (pb, hb) = a, b
    assert pa.keys() == pb.keys()
    for k in pa:
        assert np.array_equal(pa[k], pb[k]), k
    assert len(ha.pop("samples_per_sec")) == len(hb.pop("samples_per_sec"))
    assert ha == hb


def identity(path):
    """What changes when a checkpoint is replaced (write_atomically renames a new file over it)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


def wait_for_new_checkpoint(proc, path, before, timeout=60):
    """Until this process has written a checkpoint (True), or it ended (False)."""
    deadline = time.monotonic() + timeout
    while identity(path) == before:
        if proc.poll() is not None:
            return False
        assert time.monotonic() < deadline, "no checkpoint written"
        time.sleep(0.002)
    return True


def kill_and_resume(tmp_path, cfg, kills, seed, step_seconds):
    """Run ``cfg`` with checkpoints, SIGKILL it ``kills`` times at random moments, then let it finish."""
    rs = random.Random(seed)
    path = tmp_path / "run.ckpt"
    cfg = {**cfg, "checkpoint": str(path), "result": str(tmp_path / "resumed.npz"), "sleep": step_seconds}
    killed, positions = 0, []
    while killed < kills:
        before = identity(path)
        proc = start(tmp_path, cfg)
        if not wait_for_new_checkpoint(proc, path, before):
            finish(proc)  # the run ended before it could be killed again
            break
        # Anywhere in the next epoch or so (15 steps): in a step, in validation, in a checkpoint's write.
        time.sleep(rs.uniform(0, 16 * step_seconds))
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        if proc.returncode == 0:
            break
        assert proc.returncode == -signal.SIGKILL
        killed += 1
        positions.append(ck.read(path).position.key)  # the checkpoint a kill leaves is whole
    else:
        finish(start(tmp_path, cfg))
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]  # killed writes' files cleaned up
    return result(tmp_path / "resumed.npz"), killed, positions


@pytest.mark.parametrize(
    "cfg",
    [
        {"dtype": "float32", "optimizer": "sgd", "unit": "epoch", "every": 1},
        {"dtype": "float64", "optimizer": "adam", "unit": "step", "every": 1},
    ],
    ids=["float32-sgd-epochs", "float64-adam-steps"],
)
def test_a_run_killed_at_random_moments_and_resumed_ends_bit_identical(tmp_path, cfg):
    reference = start(tmp_path, {**cfg, "result": str(tmp_path / "reference.npz")})
    finish(reference)
    expected = result(tmp_path / "reference.npz")
    assert expected[1]["stopped_early"] and len(set(expected[1]["lr"])) > 1  # early stopping and schedule acted
    got, killed, positions = kill_and_resume(tmp_path, cfg, kills=4, seed=sum(map(ord, str(cfg))), step_seconds=0.004)
    assert killed == 4, positions
    assert positions == sorted(positions) and len(set(positions)) == len(positions)  # each run got further
    assert_same_result(got, expected)


def test_a_kill_during_a_checkpoint_write_leaves_the_previous_checkpoint(tmp_path):
    cfg = {"dtype": "float64", "optimizer": "sgd", "result": str(tmp_path / "resumed.npz")}
    reference = start(tmp_path, {**cfg, "result": str(tmp_path / "reference.npz")})
    path = tmp_path / "run.ckpt"
    signal_file = tmp_path / "writing"
    proc = start(tmp_path, {**cfg, "checkpoint": str(path), "block_write": 3, "signal": str(signal_file)})
    deadline = time.monotonic() + 60
    while not signal_file.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)  # the third checkpoint is written to its temporary file, not yet renamed
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]  # the killed write's file
    assert ck.read(path).position.key == (2, 0)  # the second checkpoint, whole
    finish(start(tmp_path, {**cfg, "checkpoint": str(path)}))
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]  # removed by the next write
    finish(reference)
    assert_same_result(result(tmp_path / "resumed.npz"), result(tmp_path / "reference.npz"))
