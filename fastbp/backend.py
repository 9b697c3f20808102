"""Backend selection: ``"numba"`` runs :mod:`fastbp.kernels`, ``"numpy"`` their twins.

Also the activations table: each activation's kernel code, its parameters (PyTorch's
names and defaults) and whether its backward reads the pre-activation; :class:`Activation`
is one resolved entry (:func:`resolve_activation`), which layers and :mod:`fastbp.ops` run.
"""

from __future__ import annotations

import functools
import numbers

import numpy as np

from . import _validate as v
from . import kernels, reference
from ._validate import choice
from .jit import ELU, GELU, GELU_TANH, IDENTITY, LEAKY_RELU, RELU, SIGMOID, SILU, SOFTPLUS, TANH

BACKENDS = {"numba": kernels, "numpy": reference}

ACTIVATIONS = {
    None: IDENTITY,
    "identity": IDENTITY,
    "relu": RELU,
    "sigmoid": SIGMOID,
    "tanh": TANH,
    "leaky_relu": LEAKY_RELU,
    "elu": ELU,
    "gelu": GELU,
    "gelu_tanh": GELU_TANH,
    "silu": SILU,
    "softplus": SOFTPLUS,
}

_FINITE = v.Interval(numbers.Real, finite=True)
# Softplus divides by beta: 0 is refused (PyTorch takes it and returns inf/NaN); any other finite value is fine.
_NONZERO = (
    v.Interval(numbers.Real, 0, None, "neither", finite=True),
    v.Interval(numbers.Real, None, 0, "neither", finite=True),
)

# The parameters of the activations that take some: (name, default, constraints), PyTorch's names,
# defaults and ranges (a negative slope or alpha is allowed, as in PyTorch). Numeric parameters reach the
# kernels as p1, p2 in this order; gelu's ``approximate`` picks the kernel code instead.
ACTIVATION_PARAMS: dict[str, tuple] = {
    "leaky_relu": (("negative_slope", 0.01, (_FINITE,)),),
    "elu": (("alpha", 1.0, (_FINITE,)),),
    "gelu": (("approximate", "none", (v.Options("none", "tanh"),)),),
    "softplus": (("beta", 1.0, _NONZERO), ("threshold", 20.0, (v.Interval(numbers.Real),))),
}

# Activations whose derivative is not a function of their output, so that backward reads the
# pre-activation: GELU and SiLU are not monotonic (two inputs share each negative output), and
# Softplus's threshold makes it jump, so that outputs just above the threshold have two preimages
# with different slopes. LeakyReLU and ELU join them when their slope or alpha is negative
# (``y > 0`` then comes from either sign of ``x``).
_READS_INPUT = {GELU, GELU_TANH, SILU, SOFTPLUS}
# The codes the original kernels (bias_act / act_backward) serve: no parameter, backward from the output.
_OUTPUT_ONLY = {IDENTITY, RELU, SIGMOID, TANH}


def get(backend: str):
    """The kernel module for ``backend`` (``"numba"`` or ``"numpy"``)."""
    module = BACKENDS.get(backend) if isinstance(backend, str) else None  # the fast path: called every batch
    return module if module is not None else BACKENDS[choice(backend, "backend", tuple(BACKENDS))]


@functools.lru_cache(maxsize=64)
def zero_bias(width: int, dtype) -> np.ndarray:
    """A shared zeros vector: the bias of a layer without one (kernels only read it)."""
    return np.zeros(width, dtype)


@functools.lru_cache(maxsize=64)
def identity_bias(width: int, dtype) -> np.ndarray:
    """A shared vector of -0.0: adding it changes nothing, -0.0 included (``-0.0 + 0.0`` is ``+0.0``).

    The bias of a standalone activation, so that ``gelu(-0.0)`` is ``-0.0`` as in PyTorch.
    """
    return np.full(width, -0.0, dtype)


@functools.lru_cache(maxsize=8)
def no_input(dtype) -> np.ndarray:
    """The (0, 0) array the parameterised kernels take for "no saved pre-activation" (or no output)."""
    return np.empty((0, 0), dtype)


def bias_scratch(width: int, dtype) -> np.ndarray:
    """Workspace for :func:`fastbp.kernels.bias_grad`: (CHUNKS, width)."""
    return np.empty((kernels.linear.CHUNKS, width), dtype)


def activation_code(name) -> int:
    """The kernels' code for an activation name (None and "identity" are the same)."""
    return ACTIVATIONS[choice(name, "activation", tuple(ACTIVATIONS))]


class Activation:
    """An activation resolved for the kernels; :func:`resolve_activation` builds one.

    Attributes
    ----------
    name : str or None
        The activation's name, None for the identity.
    params : dict
        Every parameter of the activation with its value, defaults included (empty for
        activations without parameters): what rebuilds it.
    code : int
        The kernels' activation code (:mod:`fastbp.jit`).
    p1, p2 : float
        The numeric parameters in the kernels' order (0 where unused).
    reads_input : bool
        Whether backward needs the pre-activation (else the output suffices).
    original : bool
        Identity, relu, sigmoid or tanh: run by the original kernels ``bias_act`` /
        ``act_backward``; the others by ``bias_act_param`` / ``act_backward_param``.
    """

    __slots__ = ("name", "params", "code", "p1", "p2", "reads_input", "original")

    def __init__(self, name, params: dict, code: int, numeric: tuple):
        self.name = name
        self.params = params
        self.code = code
        self.p1, self.p2 = (*numeric, 0.0, 0.0)[:2]
        self.reads_input = code in _READS_INPUT or (code in (LEAKY_RELU, ELU) and self.p1 < 0)
        self.original = code in _OUTPUT_ONLY

    def forward(self, mod, y, b, z=None):
        """In place: ``y = act(y + b)``; ``z`` (``y``'s shape) receives ``y + b`` when given.

        ``mod`` is a backend module (:func:`get`). A layer whose activation
        :attr:`reads_input` passes ``z`` during training.
        """
        if self.original:
            mod.bias_act(y, b, self.code)  # their backward reads only y: nothing to save
        else:
            t = y.dtype.type
            mod.bias_act_param(y, b, self.code, t(self.p1), t(self.p2), no_input(y.dtype) if z is None else z)

    def backward(self, mod, dy, y, z, dx):
        """``dx = dy * act'``; ``y`` is the forward output, ``z`` the pre-activation (None if not kept).

        ``z`` must be given when :attr:`reads_input`; ``y`` may then be None. ``dx`` may be ``dy``.
        """
        if self.original:
            mod.act_backward(dy, y, self.code, dx)
            return
        if z is None and self.reads_input:
            raise ValueError(f"{self.name}: backward needs the pre-activation, which was not kept")
        t = dy.dtype.type
        empty = no_input(dy.dtype)
        mod.act_backward_param(
            dy, empty if y is None else y, empty if z is None else z, self.code, t(self.p1), t(self.p2), dx
        )

    def __eq__(self, other):
        return isinstance(other, Activation) and (self.code, self.params) == (other.code, other.params)

    def __hash__(self):
        return hash((self.code, tuple(sorted(self.params.items()))))

    def __repr__(self):
        params = "".join(f", {k}={p!r}" for k, p in self.params.items())
        return f"Activation({self.name!r}{params})"


def resolve_activation(name, params=None, *, argument: str | None = "activation_params") -> Activation:
    """The :class:`Activation` for ``name`` with ``params`` (a dict, missing entries take their default).

    Parameters
    ----------
    name : str or None
        A key of :data:`ACTIVATIONS`.
    params : dict or None
        Values for the activation's parameters (:data:`ACTIVATION_PARAMS`).
    argument : str or None
        What errors call the dict: ``activation_params['alpha']: expected ...``; with None,
        the parameters are named alone (``alpha: expected ...``), as layer constructors take them.

    Raises
    ------
    TypeError
        ``params`` is not a dict, has a key the activation does not take, or a value of the wrong type.
    ValueError
        A value out of range, or an unknown activation name.
    """
    code = activation_code(name)
    spec = ACTIVATION_PARAMS.get(name, ()) if isinstance(name, str) else ()
    what = argument or "parameters"
    if params is None:
        params = {}
    elif not isinstance(params, dict):
        raise TypeError(f"{what}: expected a dict or None, got {type(params).__name__} {params!r}")
    known = tuple(p for p, _, _ in spec)
    unknown = [k for k in params if k not in known]
    if unknown:
        expected = f"parameters among {', '.join(known)}" if known else "no parameters"
        raise TypeError(f"{what}: expected {expected} for activation {name!r}, got {unknown[0]!r}")
    resolved, numeric = {}, []
    for p, default, constraints in spec:
        label = f"{argument}[{p!r}]" if argument else p
        value = v.check(params.get(p, default), label, *constraints)
        resolved[p] = value
        if isinstance(value, float):
            numeric.append(value)
    if code == GELU and resolved["approximate"] == "tanh":
        code = GELU_TANH
    return Activation(None if code == IDENTITY else name, resolved, code, tuple(numeric))
