"""`mirasol-edge export` and `mirasol-edge inspect`: progress, replacing, and the errors a user can cause."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import tiny_model
from mirasol_edge.checkpoint import save_checkpoint
from mirasol_edge.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, tiny_model())
    return path


@pytest.fixture(scope="module")
def bundle(checkpoint, tmp_path_factory):
    """(bundle dir, output) of `export --force --json` over an older bundle (which it replaces)."""
    out = tmp_path_factory.mktemp("cli") / "bundle"
    out.mkdir()
    (out / "manifest.json").write_text('{"format": "mirasol-edge-bundle/1", "config": {}, "chunk": {}, "files": {}, "components": {}}')
    (out / "stale.onnx").write_text("from an older export")
    report = tmp_path_factory.mktemp("report") / "export.json"
    result = runner.invoke(app, ["export", str(checkpoint), str(out), "--force", "--json", str(report)])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_export_json_lists_the_files_written_and_the_validation(bundle):
    out, output = bundle
    report = json.loads(Path(output.splitlines()[-1].removeprefix("wrote ")).read_text())
    assert report["bundle"] == str(out) and report["precision"] == "fp32" and report["opset"] == 23
    assert report["files"] == {p.name: p.stat().st_size for p in out.iterdir() if p.name != "manifest.json"}
    assert report["total_bytes"] == sum(report["files"].values())
    assert set(report["validation"]) == {"audio_extractor", "video_extractor", "combiner", "temporal_decoder",
                                         "context_cross_kv", "context_decoder"}
    for outputs in report["validation"].values():
        assert outputs and all(0 <= v["max_abs"] <= v["limit"] for v in outputs.values())


def test_inspect_json_reports_what_it_prints(bundle, tmp_path):
    out, _ = bundle
    report = tmp_path / "inspect.json"
    result = runner.invoke(app, ["inspect", str(out), "--json", str(report)])
    assert result.exit_code == 0, result.output
    inspected = json.loads(report.read_text())
    assert (inspected["precision"], inspected["opset"], inspected["bad_files"]) == ("fp32", 23, [])
    assert inspected["components"]["combiner"]["files"] == {"combiner.onnx": "ok"}
    assert inspected["total_bytes"] == sum(c["bytes"] for c in inspected["components"].values())
    assert inspected["components"]["temporal_decoder"]["inputs"]["chunk_position"]["dtype"] == "int64"


def listing(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def test_export_prints_one_line_per_component(bundle):
    out, output = bundle
    for name in ("audio_extractor", "video_extractor", "combiner", "temporal_decoder", "context_cross_kv", "context_decoder"):
        assert any(line.startswith(name) and " s " in line for line in output.splitlines()), name
    assert (out / "manifest.json").is_file()


def test_inspect_lists_components_and_checks_every_sha256(bundle):
    out, _ = bundle
    result = runner.invoke(app, ["inspect", str(out)])
    assert result.exit_code == 0, result.output
    assert "precision fp32, opset 23" in result.output
    assert "in  chunk_position   int64    [batch]" in result.output
    assert "every sha256 matches" in result.output


def test_inspect_reports_a_changed_file_and_fails(bundle, tmp_path):
    import shutil

    copy = shutil.copytree(bundle[0], tmp_path / "copy")
    with open(copy / "combiner.onnx", "r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))
    result = runner.invoke(app, ["inspect", str(copy)])
    assert result.exit_code == 1
    assert "sha256 CHANGED" in result.output and "missing or changed: combiner.onnx" in result.output


def test_inspect_imports_no_torch(bundle):
    code = (
        "import sys\nfrom mirasol_edge.cli import app\n"
        f"try:\n    app(['inspect', {str(bundle[0])!r}])\nexcept SystemExit as e:\n    assert e.code in (0, None), e.code\n"
        "assert 'torch' not in sys.modules, 'inspect imported torch'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_force_replaced_the_older_bundle_and_left_nothing_beside_it(bundle):
    out, _ = bundle
    assert not (out / "stale.onnx").exists() and (out / "manifest.json").is_file()
    assert [p.name for p in out.parent.iterdir()] == ["bundle"]  # no staging directory, no old copy


def make_text_file(tmp_path):
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    return tmp_path / "notes.pt"


def make_full_dir(tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x.txt").write_text("x")
    return tmp_path / "taken"


@pytest.mark.parametrize(
    "case, expected",
    [
        ("missing checkpoint", "does not exist"),
        ("not a checkpoint", "is not a mirasol-edge checkpoint"),
        ("non-empty out dir", "exists and is not empty; pass --force"),
        ("--force on a directory that is not a bundle", "is not a bundle; --force only replaces a bundle"),
        ("out dir under a file", "cannot write to"),
        ("opset too old", "opset 17 is not supported; choose one from 18 to 25"),
        ("opset too new", "opset 99 is not supported"),
        ("unknown precision", "--precision must be one of fp32, fp16, int8"),
    ],
)
def test_bad_input_is_one_sentence_with_no_traceback_and_nothing_written(case, expected, checkpoint, tmp_path):
    out, args = tmp_path / "bundle", []
    ckpt = checkpoint
    if case == "missing checkpoint":
        ckpt = tmp_path / "nope.pt"
    elif case == "not a checkpoint":
        ckpt = make_text_file(tmp_path)
    elif case == "non-empty out dir":
        out = make_full_dir(tmp_path)
    elif case == "--force on a directory that is not a bundle":
        out, args = make_full_dir(tmp_path), ["--force"]
    elif case == "out dir under a file":
        out = make_text_file(tmp_path) / "bundle"
    elif case == "opset too old":
        args = ["--opset", "17"]
    elif case == "opset too new":
        args = ["--opset", "99"]
    elif case == "unknown precision":
        args = ["--precision", "int4"]
    before = listing(tmp_path)
    result = runner.invoke(app, ["export", str(ckpt), str(out), *args])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], result.output
    assert "Traceback" not in result.output
    assert listing(tmp_path) == before


def test_inspect_of_a_directory_that_is_not_a_bundle_is_named(tmp_path):
    result = runner.invoke(app, ["inspect", str(tmp_path)])
    assert result.exit_code == 2 and "manifest.json is missing" in result.output
