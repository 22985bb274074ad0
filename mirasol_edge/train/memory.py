"""Training the memory past the window on clips of minutes, from cached features (the recipe's stage 3).

The per-chunk stack of a trained window-only checkpoint (extractors, combiner, temporal decoder)
is frozen: every training clip goes through it once and only its temporal features (K*m, D) are
kept. Then the summary memory and the context decoder train on those features: long clips (past
the window, so the summary must carry what the cross cache lost) mixed with short ones (so short
clips keep their accuracy). Rendering and encoding a 200 s clip costs about a second once; each
step afterwards runs only the summary's pooling over every chunk (one attention per clip) and the
context decoder, so minutes of media fit in a step on 2 cores.

The answers alone teach the pooling slowly: after 400 steps the tone's pitch and the beep count
before the window were still at chance (RESULTS.md). So the first nine summary tokens are also told
where to look (`POOLING_TARGETS`): a second loss raises token e's weight on the chunks that hold
its event, read from the generator's per-second labels, the same the event head trains on. The
other tokens learn from the answers alone; inference is unchanged.
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
from mirasol_edge.data.synth import COLOURS, SOUND_CLASS_KINDS, UNLABELLED
from mirasol_edge.model import MirasolModel
from mirasol_edge.progress import CountProgress
from mirasol_edge.train.loss import answer_loss_sum
from mirasol_edge.train.config import TrainConfig
from mirasol_edge.train.precision import autocast_and_scaler
from mirasol_edge.train.schedule import learning_rate


# What summary token e is taught to pool, in token order (pooling_targets): where each sound played, the
# first chunk (the first shape), and where each colour was on screen: one token per colour lets the context
# decoder count shapes by which colour tokens found something (counting 79.0 -> 99.5 % on cached features,
# RESULTS.md). A token on every chunk where a new shape appears did not help counting, so it was not kept.
POOLING_TARGETS = ("tone", "beeps", "noise", "first chunk", *(f"colour {c}" for c in COLOURS))


@dataclass
class CachedClip:
    features: Tensor  # (K*m, D) float32: the frozen stack's temporal features
    qa: list[tuple[str, str]]  # every (question, answer) of the clip
    targets: Tensor | None = None  # (len(POOLING_TARGETS), K) bool, pooling_targets; None without event labels


def pooling_targets(events: np.ndarray) -> Tensor:
    """Per-chunk event classes (K, A) (scene.second_events: colour, shape, motion, sound; one chunk per
    second) -> (len(POOLING_TARGETS), K) bool: the chunks each supervised summary token should pool."""
    sound = np.where(events[:, 3] == UNLABELLED, "", np.asarray(SOUND_CLASS_KINDS)[events[:, 3]])  # (K,) which sound each chunk holds
    first = np.arange(len(events)) == 0
    colours = [events[:, 0] == c for c in range(len(COLOURS))]  # (K,) each: that colour on screen
    return torch.from_numpy(np.stack([sound == "tone", sound == "beeps", sound == "noise", first, *colours]))


def with_summary(model: MirasolModel, summary_tokens: int, pooling: str = "latent", after_window: bool = False,
                 seed: int = 0, order: int = 0, window_decoder: bool = False) -> MirasolModel:
    """A new model: `model`'s config with `summary_tokens` pooling `pooling` entries (ModelConfig.summary_pooling),
    attended always or only after the window (ModelConfig.summary_after_window), its first `order` tokens related by
    time (ModelConfig.summary_order), its weights, a fresh summary memory drawn from `seed` (the same seed, the same
    memory: stage 3 reruns as it ran). window_decoder (ModelConfig.window_decoder): also a copy of `model`'s context
    decoder, which train_memory leaves as it is, for the questions inside the window."""
    cfg = replace(model.cfg, summary_tokens=summary_tokens, summary_pooling=pooling, summary_after_window=after_window,
                  summary_order=order, window_decoder=window_decoder)
    with torch.random.fork_rng(devices=[]):  # the caller's random state is left as it was
        torch.manual_seed(seed)
        out = MirasolModel(cfg)
    missing, unexpected = out.load_state_dict(model.state_dict(), strict=False)
    assert not unexpected and all(k.startswith(("summary.", "window_decoder.")) for k in missing), (missing, unexpected)
    if out.window_decoder is not None:
        out.window_decoder.load_state_dict(model.context_decoder.state_dict())
    return out


@torch.no_grad()
def cache_features(model: MirasolModel, clips: Dataset, label: str, workers: int = 0, amp: str = "off") -> list[CachedClip]:
    """Each item of `clips` (a SyntheticDataset with every question per clip) -> its CachedClip. amp: autocast
    of the frozen stack (TrainConfig.amp on the CPU: off or bf16); the features are kept in float32 either way."""
    model.eval()
    autocast, _ = autocast_and_scaler(torch.device("cpu"), amp)
    loader = DataLoader(clips, batch_size=None, num_workers=workers, prefetch_factor=4 if workers else None)
    out = []
    with CountProgress(label) as progress:
        for i, examples in enumerate(loader):
            first = examples[0]
            waveform, frames = torch.from_numpy(first.waveform)[None], torch.from_numpy(first.frames)[None]
            with autocast():
                _, features = model.encode(waveform, frames)  # (1, K*m, D)
            targets = None if first.events is None else pooling_targets(first.events)
            out.append(CachedClip(features[0].float().clone(), [(e.question, e.answer) for e in examples], targets))
            progress(i + 1, len(clips))
    return out


def batches(clips: list[CachedClip], batch_size: int, rng: np.random.Generator) -> list[list[int]]:
    """One epoch: clips sorted by length and cut into batches (little padding), in a random order."""
    lengths = np.array([len(c.features) for c in clips])
    order = np.argsort(lengths + rng.uniform(0, 1, len(lengths)), kind="stable")  # ties broken at random
    groups = [order[i:i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    return [groups[i] for i in rng.permutation(len(groups))]


def memory_losses(model: MirasolModel, clips: list[CachedClip], pooling_weight: float = 0.0) -> dict[str, Tensor]:
    """{"loss", "answer_loss", "pooling_loss"} of `clips` from their cached features: the mean answer
    cross-entropy of every question, plus pooling_weight x `pooling_loss` (0 when the weight is 0)."""
    m = model.cfg.combiner.latents
    longest = max(len(c.features) for c in clips)
    features = clips[0].features.new_zeros(len(clips), longest, clips[0].features.shape[-1])  # (C, K*m, D)
    chunk_mask = torch.zeros(len(clips), longest // m, dtype=torch.bool)  # (C, K)
    for i, c in enumerate(clips):
        features[i, : len(c.features)] = c.features
        chunk_mask[i, : len(c.features) // m] = True
    batch = {"chunk_mask": chunk_mask, **text_batch([c.qa for c in clips], model.cfg.max_text_len)}
    answer = answer_loss_sum(model, features, batch) / (batch["labels"] != IGNORE).sum().clamp(min=1)
    pooling = answer.new_zeros(())
    if pooling_weight:
        targets = torch.zeros(len(clips), len(POOLING_TARGETS), longest // m, dtype=torch.bool)  # (C, E, K)
        for i, c in enumerate(clips):
            assert c.targets is not None, "pooling supervision needs clips cached with their event labels"
            targets[i, :, : c.targets.shape[1]] = c.targets
        pooling = pooling_loss(model, features, chunk_mask, targets)
    return {"loss": answer + pooling_weight * pooling, "answer_loss": answer, "pooling_loss": pooling}


def pooling_loss(model: MirasolModel, features: Tensor, chunk_mask: Tensor, targets: Tensor) -> Tensor:
    """-log(summary token e's pooling weight on the chunks targets[:, e]), averaged over the clips and tokens
    that have such chunks: features (C, K*m, D), chunk_mask (C, K), targets (C, E, K) bool. Tokens past
    summary_tokens are not supervised."""
    m = model.cfg.combiner.latents
    targets = targets[:, : model.cfg.summary_tokens]  # (C, E, K)
    chunk = torch.arange(features.shape[1], device=features.device) // m  # (K*m,)
    per_chunk = m // model.summary.entry_latents  # pooled entries per chunk: m latents, or 1 whole chunk
    log_weights = model.summary.log_weights(features, chunk, chunk_mask.repeat_interleave(m, dim=1))  # (C, S, K*per_chunk)
    on_target = targets.repeat_interleave(per_chunk, dim=2)  # (C, E, K) -> (C, E, K*per_chunk)
    hit = log_weights[:, : targets.shape[1]].masked_fill(~on_target, float("-inf")).logsumexp(dim=-1)  # (C, E)
    present = targets.any(dim=-1)  # (C, E)
    return -hit[present].mean() if bool(present.any()) else hit.new_zeros(())


def some_questions(clip: CachedClip, count: int, rng: np.random.Generator) -> CachedClip:
    """`clip` with `count` of its questions drawn at random (all of them when count is 0 or it has no more)."""
    if not count or len(clip.qa) <= count:
        return clip
    keep = np.sort(rng.choice(len(clip.qa), count, replace=False))
    return replace(clip, qa=[clip.qa[k] for k in keep])


def rehearsal_batches(count: int, per_step: int, rng: np.random.Generator):
    """Endless batches of `per_step` indices into `count` clips: each pass over them in a fresh random order."""
    order = np.empty(0, dtype=int)
    while True:
        while len(order) < per_step:
            order = np.concatenate([order, rng.permutation(count)])
        yield order[:per_step].tolist()
        order = order[per_step:]


def train_memory(model: MirasolModel, clips: list[CachedClip], out: Path, minutes: float, batch_size: int = 16,
                 lr: float = 1e-3, seed: int = 0, say=print, pooling_weight: float = 0.0,
                 rehearsal: list[CachedClip] = (), rehearsal_per_step: int = 0, amp: str = "off",
                 questions_per_clip: int = 0, decoder_lr_scale: float = 1.0, caching: dict | None = None) -> Path:
    """Train the summary memory and the context decoder of `model` on `clips` for `minutes`; the rest stays
    frozen. pooling_weight: of the pooling loss (memory_losses; the clips need their targets). rehearsal:
    clips of which `rehearsal_per_step` join every batch of `clips`, in turn (the short clips beside the
    long ones, so the context decoder cannot drift off them; measured, it holds them a little better but
    each step costs more, so fewer steps fit the minutes; RESULTS.md). Writes out/checkpoint.pt and out/log.jsonl (one
    line per step); returns the checkpoint's path. amp: autocast as TrainConfig.amp on the CPU (off or bf16).
    questions_per_clip: each step scores this many of each clip's questions, drawn afresh (0: all). The step's
    cost is the context decoder over its questions, so fewer per clip buy more steps in the same minutes.
    decoder_lr_scale: the context decoder's learning rate as a fraction of the summary's. caching: how the clips
    were cached (e.g. its amp and seconds), recorded with the checkpoint."""
    assert model.summary is not None, "the model has no summary memory to train"
    assert bool(rehearsal) == bool(rehearsal_per_step), "rehearsal clips and how many per step come together"
    if pooling_weight and any(c.targets is None for c in [*clips, *rehearsal]):
        raise ValueError("pooling supervision needs per-second event labels (synthetic clips in 1 s chunks); "
                         "set its weight to 0 for this model.")
    # A window decoder stays as it was trained, and so do the cross keys and values it shares with the
    # context decoder: the one cross cache must read the same for both.
    kept = {id(p) for p in model.window_decoder.parameters()} if model.window_decoder is not None else set()
    decoder = [p for p in model.context_decoder.parameters() if id(p) not in kept]
    trained = [*model.summary.parameters(), *decoder]
    for p in model.parameters():
        p.requires_grad_(False)
    for p in trained:
        p.requires_grad_(True)
    groups = [{"params": list(model.summary.parameters()), "lr_scale": 1.0},
              {"params": decoder, "lr_scale": decoder_lr_scale}]
    optimizer = torch.optim.AdamW(groups, lr=lr, weight_decay=0.01)
    autocast, _ = autocast_and_scaler(torch.device("cpu"), amp)
    rng = np.random.default_rng(seed)
    rehearsed = rehearsal_batches(len(rehearsal), rehearsal_per_step, rng) if rehearsal else None
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
                    g["lr"] = g["lr_scale"] * learning_rate(schedule, step, elapsed / budget)
                with autocast():
                    losses = memory_losses(model, [some_questions(clips[i], questions_per_clip, rng) for i in group], pooling_weight)
                    if rehearsed is not None:  # a batch of its own: padded into the long batch, each short clip would cost what a long one does
                        shown = next(rehearsed)
                        share = len(shown) / (len(group) + len(shown))  # the two means weighted by clip count
                        extra = memory_losses(model, [some_questions(rehearsal[i], questions_per_clip, rng) for i in shown],
                                              pooling_weight)
                        losses = {k: (1 - share) * v + share * extra[k] for k, v in losses.items()}
                loss = losses["loss"]
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(trained, 1.0)
                optimizer.step()
                step += 1
                values = {k: round(v.item(), 5) for k, v in losses.items()}
                log.write(json.dumps({"step": step, "epoch": epoch, "seconds": round(elapsed, 1), **values}) + "\n")
                if step % 50 == 0:
                    log.flush()
                    say(f"memory step {step} epoch {epoch} loss {values['loss']:.4f} (answers {values['answer_loss']:.4f}, "
                        f"pooling {values['pooling_loss']:.4f}) {elapsed / 60:.1f} min")
            epoch += 1
    model.eval()
    path = out / "checkpoint.pt"
    save_checkpoint(path, model, step=step, memory_training={"minutes": minutes, "clips": len(clips), "batch_size": batch_size,
                                                             "lr": lr, "seed": seed, "epochs": epoch, "pooling_weight": pooling_weight,
                                                             "rehearsal_clips": len(rehearsal), "rehearsal_per_step": rehearsal_per_step, "amp": amp,
                                                             "questions_per_clip": questions_per_clip, "decoder_lr_scale": decoder_lr_scale,
                                                             "pooling_targets": list(POOLING_TARGETS) if pooling_weight else [],
                                                             "caching": caching or {}})
    return path
