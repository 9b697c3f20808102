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

A damaged cache never stops fastbp: every index and data file carries a
checksum, an entry that cannot be read (truncated, overwritten, a bit flipped)
is removed and its kernel recompiled, and a cache that cannot be written (a
full disk, a read-only folder) leaves the compiled kernel in memory; each case
warns once per process with a :class:`KernelCacheWarning`.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import hashlib
import os
import pickle
import secrets
import types
import warnings
from pathlib import Path

import numba
from numba.core.caching import CompileResultCacheImpl, FunctionCache, UserProvidedCacheLocator
from numba.core.serialize import dumps

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


class KernelCacheWarning(RuntimeWarning):
    """fastbp's kernel cache could not be used (unreadable entries, or nowhere to write); kernels compile instead."""


_warned: set[str] = set()  # kinds of cache trouble already reported in this process


def _warn_once(kind: str, message: str) -> None:
    """Warn about ``kind`` of cache trouble once per process: every kernel would report the same fault."""
    if kind in _warned:
        return
    _warned.add(kind)
    warnings.warn(message, KernelCacheWarning, stacklevel=3)


class CorruptCacheFile(ValueError):
    """A kernel cache file that is not a complete file written by this fastbp (its checksum does not match)."""


# Every cache file is _MAGIC, the sha256 of the payload, then the payload (a pickle). numba's own
# files are bare pickles: a truncated or overwritten one fails to unpickle, but a flipped byte in
# the machine code would load and run. The checksum turns every kind of damage into a miss.
_MAGIC = b"fastbp-kernel-cache-1\n"
_HEAD = len(_MAGIC) + hashlib.sha256().digest_size


def _pack(payload: bytes) -> bytes:
    return _MAGIC + hashlib.sha256(payload).digest() + payload


def _unpack(raw: bytes, path: Path) -> bytes:
    """The payload of a cache file, or CorruptCacheFile when ``raw`` is not exactly what :func:`_pack` wrote."""
    if len(raw) < _HEAD or not raw.startswith(_MAGIC):
        raise CorruptCacheFile(f"{path}: not a fastbp kernel cache file ({len(raw)} bytes without its header)")
    if hashlib.sha256(raw[_HEAD:]).digest() != raw[len(_MAGIC) : _HEAD]:
        raise CorruptCacheFile(f"{path}: checksum mismatch (truncated, overwritten or damaged)")
    return raw[_HEAD:]


def _write(path: Path, payload: bytes) -> None:
    """Write ``path`` through a temporary file and a rename: readers see the old file or the whole new one."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as fh:
            fh.write(_pack(payload))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):  # a full disk may leave it half written
            os.unlink(tmp)
        raise


class _CacheFile:
    """One function's cache files: the index ``<base>.nbi`` and data files ``<base>.<n>.nbc``, checksummed.

    It stands in for numba's ``IndexDataCacheFile`` (same names and the same
    three methods: ``load``, ``save``, ``flush``), which trusts whatever it
    reads. Damage raises :class:`CorruptCacheFile` (or the unpickling error),
    for :meth:`_Cache.load_overload` to turn into a miss; a data file removed
    since the index was read is a plain miss.
    """

    def __init__(self, cache_path: str, filename_base: str, source_stamp):
        self._folder = Path(cache_path)
        self._base = filename_base
        self._index = self._folder / f"{filename_base}.nbi"
        self._stamp = source_stamp

    def _read(self, path: Path):
        payload = _unpack(path.read_bytes(), path)
        try:
            return pickle.loads(payload)
        except Exception as e:  # a checksummed payload this numba cannot read (it cannot be another numba's)
            raise CorruptCacheFile(f"{path}: unreadable entry ({type(e).__name__}: {e})") from e

    def _overloads(self) -> dict:
        """The index's ``{key: data file name}``; empty when there is no index or it is for other sources."""
        try:
            content = self._read(self._index)
        except FileNotFoundError:
            return {}
        if not (isinstance(content, tuple) and len(content) == 3 and isinstance(content[2], dict)):
            raise CorruptCacheFile(f"{self._index}: not a kernel cache index")
        version, stamp, overloads = content
        return overloads if (version, stamp) == (numba.__version__, self._stamp) else {}

    def load(self, key):
        name = self._overloads().get(key)
        if name is None:
            return None
        try:
            return self._read(self._folder / name)
        except FileNotFoundError:  # removed by another process since the index was read
            return None

    def save(self, key, data) -> None:
        try:
            overloads = self._overloads()
        except (CorruptCacheFile, OSError):  # a damaged index is replaced, not fatal
            overloads = {}
        name = overloads.get(key) or self._free_name(overloads)
        # The data file first: an index never names a file that is not there yet.
        _write(self._folder / name, dumps(data))
        overloads[key] = name
        self._save_index(overloads)

    def flush(self) -> None:
        self._save_index({})

    def _save_index(self, overloads: dict) -> None:
        _write(self._index, dumps((numba.__version__, self._stamp, overloads)))

    def _free_name(self, overloads: dict) -> str:
        """The first ``<base>.<n>.nbc`` no entry uses (of n = 1 .. len + 1, one is free)."""
        used = set(overloads.values())
        names = (f"{self._base}.{n}.nbc" for n in range(1, len(used) + 2))
        return next(name for name in names if name not in used)

    def discard(self) -> None:
        """Remove the index and every data file of this function (after damage: they recompile)."""
        for path in [self._index, *self._folder.glob(f"{glob.escape(self._base)}.*.nbc")]:
            with contextlib.suppress(OSError):
                path.unlink()


class _Cache(FunctionCache):
    """numba's function cache with the compile options in every entry's key, checksummed files and no fatal errors.

    Loading an entry that is damaged in any way is a miss (the entry is removed,
    the kernel compiles and is saved again); failing to save one (ENOSPC, EACCES,
    a read-only folder) keeps the compiled kernel in memory. Both warn once per process.
    """

    _impl_class = _CacheImpl

    def __init__(self, py_func, options: dict):
        self._options_key = repr(
            sorted((k, sorted(v) if isinstance(v, (set, frozenset)) else v) for k, v in options.items())
        )
        super().__init__(py_func)
        # numba's Cache builds its IndexDataCacheFile here and reads and writes only through it.
        self._cache_file = _CacheFile(self.cache_path, self._impl.filename_base, self._impl.locator.get_source_stamp())

    def _index_key(self, sig, codegen):
        return (*super()._index_key(sig, codegen), self._options_key)

    def load_overload(self, sig, target_context):
        try:
            return super().load_overload(sig, target_context)
        except Exception as e:  # any damage (CorruptCacheFile, OSError, numba failing to rebuild): a miss
            self._cache_file.discard()
            _warn_once(
                "load",
                f"fastbp: damaged kernel cache entry in {self.cache_path} ({type(e).__name__}: {e}); "
                "removed, the kernels recompile and are cached again",
            )
            return None

    def save_overload(self, sig, data):
        try:
            super().save_overload(sig, data)
        except Exception as e:  # the kernel is compiled: a cache that cannot take it must not stop the caller
            _warn_once(
                "save",
                f"fastbp: cannot write the kernel cache in {self.cache_path} ({type(e).__name__}: {e}); "
                "the compiled kernels are used in this process and compile again in the next",
            )


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
            # FunctionCache. fastbp touches three private numba attributes: the dispatcher's ``_cache``
            # (replaced here), and the cache's ``_impl`` and ``_cache_file`` (in _Cache.__init__);
            # tests/test_cache.py and tests/test_cache_faults.py fail if numba stops using them.
            dispatcher._cache = _Cache(py_func, opts)
        except RuntimeError as e:
            if "cannot cache" not in str(e):
                raise
            # One warning per process: Python's default filter shows a warning once per place.
            warnings.warn(
                f"fastbp: no writable kernel cache folder ({cache_dir()}); kernels compile in every "
                "process. Set FASTBP_CACHE_DIR to a writable folder to cache them.",
                KernelCacheWarning,
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
        work = args[0].size
        # Small work is decided here without a call: this runs on every kernel call of a predict.
        if work >= threads._state.parallel_min_work and threads.use_parallel(work):
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
