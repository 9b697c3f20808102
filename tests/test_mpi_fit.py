"""Data-parallel ``fit(..., comm=...)``: N ranks equal one process on their batches stacked (docs/distributed.md).

The multi-rank cases start ``mpiexec -n N`` (tests/mpi_scripts) and skip, saying why, without
mpi4py or mpiexec.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from mpi_scripts import _launch

import fastbp

TOL = {"float64": 1e-6, "float32": 1e-4}

CASES = [
    # ranks, rows per rank, options: equal shards are compared with fit(batch_size=N*b)
    (2, "30,30", ["--dtype", "float64", "--validation"]),
    (2, "21,21", ["--dtype", "float64", "--loss", "mse", "--optimizer", "sgd", "--validation"]),
    (3, "29,29,29", ["--dtype", "float32", "--loss", "wce", "--clip", "0.5", "--validation"]),
    (3, "30,30,30", ["--dtype", "float32"]),
    # unequal shards (ranks run out at different steps): compared with a loop over the stacked batches
    (3, "40,17,5", ["--dtype", "float64"]),
    (2, "3,30", ["--dtype", "float32", "--loss", "mse"]),
]


@pytest.mark.parametrize("ranks, rows, options", CASES, ids=lambda c: str(c).replace(" ", ""))
def test_ranks_equal_one_process_on_stacked_batches(tmp_path, ranks, rows, options):
    out = tmp_path / "report.json"
    done = _launch.run(ranks, "fit_equivalence.py", str(out), "--rows", rows, *options)
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    tol = TOL[report["dtype"]]
    assert report["identical_across_ranks"]
    assert report["epochs"] == 3
    assert report["param_rel"] <= tol, report
    if report["reference"] == "fit":
        assert report["loss_rel"] <= tol, report
        assert report.get("accuracy_diff", 0.0) <= 1e-12
        if "--validation" in options:
            assert report["val_loss_rel"] <= tol, report  # validation reduced over every rank's rows
            assert report.get("val_accuracy_diff", 0.0) <= 1e-12


def _problem(dtype=np.float32):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((70, 5)).astype(dtype)
    y = rng.integers(0, 3, 70)
    model = fastbp.Sequential(fastbp.Linear(5, 8, activation="relu", seed=0), fastbp.Linear(8, 3, seed=1))
    return model, X, y


def _fit(comm, **kw):
    model, X, y = _problem()
    opt = fastbp.Adam(model.parameters(), lr=0.01)
    hist = fastbp.fit(
        model, X, y, loss=fastbp.SoftmaxCrossEntropy(), optimizer=opt, epochs=3, batch_size=16, seed=4,
        validation_split=0.2, progress=False, comm=comm, **kw,
    )  # fmt: skip
    return model, hist


def test_comm_self_is_bit_identical_to_one_process():
    MPI = pytest.importorskip("mpi4py.MPI", reason="needs mpi4py (pip install 'fastbp[mpi]')")
    alone, h_alone = _fit(None)
    self_, h_self = _fit(MPI.COMM_SELF)
    for a, b in zip(alone.parameters(), self_.parameters()):
        assert np.array_equal(a.data, b.data)
    assert h_alone.loss == h_self.loss and h_alone.val_loss == h_self.val_loss
    assert self_.parameters()[0].grad.base is None  # fit gave back each parameter's own .grad


def test_comm_must_be_an_intracommunicator():
    pytest.importorskip("mpi4py", reason="needs mpi4py (pip install 'fastbp[mpi]')")
    with pytest.raises(TypeError, match="comm: expected an mpi4py intracommunicator.*got str"):
        _fit("COMM_WORLD")


def test_comm_refuses_an_iterable_of_batches():
    MPI = pytest.importorskip("mpi4py.MPI", reason="needs mpi4py (pip install 'fastbp[mpi]')")
    model = fastbp.Sequential(fastbp.Linear(4, 3, seed=0))
    batches = [(np.ones((5, 4), np.float32), np.zeros(5, np.int64))] * 3
    with pytest.raises(TypeError, match="X: a distributed fit .* iterable of"):
        fastbp.fit(
            model, batches, None, loss=fastbp.SoftmaxCrossEntropy(), optimizer=fastbp.SGD(model.parameters(), lr=0.1),
            shuffle=False, progress=False, comm=MPI.COMM_SELF,
        )  # fmt: skip


def test_comm_without_mpi4py_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # import mpi4py now fails
    with pytest.raises(ImportError, match=r'pip install "fastbp\[mpi\]"'):
        _fit(object())


def test_cli_train_under_mpiexec(tmp_path):
    pytest.importorskip("sklearn", reason="the default dataset (digits) comes with scikit-learn")
    out = tmp_path / "model.npz"
    done = _launch.run(
        2, sys.executable, "-m", "fastbp", "train", "--epochs", "3", "--out", str(out), "--no-progress", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    # Rank 1 prints nothing: each line of the report appears once.
    for line in ("data: digits", "split: 1438 train rows", "mpi: 2 ranks", "test:  accuracy", "model saved to"):
        assert done.stdout.count(line) == 1, done.stdout
    model = fastbp.load(out)
    X, y = fastbp.datasets.digits()
    accuracy = (model.predict(X).argmax(axis=1) == y).mean()
    assert accuracy > 0.8  # it trained: chance is 0.1
