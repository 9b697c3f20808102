"""``Sequential``: a stack of layers trained by backpropagation."""

from __future__ import annotations

import numpy as np

from . import _validate as v
from .data import Rows
from .layers.base import Layer
from .layers.fused import find_runs


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
        self.metadata: dict = {}  # saved with the model (class names, feature names ...)
        self._plan_for: tuple | None = None
        self._plan()

    def _plan(self) -> list:
        """The fused runs (``fastbp.layers.fused``), found again whenever ``self.layers`` has changed.

        Also ``_first_with_params``: backward skips every dx at or before this layer.
        Checking costs one tuple of the layers per call (compared by identity).
        """
        key = tuple(self.layers)
        if key != self._plan_for:
            layers = self.layers
            self._first_with_params = next((i for i, layer in enumerate(layers) if layer.parameters()), len(layers))
            self._runs = find_runs(layers)
            self._run_ending: list = [None] * len(layers)  # [i]: the run whose last layer is i, or None
            for run in self._runs:
                self._run_ending[run.stop - 1] = run
            self._plan_for = key
        return self._runs

    def forward(self, x):
        """``x`` (batch, in) -> output of the last layer (a buffer reused next step).

        In training, ``BatchNorm1d -> activation -> Dropout`` runs go through one fused
        kernel (``fastbp.layers.fused``): the same bits, the same layer state, fewer passes.
        """
        layers = self.layers
        i = 0
        for run in self._plan():
            for layer in layers[i : run.start]:
                x = layer.forward(x)
            if run.active():
                x = run.forward(x)
            else:
                run.fused_last = False
                for layer in run.layers:
                    x = layer.forward(x)
            i = run.stop
        for layer in layers[i:] if i else layers:
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
        self._plan()
        first = -1 if input_grad else self._first_with_params
        layers, ending = self.layers, self._run_ending
        i = len(layers) - 1
        while i >= 0:
            run = ending[i]
            if run is not None and run.fused_last:  # the last forward ran it fused
                i = run.start
                dy = run.backward(dy, need_dx=i > first)
            else:
                dy = layers[i].backward(dy, need_dx=i > first)
            if i <= first:
                return None
            i -= 1
        return dy

    def predict(self, x, *, batch_size: int = 4096):
        """Outputs for ``x`` (n, in), computed ``batch_size`` rows at a time.

        Uses no layer buffers or caches, so several threads may predict with
        one model at once, and a large ``x`` never allocates activations for
        all rows together.

        Parameters
        ----------
        x : (n, in) float array of any float dtype and layout (an ``np.memmap`` too), or
            :class:`fastbp.data.Rows`; each block is converted to the model's dtype and C order
            as it is computed, so ``x`` is never copied whole
        batch_size : int, rows per block

        Returns
        -------
        (n, out) array of the model's dtype (the input's for a model without parameters)
        """
        width = getattr(self.layers[0], "in_features", None)
        dtype = self.dtype if self.dtype is not None else x.dtype if type(x) is np.ndarray else None
        # The call a service makes per request (an ndarray of the model's dtype and width, one
        # block) is checked here in a few attribute reads; anything else takes the full checks.
        if (
            type(x) is np.ndarray
            and type(batch_size) is int
            and x.ndim == 2
            and x.dtype == dtype
            and dtype in v.FLOAT_DTYPES
            and (width is None or x.shape[1] == width)
            and 0 < x.shape[0] <= batch_size
            and x.shape[1] > 0
        ):
            for layer in self.layers:
                x = layer.infer(x)
            return x
        batch_size = v.positive_int(batch_size, "batch_size")
        if isinstance(x, Rows):
            if width is not None and x.shape[1] != width:
                raise ValueError(f"x: expected shape (batch, {width}), got {x.shape}")
            blocks = ((start, b) for start, b in x.blocks(batch_size))
        else:
            x = v.batch(x, "x", dtype=self.dtype, width=width, convert=False)  # checked; converted per block
            rows = Rows(x, self.dtype if self.dtype is not None else x.dtype)
            blocks = ((start, rows.block(start, start + batch_size)) for start in range(0, x.shape[0], batch_size))
        n, out = x.shape[0], None
        for start, h in blocks:
            h = self._infer(h)
            if h.shape[0] == n:
                return h
            if out is None:  # one output array, filled block by block (no list of blocks to concatenate)
                out = np.empty((n,) + h.shape[1:], h.dtype)
            out[start : start + h.shape[0]] = h
        if out is None:
            raise ValueError(f"x: expected at least one row, got shape {x.shape}")
        return out

    def _infer(self, h):
        for layer in self.layers:
            h = layer.infer(h)
        return h

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
