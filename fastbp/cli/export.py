"""``fastbp export``: a saved model as an ONNX file (:func:`fastbp.onnx.export`)."""

from __future__ import annotations

import argparse

from . import checks as c


def opset(text: str) -> int:
    """An opset that :func:`fastbp.onnx.export` takes (its range, without importing onnx)."""
    from ..onnx import MAX_OPSET, MIN_OPSET

    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not MIN_OPSET <= value <= MAX_OPSET:
        raise argparse.ArgumentTypeError(f"expected an integer from {MIN_OPSET} to {MAX_OPSET}, got {text!r}")
    return value


def add_parser(sub) -> None:
    """Add the ``export`` subcommand to ``sub`` (the ``fastbp`` parser's subparsers)."""
    from ..onnx import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET

    ex = sub.add_parser(
        "export",
        help="write a saved model as an ONNX file (needs the onnx extra)",
        description="Write a model saved by fastbp train --out or fastbp.save as an ONNX file computing its "
        "predictions (as fastbp.predict: the scaling saved in the model included; a classifier's outputs "
        "are logits, its class labels in the metadata entry 'classes'). Needs pip install \"fastbp[onnx]\".",
    )
    ex.add_argument(
        "--model", required=True, type=c.input_file(), help="a file from fastbp train --out or fastbp.save (required)"
    )
    ex.add_argument(
        "--onnx", required=True, type=c.output_file(".onnx"), help="the ONNX file to write, exactly here (required)"
    )
    ex.add_argument(
        "--opset",
        type=opset,
        default=DEFAULT_OPSET,
        help=f"ONNX opset, {MIN_OPSET} to {MAX_OPSET} (default: %(default)s)",
    )
    ex.set_defaults(func=cmd_export)


def cmd_export(args) -> int:
    """Load ``args.model``, write it to ``args.onnx`` at ``args.opset``; print what was written."""
    import fastbp

    from ..onnx import export, require_onnx

    require_onnx()  # before reading the model: the missing package is the error to report
    model = fastbp.load(args.model)
    proto = export(model, args.onnx, opset=args.opset)
    inp, out = proto.graph.input[0], proto.graph.output[0]
    print(f"wrote {args.onnx}: ONNX opset {args.opset}, {_describe(inp)} -> {_describe(out)}")
    return 0


def _describe(value_info) -> str:
    """``input (batch, 64)``: a graph input's or output's name and shape."""
    dims = [d.dim_param or str(d.dim_value) for d in value_info.type.tensor_type.shape.dim]
    return f"{value_info.name} ({', '.join(dims)})"
