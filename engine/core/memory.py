"""This process's memory, for the numbers users and benchmarks read (RSS per worker, peak RSS per run).

Standard library only; in engine/ so the runtime (engine.batch's summary rows) and the benchmarks share one
reading instead of two.
"""
from __future__ import annotations

import os
import sys


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MB (getrusage; psutil's peak working set on Windows)."""
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)  # bytes on macOS, KB on Linux
    except ImportError:  # Windows
        try:
            import psutil

            return round(psutil.Process().memory_info().peak_wset / 2**20, 1)  # type: ignore[attr-defined]
        except Exception:
            return float("nan")


def rss_now_mb() -> float | None:
    """Resident memory of this process now (MB; Linux), to see that it stays flat over a long run."""
    try:
        with open("/proc/self/statm") as fh:
            return round(int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)
    except (OSError, ValueError, IndexError):
        return None
