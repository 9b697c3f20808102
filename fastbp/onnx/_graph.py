"""fastbp layers as ONNX nodes: a small graph builder and one converter per layer type.

Used by :func:`fastbp.onnx.export`, which passes the onnx module in: importing this module
does not import onnx (so that it imports, and its docstrings are searched, without onnx).
Every converter computes what the layer's ``infer`` computes (eval mode), with the same
formulas as fastbp's kernels (docs/derivations.md, docs/normalization.md), in the graph's dtype.
"""

from __future__ import annotations

import numpy as np

from .. import layers as L
from ..backend import resolve_activation
from ..jit import ELU, GELU, GELU_TANH, IDENTITY, LEAKY_RELU, RELU, SIGMOID, SILU, SOFTPLUS, TANH
from ..kernels.activations import TANH_C0, TANH_C1

# onnx.TensorProto's element types
FLOAT, DOUBLE, INT64 = 1, 11, 7
ELEM_TYPES = {np.dtype(np.float32): FLOAT, np.dtype(np.float64): DOUBLE}
_SQRT1_2 = 0.7071067811865476  # the float64 kernel's constant: Phi(x) = erfc(-x * _SQRT1_2) / 2

# Cephes' erfc (ndtr.c), leading coefficient first; Q, S and U have an implicit leading 1.
# Against math.erfc: 5e-15 relative for |a| < 8, 6e-14 out to the underflow at a = 26.5 (the rounding
# of a * a, amplified by exp); GELU: tests/test_onnx.py::test_float64_gelu_tail_is_accurate.
_ERFC_P = (2.46196981473530512524e-10, 5.64189564831068821977e-1, 7.46321056442269912687e0,
           4.86371970985681366614e1, 1.96520832956077098242e2, 5.26445194995477358631e2,
           9.34528527171957607540e2, 1.02755188689515710272e3, 5.57535335369399327526e2)  # fmt: skip
_ERFC_Q = (1.0, 1.32281951154744992508e1, 8.67072140885989742329e1, 3.54937778887819891062e2,
           9.75708501743205489753e2, 1.82390916687909736289e3, 2.24633760818710981792e3,
           1.65666309194161350182e3, 5.57535340817727675546e2)  # fmt: skip
_ERFC_R = (5.64189583547755073984e-1, 1.27536670759978104416e0, 5.01905042251180477414e0,
           6.16021097993053585195e0, 7.40974269950448939160e0, 2.97886665372100240670e0)  # fmt: skip
_ERFC_S = (1.0, 2.26052863220117276590e0, 9.39603524938001434673e0, 1.20489539808096656605e1,
           1.70814450747565897222e1, 9.60896809063285878198e0, 3.36907645100081516050e0)  # fmt: skip
_ERF_T = (9.60497373987051638749e0, 9.00260197203842689217e1, 2.23200534594684319226e3,
          7.00332514112805075473e3, 5.55923013010394962768e4)  # fmt: skip
_ERF_U = (1.0, 3.35617141647503099647e1, 5.21357949780152679795e2, 4.59432382970980127987e3,
          2.26290000613890934246e4, 4.92673942608635921086e4)  # fmt: skip


class Graph:
    """Nodes and initializers of one graph, in one float dtype, for one opset.

    ``prefix`` (set per layer) starts every node and initializer name, so a node
    names the layer it came from (``"2.MatMul"`` is layer 2).
    """

    def __init__(self, onnx, dtype, opset: int):
        self.onnx = onnx
        self.dtype = np.dtype(dtype)
        self.opset = opset
        # onnxruntime's CPU provider has float kernels only for LeakyRelu, Elu, Softplus, Erf and
        # Gelu: a float64 graph composes them from ops that have double kernels.
        self.native = self.dtype == np.float32
        self.nodes: list = []
        self.initializers: list = []
        self.prefix = ""
        self._names: set[str] = set()
        self._scalars: dict[bytes, str] = {}

    def reserve(self, name: str) -> None:
        """Keep ``name`` (the graph's input or output) from being given to a node."""
        self._names.add(name)

    def _unique(self, base: str) -> str:
        name, k = base, 1
        while name in self._names:
            k += 1
            name = f"{base}_{k}"
        self._names.add(name)
        return name

    def const(self, value, name: str, dtype=None) -> str:
        """An initializer holding ``value`` in the graph's dtype (or ``dtype``); returns its name."""
        arr = np.ascontiguousarray(np.asarray(value, dtype=self.dtype if dtype is None else dtype))
        name = self._unique(self.prefix + name)
        self.initializers.append(self.onnx.numpy_helper.from_array(arr, name))
        return name

    def scalar(self, value: float) -> str:
        """A 0-d constant of the graph's dtype, shared by every node that uses the same value."""
        arr = np.asarray(value, self.dtype)
        key = arr.tobytes()  # -0.0 and 0.0 are different constants
        if key not in self._scalars:
            prefix, self.prefix = self.prefix, ""
            self._scalars[key] = self.const(arr, f"c{float(arr)!r}")
            self.prefix = prefix
        return self._scalars[key]

    def op(self, op_type: str, *inputs: str, **attrs) -> str:
        """Append a node with one output; returns the output's name (also the node's name)."""
        out = self._unique(f"{self.prefix}{op_type}")
        self.nodes.append(self.onnx.helper.make_node(op_type, list(inputs), [out], name=out, **attrs))
        return out

    def rename(self, old: str, new: str) -> None:
        """Make the node that produces ``old`` produce ``new`` instead (the graph's output name)."""
        for node in self.nodes:
            for j, name in enumerate(node.output):
                if name == old:
                    node.output[j] = new
                    return
        raise KeyError(old)  # pragma: no cover - callers pass a node output

    # -- composed functions --------------------------------------------------------
    def polevl(self, x: str, coeffs) -> str:
        """``coeffs[0] x^n + ... + coeffs[n]`` by Horner's rule."""
        p = self.op("Mul", x, self.scalar(coeffs[0])) if coeffs[0] != 1.0 else x
        for c in coeffs[1:-1]:
            p = self.op("Mul", self.op("Add", p, self.scalar(c)), x)
        return self.op("Add", p, self.scalar(coeffs[-1]))

    def x_times(self, x: str, s: str) -> str:
        """``x * s``, and -0.0 (the limit) where ``s`` is 0, as fastbp's GELU and SiLU: ``-inf * 0`` would be NaN."""
        return self.op("Where", self.op("Equal", s, self.scalar(0.0)), self.scalar(-0.0), self.op("Mul", x, s))

    def expm1(self, x: str) -> str:
        """``exp(x) - 1`` without the cancellation near 0: Kahan's ``(u - 1) x / log(u)``, ``u = exp(x)``.

        ``u - 1`` is 0 where ``|x|`` is below an ulp of 1 (the value is ``x``), and -1 where
        ``exp(x)`` is negligible (the value is -1, which ``log(0)`` would turn into 0).
        """
        u = self.op("Exp", x)
        d = self.op("Sub", u, self.scalar(1.0))
        q = self.op("Div", self.op("Mul", d, x), self.op("Log", u))
        minus_one = self.scalar(-1.0)
        q = self.op("Where", self.op("Equal", d, minus_one), minus_one, q)
        return self.op("Where", self.op("Equal", d, self.scalar(0.0)), x, q)

    def log1p(self, e: str) -> str:
        """``log(1 + e)`` for ``e >= 0`` without losing ``e`` to the rounding of ``1 + e``: ``log(u) e / (u - 1)``."""
        u = self.op("Add", e, self.scalar(1.0))
        d = self.op("Sub", u, self.scalar(1.0))
        q = self.op("Mul", self.op("Log", u), self.op("Div", e, d))
        return self.op("Where", self.op("Equal", d, self.scalar(0.0)), e, q)

    def phi(self, x: str) -> str:
        """The normal CDF ``erfc(-x / sqrt 2) / 2`` with Cephes' erfc, accurate in both tails.

        onnxruntime has no double Erf, and ``(1 + erf) / 2`` would cancel in the lower tail.
        """
        a = self.op("Mul", x, self.scalar(-_SQRT1_2))
        a2 = self.op("Mul", a, a)
        # |a| capped at 30 (erfc underflows from 26.5) so the rational functions stay finite at inf
        z = self.op("Min", self.op("Abs", a), self.scalar(30.0))
        small = self.op(
            "Sub", self.scalar(1.0), self.op("Div", self.op("Mul", a, self.polevl(a2, _ERF_T)), self.polevl(a2, _ERF_U))
        )
        mid = self.op("Div", self.polevl(z, _ERFC_P), self.polevl(z, _ERFC_Q))
        far = self.op("Div", self.polevl(z, _ERFC_R), self.polevl(z, _ERFC_S))
        tail = self.op(
            "Mul", self.op("Exp", self.op("Neg", a2)), self.op("Where", self.op("Less", z, self.scalar(8.0)), mid, far)
        )
        tail = self.op("Where", self.op("Less", a, self.scalar(0.0)), self.op("Sub", self.scalar(2.0), tail), tail)
        erfc = self.op("Where", self.op("Less", z, self.scalar(1.0)), small, tail)
        return self.op("Mul", erfc, self.scalar(0.5))

    def reduce_mean(self, x: str, axis: int) -> str:
        """The mean over ``axis``, kept as a dimension of 1 (axes became an input in opset 18)."""
        if self.opset >= 18:
            return self.op("ReduceMean", x, self.const([axis], "axes", np.int64), keepdims=1)
        return self.op("ReduceMean", x, axes=[axis], keepdims=1)


# -- activations -----------------------------------------------------------------------
def activation(g: Graph, act, x: str) -> str:
    """Nodes computing ``act`` (a :class:`fastbp.backend.Activation`) of ``x``; ``x`` itself for the identity."""
    code, params = act.code, act.params
    if code == IDENTITY:
        return x
    if code == RELU:
        return g.op("Relu", x)
    if code == SIGMOID:
        return g.op("Sigmoid", x)
    if code == TANH:
        return g.op("Tanh", x)
    if code == LEAKY_RELU:
        slope = params["negative_slope"]
        if g.native:  # float attributes are float32, the float32 kernel's parameter exactly
            return g.op("LeakyRelu", x, alpha=float(slope))
        return g.op("Where", g.op("Greater", x, g.scalar(0.0)), x, g.op("Mul", x, g.scalar(slope)))
    if code == ELU:
        alpha = params["alpha"]
        if g.native:
            return g.op("Elu", x, alpha=float(alpha))
        return g.op("Where", g.op("Greater", x, g.scalar(0.0)), x, g.op("Mul", g.expm1(x), g.scalar(alpha)))
    if code == SOFTPLUS:
        return _softplus(g, x, params["beta"], params["threshold"])
    if code == SILU:
        return g.x_times(x, g.op("Sigmoid", x))
    if code == GELU:
        if g.native and g.opset >= 20:
            return g.op("Gelu", x, approximate="none")
        if g.native:  # float32 below opset 20: onnxruntime's float Erf, cancelling in the lower tail as PyTorch's
            erf = g.op("Erf", g.op("Mul", x, g.scalar(_SQRT1_2)))
            return g.x_times(x, g.op("Mul", g.op("Add", erf, g.scalar(1.0)), g.scalar(0.5)))
        return g.x_times(x, g.phi(x))
    if code == GELU_TANH:
        if g.native and g.opset >= 20:
            return g.op("Gelu", x, approximate="tanh")
        # fastbp's form: 0.5 x (1 + tanh(u)) = x sigmoid(2u), which does not cancel for negative x
        inner = g.op("Add", g.scalar(TANH_C0), g.op("Mul", g.op("Mul", x, g.scalar(TANH_C1)), x))
        return g.x_times(x, g.op("Sigmoid", g.op("Mul", x, inner)))
    raise ValueError(f"activation {act.name!r} (code {code}) has no ONNX form")


def _softplus(g: Graph, x: str, beta: float, threshold: float) -> str:
    """fastbp's (and PyTorch's) Softplus: ``x`` where ``beta x > threshold``, else ``log1p(exp(beta x)) / beta``.

    ONNX's Softplus has neither ``beta`` nor the threshold; the threshold matters, because
    softplus jumps by ``log1p(exp(-threshold)) / beta`` there (docs/derivations.md, "Softplus").
    """
    t = x if beta == 1.0 else g.op("Mul", x, g.scalar(beta))
    if g.native:
        sp = g.op("Softplus", t)
    else:  # max(t, 0) + log1p(exp(-|t|)), as the float64 kernel
        sp = g.op("Add", g.op("Relu", t), g.log1p(g.op("Exp", g.op("Neg", g.op("Abs", t)))))
    if beta != 1.0:
        sp = g.op("Div", sp, g.scalar(beta))
    return g.op("Where", g.op("Greater", t, g.scalar(threshold)), x, sp)


# -- layers ----------------------------------------------------------------------------
def _linear(g: Graph, layer: L.Linear, x: str) -> str:
    y = g.op("MatMul", x, g.const(layer.W.data, "W"))
    if layer.b is not None:
        y = g.op("Add", y, g.const(layer.b.data, "b"))
    return activation(g, layer.act, y)


def _standardize(g: Graph, layer: L.Standardize, x: str) -> str:
    # The layer's own formula and constants (fastbp/layers/scaling.py): (x - mean) * (1 / std),
    # or x * std + mean, with 1 / std taken in float64 from the stored std and rounded once.
    std64 = layer.std.astype(np.float64)
    if layer.inverse:
        return g.op("Add", g.op("Mul", x, g.const(std64, "std")), g.const(layer.mean, "mean"))
    return g.op("Mul", g.op("Sub", x, g.const(layer.mean, "mean")), g.const(1.0 / std64, "inv_std"))


def _affine(layer) -> tuple[np.ndarray, np.ndarray]:
    """The normalization layer's weight and bias, or ones and zeros without them."""
    m = layer.num_features
    if layer.weight is None:
        return np.ones(m, layer.dtype), np.zeros(m, layer.dtype)
    return layer.weight.data, layer.bias.data


def _batchnorm(g: Graph, layer: L.BatchNorm1d, x: str) -> str:
    gamma, beta = _affine(layer)
    if layer.track_running_stats:
        # The eval kernel's folded constants: y = (x - running_mean) * scale + beta, with
        # scale = gamma / sqrt(running_var + eps) formed in float64 and rounded once.
        assert layer.running_mean is not None and layer.running_var is not None
        inv = 1.0 / np.sqrt(layer.running_var.astype(np.float64) + layer.eps)
        scale = gamma.astype(np.float64) * inv
        y = g.op("Mul", g.op("Sub", x, g.const(layer.running_mean, "running_mean")), g.const(scale, "scale"))
        return g.op("Add", y, g.const(beta, "bias"))
    # Without running statistics fastbp normalizes every batch by its own mean and biased
    # variance, in eval mode too; they are taken in float64, as the kernels take them.
    return _normalize(g, x, axis=0, eps=layer.eps, gamma=gamma, beta=beta)


def _normalize(g: Graph, x: str, *, axis: int, eps: float, gamma, beta) -> str:
    """``(x - mean) / sqrt(var + eps) * gamma + beta`` over ``axis``, the statistics in float64.

    The corrected two-pass algorithm of fastbp's kernels: the mean of the deviations removes
    the rounding error of the first mean, which is large when the values sit far from 0.
    """
    wide = g.op("Cast", x, to=DOUBLE) if g.native else x
    d = g.op("Sub", wide, g.reduce_mean(wide, axis))
    mean_d = g.reduce_mean(d, axis)
    var = g.op("Sub", g.reduce_mean(g.op("Mul", d, d), axis), g.op("Mul", mean_d, mean_d))
    eps_c = g.const(np.float64(eps), "eps", np.float64)
    x_hat = g.op("Div", g.op("Sub", d, mean_d), g.op("Sqrt", g.op("Add", var, eps_c)))
    if g.native:
        x_hat = g.op("Cast", x_hat, to=FLOAT)
    return g.op("Add", g.op("Mul", x_hat, g.const(gamma, "weight")), g.const(beta, "bias"))


def _layernorm(g: Graph, layer: L.LayerNorm, x: str) -> str:
    gamma, beta = _affine(layer)
    # onnxruntime's LayerNormalization is accurate to float32 rounding for float32 rows whose mean
    # is not far larger than their spread (1.5e-5 relative at 1000 times); its double kernel is
    # 2e-13 off, short of float64: float64 graphs compose it, as opsets before 17 must.
    if g.native and g.opset >= 17:
        return g.op(
            "LayerNormalization", x, g.const(gamma, "weight"), g.const(beta, "bias"), axis=-1, epsilon=float(layer.eps)
        )
    return _normalize(g, x, axis=1, eps=layer.eps, gamma=gamma, beta=beta)


def _activation_layer(g: Graph, layer, x: str) -> str:
    return activation(g, layer.act, x)


def _fixed(name: str):
    act = resolve_activation(name)
    return lambda g, layer, x: activation(g, act, x)


def _same(g: Graph, layer, x: str) -> str:
    return x


CONVERTERS = {
    L.Linear: _linear,
    L.ReLU: _fixed("relu"),
    L.Sigmoid: _fixed("sigmoid"),
    L.Tanh: _fixed("tanh"),
    L.Softmax: lambda g, layer, x: g.op("Softmax", x, axis=-1),
    L.Identity: _same,
    L.Dropout: _same,  # eval mode: the identity
    L.Standardize: _standardize,
    L.BatchNorm1d: _batchnorm,
    L.LayerNorm: _layernorm,
    L.LeakyReLU: _activation_layer,
    L.ELU: _activation_layer,
    L.GELU: _activation_layer,
    L.SiLU: _activation_layer,
    L.Softplus: _activation_layer,
}


def _output(g: Graph, x: str, shape: list, activation: str, classifier: bool, n_outputs: int) -> tuple[str, list]:
    """An estimator's output activation and the shape of ``predict_proba`` / ``predict`` (fastbp/sklearn)."""
    if activation == "softmax":
        x = g.op("Softmax", x, axis=-1)
    elif activation == "logistic":
        x = g.op("Sigmoid", x)
    elif activation == "exp":
        x = g.op("Exp", x)
    elif activation != "identity":
        raise ValueError(f"model: output activation {activation!r} has no ONNX form")
    if n_outputs == 1 and classifier:  # predict_proba's two columns [1 - p, p]
        return g.op("Concat", g.op("Sub", g.scalar(1.0), x), x, axis=1), ["batch", 2]
    if n_outputs == 1:  # predict's (n,) for a single output
        return g.op("Reshape", x, g.const([-1], "shape", np.int64)), ["batch"]
    return x, shape


def build(onnx, layers, tail, *, dtype, opset: int, input_name: str, output_name: str):
    """The ``onnx.ModelProto`` computing ``layers`` in eval mode, then ``tail`` (an estimator's output).

    Parameters
    ----------
    onnx : the onnx module
    layers : sequence of fastbp layers
    tail : None, or ``(output activation, is a classifier, n_outputs)`` of a fastbp.sklearn estimator
    dtype : float32 or float64, the graph's tensors
    opset : the default domain's opset
    input_name, output_name : the graph's input ``(batch, in_features)`` and output

    Raises
    ------
    TypeError
        A layer of a type that has no converter (named with its index in ``layers``).
    ValueError
        A layer whose input width does not match the layers before it.
    """
    g = Graph(onnx, dtype, opset)
    g.reserve(input_name)
    g.reserve(output_name)
    x, width, width_in = input_name, None, None
    for i, layer in enumerate(layers):
        convert = CONVERTERS.get(type(layer))  # the exact type: a subclass may compute something else
        if convert is None:
            known = ", ".join(c.__name__ for c in CONVERTERS)
            raise TypeError(
                f"model.layers[{i}]: {type(layer).__name__} cannot be exported to ONNX (exportable layers: {known})"
            )
        n_in = getattr(layer, "in_features", None)
        if n_in is not None:
            if width is None:
                width = width_in = n_in
            elif n_in != width:
                raise ValueError(
                    f"model.layers[{i}]: {type(layer).__name__} takes {n_in} features, the layers before it give "
                    f"{width}"
                )
        g.prefix = f"{i}."
        x = convert(g, layer, x)
        width = getattr(layer, "out_features", width)
    g.prefix = "out."
    # parameter-free layers only: the width is whatever the input has
    shape: list = ["batch", "features" if width is None else width]
    if tail is not None:
        x, shape = _output(g, x, shape, *tail)
    if x == input_name:  # nothing but identities: the output still needs a node of its own
        x = g.op("Identity", x)
    g.rename(x, output_name)
    elem = ELEM_TYPES[g.dtype]
    graph = onnx.helper.make_graph(
        g.nodes,
        "fastbp",
        [onnx.helper.make_tensor_value_info(input_name, elem, ["batch", "features" if width_in is None else width_in])],
        [onnx.helper.make_tensor_value_info(output_name, elem, shape)],
        initializer=g.initializers,
    )
    opsets = [onnx.helper.make_opsetid("", opset)]
    model = onnx.helper.make_model(graph, opset_imports=opsets)
    # The oldest IR version that holds this opset, so that older runtimes load the file too.
    model.ir_version = onnx.helper.find_min_ir_version_for(opsets)
    return model
