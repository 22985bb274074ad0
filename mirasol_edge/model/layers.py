"""Transformer building blocks with explicit caches (tensors in, tensors out; no hidden state)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def rotary(positions: Tensor, head_dim: int, base: float = 10_000.0) -> tuple[Tensor, Tensor]:
    """cos, sin of rotary embeddings for `positions` (...) -> each (..., head_dim // 2)."""
    inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32, device=positions.device) / head_dim)
    angles = positions.float()[..., None] * inv_freq
    return angles.cos(), angles.sin()


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate x (B, h, N, hd) by the angles of each of its N positions."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class MultiHeadAttention(nn.Module):
    """Attention whose keys/values are explicit (B, h, N, hd) tensors, so they can be cached."""

    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.query = nn.Linear(d_model, d_model)
        self.key_value = nn.Linear(d_model, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def split_heads(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        return x.view(b, n, self.n_heads, d // self.n_heads).transpose(1, 2)  # (B, h, N, hd)

    def keys_values(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, N, D) -> keys, values (B, h, N, hd)."""
        k, v = self.key_value(x).chunk(2, dim=-1)
        return self.split_heads(k), self.split_heads(v)

    def attend(self, x: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, rope=None) -> Tensor:
        """Queries from x (B, T, D) over k, v (B, h, N, hd); mask (T, N) or (B, 1, T, N), True = attend;
        rope: cos, sin (T, hd/2) or (B, 1, T, hd/2)."""
        q = self.split_heads(self.query(x))
        if rope is not None:
            q = apply_rotary(q, *rope)
        if mask is not None:  # one row per query: ONNX's Attention op (opset 23) wants the query length spelled out
            mask = mask.expand(*mask.shape[:-2], q.shape[2], mask.shape[-1])
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        b, h, t, hd = y.shape
        return self.out(y.transpose(1, 2).reshape(b, t, h * hd))  # (B, h, T, hd) -> (B, T, D)

    def forward_self(self, x: Tensor, past: tuple[Tensor, Tensor] | None = None, mask=None, rope=None,
                     write: Tensor | None = None, attend_cache: bool = False):
        """Self-attention of x (B, T, D).

        Without `past` (training, whole sequences): over x itself; returns (y, (keys, values)) of x,
        each (B, h, T, hd). With a fixed-size cache `past` (key, value) (B, h, C, hd), x's keys/values
        are written into it at positions `write` (B, T), giving present, shaped as past (gpt-fast's
        static cache); the queries attend to [past; x] (mask (B, 1, T, C + T)), or with attend_cache
        to present itself (mask (B, 1, T, C): no concatenation, for caches where x's positions hold
        nothing any query still needs). Returns (y, present).
        """
        k, v = self.keys_values(x)
        if rope is not None:
            k = apply_rotary(k, *rope)  # keys are cached already rotated: positions stay absolute
        if past is None:
            return self.attend(x, k, v, mask, rope), (k, v)
        present = write_cache(past[0], k, write), write_cache(past[1], v, write)
        if attend_cache:
            return self.attend(x, *present, mask, rope), present
        return self.attend(x, torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2), mask, rope), present


def write_cache(cache: Tensor, new: Tensor, write: Tensor) -> Tensor:
    """cache (B, h, C, hd) with new (B, h, T, hd) written at positions write (B, T) of each row."""
    b, h = new.shape[:2]
    rows = torch.arange(b, device=new.device)[:, None, None]  # (B, 1, 1)
    heads = torch.arange(h, device=new.device)[None, :, None]  # (1, h, 1)
    # Exported as ScatterND, which copies hd-long rows (ScatterElements, element by element, was slower).
    return cache.index_put((rows, heads, write[:, None, :]), new)


class MLP(nn.Sequential):
    def __init__(self, d_model: int, ratio: int):
        super().__init__(nn.Linear(d_model, ratio * d_model), nn.GELU(), nn.Linear(ratio * d_model, d_model))


class Block(nn.Module):
    """Pre-norm transformer block; self-attention with an optional cache, optional cross-attention."""

    def __init__(self, d_model: int, n_heads: int, mlp_ratio: int = 4, cross: bool = False):
        super().__init__()
        self.attn_norm = nn.LayerNorm(d_model)
        self.attn = MultiHeadAttention(d_model, n_heads)
        self.cross_norm = nn.LayerNorm(d_model) if cross else None
        self.cross_attn = MultiHeadAttention(d_model, n_heads) if cross else None
        self.mlp_norm = nn.LayerNorm(d_model)
        self.mlp = MLP(d_model, mlp_ratio)

    def forward(self, x: Tensor, mask=None, rope=None, past=None, cross=None, cross_mask=None, write=None,
                attend_cache: bool = False, cross_group: int = 1):
        """x (B, T, D); past: (key, value) each (B, h, N, hd); write (B, T): where x goes in past
        (see MultiHeadAttention.forward_self); cross: (key, value) each (B / G, h, N, hd), G = cross_group
        consecutive rows of x sharing one row of it. Returns (x, present)."""
        y, present = self.attn.forward_self(self.attn_norm(x), past, mask, rope, write, attend_cache)
        x = x + y
        if self.cross_attn is not None:
            y = self.cross_norm(x)
            if cross_group > 1:  # queries attend independently: G rows' queries in one row, (B, T, D) -> (B / G, G*T, D)
                b, t, d = y.shape
                x = x + self.cross_attn.attend(y.reshape(b // cross_group, cross_group * t, d), *cross, mask=cross_mask).reshape(b, t, d)
            else:  # no reshape: the exported graphs (always G = 1) stay as they were
                x = x + self.cross_attn.attend(y, *cross, mask=cross_mask)
        return x + self.mlp(self.mlp_norm(x)), present


class Encoder(nn.Module):
    """A stack of blocks with full attention and a final norm: tokens (B, N, D) -> (B, N, D)."""

    def __init__(self, d_model: int, n_heads: int, layers: int, mlp_ratio: int = 4):
        super().__init__()
        self.blocks = nn.ModuleList(Block(d_model, n_heads, mlp_ratio) for _ in range(layers))
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        for block in self.blocks:
            x, _ = block(x, mask=mask)
        return self.norm(x)
