"""Data-parallel :func:`fastbp.fit` over MPI: ``fit(..., comm=MPI.COMM_WORLD)``.

Each rank trains on its own rows (its shard); after every step's backward the
gradients of all ranks are averaged by one in-place all-reduce over a flat
buffer that the parameters' ``.grad`` arrays are views into, so every rank
applies the same update. docs/distributed.md is the guide; in short:

- The average is weighted by each rank's loss normalizer (rows for
  cross-entropy, rows x outputs for MSE, the class weights' sum for weighted
  cross-entropy), so a step equals one step on the ranks' batches stacked.
- The buffer's tail carries the step's loss sum, weight, correct count, row
  count, a failure flag and a Ctrl-C flag: a NaN, an error in a rank's step
  or Ctrl-C on any rank is known to every rank after the same step, with no
  extra collective.
- Steps per epoch are the most any rank needs; a rank whose shard has run out
  contributes zeros with weight 0, so unequal shards never deadlock.
- Before training, one agreement point: if any rank's arguments or data are
  refused, every rank raises that exception type with ``"rank r: <message>"``.
  Then all ranks must agree on the settings, and rank 0's parameters and
  optimizer state are broadcast.
- Any other exception on one rank (in a callback, a checkpoint write ...) is
  printed as ``fastbp rank r: Type: message`` and ends the job with
  ``comm.Abort(1)``: no rank is left waiting in a collective.

mpi4py is imported only when a communicator is given (the ``mpi`` extra).
"""

from __future__ import annotations

import functools
import importlib
import math
import os
import sys
import time
import traceback

import numpy as np

_AGREED = "_fastbp_agreed"  # set on exceptions every rank raises alike

# The tail of the all-reduce buffer, after the gradients (in the model's dtype; sums that
# float32 would round are split into a float32 pair, high and low part).
_LOSS_HI, _LOSS_LO, _W_HI, _W_LO, _CORRECT, _ROWS, _FAIL, _STOP = range(8)
_TAIL = 8
# How long a rank that aborts the job waits after writing its message, so that mpiexec forwards
# it before the job is torn down.
_FORWARD_SECONDS = 0.5


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise ImportError(
            f'comm: distributed training needs mpi4py and an MPI library: pip install "fastbp[mpi]" ({e})'
        ) from None
    return MPI


def launched_size() -> int:
    """The number of MPI processes this one was started among by ``mpiexec`` (1 when not under MPI).

    Read from the environment the launchers set (MPICH/Hydra: ``PMI_SIZE``; Open MPI:
    ``OMPI_COMM_WORLD_SIZE``), so it needs no mpi4py.
    """
    for name in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS"):
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 1


def comm_world():
    """``MPI.COMM_WORLD``, or ImportError saying to install ``fastbp[mpi]``."""
    return _mpi().COMM_WORLD


def mark_agreed(exc: BaseException) -> BaseException:
    """Mark ``exc`` as raised alike on every rank (so it is re-raised, not turned into an abort)."""
    try:
        setattr(exc, _AGREED, True)
    except AttributeError:  # an exception type with __slots__: it then counts as unexpected
        pass
    return exc


def is_agreed(exc: BaseException) -> bool:
    return bool(getattr(exc, _AGREED, False))


def _report(exc: BaseException) -> tuple[str, str, str]:
    return type(exc).__module__, type(exc).__qualname__, str(exc)


def _rebuild(report: tuple[str, str, str], text: str, local: BaseException | None) -> BaseException:
    """An exception of the reported type with message ``text`` (RuntimeError when that type cannot be made)."""
    module, qualname, _ = report
    cls = None
    if local is not None and (type(local).__module__, type(local).__qualname__) == (module, qualname):
        cls = type(local)
    else:
        try:
            obj = importlib.import_module(module)
            for part in qualname.split("."):
                obj = getattr(obj, part)
            cls = obj if isinstance(obj, type) and issubclass(obj, BaseException) else None
        except Exception:
            cls = None
    try:
        exc = cls(text) if cls is not None else RuntimeError(f"{qualname}: {text}")
    except Exception:
        exc = RuntimeError(f"{qualname}: {text}")
    return mark_agreed(exc)


class World:
    """An mpi4py intracommunicator as :func:`fastbp.fit` uses it: rank, size and the collectives of a run.

    Parameters
    ----------
    comm : mpi4py ``MPI.Intracomm`` (``MPI.COMM_WORLD``, ``MPI.COMM_SELF`` or a split of them)
    """

    def __init__(self, comm):
        MPI = _mpi()
        if not isinstance(comm, MPI.Intracomm):
            raise TypeError(
                f"comm: expected an mpi4py intracommunicator (e.g. mpi4py.MPI.COMM_WORLD) or None, "
                f"got {type(comm).__name__}"
            )
        self.comm, self.MPI = comm, MPI
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.pending = True  # between the start and an agreement point: a failure is reported, not aborted
        self.rows = 0  # training rows over all ranks, and steps per epoch (set by agree)
        self.steps = 0
        self.rank_rows: list[int] = []

    # -- agreement points ----------------------------------------------------------------------

    def settle(self, failure: BaseException | None = None) -> None:
        """An agreement point: every rank says whether it failed since the last one; if any did, all raise.

        Each rank raises the first failing rank's exception type with ``"rank r: <message>"``.
        """
        reports = self.comm.allgather(None if failure is None else _report(failure))
        self.pending = False
        bad = [(r, rep) for r, rep in enumerate(reports) if rep is not None]
        if not bad:
            return
        r, rep = bad[0]
        others = f" (ranks {', '.join(str(q) for q, _ in bad[1:])} failed too)" if len(bad) > 1 else ""
        exc = _rebuild(rep, f"rank {r}: {rep[2]}{others}", failure)
        if failure is not None:
            raise exc from failure
        raise exc

    def same(self, settings: dict) -> list[dict]:
        """Every rank's ``settings``; ValueError (on every rank) naming the first key on which two ranks differ."""
        everyone = self.comm.allgather(settings)
        for key in settings:
            values = [s.get(key) for s in everyone]
            for r, value in enumerate(values):
                if value != values[0]:
                    raise mark_agreed(
                        ValueError(
                            f"{key}: every MPI rank must give the same {key}; rank 0 has {_short(values[0])}, "
                            f"rank {r} has {_short(value)}"
                        )
                    )
        return everyone

    def agree(self, model, X, validation, settings: dict, fingerprint: dict | None) -> dict | None:
        """The start of a distributed fit, after each rank checked its arguments and data.

        Raises every rank's refusal alike, checks the ranks agree on ``settings`` and the
        model's parameter shapes, and sets :attr:`rows`, :attr:`steps`, :attr:`rank_rows`.
        Returns ``fingerprint`` with every rank's data digests (lists, rank by rank).
        """
        self.settle()
        mine = {
            **settings,
            "model": [(tuple(p.shape), str(p.dtype)) for p in model.parameters()],
            "validation data": validation is not None,
            "columns of X": int(X.shape[1]),
        }
        self.same(mine)
        parts = self.comm.allgather(
            (int(X.shape[0]), None if fingerprint is None else (fingerprint["data"], fingerprint["validation"]))
        )
        self.rank_rows = [n for n, _ in parts]
        self.rows = sum(self.rank_rows)
        batch = settings["batch_size"]
        self.steps = max(-(-n // batch) for n in self.rank_rows)
        if fingerprint is not None and self.size > 1:
            fingerprint = {
                **fingerprint,
                "data": [fp[0] for _, fp in parts],
                "validation": [fp[1] for _, fp in parts],
            }
        return fingerprint

    def begin_local(self) -> None:
        """From here to the next :meth:`settle`, each rank works alone (a failure is reported there)."""
        self.pending = True

    def shuffler(self, seed) -> np.random.Generator:
        """This rank's shuffling generator: its own stream of ``seed`` (the single-process one with one rank)."""
        if self.size == 1 or isinstance(seed, (np.random.Generator, np.random.BitGenerator)):
            return np.random.default_rng(seed)
        if isinstance(seed, np.random.SeedSequence):
            entropy = seed.entropy
        else:
            # seed=None: rank 0's fresh entropy for every rank, so the ranks' streams stay distinct.
            entropy = self.comm.bcast(np.random.SeedSequence(seed).entropy if self.rank == 0 else None, root=0)
        return np.random.default_rng(np.random.SeedSequence(entropy).spawn(self.size)[self.rank])

    def broadcast_start(self, model, optimizer) -> None:
        """Rank 0's parameters, buffers and optimizer state on every rank (as DDP does at the start)."""
        if self.size == 1:
            return
        model.load_state_dict(self.comm.bcast(model.state_dict() if self.rank == 0 else None, root=0))
        optimizer.load_state_dict(self.comm.bcast(optimizer.state_dict() if self.rank == 0 else None, root=0))

    # -- per epoch ------------------------------------------------------------------------------

    def sync_buffers(self, model) -> None:
        """Rank 0's buffers (BatchNorm running statistics, Dropout's counter) on every rank, as DDP does."""
        if self.size == 1:
            return
        for a in model.buffers().values():
            self.comm.Bcast(a, root=0)

    def validation(self, metrics: dict, norm: float, rows: int) -> dict:
        """This rank's validation ``metrics`` (mean loss over ``norm``, accuracy over ``rows``) reduced over ranks."""
        acc = metrics.get("val_accuracy")
        part = np.array([metrics["val_loss"] * norm, norm, 0.0 if acc is None else round(acc * rows), rows])
        self.comm.Allreduce(self.MPI.IN_PLACE, part, op=self.MPI.SUM)
        out = {"val_loss": float(part[0] / part[1])}
        if acc is not None:
            out["val_accuracy"] = float(part[2] / part[3])
        return out

    def any_of(self, *flags: bool) -> list[bool]:
        """Each flag, true when it is true on any rank."""
        if self.size == 1:
            return [bool(f) for f in flags]
        part = np.array([1 if f else 0 for f in flags], np.int64)
        self.comm.Allreduce(self.MPI.IN_PLACE, part, op=self.MPI.MAX)
        return [bool(f) for f in part]

    def gather(self, obj):
        """``obj`` of every rank, as a list on rank 0 (None elsewhere)."""
        return self.comm.gather(obj, root=0)

    # -- failures -------------------------------------------------------------------------------

    def abort(self, exc: BaseException) -> None:
        """Print ``fastbp rank r: Type: message`` (before and after the traceback) to stderr and end every rank."""
        line = f"fastbp rank {self.rank}: {type(exc).__name__}: {exc}\n"
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        # One write, the message first: Abort tears the job down, and output the launcher has not
        # forwarded yet is lost (seen in CI: only the traceback's first line arrived).
        sys.stderr.write(line + text + line)
        sys.stderr.flush()
        time.sleep(_FORWARD_SECONDS)
        self.comm.Abort(1)
        os._exit(1)  # MPICH's Abort may return before the launcher kills this process: nothing more may run

    def epoch(self, local, batch_size: int) -> Epoch:
        return Epoch(local, self, batch_size)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "..."


def collective(fit):
    """Wrap :func:`fastbp.fit` so that with ``comm`` every rank's early failure is raised alike.

    ``comm=None`` calls ``fit`` as it is. With a communicator, ``fit`` gets a :class:`World`; an
    exception raised before its agreement point reaches that point here (the same allgather the
    other ranks are in), and an unexpected one after it aborts the job instead of leaving the
    other ranks waiting.
    """

    @functools.wraps(fit)
    def wrapper(*args, comm=None, **kwargs):
        if comm is None:
            return fit(*args, comm=None, **kwargs)
        world = World(comm)
        try:
            return fit(*args, comm=world, **kwargs)
        except BaseException as e:
            if is_agreed(e) or isinstance(e, SystemExit):
                raise
            if world.pending:
                world.settle(e)  # raises the agreed exception
            if world.size == 1:
                raise
            world.abort(e)
            raise

    return wrapper


# -- the distributed epoch ---------------------------------------------------------------------


class Epoch:
    """One epoch of a distributed fit: the interface of ``training._Epoch`` (``run``, ``n``, ``n_batches``,
    ``batch``, ``loss``), with every step's gradients averaged over the ranks.

    ``local`` is this rank's ``training._Epoch`` (its batches, model, loss, optimizer); the
    parameters' ``.grad`` become views into one flat buffer until :meth:`close`.
    """

    def __init__(self, local, world: World, batch_size: int):
        self.local, self.world = local, world
        self.model, self.loss, self.optimizer, self.params = local.model, local.loss, local.optimizer, local.params
        self.classifier, self.clip_norm, self.progress = local.classifier, local.clip_norm, local.progress
        self.batch = batch_size  # rows per rank per step
        self.n, self.n_local, self.n_batches = world.rows, local.n, world.steps
        dtype = self.model.dtype if self.model.dtype is not None else np.dtype(np.float64)
        sizes = [p.grad.size for p in self.params]
        self.buffer = np.zeros(sum(sizes) + _TAIL, dtype)
        self.grads, self.tail = self.buffer[: sum(sizes)], self.buffer[sum(sizes) :]
        self._own_grads = [p.grad for p in self.params]
        start = 0
        for p, size in zip(self.params, sizes):
            view = self.grads[start : start + size].reshape(p.shape)
            view[...] = p.grad
            p.grad = view  # backward writes straight into the all-reduce buffer
            start += size

    def close(self) -> None:
        """Give the parameters back their own ``.grad`` arrays (holding the last gradients)."""
        for p, own in zip(self.params, self._own_grads):
            own[...] = p.grad
            p.grad = own

    def run(self, epoch: int, order: np.ndarray, interrupted, history, position, after_step) -> dict:
        """As ``training._Epoch.run``; the logs are over every rank's rows."""
        from .loop import count_correct, forward_loss
        from .optim import clip_grad_norm
        from .training import NonFiniteLossError, TrainingInterrupted, _mean_norm

        comm, MPI, tail, grads = self.world.comm, self.world.MPI, self.tail, self.grads
        split = self.buffer.dtype != np.float64
        several = self.world.size > 1
        safe_state = (self.model.state_dict(), self.optimizer.state_dict())  # for a NaN rollback
        for b in range(position.batches, self.n_batches):
            t0 = time.perf_counter()
            start = b * self.batch
            idx = order[start : start + self.batch]
            m = idx.shape[0]
            failure: tuple | None = None
            correct, total, norm = 0, 0.0, 0.0
            if m:
                try:
                    xb, yb = self.local.batches.gather(idx)
                    out, batch_loss = forward_loss(self.model, self.loss, xb, yb)
                    if math.isfinite(batch_loss):
                        if self.classifier:
                            correct = count_correct(out, yb, self.loss)
                        norm = _mean_norm(self.loss, out, yb)
                        total = batch_loss * norm  # the loss's sum over this rank's rows
                        self.model.backward(self.loss.backward(), input_grad=False)
                        if several:  # the sum over this rank's rows (divided by the total weight below)
                            np.multiply(grads, norm, out=grads)
                    else:
                        failure = (
                            "nan",
                            batch_loss,
                            f"epoch {epoch}, batch {b + 1} (rows {start}..{start + m - 1} of rank "
                            f"{self.world.rank}'s epoch order)",
                        )
                except Exception as e:
                    failure = ("error", e, f"{type(e).__name__}: {e}")
            if failure is not None or not m:
                grads.fill(0)
                norm = total = 0.0
            self._set_tail(total, norm, correct, m, failure is not None, interrupted(), split)
            comm.Allreduce(MPI.IN_PLACE, self.buffer, op=MPI.SUM)
            if tail[_FAIL] > 0:
                self._fail(failure, safe_state)
            weight, rows = float(tail[_W_HI]) + float(tail[_W_LO]), int(tail[_ROWS])
            if several:
                np.divide(grads, weight, out=grads)
            if self.clip_norm is not None:
                clip_grad_norm(self.params, self.clip_norm)
            self.optimizer.step()
            # As one process logs the stacked batch: its mean loss times its rows.
            position.total += (float(tail[_LOSS_HI]) + float(tail[_LOSS_LO])) / weight * rows
            position.correct += int(tail[_CORRECT])
            position.batches = b + 1
            position.elapsed += time.perf_counter() - t0
            self.progress.batch(rows)
            after_step()
            if tail[_STOP] > 0:
                pressed = comm.allgather(bool(interrupted()))
                stop = TrainingInterrupted(epoch, b + 1, self.n_batches, history)
                where = ", ".join(str(r) for r, p in enumerate(pressed) if p)
                stop.args = (f"{stop.args[0]} (Ctrl-C on rank {where or '?'})",)
                raise mark_agreed(stop)
        try:  # the parameters are the same on every rank: every rank decides alike
            self.local.check_finite(epoch, self.n_batches, safe_state)
        except NonFiniteLossError as e:
            mark_agreed(e)
            raise
        return self.local.logs(position, self.n)

    def _set_tail(self, total, norm, correct, m, failed, pressed, split) -> None:
        tail = self.tail
        if split:  # a float32 pair holds what one float32 would round (per-step sums of many ranks)
            hi = tail.dtype.type(total)
            tail[_LOSS_HI], tail[_LOSS_LO] = hi, total - float(hi)
            hi = tail.dtype.type(norm)
            tail[_W_HI], tail[_W_LO] = hi, norm - float(hi)
        else:
            tail[_LOSS_HI], tail[_LOSS_LO], tail[_W_HI], tail[_W_LO] = total, 0.0, norm, 0.0
        tail[_CORRECT], tail[_ROWS] = correct, m
        tail[_FAIL], tail[_STOP] = (1.0 if failed else 0.0), (1.0 if pressed else 0.0)

    def _fail(self, failure, safe_state) -> None:
        """Some rank's step failed: every rank raises the lowest failing rank's error (no step was taken)."""
        mine = None
        if failure is not None:
            kind, what, text = failure
            mine = (kind, _report(what) if kind == "error" else repr(float(what)), text)
        reports = self.world.comm.allgather(mine)
        r, (kind, what, text) = next((r, rep) for r, rep in enumerate(reports) if rep is not None)
        if kind == "error":
            local = failure[1] if failure is not None and failure[0] == "error" else None
            exc = _rebuild(what, f"rank {r}: {what[2]}", local)
            if local is not None:
                raise exc from local
            raise exc
        exc = self.local.loss_error(what, text, safe_state)
        raise mark_agreed(type(exc)(f"rank {r}: {exc}"))
