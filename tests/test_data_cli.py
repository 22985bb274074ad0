"""`mirasol-edge data synth` writes n .mp4 clips and their manifest, matching the preset's chunk spec."""

import json

from typer.testing import CliRunner

from mirasol_edge.cli import app
from mirasol_edge.config import preset
from mirasol_edge.data.manifest import load_manifest
from mirasol_edge.runtime.media import probe


def test_data_synth_writes_n_clips_and_a_manifest(tmp_path):
    out = tmp_path / "set"
    result = CliRunner().invoke(app, ["data", "synth", str(out), "--n", "2", "--seed", "4", "--preset", "tiny",
                                      "--max-seconds", "5", "--json", str(tmp_path / "synth.json")])
    assert result.exit_code == 0, result.output
    clips = sorted((out / "clips").glob("*.mp4"))
    assert len(clips) == 2
    rows = load_manifest(out / "manifest.jsonl")
    assert {r.video for r in rows} == {c.resolve() for c in clips} and len(rows) >= 22
    report = json.loads((tmp_path / "synth.json").read_text())
    assert (report["clips"], report["questions"], report["manifest"]) == (2, len(rows), str(out / "manifest.jsonl"))
    spec = preset("tiny").chunk
    assert json.loads((out / "spec.json").read_text())["spec"] == spec.to_dict()
    info = probe(clips[0])
    assert (info["width"], info["fps"], info["sample_rate"]) == (spec.frame_size, spec.fps, spec.sample_rate)


def test_data_synth_refuses_bad_options(tmp_path):
    result = CliRunner().invoke(app, ["data", "synth", str(tmp_path / "x"), "--n", "0"])
    assert result.exit_code == 2 and "--n" in result.output
    result = CliRunner().invoke(app, ["data", "synth", str(tmp_path / "x"), "--n", "1", "--preset", "huge"])
    assert result.exit_code == 2 and "unknown preset" in result.output
