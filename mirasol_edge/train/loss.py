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


def loss_counts(batch: dict[str, Tensor]) -> Tensor:
    """(scored answer tokens, chunks with a predecessor, event labels) of a batch: the loss denominators, float (3,)."""
    events = (batch["chunk_events"] != IGNORE).sum() if "chunk_events" in batch else batch["labels"].new_zeros(())
    return torch.stack([(batch["labels"] != IGNORE).sum(), batch["chunk_mask"][:, 1:].sum(), events]).float()


def clip_batch_loss(model: MirasolModel, batch: dict[str, Tensor], counts: Tensor | None = None) -> dict[str, Tensor]:
    """The training loss of a batch of C clips and B questions, each clip encoded once.

    batch: batching.collate_clips' output (waveform (C, K, S), frames (C, K, F, H, W, 3), chunk_mask
    (C, K), tokens / labels (B, T), question_clip (B,), chunk_events (C, K, A) with an event head).
    counts: loss_counts of the whole global batch (default: this batch's). Returns {"loss",
    "answer_loss", "latent_loss", "event_loss"}, scalars.
    """
    latents, features = model.encode(batch["waveform"], batch["frames"])  # (C, K, m, D), (C, K*m, D)
    c, k, m, d = latents.shape
    clip = batch["question_clip"]
    cross = [(key[clip], value[clip]) for key, value in model.context_decoder.cross_keys_values(features)]  # (B, h, K*m, hd)
    cross_mask = batch["chunk_mask"].repeat_interleave(m, dim=1)[clip][:, None, None, :]  # (B, 1, 1, K*m)
    logits = model.context_decoder(batch["tokens"], cross, cross_mask=cross_mask)
    if counts is None:
        counts = loss_counts(batch)
    answer_sum = F.cross_entropy(logits.flatten(0, 1).float(), batch["labels"].flatten(), ignore_index=IGNORE, reduction="sum")
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
