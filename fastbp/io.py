"""Model files: ``save`` / ``load`` as ``.npz`` without pickle.

A file holds a format version, the architecture and dtypes as JSON, the
parameters and buffers (running statistics ...), and optionally the optimizer's
type, hyperparameters and state.
Saving writes a temporary file in the same folder and renames it over the
target, so an interrupted save never destroys the previous file.
"""

from __future__ import annotations

import json
import os
import secrets
import zipfile

import numpy as np

from . import layers as _layers
from . import optim as _optim
from .model import Sequential
from .version import __version__

FORMAT = 1
_MARKER = "__fastbp_format__"
_META = "__meta__"
_LAYERS = {
    cls.__name__: cls
    for cls in (
        _layers.Linear,
        _layers.ReLU,
        _layers.Sigmoid,
        _layers.Tanh,
        _layers.Softmax,
        _layers.Identity,
        _layers.Standardize,
        _layers.Dropout,
        _layers.BatchNorm1d,
        _layers.LayerNorm,
        _layers.LeakyReLU,
        _layers.ELU,
        _layers.GELU,
        _layers.SiLU,
        _layers.Softplus,
    )
}
_OPTIMIZERS = {cls.__name__: cls for cls in (_optim.SGD, _optim.Adam, _optim.AdamW)}


def _arrays(model: Sequential, optimizer, metadata) -> dict:
    meta = {
        "fastbp_version": __version__,
        "format": FORMAT,
        "dtype": None if model.dtype is None else str(model.dtype),
        "layers": [
            {
                "type": type(layer).__name__,
                "config": layer.config(),
                "dtype": None if layer.dtype is None else str(layer.dtype),
            }
            for layer in model.layers
        ],
        "optimizer": None,
        "metadata": metadata if metadata is not None else getattr(model, "metadata", {}),
    }
    for layer in model.layers:
        if type(layer).__name__ not in _LAYERS:
            raise TypeError(f"model: layer {type(layer).__name__} cannot be saved (known: {sorted(_LAYERS)})")
    arrays = {f"param/{k}": a for k, a in model.state_dict().items()}
    if optimizer is not None:
        if type(optimizer).__name__ not in _OPTIMIZERS:
            raise TypeError(f"optimizer: {type(optimizer).__name__} cannot be saved (known: {sorted(_OPTIMIZERS)})")
        index = {id(p): j for j, p in enumerate(model.parameters())}
        if any(id(p) not in index for p in optimizer.params):
            raise ValueError("optimizer: expected an optimizer over parameters of this model")
        sd = optimizer.state_dict()
        # Each group names its parameters by their place in model.parameters().
        groups = [
            {**{k: val for k, val in g.items() if k != "n_params"}, "params": [index[id(p)] for p in pg["params"]]}
            for g, pg in zip(sd["groups"], optimizer.param_groups)
        ]
        meta["optimizer"] = {"type": sd["type"], "t": sd["t"], "hyper": sd["hyper"], "groups": groups}
        for name, arrs in sd["state"].items():
            for i, a in enumerate(arrs):
                arrays[f"opt/{name}/{i}"] = a
    arrays[_MARKER] = np.array(FORMAT)
    arrays[_META] = np.array(json.dumps(meta))
    return arrays


def save(model: Sequential, path, *, optimizer=None, metadata: dict | None = None) -> None:
    """Write ``model`` (and optionally ``optimizer``'s state) to ``path``, atomically.

    Parameters
    ----------
    model : Sequential
    path : str or PathLike; written exactly as given (no suffix is added)
    optimizer : SGD, Adam or AdamW over parameters of ``model`` (in groups or not), or None
    metadata : JSON-serialisable dict stored with the model (default: ``model.metadata``);
        :func:`load` puts it back on ``model.metadata``
    """
    if not isinstance(model, Sequential):
        raise TypeError(f"model: expected a fastbp Sequential, got {type(model).__name__}")
    try:
        arrays = _arrays(model, optimizer, metadata)
    except TypeError as e:
        if "JSON serializable" in str(e):
            raise TypeError(f"metadata: expected JSON-serialisable values: {e}") from None
        raise
    write_atomically(path, lambda fh: np.savez(fh, **arrays))


def write_atomically(path, write) -> None:
    """Call ``write(fh)`` on a temporary file beside ``path``, then rename it to ``path``.

    Readers see the old file or the complete new one, never a half-written
    file; on any error (or Ctrl-C) the temporary file is removed and ``path``
    is untouched. ``path`` is used exactly as given (no suffix is added).
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
    # os.open with 0o666 honours the umask, as a plain open() of the target would.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable; not every platform or filesystem allows it
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def _bad(path, why):
    return ValueError(f"{path}: {why}")


def load(path, *, with_optimizer: bool = False, backend: str = "numba"):
    """Read a model written by :func:`save`.

    Parameters
    ----------
    path : str or PathLike
    with_optimizer : also rebuild the saved optimizer (type, hyperparameters, state)
    backend : "numba" or "numpy" for the rebuilt layers

    Returns
    -------
    model : Sequential, or ``(model, optimizer)`` with ``with_optimizer=True``

    Raises
    ------
    ValueError
        For a truncated, corrupted or foreign file, or one written by a newer fastbp.
    """
    path = os.fspath(path)
    with open(path, "rb") as fh:  # FileNotFoundError / IsADirectoryError speak for themselves
        head = fh.read(4)
    if head[:2] != b"PK":
        raise _bad(path, "not a fastbp model file (not an .npz archive)" if head else "empty file")
    try:
        with np.load(path, allow_pickle=False) as data:
            entries = {k: data[k] for k in data.files}
    except ValueError as e:
        if "allow_pickle" in str(e):  # numpy refused an object array before unpickling it
            raise _bad(
                path,
                "holds a pickled object array, which fastbp model files never contain; refused without unpickling it",
            ) from e
        raise _bad(path, f"not a readable fastbp model file (truncated or corrupted?): {e}") from e
    except (zipfile.BadZipFile, OSError, EOFError, KeyError) as e:
        raise _bad(path, f"not a readable fastbp model file (truncated or corrupted?): {e}") from e
    if _MARKER not in entries or _META not in entries:
        raise _bad(path, f"not a fastbp model file (no {_MARKER!r} entry)")
    version = int(entries[_MARKER])
    if version > FORMAT:
        raise _bad(
            path,
            f"written by a newer fastbp (file format {version}; this fastbp reads up to "
            f"{FORMAT}). Upgrade fastbp to read it.",
        )
    try:
        meta = json.loads(str(entries[_META]))
    except json.JSONDecodeError as e:
        raise _bad(path, f"corrupted metadata: {e}") from e
    arrays = {k: a for k, a in entries.items() if k.startswith(("param/", "opt/"))}
    try:
        model = _rebuild(meta, backend)
        model.load_state_dict({k[len("param/") :]: a for k, a in arrays.items() if k.startswith("param/")})
        model.metadata = dict(meta.get("metadata") or {})
    except (KeyError, TypeError, ValueError) as e:
        raise _bad(path, f"model entries do not match its architecture: {e}") from e
    if not with_optimizer:
        return model
    ometa = meta.get("optimizer")
    if not ometa:
        raise _bad(path, "no optimizer state was saved (save(model, path, optimizer=opt) stores it)")
    cls = _OPTIMIZERS.get(ometa["type"])
    if cls is None:
        raise _bad(path, f"unknown optimizer type {ometa['type']!r}")
    params = model.parameters()
    try:
        if "groups" in ometa:  # files before parameter groups hold one optimizer over model.parameters()
            groups = [{**g, "params": [params[j] for j in g["params"]]} for g in ometa["groups"]]
            opt = cls(groups, **ometa["hyper"], backend=backend)
        else:
            opt = cls(params, **ometa["hyper"], backend=backend)
    except (IndexError, KeyError, TypeError, ValueError) as e:
        raise _bad(path, f"optimizer entries do not match the model: {e}") from e
    state = {}
    for name in opt.state:
        state[name] = [arrays.get(f"opt/{name}/{i}") for i in range(len(opt.params))]
        if any(a is None for a in state[name]):
            raise _bad(path, f"optimizer state {name!r} is incomplete")
    sd = {"type": ometa["type"], "t": ometa["t"], "hyper": ometa["hyper"], "state": state}
    sd["groups"] = [
        {"n_params": len(g["params"]), **{k: val for k, val in g.items() if k != "params"}} for g in opt.param_groups
    ]
    opt.load_state_dict(sd)
    return model, opt


def _rebuild(meta: dict, backend: str) -> Sequential:
    built = []
    for spec in meta["layers"]:
        cls = _LAYERS.get(spec["type"])
        if cls is None:
            raise ValueError(f"unknown layer type {spec['type']!r}")
        # Files before per-layer dtypes hold the model's dtype for every layer.
        dtype = spec["dtype"] if "dtype" in spec else meta["dtype"]
        built.append(cls(**spec.get("config", {}), dtype=None if dtype is None else np.dtype(dtype), backend=backend))
    return Sequential(*built)
