"""The JIT machinery under every kernel: numba flags, the on-disk cache, the dual compile, activation codes.

This is the bottom of fastbp: :mod:`fastbp.kernels` and their numpy twins in
:mod:`fastbp.reference` import from here, and it imports nothing of fastbp's
but :mod:`fastbp.threads` (which decides, at each call, which compiled version
runs).

Every kernel is compiled twice from one source by :func:`kernel`, a serial
version and a ``prange`` version, and each has its own cache entry. numba's own
cache key holds neither the compile options (so ``parallel=True`` and the
serial build would share one entry) nor the source of helpers in other files
(so an edited :mod:`fastbp.kernels.vmath` would be ignored). fastbp's cache
therefore lives in a folder of its own, keyed by the package version and a
hash of every file kernels are compiled from, and each entry's key includes
the compile options. See :func:`cache_dir`.
"""

from __future__ import annotations

import functools
import hashlib
import os
import types
import warnings
from pathlib import Path

import numba
from numba.core.caching import CompileResultCacheImpl, FunctionCache, UserProvidedCacheLocator

from . import threads
from .version import __version__

# fastmath flags, per kind of kernel; measured by ``python benchmarks/fastmath_flags.py`` and
# reasoned in docs/numerics.md. Never ``nnan``/``ninf`` (softmax of +-inf logits and NaN
# propagation must stay honest). ``contract`` (fused multiply-add) is the only flag an
# elementwise kernel measurably needs (sigmoid 1.2x); ``nsz`` and ``arcp`` bought nothing and
# are gone. ``reassoc`` is what lets LLVM vectorise a reduction ``s += x`` (1.7-9x), but it also
# lets LLVM reorder products: Adam's ``(c2 g) g`` became ``c2 (g g)``, which overflows for
# |g| > 1.8e19 in float32. So only reduction kernels get it, and they contain no product of
# three factors whose order matters (tests/test_numerics_flags.py checks the extremes).
ELEMENTWISE = frozenset({"contract"})
REDUCTION = frozenset({"contract", "reassoc"})

# ``error_model="numpy"``: a division by zero gives inf/nan like numpy instead
# of a Python exception check that stops the loop from vectorising.
# ``nogil``: two Python threads can run kernels at the same time.
JIT_OPTIONS = dict(nogil=True, cache=True, fastmath=set(ELEMENTWISE), error_model="numpy")

# Activation codes: small ints, so one compiled kernel serves every activation.
# The first four need no parameter and differentiate from their output (``bias_act``/``act_backward``);
# the others go through ``bias_act_param``/``act_backward_param`` (fastbp/kernels/activations.py).
IDENTITY, RELU, SIGMOID, TANH = 0, 1, 2, 3
LEAKY_RELU, ELU, GELU, GELU_TANH, SILU, SOFTPLUS = 4, 5, 6, 7, 8, 9

_PACKAGE = Path(__file__).resolve().parent


def _source_hash() -> str:
    """sha256 over the files kernels are compiled from: this file and ``fastbp/kernels/*.py``."""
    h = hashlib.sha256(numba.__version__.encode())
    for path in [Path(__file__).resolve(), *sorted((_PACKAGE / "kernels").glob("*.py"))]:
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def _cache_root() -> Path | None:
    for var, sub in (("FASTBP_CACHE_DIR", ""), ("NUMBA_CACHE_DIR", "fastbp")):
        if os.environ.get(var):
            return Path(os.environ[var]) / sub
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "fastbp"
    try:
        return Path.home() / ".cache" / "fastbp"
    except RuntimeError:  # no home directory to be found
        return None


@functools.lru_cache(maxsize=1)
def cache_dir() -> Path | None:
    """Where compiled kernels are kept: ``<root>/<version>-<source hash>``, or None for no disk cache.

    ``<root>`` is ``$FASTBP_CACHE_DIR``, else ``$NUMBA_CACHE_DIR/fastbp``, else
    ``$XDG_CACHE_HOME/fastbp`` or ``~/.cache/fastbp``. Never inside the package:
    a cache folder left in ``site-packages/fastbp`` would shadow a later
    editable install of the same name. Any edit to a kernel file or to this one
    changes the hash, so stale machine code is never loaded. Read once per process.
    """
    root = _cache_root()
    return None if root is None else root / f"{__version__}-{_source_hash()}"


@functools.cache
def _file_hash(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class _Locator(UserProvidedCacheLocator):
    """numba cache locator: fastbp's cache folder, one sub-folder per module, content-hash stamps."""

    def __init__(self, py_func, py_file):
        self._py_file = py_file
        self._lineno = py_func.__code__.co_firstlineno
        self._cache_path = str(cache_dir().joinpath(*py_func.__module__.split(".")))

    def get_source_stamp(self):
        # Content, not mtime: two checkouts with the same sources share entries instead of evicting each other.
        return _file_hash(self._py_file)

    @classmethod
    def from_function(cls, py_func, py_file):
        if cache_dir() is None:
            return None
        # Skip UserProvidedCacheLocator's own test of NUMBA_CACHE_DIR; its base creates and
        # probes the folder, and gives None when it cannot be written.
        return super(UserProvidedCacheLocator, cls).from_function(py_func, py_file)


class _CacheImpl(CompileResultCacheImpl):
    _locator_classes = [_Locator]


class _Cache(FunctionCache):
    """numba's function cache with the compile options in every entry's key."""

    _impl_class = _CacheImpl

    def __init__(self, py_func, options: dict):
        self._options_key = repr(
            sorted((k, sorted(v) if isinstance(v, (set, frozenset)) else v) for k, v in options.items())
        )
        super().__init__(py_func)

    def _index_key(self, sig, codegen):
        return (*super()._index_key(sig, codegen), self._options_key)


def _renamed(py_func, suffix: str):
    """A copy of ``py_func`` whose qualified name ends in ``.suffix``: its own cache file and symbol names."""
    f = types.FunctionType(
        py_func.__code__, py_func.__globals__, py_func.__name__, py_func.__defaults__, py_func.__closure__
    )
    f.__qualname__ = f"{py_func.__qualname__}.{suffix}"
    f.__module__, f.__doc__, f.__kwdefaults__ = py_func.__module__, py_func.__doc__, py_func.__kwdefaults__
    return f


def jit(py_func, **options):
    """``numba.njit`` with fastbp's options and fastbp's disk cache.

    With nowhere writable to cache (see :func:`cache_dir`), kernels compile in
    every process instead, after one warning.
    """
    opts = {**JIT_OPTIONS, **options}
    cache = opts.pop("cache")
    dispatcher = numba.njit(**opts)(py_func)
    if cache and not numba.config.DISABLE_JIT:
        try:
            # numba has no public hook for another cache: ``cache=True`` always builds its own
            # FunctionCache. Replacing the dispatcher's ``_cache`` is the one private numba attribute
            # fastbp touches; tests/test_cache.py fails if numba stops using it.
            dispatcher._cache = _Cache(py_func, opts)
        except RuntimeError as e:
            if "cannot cache" not in str(e):
                raise
            # One warning per process: Python's default filter shows a warning once per place.
            warnings.warn(
                f"fastbp: no writable kernel cache folder ({cache_dir()}); kernels compile in every "
                "process. Set FASTBP_CACHE_DIR to a writable folder to cache them.",
                RuntimeWarning,
                stacklevel=2,
            )
    return dispatcher


class Kernel:
    """A kernel compiled serially and with ``prange``.

    ``kern(*args)`` runs the parallel version when :func:`fastbp.threads.use_parallel`
    says so for the size of the first argument (the array the kernel walks),
    the serial one otherwise; so a kernel is called exactly like its numpy twin.
    ``kern.serial`` and ``kern.parallel`` are the two numba dispatchers.
    """

    def __init__(self, py_func, fastmath=ELEMENTWISE):
        self.py_func = py_func
        self.fastmath = frozenset(fastmath)
        self.serial = jit(_renamed(py_func, "serial"), fastmath=set(fastmath))
        self.parallel = jit(_renamed(py_func, "parallel"), fastmath=set(fastmath), parallel=True)
        self.__name__ = py_func.__name__
        self.__qualname__ = py_func.__qualname__
        self.__doc__ = py_func.__doc__
        self.__module__ = py_func.__module__

    def __call__(self, *args):
        if threads.use_parallel(args[0].size):
            return self.parallel(*args)
        return self.serial(*args)

    def __repr__(self) -> str:
        return f"<fastbp kernel {self.__qualname__}>"


def kernel(py_func=None, *, reduction: bool = False):
    """Decorator: compile ``py_func`` as a fastbp :class:`Kernel`.

    ``@kernel(reduction=True)`` marks a kernel whose loops sum in floating point:
    it gets :data:`REDUCTION` flags (``reassoc``, so the sums vectorise), the
    others :data:`ELEMENTWISE`.
    """
    flags = REDUCTION if reduction else ELEMENTWISE
    if py_func is None:
        return lambda f: Kernel(f, flags)
    return Kernel(py_func, flags)
