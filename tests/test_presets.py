import pytest
import torch
from typer.testing import CliRunner

from mirasol_edge.cli import app
from mirasol_edge.config import PRESETS, ModelConfig, preset
from mirasol_edge.info import build_meta


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_gives_the_documented_shapes(name):
    cfg = preset(name)
    model = build_meta(cfg)  # meta device: shapes without memory, even for mirasol3b
    s, k = cfg.chunk, 2
    with torch.device("meta"):
        waveform = torch.zeros(1, k, s.samples_per_chunk)
        frames = torch.zeros(1, k, s.frames_per_chunk, s.frame_size, s.frame_size, 3, dtype=torch.uint8)
        assert model.audio_extractor(waveform[:, 0]).shape == (1, cfg.audio_tokens, cfg.d_model)
        assert model.video_extractor(frames[:, 0]).shape == (1, cfg.video_tokens, cfg.d_model)
        latents, features = model.encode(waveform, frames)
    assert latents.shape == (1, k, cfg.combiner.latents, cfg.d_model)
    assert features.shape == (1, k * cfg.combiner.latents, cfg.d_model)


def test_config_round_trips_through_a_dict():
    cfg = preset("small")
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


def test_info_prints_mirasol3b_at_about_three_billion_parameters():
    result = CliRunner().invoke(app, ["info", "--preset", "mirasol3b"])
    assert result.exit_code == 0, result.output
    billions = float(result.output.split("parameters:")[1].split()[0])
    print(result.output)
    assert abs(billions - 3.0) / 3.0 <= 0.15


def test_info_small_runs():
    result = CliRunner().invoke(app, ["info", "--preset", "small"])
    assert result.exit_code == 0, result.output
    assert "GFLOPs/chunk" in result.output


def test_unknown_preset_is_one_clear_line():
    result = CliRunner().invoke(app, ["info", "--preset", "huge"])
    assert result.exit_code == 2
    assert "unknown preset 'huge'" in result.output
