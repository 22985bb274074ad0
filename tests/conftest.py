import numpy as np
import pytest
import torch

from mirasol_edge.config import CombinerConfig, preset
from mirasol_edge.model import MirasolModel


def tiny_config(combiner: str = "transformer", **overrides):
    return preset("tiny", combiner=CombinerConfig(kind=combiner), **overrides)


def tiny_model(combiner: str = "transformer", seed: int = 0, **overrides) -> MirasolModel:
    torch.manual_seed(seed)
    return MirasolModel(tiny_config(combiner, **overrides)).eval()


def random_chunks(cfg, batch: int, chunks: int, seed: int = 0):
    """waveform (B, K, S) f32 and frames (B, K, F, H, W, 3) u8 of noise."""
    g = torch.Generator().manual_seed(seed)
    s = cfg.chunk
    waveform = torch.randn(batch, chunks, s.samples_per_chunk, generator=g) * 0.1
    frames = torch.randint(0, 256, (batch, chunks, s.frames_per_chunk, s.frame_size, s.frame_size, 3), generator=g, dtype=torch.uint8)
    return waveform, frames


@pytest.fixture(params=["transformer", "ttm"])
def combiner_kind(request):
    return request.param


@pytest.fixture
def rng():
    return np.random.default_rng(0)
