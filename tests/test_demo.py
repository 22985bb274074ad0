"""`mirasol-edge demo` end to end, in its reduced mode (a few steps instead of minutes)."""

import json

from typer.testing import CliRunner

from mirasol_edge.cli import app


def test_the_demo_trains_writes_an_mp4_and_answers_its_questions(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--steps", "5", "--held-out", "2", "--out", str(out), "--json", str(tmp_path / "demo.json")])
    assert result.exit_code == 0, result.output
    assert (out / "checkpoint.pt").is_file() and (out / "loss.png").is_file()
    clips = sorted((out / "held_out" / "clips").glob("*.mp4"))
    assert len(clips) == 2
    assert str(clips[0].resolve()) in result.output  # the clip it answers about
    assert "model:" in result.output and "right answer:" in result.output
    assert "held-out questions" in result.output and "baseline" in result.output
    report = json.loads((tmp_path / "demo.json").read_text())
    assert report["checkpoint"] == str(out / "checkpoint.pt") and report["clip"] == str(clips[0].resolve())
    assert report["evaluation"]["n_clips"] == 2 and report["answers"]
    assert all(a["correct"] == (a["answer"].strip().lower() == a["expected"].lower()) for a in report["answers"])
