"""Deprecated alias of `engine.errors`, where this module moved (the runtime is the bottom layer and
imports nothing from models/). Import from `engine.errors`; these names are the very same objects."""
from engine.errors import UserError, cli_main  # noqa: F401

__all__ = ["UserError", "cli_main"]
