"""Fault injection over issue 13's data sources and distributed fit: each case a defect that was found and fixed.

The MPI cases run tests/mpi_scripts/faults_mpi.py under ``mpiexec -n 2`` (skipped without mpi4py).
"""

from __future__ import annotations

import re
import threading

import numpy as np
import pytest
from _helpers import ctrl_c_in_batch
from mpi_scripts import _launch

import fastbp
from fastbp import data
from fastbp.training import TrainingInterrupted

D, K = 4, 3


@pytest.fixture(scope="module")
def xy():
    rng = np.random.default_rng(0)
    return rng.standard_normal((48, D)).astype(np.float32), rng.integers(0, K, 48)


def _model():
    return fastbp.Sequential(fastbp.Linear(D, 8, activation="relu", seed=0), fastbp.Linear(8, K, seed=1))


def _fit(X, y, **kw):
    model = _model()
    kw = {"epochs": 2, "batch_size": 8, "shuffle": False, "progress": False, **kw}
    return fastbp.fit(
        model, X, y, loss=fastbp.SoftmaxCrossEntropy(), optimizer=fastbp.SGD(model.parameters(), lr=0.1), **kw
    )


def _prefetch_threads():
    return [t for t in threading.enumerate() if t.name == "fastbp-prefetch"]


def test_a_directory_path_is_called_a_directory(tmp_path, xy):
    with pytest.raises(FileNotFoundError, match=r"X: expected an array or the path of a \.npy file, .*\(a directory\)"):
        _fit(str(tmp_path), xy[1])


def test_ragged_input_to_predict_names_x(xy):
    X, y = xy
    pairs = [(X[:8], y[:8]), (X[8:16], y[8:16])]  # batches where predict wants one array
    with pytest.raises(ValueError, match=r"^X: expected an array, got a list numpy cannot make one of"):
        fastbp.predict(_model(), pairs)


def test_interrupt_in_a_streams_first_epoch_does_not_claim_0_batches_per_epoch(xy, monkeypatch):
    X, y = xy
    monkeypatch.setattr(fastbp.training, "defer_interrupts", ctrl_c_in_batch(3))
    batches = [(X[i : i + 8], y[i : i + 8]) for i in range(0, 48, 8)]
    with pytest.raises(TrainingInterrupted) as info:
        _fit(batches, None)
    # Was "after batch 3 of 0": the stream's length is not known until its first epoch ends.
    assert re.match(r"training interrupted in epoch 1 after batch 3; the model", str(info.value)), str(info.value)
    assert (info.value.batches, info.value.completed_epochs) == (3, 0)
    assert _prefetch_threads() == []


def test_a_bare_ctrl_c_does_not_wait_for_a_stuck_source():
    # A second Ctrl-C (a bare KeyboardInterrupt) while the source hangs in a read must get out.
    entered, release = threading.Event(), threading.Event()

    def produce(slot):
        entered.set()
        release.wait(60)  # a read that does not return (a dead network share)
        return None

    with pytest.raises(KeyboardInterrupt):
        with data.Feed(produce, prefetch=True):
            assert entered.wait(10)
            raise KeyboardInterrupt
    stuck = _prefetch_threads()
    assert len(stuck) == 1 and stuck[0].is_alive()  # left reading: the main thread did not wait for it
    release.set()
    stuck[0].join(10)
    assert _prefetch_threads() == []


# case: (exception type every rank raises, what its message says)
MPI_CASES = {
    # Was an IndexError after the first epoch, aborting the job: the cross-rank mean reads y_val.
    "val_stream": ("TypeError", r"rank 0: validation_data: a distributed fit \(comm=\.\.\.\) needs each rank's"),
    "loss": ("ValueError", r"loss: every MPI rank must give the same loss; .*'label_smoothing': 0\.1"),
}


@pytest.mark.parametrize("case", sorted(MPI_CASES))
def test_every_rank_refuses_alike(case):
    _launch.assert_every_rank_raised("faults_mpi.py", case, *MPI_CASES[case])


def test_stream_validation_is_refused_under_a_one_rank_comm(xy):
    MPI = pytest.importorskip("mpi4py.MPI", reason="needs mpi4py (pip install 'fastbp[mpi]')")
    X, y = xy
    with pytest.raises(TypeError, match=r"validation_data: a distributed fit"):
        _fit(X, y, comm=MPI.COMM_SELF, validation_data=data.Stream([(X[:8], y[:8])]))
