"""Training checkpoints: everything :func:`fastbp.fit` needs to continue a run exactly where it stopped.

``fit(..., checkpoint=PATH)`` writes one; ``fit(..., resume=PATH)`` continues from it, and ends
with the parameters and History (but for its timings) of the run that was never stopped, bit for
bit, given the same data, arguments and thread count. docs/checkpoints.md is the guide.

A checkpoint is one ``.npz`` archive of plain arrays (no pickle), written through
:func:`fastbp.io.write_atomically`, so a process killed at any moment leaves the previous
checkpoint or the new one, never a mix. Its entries:

``__fastbp_checkpoint__``
    the format version (int)
``__meta__``
    a JSON string: the fingerprint of the fit's arguments, the position in the run (epochs
    done, batches done in the next one and that epoch's running sums), the optimizer's
    hyperparameters and step count, the schedule's state, the shuffling generator's state,
    early stopping's counters and the History so far
``model/<key>``
    the model's parameters and buffers, keyed as :meth:`Sequential.state_dict` keys them
    (BatchNorm running statistics, Dropout's seed and step ...)
``optimizer/<name>/<i>``
    the optimizer's state arrays (momentum buffers, Adam's moments)
``best/<key>``
    the weights of the best epoch, kept by early stopping with ``restore_best``
``order``
    the current epoch's order of the training rows, int64 (n,)

A checkpoint of a distributed fit (``fit(..., comm=...)`` over N > 1 MPI ranks, docs/distributed.md)
is written by rank 0 alone and holds what every rank needs: ``order`` and ``__meta__``'s ``rng``
are rank 0's, ``order/<r>`` is rank r's order of its own rows, ``__meta__``'s ``world`` is
``{"size": N, "rng": [every rank's generator state]}``, and the fingerprint's ``data`` and
``validation`` list every rank's digests. It resumes only with the same number of ranks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import numbers
import os
import zipfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import _validate as v
from .io import Archive, ArchiveError, write_atomically
from .model import Sequential
from .optim import Optimizer
from .version import __version__

FORMAT = 1
UNITS = ("epoch", "step")
_MARKER = "__fastbp_checkpoint__"
_META = "__meta__"
_MODEL_FILE_MARKER = "__fastbp_format__"  # what fastbp.save writes: a model file, not a checkpoint
_META_KEYS = (
    "format",
    "fastbp_version",
    "fingerprint",
    "position",
    "optimizer",
    "schedule",
    "rng",
    "monitor",
    "history",
    "model_keys",
    "optimizer_state",
    "best_keys",
)


@dataclass
class Position:
    """Where a run is: ``epochs`` whole epochs done, then ``batches`` steps of the next one.

    ``batches == 0`` means the next epoch has not begun (its rows are not shuffled yet); a
    value equal to the batches of an epoch means its steps are done but not its end
    (validation, History, early stopping, schedule, callbacks). ``total`` (the sum of
    batch loss x batch rows), ``correct`` and ``elapsed`` (seconds spent in its steps) are
    that partial epoch's running sums, so its logged loss and accuracy come out the same.
    """

    epochs: int = 0
    batches: int = 0
    total: float = 0.0
    correct: int = 0
    elapsed: float = 0.0

    @property
    def key(self) -> tuple[int, int]:
        return self.epochs, self.batches

    def describe(self) -> str:
        done = f"{self.epochs} epoch{'' if self.epochs == 1 else 's'}"
        return done + (f" and {self.batches} batches of epoch {self.epochs + 1}" if self.batches else "")


@dataclass
class Checkpoint:
    """A checkpoint read by :func:`read`.

    Attributes
    ----------
    path : the file it was read from
    position : :class:`Position` in the run
    model_state : ``{key: array}`` for ``model.load_state_dict`` (parameters and buffers)
    optimizer_state : for ``optimizer.load_state_dict`` (type, step count ``t``, groups, state arrays)
    schedule_state : for ``lr_schedule.load_state_dict``, or None (no schedule)
    rng_state : the shuffling generator's ``bit_generator.state``
    order : (n,) int64, the current epoch's order of the training rows
    monitor_state : early stopping's ``best``, ``bad_epochs`` and ``best_state`` (``{key: array}`` or None)
    history : the History fields so far (``History(**history)`` rebuilds it)
    fingerprint : the fit's arguments that a resume must repeat
    """

    path: str
    position: Position
    model_state: dict
    optimizer_state: dict
    schedule_state: dict | None
    rng_state: dict
    order: np.ndarray
    monitor_state: dict
    history: dict
    fingerprint: dict = field(repr=False)
    world_size: int = 1
    rank_orders: list | None = field(default=None, repr=False)  # every rank's order (world_size > 1)
    rank_rng_states: list | None = field(default=None, repr=False)


@dataclass
class TrainingState:
    """What a running :func:`fastbp.fit` changes as it trains: what a checkpoint saves and restores.

    ``monitor`` has ``state_dict()`` / ``load_state_dict()``; ``history`` is a History.
    """

    model: Sequential
    optimizer: Optimizer
    lr_schedule: Any
    rng: np.random.Generator
    order: np.ndarray
    monitor: Any
    history: Any
    position: Position = field(default_factory=Position)


# -- the arguments of fit --------------------------------------------------------------------------


def check_arguments(checkpoint, checkpoint_every, checkpoint_unit, resume, lr_schedule):
    """``(checkpoint path or None, every, unit, resume path or None)``, checked; None for a missing ``resume=True``."""
    every = v.positive_int(checkpoint_every, "checkpoint_every")
    unit = v.choice(checkpoint_unit, "checkpoint_unit", UNITS)
    path = None if checkpoint is None else writable_path(checkpoint)
    if resume is None or resume is False:
        source = None
    elif resume is True:
        if path is None:
            raise ValueError("resume: resume=True continues from the checkpoint=PATH file, but checkpoint is None")
        source = path if os.path.exists(path) else None  # a restartable script: the first run starts fresh
    elif isinstance(resume, (str, os.PathLike)):
        source = os.fspath(resume)
        if not os.path.exists(source):
            raise FileNotFoundError(
                f"resume: no checkpoint file {source} "
                "(resume=True with checkpoint=PATH starts afresh when it is missing)"
            )
    else:
        raise TypeError(f"resume: expected a path, True or None, got {type(resume).__name__} {resume!r}")
    if (path is not None or source is not None) and lr_schedule is not None:
        if not (hasattr(lr_schedule, "state_dict") and hasattr(lr_schedule, "load_state_dict")):
            raise TypeError(
                "lr_schedule: checkpoints need a schedule with state_dict() and load_state_dict() (every schedule "
                f"of fastbp.schedules has them), got {type(lr_schedule).__name__}"
            )
    return path, every, unit, source


def writable_path(checkpoint) -> str:
    """``checkpoint`` as a path whose folder exists: refused before training rather than at the first write."""
    if not isinstance(checkpoint, (str, os.PathLike)):
        raise TypeError(f"checkpoint: expected a path or None, got {type(checkpoint).__name__}")
    path = os.fspath(checkpoint)
    if os.path.isdir(path):
        raise ValueError(f"checkpoint: {path} is a folder; expected a file name")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"checkpoint: folder {folder} does not exist")
    return path


# -- the fingerprint: what a resume must repeat ----------------------------------------------------


def digest(*arrays) -> str:
    """A hash of the arrays' dtypes, shapes and values (None, sparse matrices and :class:`fastbp.data.Rows` allowed).

    The bytes hashed are those of the C-ordered array, read a block of rows at a time: no array is
    copied whole (a Fortran-ordered one neither), and the digest is that of the one-piece hash
    fastbp has always computed, so older checkpoints still match. ``Rows`` hash as the array
    converted to their dtype would.
    """
    from .data import c_order_blocks

    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        if a is None:
            h.update(b"none")
            continue
        if hasattr(a, "digest_parts"):  # fastbp.data.Rows: rows read (and converted) block by block
            dtype, shape, blocks = a.digest_parts()
        else:
            if hasattr(a, "toarray"):  # a sparse matrix: its values decide a fit
                a = a.toarray()
            a = np.asarray(a)
            if a.ndim == 0:  # hashed as np.ascontiguousarray made it: shape (1,)
                a = a.reshape(1)
            dtype, shape, blocks = a.dtype, a.shape, c_order_blocks(a)
        h.update(f"{np.dtype(dtype).str}{tuple(shape)}".encode())
        for block in blocks:
            h.update(block.data.cast("B"))
    return h.hexdigest()


def _jsonable(value):
    """``value`` with arrays replaced by digests and numpy scalars by Python ones (for comparing settings)."""
    if isinstance(value, np.ndarray):
        return f"array {value.dtype} {value.shape} {digest(value)}"
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _jsonable(x) for k, x in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(x) for x in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return f"<{type(value).__name__}>"


def _layers(model: Sequential) -> list:
    return [
        {
            "type": type(layer).__name__,
            "dtype": None if layer.dtype is None else str(layer.dtype),
            "config": digest(np.frombuffer(json.dumps(_jsonable(layer.config()), sort_keys=True).encode(), np.uint8)),
            "repr": repr(layer)[:200],  # for messages only
        }
        for layer in model.layers
    ]


def _loss(loss) -> dict:
    settings = {k: x for k, x in vars(loss).items() if not k.startswith("_") and k != "backend"}
    return {"type": type(loss).__name__, "settings": _jsonable(settings)}


def _optimizer(model: Sequential, optimizer) -> dict:
    index = {id(p): j for j, p in enumerate(model.parameters())}
    return {
        "type": type(optimizer).__name__,
        "groups": [[index[id(p)] for p in g["params"]] for g in optimizer.param_groups],
    }


def _seed(seed):
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
        return int(seed)
    if seed is None or isinstance(seed, (list, tuple, np.ndarray)):  # what default_rng takes as entropy
        return _jsonable(seed)
    return f"<{type(seed).__name__}>"  # a Generator or SeedSequence: the checkpoint's generator state replaces it


def fingerprint(model, loss, optimizer, lr_schedule, X, y, validation, settings: dict) -> dict:
    """The fit's arguments a resume must repeat, as JSON values (data as digests).

    Parameters
    ----------
    X : (n, in) training rows; y : (n,) labels or (n, out) targets
    validation : ``(X_val, y_val)`` or None
    settings : ``batch_size``, ``shuffle``, ``seed``, ``early_stopping``, ``patience``, ``min_delta``,
        ``restore_best``, ``clip_norm``
    """
    fp = {
        "model": _layers(model),
        "loss": _loss(loss),
        "optimizer": _optimizer(model, optimizer),
        "lr_schedule": None if lr_schedule is None else type(lr_schedule).__name__,
        "data": {"rows": int(X.shape[0]), "features": int(X.shape[1]), "digest": digest(X, y)},
        "validation": None
        if validation is None
        else {"rows": int(validation[0].shape[0]), "digest": digest(*validation)},
        **{k: _jsonable(x) for k, x in settings.items() if k != "seed"},
        "seed": _seed(settings.get("seed")),
    }
    return json.loads(json.dumps(fp))  # tuples as lists: compared with what a file holds


_SAME = (
    "resume with the arguments of the run that wrote it "
    "(only epochs, callbacks, progress and the checkpoint settings may change)"
)


def compare(saved: dict, current: dict, path: str) -> None:
    """Raise ValueError naming the first argument of ``current`` that differs from the checkpoint's ``saved``."""
    _compare_model(saved.get("model"), current["model"], path)
    for key, now in current.items():
        then = saved.get(key)
        if key == "model" or then == now:
            continue
        if key in ("data", "validation") and isinstance(then, list) and isinstance(now, list) and len(then) == len(now):
            r = next(r for r, (a, b) in enumerate(zip(then, now)) if a != b)
            what = (
                "X, y: the training data" if key == "data" else "validation_data, validation_split: the validation rows"
            )
            raise ValueError(
                f"{what} of rank {r} differ from those that wrote the checkpoint {path} ({_rows(then[r])}, now "
                f"{_rows(now[r])}); {_SAME}"
            )
        if key == "data":
            raise ValueError(
                f"X, y: the training data differ from those that wrote the checkpoint {path} ({_rows(then)}, now "
                f"{_rows(now)}); {_SAME}"
            )
        if key == "validation":
            raise ValueError(
                f"validation_data, validation_split: the validation rows differ from those of the checkpoint {path} "
                f"({_rows(then)}, now {_rows(now)}); {_SAME}"
            )
        if key in ("loss", "optimizer") and isinstance(then, dict) and then.get("type") != now["type"]:
            raise ValueError(
                f"{key}: the checkpoint {path} was written with {key} type {then.get('type')}, "
                f"got {now['type']}; {_SAME}"
            )
        if key == "optimizer":
            raise ValueError(
                f"optimizer: its parameter groups (indices into model.parameters()) were {_get(then, 'groups')} in the "
                f"checkpoint {path}, got {now['groups']}; {_SAME}"
            )
        raise ValueError(f"{key}: the checkpoint {path} was written with {key}={then!r}, got {now!r}; {_SAME}")


def _get(obj, key):
    return obj.get(key) if isinstance(obj, dict) else obj


def _rows(data) -> str:
    if not isinstance(data, dict):
        return "none" if data is None else repr(data)
    return f"{data.get('rows')} rows" + (f" x {data['features']} features" if "features" in data else "")


def _compare_model(then, now: list, path: str) -> None:
    if not isinstance(then, list) or len(then) != len(now):
        shown = len(then) if isinstance(then, list) else then
        raise ValueError(
            f"model: the checkpoint {path} holds a model of {shown} layers, got one of {len(now)}; {_SAME}"
        )
    for i, (a, b) in enumerate(zip(then, now)):
        if not isinstance(a, dict) or {k: a.get(k) for k in ("type", "dtype", "config")} != {
            k: b[k] for k in ("type", "dtype", "config")
        }:
            shown = a.get("repr") if isinstance(a, dict) else a
            raise ValueError(f"model: layers[{i}] is {b['repr']}, in the checkpoint {path} it is {shown}; {_SAME}")


# -- writing ---------------------------------------------------------------------------------------


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _encode(value):
    """A bit generator's state as JSON values: arrays (MT19937's key, Philox's counter) become tagged lists."""
    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.tolist(), "dtype": value.dtype.str}
    if isinstance(value, dict):
        return {k: _encode(x) for k, x in value.items()}
    return value


def _decode(value):
    if isinstance(value, dict):
        if set(value) == {"__ndarray__", "dtype"}:
            return np.array(value["__ndarray__"], dtype=np.dtype(value["dtype"]))
        return {k: _decode(x) for k, x in value.items()}
    return value


def _contents(state: TrainingState, fp: dict, ranks=None) -> tuple[dict, dict]:
    """``(meta, arrays)`` of a checkpoint of ``state``; ``ranks``: every rank's ``(order, rng state)``, or None."""
    model_state = state.model.state_dict()
    opt = state.optimizer.state_dict()
    monitor = state.monitor.state_dict()
    best = monitor["best_state"]
    meta = {
        "format": FORMAT,
        "fastbp_version": __version__,
        "fingerprint": fp,
        "position": dataclasses.asdict(state.position),
        "optimizer": {k: opt[k] for k in ("type", "t", "hyper", "groups")},
        "schedule": None if state.lr_schedule is None else state.lr_schedule.state_dict(),
        "rng": _encode(state.rng.bit_generator.state),
        "monitor": {"best": monitor["best"], "bad_epochs": monitor["bad_epochs"]},
        "history": state.history.as_dict(),
        "model_keys": list(model_state),
        "optimizer_state": {name: len(arrs) for name, arrs in opt["state"].items()},
        "best_keys": None if best is None else list(best),
    }
    arrays = {f"model/{k}": a for k, a in model_state.items()}
    arrays.update({f"optimizer/{n}/{i}": a for n, arrs in opt["state"].items() for i, a in enumerate(arrs)})
    if best is not None:
        arrays.update({f"best/{k}": a for k, a in best.items()})
    arrays["order"] = np.asarray(state.order, dtype=np.int64)
    if ranks is not None:
        meta["world"] = {"size": len(ranks), "rng": [_encode(rng) for _, rng in ranks]}
        arrays.update({f"order/{r}": np.asarray(order, np.int64) for r, (order, _) in enumerate(ranks) if r})
    return meta, arrays


def write(path, state: TrainingState, fp: dict, ranks=None) -> None:
    """Write a checkpoint of ``state`` to ``path`` atomically (the previous file survives any failure or kill).

    ``ranks``: for a distributed fit, every rank's ``(order (n_r,), generator state)``, rank 0's first.
    """
    meta, arrays = _contents(state, fp, ranks)
    arrays[_MARKER] = np.array(FORMAT)
    arrays[_META] = np.array(json.dumps(meta, default=_json_default))
    write_atomically(path, lambda fh: np.savez(fh, **arrays))


class Saver:
    """When :func:`fastbp.fit` writes its checkpoint: every ``every`` epochs or steps, and when it stops.

    With ``path=None`` it writes nothing. With a ``world`` (:class:`fastbp.distributed.World`),
    every rank calls it at the same points and rank 0 writes every rank's order and generator.
    """

    def __init__(self, path: str | None, every: int, unit: str, fp: dict | None, n_batches: int, world=None):
        self.path, self.every, self.unit, self.fp, self.n_batches = path, every, unit, fp, n_batches
        self.world = world
        self._written: tuple[int, int] | None = None
        self._ranks: tuple[int, Any] | None = None  # (epoch whose order it is, gathered ranks)

    def after_step(self, state: TrainingState) -> None:
        pos = state.position
        if self.unit == "step" and (pos.epochs * self.n_batches + pos.batches) % self.every == 0:
            self.save(state)

    def after_epoch(self, state: TrainingState) -> None:
        if self.unit == "epoch" and state.position.epochs % self.every == 0:
            self.save(state)

    def save(self, state: TrainingState) -> None:
        """Write now, unless this position is written already or the parameters are not finite.

        Non-finite parameters (an update that overflowed) would only fail again on resume;
        the previous checkpoint is kept, and the next step raises NonFiniteLossError.
        """
        if self.path is None or self._written == state.position.key:
            return
        if not all(np.isfinite(p.data).all() for p in state.model.parameters()):
            return
        assert self.fp is not None
        if self.world is None or self.world.size == 1:
            write(self.path, state, self.fp)
        else:
            ranks = self._gather(state)
            if self.world.rank == 0:
                write(self.path, state, self.fp, ranks)
        self._written = state.position.key

    def _gather(self, state: TrainingState):
        """Every rank's ``(order, generator state)`` on rank 0, gathered once per epoch (they change only when it
        shuffles)."""
        pos = state.position
        current = pos.epochs + (1 if pos.batches else 0)  # the epoch whose order the rows are in
        if self._ranks is None or self._ranks[0] != current:
            assert self.world is not None
            mine = (np.asarray(state.order, np.int64).copy(), state.rng.bit_generator.state)
            self._ranks = (current, self.world.gather(mine))
        return self._ranks[1]


# -- reading and restoring -------------------------------------------------------------------------


class _Malformed(ValueError):
    pass


def read(path) -> Checkpoint:
    """Read a checkpoint written by ``fit(..., checkpoint=path)``.

    Parameters
    ----------
    path : str or PathLike

    Returns
    -------
    Checkpoint

    Raises
    ------
    ValueError
        For a file that is not a whole fastbp checkpoint (a model file, another archive,
        truncated or corrupted), naming ``path``.
    FileNotFoundError, IsADirectoryError, PermissionError
        When ``path`` cannot be opened.
    """
    path = os.fspath(path)
    try:
        # io.read_archive checks every entry's declared size against its .npy header before
        # reading it: a small file cannot inflate into a large one, and pickles are refused.
        with Archive(path) as archive:
            return _parse(path, archive)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except ArchiveError as e:
        raise ValueError(f"{path}: not a fastbp checkpoint: {e.why}") from None
    except _Malformed as e:
        raise ValueError(f"{path}: {e}") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path}: not a readable fastbp checkpoint (truncated or corrupted?): {e}") from e


def _parse(path: str, npz) -> Checkpoint:
    names = set(npz.files)
    if _MARKER not in names:
        if _MODEL_FILE_MARKER in names:
            raise _Malformed("a fastbp model file (fastbp.load reads it), not a checkpoint (fit(..., checkpoint=PATH))")
        raise _Malformed(f"not a fastbp checkpoint (no {_MARKER!r} entry)")
    version = int(npz[_MARKER])
    if version > FORMAT:
        raise _Malformed(f"written by a newer fastbp (checkpoint format {version}; this one reads up to {FORMAT})")
    meta = json.loads(str(npz[_META][()]))
    if not isinstance(meta, dict) or set(meta) - {"world"} != set(_META_KEYS):
        raise _Malformed(f"metadata: expected the keys {sorted(_META_KEYS)} (and 'world' from a distributed fit)")
    world = meta.get("world")
    size = _world_size(world)
    expected = {_MARKER, _META, "order"} | {f"model/{k}" for k in meta["model_keys"]}
    expected |= {f"order/{r}" for r in range(1, size)}
    expected |= {f"optimizer/{n}/{i}" for n, count in meta["optimizer_state"].items() for i in range(count)}
    expected |= {f"best/{k}" for k in meta["best_keys"] or ()}
    if names != expected:
        raise _Malformed(
            f"entries do not match its metadata (missing {sorted(expected - names)[:3]}, "
            f"unexpected {sorted(names - expected)[:3]})"
        )
    best_keys = meta["best_keys"]
    optimizer_state = {
        **meta["optimizer"],
        "state": {n: [npz[f"optimizer/{n}/{i}"] for i in range(count)] for n, count in meta["optimizer_state"].items()},
    }
    return Checkpoint(
        path=path,
        position=_position(meta["position"]),
        model_state={k: npz[f"model/{k}"] for k in meta["model_keys"]},
        optimizer_state=optimizer_state,
        schedule_state=meta["schedule"],
        rng_state=_decode(meta["rng"]),
        order=npz["order"],
        monitor_state={
            **meta["monitor"],
            "best_state": None if best_keys is None else {k: npz[f"best/{k}"] for k in best_keys},
        },
        history=meta["history"],
        fingerprint=meta["fingerprint"],
        world_size=size,
        rank_orders=None if world is None else [npz["order"]] + [npz[f"order/{r}"] for r in range(1, size)],
        rank_rng_states=None if world is None else [_decode(s) for s in world["rng"]],
    )


def _world_size(world) -> int:
    if world is None:
        return 1
    if (
        not isinstance(world, dict)
        or type(world.get("size")) is not int
        or world["size"] < 2
        or not isinstance(world.get("rng"), list)
        or len(world["rng"]) != world["size"]
    ):
        raise _Malformed(f"metadata: 'world' is not the ranks of a distributed fit: {str(world)[:200]}")
    return world["size"]


def _describe_world(size: int) -> str:
    return "one process" if size == 1 else f"{size} MPI ranks"


def _position(saved: dict) -> Position:
    pos = Position(**saved)
    counts = (pos.epochs, pos.batches, pos.correct)
    if not all(type(n) is int and n >= 0 for n in counts) or not all(
        type(x) is float for x in (pos.total, pos.elapsed)
    ):
        raise _Malformed(f"metadata: position {saved} is not counts and sums of an epoch")
    return pos


def restore(ck: Checkpoint, state: TrainingState, fp: dict, epochs: int, world=None) -> None:
    """Put ``state`` where the checkpoint ``ck`` left its run, after checking that the fit repeats its arguments.

    ``world``: this rank's :class:`fastbp.distributed.World` in a distributed fit (it takes its own
    order and generator state from the checkpoint), or None.

    Raises
    ------
    ValueError
        Naming the argument that differs from the checkpoint's run, or ``epochs`` when it is
        fewer than the checkpoint has trained, or ``resume`` when the number of MPI ranks differs.
    """
    size, rank = (1, 0) if world is None else (world.size, world.rank)
    if ck.world_size != size:
        raise ValueError(
            f"resume: the checkpoint {ck.path} was written by a fit over {_describe_world(ck.world_size)}, this one "
            f"runs over {_describe_world(size)}; resume it with the same number of ranks"
            + (f" (mpiexec -n {ck.world_size})" if ck.world_size > 1 else " (without comm)")
        )
    if ck.rank_orders is not None and ck.rank_rng_states is not None:
        ck = dataclasses.replace(ck, order=ck.rank_orders[rank], rng_state=ck.rank_rng_states[rank])
    compare(ck.fingerprint, fp, ck.path)
    pos = ck.position
    needed = pos.epochs + (1 if pos.batches else 0)
    if epochs < needed:
        raise ValueError(
            f"epochs: the checkpoint {ck.path} has trained {pos.describe()}; expected epochs >= {needed} to "
            f"continue it, got {epochs}"
        )
    _check_order(ck.order, state.order.shape[0], ck.path)
    _check_best(ck)
    _set_rng(state.rng, ck.rng_state, ck.path)
    state.model.load_state_dict(ck.model_state)
    state.optimizer.load_state_dict(ck.optimizer_state)
    if state.lr_schedule is not None:
        state.lr_schedule.load_state_dict(ck.schedule_state)
    state.monitor.load_state_dict(ck.monitor_state)
    _set_history(state.history, ck.history, ck.path)
    np.copyto(state.order, ck.order)
    state.position = dataclasses.replace(pos)


def _check_order(order: np.ndarray, n: int, path: str) -> None:
    # Batches gathers with mode="clip": an index out of range would silently repeat a row.
    if order.shape != (n,) or order.dtype.kind not in "iu" or not np.array_equal(np.sort(order), np.arange(n)):
        raise ValueError(f"{path}: its 'order' entry is not a permutation of the {n} training rows (corrupted?)")


def _check_best(ck: Checkpoint) -> None:
    """The best weights fit the model (checked before anything is loaded: a refused resume changes nothing)."""
    best = ck.monitor_state["best_state"]
    if best is None:
        return
    described = {k: (a.dtype, a.shape) for k, a in ck.model_state.items()}
    if {k: (a.dtype, a.shape) for k, a in best.items()} != described:
        raise ValueError(f"{ck.path}: its best weights ('best/' entries) do not match its model's (corrupted?)")


def _set_rng(rng: np.random.Generator, saved: dict, path: str) -> None:
    kind = type(rng.bit_generator).__name__
    if not isinstance(saved, dict) or saved.get("bit_generator") != kind:
        theirs = saved.get("bit_generator") if isinstance(saved, dict) else saved
        raise ValueError(f"seed: the checkpoint {path} shuffled with a {theirs} generator, this fit's is a {kind}")
    rng.bit_generator.state = saved


def _set_history(history, saved: dict, path: str) -> None:
    fields = history.as_dict()
    if not isinstance(saved, dict) or set(saved) != set(fields):
        raise ValueError(
            f"{path}: its History holds {sorted(saved) if isinstance(saved, dict) else saved!r}, "
            f"expected {sorted(fields)}"
        )
    for k, value in saved.items():
        setattr(history, k, list(value) if isinstance(fields[k], list) else value)
