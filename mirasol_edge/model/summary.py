"""Memory past the window: a fixed-size summary of every chunk a stream has seen.

The temporal and cross caches are rings of the last `temporal_window` chunks, so without more a
question about minute one of a ten-minute stream finds nothing to attend to. `SummaryMemory`
keeps S tokens (B, S, D) that every chunk rewrites from its temporal features; the context
decoder cross-attends to them beside the window (decoders.ContextDecoder). They are streamed
state like the TTM memory: they go in and come out of every chunk with a fixed shape, so a
stream's memory stays bounded however long it runs, and a whole clip computes them with the
same recurrence, chunk by chunk (MirasolModel.summarize).

The update is a gated transformer read: the S tokens attend to [summary; the chunk's m
features], and a per-token gate mixes the result in. Closed gates copy the summary forward
unchanged, which is what lets a fact from chunk 3 survive to chunk 300 and lets the gradient
reach back that far (an LSTM's cell, in tokens). The gates start mostly closed, each token at
its own time scale (chrono initialisation, Tallec & Ollivier 2018): token 0 takes in 27 % of
each chunk, the last 0.7 %, so some tokens track the last seconds and some the whole stream,
and training moves each gate with what a chunk holds. Before the first chunk the summary is
zeros, as the runtime's new-stream state is.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mirasol_edge.config import ModelConfig
from mirasol_edge.model.layers import Block

GATE_BIAS = (-1.0, -5.0)  # the first and the last token's initial gate logit: sigmoid -> 0.27 ... 0.007


class SummaryMemory(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d = cfg.d_model
        self.tokens = cfg.summary_tokens
        self.kind = nn.Parameter(torch.randn(2 + cfg.summary_tokens, d) * 0.02)  # summary, features; then one per summary token
        self.block = Block(d, cfg.n_heads, cfg.mlp_ratio)
        self.norm = nn.LayerNorm(d)
        self.gate = nn.Linear(2 * d, 1, bias=False)
        nn.init.zeros_(self.gate.weight)
        self.gate_bias = nn.Parameter(torch.linspace(*GATE_BIAS, cfg.summary_tokens)[:, None])  # (S, 1)

    def initial(self, batch: int, device=None) -> Tensor:
        """The summary before the first chunk: zeros (B, S, D)."""
        return torch.zeros(batch, self.tokens, self.kind.shape[1], device=device)

    def forward(self, summary: Tensor, features: Tensor) -> Tensor:
        """summary (B, S, D), one chunk's temporal features (B, m, D) -> the next summary (B, S, D)."""
        s = self.tokens
        x = torch.cat([summary + self.kind[0] + self.kind[2:], features + self.kind[1]], dim=1)  # (B, S + m, D)
        x, _ = self.block(x)
        update = self.norm(x[:, :s])  # (B, S, D)
        gate = torch.sigmoid(self.gate(torch.cat([summary, update], dim=-1)) + self.gate_bias)  # (B, S, 1)
        return summary + gate * (update - summary)
