"""Inference latency table: fastbp's predict against numpy, PyTorch and ONNX Runtime, each in its own process.

    python benchmarks/inference_latency.py [--threads N] [--rounds R] [--dtype float64]

MLPs 784-512-256-10 and 64-100-10 at batch 1, 8 and 64; medians of all calls,
turns interleaved and rotating (fastbp.bench.latency.latency_table), and also
the BLAS matmuls alone (the floor) for the same shapes.
"""

import argparse

from fastbp.bench.latency import format_latency, latency_table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=None, help="threads for every runtime (default: all cores)")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--dtype", default="float32")
    args = ap.parse_args()
    table = latency_table(
        [[784, 512, 256, 10], [64, 100, 10]], [1, 8, 64], dtype=args.dtype, rounds=args.rounds, threads=args.threads
    )
    format_latency(table)


if __name__ == "__main__":
    main()
