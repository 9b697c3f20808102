"""Checkpoints of fit: resuming ends bit-identical to a run never stopped; what is written when; refused resumes.

A crash is simulated in-process by a loss that raises at a chosen step (the process-level
SIGKILL test is tests/test_checkpoint_kill.py).
"""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest

import fastbp
from fastbp import checkpoint as ck
from fastbp.schedules import ConstantLR, CosineLR, ReduceLROnPlateau, StepLR


class Crash(Exception):
    """Stands for a process killed at some step."""


class CrashingLoss(fastbp.SoftmaxCrossEntropy):
    """Softmax cross-entropy whose ``crash_at``-th training forward raises Crash.

    Its counters are private attributes, which a checkpoint's fingerprint of the loss leaves out;
    the copy that fit's validation makes never crashes.
    """

    def __init__(self, crash_at=None):
        super().__init__()
        self._crash_at, self._calls = crash_at, 0

    def forward(self, pred, target):
        self._calls += 1
        if self._calls == self._crash_at:
            raise Crash
        return super().forward(pred, target)

    def clone(self, **changes):
        twin = super().clone(**changes)
        twin._crash_at = None
        return twin


def data(rows=300, noise=0.1):
    """Three classes, a tenth of the labels redrawn at random: early stopping ends runs after 10-25 epochs."""
    X, y = fastbp.datasets.make_classification(rows, 20, 3, seed=0)
    rs = np.random.default_rng(5)
    flip = rs.random(rows) < noise
    return X, np.where(flip, rs.integers(0, 3, rows), y)


def build(dtype=np.float32, optimizer="sgd", p=0.2):
    """20-16-3 with BatchNorm and Dropout (buffers that move every step), its optimizer and a schedule."""
    model = fastbp.Sequential(
        fastbp.Linear(20, 16, seed=0, dtype=dtype),
        fastbp.BatchNorm1d(16, dtype=dtype),
        fastbp.ReLU(),
        fastbp.Dropout(p, seed=3),
        fastbp.Linear(16, 3, seed=1, dtype=dtype),
    )
    if optimizer == "sgd":
        opt = fastbp.SGD(model.parameters(), lr=0.01, momentum=0.9)
        return model, opt, StepLR(opt, 4, 0.7)
    opt = fastbp.Adam(model.parameters(), lr=2e-3)
    return model, opt, ReduceLROnPlateau(opt, patience=1, factor=0.5)


X, Y = data()
SETTINGS = dict(epochs=40, batch_size=16, seed=0, validation_split=0.2, early_stopping=True, patience=3, progress=False)


def train(dtype=np.float32, optimizer="sgd", loss=None, **kw):
    model, opt, schedule = build(dtype, optimizer)
    args = {**SETTINGS, "lr_schedule": schedule, **kw}
    history = fastbp.fit(model, X, Y, loss=loss or CrashingLoss(), optimizer=opt, **args)
    return model, history


def assert_same_run(a, b):
    """Same parameters and buffers bit for bit, and the same History but for the timings."""
    (model_a, hist_a), (model_b, hist_b) = a, b
    sa, sb = model_a.state_dict(), model_b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert np.array_equal(sa[k], sb[k]), k
    da, db = hist_a.as_dict(), hist_b.as_dict()
    assert len(da.pop("samples_per_sec")) == len(db.pop("samples_per_sec"))
    assert da == db


def crash_and_resume(path, crashes, seed, **kw):
    """Train with checkpoints, crashing at random steps (after the first checkpoint), until a run completes."""
    rs = np.random.default_rng(seed)
    crashed = 0
    while True:
        try:
            loss = CrashingLoss(int(rs.integers(2, 60)) if crashed < crashes else None)
            return train(loss=loss, checkpoint=path, resume=True, **kw), crashed
        except Crash:
            crashed += 1


@pytest.mark.parametrize(
    "dtype, optimizer, unit, every",
    [
        (np.float32, "sgd", "epoch", 1),
        (np.float32, "adam", "step", 7),
        (np.float64, "sgd", "step", 1),
        (np.float64, "adam", "epoch", 2),
    ],
)
def test_a_run_crashed_and_resumed_many_times_ends_bit_identical(tmp_path, dtype, optimizer, unit, every):
    reference = train(dtype, optimizer)
    assert reference[1].stopped_early and reference[1].best_epoch < reference[1].epochs  # best weights restored
    assert len(set(reference[1].lr)) > 1  # the schedule acted
    kw = dict(dtype=dtype, optimizer=optimizer, checkpoint_unit=unit, checkpoint_every=every)
    resumed, crashed = crash_and_resume(tmp_path / "run.ckpt", 6, seed=1, **kw)
    assert crashed == 6
    assert_same_run(resumed, reference)


def test_checkpoints_do_not_change_the_run(tmp_path):
    assert_same_run(train(checkpoint=tmp_path / "c", checkpoint_unit="step"), train())


def test_a_checkpoint_can_be_lost_to_a_crash_and_an_older_one_resumes(tmp_path):
    """Resuming from any checkpoint of the run, not only the last, ends the same."""
    path = tmp_path / "c.npz"
    kept = []
    real_write = ck.write

    def keep(p, state, fp):
        real_write(p, state, fp)
        kept.append(open(p, "rb").read())

    reference = train()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ck, "write", keep)
        train(checkpoint=path)
    assert len(kept) == reference[1].epochs
    path.write_bytes(kept[len(kept) // 3])
    assert_same_run(train(resume=path), reference)


def test_what_a_mid_epoch_checkpoint_holds(tmp_path):
    path = tmp_path / "c"
    with pytest.raises(Crash):
        train(loss=CrashingLoss(crash_at=15 + 10), checkpoint=path, checkpoint_unit="step", checkpoint_every=3)
    c = ck.read(path)
    # 15 batches an epoch: steps 1..24 ran; the last multiple of 3 is step 24 = epoch 2, batch 9
    assert (c.position.epochs, c.position.batches) == (1, 9)
    assert c.position.total > 0 and 0 < c.position.correct <= 9 * 16
    assert sorted(c.order.tolist()) == list(range(240)) and c.order.tolist() != list(range(240))
    assert c.optimizer_state["t"] == 24 and c.optimizer_state["type"] == "SGD"
    assert c.model_state["3.step"][0] == 24  # Dropout's mask counter
    assert c.model_state["1.num_batches_tracked"][0] == 24
    assert c.schedule_state["type"] == "StepLR" and c.schedule_state["epoch"] == 1
    assert c.rng_state["bit_generator"] == "PCG64"
    assert len(c.history["loss"]) == 1 and c.monitor_state["best_state"] is not None
    assert c.monitor_state["best"] == c.history["val_loss"][0]


def test_when_checkpoints_are_written(tmp_path, monkeypatch):
    written = []
    real_write = ck.write
    monkeypatch.setattr(
        ck, "write", lambda p, state, fp: (written.append(state.position.key), real_write(p, state, fp))
    )
    train(checkpoint=tmp_path / "a", checkpoint_every=2, epochs=5, early_stopping=False)
    assert written == [(2, 0), (4, 0), (5, 0)]  # every 2 epochs, and at the end
    written.clear()
    train(checkpoint=tmp_path / "b", checkpoint_unit="step", checkpoint_every=10, epochs=2, early_stopping=False)
    # 15 steps an epoch: after steps 10, 20 and 30 (the last one, before its epoch's end), and at the end
    assert written == [(0, 10), (1, 5), (1, 15), (2, 0)]


def test_extending_a_finished_run_matches_a_longer_one(tmp_path):
    path = tmp_path / "c"
    short = dict(early_stopping=False, epochs=4)
    train(checkpoint=path, **short)
    assert ck.read(path).position.key == (4, 0)
    assert_same_run(train(resume=path, early_stopping=False, epochs=9), train(early_stopping=False, epochs=9))


def test_resuming_a_run_that_early_stopping_ended_trains_nothing(tmp_path):
    path = tmp_path / "c"
    reference = train(checkpoint=path)
    assert reference[1].stopped_early and ck.read(path).history == json.loads(json.dumps(reference[1].as_dict()))
    loss = CrashingLoss(crash_at=1)  # any step would raise
    assert_same_run(train(loss=loss, resume=path, checkpoint=path, epochs=60), reference)


def test_ctrl_c_writes_a_checkpoint_that_resumes_exactly(tmp_path, default_sigint):
    class InterruptAt(CrashingLoss):
        def forward(self, pred, target):
            self._calls += 1
            if self._calls == self._crash_at:
                os.kill(os.getpid(), signal.SIGINT)  # arrives mid-step: fit stops after it
            return fastbp.SoftmaxCrossEntropy.forward(self, pred, target)

    path = tmp_path / "c"
    with pytest.raises(fastbp.TrainingInterrupted) as info:
        train(loss=InterruptAt(crash_at=37), checkpoint=path)  # checkpoints every epoch: none at step 37
    assert (info.value.epoch, info.value.batches) == (3, 7)
    assert ck.read(path).position.key == (2, 7)
    assert_same_run(train(loss=InterruptAt(), resume=path), train())


def test_a_failing_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "c"
    real = ck.write_atomically
    calls = []

    def failing(p, write):
        calls.append(p)

        def half(fh):
            write(fh)
            if len(calls) == 3:
                raise OSError(28, "No space left on device")

        real(p, half)

    monkeypatch.setattr(ck, "write_atomically", failing)
    with pytest.raises(OSError, match="No space"):
        train(checkpoint=path)
    assert ck.read(path).position.key == (2, 0)
    assert os.listdir(tmp_path) == ["c"]  # the temporary file of the failed write is gone


def test_non_finite_parameters_are_never_checkpointed(tmp_path):
    model, opt, schedule = build()
    state = ck.TrainingState(model, opt, schedule, np.random.default_rng(0), np.arange(4), None, None)
    model.parameters()[0].data[0, 0] = np.nan
    ck.Saver(str(tmp_path / "c"), 1, "epoch", {}, 1).save(state)
    assert not (tmp_path / "c").exists()


def test_a_diverging_run_keeps_its_last_good_checkpoint(tmp_path):
    class NanAt(CrashingLoss):
        def forward(self, pred, target):
            value = super().forward(pred, target)
            return float("nan") if self._calls >= 50 else value

    path = tmp_path / "c"
    with pytest.raises(fastbp.NonFiniteLossError):
        train(loss=NanAt(), checkpoint=path, checkpoint_unit="step", checkpoint_every=4)
    assert ck.read(path).position.key == (3, 3)  # step 48, the last multiple of 4 before step 50


def test_resume_true_starts_afresh_then_continues(tmp_path):
    path = tmp_path / "c"
    assert_same_run(
        train(checkpoint=path, resume=True, epochs=3, early_stopping=False), train(epochs=3, early_stopping=False)
    )
    assert ck.read(path).position.key == (3, 0)
    assert_same_run(
        train(checkpoint=path, resume=True, epochs=6, early_stopping=False), train(epochs=6, early_stopping=False)
    )


@pytest.mark.parametrize(
    "seed", [lambda: np.random.default_rng(11), lambda: np.random.Generator(np.random.MT19937(4)), lambda: None]
)
def test_generator_seeds_resume_from_the_saved_generator_state(tmp_path, seed):
    path = tmp_path / "c"
    with pytest.raises(Crash):
        train(loss=CrashingLoss(40), checkpoint=path, seed=seed(), epochs=6)
    resumed = train(resume=path, seed=seed(), epochs=6)
    if seed() is not None:  # with fresh entropy there is no uninterrupted twin to compare with
        assert_same_run(resumed, train(seed=seed(), epochs=6))


def test_shuffle_false_resumes(tmp_path):
    path = tmp_path / "c"
    with pytest.raises(Crash):
        train(loss=CrashingLoss(40), checkpoint=path, checkpoint_unit="step", shuffle=False)
    assert_same_run(train(resume=path, shuffle=False), train(shuffle=False))


# -- refused resumes ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("ck") / "c"
    with pytest.raises(Crash):
        train(loss=CrashingLoss(40), checkpoint=path, checkpoint_unit="step")
    return path


def resume_with(path, dtype=np.float32, optimizer="sgd", p=0.2, schedule=True, loss=None, data=(X, Y), **kw):
    model, opt, sched = build(dtype, optimizer, p)
    args = {**SETTINGS, "lr_schedule": sched if schedule else None, **kw}
    return fastbp.fit(model, *data, loss=loss or CrashingLoss(), optimizer=opt, resume=path, **args)


def smoothed():
    loss = CrashingLoss()
    loss.label_smoothing = 0.1
    return loss


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(batch_size=32), "batch_size: the checkpoint .* batch_size=16, got 32"),
        (dict(seed=1), "seed: .* seed=0, got 1"),
        (dict(shuffle=False), "shuffle: .*shuffle=True, got False"),
        (dict(patience=5), "patience: "),
        (dict(early_stopping=False), "early_stopping: "),
        (dict(clip_norm=1.0), "clip_norm: "),
        (dict(validation_split=0.25), "X, y: the training data differ"),
        (
            dict(data=(X[:240], Y[:240]), validation_split=0.0, validation_data=(X[240:], (Y[240:] + 1) % 3)),
            "validation_data, validation_split: the validation rows differ",
        ),
        (dict(loss=fastbp.CrossEntropy()), "loss: .*with loss type CrashingLoss, got CrossEntropy"),
        (dict(loss=smoothed()), "loss: .*'label_smoothing': 0.0.*, got .*'label_smoothing': 0.1"),
        (dict(optimizer="adam"), "optimizer: .*with optimizer type SGD, got Adam"),
        (dict(schedule=False), "lr_schedule: .*'StepLR', got None"),
        (dict(p=0.3), r"model: layers\[3\] is Dropout\(p=0.3\), in the checkpoint .* it is Dropout\(p=0.2\)"),
        (dict(dtype=np.float64), r"model: layers\[0\] is Linear\(.*float64\)"),
        (dict(data=(X, (Y + 1) % 3)), "X, y: the training data differ"),
        (dict(data=(X[:280], Y[:280])), "X, y: .*240 rows x 20 features, now 224 rows"),
        (dict(epochs=2), "epochs: .* has trained 2 epochs and 9 batches of epoch 3; expected epochs >= 3"),
    ],
)
def test_a_resume_with_other_arguments_is_refused_naming_them(saved, change, message):
    with pytest.raises(ValueError, match=message):
        resume_with(saved, **change)


def test_refused_resume_leaves_the_model_untouched(saved):
    model, opt, sched = build()
    before = model.state_dict()
    with pytest.raises(ValueError, match="batch_size"):
        fastbp.fit(
            model,
            X,
            Y,
            loss=CrashingLoss(),
            optimizer=opt,
            lr_schedule=sched,
            resume=saved,
            **{**SETTINGS, "batch_size": 8},
        )
    assert all(np.array_equal(a, model.state_dict()[k]) for k, a in before.items()) and opt.t == 0


@pytest.mark.parametrize(
    "kw, error, message",
    [
        (dict(checkpoint_every=0), ValueError, "checkpoint_every: expected"),
        (dict(checkpoint_every=1.5), TypeError, "checkpoint_every: expected"),
        (dict(checkpoint_unit="steps"), ValueError, "checkpoint_unit: "),
        (dict(resume=True), ValueError, "resume: resume=True continues from the checkpoint=PATH file"),
        (dict(resume=3), TypeError, "resume: expected a path, True or None, got int 3"),
        (dict(checkpoint=5), TypeError, "checkpoint: expected a path or None, got int"),
        (dict(lr_schedule=object(), checkpoint="c"), TypeError, "lr_schedule: checkpoints need a schedule"),
    ],
)
def test_checkpoint_arguments_are_checked(tmp_path, kw, error, message):
    model, opt, _ = build()
    with pytest.raises(error, match=message):
        fastbp.fit(model, X, Y, loss=CrashingLoss(), optimizer=opt, **{**SETTINGS, **kw})


def test_checkpoint_paths_are_checked_before_training(tmp_path):
    loss = CrashingLoss(crash_at=1)  # training would raise Crash
    with pytest.raises(ValueError, match="checkpoint: folder .*nowhere does not exist"):
        train(loss=loss, checkpoint=tmp_path / "nowhere" / "c")
    with pytest.raises(ValueError, match="checkpoint: .* is a folder"):
        train(loss=loss, checkpoint=tmp_path)
    with pytest.raises(FileNotFoundError, match="resume: no checkpoint file .*missing.npz"):
        train(loss=loss, resume=tmp_path / "missing.npz")


def test_files_that_are_not_checkpoints_are_refused(tmp_path, saved):
    model, opt, _ = build()
    fastbp.save(model, tmp_path / "model.npz", optimizer=opt)
    with pytest.raises(ValueError, match="model.npz: a fastbp model file .*not a checkpoint"):
        train(resume=tmp_path / "model.npz")
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="other.npz: not a fastbp checkpoint"):
        ck.read(tmp_path / "other.npz")
    np.save(tmp_path / "one.npy", np.zeros(3))
    with pytest.raises(ValueError, match="one.npy: not a fastbp checkpoint"):
        ck.read(tmp_path / "one.npy")
    whole = saved.read_bytes()
    for size in (0, 100, len(whole) // 2, len(whole) - 30):
        (tmp_path / "cut").write_bytes(whole[:size])
        with pytest.raises(ValueError, match="cut: "):
            ck.read(tmp_path / "cut")
    with np.load(saved) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(str(arrays["__meta__"][()]))
    for key, value in [("position", {**meta["position"], "batches": -1}), ("optimizer_state", [1]), ("format", None)]:
        broken = {**meta, key: value} if key != "format" else {k: x for k, x in meta.items() if k != "format"}
        np.savez(tmp_path / "meta.npz", **{**arrays, "__meta__": np.array(json.dumps(broken))})
        with pytest.raises(ValueError, match="meta.npz: "):
            ck.read(tmp_path / "meta.npz")
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, **{"__fastbp_checkpoint__": np.array(1), "__meta__": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(ValueError, match="pickled.npz: "):
        ck.read(pickled)


def test_a_checkpoint_whose_order_is_not_a_permutation_is_refused(tmp_path, saved):
    c = ck.read(saved)
    with np.load(saved) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["order"] = np.zeros_like(c.order)  # would silently train on row 0 only
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match="'order' entry is not a permutation of the 240 training rows"):
        resume_with(tmp_path / "bad.npz")


# -- schedules -------------------------------------------------------------------------------------------


def schedules(opt):
    return [
        ConstantLR(opt),
        StepLR(opt, 3, 0.5),
        CosineLR(opt, total=12, warmup=2, min_lr=1e-4),
        ReduceLROnPlateau(opt, factor=0.5, patience=1, threshold=0.01),
    ]


METRICS = [1.0, 0.9, 0.95, 0.96, 0.97, 0.8, 0.85, 0.9, 0.91, 0.92, 0.7, 0.71]


@pytest.mark.parametrize("which", range(4))
def test_a_schedule_continues_from_its_state(which):
    def fresh():
        model = fastbp.Sequential(fastbp.Linear(3, 2, seed=0))
        opt = fastbp.SGD(
            [{"params": model.parameters()[:1], "lr": 0.1}, {"params": model.parameters()[1:], "lr": 0.05}], lr=0.1
        )
        return opt, schedules(opt)[which]

    opt, sched = fresh()
    straight = [sched.step(m) for m in METRICS]
    opt, sched = fresh()
    first = [sched.step(m) for m in METRICS[:5]]
    state = json.loads(json.dumps(sched.state_dict()))  # JSON values only
    opt_state = opt.state_dict()
    opt2, sched2 = fresh()
    opt2.load_state_dict(opt_state)
    sched2.load_state_dict(state)
    assert first + [sched2.step(m) for m in METRICS[5:]] == straight
    assert len(set(straight)) > (which != 0)  # the schedules change the rate (but ConstantLR)


def test_a_schedule_refuses_the_state_of_another():
    opt = fastbp.SGD(fastbp.Sequential(fastbp.Linear(3, 2, seed=0)).parameters(), lr=0.1)
    with pytest.raises(ValueError, match="state: expected the state of a StepLR, got one of 'CosineLR'"):
        StepLR(opt, 3).load_state_dict(CosineLR(opt, 10).state_dict())
    with pytest.raises(ValueError, match="state: saved from a StepLR with step_size=3, this one has step_size=4"):
        StepLR(opt, 4).load_state_dict(StepLR(opt, 3).state_dict())
    two = fastbp.SGD([{"params": opt.params[:1]}, {"params": opt.params[1:]}], lr=0.1)
    with pytest.raises(ValueError, match="state: saved for 1 parameter groups, this optimizer has 2"):
        StepLR(two, 3).load_state_dict(StepLR(opt, 3).state_dict())
    bad = {**ReduceLROnPlateau(opt).state_dict(), "bad": -1}
    with pytest.raises(ValueError, match=r"state\['bad'\]"):
        ReduceLROnPlateau(opt).load_state_dict(bad)
    with pytest.raises(TypeError, match="state: expected a dict"):
        StepLR(opt, 3).load_state_dict([1])


# -- the command line --------------------------------------------------------------------------------------


@pytest.fixture
def npz(tmp_path):
    Xs, ys = fastbp.datasets.make_classification(200, 10, 3, seed=2)
    path = tmp_path / "data.npz"
    np.savez(path, X=Xs, y=ys)
    return path


MODEL_OPTIONS = ["--hidden", "16", "--dropout", "0.1", "--batchnorm"]


def cli(*args):
    from fastbp.cli import main

    return main(["train", "--no-progress", *MODEL_OPTIONS, *map(str, args)])


def same_model_files(a, b):
    sa, sb = fastbp.load(a).state_dict(), fastbp.load(b).state_dict()
    return sa.keys() == sb.keys() and all(np.array_equal(sa[k], sb[k]) for k in sa)


def test_cli_resume_continues_to_the_uninterrupted_model(tmp_path, npz, capsys):
    c = tmp_path / "run.ckpt"
    common = ["--data", npz, "--optimizer", "sgd", "--lr", "0.05"]
    assert cli(*common, "--epochs", 3, "--checkpoint", c, "--checkpoint-unit", "step", "--checkpoint-every", 4) == 0
    assert "checkpoint: " + str(c) + ", every 4 steps and at the end" in capsys.readouterr().out
    assert ck.read(c).position.key == (3, 0)
    assert cli(*common, "--epochs", 7, "--checkpoint", c, "--resume", "--out", tmp_path / "resumed.npz") == 0
    assert f"resume: from {c}, 3 epochs done" in capsys.readouterr().out
    assert cli(*common, "--epochs", 7, "--out", tmp_path / "straight.npz") == 0
    assert same_model_files(tmp_path / "resumed.npz", tmp_path / "straight.npz")
    # a bare --resume whose checkpoint does not exist yet starts afresh
    assert cli(*common, "--epochs", 7, "--checkpoint", tmp_path / "new.ckpt", "--resume") == 0
    assert "resume: no checkpoint at" in capsys.readouterr().out and (tmp_path / "new.ckpt").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--checkpoint-every", "2"], "fastbp train: error: --checkpoint-every: needs --checkpoint PATH"),
        (["--checkpoint-unit", "step"], "fastbp train: error: --checkpoint-unit: needs --checkpoint PATH"),
        (["--resume"], "fastbp train: error: --resume: without a PATH it continues from --checkpoint PATH"),
        (
            ["--resume", "RUN", "--batch-size", "64"],
            "fastbp train: error: --batch-size: the checkpoint .* batch_size=32",
        ),
        (["--resume", "RUN", "--epochs", "1"], "fastbp train: error: --epochs: the checkpoint .* has trained 2 epochs"),
        (["--resume", "RUN", "--hidden", "8"], "fastbp train: error: --hidden/--activation/.*: layers"),
        (["--resume", "MODEL"], "fastbp train: error: .*model.npz: a fastbp model file"),
    ],
)
def test_cli_checkpoint_errors_are_one_line_with_status_2(tmp_path, npz, capsys, args, message):
    import re

    run, model = tmp_path / "run.ckpt", tmp_path / "model.npz"
    assert cli("--data", npz, "--epochs", 2, "--checkpoint", run, "--out", model) == 0
    capsys.readouterr()
    args = [str(run) if a == "RUN" else str(model) if a == "MODEL" else a for a in args]
    assert cli("--data", npz, *args) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and re.search(message, err), err


def test_cli_resume_of_a_missing_file_is_refused_when_parsed(tmp_path, npz, capsys):
    with pytest.raises(SystemExit) as info:
        cli("--data", npz, "--resume", tmp_path / "missing.ckpt")
    assert info.value.code == 2 and "argument --resume: no such file" in capsys.readouterr().err


def test_cli_checkpoint_written_by_the_installed_command_resumes_in_another_process(tmp_path, npz):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(sys.executable).with_name("fastbp")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "fastbp"]
    c, threads = tmp_path / "run.ckpt", str(fastbp.get_num_threads())
    common = ["--data", str(npz), "--threads", threads]
    r = subprocess.run(
        command + ["train", "--no-progress", *MODEL_OPTIONS, "--epochs", "2", "--checkpoint", str(c), *common],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert cli(*common, "--epochs", 4, "--resume", c, "--out", tmp_path / "resumed.npz") == 0
    assert cli(*common, "--epochs", 4, "--out", tmp_path / "straight.npz") == 0
    assert same_model_files(tmp_path / "resumed.npz", tmp_path / "straight.npz")


def test_cli_ctrl_c_says_where_the_checkpoint_is(tmp_path, npz, capsys, monkeypatch):
    def interrupted(*args, **kw):
        assert kw["checkpoint"] == str(tmp_path / "run.ckpt") and kw["resume"] is True
        raise fastbp.TrainingInterrupted(3, 4, 5, fastbp.History())

    monkeypatch.setattr(fastbp, "fit", interrupted)
    assert cli("--data", npz, "--checkpoint", tmp_path / "run.ckpt", "--resume") == 130
    err = capsys.readouterr().err
    assert err.strip().endswith(f"nothing saved (no --out); checkpoint in {tmp_path / 'run.ckpt'} (--resume continues)")
