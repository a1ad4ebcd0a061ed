"""benchmarks/crop_agreement.py: the engine's detect -> crop -> classify path against direct 48x48
classification of the same faces. Plumbing only (a tiny model): the numbers are the benchmark's job."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "crop_agreement.py"


def run(*args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=timeout)


def test_crop_agreement_json_and_table(tiny_export_dir, fer_root, tmp_path):
    out = tmp_path / "ca.json"
    proc = run("--model", tiny_export_dir, "--data", fer_root, "--n", 40, "--margins", "0.1,0.25", "--shifts=-0.05,0",
               "--align", "both", "--keep-roll", "0,8", "--roll", 20, "--json", out, "--md", tmp_path / "ca.md")
    assert proc.returncode == 0, proc.stderr
    res = json.loads(out.read_text())
    assert res["faces"] == 40 and 0 <= res["detected"] <= 40 and res["miss_rate"] == 1 - res["detected"] / 40
    # (align on: keep roll 0 and 8; align off) x 2 margins x 2 shifts
    assert len(res["rows"]) == 3 * 2 * 2 and sum(r["best"] for r in res["rows"]) == 1
    assert [r["default"] for r in res["rows"]].count(True) == 1  # margin 0.1, shift -0.05, align on, keep 8
    for r in res["rows"]:
        assert 0.0 <= r["agreement"] <= 1.0 and 0.0 <= r["engine_accuracy"] <= 1.0
    assert res["best"]["agreement"] == max(r["agreement"] for r in res["rows"])
    assert res["meets_target"] == (res["best"]["agreement"] >= res["target_agreement"])
    assert 0.0 <= res["oracle_agreement"] <= 1.0 and 0.0 <= res["flip_agreement"] <= 1.0
    # the split by the direct label's confidence covers every detected face once and adds up to the default row
    bins = res["by_confidence"]
    assert res["by_confidence_crop"] == "default" and abs(sum(b["share"] for b in bins) - 1.0) < 1e-9
    default_row = next(r for r in res["rows"] if r["default"])
    assert abs(sum(b["share"] * (b["agreement"] or 0.0) for b in bins) - default_row["agreement"]) < 1e-9
    assert abs(sum(b["share"] * (b["direct_accuracy"] or 0.0) for b in bins) - res["direct_accuracy_detected"]) < 1e-9
    assert "By the direct label's margin" in proc.stdout
    assert "Best crop: margin" in proc.stdout and "agree %" in proc.stdout
    md = (tmp_path / "ca.md").read_text()
    assert "| align (keep roll) |" in md and "| on (0) |" in md and "turned by up to 20 degrees" in md


def test_crop_agreement_frames_place_every_face_once():
    sys.path.insert(0, str(REPO))
    from benchmarks.crop_easy_scenes import compose_frames

    coarse = np.random.default_rng(0).integers(0, 256, (25, 6, 6), dtype=np.uint8)  # smooth, face-like frequencies
    faces = np.stack([cv2.resize(c, (48, 48), interpolation=cv2.INTER_CUBIC) for c in coarse])
    frames = compose_frames(faces, np.random.default_rng(1), (96, 160), (1, 3), 480, 360, "blur")
    placed = [i for _, p in frames for i, _ in p]
    assert placed == list(range(25))
    for frame, p in frames:
        assert frame.shape == (360, 480, 3) and 1 <= len(p) <= 3
        for i, (x, y, w, h) in p:
            assert 96 <= w == h <= 160 and x + w <= 480 and y + h <= 360
            back = cv2.resize(frame[y : y + h, x : x + w, 0], (48, 48), interpolation=cv2.INTER_AREA)
            assert np.abs(back.astype(int) - faces[i]).mean() < 12, "the face is there, upscaled"


def test_crop_agreement_roll_turns_faces_by_the_recorded_angle():
    sys.path.insert(0, str(REPO))
    from benchmarks.crop_easy_scenes import compose_frames

    bar = np.full((48, 48), 30, np.uint8)
    bar[22:26, 6:42] = 220  # a horizontal bar: its tilt after placing is the face's roll
    angles = np.zeros(12)
    frames = compose_frames(np.stack([bar] * 12), np.random.default_rng(3), (128, 128), (1, 1), 480, 360, "grey", 30.0, angles)
    assert np.all(np.abs(angles) <= 30) and np.abs(angles).max() > 5
    for frame, [(i, (x, y, w, h))] in frames:
        ys, xs = np.nonzero(frame[y : y + h, x : x + w, 0] > 150)
        slope = np.degrees(np.arctan(np.polyfit(xs, ys, 1)[0]))  # image y points down
        assert abs(slope + angles[i]) < 3, (slope, angles[i])


def test_crop_agreement_bad_input_is_one_line(tiny_export_dir, fer_root, tmp_path):
    cases = (
        (["--n", "0"], "--n: must be at least 1"),
        (["--size", "200-100"], "is not N or LO-HI"),
        (["--margins", "a,b"], "not a comma-separated list"),
        (["--views", "3"], "--views: invalid choice: 3"),
        (["--model", tmp_path / "none", "--data", fer_root], "does not exist"),
        (["--model", tiny_export_dir, "--data", tmp_path / "none"], "does not exist"),
        (["--model", tiny_export_dir, "--data", fer_root, "--size", "400"], "does not fit a 480x360 frame"),
    )
    for args, fragment in cases:
        proc = run(*args)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert lines[-1].startswith("error: ") and fragment in lines[-1], proc.stderr


def test_crop_agreement_refuses_flags_the_scenes_would_ignore(monkeypatch, capsys):
    """--context / --face-color read only by the hard scenes, --background / --roll only by the easy ones:
    given with the other kind, one `error:` line and exit 2; left at (or set to) their default, no error."""
    import benchmarks.crop_agreement as ca
    from engine.core.errors import cli_main

    cases = ((["--context", "blur"], "--context is for --scenes hard only"),
             (["--scenes", "easy", "--face-color", "gray"], "--face-color is for --scenes hard only"),
             (["--scenes", "hard", "--background", "blur"], "--background is for --scenes easy only"),
             (["--scenes", "hard", "--roll", "10"], "--roll is for --scenes easy only"))
    for argv, message in cases:
        assert cli_main(ca.main, argv) == 2, argv
        assert capsys.readouterr().err.strip().splitlines() == [f"error: {message}"]

    class Ran(Exception):
        pass

    def fake_run(args):
        raise Ran
    monkeypatch.setattr(ca, "run", fake_run)
    monkeypatch.setattr(ca.crop_scenes, "require_default_data", lambda data, default: None)
    for argv in (["--background", "blur", "--roll", "10"], ["--scenes", "hard", "--context", "blur", "--face-color", "gray"],
                 ["--scenes", "hard", "--background", "grey"], ["--context", "none"]):
        with pytest.raises(Ran):
            ca.main(argv)


def test_crop_agreement_ceiling_turns_a_rolled_face_back():
    """The ceiling's crop (true box + eye keypoints on the true angle, engine.faces.crop alignment) gives back
    the face that was placed, turned or not; with no roll it is the plain unaligned crop."""
    sys.path.insert(0, str(REPO))
    from benchmarks.crop_easy_scenes import compose_frames, eyes_at
    from engine.faces.crop import CropOptions, crop_faces
    from engine.core.types import Detection

    coarse = np.random.default_rng(5).integers(0, 256, (6, 6, 6), dtype=np.uint8)
    faces = np.stack([cv2.resize(c, (48, 48), interpolation=cv2.INTER_CUBIC) for c in coarse])
    for roll in (0.0, 30.0):
        angles = np.zeros(len(faces))
        frames = compose_frames(faces, np.random.default_rng(2), (128, 128), (1, 1), 480, 360, "grey", roll, angles)
        for frame, [(i, box)] in frames:
            det = Detection(box, 1.0, eyes_at(box, angles[i]))
            back = crop_faces(frame, [det], CropOptions(margin=0.0, shift_y=0.0, align=True, keep_roll_deg=0.0))[0, :, :, 0]
            core = (slice(12, 36), slice(12, 36))  # the centre: the turned corners come from the border
            assert np.abs(back[core].astype(int) - faces[i][core]).mean() < 4, (roll, angles[i])
            if roll == 0.0:
                plain = crop_faces(frame, [Detection(box, 1.0)], CropOptions(margin=0.0, shift_y=0.0, align=False))
                assert np.array_equal(back, plain[0, :, :, 0])
