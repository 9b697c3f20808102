"""ONNX export: :func:`export` writes a fastbp model (or a fitted ``fastbp.sklearn`` estimator) as an ONNX file.

Needs the ``onnx`` extra (``pip install "fastbp[onnx]"``); onnx is imported when
:func:`export` runs, never by ``import fastbp`` or ``import fastbp.onnx``. What each
layer becomes, the opsets and the metadata: docs/onnx.md.
"""

from __future__ import annotations

import json
import numbers
import os
import sys

import numpy as np

from .. import _validate as v
from ..io import write_atomically
from ..model import Sequential
from ..version import __version__

MIN_OPSET = 13
MAX_OPSET = 28
DEFAULT_OPSET = 17  # LayerNormalization's first; onnxruntime 1.17 (the oldest the test extra allows) runs it

__all__ = ["export", "MIN_OPSET", "MAX_OPSET", "DEFAULT_OPSET"]


def require_onnx():
    """The ``onnx`` module, or an ImportError that says how to install it."""
    try:
        import onnx
    except ImportError as e:
        raise ImportError(f'ONNX export needs the onnx package ({e}): pip install "fastbp[onnx]"') from e
    return onnx


def export(
    model,
    path,
    *,
    opset: int = DEFAULT_OPSET,
    input_name: str = "input",
    output_name: str = "output",
    dtype=None,
    metadata: dict | None = None,
):
    """Write ``model`` to ``path`` as an ONNX model computing its eval-mode predictions.

    Parameters
    ----------
    model : Sequential, or a fitted ``fastbp.sklearn.MLPClassifier`` / ``MLPRegressor``
        A Sequential exports what :func:`fastbp.predict` returns (BatchNorm1d with its
        running statistics, Dropout as the identity). An estimator exports its network and
        output activation: ``predict_proba`` for a classifier (binary: two columns
        ``[1 - p, p]``), ``predict`` for a regressor (one output: shape ``(batch,)``).
    path : str or PathLike
        Written atomically (:func:`fastbp.io.write_atomically`), exactly as named; its folder must exist.
    opset : int from :data:`MIN_OPSET` (13) to :data:`MAX_OPSET` (28), default 17
        The ONNX opset. Below 17 LayerNorm is composed of elementary ops, below 20 GELU too.
    input_name, output_name : str
        The graph's input ``(batch, in_features)`` and output ``(batch, out_features)``
        names; ``batch`` is a dynamic dimension named "batch".
    dtype : None, float32 or float64
        The graph's float type. Default: the model's (float32 when no layer has parameters).
        A model with parameters exports in its own dtype only.
    metadata : dict or None
        JSON-serialisable entries stored in the file's ``metadata_props`` (each value as a
        JSON string), over the defaults: ``model.metadata`` for a Sequential; for an
        estimator ``estimator``, ``task``, ``output``, ``out_activation``, ``n_features``,
        ``feature_names`` (when fitted on named columns) and the class labels ``classes``
        (the columns of ``predict_proba``, in order).

    Returns
    -------
    onnx.ModelProto
        The model written, checked by ``onnx.checker.check_model``.

    Raises
    ------
    ImportError
        onnx is not installed.
    TypeError
        ``model`` is neither a Sequential nor a fastbp estimator, or has a layer that cannot
        be exported (the error names its index and class); an argument of the wrong type.
    ValueError
        ``opset`` out of range, an unfitted estimator, an invalid name or dtype.
    FileNotFoundError, IsADirectoryError
        ``path``'s folder does not exist, or ``path`` is a folder.

    Examples
    --------
    >>> import numpy as np, onnxruntime, fastbp, fastbp.onnx, tempfile, os
    >>> model = fastbp.Sequential(fastbp.Linear(4, 8, activation="relu", seed=0), fastbp.Linear(8, 3, seed=1))
    >>> path = os.path.join(tempfile.mkdtemp(), "model.onnx")
    >>> _ = fastbp.onnx.export(model, path)
    >>> session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    >>> x = np.ones((2, 4), np.float32)
    >>> np.allclose(session.run(None, {"input": x})[0], fastbp.predict(model, x), rtol=1e-5, atol=1e-6)
    True
    """
    onnx = require_onnx()
    opset = v.check(opset, "opset", v.Interval(numbers.Integral, MIN_OPSET, MAX_OPSET))
    newest = onnx.defs.onnx_opset_version()
    if opset > newest:
        raise ValueError(
            f"opset: expected at most {newest} (the newest of the installed onnx {onnx.__version__}), got {opset}"
        )
    input_name = _name(input_name, "input_name")
    output_name = _name(output_name, "output_name")
    if input_name == output_name:
        raise ValueError(f"output_name: expected a name other than input_name, got {output_name!r} for both")
    path = _output_path(path)
    if isinstance(model, Sequential):
        layers, tail, meta = model.layers, None, dict(getattr(model, "metadata", {}))
        dtype = _graph_dtype(model.dtype, dtype)
    elif _is_estimator(model):
        layers, tail, meta, own = _estimator(model)
        dtype = _graph_dtype(own, dtype)
    else:
        raise TypeError(
            "model: expected a fastbp Sequential or a fitted fastbp.sklearn MLPClassifier or MLPRegressor, "
            f"got {type(model).__name__}"
        )
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise TypeError(f"metadata: expected a dict or None, got {type(metadata).__name__}")
        meta.update(metadata)
    props = _metadata_props(meta)

    from ._graph import build

    proto = build(onnx, layers, tail, dtype=dtype, opset=opset, input_name=input_name, output_name=output_name)
    proto.producer_name, proto.producer_version = "fastbp", __version__
    onnx.helper.set_model_props(proto, props)
    onnx.checker.check_model(proto, full_check=True)
    data = proto.SerializeToString()
    write_atomically(path, lambda fh: fh.write(data))
    return proto


def _name(value, argument: str) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError(f"{argument}: expected a non-empty str, got {type(value).__name__} {value!r}")
    return value


def _output_path(path) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a str or PathLike file name, got {type(path).__name__} {path!r}")
    path = os.fspath(path)
    if not isinstance(path, str):  # a PathLike of bytes
        raise TypeError(f"path: expected a str or PathLike of str, got {type(path).__name__} {path!r}")
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise IsADirectoryError(f"path: expected a file name, got the folder {path!r}")
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"path: expected a file in an existing folder, got {path!r} (no folder {folder})")
    return path


def _graph_dtype(own, requested) -> np.dtype:
    if requested is None:
        return np.dtype(np.float32) if own is None else np.dtype(own)
    requested = v.as_dtype(requested)
    if own is not None and requested != own:
        raise ValueError(f"dtype: expected None or {own} (the model's parameters' dtype), got {requested}")
    return requested


def _metadata_props(meta: dict) -> dict[str, str]:
    props = {}
    for key, value in meta.items():
        if not isinstance(key, str):
            raise TypeError(f"metadata: expected str keys, got {type(key).__name__} {key!r}")
        try:
            props[key] = json.dumps(value)
        except (TypeError, ValueError) as e:
            raise TypeError(f"metadata[{key!r}]: expected a JSON-serialisable value: {e}") from None
    return props


# -- estimators ---------------------------------------------------------------------
def _is_estimator(model) -> bool:
    # Without importing fastbp.sklearn (and scikit-learn): an estimator exists only if it was imported.
    base = sys.modules.get("fastbp.sklearn._base")
    return base is not None and isinstance(model, base.BaseMLP)


def _estimator(est) -> tuple[list, tuple, dict, np.dtype]:
    """The network's layers, the output ``(activation, classifier, n_outputs)``, default metadata and dtype."""
    from sklearn.utils.validation import check_is_fitted

    from ..sklearn import MLPClassifier

    check_is_fitted(est)
    net = est._network().model  # the layers predict runs (dropout, batch norm in eval form)
    classifier = isinstance(est, MLPClassifier)
    meta: dict = {
        "estimator": type(est).__name__,
        "task": "classification" if classifier else "regression",
        "output": "predict_proba" if classifier else "predict",
        "out_activation": est.out_activation_,
        "n_features": int(est.n_features_in_),
    }
    names = getattr(est, "feature_names_in_", None)
    if names is not None:
        meta["feature_names"] = [str(n) for n in names]
    if classifier:
        meta["classes"] = np.asarray(est.classes_).tolist()
    return net.layers, (est.out_activation_, classifier, int(est.n_outputs_)), meta, np.dtype(est.coefs_[0].dtype)
