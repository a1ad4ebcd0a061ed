"""Benchmarks: `fps.py` (the real threaded pipeline, end to end), `zoo.py` (per exported model: size,
accuracy, MACs, ms/face), `stage_profile.py` (one frame's CPU time, part by part) and the others. Each
runs as a script (`python benchmarks/fps.py`, with the project installed: `pip install -e .`) or as a module
(`python -m benchmarks.fps`). No script is named like a package or a standard module (`models`, `profile`), so
running one from benchmarks/ shadows nothing and no script rewrites sys.path.

This package holds light helpers shared by the scripts (machine and package facts, percentiles,
tables, result files); nothing heavy is imported here. `fps.py`'s parts live beside it: `fps_plan.py`
(the run matrix, the worker processes), `fps_stats.py` (one run's numbers and checks), `bench_sources.py`
(paced and pre-decoded sources), `fer_peer.py` (the fer comparison) and `fps_report.py` (tables, plot).
`crop_agreement.py`'s: `crop_easy_scenes.py` and `crop_scenes.py` (the frames), `crop_scoring.py` (the
measurement) and `crop_report.py` (tables); `serve_cost.py`'s: `serve_runs.py` (one engine process per run),
`serve_meters.py` (/proc, JSONL lines, a viewer) and `serve_report.py` (medians, Markdown).
"""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Iterable, Sequence


REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
SHARED = REPO.parent / "shared"

#: packages whose versions every result file records
VERSION_PACKAGES = ("numpy", "opencv", "mediapipe", "ai-edge-litert", "tflite-runtime", "onnxruntime")


def cpu_flags() -> list[str]:
    """The SIMD features that decide which precision is fastest, from engine.core.cpu's one parser."""
    from engine.core.cpu import cpu_info

    wanted = {"avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_bf16", "amx_int8",
              "asimd", "asimddp", "atomics", "fphp", "asimdhp", "i8mm", "bf16"}
    return sorted(wanted & set(cpu_info()["features"]))


def machine_info() -> dict:
    """The machine a result was measured on. `isa_class` (engine.core.cpu.ISA_CLASSES) is what a
    reader compares: milliseconds only carry between machines of the same class."""
    from engine.core.cpu import cpu_record

    rec = cpu_record()
    info = {
        "cpu": rec["model"],
        "isa_class": rec["isa_class"],
        **({"emulated": rec["emulated"]} if rec["emulated"] else {}),
        "cpu_flags": cpu_flags(),
        "cores": os.cpu_count(),
        "arch": platform.machine(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }
    load = load_avg_1m()
    if load is not None:
        info["load_avg_1m_at_start"] = load  # a busy machine skews timings
    return info


def package_versions(extra: Iterable[str] = ()) -> dict[str, str]:
    """Installed versions of the runtime packages (and `extra`), without importing them."""
    from importlib import metadata

    out: dict[str, str] = {}
    for name in (*VERSION_PACKAGES, *extra):
        if name == "opencv":
            for dist in ("opencv-contrib-python", "opencv-python", "opencv-contrib-python-headless", "opencv-python-headless"):
                try:
                    out[dist] = metadata.version(dist)
                    break
                except metadata.PackageNotFoundError:
                    continue
            continue
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def rel(text: str) -> str:
    """Paths inside the repository (or beside it, ../shared) written relative to its root, so result
    files read the same on every checkout."""
    return str(text).replace(str(REPO) + os.sep, "").replace(str(REPO.parent) + os.sep, ".." + os.sep)


def now_utc() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def percentiles(values: Sequence[float], qs: Sequence[int] = (50, 90, 99)) -> dict[str, float]:
    """{"p50": ..., "p90": ..., "p99": ...} (linear interpolation; ordered by construction)."""
    import numpy as np

    if len(values) == 0:
        return {f"p{q}": float("nan") for q in qs}
    arr = np.asarray(values, dtype=np.float64)
    return {f"p{q}": round(float(np.percentile(arr, q)), 4) for q in qs}


def load_avg_1m() -> float | None:
    """The 1-minute load average (None where the OS has none): other work on the machine skews every
    timing, so results record it beside each run."""
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


def cpu_seconds() -> float:
    """User + system CPU time of this process (all threads).

    `time.process_time` reads the per-process CPU clock (ns); `os.times` counts 10 ms ticks, too
    coarse for a window of a few frames (it read 0 CPU for a short run on a busy machine)."""
    return time.process_time()


def fmt(v, digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if v != v:  # nan
            return "-"
        return f"{v:.{digits}f}"
    return str(v)


def text_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A right-aligned plain-text table (first column left-aligned), Ultralytics-style."""
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h)) for i, h in enumerate(headers)]

    def line(cells):
        return "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([line(headers), "  ".join("-" * w for w in widths), *(line(r) for r in rows)])


def md_table(headers: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> str:
    """A Markdown table: the first `left` columns left-aligned (names), the rest right (numbers)."""
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" if i < left else "---:" for i in range(len(headers))) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write a result file, creating its folder; a clear error when that is impossible."""
    from engine.core.errors import UserError

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def write_json(path: str | os.PathLike, data: dict) -> Path:
    return write_text(path, json.dumps(data, indent=2, default=_json_default) + "\n")


def _json_default(o):
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
    except ImportError:
        pass
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")
