"""Start a script under ``mpiexec -n N`` from a test, with a timeout that ends every rank."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def mpiexec() -> str:
    """The ``mpiexec`` next to this Python (the mpich wheel's) or on PATH; skips the test when there is none."""
    pytest.importorskip("mpi4py", reason="distributed fit tests need mpi4py (pip install 'fastbp[mpi]')")
    beside = Path(sys.executable).parent / "mpiexec"
    found = str(beside) if beside.exists() else shutil.which("mpiexec")
    if found is None:
        pytest.skip("distributed fit tests need mpiexec (pip install 'fastbp[mpi]' brings MPICH's)")
    return found


def run(n: int, *command: str, timeout: float = 180, cwd=None) -> subprocess.CompletedProcess:
    """``mpiexec -n n command...``: each rank with one thread (the machine's cores shared between the ranks).

    ``command`` starting with a ``.py`` name runs that script of tests/mpi_scripts with this Python.
    On timeout every process of the job is killed and the test fails, saying so.
    """
    argv = list(command)
    if argv and argv[0].endswith(".py"):
        argv = [sys.executable, str(HERE / argv[0]), *argv[1:]]
    env = {**os.environ, "NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [mpiexec(), "-n", str(n), *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=cwd,
        start_new_session=True,  # its own process group: a timeout kills mpiexec and every rank
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"mpiexec -n {n} {' '.join(command)} hung for {timeout} s\nstdout:\n{out}\nstderr:\n{err}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def assert_every_rank_raised(script: str, case: str, kind: str, pattern: str) -> None:
    """Run ``script case`` on 2 ranks; each must print ``RESULT rank=r type=kind message=...`` with ``pattern``
    in the message, the same on both ranks."""
    done = run(2, script, case, timeout=120)
    assert done.returncode == 0, done.stderr
    found = re.findall(r"^RESULT rank=(\d+) type=(\S+) message=(.*)$", done.stdout, re.M)
    results = {int(rank): (raised, message) for rank, raised, message in found}
    assert sorted(results) == [0, 1], done.stdout + done.stderr
    for rank, (raised, message) in results.items():
        assert raised == kind, (rank, raised, message)
        assert re.search(pattern, message), (rank, message)
    assert results[0] == results[1]  # the same exception on both ranks
