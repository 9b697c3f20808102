"""The command line: ``fastbp train`` (the main job), ``predict`` and ``info``."""

import re
import subprocess
import sys

import numpy as np
import pytest

from fastbp import cli


def test_train_default_reaches_target_accuracy_on_digits(capsys, tmp_path):
    """The main job with its default settings: digits, test accuracy >= 0.96."""
    pytest.importorskip("sklearn")
    out_path = tmp_path / "m.npz"
    assert cli.main(["train", "--no-progress", "--out", str(out_path)]) == 0
    out = capsys.readouterr().out
    acc = float(re.search(r"test accuracy ([0-9.]+)", out).group(1))
    assert acc >= 0.96, out
    assert "samples/s" in out and "digits" in out and out_path.exists()

    from sklearn.datasets import load_digits

    d = load_digits()
    np.savez(tmp_path / "x.npz", X=(d.data / 16.0)[-200:])
    assert (
        cli.main(
            [
                "predict",
                "--model",
                str(out_path),
                "--data",
                str(tmp_path / "x.npz"),
                "--out",
                str(tmp_path / "p.npz"),
                "--proba",
            ]
        )
        == 0
    )
    with np.load(tmp_path / "p.npz") as p:
        assert p["proba"].shape == (200, 10)
        assert np.mean(p["predictions"] == d.target[-200:]) > 0.9


def test_train_on_csv_regression_and_predict_csv(tmp_path, capsys):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 3))
    y = X @ [1.0, -2.0, 0.5] + 0.1
    rows = "\n".join(",".join(f"{v:.6f}" for v in r) + f",{t:.6f}" for r, t in zip(X, y))
    (tmp_path / "d.csv").write_text("a,b,c,target\n" + rows + "\n")
    assert (
        cli.main(
            [
                "train",
                "--data",
                str(tmp_path / "d.csv"),
                "--target",
                "target",
                "--epochs",
                "20",
                "--hidden",
                "16",
                "--no-progress",
                "--out",
                str(tmp_path / "r.npz"),
            ]
        )
        == 0
    )
    assert "test loss" in capsys.readouterr().out
    assert (
        cli.main(
            [
                "predict",
                "--model",
                str(tmp_path / "r.npz"),
                "--data",
                str(tmp_path / "d.csv"),
                "--target",
                "target",
                "--out",
                str(tmp_path / "p.csv"),
            ]
        )
        == 0
    )
    pred = np.loadtxt(tmp_path / "p.csv", delimiter=",", skiprows=1)
    assert pred.shape == (200,) and np.corrcoef(pred, y)[0, 1] > 0.9


def test_cli_errors_are_messages_not_tracebacks(tmp_path, capsys):
    (tmp_path / "bad.npz").write_text("not a model")
    assert cli.main(["predict", "--model", str(tmp_path / "bad.npz"), "--data", str(tmp_path / "bad.npz")]) == 2
    assert "not an .npz archive" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["train", "--hidden", "12,x"])
    assert cli.main(["train", "--data", str(tmp_path / "missing.csv"), "--target", "y"]) == 2


def test_console_script_info():
    out = subprocess.run([sys.executable, "-m", "fastbp.cli", "info"], capture_output=True, text=True, check=True)
    assert "n_threads" in out.stdout and "numba_threading_layer" in out.stdout
