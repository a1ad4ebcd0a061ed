"""The artefact table (engine/core/formats.py) is the one list: export, the engine, the benchmarks, the
wheel and the docs all agree with it. No TensorFlow needed: these read the table and the files."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from engine.core import formats
from engine.core.formats import ARTIFACTS, BACKENDS, PRECISIONS, artifact_name, by_kind, exported, names

REPO = Path(__file__).resolve().parents[1]
NUMBER_WORDS = {4: "four", 5: "five", 6: "six", 7: "seven"}


def readme_table() -> str:
    """README's format table as the table writes it (`python tests/test_formats.py` prints it)."""
    lines = ["| `--formats` | file | engine: runtime (`--backend` / `--precision`) | in the pip wheel |", "|---|---|---|---|"]
    lines += [f"| `{a.name}` | `{a.file}` | {a.runtime} (`{a.backend}` / `{a.precision}`) | {'yes' if a.in_wheel else 'no'} |"
              for a in exported()]
    return "\n".join(lines)


def test_every_file_follows_the_naming_rule_and_is_unique():
    files = [a.file for a in ARTIFACTS.values()]
    assert len(set(files)) == len(files) and len(set(names(exported=False))) == len(ARTIFACTS)
    for a in exported():
        assert a.name == f"{a.backend}-{a.precision}"
        assert a.file == f"emotion_{a.precision}{a.suffix}" == artifact_name(a.backend, a.precision)
    assert artifact_name("keras", "int8") == "emotion.keras"  # one Keras file, whatever --precision says
    assert artifact_name("onnx", "fp16") == "emotion_fp16.onnx" and by_kind("onnx", "fp16") is None  # not exported


def test_engine_choices_come_from_the_table():
    from engine.classify import classifier
    from engine.cli import options as cliopts

    assert BACKENDS == ("tflite", "onnx", "keras") and PRECISIONS == ("int8", "fp16", "fp32")
    assert classifier.BACKENDS is BACKENDS and classifier.PRECISIONS is PRECISIONS
    assert classifier.artifact_name is artifact_name  # the old import path still works
    assert cliopts.PRECISIONS is PRECISIONS


def test_a_missing_file_the_wheel_does_not_carry_says_where_it_is(tmp_path, monkeypatch):
    from engine.classify import classifier
    from engine.classify.classifier import ClassifierOptions, resolve_model
    from engine.core.errors import UserError

    monkeypatch.setattr(classifier, "ZOO", tmp_path)  # tmp_path/m plays a shipped model installed from the wheel
    (tmp_path / "m").mkdir()
    hint = "the pip package carries int8/fp16 files only"
    for backend, precision, hinted in (("tflite", "fp32", True), ("onnx", "fp32", True), ("keras", "int8", True),
                                       ("tflite", "int8", False), ("onnx", "fp16", False)):
        with pytest.raises(UserError, match=f"has no {artifact_name(backend, precision)} for backend {backend}") as err:
            resolve_model(ClassifierOptions(model=tmp_path / "m", backend=backend, precision=precision))
        assert (hint in str(err.value)) == hinted, (backend, precision, str(err.value))


def test_every_exported_row_has_a_converter_and_parity_limits():
    pytest.importorskip("numpy")
    from export.convert import CONVERTERS

    for a in exported():
        assert a.converter in CONVERTERS, a
        assert (a.min_agreement is None) != (a.max_drop is None), f"{a.name}: exactly one parity rule"
        assert (a.max_drop is not None) == (a.precision == "int8")
    # onnx-int8 quantizes the onnx-fp32 file of the same export: it must come after it
    assert names().index("onnx-int8") > names().index("onnx-fp32")


def test_export_cli_and_benchmarks_use_the_table():
    from export.__main__ import FORMAT_HELP, build_parser

    assert FORMAT_HELP.split(",") == list(names())
    assert build_parser().parse_args(["--model", "m.keras"]).formats == FORMAT_HELP
    src = (REPO / "benchmarks" / "zoo.py").read_text()
    assert "engine.core.formats" in src and "onnx\", \"fp16\"" not in src


def test_readme_lists_the_formats_of_the_table():
    readme = (REPO / "README.md").read_text()
    assert readme_table() in readme, "README's format table is out of date: python tests/test_formats.py prints it"
    n = len(names())
    assert f"# all {NUMBER_WORDS[n]} formats" in readme
    # "every export (`emotion_{fp32,fp16,int8}.tflite`, `emotion_{fp32,int8}.onnx`)" in Shipped models
    listed = set()
    for stem, alts, suffix in re.findall(r"`(emotion_)\{([a-z0-9,]+)\}(\.[a-z]+)`", readme):
        listed |= {f"{stem}{p}{suffix}" for p in alts.split(",")}
    assert listed == {a.file for a in exported()}
    wheel = "/".join(formats.wheel_precisions())
    assert f"carries {wheel} files only" in readme
    # the limits the README promises are the ones export checks
    assert f"below {formats.FLOAT_MIN_AGREEMENT * 100:.1f}%" in readme
    assert f"drops more than {formats.INT8_MAX_DROP * 100:.1f} points" in readme


def test_architecture_points_to_the_table():
    arch = (REPO / "docs" / "ARCHITECTURE.md").read_text()
    assert "engine/core/formats.py" in arch
    assert "FORMAT_HELP" not in arch and "FORMAT_KIND" not in arch  # the old tables are gone from the how-to


def test_wheel_globs_are_the_tables_in_wheel_column():
    data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["engine"]
    globs = [g for g in data if g.startswith("zoo/*/emotion")]
    shipped = {g.removeprefix("zoo/*/") for g in globs}
    assert len(shipped) == len(globs), "a glob that is not one file name per model"
    assert shipped == {a.file for a in ARTIFACTS.values() if a.in_wheel}
    # what the engine runs by default ships: --backend tflite --precision int8
    assert by_kind("tflite", "int8").in_wheel


if __name__ == "__main__":
    print(readme_table())
