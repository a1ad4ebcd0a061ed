"""`python -m engine.batch`: facial emotions for a whole archive of videos and photos.

Examples:
  python -m engine.batch sessions/ --out results/                  # a folder, recursively; one process per core
  python -m engine.batch 'day*/**/*.mp4' photo.jpg --out results/  # a glob (quoted) and a photo
  python -m engine.batch list.txt --out results/ --workers 4       # a text file naming one path per line
  python -m engine.batch /shared/videos --out /shared/results --ray auto   # a Ray cluster (ray start ...)

Per input, under --out (mirroring the input's relative path): NAME.jsonl (engine.run's JSONL),
NAME.csv (one row per frame per face), NAME.png (emotion timeline per tracked face); per batch:
summary.csv, summary.json and index.html. Outputs appear complete or not at all (temp name, then
rename); temporary files a killed worker left are deleted as a batch starts and ends; a re-run
skips inputs whose outputs are complete for the same options (--force redoes). A file is named the
same whether a folder, a glob or a list gave it (so switching forms resumes); a URL's folder is
urls/HOST_PORT/PATH-KEY (KEY: a hash of the whole URL), and no user, password or token from a URL
reaches a file name, the summary, index.html or a progress line.
An input fails when no frame of it decodes, or only part of it does: a video that ends before the
frames its header announces, a JPEG photo cut short ("truncated or damaged: partly decoded").
Symbolic links that lead nowhere (dangling, loops) and links to folders (not followed) are listed
as "skipped" in the summary and on stderr; they do not change the exit status.
Exit status: 0 all inputs ok, 1 some failed (or were not run), 2 a usage error (an unreachable
--ray address fails within 30 s: 3 s when nothing listens there), 130 interrupted.
"""
from __future__ import annotations

import os

# OpenCV/FFmpeg warnings would drown the one-line reasons a broken video gets (as in engine.run).
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "8")

import argparse
import importlib.util
import re
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from engine.batch.driver import run_inputs
from engine.batch.inputs import find_inputs
from engine.batch.job import empty_row, is_done, options_key, sweep_temp
from engine.batch.report import Progress, totals, write_summary
from engine.cli.options import add_engine_options, engine_flags, flag_error, options_from_args
from engine.core.cliargs import Parser, positive_int
from engine.core.cpu import isa_class
from engine.api import EngineOptions
from engine.core.errors import OptionError, UserError, cli_main
from engine.core.types import RunningMode
from engine.core.urls import redact

RAY_ADDRESS = re.compile(r"^(auto|local|ray://.+|[\w.\-]*:\d+)$")


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m engine.batch",
               description="Facial emotions for many videos and photos: per input a JSONL, a CSV and an emotion timeline "
                           "PNG; per batch summary.csv/.json and index.html. In parallel on this machine or a Ray cluster.",
               epilog=__doc__.split("Examples:", 1)[1].split("\n\n", 1)[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="a video, a photo, a folder (recursive), a glob in quotes, or a .txt/.lst file listing paths or URLs")
    b = p.add_argument_group("batch")
    b.add_argument("--out", required=True, metavar="DIR", help="output folder (created); mirrors the inputs' relative paths")
    b.add_argument("--workers", type=positive_int, metavar="N",
                   help=f"worker processes, each loading the models once (with --ray: actors) [the number of cores: {default_workers()}"
                        "; with --ray: the cluster's CPUs]")
    b.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                   help="run on Ray (pip install 'emotion-engine[ray]'): no ADDRESS starts Ray on this machine; auto, HOST:6379 "
                        "or ray://HOST:10001 joins a cluster (inputs and --out on a path every node sees); an ADDRESS where "
                        "nothing listens fails in 3 s, one that does not answer as Ray in 30 s")
    b.add_argument("--force", action="store_true", help="redo inputs whose outputs are already complete")
    b.add_argument("--max-failures", type=positive_int, metavar="N", help="start no new input after N inputs failed")
    b.add_argument("--quiet", action="store_true", help="no progress bar (for logs): failures and the final line only")
    add_engine_options(p)
    return p


def _check_out(out: str) -> Path:
    path = Path(out).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"cannot write to --out {out}: {exc.strerror or exc}") from None
    return path.resolve()


def _skipped_row(path: str, why: str) -> dict:
    """The summary row of a path the batch could not even try (a broken symbolic link): listed, not dropped."""
    return {**empty_row({"label": path, "src": path, "kind": "link"}, "skipped", why), "name": ""}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line, checked before anything is searched or written."""
    args = build_parser().parse_args(argv)
    if args.ray and not RAY_ADDRESS.match(args.ray):  # `--ray clip.mp4`: that was an input, not an address
        args.inputs.insert(0, args.ray)
        args.ray = ""
    if not args.inputs:
        raise UserError("give at least one INPUT (a video, a photo, a folder, a glob or a list file)")
    if importlib.util.find_spec("matplotlib") is None:
        raise UserError("engine.batch draws its timelines with matplotlib: pip install matplotlib")
    return args


def reused_rows(jobs: list[dict], out: Path, key: str, force: bool) -> list[dict | None]:
    """Per job, the summary row of an earlier run whose outputs are complete for the same options; None: to run."""
    rows: list[dict | None] = [None] * len(jobs)
    for i, job in enumerate(jobs):
        row = None if force else is_done(job, out, key)
        if row is not None:
            rows[i] = {**row, "name": job["name"], "reused": True}
    return rows


def engine_options_of(args) -> EngineOptions:
    """The EngineOptions every worker receives (pickled as they are; each input applies its own running mode),
    checked here once, before any input is read: a bad value is one line naming the flag."""
    try:
        return options_from_args(args, RunningMode.VIDEO)
    except OptionError as exc:
        raise flag_error(exc) from None


def main(argv: Sequence[str] | None = None) -> int:
    t0 = time.perf_counter()
    args = parse_args(argv)
    out = _check_out(args.out)
    skipped: list[tuple[str, str]] = []
    inputs = find_inputs(args.inputs, skipped=skipped)
    sweep_temp(out)  # what a killed worker of an earlier run left
    engine = engine_options_of(args)
    key = options_key(engine)
    jobs = [i.to_job() for i in inputs]
    rows = reused_rows(jobs, out, key, args.force)
    pending = [i for i, r in enumerate(rows) if r is None]
    workers = args.workers or default_workers()
    mode = "ray" if args.ray is not None else "local"
    progress = Progress(len(pending), quiet=args.quiet)
    progress.header = (f"engine.batch: {len(jobs)} input(s), {len(jobs) - len(pending)} already done, {len(pending)} to run"
                       + (" on Ray" if mode == "ray" else f" on {min(workers, len(pending))} worker process(es)" if pending else "")
                       + f" -> {out}")
    if not pending:
        progress.announce()
    for path, why in skipped:
        progress.line(f"skipped: {path}: {why}")

    def on_row(k: int, row: dict) -> None:
        rows[pending[k]] = {**row, "name": jobs[pending[k]]["name"]}

    cluster, interrupted = run_inputs([jobs[i] for i in pending], engine, out, on_row, progress, ray=args.ray,
                                      workers=workers, ray_workers=args.workers, max_failures=args.max_failures)
    reason = "interrupted (Ctrl-C or SIGTERM)" if interrupted else f"not started: --max-failures {args.max_failures} reached"
    rows = [r if r is not None else {**empty_row(jobs[i], "not-run", reason), "name": jobs[i]["name"]} for i, r in enumerate(rows)]
    rows += [_skipped_row(path, why) for path, why in skipped]
    wall = time.perf_counter() - t0
    run = {"command": "python -m engine.batch", "argv": [redact(a) for a in (argv if argv is not None else sys.argv[1:])],
           "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"), "mode": mode,
           "workers": cluster.get("actors", min(workers, max(1, len(pending)))), "cpu_class": isa_class(), **cluster,
           "options": engine_flags(args), "options_key": key, "interrupted": interrupted}
    run["totals"] = t = totals(rows, wall)
    write_summary(out, rows, run)
    progress.line(f"{'interrupted' if interrupted else 'done'}: {t['ok']} ok ({t['reused']} from an earlier run), {t['failed']} failed, "
                  f"{t['not_run']} not run{f', {len(skipped)} skipped' if skipped else ''}; {t['video_s_per_s']} video-s/s, {wall:.1f} s -> {out / 'index.html'}")
    if interrupted:
        return 130
    return 1 if t["failed"] or t["not_run"] else 0


def exit_with(code: int) -> None:
    """Exit with `code`; at once (no exit hooks) when engine.batch.cluster says so: a ray.init given up on still blocks
    in Ray's C++ client and Ray's exit hook would wait on it for minutes; after Ctrl-C, Ray is already shut down."""
    ray_driver = sys.modules.get("engine.batch.cluster")
    if ray_driver is not None and ray_driver.exit_now():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def entry() -> None:
    """`python -m engine.batch`: main, with a usage error as one line (exit 2), then `exit_with` its status."""
    exit_with(cli_main(main))


if __name__ == "__main__":
    entry()
