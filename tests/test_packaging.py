"""What `pip install emotion-engine[tflite]` copies onto a Pi: what the engine runs, nothing a Pi never loads."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _tracked_copy(dest: Path) -> Path:
    """The files git tracks (plus untracked, not ignored ones), copied: setuptools builds in the source tree
    and keeps stale files in its build/ folder, so building the checkout itself could ship (and leave) leftovers."""
    import shutil

    listing = subprocess.run(["git", "ls-files", "-z", "-c", "-o", "--exclude-standard"], cwd=REPO,
                             capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, listing):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


@pytest.fixture(scope="module")
def wheel_files(tmp_path_factory) -> dict[str, int]:
    out = tmp_path_factory.mktemp("wheel")
    src = _tracked_copy(tmp_path_factory.mktemp("src"))
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(src), "-w", str(out)],
        capture_output=True, text=True, timeout=300, cwd=out,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (whl,) = out.glob("emotion_engine-*.whl")
    with zipfile.ZipFile(whl) as z:
        return {i.filename: i.file_size for i in z.infolist()}


def test_wheel_carries_what_the_engine_runs_by_default(wheel_files):
    zoo = sorted(p.name for p in (REPO / "engine" / "zoo").iterdir() if (p / "labels.json").is_file())
    assert zoo
    for name in zoo:
        for f in ("labels.json", "emotion_int8.tflite", "emotion_fp16.tflite", "emotion_int8.onnx"):
            assert f"engine/zoo/{name}/{f}" in wheel_files, f"{name}/{f} missing from the wheel"
    assert "engine/detectors/face_detection_short_range.tflite" in wheel_files
    assert "engine/detectors/face_detection_full_range_sparse.tflite" in wheel_files
    assert any(f.startswith("engine/sound/sounds/") and f.endswith(".wav") for f in wheel_files)
    assert "engine/run.py" in wheel_files


def test_wheel_leaves_training_artefacts_in_the_repository(wheel_files):
    heavy = [f for f in wheel_files if f.endswith((".keras", "_fp32.tflite", "_fp32.onnx", ".png"))]
    assert heavy == []
    zoo_bytes = sum(size for f, size in wheel_files.items() if f.startswith("engine/zoo/"))
    repo_zoo_bytes = sum(p.stat().st_size for p in (REPO / "engine" / "zoo").rglob("*") if p.is_file())
    assert zoo_bytes < repo_zoo_bytes / 2, (zoo_bytes, repo_zoo_bytes)
