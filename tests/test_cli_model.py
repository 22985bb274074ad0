"""`info --json` reports what it prints; `init`'s video backbone options refuse bad input in one line."""

import json

import pytest
import torch
from typer.testing import CliRunner

from conftest import tiny_model
from mirasol_edge.cli import app

runner = CliRunner()


def test_info_json_reports_the_printed_figures(tmp_path):
    report = tmp_path / "info.json"
    result = runner.invoke(app, ["info", "--preset", "tiny", "--video-backbone", "r3d_18", "--json", str(report)])
    assert result.exit_code == 0, result.output
    info = json.loads(report.read_text())
    assert info["config"]["video"]["backbone"] == "r3d_18" and "video backbone r3d_18" in result.output
    assert info["tokens_per_chunk"] == {"audio": 10, "video": 4, "latents": 4}  # r3d_18: 4 frames of 32 px -> 1 x 2 x 2
    assert info["parameters"]["total"] == sum(n for name, n in info["parameters"].items() if name != "total")
    assert f"{info['parameters']['total']:,}" in result.output
    assert info["flops_per_chunk"]["chunk_total"] > info["flops_per_token"] > 0


def test_info_reads_a_checkpoint_with_a_summary_and_a_window_decoder(tmp_path):
    from mirasol_edge.checkpoint import save_checkpoint
    from mirasol_edge.train.memory import with_summary

    path = tmp_path / "memory.pt"
    save_checkpoint(path, with_summary(tiny_model(), 4, after_window=True, window_decoder=True))
    result = runner.invoke(app, ["info", "--checkpoint", str(path)])
    assert result.exit_code == 0, result.output
    assert "window_decoder" in result.output and "summary keys and values (once per question)" in result.output


def write_weights(path, state):
    torch.save(state, path)
    return path


@pytest.mark.parametrize(
    "case, expected",
    [
        ("weights without a torchvision backbone", "backbone weights need a torchvision video backbone"),
        ("unknown backbone", "--video-backbone must be one of tubelet, r3d_18, r2plus1d_18, mc3_18, got 'r3d'"),
        ("missing weights file", "do not exist; give a local state dict of torchvision's r3d_18 (nothing is downloaded)"),
        ("not a state dict", "is not a PyTorch state dict"),
        ("another net's weights", "is not a state dict of torchvision's r3d_18 (missing stem.0.weight"),
    ],
)
def test_bad_backbone_options_are_one_sentence_and_write_nothing(case, expected, tmp_path):
    weights = tmp_path / "weights.pth"
    backbone = ["--video-backbone", "r3d_18"]
    if case == "weights without a torchvision backbone":
        backbone = []
        write_weights(weights, {})
    elif case == "unknown backbone":
        backbone = ["--video-backbone", "r3d"]
    elif case == "not a state dict":
        weights.write_text("not weights")
    elif case == "another net's weights":
        write_weights(weights, {"conv.weight": torch.zeros(3)})
    result = runner.invoke(app, ["init", str(tmp_path / "ckpt.pt"), "--preset", "tiny", *backbone,
                                 "--video-backbone-weights", str(weights)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], result.output
    assert not (tmp_path / "ckpt.pt").exists()
