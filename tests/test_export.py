"""Export: every format converts, loads with its own runtime, matches Keras, takes dynamic
batches, carries its sidecar, and every bad input ends in one sentence and a non-zero exit."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]

_missing = [m for m in ("tensorflow", "tf2onnx", "onnx", "onnxruntime") if importlib.util.find_spec(m) is None]
if _missing:  # checked without importing: TensorFlow takes seconds to import at collection time
    pytest.skip(f"export needs {', '.join(_missing)} (pip install '.[train]')", allow_module_level=True)

from engine.classify.classifier import ClassifierOptions, create_classifier, open_model_file  # noqa: E402
from engine.core.contract import ModelSpec  # noqa: E402
from engine.core.errors import UserError, cli_main  # noqa: E402
from export.prepare import FORMATS  # noqa: E402
from export.report import REPORT_JSON, REPORT_MD  # noqa: E402
from export.run import export_model  # noqa: E402

FILES = {
    "tflite-fp32": "emotion_fp32.tflite",
    "tflite-fp16": "emotion_fp16.tflite",
    "tflite-int8": "emotion_int8.tflite",
    "onnx-fp32": "emotion_fp32.onnx",
    "onnx-int8": "emotion_int8.onnx",
}
#: max |probability difference| to Keras a tiny, barely trained model must stay within
TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2, "int8": 0.12}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, fer_root) -> Path:
    """A 1-epoch emonet_n on 30 faces per class: seconds to train, real weights and labels.json."""
    from models.options import TrainOptions
    from models.trainer import train

    out = tmp_path_factory.mktemp("run") / "tiny"
    opts = TrainOptions(data=str(fer_root), out=str(out), arch="emonet_n", epochs=1, limit=30, batch=32,
                        precision="float32", jit=False, augment="light")
    train(opts)
    return out / "emotion.keras"


@pytest.fixture(scope="module")
def exported(tiny_model, tmp_path_factory, fer_root):
    out = tmp_path_factory.mktemp("exp") / "export"
    report = export_model(tiny_model, out, calib=fer_root, calib_size=64, verify_size=200, check=False)
    return out, report


@pytest.fixture(scope="module")
def keras_ref(tiny_model, fer_root):
    """Validation faces and the Keras model's own probabilities for them."""
    import tensorflow as tf

    from engine.core.keras_io import load_keras
    from models.data import load_split

    model = load_keras(tiny_model)
    labels = tuple(ModelSpec.load(tiny_model.parent).labels)
    faces = load_split(fer_root, "validation", labels, quiet=True).x[:16]
    return faces, model(tf.constant(faces, tf.float32), training=False).numpy()


def test_writes_every_format_with_sidecar_and_reports(exported, tiny_model):
    out, report = exported
    for name in FILES.values():
        assert (out / name).is_file() and (out / name).stat().st_size > 10_000
    assert (out / "emotion.keras").read_bytes() == tiny_model.read_bytes()  # copied: --out differs
    assert (out / REPORT_JSON).is_file() and (out / REPORT_MD).is_file()
    assert not [p for p in out.parent.iterdir() if ".export-" in p.name], "temp folder left behind"

    src = ModelSpec.load(tiny_model.parent)
    spec = ModelSpec.load(out)
    assert spec.labels == src.labels and spec.arch == "emonet_n"
    import hashlib

    assert spec.source_sha256 == hashlib.sha256(tiny_model.read_bytes()).hexdigest()
    assert spec.extra["options"] == src.extra["options"]  # training provenance is kept
    arts = {a["format"]: a for a in spec.extra["export"]["artifacts"]}
    assert set(arts) == set(FORMATS)
    for fmt, a in arts.items():
        assert a["file"] == FILES[fmt]
        assert a["bytes"] == (out / a["file"]).stat().st_size
        assert a["sha256"] == hashlib.sha256((out / a["file"]).read_bytes()).hexdigest()
    assert arts["tflite-int8"]["input_dtype"] == "uint8"
    assert arts["tflite-int8"]["input_quantization"] == [1.0, 0]

    saved = json.loads((out / REPORT_JSON).read_text())
    assert set(saved["artifacts"]) == set(FORMATS) and saved["verify_faces"] == report["verify_faces"]
    md = (out / REPORT_MD).read_text()
    for fmt in FORMATS:
        assert f"| {fmt} |" in md
    for fmt in ("tflite-fp32", "tflite-fp16", "onnx-fp32"):
        a = report["artifacts"][fmt]  # a near tie of the barely trained model may swap in fp16
        assert a["agreement_clear"] >= 0.995 and a["agreement"] >= 0.9, a
    for r in report["artifacts"].values():
        assert r["ms_per_face"] > 0 and r["batch_1_4_max_dp"] <= 1e-3


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_artifact_runs_with_its_runtime_at_batch_1_and_4(exported, keras_ref, fmt):
    out, _ = exported
    faces, kprobs = keras_ref
    clf = open_model_file(out / FILES[fmt], threads=1)
    assert clf.backend == fmt.split("-")[0]
    p4 = clf.predict(faces[:4])
    p1 = clf.predict(faces[:1])
    p16 = clf.predict(faces)
    assert p4.shape == (4, len(clf.labels)) and p1.shape == (1, len(clf.labels))
    np.testing.assert_allclose(p1, p16[:1], atol=1e-5)
    np.testing.assert_allclose(p4, p16[:4], atol=1e-5)
    np.testing.assert_allclose(p16.sum(1), 1.0, atol=0.02)
    assert np.abs(p16 - kprobs).max() < TOLERANCE[fmt.split("-")[1]]


def test_int8_tflite_takes_raw_uint8_bytes(exported):
    from engine.core.litert import open_interpreter

    out, _ = exported
    it = open_interpreter(out / FILES["tflite-int8"], 1)[0]
    inp, outp = it.get_input_details()[0], it.get_output_details()[0]
    assert inp["dtype"] == np.uint8
    assert inp["quantization"] == (1.0, 0)
    assert outp["dtype"] == np.float32
    assert list(inp["shape_signature"]) == [-1, 48, 48, 1]


def test_onnx_batch_dimension_is_dynamic(exported):
    import onnxruntime as ort

    out, _ = exported
    for fmt in ("onnx-fp32", "onnx-int8"):
        sess = ort.InferenceSession(str(out / FILES[fmt]), providers=["CPUExecutionProvider"])
        assert sess.get_inputs()[0].shape == ["batch", 48, 48, 1]
        assert json.loads(sess.get_modelmeta().custom_metadata_map["labels"]) == ModelSpec.load(out).labels


@pytest.mark.parametrize("fmt", FORMATS)
def test_engine_finds_each_export_in_the_folder(exported, fmt):
    out, _ = exported
    backend, precision = fmt.split("-")
    clf = create_classifier(ClassifierOptions(model=out, backend=backend, precision=precision))
    assert clf.predict(np.zeros((2, 48, 48, 1), np.uint8)).shape == (2, len(clf.labels))


def test_failed_check_leaves_out_untouched(tiny_model, tmp_path, fer_root, monkeypatch):
    import dataclasses

    from engine.core import formats

    strict = dataclasses.replace(formats.ARTIFACTS["tflite-fp32"], min_agreement=1.01)  # no export can pass this
    monkeypatch.setitem(formats.ARTIFACTS, "tflite-fp32", strict)  # the table's limit is what the check reads
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(UserError, match=r"export check failed: tflite-fp32 agrees with Keras .*Nothing was written"):
        export_model(tiny_model, out, calib=fer_root, formats="tflite-fp32", calib_size=16, verify_size=32)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"], "temp folder left behind"


def test_defaults_out_to_model_folder_and_calib_to_training_data(tiny_model, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_model.parent, run_dir)
    before = ModelSpec.load(run_dir)
    (run_dir / "emotion_int8.onnx").write_bytes(b"an export of an earlier model")
    report = export_model(run_dir / "emotion.keras", formats=["tflite-fp32"], calib_size=16, verify_size=32, check=False)
    assert not (run_dir / "emotion_int8.onnx").exists(), "a stale export the new labels.json does not describe was kept"
    assert report["settings"]["calib"] == str(Path(before.extra["options"]["data"]))
    assert (run_dir / "emotion_fp32.tflite").is_file() and (run_dir / REPORT_JSON).is_file()
    after = ModelSpec.load(run_dir)
    assert after.extra["options"] == before.extra["options"] and after.extra["best_val_accuracy"] == before.extra["best_val_accuracy"]
    assert [a["format"] for a in after.extra["export"]["artifacts"]] == ["tflite-fp32"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    # another format of the SAME model later: the earlier export stays, and labels.json lists both
    export_model(run_dir / "emotion.keras", formats=["onnx-fp32"], calib_size=16, verify_size=32, check=False)
    assert (run_dir / "emotion_fp32.tflite").is_file() and (run_dir / "emotion_fp32.onnx").is_file()
    assert [a["format"] for a in ModelSpec.load(run_dir).extra["export"]["artifacts"]] == ["onnx-fp32", "tflite-fp32"]
    rows = json.loads((run_dir / REPORT_JSON).read_text())["artifacts"]
    assert sorted(rows) == ["onnx-fp32", "tflite-fp32"] and rows["tflite-fp32"]["kept_from_export"]
    assert "tflite-fp32" in (run_dir / REPORT_MD).read_text()


# ----------------------------------------------------------------------------- bad input


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "export", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def _one_line_error(proc: subprocess.CompletedProcess, needle: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert needle in lines[0], lines[0]


def test_cli_missing_model(tmp_path, fer_root):
    _one_line_error(_cli("--model", str(tmp_path / "nope.keras"), "--calib", str(fer_root)), "does not exist")


def test_cli_unknown_format(tiny_model, fer_root):
    _one_line_error(_cli("--model", str(tiny_model), "--calib", str(fer_root), "--formats", "tflite-int4"),
                    "unknown format 'tflite-int4'")


def test_cli_calibration_folder_missing_or_without_images(tiny_model, tmp_path):
    _one_line_error(_cli("--model", str(tiny_model), "--calib", str(tmp_path / "nodata")), "does not exist")
    empty = tmp_path / "empty"
    (empty / "train" / "happy").mkdir(parents=True)
    (empty / "notes.txt").write_text("no faces here")
    _one_line_error(_cli("--model", str(tiny_model), "--calib", str(empty)), "has no images")


def test_cli_file_that_is_not_a_keras_model(tmp_path, fer_root):
    junk = tmp_path / "junk.keras"
    junk.write_text("this is not a model")
    _one_line_error(_cli("--model", str(junk), "--calib", str(fer_root)), "is not a loadable Keras model")


def test_model_with_wrong_input_shape(tmp_path, fer_root, capsys):
    import keras

    from export.__main__ import main

    inp = keras.Input((64, 64, 3))
    out = keras.layers.Dense(7, activation="softmax")(keras.layers.GlobalAveragePooling2D()(inp))
    path = tmp_path / "rgb64.keras"
    keras.Model(inp, out).save(path)
    code = cli_main(main, ["--model", str(path), "--calib", str(fer_root)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0
    assert len(err) == 1 and err[0].startswith("error:") and "64x64x3" in err[0] and "48x48x1" in err[0], err
    assert not (tmp_path / "emotion_fp32.tflite").exists()
