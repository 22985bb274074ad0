"""Training: AdamW, warm-up + cosine schedule, gradient clipping, mixed precision on GPU, resumable
checkpoints, a time budget, and multi-process data parallelism under torchrun (gloo on CPU, nccl on GPU).

A global batch is `batch_size` clips with `questions_per_clip` questions each; every clip is encoded
once for all its questions. Under torchrun each rank takes its contiguous slice of the global batch
and the loss is normalised over the whole global batch, so N processes take the same step as one.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, fields, replace
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from mirasol_edge.checkpoint import save_checkpoint
from mirasol_edge.config import ModelConfig, preset
from mirasol_edge.data.dataset import ManifestDataset, SyntheticDataset, collate_clips
from mirasol_edge.data.synth import EVENT_CLASSES
from mirasol_edge.model import MirasolModel
from mirasol_edge.model.mirasol import IGNORE

CHECKPOINT = "checkpoint.pt"  # in the run folder: model config + weights + everything to resume
LOSS_PLOT = "loss.png"
LOG = "log.jsonl"
SYNTHETIC_ITEMS = 1 << 40  # the synthetic stream is endless: item i is clip clip_seed(data_seed, i)
AMP_MODES = ("auto", "bf16", "fp16", "off")


@dataclass(frozen=True)
class TrainConfig:
    preset: str = "small"
    combiner: str | None = None  # override the preset's combiner: transformer or ttm
    steps: int | None = None  # stop after this many optimizer steps ...
    minutes: float | None = None  # ... or this much training time; the schedule follows whichever ends first
    batch_size: int = 16  # clips per global batch (split across DDP ranks)
    questions_per_clip: int | None = 4  # questions of each clip in the batch, sharing its encode (None: all)
    event_loss_weight: float = 0.0  # synthetic data: > 0 adds a head classifying each chunk's events (synth.second_events)
    lr: float = 1e-3  # peak learning rate
    min_lr_ratio: float = 0.02  # the cosine ends at lr * min_lr_ratio
    warmup_steps: int = 100  # linear warm-up from 0
    weight_decay: float = 0.05
    grad_clip: float = 1.0  # max global gradient norm
    durations: tuple[int, ...] | None = None  # synthetic clip lengths in seconds (None: all of 4-12 s the chunk allows)
    duration_weights: tuple[float, ...] | None = None  # how often each length is drawn (None: uniform)
    manifest: str | None = None  # train on these media files instead of synthetic clips
    seed: int = 0  # model initialisation
    data_seed: int = 1  # synthetic training clips; held-out sets use other seeds
    num_workers: int = 0  # DataLoader workers per rank
    amp: str = "auto"  # auto: bf16 (fp16 where bf16 is missing) on CUDA, off on CPU; bf16: also on CPU (AMX); off
    checkpoint_minutes: float = 5.0  # also write the checkpoint this often
    log_every: int = 10  # steps between log lines / progress updates

    def __post_init__(self):
        if self.steps is None and self.minutes is None:
            raise ValueError("give a training length: --steps N, --minutes M, or both.")
        if self.steps is not None and self.steps < 1 or self.minutes is not None and self.minutes <= 0:
            raise ValueError(f"--steps must be >= 1 and --minutes > 0, got {self.steps} and {self.minutes}.")
        if self.batch_size < 1 or self.lr <= 0:
            raise ValueError(f"--batch-size must be >= 1 and --lr > 0, got {self.batch_size} and {self.lr}.")
        if self.event_loss_weight and self.manifest:
            raise ValueError("--event-loss-weight needs synthetic clips (their events are the targets); drop it with --manifest.")
        if self.event_loss_weight < 0:
            raise ValueError(f"--event-loss-weight must be >= 0, got {self.event_loss_weight}.")
        if self.questions_per_clip is not None and self.questions_per_clip < 1:
            raise ValueError(f"questions per clip must be >= 1, got {self.questions_per_clip}.")
        if self.amp not in AMP_MODES:
            raise ValueError(f"--amp must be one of {', '.join(AMP_MODES)}, got {self.amp!r}.")

    def model_config(self) -> ModelConfig:
        cfg = preset(self.preset)
        if self.combiner is not None:
            if self.combiner not in ("transformer", "ttm"):
                raise ValueError(f"--combiner must be transformer or ttm, got {self.combiner!r}.")
            cfg = replace(cfg, combiner=replace(cfg.combiner, kind=self.combiner))
        if self.event_loss_weight:
            if cfg.chunk.chunk_seconds != 1:
                raise ValueError(f"--event-loss-weight labels each 1 s of a clip, but preset {self.preset} has {cfg.chunk.chunk_seconds:g} s chunks; use a 1 s preset (tiny, small).")
            cfg = replace(cfg, event_classes=EVENT_CLASSES, event_loss_weight=self.event_loss_weight)
        return cfg

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        d = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in known}
        return cls(**d)


# --- loss ------------------------------------------------------------------------------------


def loss_counts(batch: dict[str, Tensor]) -> Tensor:
    """(scored answer tokens, chunks with a predecessor, event labels) of a batch: the loss denominators, float (3,)."""
    events = (batch["chunk_events"] != IGNORE).sum() if "chunk_events" in batch else batch["labels"].new_zeros(())
    return torch.stack([(batch["labels"] != IGNORE).sum(), batch["chunk_mask"][:, 1:].sum(), events]).float()


def clip_batch_loss(model: MirasolModel, batch: dict[str, Tensor], counts: Tensor | None = None) -> dict[str, Tensor]:
    """MirasolModel.forward's loss for a batch of C clips and B questions, each clip encoded once.

    batch: collate_clips' output (waveform (C, K, S), frames (C, K, F, H, W, 3), chunk_mask (C, K),
    tokens / labels (B, T), question_clip (B,)). counts: loss_counts of the whole global batch
    (default: this batch's), so that sums over ranks give the global means.
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
    predicted = model.temporal_decoder.next_latents(features).view(c, k, m, d)[:, :-1]
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


class _LossModule(nn.Module):
    """What DistributedDataParallel wraps: its forward is the whole loss."""

    def __init__(self, model: MirasolModel):
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, Tensor], counts: Tensor) -> dict[str, Tensor]:
        return clip_batch_loss(self.model, batch, counts)


# --- schedule and data order -----------------------------------------------------------------


def learning_rate(tcfg: TrainConfig, step: int, progress: float) -> float:
    """Linear warm-up over warmup_steps, times a cosine from lr to lr * min_lr_ratio over progress in [0, 1]."""
    warm = min(1.0, (step + 1) / max(1, tcfg.warmup_steps))
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, max(0.0, progress))))
    return tcfg.lr * warm * (tcfg.min_lr_ratio + (1 - tcfg.min_lr_ratio) * cosine)


class GlobalBatchSampler:
    """This rank's slice of every global batch, from `start_step` on (endless; the loop stops it).

    Position p of the stream is global batch p // batch_size. Unshuffled (synthetic data) item p is
    p; shuffled (files), item p is epoch * n + a permutation of the n files drawn per (seed, epoch),
    the epoch telling the dataset which questions to draw.
    """

    def __init__(self, n_items: int, batch_size: int, rank: int = 0, world: int = 1,
                 start_step: int = 0, shuffle: bool = False, seed: int = 0):
        if batch_size % world:
            raise ValueError(f"the batch of {batch_size} clips does not split evenly over {world} processes; use a multiple of {world}.")
        self.n, self.batch, self.rank, self.world = n_items, batch_size, rank, world
        self.start_step, self.shuffle, self.seed = start_step, shuffle, seed
        self._perm: tuple[int, np.ndarray] | None = None

    def item(self, p: int) -> int:
        if not self.shuffle:
            return p
        epoch, j = divmod(p, self.n)
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng([self.seed, epoch]).permutation(self.n))
        return epoch * self.n + int(self._perm[1][j])

    def __iter__(self):
        share = self.batch // self.world
        step = self.start_step
        while True:
            first = step * self.batch + self.rank * share
            yield [self.item(p) for p in range(first, first + share)]
            step += 1


# --- the loop --------------------------------------------------------------------------------


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device_kind: str) -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return _Dist()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo")
    return _Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def _autocast(device: torch.device, amp: str):
    """(autocast context factory, GradScaler or None). Weights, optimizer and loss stay float32."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return contextlib.nullcontext, None
    if device.type == "cpu":
        if amp == "fp16":
            raise ValueError("--amp fp16 needs a CUDA GPU; on the CPU use --amp bf16 (or off).")
        return _cpu_bf16, None
    if amp == "fp16" or (amp == "auto" and not torch.cuda.is_bf16_supported()):
        return partial(torch.autocast, "cuda", dtype=torch.float16), torch.amp.GradScaler("cuda")
    return partial(torch.autocast, "cuda", dtype=torch.bfloat16), None


@contextlib.contextmanager
def _cpu_bf16():
    """bf16 autocast on the CPU, attention on SDPA's math path: its bf16 matmuls run on AMX, while the
    fused CPU flash-attention kernel's bf16 backward is slower than the whole float32 step it saves."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with torch.autocast("cpu", dtype=torch.bfloat16), sdpa_kernel([SDPBackend.MATH]):
        yield


def _dataset(tcfg: TrainConfig, cfg: ModelConfig):
    if tcfg.manifest:
        ds = ManifestDataset(tcfg.manifest, cfg.chunk, tcfg.questions_per_clip, seed=tcfg.data_seed)
        return ds, len(ds), True
    ds = SyntheticDataset(cfg.chunk, SYNTHETIC_ITEMS, tcfg.data_seed, tcfg.questions_per_clip,
                          tcfg.durations, tcfg.duration_weights, group=tcfg.batch_size)
    return ds, SYNTHETIC_ITEMS, False


def _to(batch: dict[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _format_time(seconds: float) -> str:
    m, s = divmod(int(max(0, seconds)), 60)
    return f"{m}:{s:02d}"


def train(
    tcfg: TrainConfig,
    out: str | os.PathLike,
    resume: bool = False,
    model_cfg: ModelConfig | None = None,
    device: str | None = None,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Train into the folder `out` (checkpoint.pt, loss.png, log.jsonl); returns the checkpoint's path.

    model_cfg overrides tcfg.preset. resume continues from out/checkpoint.pt (weights, optimizer,
    step, elapsed time), with the same data order as an uninterrupted run. Under torchrun every
    rank calls this; only rank 0 writes.
    """
    out = Path(out)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    ddp = _init_distributed(dev.type)
    if dev.type == "cuda" and ddp.world > 1:
        dev = torch.device("cuda", ddp.local_rank)
        torch.cuda.set_device(dev)
    say = (log or _print) if ddp.main else (lambda _: None)

    cfg = model_cfg or tcfg.model_config()
    torch.manual_seed(tcfg.seed)
    model = MirasolModel(cfg)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "position" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "position" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": tcfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=tcfg.lr, betas=(0.9, 0.98),
    )
    step, elapsed, history = 0, 0.0, []
    path = out / CHECKPOINT
    if resume:
        step, elapsed, history = _load_for_resume(path, model, optimizer, cfg)
        say(f"resuming {path} at step {step} ({_format_time(elapsed)} trained)")
    model.to(dev).train()
    autocast, scaler = _autocast(dev, tcfg.amp)
    if ddp.world > 1:
        wrapped = nn.parallel.DistributedDataParallel(
            _LossModule(model), device_ids=[dev.index] if dev.type == "cuda" else None,
            find_unused_parameters=cfg.combiner.kind == "ttm",  # a 1-chunk clip leaves the TTM's write unused
        )
    else:
        wrapped = _LossModule(model)

    dataset, n_items, shuffle = _dataset(tcfg, cfg)
    sampler = GlobalBatchSampler(n_items, tcfg.batch_size, ddp.rank, ddp.world, step, shuffle, tcfg.data_seed)
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, collate_fn=partial(collate_clips, cfg=cfg),
        num_workers=tcfg.num_workers, pin_memory=dev.type == "cuda",
        persistent_workers=tcfg.num_workers > 0, prefetch_factor=4 if tcfg.num_workers > 0 else None,
    )
    budget = tcfg.minutes * 60 if tcfg.minutes else None
    n_params = sum(p.numel() for p in model.parameters())
    say(
        f"training {cfg.d_model}-wide model ({n_params / 1e6:.1f} M parameters, {cfg.combiner.kind} combiner) on "
        f"{'files of ' + tcfg.manifest if tcfg.manifest else 'synthetic clips'}: {tcfg.batch_size} clips x "
        f"{tcfg.questions_per_clip or 'all'} questions per step, {ddp.world} process(es) on {dev.type}, "
        f"{'until step ' + str(tcfg.steps) if tcfg.steps else ''}{' or ' if tcfg.steps and budget else ''}"
        f"{_format_time(budget) + ' min' if budget else ''}"
    )
    if ddp.main:
        out.mkdir(parents=True, exist_ok=True)
    logfile = open(out / LOG, "a" if resume else "w") if ddp.main else None
    tty = sys.stdout.isatty()

    def progress_now() -> float:
        return max(step / tcfg.steps if tcfg.steps else 0.0, elapsed / budget if budget else 0.0)

    last_save = time.perf_counter()
    rate = None  # clips/s, smoothed
    window: list[tuple[float, float, float]] = []  # (loss, answer, latent) since the last log line
    started = time.perf_counter() - elapsed
    batches = iter(loader)
    try:
        while progress_now() < 1.0:
            t0 = time.perf_counter()
            batch = _to(next(batches), dev)
            counts = loss_counts(batch)
            if ddp.world > 1:
                dist.all_reduce(counts)
            lr = learning_rate(tcfg, step, progress_now())
            for group in optimizer.param_groups:
                group["lr"] = lr
            with autocast():
                losses = wrapped(batch, counts)
            # each rank's loss is its share of the global mean; DDP averages gradients over ranks
            (scaler.scale(losses["loss"] * ddp.world) if scaler else losses["loss"] * ddp.world).backward()
            if scaler:
                scaler.unscale_(optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip)
            if scaler:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1

            report = torch.stack([losses[k].detach().float() for k in ("loss", "answer_loss", "latent_loss", "event_loss")]).cpu()
            clock = torch.tensor([time.perf_counter() - started], dtype=torch.float64)
            if ddp.world > 1:  # global loss; every rank stops on rank-consistent time
                dist.all_reduce(report)
                dist.all_reduce(clock, op=dist.ReduceOp.MAX)
            elapsed = float(clock)
            loss, answer_loss, latent_loss, event_loss = (float(x) for x in report)
            history.append(loss)
            window.append((loss, answer_loss, latent_loss, event_loss))
            dt = time.perf_counter() - t0
            rate = tcfg.batch_size / dt if rate is None else 0.9 * rate + 0.1 * tcfg.batch_size / dt
            if not math.isfinite(loss):
                raise RuntimeError(f"the loss became {loss} at step {step}; lower --lr (now {tcfg.lr}).")

            if step % tcfg.log_every == 0 or progress_now() >= 1.0:
                mean, answer_loss, latent_loss, event_loss = (sum(x) / len(window) for x in zip(*window))
                window.clear()
                if logfile:
                    logfile.write(json.dumps({
                        "step": step, "loss": mean, "answer_loss": answer_loss, "latent_loss": latent_loss,
                        "event_loss": event_loss,
                        "lr": lr, "grad_norm": float(grad_norm), "clips_per_s": rate, "elapsed_s": elapsed,
                    }) + "\n")
                    logfile.flush()
                left = []
                if tcfg.steps:
                    left.append((tcfg.steps - step) * tcfg.batch_size / max(rate, 1e-9))
                if budget:
                    left.append(budget - elapsed)
                line = (f"step {step}{'/' + str(tcfg.steps) if tcfg.steps else ''}  loss {mean:.4f} "
                        f"(answer {answer_loss:.4f})  lr {lr:.2e}  {rate:.1f} clips/s  "
                        f"{_format_time(elapsed)} elapsed, {_format_time(min(left))} left")
                if ddp.main:
                    print("\r" + line + " " * 4, end="", flush=True) if tty else say(line)
            if ddp.main and time.perf_counter() - last_save > tcfg.checkpoint_minutes * 60:
                _save(path, model, optimizer, tcfg, step, elapsed, history)
                last_save = time.perf_counter()
    except KeyboardInterrupt:
        if ddp.main:
            if tty:
                print()
            _save(path, model, optimizer, tcfg, step, elapsed, history)
            say(f"interrupted at step {step}; wrote {path}: continue with --resume")
        raise
    finally:
        if logfile:
            logfile.close()
    if ddp.main and tty:
        print()
    if ddp.main:
        _save(path, model, optimizer, tcfg, step, elapsed, history)
        say(f"step {step}: loss {history[-1] if history else float('nan'):.4f}; wrote {path} and {out / LOSS_PLOT}")
    if ddp.world > 1:
        dist.barrier()
    return path


def _print(line: str) -> None:
    print(line, flush=True)


def _save(path: Path, model: MirasolModel, optimizer, tcfg: TrainConfig, step: int, elapsed: float, history: list[float]) -> None:
    save_checkpoint(
        path, model, train_config=tcfg.to_dict(), optimizer=optimizer.state_dict(),
        step=step, elapsed_seconds=elapsed, loss_history=history,
    )
    plot_losses(history, path.parent / LOSS_PLOT)


def _load_for_resume(path: Path, model: MirasolModel, optimizer, cfg: ModelConfig) -> tuple[int, float, list[float]]:
    from mirasol_edge.checkpoint import load_checkpoint

    if not path.is_file():
        raise ValueError(f"--resume: there is no checkpoint to resume at {path}; train without --resume first.")
    loaded, ckpt = load_checkpoint(path)
    if loaded.cfg != cfg:
        raise ValueError(f"--resume: {path} holds a different model configuration than this run asks for; use the same --preset/--combiner.")
    if "optimizer" not in ckpt:
        raise ValueError(f"--resume: {path} has weights only (no optimizer state); it cannot be resumed.")
    model.load_state_dict(loaded.state_dict())
    optimizer.load_state_dict(ckpt["optimizer"])
    return int(ckpt["step"]), float(ckpt["elapsed_seconds"]), list(ckpt.get("loss_history", []))


def plot_losses(history: list[float], path: Path) -> None:
    """The training loss per step (and a moving average) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    if history:
        steps = np.arange(1, len(history) + 1)
        ax.plot(steps, history, color="tab:blue", alpha=0.3, linewidth=0.8, label="loss")
        w = max(1, len(history) // 50)
        if w > 1:
            smooth = np.convolve(history, np.ones(w) / w, mode="valid")
            ax.plot(steps[w - 1:], smooth, color="tab:blue", linewidth=1.6, label=f"mean of {w} steps")
        ax.set_yscale("log")
        ax.legend()
    ax.set_xlabel("step")
    ax.set_ylabel("loss (answer CE + weighted latent MSE)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
