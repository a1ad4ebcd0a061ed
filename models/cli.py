"""Deprecated alias of `engine.cliargs`, where this module moved (the runtime is the bottom layer and
imports nothing from models/). Import from `engine.cliargs`; these names are the very same objects."""
from engine.cliargs import Parser, csv_list, fraction, nonneg_float, nonneg_int, positive_int, positive_int_list  # noqa: F401

__all__ = ["Parser", "csv_list", "fraction", "nonneg_float", "nonneg_int", "positive_int", "positive_int_list"]
