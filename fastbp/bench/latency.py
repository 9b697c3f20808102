"""Inference latency: one call of each runtime on the same MLP and the same rows.

The benchmark worker (:mod:`fastbp.bench.worker`) builds these for requests with
``"task": "predict"``; each implementation runs in its own process
(:data:`fastbp.bench.runner.PREDICT_FAMILY`) with the same thread count, and the
runner interleaves their turns. The model is :func:`fastbp.bench.mlp.make_problem`'s
ReLU MLP (``seed=0``), the rows its ``x``:

- ``fastbp``: ``Sequential.predict(x)``, the public call a service makes;
- ``numpy``: idiomatic numpy, ``np.maximum(x @ W + b, 0)`` per hidden layer;
- ``torch``: the same weights in ``torch.nn.Sequential`` under ``torch.inference_mode()``;
- ``floor``: the BLAS matmuls alone, into preallocated outputs (no bias, no activation);
- ``onnxruntime``: the model exported with :func:`fastbp.onnx.export`, one
  ``InferenceSession.run`` per call (``intra_op_num_threads`` = the thread count).
"""

from __future__ import annotations

import os
import tempfile

import numpy as np

from ..threads import get_num_threads
from .mlp import make_problem

PREDICT_IMPLS = ("fastbp", "numpy", "floor", "torch", "onnxruntime")


def _weights(model):
    return [(layer.W.data, layer.b.data) for layer in model.layers]


def fastbp_predict(model, x):
    return lambda: model.predict(x)


def numpy_predict(model, x):
    weights = _weights(model)

    def call():
        h = x
        for i, (W, b) in enumerate(weights):
            h = h @ W + b
            if i < len(weights) - 1:
                h = np.maximum(h, 0)
        return h

    return call


def floor_predict(model, x):
    Ws = [W for W, _ in _weights(model)]
    outs = [np.empty((x.shape[0], W.shape[1]), x.dtype) for W in Ws]

    def call():
        h = x
        for W, out in zip(Ws, outs):
            h = np.matmul(h, W, out=out)
        return h

    return call


def torch_predict(model, x):
    import torch  # optional: the ``torch`` extra

    torch.set_num_threads(get_num_threads())
    mods = []
    for i, (W, b) in enumerate(_weights(model)):
        lin = torch.nn.Linear(*W.shape, dtype=torch.from_numpy(W).dtype)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(W.T.copy()))
            lin.bias.copy_(torch.from_numpy(b))
        mods.append(lin)
        if i < len(model.layers) - 1:
            mods.append(torch.nn.ReLU())
    net = torch.nn.Sequential(*mods).eval()
    xt = torch.from_numpy(x)

    def call():
        with torch.inference_mode():
            return net(xt)

    return call


def onnxruntime_predict(model, x):
    import onnxruntime as ort  # optional: in the ``test`` extra

    from ..onnx import export

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "model.onnx")
        export(model, path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = get_num_threads()
        opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return lambda: sess.run(None, {name: x})


BUILDERS = {
    "fastbp": fastbp_predict,
    "numpy": numpy_predict,
    "floor": floor_predict,
    "torch": torch_predict,
    "onnxruntime": onnxruntime_predict,
}


def build(impl: str, sizes, batch: int, dtype) -> object:
    """A no-argument callable: one inference call of ``impl`` on a (batch, sizes[0]) array."""
    if impl not in BUILDERS:
        raise ValueError(f"impl: expected one of {sorted(BUILDERS)} for task 'predict', got {impl!r}")
    model, x, _ = make_problem(tuple(sizes), batch, np.dtype(dtype), seed=0)
    return BUILDERS[impl](model, x)


def available_impls() -> list:
    """fastbp, numpy and the floor, then torch and onnxruntime where installed (and fastbp.onnx can export)."""
    import importlib.util

    impls = ["fastbp", "numpy", "floor"]
    if importlib.util.find_spec("torch") is not None:
        impls.append("torch")
    if importlib.util.find_spec("onnxruntime") is not None and importlib.util.find_spec("onnx") is not None:
        impls.append("onnxruntime")
    return impls


def latency_table(mlps, batches, *, dtype="float32", rounds=8, threads=None, log=None, impls=None) -> list:
    """One row per (MLP, batch): median microseconds per call of each runtime, IQRs, and fastbp's ratios.

    ``mlps``: lists of layer sizes. Each runtime runs in its own worker process
    (:func:`fastbp.bench.runner.measure`), turns interleaved and rotating.
    ``ratios[impl]`` is fastbp's median over ``impl``'s (below 1: fastbp is faster);
    None when either side stayed unstable.
    """
    from .runner import measure

    impls = impls or available_impls()
    configs = [{"task": "predict", "sizes": list(s), "batch": b, "dtype": dtype} for s in mlps for b in batches]

    def progress(cfg, rerun=None):
        if log and not rerun:
            log(f"latency {'-'.join(map(str, cfg['sizes']))} batch {cfg['batch']}")

    # A block of calls per turn: about 2000 rows' worth, so each turn lasts a few ms at least.
    results = measure(configs, impls, rounds=rounds, threads=threads, progress=progress, handover=0.1)
    rows: dict = {}
    for r in results:
        key = ("-".join(map(str, r["sizes"])), r["batch"])
        rows.setdefault(key, {})[r["impl"]] = r
    table = []
    for (mlp, batch), by_impl in rows.items():
        fb = by_impl["fastbp"]
        table.append(
            {
                "mlp": mlp,
                "batch": batch,
                "dtype": dtype,
                "us": {k: r["median"] * 1e6 for k, r in by_impl.items()},
                "iqr_us": {k: r["iqr"] * 1e6 for k, r in by_impl.items()},
                "unstable": [k for k, r in by_impl.items() if r["unstable"]],
                "ratios": {
                    k: None if (r["unstable"] or fb["unstable"]) else fb["median"] / r["median"]
                    for k, r in by_impl.items()
                    if k != "fastbp"
                },
            }
        )
    return table


def format_latency(table, out=print) -> None:
    """Print the latency table: microseconds per call (IQR), and fastbp's ratio to each runtime."""
    impls = list(table[0]["us"]) if table else []
    out("inference latency, us per call (median, IQR); x = fastbp / runtime (below 1: fastbp faster):")
    for row in table:
        cells = "  ".join(f"{k} {row['us'][k]:8.1f} ({row['iqr_us'][k]:.1f})" for k in impls)
        ratios = "  ".join(
            f"x{k} {'?' if row['ratios'][k] is None else format(row['ratios'][k], '.2f')}" for k in impls[1:]
        )
        out(f"  {row['mlp']:>16} {row['dtype']} batch {row['batch']:>3}: {cells}  |  {ratios}")
