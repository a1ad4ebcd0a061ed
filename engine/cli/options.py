"""The engine's command-line flags, defined once for every command that runs the engine, mapped to the
library's options and nothing more.

`python -m engine.run` (a camera, a clip, photos) and `python -m engine.batch` (video archives) both call
`add_engine_options(parser)`, so a flag has one name, one default and one help text in both. Choices and
ranges come from the tables the options dataclasses check themselves with (engine.core.formats' BACKENDS and
PRECISIONS, engine.faces.detect's IMPLS and MIN_SCORE, engine.faces.crop's VIEW_OFFSETS), so a bad value is
refused by argparse before anything opens. `options_from_args(args, mode)` maps the parsed flags to
`EngineOptions` for a source's RunningMode; every rule that depends on the mode lives in `EngineOptions`
itself (engine.api). `FLAGS` names the flag of each option field, for the one-line error of a library
`OptionError` (which names fields, never flags).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from engine.api import STILL_VIEWS, EngineOptions
from engine.cli.mqtt_flags import MQTT_FLAGS
from engine.classify.classifier import BACKENDS, DEFAULT_MODEL, PRECISIONS, ClassifierOptions
from engine.core.cliargs import fraction, nonneg_float, open_range, positive_int
from engine.core.errors import OptionError, UserError
from engine.core.types import RunningMode
from engine.faces.crop import VIEW_OFFSETS, CropOptions
from engine.faces.detect import IMPLS, MIN_SCORE, DetectorOptions
from engine.faces.track import TrackerOptions
from engine.io.sinks import OutputOptions
from engine.io.sources import IMAGE_EXTS

#: option field -> the flag that sets it: what an OptionError says to a command-line user
FLAGS = {
    "ClassifierOptions.model": "--model", "ClassifierOptions.backend": "--backend", "ClassifierOptions.precision": "--precision",
    "ClassifierOptions.threads": "--threads", "ClassifierOptions.tta": "--tta",
    "DetectorOptions.model": "--detector", "DetectorOptions.min_score": "--min-face-score", "DetectorOptions.impl": "--detector-impl",
    "DetectorOptions.tiles": "--tiles", "DetectorOptions.threads": "--threads", "DetectorOptions.every": "--detect-every",
    "CropOptions.margin": "--margin", "CropOptions.align": "--no-align", "CropOptions.views": "--views",
    "TrackerOptions.ema": "--ema", "TrackerOptions.hysteresis": "--hysteresis",
    "OutputOptions.video": "--output", "OutputOptions.images": "--output", "OutputOptions.jsonl": "--jsonl",
    "OutputOptions.sound": "--sound-out",
    "SourceOptions.source": "--source", "SourceOptions.width": "--width", "SourceOptions.height": "--height",
    "SourceOptions.fps": "--fps", "SourceOptions.loop": "--loop",
}
FLAGS.update(MQTT_FLAGS)  # --mqtt and friends (engine.cli.mqtt_flags)
#: OutputOptions field -> flag (engine.run's sink errors)
OUTPUT_FLAGS = {k.split(".", 1)[1]: v for k, v in FLAGS.items() if k.startswith("OutputOptions.")}


def flag_error(exc: OptionError) -> UserError:
    """The library's `OptionError` (`ClassifierOptions.backend: ...`) as the user typed it (`--backend: ...`)."""
    return UserError(f"{FLAGS.get(exc.key, exc.key)}: {exc.detail}")


def add_engine_options(p: argparse.ArgumentParser) -> None:
    """Add the "model" and "faces" argument groups (classifier, detector, crops, smoothing) to `p`."""
    _model_group(p.add_argument_group("model"))
    _faces_group(p.add_argument_group("faces"))


def _model_group(m) -> None:
    m.add_argument("--backend", default=ClassifierOptions.backend, choices=BACKENDS, help=f"classifier runtime [{ClassifierOptions.backend}]")
    m.add_argument("--model", default=str(DEFAULT_MODEL),
                   help="a model file, or an export directory (the --backend/--precision file is picked); shipped: "
                        "engine/zoo/emonet_f (fast, the default), engine/zoo/emonet_s (accurate, ~20x the fast net's "
                        "time per face); in a checkout also models/parents/emonet_n [engine/zoo/emonet_f]")
    m.add_argument("--precision", default=ClassifierOptions.precision, choices=PRECISIONS,
                   help=f"which export to pick from a directory [{ClassifierOptions.precision}]")
    m.add_argument("--threads", type=positive_int, default=1, help="classifier/detector threads [1]")
    m.add_argument("--tta", action="store_true",
                   help="also classify each face's mirror image (same batched call) and average: steadier labels, 2x classifier time")


def _faces_group(d) -> None:
    d.add_argument("--detector", default=DetectorOptions.model,
                   help="short (BlazeFace short range: faces within ~2 m), full (full range: small/distant faces), or a .tflite path [short]")
    d.add_argument("--tiles", action="store_true", help="also search overlapping tiles: finds 25-35 px faces, ~7x detector cost")
    d.add_argument("--detect-every", type=positive_int, default=DetectorOptions.every,
                   help="run the face detector on every Nth frame of a video/camera, or at once when a face is lost or "
                        "something moved outside the faces; boxes follow the faces in between (1 = every frame) "
                        f"[{DetectorOptions.every}]")
    d.add_argument("--detector-impl", default=DetectorOptions.impl, choices=IMPLS,
                   help="the same BlazeFace model either way (boxes within IoU 0.9); auto = litert wherever a TFLite runtime "
                        "is installed (faster, no mediapipe import), else mediapipe [auto]")
    d.add_argument("--min-face-score", type=open_range(*MIN_SCORE), default=DetectorOptions.min_score,
                   help=f"minimum face-detection confidence, between {MIN_SCORE[0]:g} and {MIN_SCORE[1]:g} [{DetectorOptions.min_score}]")
    d.add_argument("--margin", type=nonneg_float, default=CropOptions.margin, help=f"crop margin around the face box [{CropOptions.margin}]")
    d.add_argument("--no-align", action="store_true", help="do not rotate faces upright from the eye keypoints")
    d.add_argument("--views", type=int, choices=sorted(VIEW_OFFSETS), default=None,
                   help="crops per face at nearby margins/offsets, averaged in the same batched call: steadier labels, "
                        f"N x classifier time [{STILL_VIEWS} for images; 1 for video and cameras, where the tracker "
                        "averages over frames]")
    d.add_argument("--ema", type=open_range(0.0, 1.0 + 1e-9), default=TrackerOptions.ema,
                   help=f"smoothing: weight of the newest frame (1 = none) [{TrackerOptions.ema}]")
    d.add_argument("--hysteresis", type=fraction, default=TrackerOptions.hysteresis,
                   help=f"how far another emotion must lead before the shown one changes [{TrackerOptions.hysteresis}]")


def options_from_args(args: argparse.Namespace, mode: RunningMode) -> EngineOptions:
    """`EngineOptions` for a source of this RunningMode from the flags `add_engine_options` defined: a plain
    mapping through DEST_FIELDS (the mode's rules are EngineOptions'); a bad value is an OptionError naming the field."""
    return engine_options(mode, **engine_flags(args))


#: engine flag (argparse dest) -> (EngineOptions part, field, how the flag's value becomes the field's)
DEST_FIELDS = {
    "model": ("classifier", "model", str), "backend": ("classifier", "backend", str), "precision": ("classifier", "precision", str),
    "threads": ("classifier", "threads", int), "tta": ("classifier", "tta", bool),
    "detector": ("detector", "model", str), "min_face_score": ("detector", "min_score", float), "detector_impl": ("detector", "impl", str),
    "tiles": ("detector", "tiles", bool), "detect_every": ("detector", "every", int),
    "margin": ("crop", "margin", float), "no_align": ("crop", "align", lambda v: not v), "views": ("crop", "views", lambda v: v),
    "ema": ("tracker", "ema", float), "hysteresis": ("tracker", "hysteresis", float),
}


def engine_flags(args: argparse.Namespace) -> dict:
    """The engine flags of a parsed command line by dest name (DEST_FIELDS' keys): what a batch's summary records."""
    return {dest: getattr(args, dest) for dest in DEST_FIELDS}


def engine_options(mode: RunningMode, **flags) -> EngineOptions:
    """`EngineOptions` for a program without a command line (the benchmarks) from engine-flag values by dest name
    (`model=...`, `detect_every=3`); the options' own defaults (which are the flags' defaults) for the rest."""
    unknown = sorted(set(flags) - set(DEST_FIELDS))
    if unknown:
        raise TypeError(f"engine_options: no engine flag {', '.join(unknown)} (known: {', '.join(DEST_FIELDS)})")
    parts: dict[str, dict] = {"classifier": {}, "detector": {}, "crop": {}, "tracker": {}}
    for dest, value in flags.items():
        part, name, convert = DEST_FIELDS[dest]
        parts[part][name] = convert(value)
    if "threads" in parts["classifier"]:
        parts["detector"]["threads"] = parts["classifier"]["threads"]  # --threads sets both, as on the command line
    return EngineOptions(running_mode=mode, classifier=ClassifierOptions(**parts["classifier"]),
                         detector=DetectorOptions(**parts["detector"]), crop=CropOptions(**parts["crop"]),
                         tracker=TrackerOptions(**parts["tracker"]))


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
