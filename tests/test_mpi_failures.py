"""A failure on one rank of a distributed fit ends every rank, with that rank's message; none hangs.

Each case makes rank 1 fail (tests/mpi_scripts/fit_failures.py) under ``mpiexec -n 2``; a
hang fails the test at the launcher's timeout.
"""

from __future__ import annotations

import pytest
from mpi_scripts import _launch

# case: (exception type every rank raises, what its message says)
AGREED = {
    "bad_data": ("ValueError", r"rank 1: X: expected shape \(batch, 5\), got \(40, 4\)"),
    "empty": ("ValueError", r"rank 1: X: expected at least one row"),
    "settings": (
        "ValueError",
        r"batch_size: every MPI rank must give the same batch_size; rank 0 has 8, rank 1 has 16",
    ),
    "nan": ("NonFiniteLossError", r"rank 1: loss became nan at epoch 1, batch \d+ \(rows .* of rank 1's epoch order\)"),
    "step_error": ("RuntimeError", r"rank 1: boom in the third step"),
    "interrupt": ("TrainingInterrupted", r"in epoch 1 after batch 3 of 5.*\(Ctrl-C on rank 1\)"),
}


@pytest.mark.parametrize("case", sorted(AGREED))
def test_every_rank_raises_the_failing_ranks_error(case):
    _launch.assert_every_rank_raised("fit_failures.py", case, *AGREED[case])


def test_an_error_outside_a_step_aborts_every_rank():
    # A callback raising on rank 1 alone: no agreement point, so the job is aborted.
    done = _launch.run(2, "fit_failures.py", "callback_error", timeout=120)
    assert done.returncode != 0
    assert "fastbp rank 1: RuntimeError: callback failed on this rank" in done.stderr
    assert "RESULT" not in done.stdout  # no rank went on as if nothing happened
