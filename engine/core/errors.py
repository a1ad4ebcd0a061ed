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


class OptionError(UserError):
    """A library option the user can fix, named as the library knows it: `owner` is the options dataclass
    (`ClassifierOptions`), `field` its field (`backend`). The library never names a command-line flag; each
    command maps `owner.field` to its own flag (engine.cli.options.FLAGS) when it reports the error."""

    def __init__(self, owner: str, field: str, detail: str):
        super().__init__(f"{owner}.{field}: {detail}")
        self.owner, self.field, self.detail = owner, field, detail

    @property
    def key(self) -> str:
        return f"{self.owner}.{self.field}"

    def __reduce__(self):  # picklable with its three arguments (worker processes)
        return type(self), (self.owner, self.field, self.detail)
