"""`python -m engine.run`: realtime facial-emotion recognition from a camera, a clip or photos.

Examples:
  python -m engine.run                                  # camera 0, window, shipped fast int8 model
  python -m engine.run --source sample --no-display     # a packaged photo (Grace Hopper), no camera needed
  python -m engine.run --source clip.mp4 --output out.mp4 --jsonl events.jsonl --no-display
  python -m engine.run --source picam --width 640 --height 480      # Raspberry Pi camera
  python -m engine.run --source 0 --no-display --serve 0.0.0.0:8080 --serve-token SECRET   # watch from a browser
"""
from __future__ import annotations

import time

_T_START = time.perf_counter()  # before the heavy imports: start-up time counts them

import os

# OpenCV's own warnings ("[ WARN:0@0.03] ... can't open camera by index") and FFmpeg's
# ("moov atom not found") would precede our one-sentence error; set before cv2 is imported.
# OPENCV_LOG_LEVEL=INFO / OPENCV_FFMPEG_LOGLEVEL=32 bring them back.
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "8")  # AV_LOG_FATAL

import argparse
import signal
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Sequence

from engine.api import EmotionRecognizer
from engine.cli.mqtt_flags import add_mqtt_options, mqtt_options_from_args, start_mqtt, stop_mqtt
from engine.cli.options import add_engine_options, flag_error, options_from_args, output_options
from engine.core.cliargs import Parser, nonneg_float, positive_int
from engine.core.errors import OptionError, UserError, cli_main
from engine.io.outputs import Outputs, check_targets
from engine.pipeline import Pipeline, PipelineError, PipelineOptions
from engine.io.sinks import display_available
from engine.io.sources import SourceOptions, open_source, planned_mode
from engine.core.types import RunningMode


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="python -m engine.run",
        description="Realtime facial-emotion recognition: capture -> face detection -> one batched "
                    "classifier call per frame -> tracking/smoothing -> overlay -> window/video/JSONL/sound.",
        epilog=__doc__.split("Examples:", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_argument_group("source")
    src.add_argument("--source", default="0",
                     help="camera index (0), /dev/videoN, picam, a video file, an image, a folder of images, an rtsp/http URL "
                          "(an http(s) video file plays once, like a file), or 'sample' (a packaged photo) [default: 0]")
    src.add_argument("--width", type=positive_int, help="camera capture width (USB/V4L2, Pi camera)")
    src.add_argument("--height", type=positive_int, help="camera capture height")
    src.add_argument("--fps", type=float, help="camera frame rate to request")
    src.add_argument("--loop", type=positive_int, default=1, help="play a file or folder this many times [1]")
    src.add_argument("--max-frames", type=positive_int, help="stop after this many frames")

    add_engine_options(p)  # model + faces: engine/cli/options.py, shared with engine.batch

    o = p.add_argument_group("output")
    o.add_argument("--no-display", action="store_true", help="no window (headless machines, benchmarks)")
    o.add_argument("--output", help="write the annotated video (.mp4/.avi), or image(s) for photo sources (.jpg/.png or a folder)")
    o.add_argument("--jsonl", help="write one JSON object per frame (faces, emotions, stage ms)")
    o.add_argument("--bars", action="store_true", help="draw a probability bar chart next to each face")
    o.add_argument("--quiet", action="store_true", help="no progress lines")

    w = p.add_argument_group("live view (a browser page served by this process)")
    w.add_argument("--serve", metavar="[HOST:]PORT", type=_serve_address,
                   help="serve the annotated video, the per-face emotions and the JSONL events over HTTP at http://HOST:PORT/ "
                        "(HOST defaults to 127.0.0.1, this machine only; 0.0.0.0 for the whole network; port 0 picks a free one)")
    w.add_argument("--serve-token", metavar="TOKEN", help="require this token on every request (?token=TOKEN or "
                   "'Authorization: Bearer TOKEN'); use it whenever HOST is not 127.0.0.1. A token may be pasted raw into "
                   "the URL, + and & included; only # must be written %%23")
    w.add_argument("--serve-max-clients", type=positive_int, default=4, metavar="N",
                   help="video streams (and, separately, event streams) served at once; more get 503 [4]")

    add_mqtt_options(p)  # --mqtt ...: engine/cli/mqtt_flags.py

    s = p.add_argument_group("sound cues")
    s.add_argument("--sound", action="store_true", help="play a voice clip matching a face's (stable) emotion")
    s.add_argument("--sound-dir", help="folder with <emotion>/*.wav clips [the shipped set]")
    s.add_argument("--sound-out", help="render the cues into this WAV on the source's timeline instead of a speaker")
    s.add_argument("--sound-stable", type=nonneg_float, default=1.0, help="seconds an emotion must hold before its cue [1.0]")
    s.add_argument("--sound-cooldown", type=nonneg_float, default=4.0, help="minimum seconds between cues [4.0]")
    s.add_argument("--sound-player", default="auto", help="auto, sounddevice, paplay, aplay, afplay or none [auto]")
    return p


def _serve_address(text: str) -> tuple[str, int]:
    from engine.serve.live import parse_address  # light: the standard library's http.server

    return parse_address(text)


def serve_options_from_args(args: argparse.Namespace):
    """`engine.serve.live.ServeOptions` from --serve/--serve-token/--serve-max-clients; None without --serve."""
    if args.serve is None:
        if args.serve_token is not None:
            raise UserError("--serve-token needs --serve [HOST:]PORT")
        return None
    from engine.serve.live import ServeOptions

    if args.serve_token is not None and not args.serve_token.strip():
        raise UserError("--serve-token must not be empty")
    host, port = args.serve
    return ServeOptions(host=host, port=port, token=args.serve_token, max_clients=args.serve_max_clients, bars=args.bars)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    serve = serve_options_from_args(args)
    t_launch = _T_START
    planned = planned_mode(args.source)
    with _flag_errors():  # nothing is open yet: a bad option or a refused output leaves every file untouched
        engine = options_from_args(args, planned)
        args.mqtt_options = mqtt_options_from_args(args)
        check_targets(output_options(args, planned, False), args.source, planned)
        source = open_source(SourceOptions(args.source, args.width, args.height, args.fps, args.loop))
    closers = [source.close]
    try:
        with _flag_errors():
            if (source.mode is RunningMode.IMAGE) != (planned is RunningMode.IMAGE):  # a URL that opened otherwise
                check_targets(output_options(args, source.mode, False), args.source, source.mode)
            return _run(args, engine.for_mode(source.mode), source, closers, t_launch, serve)
    finally:
        for close in reversed(closers):
            try:
                close()
            except Exception as exc:  # closing must not hide the real outcome
                print(f"warning: while closing: {exc}", file=sys.stderr)


@contextmanager
def _flag_errors():
    """The library names the option field (`OptionError`); the user typed a flag: say the flag."""
    try:
        yield
    except OptionError as exc:
        raise flag_error(exc) from None


def _run(args, opts, source, closers: list, t_launch: float, serve=None) -> int:
    log = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    display = not args.no_display
    if display and not display_available():
        print("warning: no display found (headless): running without a window; pass --no-display to silence this", file=sys.stderr)
        display = False

    live = None
    if serve is not None:  # bound before the models load: a busy port is one sentence, at once
        from engine.serve.live import LiveServer

        live = LiveServer.start(serve)
        closers.append(live.close)
        live.describe(source=source.name, live=source.live)
    mqtt = start_mqtt(args.mqtt_options, source, log)  # before the models load: no broker is one line, at once
    if mqtt is not None:
        closers.append(lambda: stop_mqtt(mqtt, log))
    # The models load before any output file is opened: a model that fails to load (missing, corrupt,
    # wrong shape) leaves an earlier run's --jsonl/--output untouched instead of truncating it.
    rec = EmotionRecognizer.create(opts)
    closers.append(rec.close)
    if mqtt is not None:
        mqtt.labels = list(rec.labels)
    outputs = Outputs.open(output_options(args, source.mode, display), source, rec.labels, log=log, live=live, mqtt=mqtt)
    closers.append(outputs.close)
    log(f"emotion-engine: source {source.name} ({'live' if source.live else 'file'}), "
        f"model {Path(rec.classifier.path).name} on {rec.classifier.backend}, detector {rec.detector.impl}"
        f" ({args.detector}{' + tiles' if args.tiles else ''}), labels {', '.join(rec.labels)}")

    if live is not None:
        live.describe(model=Path(rec.classifier.path).name, backend=rec.classifier.backend, labels=list(rec.labels),
                      detector=f"{rec.detector.impl} ({args.detector}{' + tiles' if args.tiles else ''})")
    pipe = Pipeline(rec, source, PipelineOptions(max_frames=args.max_frames, bars=args.bars, overlay=outputs.want_pixels,
                                                 quiet=args.quiet), on_frame=outputs.handle, log=log,
                    on_idle=outputs.idle if outputs.window is not None or live is not None else None)
    previous = signal.signal(signal.SIGTERM, lambda *_: pipe.stop("SIGTERM"))
    # Ctrl-C = KeyboardInterrupt even when the parent started us with SIGINT ignored (a non-interactive
    # shell's `cmd &`), so a SIGINT always stops cleanly instead of being dropped.
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        stats = pipe.run()
        outputs.interrupted = stats.stopped_by != "end"
    except PipelineError as exc:
        outputs.interrupted = True  # report the error now, not after the sound clip
        raise UserError(str(exc)) from None
    except BaseException:
        outputs.interrupted = True
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
    if stats.frames == 0 and stats.stopped_by == "end":  # every photo unreadable: not a success with "nan" timings
        raise UserError(f"no frame could be read from {source.name}")
    startup = outputs.first_out - t_launch if outputs.first_out is not None else float("nan")
    log(f"done: {stats.frames} frames, {stats.faces} faces, {stats.fps:.1f} FPS"
        f" (stopped by {stats.stopped_by}; first frame {startup:.2f}s after launch)")
    _decoder_note(source)
    return 0


def _decoder_note(source) -> None:
    """One counted line for the photos libjpeg complained about (its own per-file warnings are kept off stderr)."""
    notes = getattr(source, "notes", None)
    note = notes.summary() if notes is not None else None
    if note:
        print(note, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(cli_main(main))
