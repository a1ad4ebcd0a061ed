"""Does the shown emotion flicker? `python benchmarks/smoothing.py`

The tracker's defaults (`TrackerOptions`: EMA weight 0.4, hysteresis 0.08, 2 frames to confirm) were set when the
models answered with FER2013's confidence levels (mean top probability ~0.58); the FER+ models are calibrated and
surer (~0.80). Whether the defaults still hold is measured here, on real clips: each model runs once through the
engine's own detector and classifier (`EmotionRecognizer.detect` / `.classify`, a clip's frames at its timestamps),
and the recorded boxes and per-frame probabilities are replayed through the real `FaceTracker` at every setting
asked for. Per model and setting: how often the shown (stable) label changes, against how often the raw per-frame
label does (what a user would see without smoothing), and how often the shown label is this frame's raw label
(a smoother that never changes would score 0 changes and a low share here). Clips: `../shared/media/*.gif`
(1-4 real faces each) unless `--clip` says otherwise.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from benchmarks import RESULTS, SHARED, machine_info, md_table, now_utc, package_versions, rel, write_json, write_text
from benchmarks.ferplus import parse_model
from engine.classify.classifier import ZOO, ClassifierOptions
from engine.core.cliargs import Parser
from engine.core.errors import UserError, cli_main
from engine.faces.track import FaceTracker, TrackerOptions
from engine.io.sources import SourceOptions, open_source

Recording = list[tuple[list, np.ndarray]]  # one clip: (detections, probabilities) per frame


def record(model: Path, clip: str) -> tuple[list[str], Recording]:
    """(labels, per-frame detections and raw probabilities) of one clip through the engine's detector and classifier."""
    from engine import EmotionRecognizer, EngineOptions

    src = open_source(SourceOptions(clip))
    try:
        rec = EmotionRecognizer.create(EngineOptions(classifier=ClassifierOptions(model=model)))
        try:
            out = []
            fps = src.fps or 15.0
            while (frame := src.read()) is not None:  # one pass over the file: each frame at its timestamp
                dets = rec.detect(frame, int(len(out) * 1000 / fps))
                out.append((dets, rec.classify(frame, dets)))
            labels = list(rec.labels)
        finally:
            rec.close()
    finally:
        src.close()
    if not out:
        raise UserError(f"--clip {clip}: no frames")
    return labels, out


def replay(labels: list[str], clips: list[Recording], opts: TrackerOptions) -> dict:
    """Every clip's recording through a fresh FaceTracker with `opts`: label changes per 100 face-frames, shown and
    raw, the share of face-frames whose shown label is that frame's raw label, and the mean raw top probability."""
    frames = shown_changes = raw_changes = same = 0
    top = []
    for clip in clips:
        tracker = FaceTracker(labels, opts)
        last_shown: dict[int, str] = {}
        last_raw: dict[int, str] = {}
        for dets, probs in clip:
            for face in tracker.update(dets, probs):
                raw = max(face.raw, key=face.raw.get)
                top.append(face.raw[raw])
                frames += 1
                same += face.emotion == raw
                if face.id in last_shown:
                    shown_changes += face.emotion != last_shown[face.id]
                    raw_changes += raw != last_raw[face.id]
                last_shown[face.id], last_raw[face.id] = face.emotion, raw
    per100 = 100.0 / max(frames, 1)
    return {"face_frames": frames, "shown_changes_per_100": shown_changes * per100, "raw_changes_per_100": raw_changes * per100,
            "shown_is_raw": same / max(frames, 1), "mean_top_probability": float(np.mean(top)) if top else 0.0}


def floats(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma list of numbers") from None
    if not values:
        raise argparse.ArgumentTypeError("needs at least one number")
    return values


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="python benchmarks/smoothing.py", description=__doc__.split("\n\n")[0],
               formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", action="append", metavar="NAME=DIR",
                   help="a model folder (repeatable, compared in order; default: every shipped model in engine/zoo)")
    p.add_argument("--clip", action="append", help="a video or GIF (repeatable; default: ../shared/media/*.gif)")
    p.add_argument("--ema", type=floats, default=[TrackerOptions.ema], help="EMA weights of the newest frame to replay")
    p.add_argument("--hysteresis", type=floats, default=[0.0, 0.04, 0.08, 0.12, 0.16], help="hysteresis values to replay")
    p.add_argument("--out", default=str(RESULTS / "smoothing"), help="result files: OUT.json and OUT.md")
    return p


def markdown(rows: list[dict], meta: dict) -> str:
    names = list(meta["models"])
    head = ["EMA", "hysteresis"] + [f"{n}: shown / raw changes per 100, shown = raw" for n in names]
    body = []
    for ema in meta["ema"]:
        for h in meta["hysteresis"]:
            cells = []
            for n in names:
                r = next(x for x in rows if x["model"] == n and x["ema"] == ema and x["hysteresis"] == h)
                cells.append(f"{r['shown_changes_per_100']:.2f} / {r['raw_changes_per_100']:.2f}, {r['shown_is_raw'] * 100:.1f}%")
            default = ema == TrackerOptions.ema and h == TrackerOptions.hysteresis
            body.append([f"{ema:g}", f"**{h:g}** (default)" if default else f"{h:g}", *cells])
    first = {n: next(x for x in rows if x["model"] == n) for n in names}
    return "\n".join([
        "# Does the shown emotion flicker? (tracker replay)", "",
        f"`{meta['command']}` on {meta['machine']['cpu']} ({meta['machine']['isa_class']}), {meta['date']}; clips: "
        + ", ".join(f"`{Path(c).name}`" for c in meta["clips"]) + f"; confirm {TrackerOptions.confirm} frames.", "",
        "Face-frames and mean raw top probability: " + "; ".join(
            f"{n} {first[n]['face_frames']}, {first[n]['mean_top_probability']:.3f}" for n in names) + ".", "",
        md_table(head, body, left=2), ""])


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    models = [parse_model(m) for m in args.model] if args.model else [(p.name, p) for p in sorted(ZOO.iterdir()) if p.is_dir()]
    clips = args.clip or [str(p) for p in sorted((SHARED / "media").glob("*.gif"))]
    if not clips:
        raise UserError(f"no clips: {SHARED / 'media'} has no GIFs; name one with --clip")
    for c in clips:
        if not Path(c).is_file():
            raise UserError(f"--clip {c} " + ("is not a file" if Path(c).exists() else "does not exist"))
    bad = [v for v in args.ema if not 0 < v <= 1] + [v for v in args.hysteresis if not 0 <= v < 1]
    if bad:
        raise UserError(f"--ema must be in (0, 1] and --hysteresis in [0, 1): {bad[0]:g}")
    rows = []
    for name, path in models:
        recordings = []
        for c in clips:
            print(f"{name}: {Path(c).name} ...", file=sys.stderr, flush=True)
            labels, rec = record(path, c)
            recordings.append(rec)
        for ema in args.ema:
            for h in args.hysteresis:
                rows.append({"model": name, "ema": ema, "hysteresis": h,
                             **replay(labels, recordings, replace(TrackerOptions(), ema=ema, hysteresis=h))})
    meta = {"command": "python benchmarks/smoothing.py " + shlex.join(sys.argv[1:] if argv is None else argv),
            "date": now_utc(), "machine": machine_info(), "versions": package_versions(),
            "models": {n: rel(p) for n, p in models}, "clips": [rel(Path(c)) for c in clips],
            "ema": args.ema, "hysteresis": args.hysteresis}
    out = Path(args.out)
    write_json(out.with_suffix(".json"), {**meta, "rows": rows})
    text = markdown(rows, meta)
    write_text(out.with_suffix(".md"), text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(cli_main(main))
