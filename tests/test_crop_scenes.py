"""benchmarks/crop_scenes.py (the hard scenes of crop_agreement.py --scenes hard and crop_misses.py): sizes,
JPEG share, face-free backgrounds, faces kept intact, per-setting results. Runs anywhere: the faces come
from a packaged photo (skimage's astronaut) and the FER fixture falls back to packaged faces."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

skdata = pytest.importorskip("skimage.data")

from benchmarks import crop_scenes  # noqa: E402
from benchmarks.crop_scenes import SIZE_BINS, HardScenes, compose_hard, face_settings  # noqa: E402


def astronaut_face() -> np.ndarray:
    """The astronaut's face, cropped FER-tight (brows to chin), as a 48x48 grey face."""
    gray = cv2.cvtColor(np.ascontiguousarray(skdata.astronaut()[:, :, ::-1]), cv2.COLOR_BGR2GRAY)
    cx, cy, side = 228, 120, 150
    crop = gray[cy - side // 2 : cy + side // 2, cx - side // 2 : cx + side // 2]
    return cv2.resize(crop, (48, 48), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def detector():
    from engine.faces.detect import DetectorOptions, create_detector

    det = create_detector(DetectorOptions(model="short", min_score=0.5, video=False))
    yield det
    det.close()


def test_hard_scenes_sizes_frames_and_jpeg_share():
    faces = np.stack([astronaut_face()] * 120)
    scenes = compose_hard(faces, np.random.default_rng(0), HardScenes())
    assert [i for s in scenes for i, _ in s.placed] == list(range(120)), "every face placed once, in order"
    sides = []
    for s in scenes:
        assert s.frame.shape == (480, 640, 3) and s.frame.dtype == np.uint8 and 1 <= len(s.placed) <= 3
        assert s.background in {b.rsplit(".", 1)[0] for b in crop_scenes.BACKGROUNDS}
        assert s.jpeg is None or 40 <= s.jpeg <= 90
        boxes = [b for _, b in s.placed]
        for x, y, w, h in boxes:
            assert 64 <= w == h <= 256 and x >= 0 and y >= 0 and x + w <= 640 and y + h <= 480
            sides.append(w)
        for a in range(len(boxes)):  # no two faces overlap
            for b in range(a + 1, len(boxes)):
                (ax, ay, aw, _), (bx, by, bw, _) = boxes[a], boxes[b]
                assert ax + aw <= bx or bx + bw <= ax or ay + aw <= by or by + bw <= ay
    assert min(sides) < 91 and max(sides) > 180, "the sizes span the bins"
    jpeg = np.mean([s.jpeg is not None for s in scenes])
    blur = np.mean([s.blurred for s in scenes])
    assert 0.3 <= jpeg <= 0.7 and 0.3 <= blur <= 0.7, (jpeg, blur)
    st = face_settings(scenes, 120)
    assert set(np.unique(st["size"])) <= set(range(len(SIZE_BINS))) and st["jpeg"].any() and (~st["jpeg"]).any()
    again = compose_hard(faces, np.random.default_rng(0), HardScenes())
    assert all(np.array_equal(a.frame, b.frame) and a.placed == b.placed for a, b in zip(scenes, again)), "seeded"


@pytest.mark.parametrize("color", crop_scenes.COLORS)
def test_hard_scenes_keep_the_face_the_engine_sees(color):
    """The face square, made 48x48 grey again, is the FER face (skin colour keeps the luma); without JPEG."""
    face = astronaut_face()
    cfg = HardScenes(jpeg_share=0.0, color=color, per_frame=(1, 1))
    for s in compose_hard(np.stack([face] * 6), np.random.default_rng(1), cfg):
        [(_, (x, y, w, h))] = s.placed
        back = cv2.resize(cv2.cvtColor(s.frame[y : y + h, x : x + w], cv2.COLOR_BGR2GRAY), (48, 48), interpolation=cv2.INTER_AREA)
        assert np.abs(back.astype(int) - face).mean() < 6


def test_hard_backgrounds_are_face_free(detector):
    """Each packaged photo, whole and as the composer cuts it (sharp and blurred), has no face for the
    real detector; the same detector does find the astronaut's tight face pasted into such a frame."""
    for name, photo in crop_scenes.load_backgrounds():
        assert detector.detect(photo) == [], name
    faces = np.stack([astronaut_face()] * 6)
    scenes = compose_hard(faces, np.random.default_rng(3), HardScenes(size=(200, 240), per_frame=(1, 1), jpeg_share=0.0), screen=detector)
    found = sum(len(detector.detect(s.frame)) for s in scenes)
    assert found >= 4, "a large tight face is found: the empty backgrounds mean something"


def test_hard_scene_backgrounds_screened_by_the_detector(detector):
    """A crop of a photo can still fire the detector now and then (coffee, coins, the motorcycle): with
    `screen` the composer redraws such a background, so no detection lies outside the placed faces."""
    faces = np.stack([astronaut_face()] * 10)
    scenes = compose_hard(faces, np.random.default_rng(4), HardScenes(jpeg_share=0.0), screen=detector)
    for s in scenes:
        for d in detector.detect(s.frame):
            cx, cy = d.box[0] + d.box[2] / 2, d.box[1] + d.box[3] / 2
            assert any(x <= cx <= x + w and y <= cy <= y + h for _, (x, y, w, h) in s.placed), (s.background, d)


def test_match_gives_each_face_its_best_detection_once():
    """crop_scenes.match (crop_agreement and crop_misses): the best-scoring detection whose centre lies in
    the true box, one detection per face; a face with none, or whose detection another face took, gets None."""
    from engine.core.types import Detection

    dets = [Detection((0, 0, 20, 20), 0.6), Detection((2, 2, 20, 20), 0.9), Detection((200, 200, 10, 10), 0.99),
            Detection((100, 100, 40, 40), 0.4)]
    boxes = [(0, 0, 30, 30), (5, 5, 30, 30), (90, 90, 60, 60), (300, 300, 10, 10)]
    assert crop_scenes.match(dets, boxes) == [1, 0, 3, None]
    assert crop_scenes.match(dets, boxes[1:2]) == [1]
    assert crop_scenes.match([], boxes) == [None] * 4


def test_crop_agreement_hard_writes_per_setting_results(fer_root, tmp_path):
    out = tmp_path / "hard.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "crop_agreement.py"), "--scenes", "hard",
                           "--model", str(REPO / "engine" / "zoo" / "emonet_f"), "--data", str(fer_root), "--n", "24",
                           "--margins", "0.1,0.25", "--shifts=-0.05", "--align", "on", "--json", str(out), "--md", str(tmp_path / "hard.md")],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(out.read_text())
    assert res["faces"] == 24 and res["params"]["scenes"] == "hard" and res["params"]["size"] == [64, 256]
    assert res["scenes"]["width"] == 640 and res["scenes"]["size_bins"] == ["64-90", "91-127", "128-180", "181-256"]
    assert len(res["settings"]) == 4 * 2 * 2 and sum(r["faces"] for r in res["settings"]) == 24
    assert [r["size"] for r in res["by_size"]] == res["scenes"]["size_bins"] and set(res["miss_rate_by_size"]) == set(res["scenes"]["size_bins"])
    assert {r["background"] for r in res["by_background"]} == {"sharp", "blur"} and {r["jpeg"] for r in res["by_jpeg"]} == {"yes", "no"}
    keys = {"size", "background", "jpeg", "faces", "detected", "miss_rate", "direct_accuracy", "oracle_agreement",
            "agreement_default", "engine_accuracy_default"}
    for r in res["settings"] + res["by_size"]:
        assert keys <= set(r), r
    assert sum(r["detected"] for r in res["by_size"]) == res["detected"]
    md = (tmp_path / "hard.md").read_text()
    assert "hard scenes (640x480" in md and "Detector miss rate by face side" in md and "| 64-90 | sharp | no |" in md


def test_crop_agreement_says_when_the_shared_faces_are_missing(tmp_path, monkeypatch, capsys):
    import benchmarks.crop_agreement as ca
    from engine.core.errors import cli_main

    missing = tmp_path / "shared" / "data" / "fer2013"
    monkeypatch.setattr(ca, "DEFAULT_DATA", missing)
    assert cli_main(ca.main, ["--scenes", "hard", "--data", str(missing)]) == 2
    assert "FER2013 faces are missing" in capsys.readouterr().err


def test_portraits_with_their_real_context_keep_the_same_face_square():
    """context "photo": the 72x72 portrait cut is placed so that its middle 48x48 is the FER-tight face."""
    tight, wide = crop_scenes.portrait_faces(context=False), crop_scenes.portrait_faces(context=True)
    assert all(t.shape == (48, 48) for t in tight) and all(w.shape == (72, 72) for w in wide)
    for t, w in zip(tight, wide):
        assert np.abs(cv2.resize(w[12:60, 12:60], (48, 48)).astype(int) - t).mean() < 8
    cfg = HardScenes(context="photo", jpeg_share=0.0, color="gray", per_frame=(1, 1))
    for s in compose_hard(np.stack(wide * 2), np.random.default_rng(5), cfg):
        [(i, (x, y, side, _))] = s.placed
        back = cv2.resize(cv2.cvtColor(s.frame[y : y + side, x : x + side], cv2.COLOR_BGR2GRAY), (48, 48), interpolation=cv2.INTER_AREA)
        assert np.abs(back.astype(int) - tight[i % 2]).mean() < 10


def test_crop_misses_reports_every_configuration(fer_root, tmp_path):
    out = tmp_path / "misses.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "crop_misses.py"), "--data", str(fer_root), "--n", "12",
                           "--portraits", "6", "--detectors", "short", "--contexts", "none,blur", "--colors", "skin", "--json", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(out.read_text())
    assert [(c["detector"], c["context"]) for c in res["configs"]] == [("short", "none"), ("short", "blur")]
    assert [c["context"] for c in res["portraits"]] == ["none", "photo"] and res["portraits"][0]["faces"] == 6
    for c in res["configs"] + res["portraits"]:
        assert set(c["miss_rate"]) == {"all", "64-90 px", "91-127 px", "128-180 px", "181-256 px", "sharp", "blurred", "no jpeg", "jpeg"}
        assert c["miss_rate_at_0.3"]["all"] <= c["miss_rate"]["all"]
    assert "portraits, photo" in proc.stdout
