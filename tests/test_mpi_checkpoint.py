"""Checkpoints of a distributed fit: rank 0 writes what every rank needs; a resume ends as the unstopped run."""

from __future__ import annotations

import json

import numpy as np
import pytest
from mpi_scripts import _launch

import fastbp


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mpi_resume")
    out, path = folder / "report.json", folder / "run.ckpt.npz"
    done = _launch.run(2, "fit_resume.py", str(out), str(path))
    assert done.returncode == 0, done.stderr
    return json.loads(out.read_text()), path


def test_resume_under_mpiexec_equals_the_uninterrupted_run(resumed):
    reports, _ = resumed
    assert len(reports) == 2
    for report in reports:
        assert report["interrupted_at"] == [2, 3]  # stopped mid-epoch by Ctrl-C on rank 1
        assert report["resumed_equal"]  # parameters and BatchNorm buffers, bit for bit
        assert report["history_equal"]
        assert report["epochs"] == 4


def test_the_checkpoint_holds_every_ranks_order(resumed):
    _, path = resumed
    ck = fastbp.checkpoint.read(path)
    assert ck.world_size == 2
    assert [len(o) for o in ck.rank_orders] == [37, 48]
    for order in ck.rank_orders:
        assert np.array_equal(np.sort(order), np.arange(len(order)))
    assert ck.rank_rng_states[0] != ck.rank_rng_states[1]  # each rank shuffles with its own stream


def test_resume_needs_the_same_number_of_ranks(resumed):
    _, path = resumed
    model = fastbp.Sequential(
        fastbp.Linear(5, 12, seed=0), fastbp.BatchNorm1d(12), fastbp.ReLU(), fastbp.Linear(12, 3, seed=1)
    )
    rng = np.random.default_rng(100)
    X, y = rng.standard_normal((37, 5)).astype(np.float32), rng.integers(0, 3, 37)
    with pytest.raises(ValueError, match=r"resume: .* over 2 MPI ranks, this one runs over one process"):
        fastbp.fit(
            model, X, y, loss=fastbp.SoftmaxCrossEntropy(), optimizer=fastbp.Adam(model.parameters()),
            epochs=4, batch_size=8, resume=path, progress=False,
        )  # fmt: skip
