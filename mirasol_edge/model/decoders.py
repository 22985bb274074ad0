"""The two autoregressive parts of Mirasol3B: temporal (chunk latents) and context (text).

Each has two ways through the same weights:
- `forward`: whole sequences at once (training, whole-clip evaluation), no cache;
- `step`: one chunk (temporal) or a few tokens (context) per stream, with fixed-size caches that
  go in and come out with the same shape (gpt-fast's static cache; docs/bundle.md). These are
  what the exported graphs run, and what `MirasolModel.push_chunk` / `generate` run in PyTorch.

Temporal and cross caches are rings of chunk slots: a cache of C positions holds C / m chunk
slots, chunk c goes into slot c mod (C / m), and after P chunks the first min(P, C / m) slots hold
the last chunks (attention is order-free: the keys carry their rotary positions, the features
their chunk index). The text self cache holds max_text_len positions, token t at position t.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mirasol_edge.config import ModelConfig
from mirasol_edge.model.layers import Block, rotary, write_cache

KV = tuple[Tensor, Tensor]  # key, value: each (B, h, N, hd)


def ring_slots_filled(cache_len: int, m: int, chunks: Tensor) -> Tensor:
    """(B, C) bool: which positions of a ring cache of C = slots * m positions hold one of the
    `chunks` (B,) chunks pushed so far (a slot fills once and stays filled)."""
    slot = torch.arange(cache_len, device=chunks.device) // m  # (C,) the chunk slot of each position
    return slot[None, :] < chunks[:, None]


def ring_write_positions(cache_len: int, m: int, chunk: Tensor) -> Tensor:
    """(B, m): the cache positions chunk `chunk` (B,) is written to: its slot, chunk mod (C / m)."""
    slots = torch.full((), cache_len // m, dtype=chunk.dtype, device=chunk.device)  # a tensor: exports with a symbolic cache_len
    slot = chunk % slots
    return slot[:, None] * m + torch.arange(m, device=chunk.device)


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

    def _inputs(self, latents: Tensor, chunk: Tensor) -> Tensor:
        """latents (B, N, D) of the chunks `chunk` (N,) or (B, N) -> with slot and position embeddings."""
        n = latents.shape[1]
        return latents + self.slot.repeat(n // self.latents_per_chunk, 1) + self.position[chunk.clamp(max=self.window - 1)]

    def forward(self, latents: Tensor, first_chunk: int = 0) -> Tensor:
        """Whole clip: latents (B, K*m, D) of K consecutive chunks from chunk `first_chunk` -> features (B, K*m, D)."""
        m, n = self.latents_per_chunk, latents.shape[1]
        chunk = torch.arange(n, device=latents.device) // m + first_chunk  # (K*m,) the chunk of each token
        x = self._inputs(latents, chunk)
        rope = rotary(chunk, self.head_dim)
        # Block-causal, windowed: query chunk q sees chunks [q - W, q].
        mask = (chunk[None, :] <= chunk[:, None]) & (chunk[None, :] >= chunk[:, None] - self.window)  # (K*m, K*m)
        for block in self.blocks:
            x, _ = block(x, mask=mask, rope=rope)
        return self.norm(x)

    def step(self, latents: Tensor, chunk: Tensor, past: list[KV]) -> tuple[Tensor, list[KV]]:
        """One chunk per stream, each at its own position.

        latents (B, m, D); chunk (B,) int64, the chunk's index in its stream (chunks pushed before it);
        past: per layer (key, value) (B, h, C, hd), a ring of C / m chunk slots (module docstring).
        The chunk attends to the filled slots and to itself, then is written into its slot.
        Returns features (B, m, D) and present per layer, shaped as past.
        """
        b, m = latents.shape[:2]
        c = past[0][0].shape[2]
        x = self._inputs(latents, chunk[:, None])  # position (B, 1, D) broadcast over the m latents
        cos, sin = rotary(chunk[:, None].expand(b, m), self.head_dim)  # (B, m, hd/2)
        rope = cos[:, None], sin[:, None]  # (B, 1, m, hd/2): the same angles for every head
        # [cached chunks; this chunk]: the ring holds at most the window, all of it visible.
        seen = torch.cat([ring_slots_filled(c, m, chunk), chunk.new_ones(b, m, dtype=torch.bool)], dim=1)  # (B, C + m)
        mask = seen[:, None, None, :]  # (B, 1, 1, C + m)
        write = ring_write_positions(c, m, chunk)  # (B, m)
        present = []
        for block, kv in zip(self.blocks, past):
            x, kv = block(x, mask=mask, rope=rope, past=kv, write=write)
            present.append(kv)
        return self.norm(x), present


class ContextDecoder(nn.Module):
    """Decoder-only text transformer: causal self-attention with a KV cache, and cross-attention to
    the temporal features of every chunk seen so far (their keys/values computed once per chunk)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d = cfg.d_model
        self.max_len = cfg.max_text_len
        self.latents_per_chunk = cfg.combiner.latents
        self.summary_after_window = cfg.summary_after_window
        self.embed = nn.Embedding(cfg.vocab_size, d)
        nn.init.normal_(self.embed.weight, std=0.02)  # tied output projection: N(0, 1) would start with huge logits
        self.position = nn.Parameter(torch.randn(cfg.max_text_len, d) * 0.02)
        self.blocks = nn.ModuleList(Block(d, cfg.n_heads, cfg.mlp_ratio, cross=True) for _ in range(cfg.context_layers))
        self.norm = nn.LayerNorm(d)

    def cross_keys_values(self, features: Tensor) -> list[KV]:
        """features (B, n, D) -> per layer (cross_key, cross_value) (B, h, n, hd). Depends on each
        feature alone, so a new chunk's entries are appended without recomputing older ones."""
        return [block.cross_attn.keys_values(features) for block in self.blocks]

    def summary_attended(self, chunks: Tensor, slots: int) -> Tensor:
        """chunks (B,) pushed to each stream, whose cross cache holds `slots` chunks -> (B,) bool: whether its
        questions attend to the summary (always, or with summary_after_window once a chunk has left the slots)."""
        return chunks > slots if self.summary_after_window else torch.ones_like(chunks, dtype=torch.bool)

    def write_cross(self, features: Tensor, chunk: Tensor, cross: list[KV]) -> list[KV]:
        """One chunk per stream into the cross cache: features (B, m, D) of chunk `chunk` (B,); cross per
        layer (B, h, C, hd), a ring of chunk slots like the temporal cache. Returns it with the chunk written."""
        write = ring_write_positions(cross[0][0].shape[2], self.latents_per_chunk, chunk)  # (B, m)
        return [(write_cache(k, nk, write), write_cache(v, nv, write))
                for (k, v), (nk, nv) in zip(cross, self.cross_keys_values(features))]

    def _logits(self, x: Tensor) -> Tensor:
        return self.norm(x) @ self.embed.weight.T  # output projection tied to the embedding

    def forward(self, tokens: Tensor, cross: list[KV], cross_mask: Tensor | None = None, questions_per_clip: int = 1) -> Tensor:
        """Whole sequences: tokens (B, T) from position 0; cross: per layer (C, h, N, hd) of C clips,
        B = C * questions_per_clip, rows [c*Q, (c+1)*Q) asking about clip c (its keys and values are
        attended once, not copied per question); cross_mask (C, 1, 1, N) True where a feature may be
        attended (padding). Returns logits (B, T, vocab)."""
        t = tokens.shape[1]
        assert tokens.shape[0] == cross[0][0].shape[0] * questions_per_clip, "B = C * questions_per_clip"
        x = self.embed(tokens) + self.position[:t]
        index = torch.arange(t, device=tokens.device)
        mask = index[None, :] <= index[:, None]  # (T, T) causal
        for block, kv in zip(self.blocks, cross):
            x, _ = block(x, mask=mask, cross=kv, cross_mask=cross_mask, cross_group=questions_per_clip)
        return self._logits(x)

    def step(self, tokens: Tensor, position: Tensor, past: list[KV], cross: list[KV], chunks: Tensor,
             summary: list[KV] | None = None):
        """Tokens following the ones in the self cache, each row at its own position.

        tokens (B, T); position (B,) int64, where row b's first token goes (tokens before it are in past);
        past: per layer (key, value) (B, h, L, hd), L = max_text_len positions, position t holding token t;
        cross: per layer (B, h, C, hd), the stream's cross cache (a ring of chunk slots); chunks (B,) int64,
        chunks pushed to the stream (the first min(chunks, C / m) slots are filled); summary: per layer
        (B, h, S, hd), the keys and values of the memory past the window (model/summary.py), attended
        beside the cross cache (with summary_after_window only once chunks > C / m, a chunk has left the ring).
        Returns logits (B, T, vocab) and present per layer, shaped as past, the tokens written in.
        A prefill is a step from position 0; rows padded at the end write padding the next steps overwrite.
        """
        b, t = tokens.shape
        write = position[:, None] + torch.arange(t, device=tokens.device)  # (B, T)
        x = self.embed(tokens) + self.position[write]
        # The tokens are written first, then attend to the cache: each sees the positions up to its own.
        cache = torch.arange(past[0][0].shape[2], device=tokens.device)
        mask = (cache[None, None, :] <= write[:, :, None])[:, None]  # (B, 1, T, L)
        cross_mask = ring_slots_filled(cross[0][0].shape[2], self.latents_per_chunk, chunks)  # (B, C)
        if summary is not None:  # [summary; ring]: (B, h, S + C, hd)
            summary_mask = self.summary_attended(chunks, cross[0][0].shape[2] // self.latents_per_chunk)[:, None].expand(b, summary[0][0].shape[2])  # (B, S)
            cross = [(torch.cat([sk, k], dim=2), torch.cat([sv, v], dim=2)) for (k, v), (sk, sv) in zip(cross, summary)]
            cross_mask = torch.cat([summary_mask, cross_mask], dim=1)  # (B, S + C)
        cross_mask = cross_mask[:, None, None, :]  # (B, 1, 1, S + C)
        present = []
        for block, kv, ckv in zip(self.blocks, past, cross):
            x, kv = block(x, mask=mask, past=kv, cross=ckv, cross_mask=cross_mask, write=write, attend_cache=True)
            present.append(kv)
        return self._logits(x), present
