"""Combiners: a chunk's audio and video tokens -> m latent tokens (Mirasol3B, section 3.2)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mirasol_edge.config import ModelConfig
from mirasol_edge.model.layers import Encoder


class TransformerCombiner(nn.Module):
    """Concatenate [audio; video; m learned tokens], run a transformer, keep the last m outputs.

    In the first layer half of the learned tokens see only the audio tokens and half only the video
    tokens; later layers attend freely. Attending to both from the start, the queries all latched onto
    the audio (the easier signal) and the video's shape and motion stayed at chance even under direct
    supervision (RESULTS.md, "What changed"); with the split both are read from the first steps.
    """

    has_memory = False

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d, m = cfg.d_model, cfg.combiner.latents
        self.modality = nn.Parameter(torch.randn(2, d) * 0.02)  # audio, video
        self.queries = nn.Parameter(torch.randn(m, d) * 0.02)
        self.encoder = Encoder(d, cfg.n_heads, cfg.combiner.layers, cfg.mlp_ratio)

    def first_layer_mask(self, n_audio: int, n_video: int, device=None) -> Tensor:
        """(N, N) bool, True = attend, N = n_audio + n_video + m: the first m // 2 queries see no video, the rest no audio."""
        m = self.queries.shape[0]
        mask = torch.ones(n_audio + n_video + m, n_audio + n_video + m, dtype=torch.bool, device=device)
        if m > 1:
            audio_queries = n_audio + n_video + m // 2
            mask[n_audio + n_video:audio_queries, n_audio:n_audio + n_video] = False
            mask[audio_queries:, :n_audio] = False
        return mask

    def forward(self, audio_tokens: Tensor, video_tokens: Tensor, memory: Tensor | None = None):
        """audio (B, Na, D), video (B, Nv, D) -> latents (B, m, D), None."""
        b, na = audio_tokens.shape[:2]
        queries = self.queries.unsqueeze(0).expand(b, -1, -1)  # (B, m, D)
        x = torch.cat([audio_tokens + self.modality[0], video_tokens + self.modality[1], queries], dim=1)
        mask = self.first_layer_mask(na, video_tokens.shape[1], x.device)
        for i, block in enumerate(self.encoder.blocks):
            x, _ = block(x, mask=mask if i == 0 else None)
        return self.encoder.norm(x)[:, -self.queries.shape[0]:], None


class TokenSummarizer(nn.Module):
    """TokenLearner-style pooling: N tokens -> k weighted sums of them, weights learned per output."""

    def __init__(self, d_model: int, k: int):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.score = nn.Sequential(nn.Linear(d_model, d_model), nn.GELU(), nn.Linear(d_model, k))

    def forward(self, x: Tensor) -> Tensor:
        """x (B, N, D) -> (B, k, D)."""
        weights = self.score(self.norm(x)).softmax(dim=1)  # (B, N, k), each output sums to 1 over N
        return weights.transpose(1, 2) @ x  # (B, k, N) @ (B, N, D)


class TTMCombiner(nn.Module):
    """Token Turing Machine: read [memory; inputs] -> process -> write the new memory.

    The memory (B, M, D) is streamed state: it goes in and comes out of every chunk.
    The processed read tokens are the chunk's m latents.
    """

    has_memory = True

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d, c = cfg.d_model, cfg.combiner
        self.memory_size = c.memory
        self.kind = nn.Parameter(torch.randn(4, d) * 0.02)  # memory, audio, video, processed
        self.read = TokenSummarizer(d, c.latents)
        self.process = Encoder(d, cfg.n_heads, c.layers, cfg.mlp_ratio)
        self.write = TokenSummarizer(d, c.memory)

    def initial_memory(self, batch: int, device=None, dtype=torch.float32) -> Tensor:
        """The memory before the first chunk: zeros (B, M, D)."""
        return torch.zeros(batch, self.memory_size, self.kind.shape[1], device=device, dtype=dtype)

    def forward(self, audio_tokens: Tensor, video_tokens: Tensor, memory: Tensor):
        """audio (B, Na, D), video (B, Nv, D), memory (B, M, D) -> latents (B, m, D), memory_out (B, M, D)."""
        mem = memory + self.kind[0]
        inputs = torch.cat([audio_tokens + self.kind[1], video_tokens + self.kind[2]], dim=1)
        latents = self.process(self.read(torch.cat([mem, inputs], dim=1)))
        memory_out = self.write(torch.cat([mem, latents + self.kind[3], inputs], dim=1))
        return latents, memory_out


def build_combiner(cfg: ModelConfig) -> nn.Module:
    return TTMCombiner(cfg) if cfg.combiner.kind == "ttm" else TransformerCombiner(cfg)
