"""Where training batches come from: arrays of any size and layout, and iterables of batches.

Nothing here copies the data whole. An array (in memory, an ``np.memmap``, or a
``.npy`` path opened read-only memory-mapped) is read through :class:`Rows`,
which gathers a batch's rows by index into reused buffers and converts them to
the model's dtype there (float64 or Fortran-ordered input costs a batch, not a
copy of the data). An iterable of ``(X_batch, y_batch)`` pairs is read through
:class:`Stream`, which checks each batch as it arrives. Either way a
:class:`Feed` hands the batches to the training loop, by default gathering the
next one in a background thread while the current step runs (docs/data.md).
"""

from __future__ import annotations

import mmap
import os
import queue
import threading
from collections.abc import Callable, Iterable

import numpy as np

from ._buffers import BufferPool

# Bytes of the temporary a conversion without a caller's staging buffer gathers through.
STAGE_BYTES = 1 << 20
# Rows per block where whole arrays are read in order (digests, inference): about 8 MB of float64 at width 784.
BLOCK_BYTES = 8 << 20
# How long leaving a feed on a bare KeyboardInterrupt waits for its thread's read to end.
INTERRUPT_JOIN_SECONDS = 1.0


def open_array(a, name: str):
    """``a`` as an ndarray without copying it: a str/PathLike is a ``.npy`` file opened read-only memory-mapped.

    Other array-likes (lists ...) go through ``np.asarray``.
    """
    if isinstance(a, (str, os.PathLike)):
        path = os.fspath(a)
        if not os.path.isfile(path):
            what = "a directory" if os.path.isdir(path) else "no such file"
            raise FileNotFoundError(f"{name}: expected an array or the path of a .npy file, got {path!r} ({what})")
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise ValueError(f"{name}: expected a .npy file, could not read {path!r}: {exc}") from None
        if not isinstance(arr, np.ndarray):  # an .npz archive
            arr.close()
            raise ValueError(f"{name}: expected a .npy file holding one array, got an .npz archive {path!r}")
        return arr
    if isinstance(a, np.ndarray):
        return a
    try:
        return np.asarray(a)
    except ValueError as exc:  # ragged nesting, e.g. a list of (X_batch, y_batch) pairs where one array is expected
        raise ValueError(
            f"{name}: expected an array, got a {type(a).__name__} numpy cannot make one of ({exc})"
        ) from None


def is_mapped(a: np.ndarray) -> bool:
    """Whether ``a`` is (a view of) a memory-mapped file."""
    base: object = a
    while base is not None:
        if isinstance(base, (np.memmap, mmap.mmap)):
            return True
        base = getattr(base, "base", None)
    return False


def block_rows(width: int, itemsize: int = 8) -> int:
    """Rows per block of :data:`BLOCK_BYTES` at ``width`` columns (at least 1)."""
    return max(1, BLOCK_BYTES // max(1, width * itemsize))


def c_order_blocks(a: np.ndarray, block_bytes: int = BLOCK_BYTES):
    """``a``'s values in C order as C-contiguous 1-D pieces of about ``block_bytes`` (one view when ``a`` is C-ordered).

    For hashing an array without copying it whole (:func:`fastbp.checkpoint.digest`).
    """
    if a.flags.c_contiguous:
        yield a.reshape(-1)
        return
    rows = max(1, block_bytes // max(1, a[0].nbytes))  # a non-contiguous array has ndim >= 1
    for start in range(0, a.shape[0], rows):
        yield np.ascontiguousarray(a[start : start + rows]).reshape(-1)


class Rows:
    """A 2-D float array read a block or a batch at a time, converted to ``dtype`` on the way.

    The array itself is never converted or copied whole: it may be float64 for a
    float32 model, Fortran-ordered, read-only or memory-mapped.

    Parameters
    ----------
    array : (N, d) float ndarray (checked by the caller)
    dtype : the dtype the rows are read in
    index : (n,) int array or None; row ``i`` of these rows is ``array[index[i]]`` (a subset in any order)
    """

    __slots__ = ("array", "dtype", "index")

    def __init__(self, array: np.ndarray, dtype, index: np.ndarray | None = None):
        self.array, self.dtype, self.index = array, np.dtype(dtype), index

    @property
    def shape(self) -> tuple:
        n = self.array.shape[0] if self.index is None else self.index.shape[0]
        return (n, self.array.shape[1])

    ndim = 2

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> Rows:
        """Rows ``key`` (a slice) as another :class:`Rows`: a view, nothing is copied."""
        if not isinstance(key, slice):
            raise TypeError(f"Rows: expected a slice, got {type(key).__name__} (use take for rows by index)")
        if self.index is None:
            return Rows(self.array[key], self.dtype)
        return Rows(self.array, self.dtype, self.index[key])

    def subset(self, idx: np.ndarray) -> Rows:
        """Rows ``idx`` (m,) as another :class:`Rows` (only the index is stored)."""
        idx = np.asarray(idx, dtype=np.intp)
        return Rows(self.array, self.dtype, idx if self.index is None else self.index[idx])

    @property
    def direct(self) -> bool:
        """Whether blocks are views of the array (no index, already ``dtype`` and C-ordered)."""
        a = self.array
        return self.index is None and a.dtype == self.dtype and a.flags.c_contiguous

    def take(
        self, idx: np.ndarray, out: np.ndarray, stage: np.ndarray | None = None, index_out: np.ndarray | None = None
    ) -> np.ndarray:
        """Rows ``idx`` (m,) into ``out`` (m, d) of ``dtype``, converted on the way.

        A conversion gathers into ``stage`` ((m, d) of the array's dtype, reused by the caller)
        and casts from there; without one, it goes through a temporary of at most
        :data:`STAGE_BYTES`, a piece of the rows at a time. (``np.take`` into an ``out`` of
        another dtype would first cast ``out``'s old contents into a temporary of ``out``'s size.)
        With an :attr:`index`, the array's row numbers are composed into ``index_out`` ((m,) intp,
        reused by the caller) or a new array.
        """
        if self.index is not None:
            idx = np.take(self.index, idx, out=index_out, mode="clip")  # idx < len(index): never clips
        a, m = self.array, idx.shape[0]
        contiguous = a.flags.c_contiguous
        if contiguous and a.dtype == out.dtype:
            # mode="raise" (the default) makes numpy buffer ``out`` in a temporary; the
            # indices come from a permutation of range(n), so "clip" never clips.
            np.take(a, idx, axis=0, out=out, mode="clip")
            return out
        rows = max(1, STAGE_BYTES // max(1, a.shape[1] * a.dtype.itemsize))
        if not contiguous:
            stage = None  # np.take would first make the whole array C-contiguous (a full copy)
        elif stage is None or stage.shape[0] < m:
            stage = np.empty((min(rows, m), a.shape[1]), a.dtype)
        else:
            rows = m
        for s in range(0, m, rows):
            piece = idx[s : s + rows]
            if stage is not None:
                part = np.take(a, piece, axis=0, out=stage[: piece.shape[0]], mode="clip")
            else:  # indexing gathers these rows alone
                part = a[piece]
            np.copyto(out[s : s + piece.shape[0]], part, casting="same_kind")
        return out

    def block(self, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        """Rows ``start:stop`` in ``dtype``, C-ordered: a view when :attr:`direct`, else copied into ``out``
        (at least ``stop - start`` rows; a new array when None)."""
        if self.direct:
            return self.array[start:stop]
        stop = min(stop, len(self))
        dest = np.empty((stop - start, self.array.shape[1]), self.dtype) if out is None else out[: stop - start]
        if self.index is not None:
            self.take(np.arange(start, stop), dest)
        else:
            np.copyto(dest, self.array[start:stop], casting="same_kind")
        return dest

    def blocks(self, rows: int | None = None):
        """``(start, block)`` over all rows in order, each block C-ordered in ``dtype`` (one reused buffer)."""
        n, d = self.shape
        rows = rows or block_rows(d, max(self.array.dtype.itemsize, self.dtype.itemsize))
        buf = None if self.direct else np.empty((min(rows, n), d), self.dtype)
        for start in range(0, n, rows):
            yield start, self.block(start, min(start + rows, n), buf)

    def digest_parts(self):
        """What :func:`fastbp.checkpoint.digest` hashes: ``(dtype, shape, C-ordered blocks)``, as it would for the
        converted array."""
        return self.dtype, self.shape, (b for _, b in self.blocks())

    def __repr__(self) -> str:
        return f"Rows({self.shape[0]} x {self.shape[1]} {self.array.dtype} read as {self.dtype})"


class ArraySource:
    """Minibatches of :class:`Rows` ``X`` (n, d) and an array ``y`` (n, ...), gathered into reused buffers.

    Each of the two ``slot`` values has its own buffers, so a prefetching thread can fill one while
    the other is trained on. ``prefetch=None`` prefetches where gathering costs more than a copy
    of the batch in memory: from a memory-mapped file (page faults, disk reads), or with a
    conversion (dtype, layout or an index). An in-memory array of the model's dtype is gathered
    in the loop: there the gather is a copy of the batch, and the thread hand-off per batch made
    epochs about 5% slower (784-32-10 MLP, batch 256, 2 cores).
    """

    default_prefetch: bool | None = None  # what prefetch=None means when set (True/False: always/never)

    def __init__(self, X, y: np.ndarray, *, prefetch: bool | None = None):
        self.X = X if isinstance(X, Rows) else Rows(X, X.dtype)
        self.y = y
        self.n = self.X.shape[0]
        if prefetch is None:
            prefetch = self.default_prefetch
        self.prefetch = (not self.X.direct or is_mapped(self.X.array)) if prefetch is None else bool(prefetch)
        self._bufs = (BufferPool(), BufferPool())

    def _buffers(self, m: int, slot: int):
        pool = self._bufs[slot]
        xb = pool.get("x", (m, self.X.shape[1]), self.X.dtype)
        yb = pool.get("y", (m,) + self.y.shape[1:], self.y.dtype)
        return xb, yb

    def gather(self, idx: np.ndarray, slot: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``idx`` (m,) of ``X`` and ``y``, in reused buffers: (m, d) in X's read dtype and (m, ...)."""
        xb, yb = self._buffers(idx.shape[0], slot)
        a = self.X.array
        pool = self._bufs[slot]
        stage = None if a.dtype == xb.dtype else pool.get("stage", xb.shape, a.dtype)
        rows = None if self.X.index is None else pool.get("rows", idx.shape, np.intp)
        self.X.take(idx, xb, stage, rows)
        np.take(self.y, idx, axis=0, out=yb, mode="clip")
        return xb, yb

    def rows(self, start: int, stop: int, slot: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``start:stop`` of ``X`` and ``y``: views when X needs no conversion, else X's in a reused buffer."""
        if self.X.direct:
            return self.X.array[start:stop], self.y[start:stop]
        xb, _ = self._buffers(stop - start, slot)
        return self.X.block(start, stop, xb), self.y[start:stop]

    def epoch(self, order: np.ndarray, batch: int, first: int = 0) -> Feed:
        """A :class:`Feed` of the batches of ``order`` (n,), ``batch`` rows each, from batch number ``first`` on."""
        n_batches = -(-self.n // batch)
        state = {"b": first}

        def produce(slot):
            b = state["b"]
            if b >= n_batches:
                return None
            state["b"] = b + 1
            start = b * batch
            idx = order[start : start + batch]
            return (start, idx, *self.gather(idx, slot))

        return Feed(produce, self.prefetch)


class Stream:
    """An iterable of ``(X_batch, y_batch)`` pairs to train on: pass it as ``X`` (with ``y=None``).

    ``fit`` wraps a bare iterable ``X`` itself; wrapping is needed to turn prefetching off, and
    for ``validation_data`` (where a bare iterable would read as the pair ``(X_val, y_val)``).
    ``iter()`` is called at the start of every epoch, so a list of pairs or an object whose
    ``__iter__`` starts over (a reader re-opening its parquet file, a query re-run) trains for
    many epochs; a generator is good for one.

    Parameters
    ----------
    batches : iterable of (X_batch (m, d) float array, y_batch (m,) labels or (m, k) targets)
    prefetch : bool
        Read the next batch in a background thread while a step runs. Turn it off for
        sources that must be read from the thread that made them (a ``sqlite3`` cursor
        made with the default ``check_same_thread=True``).
    """

    def __init__(self, batches: Iterable, *, prefetch: bool = True):
        if isinstance(batches, Stream):
            batches = batches.batches
        self.batches: Iterable
        if not isinstance(batches, Iterable):
            raise TypeError(f"batches: expected an iterable of (X_batch, y_batch) pairs, got {type(batches).__name__}")
        self.batches, self.prefetch = batches, bool(prefetch)

    def __repr__(self) -> str:
        return f"Stream({type(self.batches).__name__}, prefetch={self.prefetch})"


def is_stream(X, y) -> bool:
    """Whether fit's ``X`` is an iterable of batches rather than an array: a :class:`Stream`, or
    (with ``y=None``) an iterable that is neither an array nor a path."""
    if isinstance(X, Stream):
        return True
    return y is None and not isinstance(X, (np.ndarray, str, os.PathLike)) and isinstance(X, Iterable)


class StreamSource:
    """The batches of a :class:`Stream`, checked and converted as they arrive.

    ``check(i, X_batch, y_batch)`` (given by the caller: it knows the model and loss) returns the
    batch checked, ``X_batch`` (m, d) in the model's dtype and ``y_batch`` in the loss's form;
    its errors name the batch. Both are then copied into this source's buffers, so an iterable
    that reuses one array for every batch cannot change a batch while it is trained on.
    """

    def __init__(self, stream: Stream, check: Callable, name: str = "X", width: int | None = None):
        self.stream, self.check, self.name, self.width = stream, check, name, width
        self.prefetch = stream.prefetch
        self.n = 0  # rows: known once an epoch has been read
        self.epochs = 0
        self._bufs = (BufferPool(), BufferPool())

    @property
    def shape(self) -> tuple:
        """``(rows, width)``: rows 0 until an epoch has been read."""
        return (self.n, self.width)

    def digest_parts(self):
        raise ValueError(
            f"{self.name}: an iterable of batches cannot be fingerprinted for a checkpoint; "
            "pass an array, np.memmap or .npy path"
        )

    def epoch(self, order=None, batch=None, first: int = 0) -> Feed:
        """A :class:`Feed` of the iterable's batches (a new ``iter()``); ``order`` and ``batch`` are not used."""
        if first:
            raise ValueError(f"{self.name}: an iterable of batches cannot resume in the middle of an epoch")
        self.epochs += 1
        epoch = self.epochs
        try:
            it = iter(self.stream.batches)
        except TypeError as exc:
            raise TypeError(f"{self.name}: expected an iterable of (X_batch, y_batch) pairs: {exc}") from None
        state = {"i": 0, "rows": 0}

        def produce(slot):
            i = state["i"]
            try:
                item = next(it)
            except StopIteration:
                if i == 0:
                    raise ValueError(self._empty(epoch, it)) from None
                self.n = state["rows"]
                return None
            try:
                xb, yb = item
            except (TypeError, ValueError):
                raise ValueError(
                    f"{self.name} batch {i}: expected a pair (X_batch, y_batch), got {type(item).__name__}"
                ) from None
            xb, yb = self.check(i, xb, yb)
            pool = self._bufs[slot]
            xbuf = pool.get("x", xb.shape, xb.dtype)
            ybuf = pool.get("y", yb.shape, yb.dtype)
            np.copyto(xbuf, xb)
            np.copyto(ybuf, yb)
            start = state["rows"]
            state["i"], state["rows"] = i + 1, start + xb.shape[0]
            return start, np.arange(start, start + xb.shape[0]), xbuf, ybuf

        return Feed(produce, self.prefetch)

    def _empty(self, epoch: int, it) -> str:
        if epoch > 1 and it is self.stream.batches:
            return (
                f"{self.name}: the iterable of batches yielded none in epoch {epoch}: it is an iterator "
                f"({type(it).__name__}), used up by epoch 1. Pass an iterable whose iter() starts over "
                "(a list, or an object with __iter__ that re-reads the source), or train for one epoch"
            )
        return f"{self.name}: the iterable of batches yielded none in epoch {epoch}; expected at least one batch"


class _Failed:
    """An exception raised in the feed's thread, handed to the main thread."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException):
        self.exc = exc


class Feed:
    """The batches of one epoch, read by ``produce(slot)`` (a batch in slot ``slot``'s buffers, or None at the end).

    With ``prefetch`` one background thread reads ahead: it fills one slot while the batch of the
    other is in use, and fills a slot again only once the training loop has asked for the next
    batch (so a batch in use is never overwritten; one batch is read ahead). The batches are
    those ``produce`` makes either way, so training is bit for bit the same with and without.
    An exception in ``produce`` is raised by :meth:`next`. Use as a context manager: leaving it
    (normally, or on any exception) stops and joins the thread.
    """

    def __init__(self, produce: Callable, prefetch: bool):
        self._produce = produce
        self._thread: threading.Thread | None = None
        self._held: int | None = None
        self._done = False
        if prefetch:
            self._free: queue.SimpleQueue = queue.SimpleQueue()
            self._ready: queue.SimpleQueue = queue.SimpleQueue()
            self._stop = threading.Event()
            self._free.put(0)
            self._free.put(1)
            self._thread = threading.Thread(target=self._work, name="fastbp-prefetch", daemon=True)
            self._thread.start()

    def _work(self) -> None:
        while True:
            slot = self._free.get()
            if slot is None or self._stop.is_set():
                return
            try:
                item = self._produce(slot)
            except BaseException as exc:  # handed to the main thread, which raises it
                self._ready.put(_Failed(exc))
                return
            self._ready.put((slot, item))
            if item is None:
                return

    def next(self):
        """The next batch ``(start, idx, X_batch, y_batch)``, or None after the last.

        ``start`` is the batch's first row in the epoch, ``idx`` (m,) its rows; the batch stays
        valid until the next call.
        """
        if self._thread is None:
            return None if self._done else self._mark(self._produce(0))
        if self._done:
            return None
        if self._held is not None:  # the loop is done with it: the thread may refill it
            self._free.put(self._held)
            self._held = None
        got = self._ready.get()
        if isinstance(got, _Failed):
            self._done = True
            self.close()
            raise got.exc
        slot, item = got
        if item is None:
            self._done = True
            return None
        self._held = slot
        return item

    def _mark(self, item):
        if item is None:
            self._done = True
        return item

    def close(self, timeout: float | None = None) -> None:
        """Stop the thread (after the batch it is reading, if any) and join it (waiting at most ``timeout`` s)."""
        if self._thread is not None:
            self._stop.set()
            self._free.put(None)
            self._thread.join(timeout)

    def __enter__(self) -> Feed:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        # A second Ctrl-C means "stop now": a source stuck in a read (a dead network share) must not
        # hold the main thread; the daemon thread is left to finish that read into its own buffers.
        self.close(INTERRUPT_JOIN_SECONDS if exc_type is KeyboardInterrupt else None)
