"""The one owner of numba flags and threads in fastbp.

Every kernel is compiled twice from one source by :func:`kernel`: a serial
version and a ``prange`` version. Which one runs is decided here, never in a
kernel, from three facts:

* whether a thread-safe numba threading layer is loaded (``omp`` or ``tbb``;
  ``workqueue`` aborts when two Python threads launch parallel kernels at once),
* the thread count set with :func:`set_num_threads`,
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

import numba

# fastmath without ``nnan``/``ninf``: softmax of +-inf logits and NaN
# propagation must stay honest, and ``np.isnan`` must not be folded away.
FASTMATH = {"nsz", "arcp", "contract", "reassoc"}

# ``error_model="numpy"``: a division by zero gives inf/nan like numpy instead
# of a Python exception check that stops the loop from vectorising.
# ``nogil``: two Python threads can run kernels at the same time.
JIT_OPTIONS = dict(nogil=True, cache=True, fastmath=set(FASTMATH), error_model="numpy")

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
        raise ValueError(f"{name}: expected a non-negative integer, got {raw!r}") from None
    if value < 0:
        raise ValueError(f"{name}: expected a non-negative integer, got {raw!r}")
    return value


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.n_threads = max(1, int(numba.config.NUMBA_NUM_THREADS))
        self.parallel_min_work = _env_int("FASTBP_PARALLEL_MIN_WORK", DEFAULT_PARALLEL_MIN_WORK)
        self.layer: str | None = None  # resolved lazily at the first parallel launch
        self.parallel_ok: bool | None = None
        self.blas = None  # threadpoolctl controller, created on first use


_state = _State()
_local = threading.local()  # per Python thread: a limit set by limit_threads()


def _resolve_layer() -> bool:
    """Load numba's threading layer once; True when parallel kernels may run."""
    with _state.lock:
        if _state.parallel_ok is not None:
            return _state.parallel_ok
        from numba.np.ufunc import parallel as _npar

        # Respect an explicit user choice; otherwise ask for a thread-safe layer.
        if numba.config.THREADING_LAYER == "default" and "NUMBA_THREADING_LAYER" not in os.environ:
            numba.config.THREADING_LAYER = "threadsafe"
        # GNU OpenMP reads OMP_WAIT_POLICY once, when numba's omp layer loads it.
        # Its default spinning starves OpenBLAS's threads (PERF-NOTES: 15x slower
        # steps), so ask for sleeping workers for that load only and put the
        # environment back: other libraries' OpenMP copies are not ours to tune.
        saved = os.environ.get("OMP_WAIT_POLICY")
        if saved is None:
            os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        try:
            _npar._launch_threads()
            layer = numba.threading_layer()
        except (ValueError, RuntimeError):
            layer = None
        finally:
            if saved is None:
                os.environ.pop("OMP_WAIT_POLICY", None)
        _state.layer = layer
        _state.parallel_ok = layer in _THREADSAFE_LAYERS
        return _state.parallel_ok


def _threads_here() -> int:
    limit = getattr(_local, "limit", None)
    return _state.n_threads if limit is None else min(limit, _state.n_threads)


def use_parallel(work: int) -> bool:
    """Whether a kernel over ``work`` elements should run its parallel version."""
    if work < _state.parallel_min_work:  # the common case, checked first: it is on every kernel call
        return False
    n_threads = _threads_here()
    if n_threads < 2:
        return False
    if _state.parallel_ok is None:
        _resolve_layer()
    if not _state.parallel_ok:
        return False
    # numba's thread count is per calling thread: a new Python thread starts at
    # NUMBA_NUM_THREADS, so carry fastbp's setting into whichever thread calls.
    if numba.get_num_threads() != n_threads:
        numba.set_num_threads(n_threads)
    return True


_cache_warned = []


def jit(py_func, **options):
    """``numba.njit`` with fastbp's options, falling back to no disk cache when there is nowhere to write one.

    numba looks for a cache folder in ``NUMBA_CACHE_DIR``, then ``__pycache__``
    beside the source, then the user-wide cache; with none writable,
    ``cache=True`` raises at decoration time, which would make ``import fastbp``
    fail. Kernels then compile in every process instead (one warning).
    """
    opts = {**JIT_OPTIONS, **options}
    try:
        return numba.njit(**opts)(py_func)
    except RuntimeError as e:
        if "cannot cache" not in str(e):
            raise
        if not _cache_warned:
            _cache_warned.append(True)
            import warnings

            warnings.warn("fastbp: no writable numba cache folder (site-packages, ~/.cache or NUMBA_CACHE_DIR); "
                          "kernels compile in every process. Set NUMBA_CACHE_DIR to a writable folder to cache them.",
                          RuntimeWarning, stacklevel=3)
        return numba.njit(**{**opts, "cache": False})(py_func)


class Kernel:
    """A kernel compiled serially and with ``prange``.

    ``kern(*args)`` runs the parallel version when :func:`use_parallel` says so
    for the size of the first argument (the array the kernel walks), the serial
    one otherwise; so a kernel is called exactly like its numpy twin.
    ``kern.serial`` and ``kern.parallel`` are the two numba dispatchers.
    """

    def __init__(self, py_func):
        self.py_func = py_func
        self.serial = jit(py_func)
        self.parallel = jit(py_func, parallel=True)
        self.__name__ = py_func.__name__
        self.__qualname__ = py_func.__qualname__
        self.__doc__ = py_func.__doc__
        self.__module__ = py_func.__module__

    def __call__(self, *args):
        if use_parallel(args[0].size):
            return self.parallel(*args)
        return self.serial(*args)

    def __repr__(self) -> str:
        return f"<fastbp kernel {self.__qualname__}>"


def kernel(py_func) -> Kernel:
    """Decorator: compile ``py_func`` as a fastbp :class:`Kernel`."""
    return Kernel(py_func)


def _blas():
    if _state.blas is None:
        from threadpoolctl import ThreadpoolController

        _state.blas = ThreadpoolController()
    return _state.blas


def set_num_threads(n: int) -> None:
    """Set the threads used by fastbp: numba's kernels and the BLAS pools.

    Parameters
    ----------
    n : int
        Between 1 and ``numba.config.NUMBA_NUM_THREADS`` (the core count by
        default). BLAS libraries loaded in the process (numpy's OpenBLAS, and any
        other that threadpoolctl finds) are limited to ``n`` too.
    """
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"n must be an int, got {type(n).__name__}")
    n = int(n)
    hi = int(numba.config.NUMBA_NUM_THREADS)
    if not 1 <= n <= hi:
        raise ValueError(f"n must be between 1 and {hi} (NUMBA_NUM_THREADS), got {n}")
    with _state.lock:
        _state.n_threads = n
    _blas().limit(limits=n, user_api="blas")


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
        limiter = _blas().limit(limits=target, user_api="blas")
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
    if n is None:
        yield
        return
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"n_threads: expected None or an int >= 1, got {n!r}")
    previous = getattr(_local, "limit", None)
    _local.limit = int(n) if previous is None else min(int(n), previous)
    token = _blas_limits.enter(int(n))
    try:
        yield
    finally:
        _blas_limits.exit(token)
        _local.limit = previous


def get_num_threads() -> int:
    """The thread count fastbp uses for its kernels and for BLAS."""
    return _state.n_threads


def threading_info() -> dict:
    """What fastbp's threading looks like now: layer, thread counts, BLAS pools."""
    if _state.parallel_ok is None and _state.n_threads > 1:
        _resolve_layer()
    return {
        "n_threads": _state.n_threads,
        "numba_threading_layer": _state.layer,
        "parallel_kernels": bool(_state.parallel_ok) and _state.n_threads > 1,
        "parallel_min_work": _state.parallel_min_work,
        "blas": [
            {k: info[k] for k in ("internal_api", "num_threads", "version")}
            for info in _blas().info()
            if info.get("user_api") == "blas"
        ],
    }
