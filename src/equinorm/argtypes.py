"""argparse types for the command lines' numbers: a value out of range is argparse's own one line
(``argument --tflops: 0 must be > 0``), not a traceback further on."""

from __future__ import annotations

import argparse
import math


def number(kind: type = float, low: float = 0, high: float = math.inf):
    """An argparse type: a ``kind`` (float or int) in ``(low, high]``, or ``> low``."""

    def parse(text: str):
        value = kind(text)  # a ValueError is argparse's "invalid float value: 'abc'"
        if not low < value <= high:
            bounds = f"> {low:g}" if math.isinf(high) else f"in ({low:g}, {high:g}]"
            if kind is int and math.isinf(high):  # -1 must be >= 0, 0 must be >= 1
                bounds = f">= {math.floor(low) + 1}"
            raise argparse.ArgumentTypeError(f"{text} must be {bounds}")
        return value

    parse.__name__ = kind.__name__  # the name argparse's message gives the type
    return parse


def seeds(text: str) -> list[int]:
    """An argparse type: seeds, non-negative integers joined by commas (``0,1``), sorted."""
    try:
        values = sorted({int(s) for s in text.split(",")})
    except ValueError:
        values = []
    if not values or values[0] < 0:
        raise argparse.ArgumentTypeError(f"{text}: seeds are non-negative integers (0,1)")
    return values


__all__ = ["number", "seeds"]
