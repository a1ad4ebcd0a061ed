"""The engine's command-line options, defined once for every command that runs the engine.

`python -m engine.run` (a camera, a clip, photos) and `python -m engine.batch` (video archives)
both call `add_engine_options(parser)`, so a flag has one name, one default and one help text
in both, and `options_from_args(args, mode)` turns the parsed flags into the library's
`EngineOptions` for a source's RunningMode the same way for both (`engine_options(mode, **flags)`: the
same rules for a program without a command line, e.g. the benchmarks). `output_options` does the
same for engine.run's output flags (`OutputOptions`), and `OUTPUT_FLAGS` names the flag of each
of its fields, for the one-line error of a sink that cannot be opened.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from engine.api import EngineOptions
from engine.classify.classifier import BACKENDS, DEFAULT_MODEL, PRECISIONS, ClassifierOptions
from engine.core.cliargs import fraction, nonneg_float, positive_int
from engine.faces.crop import VIEW_OFFSETS, CropOptions
from engine.faces.detect import DetectorOptions
from engine.io.sinks import OutputOptions
from engine.io.sources import IMAGE_EXTS
from engine.faces.track import TrackerOptions
from engine.core.types import RunningMode

#: Framings averaged per face on photos (CropOptions.views): a photo has no next frame to smooth over,
#: and 5 crops of one face cost under a millisecond with the fast model.
STILL_VIEWS = 5

#: The flags `add_engine_options` defines (argparse dest names): what a batch's resume check compares.
ENGINE_DESTS = ("backend", "model", "precision", "threads", "tta", "detector", "tiles", "detect_every",
                "detector_impl", "min_face_score", "margin", "no_align", "views", "ema", "hysteresis")


def add_engine_options(p: argparse.ArgumentParser) -> None:
    """Add the "model" and "faces" argument groups (classifier, detector, crops, smoothing) to `p`."""
    m = p.add_argument_group("model")
    m.add_argument("--backend", default="tflite", help=f"classifier runtime: {', '.join(BACKENDS)} [tflite]")
    m.add_argument("--model", default=str(DEFAULT_MODEL),
                   help="a model file, or an export directory (the --backend/--precision file is picked); shipped: "
                        "engine/zoo/emonet_f (fast, the default: 2x fer's model per face even on plain AVX2 and a Pi 4), "
                        "in a checkout also models/parents/emonet_n (the previous fast net: 0.03 points more accurate in int8, about half as fast), "
                        "engine/zoo/emonet_s (accurate and steady: 68.4%% int8, the best engine accuracy, ~20x the "
                        "fast net's time per face) [engine/zoo/emonet_f]")
    m.add_argument("--precision", default="int8", help=f"which export to pick from a directory: {', '.join(PRECISIONS)} [int8]")
    m.add_argument("--threads", type=positive_int, default=1, help="classifier/detector threads [1]")
    m.add_argument("--tta", action="store_true",
                   help="also classify each face's mirror image (same batched call) and average: steadier labels, 2x classifier time")

    d = p.add_argument_group("faces")
    d.add_argument("--detector", default="short",
                   help="short (BlazeFace short range: faces within ~2 m), full (full range: small/distant faces), or a .tflite path [short]")
    d.add_argument("--tiles", action="store_true", help="also search overlapping tiles: finds 25-35 px faces, ~7x detector cost")
    d.add_argument("--detect-every", type=positive_int, default=DetectorOptions.every,
                   help="run the face detector on every Nth frame of a video/camera, or at once when a face is lost or "
                        "something moved outside the faces; boxes follow the faces in between (1 = every frame) "
                        f"[{DetectorOptions.every}]")
    d.add_argument("--detector-impl", default="auto", help="auto, mediapipe or litert: the same BlazeFace model either way (boxes within IoU 0.9); auto = "
                        "litert wherever a TFLite runtime is installed (faster, no mediapipe import), else mediapipe [auto]")
    d.add_argument("--min-face-score", type=fraction, default=0.5, help="minimum face-detection confidence [0.5]")
    d.add_argument("--margin", type=nonneg_float, default=CropOptions.margin, help=f"crop margin around the face box [{CropOptions.margin}]")
    d.add_argument("--no-align", action="store_true", help="do not rotate faces upright from the eye keypoints")
    d.add_argument("--views", type=int, choices=sorted(VIEW_OFFSETS), default=None,
                   help="crops per face at nearby margins/offsets, averaged in the same batched call: steadier labels, "
                        f"N x classifier time [{STILL_VIEWS} for images; 1 for video and cameras, where the tracker "
                        "averages over frames]")
    d.add_argument("--ema", type=fraction, default=TrackerOptions.ema, help=f"smoothing: weight of the newest frame (1 = none) [{TrackerOptions.ema}]")
    d.add_argument("--hysteresis", type=fraction, default=TrackerOptions.hysteresis,
                   help=f"how far another emotion must lead before the shown one changes [{TrackerOptions.hysteresis}]")


def options_from_args(args: argparse.Namespace, mode: RunningMode | bool) -> EngineOptions:
    """`EngineOptions` from the flags `add_engine_options` defined, for a source of this RunningMode
    (`source.mode`). IMAGE: the detector's IMAGE mode, STILL_VIEWS framings, no smoothing. A bool is the
    older `stills` argument (True = IMAGE, False = VIDEO), still accepted."""
    if isinstance(mode, bool):
        mode = RunningMode.IMAGE if mode else RunningMode.VIDEO
    stills = mode is RunningMode.IMAGE
    return EngineOptions(
        classifier=ClassifierOptions(model=args.model, backend=args.backend, precision=args.precision, threads=args.threads,
                                     tta=args.tta),
        detector=DetectorOptions(model=args.detector, min_score=args.min_face_score, impl=args.detector_impl,
                                 video=not stills, tiles=args.tiles, threads=args.threads,
                                 every=args.detect_every),
        crop=CropOptions(margin=args.margin, align=not args.no_align,
                         views=args.views or (STILL_VIEWS if stills else CropOptions.views)),
        tracker=TrackerOptions(ema=1.0 if stills else args.ema, hysteresis=args.hysteresis),
    )


def engine_defaults() -> dict:
    """The engine flags' defaults by dest name, exactly as engine.run parses a command line without them."""
    p = argparse.ArgumentParser(add_help=False)
    add_engine_options(p)
    return vars(p.parse_args([]))


def engine_options(mode: RunningMode, **flags) -> EngineOptions:
    """`EngineOptions` for a source of this RunningMode from engine-flag values by dest name (`model=...`,
    `detect_every=3`), engine.run's defaults for the rest: what a program that runs the engine without a
    command line (the benchmarks) builds, through the very rules of `options_from_args`."""
    unknown = sorted(set(flags) - set(ENGINE_DESTS))
    if unknown:
        raise TypeError(f"engine_options: no engine flag {', '.join(unknown)} (known: {', '.join(ENGINE_DESTS)})")
    return options_from_args(argparse.Namespace(**{**engine_defaults(), **flags}), mode)


def engine_args(args: argparse.Namespace) -> dict:
    """The engine flags of a parsed command line as a plain dict (JSON-able; `argparse.Namespace(**d)` round-trips)."""
    return {k: getattr(args, k) for k in ENGINE_DESTS}


#: OutputOptions field -> the engine.run flag that sets it (what a sink error says instead of the field).
OUTPUT_FLAGS = {"video": "--output", "images": "--output", "jsonl": "--jsonl", "sound": "--sound-out"}


def output_options(args: argparse.Namespace, mode: RunningMode, display: bool) -> OutputOptions:
    """`OutputOptions` from engine.run's output flags, for a source of this RunningMode. --output is the
    annotated video, or for photos (IMAGE) with an image suffix or none, the annotated image(s)."""
    sound = None
    if getattr(args, "sound", False) or getattr(args, "sound_out", None):  # (a caller's Namespace may lack the sound flags)
        from engine.sound.cues import SoundOptions

        sound = SoundOptions(sound_dir=args.sound_dir, stable_s=args.sound_stable, cooldown_s=args.sound_cooldown,
                             out_wav=args.sound_out, player=args.sound_player)
    return OutputOptions(window=display, **output_target(args.output, mode), jsonl=args.jsonl or None, sound=sound)


def output_target(out: str | None, mode: RunningMode) -> dict:
    """What --output names: `{"video": ..., "images": ...}` for OutputOptions. For photos (IMAGE) a path
    with an image suffix or none is the annotated image(s); anything else is the annotated video."""
    photos = bool(out) and mode is RunningMode.IMAGE and (Path(out).suffix.lower() in IMAGE_EXTS or not Path(out).suffix)
    return {"video": None if photos else out or None, "images": out if photos else None}
