"""The model contract shared by training, export, the engine and the benchmarks.

Input: a batch of 48x48x1 raw pixel values 0..255 (scaling lives inside the model).
Output: probabilities over `labels`, a subset of the canonical FER2013 order.
The contract travels with every model as a `labels.json` sidecar so that no consumer
hard-codes the class list.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from engine.core.errors import UserError

FACE_SIZE = 48
#: Canonical FER2013 label order (ids 0..6 in fer2013.csv).
FER_CLASSES: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")

#: Presets used by the reference projects. Order inside a preset follows FER_CLASSES.
PRESETS: dict[str, tuple[str, ...]] = {
    "7": FER_CLASSES,
    "6": ("angry", "fear", "happy", "sad", "surprise", "neutral"),
    "5": ("angry", "fear", "happy", "sad", "surprise"),
    "3": ("angry", "happy", "sad"),
}

SPEC_NAME = "labels.json"

#: Other names for the FER2013 classes (folder names of public emotion collections, a user's
#: sound-file names), mapped onto the canonical ones.
ALIASES: dict[str, str] = {
    "anger": "angry", "mad": "angry", "disgusted": "disgust", "fearful": "fear", "scared": "fear", "afraid": "fear",
    "happiness": "happy", "joy": "happy", "sadness": "sad", "surprised": "surprise", "neutrality": "neutral",
}


def canonical_class(name: str) -> str | None:
    """'Fearful ' -> 'fear'; None for a name that is no FER2013 class."""
    name = name.strip().lower()
    name = ALIASES.get(name, name)
    return name if name in FER_CLASSES else None


def sha256_file(path: str | Path) -> str:
    """The `source_sha256` of a spec: ties every export and card to the exact model file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def parse_classes(text: str) -> tuple[str, ...]:
    """Turn `--classes 7` or `--classes happy,sad,angry` into a canonical-order tuple.

    Canonical order is enforced so that two trainings on the same subset produce the same
    output order, whatever order the user typed.
    """
    text = text.strip()
    if text in PRESETS:
        return PRESETS[text]
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in FER_CLASSES]
    if unknown:
        raise UserError(
            f"unknown class {unknown[0]!r}: choose from {', '.join(FER_CLASSES)} or a preset {'/'.join(PRESETS)}"
        )
    if len(set(names)) < 2:
        raise UserError("--classes needs at least two different classes")
    return tuple(c for c in FER_CLASSES if c in names)


@dataclass
class ModelSpec:
    """What a consumer needs to know to feed a model and read its output."""

    labels: list[str]
    input_shape: list[int] = field(default_factory=lambda: [FACE_SIZE, FACE_SIZE, 1])
    input_range: list[float] = field(default_factory=lambda: [0.0, 255.0])
    input_dtype: str = "uint8-valued"  # raw pixel values; float models take them as float32
    arch: str = ""
    source_sha256: str = ""
    extra: dict = field(default_factory=dict)

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / SPEC_NAME
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> "ModelSpec":
        path = Path(directory) / SPEC_NAME
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise UserError(f"no {SPEC_NAME} next to the model in {Path(directory)}") from None
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise UserError(f"{path} is not valid JSON") from None
        if not isinstance(data, dict) or not isinstance(data.get("labels"), list) or len(data["labels"]) < 2:
            raise UserError(f"{path} has no 'labels' list")
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)
