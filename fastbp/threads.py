"""The one owner of numba flags and threads in fastbp.

Every kernel is compiled twice from one source (:func:`fastbp.jit.kernel`): a
serial version and a ``prange`` version. Which one runs is decided here, never
in a kernel, from three facts:

* whether a thread-safe numba threading layer is loaded (``omp`` or ``tbb``;
  ``workqueue`` aborts when two Python threads launch parallel kernels at once),
* the thread count: :func:`set_num_threads` when called, else the smallest
  thread cap the process was started with (:func:`default_num_threads`),
* the size of the work (a parallel launch costs microseconds; small arrays run
  serially).

Why the defaults are what they are is measured in ``docs/threading.md`` and
reproduced by ``python benchmarks/threading_report.py``.
"""

from __future__ import annotations

import contextlib
import numbers
import os
import threading
import warnings
from collections.abc import Mapping

import numba
from threadpoolctl import ThreadpoolController

from ._validate import POSITIVE_INT, Interval, NoneValue, check

# Below this many elements a kernel runs serially. Measured on the 2-core
# development machine (docs/threading.md): a vectorised serial loop is already
# memory-bound, and a second thread only breaks even from about 4M elements.
DEFAULT_PARALLEL_MIN_WORK = 1 << 22

_THREADSAFE_LAYERS = ("omp", "tbb")


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}: expected an int >= 0, got {raw!r}") from None
    return check(value, name, Interval(numbers.Integral, 0))


# Variables that cap a process's OpenMP and BLAS threads. joblib's loky workers get all of
# them (cores / n_jobs), Dask's nanny sets OMP, MKL and OPENBLAS to 1 in every worker
# (`distributed.nanny.pre-spawn-environ`) but not NUMBA_NUM_THREADS, and batch systems set
# OMP_NUM_THREADS. fastbp's one count covers numba and BLAS, so its default honours them all:
# without this a 1-thread Dask worker launched kernels of 4M+ elements on every core (docs/dask.md).
THREAD_LIMIT_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)


def _env_thread_cap(name: str, raw: str) -> int | None:
    """A positive thread count from ``name``'s value, or None (no cap) for what other libraries ignore too."""
    first = raw.split(",")[0].strip()  # OpenMP allows a list, one count per nesting level
    if not first:
        return None
    try:
        value = int(first)
    except ValueError:
        value = 0
    if value < 1:
        # Not fastbp's variable, so no error: warn and leave the count uncapped, as GNU OpenMP does.
        warnings.warn(
            f"{name}={raw!r} is not a positive int: fastbp ignores it for its default thread count",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    return value


def default_num_threads(environ: Mapping[str, str] | None = None) -> tuple[int, str]:
    """fastbp's thread count when :func:`set_num_threads` was not called, and where it comes from.

    Parameters
    ----------
    environ : mapping, optional
        The environment to read (default ``os.environ``, read once when fastbp is imported).

    Returns
    -------
    n : int
        ``numba.config.NUMBA_NUM_THREADS`` lowered by any of :data:`THREAD_LIMIT_VARS`.
    source : str
        ``"NUMBA_NUM_THREADS"`` or the variable that set the limit, e.g. ``"OMP_NUM_THREADS"``.
    """
    environ = os.environ if environ is None else environ
    n, source = max(1, int(numba.config.NUMBA_NUM_THREADS)), "NUMBA_NUM_THREADS"
    for name in THREAD_LIMIT_VARS:
        raw = environ.get(name)
        cap = None if raw is None else _env_thread_cap(name, raw)
        if cap is not None and cap < n:
            n, source = cap, name
    return n, source


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        # Read at import: the limits the process was started with. Later changes to the
        # environment (Dask's nanny writes its variables into the process that starts it) are
        # not this process's limits: its BLAS was already loaded.
        self.n_threads, self.n_threads_from = default_num_threads()
        self.parallel_min_work = _env_int("FASTBP_PARALLEL_MIN_WORK", DEFAULT_PARALLEL_MIN_WORK)
        self.layer: str | None = None  # resolved lazily at the first parallel launch
        self.parallel_ok: bool | None = None
        self.blas = None  # threadpoolctl controller, created on first use


_state = _State()
_local = threading.local()  # per Python thread: a limit set by limit_threads()


def resolve_layer() -> bool:
    """Load numba's threading layer once; True when parallel kernels may run."""
    with _state.lock:
        if _state.parallel_ok is not None:
            return _state.parallel_ok
        # Respect an explicit user choice; otherwise ask for a thread-safe layer.
        if numba.config.THREADING_LAYER == "default" and "NUMBA_THREADING_LAYER" not in os.environ:
            numba.config.THREADING_LAYER = "threadsafe"
        # GNU OpenMP reads OMP_WAIT_POLICY once, when numba's omp layer loads it. Its
        # default spinning starves OpenBLAS's threads (docs/threading.md, "The trap is real,
        # and depends on the launch pattern": 3.5x slower steps at batch 32), so ask for
        # sleeping workers for that load only and put the environment back: other
        # libraries' OpenMP copies are not ours to tune.
        saved = os.environ.get("OMP_WAIT_POLICY")
        if saved is None:
            os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        try:
            numba.get_num_threads()  # the public call that launches numba's threads, loading the layer
            layer = numba.threading_layer()
        except (ValueError, RuntimeError):
            layer = None
        finally:
            if saved is None:
                os.environ.pop("OMP_WAIT_POLICY", None)
        _state.layer = layer
        _state.parallel_ok = layer in _THREADSAFE_LAYERS
        return _state.parallel_ok


def effective_num_threads() -> int:
    """Threads a kernel launched from this Python thread may use: the global count, lowered by :func:`limit_threads`."""
    limit = getattr(_local, "limit", None)
    return _state.n_threads if limit is None else min(limit, _state.n_threads)


def use_parallel(work: int) -> bool:
    """Whether a kernel over ``work`` elements should run its parallel version."""
    if work < _state.parallel_min_work:  # the common case, checked first: it is on every kernel call
        return False
    n_threads = effective_num_threads()
    if n_threads < 2:
        return False
    if _state.parallel_ok is None:
        resolve_layer()
    if not _state.parallel_ok:
        return False
    # numba's thread count is per calling thread: a new Python thread starts at
    # NUMBA_NUM_THREADS, so carry fastbp's setting into whichever thread calls.
    if numba.get_num_threads() != n_threads:
        numba.set_num_threads(n_threads)
    return True


def blas_controller():
    """The process's threadpoolctl controller (created on first use)."""
    if _state.blas is None:
        _state.blas = ThreadpoolController()
    return _state.blas


def set_num_threads(n: int) -> None:
    """Set the threads used by fastbp: numba's kernels and the BLAS pools.

    Parameters
    ----------
    n : int
        Between 1 and ``numba.config.NUMBA_NUM_THREADS`` (the core count by
        default). BLAS libraries loaded in the process (numpy's OpenBLAS, and any
        other that threadpoolctl finds) are limited to ``n`` too. An explicit call
        wins over the environment's limits (:func:`default_num_threads`).
    """
    # The upper end is numba's NUMBA_NUM_THREADS: the most threads numba can launch.
    n = check(n, "n", Interval(numbers.Integral, 1, int(numba.config.NUMBA_NUM_THREADS)))
    with _state.lock:
        _state.n_threads, _state.n_threads_from = n, "set_num_threads"
    blas_controller().limit(limits=n, user_api="blas")


class _BlasLimits:
    """Process-wide BLAS limits requested by overlapping :func:`limit_threads` blocks.

    BLAS thread pools are per process, so concurrent blocks share one limit:
    the smallest requested, and the original limits come back when the last
    block ends (whatever order the blocks end in).
    """

    def __init__(self):
        self.lock = threading.Lock()
        self.active: dict[int, int] = {}
        self.restore = None  # threadpoolctl limiter holding the limits from before the first block
        self.applied = None

    def enter(self, n: int) -> int:
        with self.lock:
            token = max(self.active, default=0) + 1
            self.active[token] = n
            self._apply()
            return token

    def exit(self, token: int) -> None:
        with self.lock:
            del self.active[token]
            self._apply()

    def _apply(self):
        if not self.active:
            if self.restore is not None:
                self.restore.restore_original_limits()
            self.restore = self.applied = None
            return
        target = min(self.active.values())
        if target == self.applied:
            return
        limiter = blas_controller().limit(limits=target, user_api="blas")
        if self.restore is None:
            self.restore = limiter
        self.applied = target


_blas_limits = _BlasLimits()


@contextlib.contextmanager
def limit_threads(n: int | None):
    """Run a block with at most ``n`` threads: fastbp's kernels (in this Python thread) and BLAS.

    ``None`` changes nothing. numba's count is per Python thread, so other
    threads keep theirs; BLAS pools are per process, so while any block is
    active BLAS uses the smallest limit asked for, and the previous limits are
    restored when the last block ends. This is what keeps
    ``GridSearchCV(n_jobs=...)`` workers or a server's threads from
    oversubscribing the cores.
    """
    n = check(n, "n_threads", NoneValue(), POSITIVE_INT)
    if n is None:
        yield
        return
    previous = getattr(_local, "limit", None)
    _local.limit = int(n) if previous is None else min(int(n), previous)
    token = _blas_limits.enter(int(n))
    try:
        yield
    finally:
        _blas_limits.exit(token)
        _local.limit = previous


@contextlib.contextmanager
def parallel_min_work(n: int):
    """Run a block with the serial/parallel threshold at ``n`` elements (process-wide; 0 makes every kernel parallel).

    For tests and benchmarks; ``FASTBP_PARALLEL_MIN_WORK`` sets it for a whole process.
    """
    n = check(n, "n", Interval(numbers.Integral, 0))
    with _state.lock:
        previous, _state.parallel_min_work = _state.parallel_min_work, n
    try:
        yield
    finally:
        with _state.lock:
            _state.parallel_min_work = previous


def get_num_threads() -> int:
    """The thread count fastbp uses for its kernels and for BLAS."""
    return _state.n_threads


def threading_info() -> dict:
    """What fastbp's threading looks like now: layer, thread counts, BLAS pools."""
    if _state.parallel_ok is None and _state.n_threads > 1:
        resolve_layer()
    return {
        "n_threads": _state.n_threads,
        "n_threads_from": _state.n_threads_from,
        "numba_threading_layer": _state.layer,
        "parallel_kernels": bool(_state.parallel_ok) and _state.n_threads > 1,
        "parallel_min_work": _state.parallel_min_work,
        "blas": [
            {k: info[k] for k in ("internal_api", "num_threads", "version")}
            for info in blas_controller().info()
            if info.get("user_api") == "blas"
        ],
    }
