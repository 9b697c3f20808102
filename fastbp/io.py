"""Model files: ``save`` / ``load`` as ``.npz`` without pickle.

A file holds a format version, the architecture and dtypes as JSON, the
parameters and buffers (running statistics ...), and optionally the optimizer's
type, hyperparameters and state.

Saving writes a temporary file in the same folder and renames it over the
target, so an interrupted save never destroys the previous file; temporary
files left by a killed save are removed by the next save of the same target.

Loading trusts nothing in the file. It reads the archive's directory, the
format marker and the JSON metadata, checks the metadata strictly, and derives
from it every entry the file must hold, with its shape and dtype. Only when the
directory matches (names, declared sizes, compression) does it read arrays,
each checked (header, shape, dtype, size, finite values) before any layer is
built around it; so a small file cannot make it allocate or inflate more than
the model it describes. Every malformed file raises ``ValueError`` naming the
path and what is wrong.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
import sys
import zipfile
import zlib
from typing import NamedTuple

import numpy as np

from . import _validate as v
from . import layers as _layers
from . import optim as _optim
from ._atomic import write_atomically
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

# -- the metadata's schema ------------------------------------------------------------------
#
# JSON types only; the values are then checked by the constructors they are passed to.
_NONE = type(None)
_REAL = (int, float)
_TOP = {
    "fastbp_version": (str,),
    "format": (int,),
    "dtype": (str, _NONE),
    "layers": (list,),
    "optimizer": (dict, _NONE),
    "metadata": (dict, _NONE),
}
_SPEC = {"type": (str,), "config": (dict,), "dtype": (str, _NONE)}
# Every key a layer's config() writes (tests/test_io_faults.py checks them against the constructors).
_CONFIG: dict[str, dict[str, tuple]] = {
    "Linear": {
        "in_features": (int,),
        "out_features": (int,),
        "bias": (bool,),
        "activation": (str, _NONE),
        "activation_params": (dict, _NONE),
        "init": (str,),
    },
    "BatchNorm1d": {
        "num_features": (int,),
        "eps": _REAL,
        "momentum": (*_REAL, _NONE),
        "affine": (bool,),
        "track_running_stats": (bool,),
    },
    "LayerNorm": {"num_features": (int,), "eps": _REAL, "elementwise_affine": (bool,)},
    "Standardize": {"mean": (list,), "std": (list,), "inverse": (bool,)},
    "Dropout": {"p": _REAL},
    "LeakyReLU": {"negative_slope": _REAL},
    "ELU": {"alpha": _REAL},
    "GELU": {"approximate": (str,)},
    "Softplus": {"beta": _REAL, "threshold": _REAL},
    **{name: {} for name in ("ReLU", "Sigmoid", "Tanh", "Softmax", "Identity", "SiLU")},
}
_REQUIRED = {
    "Linear": ("in_features", "out_features"),
    "BatchNorm1d": ("num_features",),
    "LayerNorm": ("num_features",),
    "Standardize": ("mean", "std"),
}
_WITH_PARAMETERS = ("Linear", "BatchNorm1d", "LayerNorm")  # need a float dtype (their arrays have it)
_OPTIMIZER = {"type": (str,), "t": (int,), "hyper": (dict,), "groups": (list,)}
_HYPER = {
    "lr": _REAL,
    "momentum": _REAL,
    "weight_decay": _REAL,
    "nesterov": (bool,),
    "betas": (list,),
    "eps": _REAL,
}
_JSON_KIND = {
    int: "an integer",
    float: "a number",
    str: "a string",
    bool: "true or false",
    _NONE: "null",
    list: "an array",
    dict: "an object",
}

# -- limits that keep a small or hostile file from costing more than the model it describes ------
_MAX_DEPTH = 100  # JSON nesting; a model's own metadata nests 5 levels, json.loads recurses in C
_MAX_META_BYTES = 1 << 28  # the metadata entry (UTF-32); a Standardize of 1M features takes ~160 MB
_MAX_HEADER = 1 << 14  # an .npy header (numpy's own limit is 10000 bytes)
_MAX_RATIO = 1032  # deflate's largest expansion: a declared size beyond it is a lie
_MAX_FREE_WIDTH = 1 << 20  # widths no array in the file vouches for (norm layers without parameters)
_CHUNK = 1 << 24  # bytes read at a time into an array
_MAX_STEP = 2**63 - 1


class _Malformed(Exception):
    """What is wrong with a model file, without its path (``load`` adds it)."""


def _bad(path, why):
    return ValueError(f"{path}: {why}")


def _kind(value) -> str:
    return _JSON_KIND.get(type(value), type(value).__name__)


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_object(obj, where: str, types: dict, required=()) -> dict:
    """``obj`` if it is a JSON object with only keys of ``types``, each of one of its JSON types, and ``required``."""
    if type(obj) is not dict:
        raise _Malformed(f"{where}: expected an object, got {_kind(obj)} {_shown(obj)}")
    unknown = sorted(k for k in obj if k not in types)
    if unknown:
        raise _Malformed(f"{where}: unknown key(s) {unknown[:5]} (known: {sorted(types)})")
    missing = [k for k in required if k not in obj]
    if missing:
        raise _Malformed(f"{where}: missing key(s) {missing}")
    for k, val in obj.items():
        if type(val) not in types[k]:
            # int and float together are "a number"; an int alone is "an integer"
            kinds = [t for t in types[k] if not (t is int and float in types[k])]
            expected = " or ".join(_JSON_KIND[t] for t in kinds)
            raise _Malformed(f"{where}[{k!r}]: expected {expected}, got {_kind(val)} {_shown(val)}")
    return obj


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def _json_depth(text: str) -> int:
    """How deeply ``text`` nests arrays and objects (brackets in strings do not count), in C-speed passes."""
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    if not brackets:
        return 0
    codes = np.frombuffer(brackets.encode("ascii"), np.uint8)
    return int(max(0, np.cumsum(np.where((codes == ord("[")) | (codes == ord("{")), 1, -1)).max()))


def _parse_meta(text: str) -> dict:
    """The metadata JSON, parsed after a depth check (json.loads would recurse as deep as the text nests)."""
    depth = _json_depth(text)
    if depth > _MAX_DEPTH:
        raise _Malformed(f"metadata nests {depth} levels deep (at most {_MAX_DEPTH})")
    try:
        meta = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise _Malformed(f"corrupted metadata: {e}") from e
    return _check_object(meta, _META, _TOP, required=("layers",))


def _dtype(value, where: str) -> np.dtype | None:
    if value is None:
        return None
    if value not in ("float32", "float64"):
        raise _Malformed(f"{where}: expected 'float32', 'float64' or null, got {_shown(value)}")
    return np.dtype(value)


# -- what the metadata says the file holds ----------------------------------------------------


class _Entry(NamedTuple):
    """One array the file must hold: its entry name, shape and dtype, and who owns it (for messages)."""

    key: str  # "param/0.W", "opt/exp_avg/3"
    name: str  # the layer's name for it ("W", "running_var"), or the optimizer state's
    shape: tuple
    dtype: np.dtype
    owner: str
    non_negative: bool = False

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize  # Python ints: a huge declared shape cannot overflow

    def describe(self) -> str:
        return f"{self.dtype} {self.shape}"


class _LayerPlan(NamedTuple):
    position: int  # in the model
    cls: type
    config: dict
    dtype: np.dtype | None
    entries: list  # of _Entry, parameters first, as Sequential.state_dict orders them
    n_params: int  # how many of the entries are parameters (the rest are buffers)
    width: tuple | None  # (features in, features out, whether an array or list in the file fixes them)

    @property
    def where(self) -> str:
        return f"layers[{self.position}] ({self.cls.__name__})"


class _OptimizerPlan(NamedTuple):
    cls: type
    t: int
    hyper: dict
    groups: list | None  # each group's hyperparameters and "params" (indices into model.parameters())
    state_names: tuple
    entries: list


def _width(config: dict, key: str, where: str) -> int:
    n = config[key]
    if n < 1:
        raise _Malformed(f"{where}: {key} must be >= 1, got {n}")
    return n


def _layer_arrays(name: str, config: dict, where: str) -> tuple[list, list, tuple | None]:
    """``(parameters, buffers, width)`` of a layer: ``(name, shape, dtype or None for the layer's)`` each."""
    if name == "Linear":
        n_in, n_out = _width(config, "in_features", where), _width(config, "out_features", where)
        params = [("W", (n_in, n_out), None)] + ([("b", (n_out,), None)] if config.get("bias", True) else [])
        return params, [], (n_in, n_out, True)
    if name in ("BatchNorm1d", "LayerNorm"):
        m = _width(config, "num_features", where)
        affine = config.get("affine" if name == "BatchNorm1d" else "elementwise_affine", True)
        params = [("weight", (m,), None), ("bias", (m,), None)] if affine else []
        buffers: list[tuple] = []
        if name == "BatchNorm1d" and config.get("track_running_stats", True):
            buffers = [("running_mean", (m,), None), ("running_var", (m,), None)]
            buffers.append(("num_batches_tracked", (1,), np.dtype(np.int64)))
        return params, buffers, (m, m, bool(params or buffers))
    if name == "Standardize":
        for key in ("mean", "std"):
            if not all(type(x) in _REAL for x in config[key]):
                raise _Malformed(f"{where}: {key} must be an array of numbers")
        m = len(config["mean"])
        return [], [], (m, m, True) if m else None
    if name == "Dropout":
        return [], [("seed", (1,), np.dtype(np.uint64)), ("step", (1,), np.dtype(np.uint64))], None
    return [], [], None


_NON_NEGATIVE = ("running_var", "num_batches_tracked", "exp_avg_sq")  # negative: NaN or a crash at the first step


def _plan_layer(i: int, spec, model_dtype) -> _LayerPlan:
    spec = _check_object(spec, f"layers[{i}]", _SPEC, required=("type",))
    cls = _LAYERS.get(spec["type"])
    if cls is None:
        raise _Malformed(f"layers[{i}]: unknown layer type {spec['type']!r} (known: {', '.join(sorted(_LAYERS))})")
    where = f"layers[{i}] ({spec['type']})"
    config = _check_object(
        spec.get("config", {}), f"{where} config", _CONFIG[spec["type"]], _REQUIRED.get(cls.__name__, ())
    )
    # Files before per-layer dtypes hold the model's dtype for every layer.
    dtype = _dtype(spec["dtype"], f"{where} dtype") if "dtype" in spec else model_dtype
    if dtype is None and cls.__name__ in _WITH_PARAMETERS:
        raise _Malformed(f"{where} dtype: expected 'float32' or 'float64' for a layer with parameters, got null")
    params, buffers, width = _layer_arrays(cls.__name__, config, where)
    entries = []
    for name, shape, dt in params + buffers:
        entry_dtype = dtype if dt is None else dt
        if entry_dtype is None:  # cannot happen: such layers need a dtype (checked above)
            raise _Malformed(f"{where} dtype: null for its array {name!r}")
        entries.append(_Entry(f"param/{i}.{name}", name, shape, entry_dtype, where, name in _NON_NEGATIVE))
    return _LayerPlan(i, cls, config, dtype, entries, len(params), width)


def _check_dtypes(plans: list, meta: dict) -> None:
    found = sorted({str(p.dtype) for p in plans if p.dtype is not None})
    if len(found) > 1:
        raise _Malformed(f"layers: expected one dtype for all layers, got {found}")
    if "dtype" in meta and meta["dtype"] != (found[0] if found else None):
        raise _Malformed(
            f"{_META}['dtype']: the model's dtype is {meta['dtype']!r}, its layers' {found[0] if found else None!r}"
        )


def _check_widths(plans: list) -> None:
    """Each layer takes the features the one before it gives (else the model fails at its first step)."""
    previous = None
    sized = [p for p in plans if p.width is not None]
    for plan in sized:
        if previous is not None and previous.width[1] != plan.width[0]:
            raise _Malformed(
                f"{plan.where} takes {plan.width[0]} features, but {previous.where} before it gives {previous.width[1]}"
            )
        previous = plan
    # Consecutive widths agree, so one array (or Standardize list) fixes them all; without any, a
    # norm layer's width is only a number in the JSON and would allocate its workspace unchecked.
    if sized and not any(p.width[2] for p in sized) and sized[0].width[0] > _MAX_FREE_WIDTH:
        raise _Malformed(
            f"{sized[0].where} declares {sized[0].width[0]} features and no array in the file holds them "
            f"(at most {_MAX_FREE_WIDTH} without one)"
        )


def _plan_model(meta: dict) -> list:
    if not meta["layers"]:
        raise _Malformed(f"{_META}['layers']: the model has no layers")
    model_dtype = _dtype(meta.get("dtype"), f"{_META}['dtype']")
    plans = [_plan_layer(i, spec, model_dtype) for i, spec in enumerate(meta["layers"])]
    _check_dtypes(plans, meta)
    _check_widths(plans)
    return plans


def _plan_groups(ometa: dict, hyper_types: dict, n_params: int) -> tuple[list | None, list]:
    """The optimizer's groups (None in files before groups) and the model parameters it holds, in order."""
    if "groups" not in ometa:
        return None, list(range(n_params))
    groups, indices = [], []
    for j, group in enumerate(ometa["groups"]):
        where = f"optimizer groups[{j}]"
        group = _check_object(group, where, {"params": (list,), **hyper_types}, required=("params",))
        for k in group["params"]:
            if type(k) is not int or not 0 <= k < n_params:
                raise _Malformed(f"{where}['params']: expected indices of the model's {n_params} parameters, got {k!r}")
        groups.append(group)
        indices += group["params"]
    if len(set(indices)) != len(indices):
        raise _Malformed("optimizer groups: a parameter appears twice")
    return groups, indices


def _plan_optimizer(ometa, params: list) -> _OptimizerPlan:
    """What the optimizer entries must be, for ``params`` (the model's parameter entries, in order)."""
    ometa = _check_object(ometa, "optimizer", _OPTIMIZER, required=("type", "t", "hyper"))
    cls = _OPTIMIZERS.get(ometa["type"])
    if cls is None:
        raise _Malformed(f"optimizer: unknown optimizer type {ometa['type']!r} (known: {', '.join(_OPTIMIZERS)})")
    if not 0 <= ometa["t"] <= _MAX_STEP:
        raise _Malformed(f"optimizer['t']: expected a step count in [0, {_MAX_STEP}], got {ometa['t']}")
    hyper_types = {k: _HYPER[k] for k in cls._HYPER}
    hyper = _check_object(ometa["hyper"], "optimizer hyper", hyper_types)
    groups, indices = _plan_groups(ometa, hyper_types, len(params))
    if not indices:
        raise _Malformed("optimizer: holds no parameters")
    if cls is _optim.SGD:  # SGD keeps momentum buffers only when some group uses momentum
        any_momentum = bool(hyper.get("momentum")) or any(g.get("momentum") for g in groups or [])
        names: tuple = ("momentum_buffer",) if any_momentum else ()
    else:
        names = tuple(cls._state_names)
    entries = [
        _Entry(f"opt/{n}/{j}", n, params[k].shape, params[k].dtype, f"optimizer state {n}[{j}]", n in _NON_NEGATIVE)
        for n in names
        for j, k in enumerate(indices)
    ]
    return _OptimizerPlan(cls, ometa["t"], hyper, groups, names, entries)


def _plan(meta: dict) -> tuple[list, _OptimizerPlan | None]:
    plans = _plan_model(meta)
    params = [e for p in plans for e in p.entries[: p.n_params]]
    return plans, (None if meta.get("optimizer") is None else _plan_optimizer(meta["optimizer"], params))


# -- save ---------------------------------------------------------------------------------------


def _meta(model: Sequential, optimizer, metadata) -> tuple[dict, dict]:
    """The metadata and the arrays (by entry name, without the marker and metadata entries) of a file."""
    for layer in model.layers:
        if type(layer).__name__ not in _LAYERS:
            raise TypeError(f"model: layer {type(layer).__name__} cannot be saved (known: {sorted(_LAYERS)})")
    metadata = metadata if metadata is not None else getattr(model, "metadata", {})
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata: expected a dict, got {type(metadata).__name__}")
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
        "metadata": metadata,
    }
    arrays = {f"param/{k}": a for k, a in model.state_dict().items()}
    if optimizer is not None:
        meta["optimizer"], state = _optimizer_meta(model, optimizer)
        arrays.update(state)
    return meta, arrays


def _optimizer_meta(model: Sequential, optimizer) -> tuple[dict, dict]:
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
    ometa = {"type": sd["type"], "t": sd["t"], "hyper": sd["hyper"], "groups": groups}
    arrays = {f"opt/{name}/{i}": a for name, arrs in sd["state"].items() for i, a in enumerate(arrs)}
    return ometa, arrays


def _dumps(meta: dict) -> str:
    try:
        return json.dumps(meta)
    except TypeError as e:
        raise TypeError(f"metadata: expected JSON-serialisable values: {e}") from None
    except (ValueError, RecursionError) as e:  # a circular or extremely deep structure
        raise ValueError(f"metadata: expected a JSON-serialisable dict: {e}") from None


def _check_loadable(text: str, arrays: dict) -> None:
    """Raise ValueError unless :func:`load` reads this file back: the same plan, the same arrays."""
    try:
        plans, oplan = _plan(_parse_meta(text))
        expected = [e for p in plans for e in p.entries] + (oplan.entries if oplan else [])
        if sorted(e.key for e in expected) != sorted(arrays):
            raise _Malformed(f"its arrays {sorted(arrays)} are not those of its architecture")
        for e in expected:
            if arrays[e.key].shape != e.shape or arrays[e.key].dtype != e.dtype:
                raise _Malformed(
                    f"{e.owner}: {e.name} is {arrays[e.key].dtype} {arrays[e.key].shape}, not {e.describe()}"
                )
    except _Malformed as e:
        raise ValueError(f"model: cannot be saved in a form load() reads back: {e}") from None


def save(model: Sequential, path, *, optimizer=None, metadata: dict | None = None) -> None:
    """Write ``model`` (and optionally ``optimizer``'s state) to ``path``, atomically.

    Parameters
    ----------
    model : Sequential
        Its layers must fit together (each takes the features the one before gives).
    path : str or PathLike
        Written exactly as given (no suffix is added); through a symbolic link, its target
        is written and the link stays. An existing file keeps its permission bits.
    optimizer : SGD, Adam or AdamW over parameters of ``model`` (in groups or not), or None
    metadata : dict or None
        JSON-serialisable, nested at most 98 levels, stored with the model (default:
        ``model.metadata``); :func:`load` puts it back on ``model.metadata``.

    Raises
    ------
    TypeError
        For a layer or optimizer that cannot be saved, or metadata that is not JSON-serialisable.
    ValueError
        For a model :func:`load` could not read back (layers that do not fit together ...).
    """
    if not isinstance(model, Sequential):
        raise TypeError(f"model: expected a fastbp Sequential, got {type(model).__name__}")
    meta, arrays = _meta(model, optimizer, metadata)
    text = _dumps(meta)
    _check_loadable(text, arrays)
    arrays[_MARKER] = np.array(FORMAT)
    arrays[_META] = np.array(text)
    write_atomically(path, lambda fh: np.savez(fh, **arrays))


# -- load: the archive ------------------------------------------------------------------------

# What reading a damaged archive or .npy header raises, besides BadZipFile (RecursionError and
# NotImplementedError are RuntimeErrors; UnicodeDecodeError is a ValueError).
_READ_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    struct.error,
    OSError,
    EOFError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    SyntaxError,
    OverflowError,
    RuntimeError,
)


def _open_archive(fh) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(fh)
    except _READ_ERRORS as e:
        raise _Malformed(f"not a readable fastbp model file (truncated or corrupted?): {e}") from e


def _check_info(key: str, info: zipfile.ZipInfo) -> None:
    """One directory entry: readable without a password, and sizes that its compression can produce."""
    if info.flag_bits & 0x1:
        raise _Malformed(f"entry {key!r} is encrypted")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise _Malformed(f"entry {key!r}: compression method {info.compress_type} (fastbp reads stored or deflated)")
    if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
        raise _Malformed(
            f"entry {key!r} is stored uncompressed, yet declares {info.file_size} bytes in {info.compress_size}"
        )
    if info.compress_type == zipfile.ZIP_DEFLATED and info.file_size > _MAX_RATIO * info.compress_size + _MAX_HEADER:
        raise _Malformed(
            f"entry {key!r} declares {info.file_size} bytes from {info.compress_size} deflated: more than deflate makes"
        )


def _directory(zf: zipfile.ZipFile, size: int) -> dict:
    """``{entry name: ZipInfo}``, after checking what the directory declares against the file's ``size``."""
    infos: dict = {}
    for info in zf.infolist():
        name = info.filename
        key = name[: -len(".npy")] if name.endswith(".npy") else None
        if key is None:
            raise _Malformed(f"unexpected entry {_shown(name)}: fastbp model files hold only .npy arrays")
        if key in infos:
            raise _Malformed(f"entry {key!r} appears twice")
        _check_info(key, info)
        infos[key] = info
    # Entries may not overlap: else one small region read as many entries would multiply the file.
    declared = sum(info.compress_size for info in infos.values())
    if declared > size:
        raise _Malformed(f"entries declare {declared} bytes in a {size}-byte file (truncated, or entries overlap)")
    return infos


def _check_names(infos: dict, expected: list, optional: list) -> None:
    """Every expected entry is there, and nothing else but ``optional`` ones."""
    names = {e.key for e in expected}
    missing = [e for e in expected if e.key not in infos]
    if missing:
        listed = ", ".join(f"{e.key} ({e.owner}: {e.describe()})" for e in missing[:3])
        if missing[0].key.startswith("opt/"):  # model entries come first: only optimizer state is missing
            raise _Malformed(f"optimizer state is incomplete: missing {listed}")
        raise _Malformed(f"model entries do not match its architecture: missing {listed}")
    unexpected = sorted(k for k in infos if k not in names and k not in optional)
    if unexpected:
        raise _Malformed(f"unexpected entries {unexpected[:5]}: not part of the model its metadata describes")


def _check_declared(info: zipfile.ZipInfo, entry: _Entry) -> None:
    """The entry's declared size is its array's plus a header: checked before anything is read or allocated."""
    if not entry.nbytes + 10 <= info.file_size <= entry.nbytes + _MAX_HEADER:
        raise _Malformed(
            f"entry {entry.key!r} holds {info.file_size} bytes, but {entry.owner} needs {entry.describe()}: "
            f"{entry.nbytes} bytes and a header"
        )


def _npy_header(f, key: str) -> tuple[tuple, bool, np.dtype, int]:
    """``(shape, fortran_order, dtype, data offset)`` of the .npy array at the start of ``f``."""
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise _Malformed(f"entry {key!r}: .npy format {version} (fastbp writes 1.0)")
        return shape, fortran, dtype, f.tell()
    except _Malformed:
        raise
    except Exception as e:  # numpy parses the header with tokenize and ast: their errors are many and undocumented
        raise _Malformed(f"entry {key!r}: not a readable .npy array: {type(e).__name__}: {e}") from e


def _read_data(f, arr: np.ndarray, key: str) -> None:
    """Fill ``arr`` (fresh, C-contiguous) from ``f``, which must end right after it."""
    buf = arr.reshape(-1).view(np.uint8).data
    done = 0
    while done < len(buf):
        n = f.readinto(buf[done : done + _CHUNK])
        if not n:
            raise _Malformed(f"entry {key!r}: truncated after {done} of {len(buf)} bytes")
        done += n
    if f.read(1):  # cannot happen after the size checks; reading to the end makes zipfile check the CRC
        raise _Malformed(f"entry {key!r}: data after the array")


def _read_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, key: str, check) -> np.ndarray:
    """The array of entry ``key``: ``check(shape, fortran, dtype, data offset)`` approves its header first."""
    try:
        with zf.open(info) as f:
            shape, fortran, dtype, start = _npy_header(f, key)
            if dtype.hasobject:
                raise _Malformed(
                    f"holds a pickled object array (entry {key!r}), which fastbp model files never contain; "
                    "refused without unpickling it"
                )
            check(shape, fortran, dtype, start)
            arr = np.empty(shape[::-1] if fortran else shape, dtype)
            _read_data(f, arr, key)
    except _READ_ERRORS as e:
        raise _Malformed(f"entry {key!r}: not readable (truncated or corrupted?): {e}") from e
    return np.ascontiguousarray(arr.T) if fortran else arr


def _read_array(zf: zipfile.ZipFile, info: zipfile.ZipInfo, entry: _Entry) -> np.ndarray:
    def check(shape, fortran, dtype, start):
        if dtype != entry.dtype or shape != entry.shape:
            raise _Malformed(f"entry {entry.key!r} ({entry.owner}): expected {entry.describe()}, got {dtype} {shape}")
        if info.file_size != start + entry.nbytes:
            raise _Malformed(
                f"entry {entry.key!r}: declares {info.file_size} bytes, its array takes {start + entry.nbytes}"
            )

    arr = _read_entry(zf, info, entry.key, check)
    _check_values(arr, entry)
    return arr


def _all_finite(arr: np.ndarray) -> bool:
    flat = arr.reshape(-1)
    step = _CHUNK // arr.itemsize  # np.isfinite of the whole array would allocate a mask as large
    return all(np.isfinite(flat[i : i + step]).all() for i in range(0, flat.size, step))


def _check_values(arr: np.ndarray, entry: _Entry) -> None:
    if arr.dtype.kind == "f" and not _all_finite(arr):
        raise _Malformed(
            f"entry {entry.key!r} ({entry.owner}: {entry.name}) holds NaN or inf: the model diverged in "
            "training or the file is damaged (np.load reads its raw arrays)"
        )
    if entry.non_negative and (arr < 0).any():
        raise _Malformed(f"entry {entry.key!r} ({entry.owner}: {entry.name}) holds negative values")


def _read_scalar(zf: zipfile.ZipFile, infos: dict, key: str, kinds: str, limit: int) -> np.ndarray:
    """A 0-d array of a dtype kind in ``kinds`` and at most ``limit`` bytes (the marker and the metadata)."""
    info = infos.get(key)
    if info is None:
        raise _Malformed(f"not a fastbp model file (no {key!r} entry)")
    if info.file_size > limit + _MAX_HEADER:
        raise _Malformed(f"entry {key!r} declares {info.file_size} bytes (at most {limit} and a header)")

    def check(shape, fortran, dtype, start):
        if shape != () or dtype.kind not in kinds or dtype.itemsize == 0:
            raise _Malformed(
                f"entry {key!r}: expected a single {'string' if kinds == 'U' else 'integer'}, got {dtype} {shape}"
            )
        if info.file_size != start + dtype.itemsize:
            raise _Malformed(
                f"entry {key!r}: declares {info.file_size} bytes, its array takes {start + dtype.itemsize}"
            )

    return _read_entry(zf, info, key, check)


def _read_format(zf: zipfile.ZipFile, infos: dict) -> int:
    version = int(_read_scalar(zf, infos, _MARKER, "iu", 8))
    if version > FORMAT:
        raise _Malformed(
            f"written by a newer fastbp (file format {version}; this fastbp reads up to {FORMAT}). "
            "Upgrade fastbp to read it."
        )
    if version < 1:
        raise _Malformed(f"entry {_MARKER!r}: file format {version} (expected 1 to {FORMAT})")
    return version


def _read_meta(zf: zipfile.ZipFile, infos: dict, version: int) -> dict:
    arr = _read_scalar(zf, infos, _META, "U", _MAX_META_BYTES)
    # Decoded by Python's UTF-32 codec, which refuses code points outside Unicode (numpy's .item()
    # raises SystemError on them); numpy pads strings with NULs.
    order = {"<": "le", ">": "be"}.get(arr.dtype.byteorder, "le" if sys.byteorder == "little" else "be")
    try:
        text = arr.tobytes().decode(f"utf-32-{order}").rstrip("\x00")
    except UnicodeDecodeError as e:
        raise _Malformed(f"corrupted metadata: {e}") from e
    meta = _parse_meta(text)
    if meta.get("format", version) != version:
        raise _Malformed(f"metadata: file format {meta['format']}, but the file's marker says {version}")
    return meta


# -- load: building the model -----------------------------------------------------------------


def _fill(layer, plan: _LayerPlan, own: dict) -> None:
    """Copy the file's arrays into a freshly built layer's parameters and buffers."""
    targets = {p.name: p.data for p in layer.parameters()} | layer.buffers()
    if set(targets) != set(own):
        raise _Malformed(f"{plan.where}: the file holds {sorted(own)}, the layer has {sorted(targets)}")
    for name, dest in targets.items():
        if dest.shape != own[name].shape or dest.dtype != own[name].dtype:
            raise _Malformed(
                f"{plan.where}: {name} is {dest.dtype} {dest.shape}, the file's {own[name].dtype} {own[name].shape}"
            )
        np.copyto(dest, own[name])


def _build_layer(plan: _LayerPlan, arrays: dict, backend: str):
    own = {e.name: arrays[e.key] for e in plan.entries}
    config = plan.config
    try:
        if plan.cls is _layers.Linear:
            # Around the file's arrays: no random weights are drawn (nor memory taken) first.
            layer = _layers.Linear.from_weights(
                own["W"],
                own.get("b"),
                activation=config.get("activation"),
                activation_params=config.get("activation_params"),
                backend=backend,
            )
            layer.init = v.choice(config.get("init", "he"), "init", ("he", "glorot"))  # from_weights records glorot
        else:
            seed = {"seed": 0} if plan.cls is _layers.Dropout else {}  # no OS entropy: the file's state replaces it
            layer = plan.cls(**config, **seed, dtype=plan.dtype, backend=backend)
            _fill(layer, plan, own)
    except (TypeError, ValueError) as e:
        raise _Malformed(f"{plan.where}: {e}") from e
    return layer


def _build_model(plans: list, arrays: dict, meta: dict, backend: str) -> Sequential:
    layers = [_build_layer(plan, arrays, backend) for plan in plans]
    try:
        model = Sequential(*layers)
    except (TypeError, ValueError) as e:
        raise _Malformed(f"layers: {e}") from e
    model.metadata = dict(meta.get("metadata") or {})
    return model


def _build_optimizer(plan: _OptimizerPlan, model: Sequential, arrays: dict, backend: str):
    params = model.parameters()
    try:
        if plan.groups is None:  # files before parameter groups hold one optimizer over model.parameters()
            opt = plan.cls(params, **plan.hyper, backend=backend)
        else:
            groups = [{**g, "params": [params[j] for j in g["params"]]} for g in plan.groups]
            opt = plan.cls(groups, **plan.hyper, backend=backend)
        if set(opt.state) != set(plan.state_names):
            raise ValueError(
                f"state: the file holds {sorted(plan.state_names)}, {plan.cls.__name__} keeps {sorted(opt.state)}"
            )
        state = {name: [arrays[f"opt/{name}/{i}"] for i in range(len(opt.params))] for name in opt.state}
        groups_sd = [
            {"n_params": len(g["params"]), **{k: val for k, val in g.items() if k != "params"}}
            for g in opt.param_groups
        ]
        opt.load_state_dict(
            {"type": plan.cls.__name__, "t": plan.t, "hyper": plan.hyper, "state": state, "groups": groups_sd}
        )
    except (TypeError, ValueError) as e:
        raise _Malformed(f"optimizer entries do not match the model: {e}") from e
    return opt


def _load(fh, size: int, with_optimizer: bool, backend: str):
    with _open_archive(fh) as zf:
        try:
            infos = _directory(zf, size)
        except _READ_ERRORS as e:
            raise _Malformed(f"not a readable fastbp model file (truncated or corrupted?): {e}") from e
        meta = _read_meta(zf, infos, _read_format(zf, infos))
        plans, oplan = _plan(meta)
        model_entries = [e for p in plans for e in p.entries]
        opt_entries = oplan.entries if oplan else []
        _check_names(infos, model_entries + opt_entries, optional=[_MARKER, _META])
        for entry in model_entries + opt_entries:
            _check_declared(infos[entry.key], entry)
        if with_optimizer and oplan is None:
            raise _Malformed("no optimizer state was saved (save(model, path, optimizer=opt) stores it)")
        arrays = {e.key: _read_array(zf, infos[e.key], e) for e in model_entries}
        model = _build_model(plans, arrays, meta, backend)
        if not with_optimizer:
            return model
        assert oplan is not None
        arrays = {e.key: _read_array(zf, infos[e.key], e) for e in opt_entries}
        return model, _build_optimizer(oplan, model, arrays, backend)


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
        For a file that is not exactly what :func:`save` writes, naming ``path`` and what is
        wrong: truncated or corrupted, foreign, written by a newer fastbp, metadata of the
        wrong types, entries missing, extra or of the wrong shape, dtype or size, layers that
        do not fit together, or NaN or inf in a parameter, buffer or optimizer state (a model
        that diverged: ``np.load`` still reads its raw arrays). Nothing is allocated for an
        array before its entry's declared size and header match what the metadata says.
    FileNotFoundError, IsADirectoryError, PermissionError
        When ``path`` cannot be opened.
    """
    backend = v.choice(backend, "backend", ("numba", "numpy"))
    path = os.fspath(path)
    with open(path, "rb") as fh:  # FileNotFoundError / IsADirectoryError speak for themselves
        size = os.fstat(fh.fileno()).st_size
        head = fh.read(4)
        if head[:2] != b"PK":
            raise _bad(path, "not a fastbp model file (not an .npz archive)" if head else "empty file")
        fh.seek(0)
        try:
            return _load(fh, size, bool(with_optimizer), backend)
        except _Malformed as e:
            raise _bad(path, str(e)) from e.__cause__


class ArchiveError(ValueError):
    """:func:`read_archive`'s error: the message names the path; ``why`` is what is wrong."""

    def __init__(self, path: str, why: str):
        super().__init__(f"{path}: {why}")
        self.why = why


class Archive:
    """An ``.npz`` archive (as ``np.savez`` writes), its arrays read one by one with the checks of :func:`load`.

    For files whose arrays no model metadata declares (checkpoints). Opening reads
    only the directory: no entry may be encrypted, overlap another or declare
    more bytes than its compression can produce. ``archive[key]`` then reads one
    array, after checking that the entry's size is exactly its ``.npy`` header's
    array (before allocating it); pickled (object) arrays are refused unread.
    Check :attr:`files` before reading, so that an unexpected entry is never inflated.

    Raises
    ------
    ArchiveError
        A ValueError naming ``path`` and what is wrong.
    FileNotFoundError, IsADirectoryError, PermissionError
        When ``path`` cannot be opened.
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        self._fh = open(self.path, "rb")  # closed by close() or the with block
        try:
            size = os.fstat(self._fh.fileno()).st_size
            if not zipfile.is_zipfile(self._fh):
                raise _Malformed("not an .npz archive (a single .npy array, or truncated?)")
            self._zf = _open_archive(self._fh)
            try:
                self._infos = _directory(self._zf, size)
            except _READ_ERRORS as e:
                raise _Malformed(f"not a readable archive (truncated or corrupted?): {e}") from e
        except _Malformed as e:
            self._fh.close()
            raise ArchiveError(self.path, str(e)) from None
        except BaseException:
            self._fh.close()
            raise

    @property
    def files(self) -> list:
        """The entries' names (without ``.npy``)."""
        return list(self._infos)

    def __getitem__(self, key: str) -> np.ndarray:
        info = self._infos[key]
        try:
            return _read_entry(self._zf, info, key, _exact_size(info, key))
        except _Malformed as e:
            raise ArchiveError(self.path, str(e)) from None

    def close(self) -> None:
        self._zf.close()
        self._fh.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _exact_size(info: zipfile.ZipInfo, key: str):
    def check(shape, fortran, dtype, start):
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if info.file_size != start + nbytes:
            raise _Malformed(
                f"entry {key!r}: declares {info.file_size} bytes, its {dtype} {shape} array takes {start + nbytes}"
            )

    return check
