"""Argument types shared by the commands."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def scales(text: str) -> tuple[float, ...]:
    """'1,1.12,1.25' -> (1.0, 1.12, 1.25): sizes to read an input at (the Recognizer checks their range)."""
    try:
        return tuple(positive_float(v) for v in text.split(","))
    except (ValueError, argparse.ArgumentTypeError):
        raise argparse.ArgumentTypeError(f"{text!r}: give positive sizes separated by commas, e.g. 1,1.12,1.25") from None
