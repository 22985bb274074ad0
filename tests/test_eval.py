"""Evaluation on .mp4 clips from a manifest: exact match per family, beside the question-only baseline."""

import json

import pytest
import torch
from typer.testing import CliRunner

from conftest import tiny_model
from mirasol_edge.checkpoint import save_checkpoint
from mirasol_edge.cli import app
from mirasol_edge.data.manifest import load_manifest
from mirasol_edge.data.synth import FAMILIES, write_dataset
from mirasol_edge.evaluate import evaluate_manifest
from mirasol_edge.scoring import Prediction, format_table, summarize
from mirasol_edge.runtime.media import read_clip


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("eval")
    model = tiny_model(seed=3)
    save_checkpoint(root / "m.pt", model)
    manifest = write_dataset(root / "test", n_clips=3, seed=11, spec=model.cfg.chunk, min_seconds=4, max_seconds=6, progress=False)
    train = write_dataset(root / "train", n_clips=3, seed=12, spec=model.cfg.chunk, min_seconds=4, max_seconds=6, progress=False)
    return model, root / "m.pt", manifest, train


def test_batched_answers_equal_one_question_at_a_time(tiny_set):
    model, _, manifest, _ = tiny_set
    rows = load_manifest(manifest)
    summary, predictions = evaluate_manifest(model, rows, clips_per_batch=2)
    assert len(predictions) == len(rows) and summary["n_clips"] == 3
    for p in predictions[:: 3]:
        frames, waveform = read_clip(p.clip, model.cfg.chunk)
        alone = model.answer_clip(frames.reshape(-1, *frames.shape[2:]), waveform.reshape(-1), p.question)
        assert p.predicted == alone


def test_eval_cli_prints_the_table_and_writes_json(tiny_set, tmp_path):
    _, checkpoint, manifest, train = tiny_set
    out = tmp_path / "scores.json"
    result = CliRunner().invoke(app, ["eval", str(checkpoint), str(manifest), "--json", str(out), "--threads", "1"])
    assert result.exit_code == 0, result.output
    for family in FAMILIES:
        assert family in result.output
    assert "baseline %" in result.output and "overall" in result.output
    scores = json.loads(out.read_text())
    assert set(scores["families"]) == set(FAMILIES) and scores["n_clips"] == 3
    assert all(0 <= v["accuracy"] <= 1 and 0 <= v["baseline"] <= 1 for v in scores["families"].values())
    assert scores["baseline"] is not None and len(scores["templates"]) >= 11
    # the baseline learned on a train manifest instead of generated questions
    result = CliRunner().invoke(app, ["eval", str(checkpoint), str(manifest), "--baseline-manifest", str(train), "--threads", "1"])
    assert result.exit_code == 0, result.output


def test_eval_cli_names_a_missing_manifest(tiny_set, tmp_path):
    _, checkpoint, _, _ = tiny_set
    result = CliRunner().invoke(app, ["eval", str(checkpoint), str(tmp_path / "none.jsonl")])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_scores_and_table():
    preds = [
        Prediction("a", "q1", "red", "Red ", "video", "video_colour"),
        Prediction("a", "q2", "3", "2", "audio", "audio_beeps"),
        Prediction("b", "q1", "blue", "blue", "video", "video_colour"),
    ]
    s = summarize(preds, {"video": 0.2, "audio": 0.25})
    assert s["accuracy"] == pytest.approx(2 / 3) and s["families"]["video"]["accuracy"] == 1.0
    assert s["baseline"] == pytest.approx((0.2 * 2 + 0.25) / 3) and s["n_clips"] == 2
    table = format_table(s)
    assert "+80.0" in table and "-25.0" in table
    assert summarize(preds)["baseline"] is None and "-" in format_table(summarize(preds))


def test_a_bundle_evaluates_through_the_runtime_with_the_pytorch_answers(tmp_path):
    from runtime_bundles import trained

    from mirasol_edge.evaluate_runtime import evaluate_bundle

    model, bundle = trained()
    manifest = write_dataset(tmp_path / "set", n_clips=3, seed=21, spec=model.cfg.chunk, min_seconds=4, max_seconds=6, progress=False)
    rows = load_manifest(manifest)
    torch_summary, torch_predictions = evaluate_manifest(model, rows)
    runtime_summary, runtime_predictions = evaluate_bundle(bundle, rows, streams=2)  # a clip joins as another ends
    by_question = lambda predictions: {(p.clip, p.question): p.predicted for p in predictions}  # noqa: E731
    assert by_question(runtime_predictions) == by_question(torch_predictions)
    assert runtime_summary["accuracy"] == torch_summary["accuracy"]
