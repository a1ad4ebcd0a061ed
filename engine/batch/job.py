"""One input of a batch -> its outputs: `<name>.jsonl`, `<name>.csv`, `<name>.png` and `<name>.meta.json`.

A `BatchWorker` loads the models once (the classifier, and a face detector per kind of input:
stream for videos, still for photos) and then runs any number of inputs, each through the same
`engine.pipeline.Pipeline` that `python -m engine.run` uses, with fresh per-input state (tracker,
detect-every-N memory): an input's result does not depend on which worker ran it or after what.
Frames stream from the decoder through bounded queues; what is kept per input is bounded (the
timeline's bins, per-face counters), so a 2-hour video costs no more memory than a clip.

Every file is written under a temporary name and renamed when complete; `<name>.meta.json`
(the options, the input's size and mtime, the summary row) is renamed last, so its presence with
matching options is what "done" means on a re-run (`is_done`). A URL's secrets (user:password@,
`?token=`) never reach these files or the summary row: the row and meta.json name it by
`engine.core.urls.redact` (plus `url_key`, so two URLs still differ), and an error message has them
masked (`scrub`).
"""
from __future__ import annotations

import csv
import glob
import hashlib
import json
import os
import re
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qsl, unquote, urlsplit

import cv2

from engine.api import EmotionRecognizer, EngineOptions
from engine.classify.classifier import create_classifier
from engine.faces.detect import create_detector, for_stream
from engine.core.errors import UserError
from engine.core.logs import quiet
from engine.core.memory import peak_rss_mb, rss_now_mb
from engine.pipeline import Pipeline, PipelineError, PipelineOptions
from engine.io.sinks import JsonlSink
from engine.io.sources import SourceOptions, VideoCaptureSource, mode_of, open_source
from engine.io.timeline import Timeline
from engine.core.types import RunningMode
from engine.core.urls import REDACTED, SECRET_KEYS, is_url, redact, url_key

META_VERSION = 1
OUTPUTS = ("jsonl", "csv", "png")
PROGRESS_EVERY_S = 0.5
TIMING = ("fps", "seconds", "worker", "rss_mb", "rss_now_mb", "reused")  # run-dependent summary columns


def out_paths(out: str | Path, name: str) -> dict[str, Path]:
    base = Path(out) / name
    root = Path(out).resolve()
    if root != base.resolve().parent and root not in base.resolve().parents:  # engine.batch.inputs never makes one
        raise ValueError(f"output name {name!r} leaves the output folder")
    return {ext: base.with_name(f"{base.name}.{ext}") for ext in (*OUTPUTS, "meta.json")}


def _stat(path: str) -> list:
    try:
        st = os.stat(path)
        return [st.st_size, st.st_mtime_ns]
    except OSError:
        return []


def shown(src: str) -> str:
    """What a summary, meta.json or message may say of a source: a path as is, a URL without its secrets."""
    return redact(src) if is_url(src) else src


def identity(src: str) -> list:
    """What meta.json records of an input to know it again on a re-run: a path (byte-identical to earlier
    versions) with its size and mtime; a URL as its redacted form and a long hash of the whole (secrets included)."""
    return [f"{redact(src)} #{url_key(src, 32)}"] if is_url(src) else [src, *_stat(src)]


def scrub(text: str, src: str) -> str:
    """`text` (an error message that may quote the URL) with the URL's password, user and secret query values masked."""
    if not is_url(src):
        return text
    text = text.replace(src, redact(src))
    secrets = set(re.findall(r"://([^/@?#]+)@", src))  # the whole userinfo, then its parts
    for userinfo in list(secrets):
        secrets.update(q for q in unquote(userinfo).split(":", 1) + userinfo.split(":", 1))
    secrets.update(v for k, v in parse_qsl(urlsplit(src).query, keep_blank_values=True) if any(w in k.lower() for w in SECRET_KEYS))
    for secret in sorted((x for x in secrets if len(x) >= 3), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


def options_key(engine: EngineOptions) -> str:
    """What makes two runs' outputs the same: the engine options (running mode, threads and callbacks aside: they
    change neither answer) and the model files' sizes and times."""
    model = Path(engine.classifier.model).expanduser().resolve()
    files = sorted(model.iterdir()) if model.is_dir() else [model]
    same = replace(engine.for_mode(RunningMode.VIDEO), on_emotion_change=None,
                   classifier=replace(engine.classifier, model=str(model), threads=1), detector=replace(engine.detector, threads=1))
    ident = {"options": json.loads(json.dumps(asdict(same), default=str)),
             "model_files": [[p.name, *_stat(str(p))] for p in files if p.is_file()]}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def remove_temp(out: str | Path, name: str) -> None:
    """Delete the temporary files any run left for this input (they never count as output)."""
    base = Path(out) / name
    stem = glob.escape(base.name)
    # exactly this input's files (.NAME.EXT.PID.tmp): not those of an input called NAME.part2
    for ext in (*OUTPUTS, "meta.json"):
        for stale in base.parent.glob(f".{stem}.{ext}.*.tmp"):
            if stale.name[len(base.name) + len(ext) + 3:-4].isdigit():
                stale.unlink(missing_ok=True)


#: a temporary file of this batch: .NAME.EXT.PID.tmp (an input's outputs; summary.csv/json, index.html)
TEMP = re.compile(r"^\..+\.(jsonl|csv|png|meta\.json|json|html)\.(\d+)\.tmp$")


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, someone else's
        return True
    return True


def sweep_temp(out: str | Path) -> int:
    """Delete the temporary files under `out` whose writer is gone (a worker killed with SIGKILL, a lost node):
    called as a batch starts and as it ends, so none is left until some later run of the same input. A file of
    a process still running here is kept (a batch that shares --out). Returns how many went."""
    gone = 0
    for folder, _dirs, files in os.walk(out):
        for name in files:
            m = TEMP.match(name)
            if m and int(m.group(2)) != os.getpid() and not _running(int(m.group(2))):
                try:
                    os.unlink(os.path.join(folder, name))
                    gone += 1
                except OSError:
                    pass
    return gone


def is_done(job: dict, out: str | Path, key: str) -> dict | None:
    """The summary row of an earlier complete run of `job` with the same options and input, else None."""
    paths = out_paths(out, job["name"])
    try:
        meta = json.loads(paths["meta.json"].read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if meta.get("version") != META_VERSION or meta.get("options") != key or meta.get("input") != identity(job["src"]):
        return None
    sizes = meta.get("sizes", {})
    if any(not paths[ext].is_file() or paths[ext].stat().st_size != sizes.get(ext) for ext in OUTPUTS):
        return None
    return meta.get("row")


def empty_row(job: dict, status: str, error: str, worker: str = "") -> dict:
    """The summary row of an input that produced nothing (failed before any frame, or never started)."""
    return {"input": job["label"], "path": shown(job["src"]), "kind": job["kind"], "status": status, "error": scrub(error, job["src"]),
            "duration_s": 0.0, "frames": 0, "faces": 0, "tracked_faces": 0,
            "fps": 0.0, "seconds": 0.0, "worker": worker, "rss_mb": 0.0, "rss_now_mb": 0.0, "reused": False}


JPEG_EXTS = {".jpg", ".jpeg", ".jpe", ".jfif"}


def _check_whole_jpeg(path: str) -> None:
    """UserError for a JPEG photo cut short: OpenCV decodes what is there, greys the rest and says nothing but a
    libjpeg warning, so its faces would be counted from a damaged picture; a photo that is only partly there
    fails, as a video with missing frames does. Pillow (matplotlib's own dependency) is what notices."""
    if Path(path).suffix.lower() not in JPEG_EXTS:
        return
    try:
        from PIL import Image, ImageFile
    except ImportError:  # without Pillow: not checked
        return
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        return
    try:
        with Image.open(path) as im:
            im.load()
    except OSError as exc:
        if "truncated" in str(exc) or "broken data stream" in str(exc):
            raise UserError("truncated or damaged: the JPEG ends before its picture does (partly decoded)") from None
    except Exception:  # noqa: BLE001 - anything else is for the decoder to report
        pass


class BatchWorker:
    """Models loaded once; `run(job, out)` per input. `worker` names this process in the summary."""

    def __init__(self, engine: EngineOptions, worker: str = ""):
        self.key = options_key(engine)
        self.worker = worker or f"pid{os.getpid()}"
        self.options = {mode: engine.for_mode(mode).resolved() for mode in (RunningMode.VIDEO, RunningMode.IMAGE)}
        with quiet():  # LiteRT/MediaPipe print INFO lines from C++ while loading
            self.classifier = create_classifier(self.options[RunningMode.VIDEO].classifier)
        self.labels = list(self.classifier.labels)
        self._detectors: dict[RunningMode, object] = {}
        self._detector(RunningMode.VIDEO)  # a bad --detector is one error before any input, not one per input

    def _detector(self, mode: RunningMode):
        """The shared base detector for this kind of input; the every-N wrapper is per input (it has memory)."""
        if mode not in self._detectors:
            with quiet():
                self._detectors[mode] = create_detector(replace(self.options[mode].detector, every=1))
        return self._detectors[mode]

    def recognizer(self, mode: RunningMode) -> EmotionRecognizer:
        """A recognizer for one input of this RunningMode (VIDEO or IMAGE), sharing the loaded models."""
        opts = self.options[mode]
        return EmotionRecognizer(opts, for_stream(self._detector(mode), opts.detector), self.classifier)

    def close(self) -> None:
        with quiet():
            for det in self._detectors.values():
                det.close()
            self.classifier.close()

    # ------------------------------------------------------------------ one input
    def run(self, job: dict, out: str | Path, progress: Callable[[int, int], None] | None = None) -> dict:
        """Process one input; never raises for a bad input: the row says status "failed" and why."""
        t0 = time.perf_counter()
        row = {k: v for k, v in empty_row(job, "failed", "").items() if k not in TIMING}
        paths = out_paths(out, job["name"])
        tmp = {ext: p.with_name(f".{p.name}.{os.getpid()}.tmp") for ext, p in paths.items()}
        try:
            paths["jsonl"].parent.mkdir(parents=True, exist_ok=True)
            remove_temp(out, job["name"])  # a killed worker's half files
            paths["meta.json"].unlink(missing_ok=True)  # from here on, this input is not done
            row.update(self._process(job, tmp, progress))
            for ext in OUTPUTS:
                os.replace(tmp[ext], paths[ext])
            row["status"] = "ok"
            self._timing(row, t0)
            meta = {"version": META_VERSION, "options": self.key, "input": identity(job["src"]),
                    "sizes": {ext: paths[ext].stat().st_size for ext in OUTPUTS}, "row": row}
            tmp["meta.json"].write_text(json.dumps(meta, indent=1), encoding="utf-8")
            os.replace(tmp["meta.json"], paths["meta.json"])  # last: "done" from now on
        except (UserError, PipelineError) as exc:
            row.update(status="failed", error=str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        except OSError as exc:
            row.update(status="failed", error=f"cannot write its outputs: {exc.strerror or exc} ({exc.filename or ''})")
        except Exception as exc:  # a decoder or runtime failure on one input must not end the batch
            row.update(status="failed", error=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": "))
        finally:
            for p in tmp.values():
                p.unlink(missing_ok=True)
        if row["status"] != "ok":
            row["error"] = scrub(row["error"], job["src"])
            self._timing(row, t0)
        return row

    def _timing(self, row: dict, t0: float) -> None:
        seconds = time.perf_counter() - t0
        row.update(fps=round(row["frames"] / seconds, 1) if seconds > 0 else 0.0, seconds=round(seconds, 3),
                   worker=self.worker, rss_mb=peak_rss_mb(), rss_now_mb=rss_now_mb(), reused=False)

    def _open(self, job: dict):
        """(source, frame count its header announces or 0); one sentence when it cannot be read."""
        src = job["src"]
        if job["kind"] == "missing":
            raise UserError(f"{src} does not exist")
        if "://" not in src and os.path.getsize(src) == 0:
            raise UserError("empty file (0 bytes)")
        if "://" not in src and job["kind"] == "image":
            _check_whole_jpeg(src)
        caps = []

        def opener(target):  # engine.io.sources' own hook: keeps the capture to ask its frame count
            caps.append(cv2.VideoCapture(str(target)))
            return caps[-1]

        if "://" in src:  # a file on a web server: every frame, not a live stream's newest; its mode by the input's kind
            mode = RunningMode.IMAGE if job["kind"] == "image" else RunningMode.VIDEO
            source = VideoCaptureSource(src, False, SourceOptions(src), opener, name=job["label"], mode=mode)
        else:
            source = open_source(SourceOptions(src), opener)
        announced = int(caps[0].get(cv2.CAP_PROP_FRAME_COUNT) or 0) if caps else 0
        return source, max(0, announced)

    def _process(self, job: dict, tmp: dict[str, Path], progress) -> dict:
        source, announced = self._open(job)
        stills = mode_of(source) is RunningMode.IMAGE  # decided once, by _open (an image on a web server too)
        rec = self.recognizer(RunningMode.IMAGE if stills else RunningMode.VIDEO)
        labels = self.labels
        timeline = Timeline(labels, 1.0 / (source.fps or 25.0))
        counts = {"frames": 0, "faces": 0}
        shown = dict.fromkeys(labels, 0)
        last = [time.monotonic()]
        jsonl = JsonlSink(tmp["jsonl"])
        with open(tmp["csv"], "w", newline="", encoding="utf-8") as fh:
            table = csv.writer(fh)
            table.writerow(["frame", "t", "face_id", "x", "y", "w", "h", "score", "emotion", "confidence", *labels])

            def on_frame(pkt, _image) -> None:
                # as engine.io.outputs.Outputs.handle times a frame (no picture is written here)
                pkt.ms["sink"] = 0.0
                pkt.ms["total"] = (time.perf_counter_ns() - pkt.t_capture_ns) / 1e6
                event = pkt.to_event()
                jsonl.write(event)
                for f in event["faces"]:
                    table.writerow([event["frame"], event["t"], f["id"], *f["box"], f["score"], f["emotion"], f["confidence"],
                                    *(f["probs"].get(lab, "") for lab in labels)])
                    shown[f["emotion"]] += 1
                timeline.add(pkt.t, pkt.faces)
                counts["frames"] += 1
                counts["faces"] += len(pkt.faces)
                if progress is not None and time.monotonic() - last[0] >= PROGRESS_EVERY_S:
                    last[0] = time.monotonic()
                    progress(counts["frames"], announced)

            pipe = Pipeline(rec, source, PipelineOptions(overlay=False, quiet=True), on_frame=on_frame, log=lambda _m: None)
            try:
                pipe.run()  # closes the source
            finally:
                jsonl.close()
        frames = counts["frames"]
        if frames == 0:
            raise UserError("no frame could be decoded")
        if not stills and announced and frames < 0.98 * announced - 2:
            raise UserError(f"truncated or damaged: decoded {frames} of the {announced} frames its header announces")
        timeline.draw(tmp["png"], title=job["label"], photo=stills)
        face_time = sum(shown.values())
        shares = {f"share_{lab}": round(shown[lab] / face_time, 4) if face_time else 0.0 for lab in labels}
        return {"duration_s": 0.0 if stills else round(frames / (source.fps or 25.0), 3), "frames": frames,
                "faces": counts["faces"], "tracked_faces": len(timeline.faces), **shares,
                "dominant": max(labels, key=lambda lab: shown[lab]) if face_time else ""}
