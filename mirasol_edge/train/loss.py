"""The training loss: answer cross-entropy + weighted next-chunk latent loss (+ weighted event loss).

Sums over the batch divided by counts of the whole global batch, so that the sum over DDP ranks
is the global mean and N processes take the same step as one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mirasol_edge.batching import IGNORE
from mirasol_edge.model import MirasolModel
from mirasol_edge.runtime import tokenizer


def loss_counts(batch: dict[str, Tensor]) -> Tensor:
    """(scored answer tokens, chunks with a predecessor, event labels) of a batch: the loss denominators, float (3,)."""
    events = (batch["chunk_events"] != IGNORE).sum() if "chunk_events" in batch else batch["labels"].new_zeros(())
    return torch.stack([(batch["labels"] != IGNORE).sum(), batch["chunk_mask"][:, 1:].sum(), events]).float()


def question_context(model: MirasolModel, features: Tensor, chunk_mask: Tensor) -> tuple[list, Tensor]:
    """Features (C, K*m, D) of C clips with chunk_mask (C, K) -> what their questions cross-attend to:
    per layer keys, values (C, h, n, hd), and the mask (C, n) of what is there. n = K*m, or S + W*m
    with a summary memory (the summary first, then the last W = min(temporal_window, K) real chunks
    of each clip, as a stream has them)."""
    m = model.cfg.combiner.latents
    if model.summary is None:
        return model.context_decoder.cross_keys_values(features), chunk_mask.repeat_interleave(m, dim=1)  # (C, K) -> (C, K*m)
    summary = model.summary_keys_values(model.summarize(features, chunk_mask))  # (C, h, S, hd)
    window, window_mask = model.window(features, chunk_mask)  # (C, W*m, D), (C, W*m)
    cross = model.context_decoder.cross_keys_values(window)  # (C, h, W*m, hd)
    cross = [(torch.cat([sk, k], dim=2), torch.cat([sv, v], dim=2)) for (k, v), (sk, sv) in zip(cross, summary)]
    attend = model.context_decoder.summary_attended(chunk_mask.sum(dim=1), window.shape[1] // m)  # (C,): as a stream of that many chunks
    return cross, torch.cat([attend[:, None].expand(-1, model.cfg.summary_tokens), window_mask], dim=1)


def answer_loss_sum(model: MirasolModel, features: Tensor, batch: dict[str, Tensor]) -> Tensor:
    """The summed cross-entropy of the answer tokens: features (C, K*m, D) of C clips, batch with
    chunk_mask (C, K), tokens / labels (B, T) and question_clip (B,) in clip order (batching.text_batch)."""
    clip, tokens, labels = batch["question_clip"], batch["tokens"], batch["labels"]
    assert bool((clip[1:] >= clip[:-1]).all()), "questions come in clip order"
    cross, cross_mask = question_context(model, features, batch["chunk_mask"])
    # Each clip's questions in Q rows, the last ones padding that score nothing: (B, T) -> (C*Q, T), so the
    # decoder attends to a clip's keys and values once for all its questions instead of a copy per question.
    c, b = features.shape[0], clip.shape[0]
    per_clip = torch.bincount(clip, minlength=c)  # (C,)
    q = int(per_clip.max())
    row = clip * q + torch.arange(b, device=clip.device) - (per_clip.cumsum(0) - per_clip)[clip]  # (B,) its row of C*Q
    grouped_tokens = tokens.new_full((c * q, tokens.shape[1]), tokenizer.PAD).index_copy(0, row, tokens)
    grouped_labels = labels.new_full((c * q, labels.shape[1]), IGNORE).index_copy(0, row, labels)
    logits = model.context_decoder(grouped_tokens, cross, cross_mask=cross_mask[:, None, None, :], questions_per_clip=q)
    return F.cross_entropy(logits.flatten(0, 1).float(), grouped_labels.flatten(), ignore_index=IGNORE, reduction="sum")


def clip_batch_loss(model: MirasolModel, batch: dict[str, Tensor], counts: Tensor | None = None) -> dict[str, Tensor]:
    """The training loss of a batch of C clips and B questions, each clip encoded once.

    batch: batching.collate_clips' output (waveform (C, K, S), frames (C, K, F, H, W, 3), chunk_mask
    (C, K), tokens / labels (B, T), question_clip (B,), chunk_events (C, K, A) with an event head).
    counts: loss_counts of the whole global batch (default: this batch's). Returns {"loss",
    "answer_loss", "latent_loss", "event_loss"}, scalars.
    """
    latents, features = model.encode(batch["waveform"], batch["frames"])  # (C, K, m, D), (C, K*m, D)
    c, k, m, d = latents.shape
    if counts is None:
        counts = loss_counts(batch)
    answer_sum = answer_loss_sum(model, features, batch)
    # chunk k's features predict chunk k+1's latents (targets not back-propagated); empty when K = 1,
    # but always computed so every parameter takes part in every step (DDP needs that)
    predicted = model.temporal_decoder.next_latents(features).view(c, k, m, d)[:, :-1]  # (C, K*m, D) -> (C, K-1, m, D)
    error = (predicted.float() - latents[:, 1:].detach().float()).pow(2).mean(dim=(2, 3))  # (C, K-1)
    latent_sum = (error * batch["chunk_mask"][:, 1:].float()).sum()
    answer_loss = answer_sum / counts[0].clamp(min=1)
    latent_loss = latent_sum / counts[1].clamp(min=1)
    loss = answer_loss + model.cfg.latent_loss_weight * latent_loss
    event_loss = answer_loss.new_zeros(())
    if model.event_head is not None:  # each chunk's features -> its events' classes (synthetic clips)
        logits = model.event_head(features.reshape(c, k, m * d)).float()  # (C, K*m, D) -> (C, K, m*D) -> (C, K, sum classes)
        labels = batch["chunk_events"]  # (C, K, A)
        for a, part in enumerate(logits.split(list(model.cfg.event_classes), dim=-1)):
            event_loss = event_loss + F.cross_entropy(part.flatten(0, 1), labels[..., a].flatten(), ignore_index=IGNORE, reduction="sum")
        event_loss = event_loss / counts[2].clamp(min=1)
        loss = loss + model.cfg.event_loss_weight * event_loss
    return {"loss": loss, "answer_loss": answer_loss, "latent_loss": latent_loss, "event_loss": event_loss}
