"""Checkpoints of the estimators' stochastic fits (``checkpoint=PATH``): written every
``checkpoint_every`` iterations, and a ``fit`` that finds its file continues from it.

A checkpoint holds what the loop carries from one iteration to the next: the
fitted arrays (``coefs_``, ``intercepts_``, batch-norm state), the solver's
state (velocities or Adam's moments, its step and learning rate), the loss
curve and stopping counters, early stopping's best arrays, the shuffled sample
order, the dropout step and the random state, both as it was when ``fit``
started (so that the initialisation and the early-stopping split are drawn
again exactly) and as it is now. It is an ``.npz`` without pickle, written with
:func:`fastbp.io.write_atomically`, so a process killed at any moment leaves
the previous checkpoint whole. A fit resumed from it ends with the arrays of
the fit never stopped, bit for bit (same thread count).

What must match to resume (the fingerprint): every parameter but ``max_iter``
(which may grow), ``verbose``, ``n_threads`` and the checkpoint's own, and the
data (a digest of ``X``, ``y`` and ``sample_weight``); else a ValueError names
what differs.
"""

from __future__ import annotations

import json

import numpy as np

from ..checkpoint import digest, writable_path
from ..io import Archive, ArchiveError, write_atomically

FORMAT = 1
_MARKER = "__fastbp_sklearn_checkpoint__"
_META = "__meta__"
# Parameters a resume may change: they do not change the trajectory.
_FREE = {"max_iter", "verbose", "n_threads", "checkpoint", "checkpoint_every"}
_SCALARS = (bool, int, float, str, type(None))


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(x) for x in value]
    return value if isinstance(value, _SCALARS) else repr(type(value).__name__)


def fingerprint(est, X, Y, sw) -> dict:
    params = {k: _plain(val) for k, val in est.get_params().items() if k not in _FREE}
    return {"estimator": type(est).__name__, "params": params, "data": digest(X, Y, sw)}


def check_arguments(est) -> str | None:
    """``est.checkpoint`` as a path (its folder must exist), or None."""
    return None if est.checkpoint is None else writable_path(est.checkpoint)


# -- the random state: numpy's legacy RandomState, as arrays and JSON ----------------------------------


def _rng_state(rs) -> tuple[dict, np.ndarray]:
    name, keys, pos, has_gauss, cached = rs.get_state()
    return {"name": name, "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)}, keys


def _set_rng(rs, meta: dict, keys: np.ndarray) -> None:
    rs.set_state((meta["name"], keys, meta["pos"], meta["has_gauss"], meta["cached"]))


# -- the solver's state: its arrays (in place: fused steps alias them) and scalars ---------------------


def _solver_state(solver) -> tuple[dict, dict]:
    """``(scalars, arrays)``: the solver's numbers and flags, and its arrays by attribute (lists of them)."""
    scalars: dict = {}
    arrays: dict = {}
    for k, val in vars(solver).items():
        if isinstance(val, np.ndarray):
            arrays[k] = [val]
        elif isinstance(val, (list, tuple)) and val and all(isinstance(a, np.ndarray) for a in val):
            arrays[k] = list(val)
        elif isinstance(val, _SCALARS):
            scalars[k] = val
        else:
            raise TypeError(f"checkpoint: cannot save the solver's {k!r} ({type(val).__name__})")
    return scalars, arrays


def _restore_solver(solver, scalars: dict, arrays: dict) -> None:
    for k, val in scalars.items():
        setattr(solver, k, val)
    for k, saved in arrays.items():
        dest = getattr(solver, k)
        for d, a in zip([dest] if isinstance(dest, np.ndarray) else dest, saved):
            np.copyto(d, a)  # in place: a fused step holds these very arrays


# -- write and read -------------------------------------------------------------------------------------

_STATE = ("n_iter_", "t_", "loss_", "loss_curve_", "best_loss_", "_no_improvement_count")
_STATE_ES = ("validation_scores_", "best_validation_score_")


def save(path, est, solver, net, sample_idx, start_rng, stopped: bool, fp: dict) -> None:
    """Write the loop's state after an iteration to ``path``, atomically."""
    rng_meta, rng_keys = _rng_state(est._random_state)
    solver_scalars, solver_arrays = _solver_state(solver)
    groups = {
        "coefs": est.coefs_,
        "intercepts": est.intercepts_,
        "extra": est._extra_state(),
        "best_coefs": est._best_coefs,
        "best_intercepts": est._best_intercepts,
        "best_extra": getattr(est, "_best_extra", []),
    }
    groups.update({f"solver/{k}": items for k, items in solver_arrays.items()})
    arrays = {f"{g}/{i}": a for g, items in groups.items() for i, a in enumerate(items)}
    arrays["sample_idx"] = sample_idx
    arrays["rng_keys"], arrays["start_rng_keys"] = rng_keys, start_rng[1]
    state = {k: _plain(getattr(est, k)) for k in _STATE}
    if est.early_stopping:
        state.update({k: _plain(getattr(est, k)) for k in _STATE_ES})
    meta = {
        "fingerprint": fp,
        "state": state,
        "counts": {g: len(items) for g, items in groups.items()},
        "solver": solver_scalars,
        "rng": rng_meta,
        "start_rng": start_rng[0],
        "dropout_step": int(getattr(net, "step", 0)),
        "stopped": bool(stopped),
    }
    arrays[_META] = np.array(json.dumps(meta))
    arrays[_MARKER] = np.array(FORMAT)
    write_atomically(path, lambda fh: np.savez(fh, **arrays))


class Checkpoint:
    """What :func:`read` found: ``meta`` (JSON values) and ``arrays`` (by entry name)."""

    def __init__(self, path: str, meta: dict, arrays: dict):
        self.path, self.meta, self.arrays = path, meta, arrays

    def group(self, name: str) -> list:
        return [self.arrays[f"{name}/{i}"] for i in range(self.meta["counts"][name])]

    def start_rng(self):
        return self.meta["start_rng"], self.arrays["start_rng_keys"]


def read(path: str) -> Checkpoint:
    """The checkpoint at ``path``; a ValueError naming it for anything that is not a whole one."""
    try:
        with Archive(path) as archive:  # entry sizes checked before anything is inflated; no pickles
            names = set(archive.files)
            if _MARKER not in names or _META not in names:
                raise ValueError("not a fastbp.sklearn checkpoint")
            if int(archive[_MARKER]) > FORMAT:
                raise ValueError(f"written by a newer fastbp (format {int(archive[_MARKER])})")
            meta = json.loads(str(archive[_META][()]))
            if not isinstance(meta, dict) or not {"fingerprint", "state", "counts", "solver", "rng"} <= set(meta):
                raise ValueError("its metadata is incomplete")
            expected = {_MARKER, _META, "sample_idx", "rng_keys", "start_rng_keys"}
            expected |= {f"{g}/{i}" for g, n in meta["counts"].items() for i in range(int(n))}
            if names != expected:  # before reading any array: an extra entry is never inflated
                raise ValueError(
                    f"entries do not match its metadata (missing {sorted(expected - names)[:3]}, "
                    f"unexpected {sorted(names - expected)[:3]})"
                )
            arrays = {k: archive[k] for k in sorted(expected - {_MARKER, _META})}
        return Checkpoint(path, meta, arrays)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except ArchiveError as e:
        raise ValueError(f"checkpoint: {path}: not a readable fastbp.sklearn checkpoint ({e.why})") from None
    except (ValueError, KeyError, TypeError, OSError, EOFError, AttributeError) as e:
        raise ValueError(f"checkpoint: {path}: not a readable fastbp.sklearn checkpoint ({e})") from None
    except Exception as e:  # zipfile.BadZipFile and other archive errors
        raise ValueError(f"checkpoint: {path}: not a readable fastbp.sklearn checkpoint ({e})") from None


def check_fingerprint(ck: Checkpoint, fp: dict) -> None:
    """A ValueError naming the first parameter (or the data) in which ``fp`` differs from the checkpoint's."""
    old = ck.meta["fingerprint"]
    if old.get("estimator") != fp["estimator"]:
        raise ValueError(f"checkpoint: {ck.path} was written by {old.get('estimator')}, not {fp['estimator']}")
    for k in sorted(set(old["params"]) | set(fp["params"])):
        if old["params"].get(k) != fp["params"].get(k):
            raise ValueError(
                f"{k}: the checkpoint {ck.path} was written with {k}={old['params'].get(k)!r}, this fit has "
                f"{k}={fp['params'].get(k)!r} (delete the file to start a new fit)"
            )
    if old["data"] != fp["data"]:
        raise ValueError(
            f"X: the checkpoint {ck.path} was written for other data (X, y or sample_weight differ); "
            "delete the file to start a new fit"
        )


def restore(ck: Checkpoint, est, solver, net) -> np.ndarray:
    """Put the checkpoint's state into ``est``, its solver and network (in place); returns the sample order."""
    for name, dest in (("coefs", est.coefs_), ("intercepts", est.intercepts_), ("extra", est._extra_state())):
        for d, s in zip(dest, ck.group(name)):
            np.copyto(d, s)
    est._best_coefs = [a.copy() for a in ck.group("best_coefs")]
    est._best_intercepts = [a.copy() for a in ck.group("best_intercepts")]
    est._best_extra = [a.copy() for a in ck.group("best_extra")]
    for k, val in ck.meta["state"].items():
        setattr(est, k, list(val) if isinstance(val, list) else val)
    lists = {g[len("solver/") :]: ck.group(g) for g in ck.meta["counts"] if g.startswith("solver/")}
    _restore_solver(solver, ck.meta["solver"], lists)
    _set_rng(est._random_state, ck.meta["rng"], ck.arrays["rng_keys"])
    if hasattr(net, "dropouts"):
        for drop in net.dropouts:
            drop.buffers()["step"][0] = ck.meta["dropout_step"]
    return ck.arrays["sample_idx"].copy()
