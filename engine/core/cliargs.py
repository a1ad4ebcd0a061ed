"""Argument types and the parser every command line of the project shares.

A bad flag value must end like every other bad input: one sentence, exit code 2, no usage
dump. `Parser.error` raises UserError so `cli_main` reports it; the types give argparse
messages that name the problem ("must be at least 1").
"""
from __future__ import annotations

import argparse

from engine.core.errors import UserError


class Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise UserError(f"{message} (see {self.prog} --help)")


def _number(text: str, kind: type, what: str):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None


def positive_int(text: str) -> int:
    v = _number(text, int, "a whole number")
    if v < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return v


def nonneg_int(text: str) -> int:
    v = _number(text, int, "a whole number")
    if v < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return v


def nonneg_float(text: str) -> float:
    v = _number(text, float, "a number")
    if v < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return v


def fraction(text: str) -> float:
    v = _number(text, float, "a number")
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return v


def open_range(lo: float, hi: float):
    """An argparse type for a number strictly between `lo` and `hi`: built from the same bounds the library's
    options check (e.g. engine.faces.detect.MIN_SCORE), so a flag value is refused before anything opens."""

    def parse(text: str) -> float:
        v = _number(text, float, "a number")
        if not lo < v < hi:
            raise argparse.ArgumentTypeError(f"must be between {lo:g} and {hi:g} (exclusive)")
        return v

    return parse


def csv_list(text: str) -> list[str]:
    """'a, b,,c' -> ['a', 'b', 'c']: the comma lists the benchmarks take."""
    return [t.strip() for t in text.split(",") if t.strip()]


def positive_int_list(text: str, flag: str) -> list[int]:
    """'1,4,16' -> [1, 4, 16] for a comma-list flag; anything else is one sentence naming `flag`."""
    try:
        values = [int(t) for t in csv_list(text)]
    except ValueError:
        raise UserError(f"{flag} {text!r} must be whole numbers separated by commas") from None
    if not values or min(values) < 1:
        raise UserError(f"{flag} must be at least 1")
    return values
