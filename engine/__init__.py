"""Realtime facial-emotion recognition engine (runtime half: no TensorFlow needed).

    from engine import EmotionRecognizer, EngineOptions, RunningMode

Command line: `python -m engine.run --help` (a camera, a clip, photos), `python -m engine.batch --help`
(archives). The sub-packages, bottom to top: core/ (what training, export and benchmarks share), faces/,
classify/, io/, sound/, serve/, then api.py (options -> create -> one call per frame), pipeline.py
(threads and queues), cli/, run.py and batch/ (docs/ARCHITECTURE.md draws them).

The public names below load on first use, so `import engine.core.formats` (what `python -m export --help`
needs) does not pull in OpenCV and the runtimes.
"""
from __future__ import annotations

import importlib

#: public name -> the module that defines it
PUBLIC = {
    "EmotionRecognizer": "engine.api", "EngineOptions": "engine.api", "STILL_VIEWS": "engine.api",
    "RunningMode": "engine.core.types", "Face": "engine.core.types", "FrameRecord": "engine.core.types",
    "Detection": "engine.core.types", "OptionError": "engine.core.errors", "UserError": "engine.core.errors",
    "ClassifierOptions": "engine.classify.classifier", "DetectorOptions": "engine.faces.detect",
    "CropOptions": "engine.faces.crop", "TrackerOptions": "engine.faces.track",
}
__all__ = sorted(PUBLIC)


def __getattr__(name: str):
    if name in PUBLIC:
        return getattr(importlib.import_module(PUBLIC[name]), name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
