"""The README's Python example runs as written."""

import os
import pathlib
import re
import warnings

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs(tmp_path, monkeypatch):
    pytest.importorskip("sklearn")
    block = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    monkeypatch.chdir(tmp_path)
    ns = {}
    exec(compile(block, "README.md", "exec"), ns)
    assert ns["proba"].shape == (359, 10)
    assert (tmp_path / "digits.npz").exists()
    assert ns["history"].epochs == 40


def test_readme_has_the_ci_test_command():
    text = README.read_text()
    cmd = re.search(r"<!-- ci:test-command -->\n```bash\n(.*)\n```", text).group(1)
    assert "pytest" in cmd and ".[test,sklearn,torch,onnx,mpi,dask]" in cmd


def test_readme_sklearn_example_runs():
    pytest.importorskip("sklearn")
    block = re.search(r"<!-- sklearn-example -->\n```python\n(.*?)```", README.read_text(), re.S).group(1)
    ns = {}
    exec(compile(block, "README.md", "exec"), ns)
    assert ns["search"].score(ns["X_te"], ns["y_te"]) > 0.95
    assert type(ns["search"].best_estimator_[-1]).__module__.startswith("fastbp.sklearn")


def test_readme_hand_written_loop_runs_and_learns():
    block = re.search(r"<!-- loop-example -->\n```python\n(.*?)```", README.read_text(), re.S).group(1)
    ns = {}
    exec(compile(block, "README.md", "exec"), ns)
    fastbp, model, X, y = ns["fastbp"], ns["model"], ns["X"], ns["y"]
    acc = fastbp.evaluate(model, X, y, loss=ns["loss"])["accuracy"]
    assert acc > 0.9 and ns["value"] < 0.5


def test_readme_dask_example_runs():
    pytest.importorskip("distributed", reason="needs dask's distributed (pip install 'fastbp[dask]')")
    pytest.importorskip("sklearn")
    block = re.search(r"<!-- dask-example -->\n```python\n(.*?)```", README.read_text(), re.S).group(1)
    environ = dict(os.environ)  # the cluster's nanny sets thread limits in this process's environment
    ns = {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning at max_iter=100 is expected
            exec(compile(block, "README.md", "exec"), ns)
    finally:
        os.environ.clear()
        os.environ.update(environ)
    assert ns["search"].best_score_ > 0.9
    assert type(ns["search"].best_estimator_).__module__.startswith("fastbp.sklearn")
