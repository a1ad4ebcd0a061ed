#!/usr/bin/env python
"""Deprecated name of `benchmarks/zoo.py` (renamed: this name shadowed the project's `models` package).

`python benchmarks/models.py ...` and `python -m benchmarks.models ...` still run zoo's `main` with the
same flags; use `python benchmarks/zoo.py` from now on.
"""
import runpy
from pathlib import Path

if __name__ == "__main__":
    runpy.run_path(str(Path(__file__).with_name("zoo.py")), run_name="__main__")
