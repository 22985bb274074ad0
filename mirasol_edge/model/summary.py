"""Memory past the window: attention pooling over every chunk a stream has seen, computed online.

The temporal and cross caches are rings of the last `temporal_window` chunks, so without more a
question about minute one of a ten-minute stream finds nothing to attend to. `SummaryMemory`
keeps S summary tokens: token j is the softmax-weighted average, under its own learned query, of
the features of every chunk so far (keys and values carry the chunk's absolute time, so an average
also says when). The average is kept online, as flash attention keeps a softmax: per token the
normalised output so far and the log of its softmax denominator, (B, S, D + 1) in all, updated by
each chunk exactly (not approximately) and never growing. The context decoder cross-attends to the
S tokens beside the window (decoders.ContextDecoder).

Why not a recurrent summary: a gated transformer update of the summary from each chunk (an LSTM's
cell in tokens) was tried first and measured (RESULTS.md): trained through 80-200 chunks of
backpropagation it learned little past the window (59.0 % on 2-5 minute clips against 53.1 % for
the window alone). Pooling has no recurrence to learn through: every chunk's score gets its
gradient directly, as in ordinary attention, and a whole clip costs one attention, not K steps.

With summary_order R, each token also pools its chunk's time exactly beside its value (one more number
per token in the state), and the first R tokens carry which of the other R found something later and
which earlier than they did: token i adds, for each j, a learned embedding of the pair (i, j, later) or
(i, j, earlier), weighted by how sure the order of the two mean times is and by how much each found
(its weight off the null chunk). Why: the temporal decoder's features say which of two sounds came first
only when both lie within one window of each other (a later chunk attends to the earlier one); past
that, the answer needs two tokens' times compared, and no context decoder we trained learned to compare
them in stage 3's minutes, not even with the times exact in the tokens (RESULTS.md). An embedding of the
pair is read the way the decoder reads any content.

Before the first chunk the state is zeros, as the runtime's new-stream state is: an output of zeros
with a log-denominator of 0, i.e. one null chunk with score 0 and value 0 that every token may
attend to (an attention sink); the whole-clip pooling includes the same null chunk.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from mirasol_edge.config import ModelConfig

TIME_PERIODS = tuple(2.0 ** p for p in range(1, 14))  # chunks: 2 ... 8192 (at 1 s chunks, two hours)
TIME_UNIT = 64.0  # chunks: with summary_order a token pools t / TIME_UNIT (exact in float32 for years of chunks)
ORDER_CHUNKS = 0.5  # chunks: two mean times this far apart are ordered with weight sigmoid(1) = 0.73, 1.5 apart 0.95
MIN_MASS = 1e-2  # a token that found less than this reads its mean time as if it had found this much: no 0 / 0
ORDER_INIT = 0.1  # std of the pair embeddings: a tenth of a token's entries (norm about 11 at d 128); 0.5 measured worse (RESULTS.md)


def time_features(chunk: Tensor) -> Tensor:
    """chunk (...) int64 absolute chunk indices -> (..., 2 * len(TIME_PERIODS)) sines and cosines."""
    angles = chunk.float()[..., None] * torch.tensor([2 * math.pi / p for p in TIME_PERIODS], device=chunk.device)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def _logaddexp(a: Tensor, b: Tensor) -> Tensor:
    top = torch.maximum(a, b)
    return top + torch.log(torch.exp(a - top) + torch.exp(b - top))


class SummaryMemory(nn.Module):
    """The pooled entries are a chunk's m latents one by one (summary_pooling "latent") or the whole chunk,
    its m latents side by side ("chunk"): then a token's weight is per chunk and its value reads all m
    latents, where per latent a token could only pick the latent slots whose content its score found."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d = cfg.d_model
        self.tokens, self.width = cfg.summary_tokens, d
        self.entry_latents = cfg.combiner.latents if cfg.summary_pooling == "chunk" else 1  # latents per entry
        width_in = self.entry_latents * d
        self.queries = nn.Parameter(torch.randn(cfg.summary_tokens, d) * 0.02)
        self.norm_in = nn.LayerNorm(d)
        self.time = nn.Linear(2 * len(TIME_PERIODS), width_in)
        self.key = nn.Linear(width_in, d)
        self.value = nn.Linear(width_in, d)
        # whole chunks: a direct path from the chunk's time to its value, meant to keep "which came first"
        # readable beside the content of m latents; measured, it did not (RESULTS.md, v3 against v4)
        self.time_value = nn.Linear(2 * len(TIME_PERIODS), d) if self.entry_latents > 1 else None
        self.norm_out = nn.LayerNorm(d)
        self.order = cfg.summary_order
        self.time_columns = 1 if self.order else 0  # the pooled time, beside the value
        if self.order:  # [i, j]: what token i adds when token j found something after (before) its own
            self.after = nn.Parameter(torch.randn(self.order, self.order, d) * ORDER_INIT)
            self.before = nn.Parameter(torch.randn(self.order, self.order, d) * ORDER_INIT)

    def initial(self, batch: int, device=None) -> Tensor:
        """The state before the first chunk: zeros (B, S, D + T + 1), T = 1 pooled time with summary_order, else 0."""
        return torch.zeros(batch, self.tokens, self.width + self.time_columns + 1, device=device)

    def _scores_values(self, features: Tensor, chunk: Tensor) -> tuple[Tensor, Tensor]:
        """features (B, n, D) of chunks `chunk` (B, n), whole chunks in order -> scores (B, S, e), values
        (B, e, D + T) of the e = n / entry_latents entries (T = 1: their time, with summary_order)."""
        g = self.entry_latents
        b, n, d = features.shape
        time = time_features(chunk[:, ::g])  # (B, e, 2 * len(TIME_PERIODS))
        x = self.norm_in(features).reshape(b, n // g, g * d) + self.time(time)  # (B, n, D) -> (B, e, g*D): g latents per entry
        scores = torch.einsum("sd,bnd->bsn", self.queries, self.key(x)) / math.sqrt(self.width)
        values = self.value(x) if self.time_value is None else self.value(x) + self.time_value(time)
        if self.order:
            values = torch.cat([values, chunk[:, ::g, None].float() / TIME_UNIT], dim=-1)  # (B, e, D) -> (B, e, D + 1)
        return scores, values

    def forward(self, state: Tensor, features: Tensor, chunk: Tensor) -> Tensor:
        """One chunk per stream: state (B, S, D + T + 1), its features (B, m, D), chunk (B,) its index -> the next state."""
        output, log_norm = state[..., :-1], state[..., -1]  # (B, S, D + T), (B, S)
        scores, values = self._scores_values(features, chunk[:, None].expand(features.shape[:2]))
        new_log_norm = _logaddexp(log_norm, scores.logsumexp(dim=-1))  # (B, S)
        weights = torch.exp(scores - new_log_norm[..., None])  # (B, S, m / entry_latents): the new chunk's share
        output = torch.exp(log_norm - new_log_norm)[..., None] * output + weights @ values  # (B, S, D + T)
        return torch.cat([output, new_log_norm[..., None]], dim=-1)

    def pool(self, features: Tensor, chunk: Tensor, mask: Tensor | None = None) -> Tensor:
        """Whole clip: features (B, n, D) of chunks `chunk` (n,), mask (B, n) False for padding (whole
        chunks) -> the state (B, S, D + T + 1) a stream has after them (the same null chunk included)."""
        log_weights, log_norm, values = self._log_weights(features, chunk, mask)
        output = torch.exp(log_weights) @ values  # (B, S, e) @ (B, e, D + T)
        return torch.cat([output, log_norm[..., None]], dim=-1)

    def log_weights(self, features: Tensor, chunk: Tensor, mask: Tensor | None = None) -> Tensor:
        """Whole clip, as `pool`: the log of each entry's weight in each token's average (B, S, e), e =
        n / entry_latents, the null chunk in the denominator (-inf for padding). Training supervises a few
        tokens' weights with it."""
        return self._log_weights(features, chunk, mask)[0]

    def _log_weights(self, features: Tensor, chunk: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        scores, values = self._scores_values(features, chunk.expand(features.shape[:2]))
        if mask is not None:
            scores = scores.masked_fill(~mask[:, None, :: self.entry_latents], float("-inf"))
        log_norm = _logaddexp(scores.new_zeros(scores.shape[:2]), scores.logsumexp(dim=-1))  # (B, S): + the null chunk
        return scores - log_norm[..., None], log_norm, values

    def summary_tokens(self, state: Tensor) -> Tensor:
        """state (B, S, D + T + 1) -> the S tokens (B, S, D) the context decoder attends to."""
        tokens = state[..., : self.width] + self.queries  # (B, S, D)
        if self.order:
            tokens = tokens + self.order_relations(state)
        return self.norm_out(tokens)

    def order_relations(self, state: Tensor) -> Tensor:
        """state (B, S, D + 1 + 1) -> (B, S, D): for each of the first R tokens, the sum over the other R of its
        pair embedding `after` or `before`, by the order of the two mean times found, each weighted by both
        tokens' mass (the share of their weight off the null chunk); zeros for the tokens past R."""
        r, d = self.order, self.width
        mass = 1 - torch.exp(-state[:, :r, -1])  # (B, R): the null chunk's share is exp(0) / exp(log_norm)
        mean = state[:, :r, d] / mass.clamp(min=MIN_MASS)  # (B, R): the mean time found, in TIME_UNITs
        after = torch.sigmoid((mean[:, None, :] - mean[:, :, None]) * (TIME_UNIT / ORDER_CHUNKS))  # (B, R, R): [i, j] j after i
        pair = mass[:, :, None] * mass[:, None, :] * (1 - torch.eye(r, device=state.device))  # (B, R, R), none with itself
        weights = torch.cat([pair * after, pair - pair * after], dim=-1)  # (B, R, 2R): later, then earlier
        relations = torch.einsum("bik,ikd->bid", weights, torch.cat([self.after, self.before], dim=1))  # (B, R, D): one product
        return torch.cat([relations, relations.new_zeros(state.shape[0], self.tokens - r, d)], dim=1)  # (B, S, D)
