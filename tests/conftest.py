"""Shared fixtures. `fer_root`: the FER2013 image folders when the shared data is present,
else a tiny ImageFolder tree built from real face photos that ship inside packages."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

SHARED_FER = Path(__file__).resolve().parents[2] / "shared" / "data" / "fer2013"


def _packaged_faces() -> list[tuple[np.ndarray, tuple[int, int, int]]]:
    """(BGR photo, (face centre x, centre y, box side)) for the two packaged portraits."""
    import cv2

    skdata = pytest.importorskip("skimage.data")
    cbook = pytest.importorskip("matplotlib.cbook")
    astronaut = skdata.astronaut()[:, :, ::-1]
    with cbook.get_sample_data("grace_hopper.jpg") as fh:
        hopper = cv2.imdecode(np.frombuffer(fh.read(), np.uint8), cv2.IMREAD_COLOR)
    return [(np.ascontiguousarray(astronaut), (228, 120, 150)), (hopper, (262, 228, 230))]


def build_face_folder(root: Path, per_class: dict[str, int] | None = None, seed: int = 0) -> Path:
    """ROOT/{train,validation}/<class>/*.png: each class is a face seen at its own tilt and
    crop offset (a learnable signal), each image jittered with a shift, a flip and a gain."""
    import cv2

    from engine.core.contract import FER_CLASSES

    per_class = per_class or {"train": 16, "validation": 8}
    photos = _packaged_faces()
    rng = np.random.default_rng(seed)
    for split, n in per_class.items():
        for ci, cls in enumerate(FER_CLASSES):
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(n):
                img, (cx, cy, side) = photos[(ci + k) % 2]
                angle = -30 + 10 * ci + rng.uniform(-3, 3)
                dx, dy = rng.uniform(-0.08, 0.08, 2) * side + (ci - 3) * 0.03 * side
                m = cv2.getRotationMatrix2D((cx, cy), angle, 1.0)
                rot = cv2.warpAffine(img, m, (img.shape[1], img.shape[0]), borderMode=cv2.BORDER_REFLECT)
                x0, y0 = int(cx + dx - side / 2), int(cy + dy - side / 2)
                crop = rot[max(0, y0) : y0 + side, max(0, x0) : x0 + side]
                if rng.random() < 0.5:
                    crop = crop[:, ::-1]
                gray = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY).astype(np.float32) * rng.uniform(0.8, 1.2)
                face = cv2.resize(np.clip(gray, 0, 255).astype(np.uint8), (48, 48), interpolation=cv2.INTER_AREA)
                cv2.imwrite(str(folder / f"{split}_{cls}_{k:03d}.png"), face)
    return root


@pytest.fixture(scope="session")
def fer_root(tmp_path_factory) -> Path:
    """FER2013 folders (train/, validation/) if the shared copy exists, else a tiny real-face tree
    (forced with EMOTION_TEST_PACKAGED_FACES=1, to test what a fresh CI machine runs)."""
    if os.environ.get("EMOTION_TEST_PACKAGED_FACES") != "1" and (SHARED_FER / "train").is_dir() and (SHARED_FER / "validation").is_dir():
        return SHARED_FER
    return build_face_folder(tmp_path_factory.mktemp("faces"))


#: what `tiny_export_dir` holds (the engine's backends x precisions the tests exercise)
TINY_FORMATS = ("tflite-fp32", "tflite-int8", "onnx-fp32")


@pytest.fixture(scope="session")
def tiny_export_dir(tmp_path_factory, fer_root) -> Path:
    """An export directory (labels.json + emotion_fp32.tflite, emotion_int8.tflite, emotion_fp32.onnx)
    of a 1-epoch emonet_n trained on 30 faces per class: real weights, poor accuracy, ~30 s to build.
    For tests of plumbing (shapes, labels, backends); a test that needs a *good* model uses engine/zoo."""
    import importlib.util

    missing = [m for m in ("tensorflow", "tf2onnx", "onnx") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"building a test model needs {', '.join(missing)} (pip install '.[train]')")
    from export.run import export_model
    from models.options import TrainOptions
    from models.trainer import train

    base = tmp_path_factory.mktemp("tiny-model")
    run_dir = train(TrainOptions(data=str(fer_root), out=str(base / "run"), arch="emonet_n", epochs=1, limit=30,
                                 batch=32, jit=False, precision="float32", augment="light"))
    out = base / "export"
    export_model(Path(run_dir) / "emotion.keras", out, calib=fer_root, calib_size=64, verify_size=64,
                 check=False, formats=TINY_FORMATS)
    return out
