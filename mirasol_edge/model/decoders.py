"""The two autoregressive parts of Mirasol3B: temporal (chunk latents) and context (text)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mirasol_edge.config import ModelConfig
from mirasol_edge.model.layers import Block, rotary

KV = tuple[Tensor, Tensor]  # key, value: each (B, h, N, hd)


class TemporalDecoder(nn.Module):
    """Block-causal transformer over chunk latents, with a KV cache and a next-chunk latent head.

    Full attention inside a chunk, causal across chunks, and a chunk sees at most
    `temporal_window` chunks before it. Rotary positions count chunks (attention sees chunk
    distances); a learned embedding adds each chunk's index since the start, clamped at the
    window, so an endless stream with a windowed cache stays in distribution.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d, m = cfg.d_model, cfg.combiner.latents
        self.latents_per_chunk, self.window = m, cfg.temporal_window
        self.head_dim = d // cfg.n_heads
        self.slot = nn.Parameter(torch.randn(m, d) * 0.02)  # which of the chunk's m latents
        # Which chunk since the start, counted up to the window (later chunks share the last entry):
        # "first", "last" and "before" questions need it, and rotary positions alone are relative.
        self.position = nn.Parameter(torch.randn(cfg.temporal_window, d) * 0.02)
        self.blocks = nn.ModuleList(Block(d, cfg.n_heads, cfg.mlp_ratio) for _ in range(cfg.temporal_layers))
        self.norm = nn.LayerNorm(d)
        self.next_latents = nn.Linear(d, d)  # predicts chunk k+1's latents from chunk k's features

    def forward(self, latents: Tensor, first_chunk: Tensor | int, past: list[KV] | None = None):
        """latents (B, K*m, D) of K consecutive chunks starting at chunk index `first_chunk`;
        past: per layer (key, value) (B, h, P, hd) of the chunks before (P a multiple of m).
        Returns features (B, K*m, D) and present per layer (B, h, P + K*m, hd).
        """
        m = self.latents_per_chunk
        n = latents.shape[1]
        p = 0 if past is None else past[0][0].shape[2]
        new_chunk = torch.arange(n, device=latents.device) // m  # chunk of each new token, from 0
        chunk = new_chunk + first_chunk  # (K*m,) the absolute chunk of each new token
        x = latents + self.slot.repeat(n // m, 1) + self.position[chunk.clamp(max=self.window - 1)]
        rope = rotary(chunk, self.head_dim)
        # Block-causal, windowed: counted from the oldest cached chunk, query chunk q sees chunks [q - W, q].
        query = new_chunk + p // m
        key = torch.arange(p + n, device=latents.device) // m
        mask = (key[None, :] <= query[:, None]) & (key[None, :] >= query[:, None] - self.window)  # (K*m, P+K*m)
        present = []
        for i, block in enumerate(self.blocks):
            x, kv = block(x, mask=mask, rope=rope, past=None if past is None else past[i])
            present.append(kv)
        return self.norm(x), present


class ContextDecoder(nn.Module):
    """Decoder-only text transformer: causal self-attention with a KV cache, and cross-attention to
    the temporal features of every chunk seen so far (their keys/values computed once per chunk)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d = cfg.d_model
        self.max_len = cfg.max_text_len
        self.embed = nn.Embedding(cfg.vocab_size, d)
        nn.init.normal_(self.embed.weight, std=0.02)  # tied output projection: N(0, 1) would start with huge logits
        self.position = nn.Parameter(torch.randn(cfg.max_text_len, d) * 0.02)
        self.blocks = nn.ModuleList(Block(d, cfg.n_heads, cfg.mlp_ratio, cross=True) for _ in range(cfg.context_layers))
        self.norm = nn.LayerNorm(d)

    def cross_keys_values(self, features: Tensor) -> list[KV]:
        """features (B, n, D) -> per layer (cross_key, cross_value) (B, h, n, hd). Depends on each
        feature alone, so a new chunk's entries are appended without recomputing older ones."""
        return [block.cross_attn.keys_values(features) for block in self.blocks]

    def forward(self, tokens: Tensor, cross: list[KV], past: list[KV] | None = None, cross_mask: Tensor | None = None):
        """tokens (B, T) following P cached tokens; cross: per layer (B, h, N, hd); past: per layer
        (B, h, P, hd); cross_mask (B, 1, 1, N) True where a feature may be attended (padding).
        Returns logits (B, T, vocab) and present per layer (B, h, P + T, hd)."""
        t = tokens.shape[1]
        p = 0 if past is None else past[0][0].shape[2]
        x = self.embed(tokens) + self.position[p : p + t]
        query = torch.arange(t, device=tokens.device) + p
        mask = torch.arange(p + t, device=tokens.device)[None, :] <= query[:, None]  # (T, P+T) causal
        present = []
        for i, block in enumerate(self.blocks):
            x, kv = block(x, mask=mask, past=None if past is None else past[i], cross=cross[i], cross_mask=cross_mask)
            present.append(kv)
        return self.norm(x) @ self.embed.weight.T, present  # output projection tied to the embedding
