"""The command line, run through its real entry point (the installed ``fastbp`` script) as a user runs it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastbp

SCRIPT = Path(sys.executable).with_name("fastbp")
# The console script pip installs; `python -m fastbp` runs the same main() where it is missing.
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "fastbp"]


def run(*args, timeout=300, **kw):
    return subprocess.run(COMMAND + [str(a) for a in args], capture_output=True, text=True, timeout=timeout, **kw)


def score(out, split, name):
    return float(re.search(rf"{split}:\s+.*?{name} (-?[0-9.]+)", out).group(1))


def write_csv(path, header, rows):
    path.write_text(",".join(header) + "\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n")
    return path


@pytest.fixture(scope="module")
def wine_csv(tmp_path_factory):
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    d = sklearn_datasets.load_wine()
    path = tmp_path_factory.mktemp("wine") / "wine.csv"
    return write_csv(path, list(d.feature_names) + ["target"], [list(x) + [t] for x, t in zip(d.data, d.target)])


def test_main_job_trains_digits_and_its_model_predicts_raw_features(tmp_path):
    pytest.importorskip("sklearn")
    from sklearn.datasets import load_digits

    r = run("train", "--no-progress", "--out", tmp_path / "m.npz")
    assert r.returncode == 0, r.stderr
    assert score(r.stdout, "test", "accuracy") >= 0.96, r.stdout
    assert "samples/s" in r.stdout and "digits" in r.stdout and "task: classification, 10 classes" in r.stdout
    d = load_digits()
    np.savez(tmp_path / "x.npz", X=(d.data / 16.0)[-200:])
    r = run("predict", "--model", tmp_path / "m.npz", "--data", tmp_path / "x.npz", "--out", tmp_path / "p.npz")
    assert r.returncode == 0, r.stderr
    with np.load(tmp_path / "p.npz") as p:
        assert np.mean(p["predictions"] == d.target[-200:]) > 0.9
        # the standardization travels inside the model file: a loaded model predicts from raw features
        model = fastbp.load(tmp_path / "m.npz")
        np.testing.assert_array_equal(fastbp.predict(model, (d.data / 16.0)[-200:]).argmax(1), p["predictions"])


def test_csv_features_are_standardized_unless_told_not_to(wine_csv):
    r = run("train", "--data", wine_csv, "--target", "target", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "features standardized" in r.stdout and score(r.stdout, "test", "accuracy") >= 0.95, r.stdout
    raw = run("train", "--data", wine_csv, "--target", "target", "--no-progress", "--no-standardize")
    assert raw.returncode == 0 and "scaling: none" in raw.stdout


def test_task_is_chosen_from_the_target_printed_and_overridable(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 4))
    # whole numbers, 250-odd distinct values: a regression target (like scikit-learn's diabetes)
    y = np.round(150 + 60 * np.tanh(X @ [1.0, -0.5, 0.3, 0.2]) + 5 * rng.standard_normal(300))
    path = write_csv(tmp_path / "r.csv", ["a", "b", "c", "d", "y"], [list(x) + [f"{t:.1f}"] for x, t in zip(X, y)])
    r = run("train", "--data", path, "--target", "y", "--no-progress", "--epochs", "60")
    assert r.returncode == 0, r.stderr
    assert "task: regression" in r.stdout and "features and target standardized" in r.stdout
    assert score(r.stdout, "test", r"R\^2") > 0.5, r.stdout  # in the target's units, not 0.0000 accuracy
    forced = run("train", "--data", path, "--target", "y", "--no-progress", "--epochs", "1", "--task", "classification")
    assert (
        forced.returncode == 0 and "task: classification" in forced.stdout and "--task classification" in forced.stdout
    )


def test_text_labels_are_encoded_and_predict_decodes_them(tmp_path):
    rng = np.random.default_rng(1)
    names = np.array(["bird", "cat", "dog"])
    k = rng.integers(0, 3, 240)
    X = rng.standard_normal((240, 2)) * 0.3 + np.array([[0, 3], [3, 0], [-3, -3]])[k]
    train = write_csv(tmp_path / "t.csv", ["x1", "x2", "animal"], [list(x) + [n] for x, n in zip(X, names[k])])
    r = run("train", "--data", train, "--target", "animal", "--no-progress", "--out", tmp_path / "m.npz")
    assert r.returncode == 0, r.stderr
    assert "classes: bird, cat, dog" in r.stdout
    r = run(
        "predict", "--model", tmp_path / "m.npz", "--data", train, "--target", "animal", "--out", tmp_path / "p.csv"
    )
    assert r.returncode == 0, r.stderr
    lines = (tmp_path / "p.csv").read_text().splitlines()
    assert lines[0] == "prediction" and np.mean(np.array(lines[1:]) == names[k]) > 0.95


def test_a_missing_value_is_an_error_naming_row_and_column(tmp_path):
    path = write_csv(tmp_path / "m.csv", ["a", "b", "y"], [[1, 2, 0], [3, 4, 1], [5, "", 0], [7, 8, 1]])
    r = run("train", "--data", path, "--target", "y")
    assert r.returncode == 2 and r.stdout == ""
    assert "missing value at row 4, column 'b'" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_ctrl_c_saves_the_model_so_far_and_exits_130(tmp_path):
    pytest.importorskip("sklearn")
    out = tmp_path / "m.npz"
    # A shell starts background jobs with SIGINT ignored; a user's terminal has the default.
    proc = subprocess.Popen(
        COMMAND + ["train", "--epochs", "100000", "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        first = proc.stderr.readline()  # "epoch 1/100000: ..." once training runs
        assert first.startswith("epoch 1/"), first
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130
    lines = [ln for ln in stderr.splitlines() if not ln.startswith("epoch ")]
    assert len(lines) == 1 and re.fullmatch(
        r"interrupted in epoch \d+ after batch \d+ of 45 .*; model saved to .*", lines[0]
    )
    assert "Traceback" not in stderr + stdout
    model = fastbp.load(out)  # complete and loadable, with the standardization
    assert isinstance(model[0], fastbp.Standardize) and model.metadata["task"] == "classification"
    assert not [p for p in os.listdir(tmp_path) if p != "m.npz"]  # no temporary file left behind


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("trained")
    rng = np.random.default_rng(2)
    X = rng.standard_normal((120, 3))
    y = (X[:, 0] > 0).astype(int)
    data = write_csv(folder / "d.csv", ["a", "b", "c", "label"], [list(x) + [t] for x, t in zip(X, y)])
    r = run("train", "--data", data, "--target", "label", "--no-progress", "--epochs", "5", "--out", folder / "m.npz")
    assert r.returncode == 0, r.stderr
    return folder, data


@pytest.mark.parametrize("name", ["p.csv", "p.npy", "p.npz", "predictions.CSV"])
def test_predict_writes_exactly_the_path_given_in_its_format(trained, tmp_path, name):
    folder, data = trained
    target = tmp_path / name
    r = run("predict", "--model", folder / "m.npz", "--data", data, "--target", "label", "--out", target)
    assert r.returncode == 0, r.stderr
    assert os.listdir(tmp_path) == [name] and f"to {target}" in r.stdout
    suffix = name.lower().rsplit(".", 1)[1]
    if suffix == "csv":
        pred = np.loadtxt(target, skiprows=1, dtype=int)
    elif suffix == "npy":
        pred = np.load(target)
    else:
        with np.load(target) as z:
            pred = z["predictions"]
    assert pred.shape == (120,) and set(np.unique(pred)) <= {0, 1}


@pytest.mark.parametrize(
    "args, message",
    [
        (["--out", "p.txt"], "argument --out: expected a file name ending in .csv, .npy, .npz"),
        (["--out", "p.npy", "--proba"], "--proba: a .npy file holds one array"),
        (["--out", "missing-dir/p.csv"], "does not exist"),
    ],
)
def test_predict_refuses_an_output_it_cannot_write_as_named(trained, tmp_path, args, message):
    folder, data = trained
    r = run("predict", "--model", folder / "m.npz", "--data", data, "--target", "label", *args, cwd=tmp_path)
    assert r.returncode == 2 and message in r.stderr and os.listdir(tmp_path) == []


def test_predicting_on_the_training_csv_without_target_says_to_pass_it(trained):
    folder, data = trained
    r = run("predict", "--model", folder / "m.npz", "--data", data, "--out", folder / "never.csv")
    assert r.returncode == 2 and "pass --target label" in r.stderr
    assert not (folder / "never.csv").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--epochs", "-1"], "argument --epochs: expected a positive integer, got -1"),
        (["--threads", "0"], "argument --threads: expected a positive integer, got 0"),
        (["--threads", "100000"], "argument --threads: expected 1 to"),
        (["--out", "/nonexistent/dir/m.npz"], "argument --out: folder /nonexistent/dir does not exist"),
        (["--lr", "nan"], "argument --lr: expected a positive finite number"),
        (["--test-size", "1.5"], "argument --test-size: expected a number strictly between 0 and 1"),
        (["--hidden", "12,x"], "argument --hidden: expected comma-separated positive integers"),
        (["--data", "missing.csv"], "argument --data: no such file: missing.csv"),
        (["--data", "data.txt"], "argument --data: expected a .csv or .npz file"),
    ],
)
def test_train_arguments_are_checked_before_anything_prints(tmp_path, args, message):
    r = run("train", *args, cwd=tmp_path)
    assert r.returncode == 2 and r.stdout == "", r.stdout
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert os.listdir(tmp_path) == []


def test_a_missing_model_file_is_one_line_naming_it(tmp_path):
    r = run("predict", "--model", tmp_path / "none.npz", "--data", tmp_path / "none.csv")
    assert r.returncode == 2 and r.stderr.strip() == (
        f"fastbp predict: error: argument --model: no such file: {tmp_path / 'none.npz'} (see fastbp predict --help)"
    )


@pytest.mark.parametrize("command", ["train", "predict", "bench"])
def test_help_shows_every_default(command):
    r = run(command, "--help")
    assert r.returncode == 0
    options = [a for a in _subparser(command)._actions if a.option_strings and a.dest != "help"]
    for action in options:
        assert "default" in action.help or action.required, f"{command} {action.option_strings[0]}: {action.help}"
    assert command != "train" or "default: 40" in r.stdout


def _subparser(command):
    from fastbp.cli import parser

    sub = next(a for a in parser()._actions if a.dest == "command")
    return sub.choices[command]


def test_progress_without_a_terminal_is_an_epoch_line_at_most_every_few_seconds(tmp_path):
    pytest.importorskip("sklearn")
    r = run("train", "--epochs", "30")
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    assert "\r" not in r.stderr and lines[0].startswith("epoch 1/30: loss ") and lines[-1].startswith("epoch 30/30:")
    assert all(re.match(r"epoch \d+/30: loss [0-9.e+-]+, acc [0-9.]+, [0-9,]+ samples/s$", ln) for ln in lines)
    assert len(lines) < 30  # throttled: digits epochs take milliseconds


def test_info_through_the_console_script():
    r = run("info")
    assert r.returncode == 0 and f"fastbp {fastbp.__version__}" in r.stdout and "numba_threading_layer" in r.stdout


def test_batchnorm_and_dropout_train_digits_to_097_and_save(tmp_path):
    pytest.importorskip("sklearn")
    r = run("train", "--batchnorm", "--dropout", "0.2", "--no-progress", "--out", tmp_path / "m.npz")
    assert r.returncode == 0, r.stderr
    assert "(batchnorm, dropout 0.2)" in r.stdout and score(r.stdout, "test", "accuracy") >= 0.97, r.stdout
    model = fastbp.load(tmp_path / "m.npz")
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds[:5] == ["Standardize", "Linear", "BatchNorm1d", "ReLU", "Dropout"]
    assert model[2].running_var.any()  # the running statistics were saved


@pytest.mark.parametrize("activation", ["gelu", "gelu_tanh", "silu", "elu", "leaky_relu", "softplus"])
def test_layernorm_and_the_new_activations_from_the_command_line(tmp_path, activation):
    pytest.importorskip("sklearn")
    args = ["train", "--layernorm", "--activation", activation, "--epochs", "3", "--no-progress"]
    r = run(*args, "--out", tmp_path / "m.npz")
    assert r.returncode == 0, r.stderr
    assert score(r.stdout, "test", "accuracy") > 0.8, r.stdout
    assert "LayerNorm" in [type(layer).__name__ for layer in fastbp.load(tmp_path / "m.npz").layers]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dropout", "1"], "argument --dropout: expected a number in [0, 1), got 1"),
        (["--batchnorm", "--layernorm"], "not allowed with argument"),
        (["--activation", "swish"], "argument --activation: invalid choice"),
    ],
)
def test_layer_kit_arguments_are_checked(args, message):
    r = run("train", *args)
    assert r.returncode == 2 and r.stdout == "" and message in r.stderr
