"""Argument types for the command line: each refuses a bad value before any work, naming what it expected."""

from __future__ import annotations

import argparse
import math
import os


def _number(text: str, parse, ok, expected: str):
    """``parse(text)`` if it parses and ``ok`` holds, else an argparse error "expected <expected>, got ..."."""
    try:
        value = parse(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text}")
    return value


def positive_int(text: str) -> int:
    return _number(text, int, lambda n: n >= 1, "a positive integer")


def non_negative_int(text: str) -> int:
    return _number(text, int, lambda n: n >= 0, "a non-negative integer")


def positive_float(text: str) -> float:
    return _number(text, float, lambda x: math.isfinite(x) and x > 0, "a positive finite number")


def open_fraction(text: str) -> float:
    return _number(text, float, lambda x: 0 < x < 1, "a number strictly between 0 and 1")


def unit_fraction(text: str) -> float:
    """A probability: 0 <= p < 1."""
    return _number(text, float, lambda x: 0 <= x < 1, "a number in [0, 1)")


def hidden_sizes(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}") from None
    if any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"expected positive sizes, got {text!r}")
    return sizes


def threads(text: str) -> int:
    """1 to numba's most threads (``NUMBA_NUM_THREADS``, the core count by default)."""
    n = positive_int(text)
    import numba  # numba's config is what bounds the thread count

    most = int(numba.config.NUMBA_NUM_THREADS)
    if n > most:
        raise argparse.ArgumentTypeError(f"expected 1 to {most} (NUMBA_NUM_THREADS), got {n}")
    return n


def input_file(*suffixes: str):
    """An existing file whose name ends in one of ``suffixes`` (any file when none are given)."""

    def check(text: str) -> str:
        if suffixes and not text.lower().endswith(suffixes):
            raise argparse.ArgumentTypeError(f"expected a {' or '.join(suffixes)} file, got {text!r}")
        if not os.path.exists(text):
            raise argparse.ArgumentTypeError(f"no such file: {text}")
        if not os.path.isfile(text):
            raise argparse.ArgumentTypeError(f"not a file: {text}")
        return text

    return check


def output_file(*suffixes: str):
    """A path that can be written: its folder exists and is writable, and it is not a folder."""

    def check(text: str) -> str:
        if suffixes and not text.lower().endswith(suffixes):
            raise argparse.ArgumentTypeError(
                f"expected a file name ending in {', '.join(suffixes)} (the format), got {text!r}"
            )
        folder = os.path.dirname(os.path.abspath(text))
        if os.path.isdir(text):
            raise argparse.ArgumentTypeError(f"{text} is a folder; give a file name")
        if not os.path.isdir(folder):
            raise argparse.ArgumentTypeError(f"folder {folder} does not exist")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise argparse.ArgumentTypeError(f"folder {folder} is not writable")
        return text

    return check
