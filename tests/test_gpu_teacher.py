"""The GPU teacher's data pack (models.gpu_teacher pack/load): what crosses to the GPU machine must
decode to exactly the faces training reads here. Training and ONNX export need PyTorch, which is
not a project dependency; they were checked on the lent GPU (see the tool's docstring)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from engine.contract import FER_CLASSES
from engine.errors import cli_main
from models.gpu_teacher import load, run


def _jpeg_tree(root: Path, faces: np.ndarray, per_class: int = 2) -> Path:
    """ROOT/{train,validation}/<class>/*.jpg written by cv2, as FER2013's files are 48x48 gray JPEGs."""
    k = 0
    for split in ("train", "validation"):
        for cls in FER_CLASSES:
            (root / split / cls).mkdir(parents=True)
            for j in range(per_class):
                cv2.imwrite(str(root / split / cls / f"{j}.jpg"), faces[k % len(faces)])
                k += 1
    return root


@pytest.fixture()
def faces(fer_root) -> np.ndarray:
    """30 real faces (FER2013's, or the packaged photos' crops on a fresh machine), 48x48 gray."""
    files = sorted(Path(fer_root, "train").rglob("*.*"))[:30]
    return np.stack([cv2.resize(cv2.imread(str(f), cv2.IMREAD_GRAYSCALE), (48, 48)) for f in files])


def test_pack_round_trips_the_decoded_faces_and_labels(tmp_path, faces):
    root = _jpeg_tree(tmp_path / "fer", faces)
    out = tmp_path / "fer.npz"
    assert cli_main(run, ["pack", "--data", str(root), "--out", str(out)]) == 0
    for split in ("train", "validation"):
        x, y = load(out, split)
        files = [(ci, f) for ci, c in enumerate(FER_CLASSES) for f in sorted((root / split / c).glob("*.jpg"))]
        assert x.shape == (len(files), 48, 48) and x.dtype == np.uint8
        assert y.tolist() == [ci for ci, _ in files]
        for got, (_, f) in zip(x, files):
            assert np.array_equal(got, cv2.imread(str(f), cv2.IMREAD_GRAYSCALE))
    # the shared header is stored once: the pack is smaller than the files it holds
    assert out.stat().st_size < sum(f.stat().st_size for f in root.rglob("*.jpg"))


def test_pack_refuses_a_file_with_another_header_and_a_missing_pack(tmp_path, faces, capsys):
    root = _jpeg_tree(tmp_path / "fer", faces)
    cv2.imwrite(str(root / "train" / "happy" / "big.jpg"), cv2.resize(faces[0], (64, 64)))
    assert cli_main(run, ["pack", "--data", str(root), "--out", str(tmp_path / "x.npz")]) == 2
    assert "another JPEG header" in capsys.readouterr().err
    assert cli_main(run, ["train", "--data", str(tmp_path / "none.npz"), "--out", str(tmp_path / "t.npz")]) == 2
    assert "no pack at" in capsys.readouterr().err
