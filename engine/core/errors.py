"""One error type for everything a user can get wrong, and one way to report it.

Every command-line entry point wraps its work in `cli_main`, so a bad path, an unknown
class or a broken model file ends in one readable sentence and a non-zero exit instead
of a traceback. Internal bugs still raise normally: they are ours to see.
"""
from __future__ import annotations

import sys
from typing import Callable, Sequence


class UserError(Exception):
    """Something the user can fix: a wrong path, a bad flag value, a missing package."""


def cli_main(run: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run a CLI body and turn UserError / Ctrl-C into a one-line message and an exit code."""
    try:
        code = run(argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(code or 0)
