"""PyTorch interop: :func:`from_torch` and :func:`to_torch` move a model's weights both ways, bit for bit.

Needs PyTorch (``pip install "fastbp[torch]"``); ``import fastbp`` never imports it.
The mapping of modules to layers, what is refused and why: docs/torch_interop.md.

Each side keeps what only the other side has in one attribute, so that a round trip
gives back what went in: a torch module made by :func:`to_torch` carries ``_fastbp``
(a dict: a Linear's ``init``, a Dropout's mask generator state, an activation that was
a layer of its own rather than fused), a fastbp layer made by :func:`from_torch`
carries ``_torch`` (``inplace``, Softmax's ``dim``). Neither changes what a model computes.
"""

from __future__ import annotations

import contextlib
import numbers

import numpy as np

try:
    # Absolute imports (this module is fastbp.torch; these are PyTorch itself).
    import torch
    from torch import nn
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError(f'fastbp.torch needs PyTorch: pip install "fastbp[torch]" (import torch failed: {e})') from e

from . import _validate as v
from . import layers as fl
from .layers.base import Layer
from .model import Sequential

__all__ = ["from_torch", "to_torch", "Standardize"]

_SEED = (
    v.NoneValue(),
    v.Interval(numbers.Integral, 0, 2**64 - 1),
    v.InstanceOf(np.random.Generator, "a numpy Generator"),
)
_BOOL = v.Boolean()
_DTYPES = {torch.float32: np.dtype(np.float32), torch.float64: np.dtype(np.float64)}
_TORCH_DTYPES = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}


class Standardize(nn.Module):
    """fastbp's :class:`~fastbp.Standardize` as a PyTorch module: ``y = (x - mean) * (1 / std)``,
    or ``y = x * std + mean`` with ``inverse=True``.

    PyTorch has no such module; :func:`to_torch` emits this one for a fastbp
    Standardize layer and :func:`from_torch` takes it back. It computes what the fastbp
    layer computes, bit for bit (``1 / std`` is rounded from float64 to the buffers' dtype,
    then multiplied), and has no trainable parameters.

    Parameters
    ----------
    mean, std : (m,) tensors or array-likes, copied; ``std`` positive and finite
    inverse : bool, undo a standardization instead (for a model's outputs)
    dtype : torch.float32 or torch.float64, or None for ``mean``'s dtype (PyTorch's default for lists)

    Attributes
    ----------
    mean, std : (m,) buffers (in the module's ``state_dict``)
    inverse : bool
    """

    def __init__(self, mean, std, inverse: bool = False, dtype=None):
        super().__init__()
        mean_t = torch.as_tensor(mean, dtype=dtype).detach().clone()
        std_t = torch.as_tensor(std, dtype=mean_t.dtype).detach().clone()
        if mean_t.dtype not in _DTYPES:
            raise TypeError(f"mean: expected float32 or float64, got {mean_t.dtype}")
        if mean_t.ndim != 1 or mean_t.shape[0] < 1:
            raise ValueError(f"mean: expected a non-empty 1-d sequence, got shape {tuple(mean_t.shape)}")
        if not bool(torch.isfinite(mean_t).all()):
            raise ValueError("mean: expected finite values, got NaN or inf")
        if std_t.shape != mean_t.shape:
            raise ValueError(f"std: expected shape {tuple(mean_t.shape)} like mean, got {tuple(std_t.shape)}")
        if not bool(torch.isfinite(std_t).all() and (std_t > 0).all()):
            raise ValueError("std: expected positive finite values")
        self.register_buffer("mean", mean_t)
        self.register_buffer("std", std_t)
        self.inverse = v.check(inverse, "inverse", _BOOL)

    def forward(self, x):
        """``x`` (batch, m) -> ``y`` (batch, m)."""
        if self.inverse:
            return x * self.std + self.mean
        # The reciprocal in float64, rounded once: fastbp's layer multiplies by the same number.
        return (x - self.mean) * (1.0 / self.std.double()).to(self.std.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.mean.shape[0]}" + (", inverse=True" if self.inverse else "")


# torch activation module -> (fastbp activation name, the module's attributes that are its parameters).
_ACTIVATIONS: dict = {
    nn.ReLU: ("relu", ()),
    nn.Sigmoid: ("sigmoid", ()),
    nn.Tanh: ("tanh", ()),
    nn.LeakyReLU: ("leaky_relu", ("negative_slope",)),
    nn.ELU: ("elu", ("alpha",)),
    nn.GELU: ("gelu", ("approximate",)),
    nn.SiLU: ("silu", ()),
    nn.Softplus: ("softplus", ("beta", "threshold")),
}
_TORCH_ACTIVATION = {name: cls for cls, (name, _) in _ACTIVATIONS.items()}
# The standalone fastbp layer of each activation name, and back.
_ACTIVATION_LAYER: dict = {
    "relu": fl.ReLU,
    "sigmoid": fl.Sigmoid,
    "tanh": fl.Tanh,
    "leaky_relu": fl.LeakyReLU,
    "elu": fl.ELU,
    "gelu": fl.GELU,
    "silu": fl.SiLU,
    "softplus": fl.Softplus,
}
_ACTIVATION_NAME = {cls: name for name, cls in _ACTIVATION_LAYER.items()}
# Constructor arguments PyTorch has and fastbp does not: they change nothing on (batch, features)
# arrays, and are kept on the fastbp layer (``_torch``) only to give them back.
_TORCH_ONLY: dict = {
    nn.ReLU: ("inplace",),
    nn.LeakyReLU: ("inplace",),
    nn.ELU: ("inplace",),
    nn.SiLU: ("inplace",),
    nn.Dropout: ("inplace",),
    nn.Softmax: ("dim",),
}
_OTHERS = (nn.Linear, nn.Softmax, nn.Identity, nn.Dropout, nn.BatchNorm1d, nn.LayerNorm, Standardize)
# Exact classes only: a subclass may change forward, which no copy of the weights would follow.
_SUPPORTED = frozenset((*_ACTIVATIONS, *_OTHERS))
_SUPPORTED_TEXT = (
    "nn.Sequential (nested ones are flattened) of nn.Linear, "
    + ", ".join(f"nn.{cls.__name__}" for cls in _ACTIVATIONS)
    + ", nn.Softmax, nn.Identity, nn.Dropout, nn.BatchNorm1d, nn.LayerNorm and fastbp.torch.Standardize"
)
_LAYERS_TEXT = "Linear, BatchNorm1d, LayerNorm, Dropout, Softmax, Identity, Standardize, " + ", ".join(
    cls.__name__ for cls in _ACTIVATION_NAME
)


def _qualname(obj) -> str:
    cls = type(obj)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def _where(path: str, module) -> str:
    return f"module {path!r} ({type(module).__name__})" if path else f"module ({type(module).__name__})"


@contextlib.contextmanager
def _context(where: str):
    """Prefix the errors of fastbp's own checks with the module they come from."""
    try:
        yield
    except (TypeError, ValueError) as e:
        raise type(e)(f"{where}: {e}") from e


def _marker(module) -> dict:
    marker = getattr(module, "_fastbp", None)
    return marker if isinstance(marker, dict) else {}


# -- torch -> fastbp ---------------------------------------------------------------------------------------------


def _flatten(module, path: str, out: list) -> list:
    if type(module) is nn.Sequential:
        # _modules in order, duplicates included: Sequential.forward runs a module listed twice twice,
        # while named_children() would list it once.
        for name, child in module._modules.items():
            _flatten(child, f"{path}.{name}" if path else name, out)
    elif type(module) in _SUPPORTED:
        out.append((path, module))
    else:
        raise TypeError(
            f"{_where(path, module)}: {_qualname(module)} is not supported; fastbp takes an {_SUPPORTED_TEXT}"
        )
    return out


def _tensors(path: str, module):
    """``(name, tensor)`` for the module's parameters and buffers, named as in the whole model's state_dict."""
    prefix = f"{path}." if path else ""
    for name, t in (*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)):
        yield prefix + name, t


# The parameters and buffers each class has; any other (``weight_orig`` of spectral_norm, say) means the
# module computes with something else than what fastbp would copy.
_KNOWN_TENSORS: dict = {
    nn.Linear: {"weight", "bias"},
    nn.BatchNorm1d: {"weight", "bias", "running_mean", "running_var", "num_batches_tracked"},
    nn.LayerNorm: {"weight", "bias"},
    Standardize: {"mean", "std"},
}


def _common_dtype(leaves: list):
    """The one float dtype of every parameter and buffer (numpy), None when there are none; else a TypeError."""
    first = None
    for path, module in leaves:
        known = _KNOWN_TENSORS.get(type(module), set())
        for name, t in _tensors(path, module):
            if name.rpartition(".")[2] not in known:
                raise ValueError(
                    f"{_where(path, module)}: has a tensor {name!r} that {type(module).__name__} does not have "
                    "(a reparametrization such as spectral_norm or weight_norm?), which fastbp cannot follow"
                )
            if t.device.type == "meta":
                raise ValueError(f"module parameter {name!r}: is on the meta device (it has no values to copy)")
            if not (t.is_floating_point() or t.is_complex()):
                continue  # num_batches_tracked
            if t.dtype not in _DTYPES:
                raise TypeError(
                    f"module parameter {name!r}: expected float32 or float64, got {t.dtype} "
                    "(convert the module with .float() or .double())"
                )
            if first is None:
                first = (name, t.dtype)
            elif t.dtype != first[1]:
                raise TypeError(
                    f"module: expected one dtype for every parameter and buffer, got {first[1]} ({first[0]!r}) "
                    f"and {t.dtype} ({name!r}); convert the module with .float() or .double()"
                )
    return None if first is None else _DTYPES[first[1]]


def _array(t, transpose: bool = False) -> np.ndarray:
    """A C-ordered numpy copy of a tensor (of its transpose), sharing no memory with it."""
    a = t.detach().cpu().numpy()
    return np.array(a.T if transpose else a, order="C", copy=True)


def _activation_of(module) -> tuple:
    name, attrs = _ACTIVATIONS[type(module)]
    return name, {a: getattr(module, a) for a in attrs}


def _torch_only(module) -> dict:
    return {a: getattr(module, a) for a in _TORCH_ONLY.get(type(module), ())}


def _keep(layer: Layer, extras: dict) -> None:
    """Record on a fastbp layer the PyTorch-only arguments of its module, for :func:`to_torch`."""
    vars(layer)["_torch"] = extras


def _linear(path, lin, act, backend) -> Layer:
    name, params = (None, None) if act is None else _activation_of(act[1])
    # "gelu_tanh" is fastbp's second spelling of GELU(approximate="tanh"): kept when the module came from it.
    if name == "gelu" and params == {"approximate": "tanh"} and _marker(act[1]).get("activation") == "gelu_tanh":
        name, params = "gelu_tanh", None
    W = _array(lin.weight, transpose=True)  # torch's weight is (out, in): fastbp's W is its transpose
    b = None if lin.bias is None else _array(lin.bias)
    with _context(_where(path, lin) if act is None else f"{_where(*act)} after {_where(path, lin)}"):
        layer = fl.Linear.from_weights(W, b, activation=name, activation_params=params, backend=backend)
    init = _marker(lin).get("init")
    # The init scheme is only a record in model files (the weights are given); fastbp's default unless known.
    layer.init = init if init in ("he", "glorot") else "he"
    if act is not None:
        extras: dict = {"activation": _torch_only(act[1])} if _torch_only(act[1]) else {}
        if act[1].training != lin.training:  # the fused layer has one mode: the Linear's
            extras["activation_training"] = act[1].training
        if extras:
            _keep(layer, extras)
    return layer.train(lin.training)


def _layer(path, module, dtype, rng, backend) -> Layer:
    cls = type(module)
    marker = _marker(module)
    # Layers without parameters take their input's dtype unless to_torch recorded one they had.
    free = marker.get("dtype") if marker.get("dtype") in ("float32", "float64") else None
    if free is not None and dtype is not None and np.dtype(free) != dtype:
        free = None
    where = _where(path, module)
    with _context(where):
        if cls is nn.BatchNorm1d:
            layer = _batchnorm(module, dtype, backend)
        elif cls is nn.LayerNorm:
            layer = _layernorm(module, dtype, backend)
        elif cls is nn.Dropout:
            seed, step = marker.get("seed"), marker.get("step")
            restore = isinstance(seed, int) and isinstance(step, int) and 0 <= seed < 2**64 and 0 <= step < 2**64
            layer = fl.Dropout(module.p, seed=seed if restore else rng, dtype=free, backend=backend)
            if restore:
                layer.buffers()["step"][0] = step
        elif cls in _ACTIVATIONS:
            name, params = _activation_of(module)
            layer = _ACTIVATION_LAYER[name](**params, dtype=free, backend=backend)
        elif cls is nn.Softmax:
            if module.dim not in (1, -1):
                raise ValueError(
                    f"expected dim=-1 or dim=1 (the features of a (batch, features) input), got dim={module.dim!r}"
                )
            layer = fl.Softmax(dtype=free, backend=backend)
        elif cls is nn.Identity:
            layer = fl.Identity(dtype=free, backend=backend)
        elif cls is Standardize:
            mean, std = _array(module.mean), _array(module.std)
            layer = fl.Standardize(mean, std, inverse=module.inverse, dtype=mean.dtype, backend=backend)
        else:  # pragma: no cover - _flatten lets only the classes above through
            raise AssertionError(cls)
    if _torch_only(module):
        _keep(layer, _torch_only(module))
    return layer.train(module.training)


def _copy_param(dest, t) -> None:
    np.copyto(dest, _array(t))


def _batchnorm(m, dtype, backend) -> Layer:
    if m.track_running_stats and (m.running_mean is None or m.running_var is None):
        raise ValueError("track_running_stats=True but running_mean or running_var is None")
    if m.affine and m.bias is None:
        raise ValueError("bias=False is not supported: fastbp's BatchNorm1d learns a bias whenever affine=True")
    layer = fl.BatchNorm1d(
        m.num_features,
        eps=m.eps,
        momentum=m.momentum,
        affine=m.affine,
        track_running_stats=m.track_running_stats,
        dtype=dtype or np.float32,  # no tensors at all: fastbp's default dtype
        backend=backend,
    )
    if layer.weight is not None and layer.bias is not None:
        _copy_param(layer.weight.data, m.weight)
        _copy_param(layer.bias.data, m.bias)
    if layer.running_mean is not None and layer.running_var is not None and layer.num_batches_tracked is not None:
        _copy_param(layer.running_mean, m.running_mean)
        _copy_param(layer.running_var, m.running_var)
        if m.num_batches_tracked is not None:
            layer.num_batches_tracked[0] = int(m.num_batches_tracked)  # torch's is 0-d, fastbp's (1,)
    return layer


def _layernorm(m, dtype, backend) -> Layer:
    shape = tuple(m.normalized_shape)
    if len(shape) != 1:
        raise ValueError(f"expected normalized_shape of one int (the features), got {shape}")
    if m.elementwise_affine and m.bias is None:
        raise ValueError(
            "bias=False is not supported: fastbp's LayerNorm learns a bias whenever elementwise_affine=True"
        )
    layer = fl.LayerNorm(
        shape[0], eps=m.eps, elementwise_affine=m.elementwise_affine, dtype=dtype or np.float32, backend=backend
    )
    if layer.weight is not None and layer.bias is not None:
        _copy_param(layer.weight.data, m.weight)
        _copy_param(layer.bias.data, m.bias)
    return layer


def from_torch(module, *, fuse: bool = True, seed=None, backend: str = "numba") -> Sequential:
    """A fastbp model with a copy of a PyTorch model's weights.

    Parameters
    ----------
    module : torch.nn.Module
        An ``nn.Sequential`` (nested ones are flattened) of ``nn.Linear``, ``nn.ReLU``,
        ``nn.Sigmoid``, ``nn.Tanh``, ``nn.LeakyReLU``, ``nn.ELU``, ``nn.GELU``, ``nn.SiLU``,
        ``nn.Softplus``, ``nn.Softmax`` (``dim=-1`` or ``1``), ``nn.Identity``, ``nn.Dropout``,
        ``nn.BatchNorm1d``, ``nn.LayerNorm`` (one normalized dimension; both with their bias) and
        :class:`fastbp.torch.Standardize`; or one such module. The model takes (batch, in)
        inputs; ``nn.Linear``'s weight (out, in) becomes ``W`` (in, out). Parameters and
        buffers must all be float32, or all float64.
    fuse : bool
        Fuse an activation that follows an ``nn.Linear`` into the fastbp ``Linear``
        (``Linear(..., activation=...)``: the same values, a faster step). :func:`to_torch`
        gives the two modules back. An activation that :func:`to_torch` made from a
        layer of its own stays one.
    seed : int, numpy Generator or None
        Seeds the masks of the Dropout layers (PyTorch draws them from its global
        generator, which fastbp does not use); None draws fresh entropy. A Dropout made
        by :func:`to_torch` gets back its own generator state instead.
    backend : "numba" or "numpy"

    Returns
    -------
    Sequential
        Its layers in ``module``'s order, each in its module's mode (``training``), in the
        module's dtype (layers without parameters follow their input); the arrays are
        copies, bit for bit.

    Raises
    ------
    TypeError
        ``module`` is not a torch Module; a module (named by its path, as in ``state_dict``)
        of an unsupported class; a parameter or buffer neither float32 nor float64, or of
        another dtype than the others.
    ValueError
        A supported module with settings fastbp lacks (``nn.Softmax(dim=0)``,
        ``nn.LayerNorm((4, 5))``, ``bias=False`` in a norm), a module with parameters
        listed twice (shared weights), an empty ``nn.Sequential``.

    Examples
    --------
    >>> import torch, fastbp.torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    >>> model = fastbp.torch.from_torch(net)
    >>> model
    Sequential(
      Linear(4, 8, activation='relu', bias=True, dtype=float32),
      Linear(8, 3, bias=True, dtype=float32)
    )
    >>> bool((model.layers[0].W.data == net[0].weight.detach().numpy().T).all())
    True
    """
    if not isinstance(module, nn.Module):
        raise TypeError(
            f"module: expected a torch.nn.Module (an {_SUPPORTED_TEXT}, or one such module), got {_qualname(module)}"
        )
    fuse = v.check(fuse, "fuse", _BOOL)
    seed = v.check(seed, "seed", *_SEED)
    leaves = _flatten(module, "", [])
    if not leaves:
        raise ValueError("module: expected at least one module, got an empty nn.Sequential")
    seen: dict = {}
    for path, m in leaves:
        if any(True for _ in _tensors("", m)):
            if id(m) in seen:
                raise ValueError(
                    f"{_where(path, m)}: is the same module as {seen[id(m)]!r} (shared weights), "
                    "which fastbp layers cannot express"
                )
            seen[id(m)] = path
    dtype = _common_dtype(leaves)
    rng = np.random.default_rng(seed)
    layers: list = []
    i = 0
    while i < len(leaves):
        path, m = leaves[i]
        if type(m) is nn.Linear:
            act = leaves[i + 1] if i + 1 < len(leaves) else None
            if not (fuse and act is not None and type(act[1]) in _ACTIVATIONS and not _marker(act[1]).get("layer")):
                act = None
            layers.append(_linear(path, m, act, backend))
            i += 1 if act is None else 2
        else:
            layers.append(_layer(path, m, dtype, rng, backend))
            i += 1
    return Sequential(*layers)


# -- fastbp -> torch ---------------------------------------------------------------------------------------------


def _fill(dest, src: np.ndarray) -> None:
    """Copy a numpy array into an existing tensor (its own memory), bit for bit."""
    with torch.no_grad():
        dest.copy_(torch.from_numpy(np.array(src, order="C", copy=True)))


def _mark(module, **entries):
    module._fastbp = entries
    return module


def _torch_activation(name: str, params: dict, extra: dict):
    if name == "gelu_tanh":
        return _mark(nn.GELU(approximate="tanh"), activation="gelu_tanh")
    return _TORCH_ACTIVATION[name](**params, **extra)


def _free_dtype(layer) -> dict:
    """A layer without parameters that has a dtype all the same: recorded, to give it back."""
    return {} if layer.dtype is None else {"dtype": str(layer.dtype)}


def _modules_of(where: str, layer) -> list:
    """The torch modules of one fastbp layer (two for a Linear with a fused activation), in its mode."""
    extra = dict(getattr(layer, "_torch", None) or {})
    tdtype = None if layer.dtype is None else _TORCH_DTYPES[layer.dtype]
    if type(layer) is not fl.Linear:
        return [_module_of(where, layer, extra, tdtype).train(layer.training)]
    # skip_init (here and for the norms): the module is built on the meta device and then given memory,
    # without drawing initial weights that would be overwritten anyway, or advancing torch's generator.
    lin = nn.utils.skip_init(nn.Linear, layer.in_features, layer.out_features, bias=layer.b is not None, dtype=tdtype)
    _fill(lin.weight, layer.W.data.T)
    if layer.b is not None:
        _fill(lin.bias, layer.b.data)
    mods = [_mark(lin, init=layer.init).train(layer.training)]
    if layer.activation is not None:
        act_extra = extra.get("activation")
        act = _torch_activation(
            layer.activation, layer.activation_params, act_extra if isinstance(act_extra, dict) else {}
        )
        mods.append(act.train(bool(extra.get("activation_training", layer.training))))
    return mods


def _module_of(where: str, layer, extra: dict, tdtype):
    cls = type(layer)
    if cls is fl.BatchNorm1d:
        bn = nn.utils.skip_init(
            nn.BatchNorm1d,
            layer.num_features,
            eps=layer.eps,
            momentum=layer.momentum,
            affine=layer.affine,
            track_running_stats=layer.track_running_stats,
            dtype=tdtype,
        )
        if layer.weight is not None:
            _fill(bn.weight, layer.weight.data)
            _fill(bn.bias, layer.bias.data)
        if layer.track_running_stats:
            _fill(bn.running_mean, layer.running_mean)
            _fill(bn.running_var, layer.running_var)
            with torch.no_grad():
                bn.num_batches_tracked.fill_(int(layer.num_batches_tracked[0]))
        return bn
    if cls is fl.LayerNorm:
        ln = nn.utils.skip_init(
            nn.LayerNorm, layer.num_features, eps=layer.eps, elementwise_affine=layer.elementwise_affine, dtype=tdtype
        )
        if layer.weight is not None:
            _fill(ln.weight, layer.weight.data)
            _fill(ln.bias, layer.bias.data)
        return ln
    if cls is fl.Dropout:
        state = layer.buffers()
        drop = nn.Dropout(layer.p, inplace=bool(extra.get("inplace", False)))
        return _mark(drop, seed=int(state["seed"][0]), step=int(state["step"][0]), **_free_dtype(layer))
    if cls in _ACTIVATION_NAME:
        act = _TORCH_ACTIVATION[_ACTIVATION_NAME[cls]](**layer.config(), **extra)
        return _mark(act, layer=True, **_free_dtype(layer))
    if cls is fl.Softmax:
        return _mark(nn.Softmax(dim=extra.get("dim", -1)), **_free_dtype(layer))
    if cls is fl.Identity:
        return _mark(nn.Identity(), **_free_dtype(layer))
    if cls is fl.Standardize:
        return Standardize(torch.from_numpy(layer.mean), torch.from_numpy(layer.std), inverse=layer.inverse)
    raise TypeError(f"{where}: {_qualname(layer)} has no PyTorch counterpart; supported layers: {_LAYERS_TEXT}")


def to_torch(model):
    """A PyTorch ``nn.Sequential`` with a copy of a fastbp model's weights.

    Parameters
    ----------
    model : fastbp.Sequential, or one fastbp layer
        Of the layers ``Linear`` (with or without a fused activation), ``BatchNorm1d``,
        ``LayerNorm``, ``Dropout``, ``Softmax``, ``Identity``, ``Standardize`` and the
        activation layers (``ReLU`` ... ``Softplus``).

    Returns
    -------
    torch.nn.Sequential
        Modules in the model's order, on the CPU, in the model's dtype: ``Linear(W)``
        becomes ``nn.Linear`` with ``weight = W.T`` (out, in), a fused activation
        the activation module after it, ``Standardize`` a :class:`fastbp.torch.Standardize`.
        Each module is in its layer's mode (``training``); the Sequential itself is in
        training mode if any layer is. The tensors are copies, bit for bit; building the
        modules draws nothing from torch's random generator.

    Raises
    ------
    TypeError
        ``model`` is not a fastbp Sequential or layer, or holds a layer of another class
        (named by its index).

    Examples
    --------
    >>> import fastbp, fastbp.torch
    >>> fastbp.torch.to_torch(fastbp.Sequential(fastbp.Linear(4, 8, activation="relu"), fastbp.Linear(8, 3)))
    Sequential(
      (0): Linear(in_features=4, out_features=8, bias=True)
      (1): ReLU()
      (2): Linear(in_features=8, out_features=3, bias=True)
    )
    """
    if isinstance(model, Sequential):
        layers, names = list(model.layers), [f"model.layers[{i}]" for i in range(len(model.layers))]
    elif isinstance(model, Layer):
        layers, names = [model], ["model"]
    else:
        raise TypeError(f"model: expected a fastbp.Sequential or a fastbp layer, got {_qualname(model)}")
    mods: list = []
    for where, layer in zip(names, layers):
        mods += _modules_of(where, layer)
    seq = nn.Sequential(*mods)
    # Not seq.train(): that would set every module; the container's own flag says "any layer trains".
    seq.training = any(layer.training for layer in layers)
    return seq
