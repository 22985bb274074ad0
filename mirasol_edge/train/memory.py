"""Training the memory past the window on clips of minutes, from cached features (the recipe's stage 3).

The per-chunk stack of a trained window-only checkpoint (extractors, combiner, temporal decoder)
is frozen: every training clip goes through it once and only its temporal features (K*m, D) are
kept. Then the summary memory and the context decoder train on those features: long clips (past
the window, so the summary must carry what the cross cache lost) mixed with short ones (so short
clips keep their accuracy). Rendering and encoding a 200 s clip costs about a second once; each
step afterwards runs only the summary's pooling over every chunk (one attention per clip) and the
context decoder, so minutes of media fit in a step on 2 cores.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from mirasol_edge.batching import IGNORE, text_batch
from mirasol_edge.checkpoint import save_checkpoint
from mirasol_edge.model import MirasolModel
from mirasol_edge.progress import CountProgress
from mirasol_edge.train.loss import answer_loss_sum
from mirasol_edge.train.config import TrainConfig
from mirasol_edge.train.schedule import learning_rate


@dataclass
class CachedClip:
    features: Tensor  # (K*m, D) float32: the frozen stack's temporal features
    qa: list[tuple[str, str]]  # every (question, answer) of the clip


def with_summary(model: MirasolModel, summary_tokens: int) -> MirasolModel:
    """A new model: `model`'s config with `summary_tokens`, its weights, a fresh summary memory."""
    cfg = replace(model.cfg, summary_tokens=summary_tokens)
    out = MirasolModel(cfg)
    missing, unexpected = out.load_state_dict(model.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("summary.") for k in missing), (missing, unexpected)
    return out


@torch.no_grad()
def cache_features(model: MirasolModel, clips: Dataset, label: str, workers: int = 1) -> list[CachedClip]:
    """Each item of `clips` (a SyntheticDataset with every question per clip) -> its CachedClip."""
    model.eval()
    loader = DataLoader(clips, batch_size=None, num_workers=workers, prefetch_factor=4 if workers else None)
    out = []
    with CountProgress(label) as progress:
        for i, examples in enumerate(loader):
            first = examples[0]
            waveform, frames = torch.from_numpy(first.waveform)[None], torch.from_numpy(first.frames)[None]
            _, features = model.encode(waveform, frames)  # (1, K*m, D)
            out.append(CachedClip(features[0].clone(), [(e.question, e.answer) for e in examples]))
            progress(i + 1, len(clips))
    return out


def batches(clips: list[CachedClip], batch_size: int, rng: np.random.Generator) -> list[list[int]]:
    """One epoch: clips sorted by length and cut into batches (little padding), in a random order."""
    lengths = np.array([len(c.features) for c in clips])
    order = np.argsort(lengths + rng.uniform(0, 1, len(lengths)), kind="stable")  # ties broken at random
    groups = [order[i:i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    return [groups[i] for i in rng.permutation(len(groups))]


def memory_loss(model: MirasolModel, clips: list[CachedClip]) -> Tensor:
    """The mean answer cross-entropy of every question of `clips`, from their cached features."""
    m = model.cfg.combiner.latents
    longest = max(len(c.features) for c in clips)
    features = clips[0].features.new_zeros(len(clips), longest, clips[0].features.shape[-1])  # (C, K*m, D)
    chunk_mask = torch.zeros(len(clips), longest // m, dtype=torch.bool)  # (C, K)
    for i, c in enumerate(clips):
        features[i, : len(c.features)] = c.features
        chunk_mask[i, : len(c.features) // m] = True
    batch = {"chunk_mask": chunk_mask, **text_batch([c.qa for c in clips], model.cfg.max_text_len)}
    return answer_loss_sum(model, features, batch) / (batch["labels"] != IGNORE).sum().clamp(min=1)


def train_memory(model: MirasolModel, clips: list[CachedClip], out: Path, minutes: float, batch_size: int = 16,
                 lr: float = 1e-3, seed: int = 0, say=print) -> Path:
    """Train the summary memory and the context decoder of `model` on `clips` for `minutes`; the rest stays
    frozen. Writes out/checkpoint.pt and out/log.jsonl (one line per step); returns the checkpoint's path."""
    assert model.summary is not None, "the model has no summary memory to train"
    trained = [*model.summary.parameters(), *model.context_decoder.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    for p in trained:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(trained, lr=lr, weight_decay=0.01)
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    budget, start, step, epoch = minutes * 60, time.perf_counter(), 0, 0
    schedule = TrainConfig(minutes=minutes, lr=lr, warmup_steps=min(20, math.ceil(len(clips) / batch_size)))  # the cosine runs over the time budget
    model.train()
    with open(out / "log.jsonl", "w") as log:
        while time.perf_counter() - start < budget:
            for group in batches(clips, batch_size, rng):
                elapsed = time.perf_counter() - start
                if elapsed >= budget:
                    break
                for g in optimizer.param_groups:
                    g["lr"] = learning_rate(schedule, step, elapsed / budget)
                loss = memory_loss(model, [clips[i] for i in group])
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(trained, 1.0)
                optimizer.step()
                step += 1
                log.write(json.dumps({"step": step, "epoch": epoch, "seconds": round(elapsed, 1), "loss": round(loss.item(), 5)}) + "\n")
                if step % 50 == 0:
                    log.flush()
                    say(f"memory step {step} epoch {epoch} loss {loss.item():.4f} {elapsed / 60:.1f} min")
            epoch += 1
    model.eval()
    path = out / "checkpoint.pt"
    save_checkpoint(path, model, step=step, memory_training={"minutes": minutes, "clips": len(clips), "batch_size": batch_size,
                                                             "lr": lr, "seed": seed, "epochs": epoch})
    return path
