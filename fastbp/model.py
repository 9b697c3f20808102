"""``Sequential``: a stack of layers trained by backpropagation."""

from __future__ import annotations

import numpy as np

from . import _validate as v
from .layers.base import Layer


class Sequential:
    """Layers applied in order.

    ``forward(x)`` runs each layer's ``forward``; ``backward(dy=None)`` runs
    their ``backward`` in reverse (``dy=None`` means an upstream of ones:
    docs/derivations.md, "Matmul gradients and the upstream of ones") and
    leaves every parameter's ``.grad`` overwritten.

    Parameters
    ----------
    *layers : Layer
        Those with parameters all of one dtype, which is the model's ``dtype``
        (None when no layer has parameters: the model follows its input).

    Examples
    --------
    >>> import numpy as np, fastbp
    >>> model = fastbp.Sequential(fastbp.Linear(4, 8, activation="relu", seed=0), fastbp.Linear(8, 3, seed=1))
    >>> model(np.ones((2, 4), np.float32)).shape
    (2, 3)
    """

    def __init__(self, *layers: Layer):
        if not layers:
            raise ValueError("layers: expected at least one layer, got none")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"layers[{i}]: expected a fastbp Layer, got {type(layer).__name__}")
        # Layers without parameters (dtype None) take the dtype of their input.
        dtypes = {layer.dtype for layer in layers if layer.dtype is not None}
        if len(dtypes) > 1:
            raise TypeError(f"layers: expected one dtype for all layers, got {sorted(str(d) for d in dtypes)}")
        self.layers = list(layers)
        self.dtype = dtypes.pop() if dtypes else None
        # backward skips every dx at or before this layer: found once, not every step
        self._first_with_params = next((i for i, layer in enumerate(layers) if layer.parameters()), len(layers))
        self.metadata: dict = {}  # saved with the model (class names, feature names ...)

    def forward(self, x):
        """``x`` (batch, in) -> output of the last layer (a buffer reused next step)."""
        for layer in self.layers:
            x = layer.forward(x)
        return x

    __call__ = forward

    def backward(self, dy=None, *, input_grad: bool = False):
        """Backpropagate ``dy`` (None means ones) into every parameter's ``.grad``.

        Returns None, or ``dL/dx`` (batch, in) with ``input_grad=True``. By
        default the gradients no parameter needs are skipped: the first layer's
        ``dx`` matmul (a quarter of the backward FLOPs of a 784-512-256-10 MLP)
        and those of layers behind parameter-free ones. That is what training
        wants, so the obvious loop is the fast one.
        """
        # Layer i needs dx when a layer before it has parameters (or the caller wants dx).
        first = -1 if input_grad else self._first_with_params
        for i in range(len(self.layers) - 1, -1, -1):
            dy = self.layers[i].backward(dy, need_dx=i > first)
            if i <= first:
                return None
        return dy

    def predict(self, x, *, batch_size: int = 4096):
        """Outputs for ``x`` (n, in), computed ``batch_size`` rows at a time.

        Uses no layer buffers or caches, so several threads may predict with
        one model at once, and a large ``x`` never allocates activations for
        all rows together.

        Parameters
        ----------
        x : (n, in) float array; converted to the model's dtype (C order not needed)
        batch_size : int, rows per block

        Returns
        -------
        (n, out) array of the model's dtype (the input's for a model without parameters)
        """
        width = getattr(self.layers[0], "in_features", None)
        dtype = self.dtype if self.dtype is not None else x.dtype if type(x) is np.ndarray else None
        # The call a service makes per request (an ndarray of the model's dtype and width, one
        # block) is checked here in a few attribute reads; anything else takes the full checks.
        if not (
            type(x) is np.ndarray
            and type(batch_size) is int
            and x.ndim == 2
            and x.dtype == dtype
            and dtype in v.FLOAT_DTYPES
            and (width is None or x.shape[1] == width)
            and 0 < x.shape[0] <= batch_size
            and x.shape[1] > 0
        ):
            batch_size = v.positive_int(batch_size, "batch_size")
            x = v.batch(x, "x", dtype=self.dtype, width=width, contiguous=False)
        outs = []
        for start in range(0, x.shape[0], batch_size):
            h = x[start : start + batch_size] if x.shape[0] > batch_size else x
            for layer in self.layers:
                h = layer.infer(h)
            outs.append(h)
        return outs[0] if len(outs) == 1 else np.concatenate(outs)

    def parameters(self) -> list:
        """Every layer's parameters, in order."""
        return [p for layer in self.layers for p in layer.parameters()]

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.zero_grad()

    def _named(self):
        """``(key, array)`` for every parameter, then every buffer, keyed by layer index."""
        params = [(f"{i}.{p.name}", p.data) for i, layer in enumerate(self.layers) for p in layer.parameters()]
        bufs = [(f"{i}.{k}", a) for i, layer in enumerate(self.layers) for k, a in layer.buffers().items()]
        return params + bufs

    def buffers(self) -> dict:
        """Every layer's buffers (running statistics ...), keyed like :meth:`state_dict`; not copies."""
        return {f"{i}.{k}": a for i, layer in enumerate(self.layers) for k, a in layer.buffers().items()}

    def state_dict(self) -> dict:
        """Copies of the parameters and buffers, keyed ``"<layer>.<name>"`` (``"0.W"``, ``"1.running_mean"`` ...)."""
        return {k: a.copy() for k, a in self._named()}

    def load_state_dict(self, state: dict) -> None:
        """Copy ``state`` into the parameters and buffers in place (optimizers keep their references)."""
        named = dict(self._named())
        missing = sorted(set(named) - set(state))
        extra = sorted(set(state) - set(named))
        if missing or extra:
            raise ValueError(f"state: keys do not match the model (missing {missing}, unexpected {extra})")
        for k, dest in named.items():
            a = np.asarray(state[k])
            if a.shape != dest.shape:
                raise ValueError(f"state[{k!r}]: expected shape {dest.shape}, got {a.shape}")
            if a.dtype != dest.dtype:
                raise TypeError(f"state[{k!r}]: expected dtype {dest.dtype}, got {a.dtype}")
        for k, dest in named.items():
            np.copyto(dest, state[k])

    def train(self, mode: bool = True):
        for layer in self.layers:
            layer.train(mode)
        return self

    def eval(self):
        return self.train(False)

    def __len__(self):
        return len(self.layers)

    def __getitem__(self, i):
        return self.layers[i]

    def __repr__(self):
        inner = ",\n  ".join(repr(layer) for layer in self.layers)
        return f"Sequential(\n  {inner}\n)"
