#!/usr/bin/env python
"""Deprecated name of `benchmarks/stage_profile.py` (renamed: this name shadowed the standard `profile` module).

`python benchmarks/profile.py ...` and `python -m benchmarks.profile ...` still run stage_profile's `main`
with the same flags; use `python benchmarks/stage_profile.py` from now on.
"""
import runpy
from pathlib import Path

if __name__ == "__main__":
    runpy.run_path(str(Path(__file__).with_name("stage_profile.py")), run_name="__main__")
