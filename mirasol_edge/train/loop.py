"""train(): build the model and optimizer, resume, then optimizer steps until the step count or the time
budget runs out, with a checkpoint every few minutes, at an interrupt and at the end."""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ContextManager

import torch
import torch.distributed as dist
from torch import Tensor, nn

from mirasol_edge.config import ModelConfig
from mirasol_edge.model import MirasolModel
from mirasol_edge.train.config import TrainConfig
from mirasol_edge.train.distributed import Ranks, init_distributed, reduce_over_ranks, wrap_loss
from mirasol_edge.train.loss import loss_counts
from mirasol_edge.train.precision import autocast_and_scaler
from mirasol_edge.train.progress import LOG, LOSS_NAMES, ProgressLog, format_time
from mirasol_edge.train.resume import CHECKPOINT, LOSS_PLOT, RunProgress, load_run, save_run
from mirasol_edge.train.sampler import training_loader
from mirasol_edge.train.schedule import learning_rate


def train(
    tcfg: TrainConfig,
    out: str | os.PathLike,
    resume: bool = False,
    model_cfg: ModelConfig | None = None,
    device: str | None = None,
    log: Callable[[str], None] | None = None,
    video_backbone_weights: str | None = None,
) -> Path:
    """Train into the folder `out` (checkpoint.pt, loss.png, log.jsonl); returns the checkpoint's path.

    model_cfg overrides tcfg.preset. resume continues from out/checkpoint.pt (weights, optimizer,
    step, elapsed time), with the same data order as an uninterrupted run. Under torchrun every
    rank calls this; only rank 0 writes. video_backbone_weights: a local state dict the torchvision
    video backbone starts from (a new run; a resumed one has its weights in the checkpoint).
    """
    out = Path(out)
    ranks, dev = init_distributed(torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu")))
    say = (log or _print) if ranks.main else _silent
    cfg = model_cfg or tcfg.model_config()
    model, optimizer = _model_and_optimizer(cfg, tcfg, video_backbone_weights)
    path = out / CHECKPOINT
    progress = RunProgress()
    if resume:
        progress = load_run(path, model, optimizer, cfg)
        say(f"resuming {path} at step {progress.step} ({format_time(progress.elapsed)} trained)")
    model.to(dev).train()
    autocast, scaler = autocast_and_scaler(dev, tcfg.amp)
    optimizer_step = _OptimizerStep(model, wrap_loss(model, ranks, dev), optimizer, autocast, scaler, ranks, tcfg.grad_clip)
    loader = training_loader(tcfg, cfg, ranks.rank, ranks.world, progress.step, pin_memory=dev.type == "cuda")
    say(_run_summary(tcfg, model, ranks, dev))
    if ranks.main:
        out.mkdir(parents=True, exist_ok=True)
    try:
        with ProgressLog(tcfg, out / LOG if ranks.main else None, resume, say, live=ranks.main and sys.stderr.isatty()) as report:
            _train_until_done(tcfg, optimizer_step, loader, dev, progress, report, path)
    except KeyboardInterrupt:
        if ranks.main:
            save_run(path, model, optimizer, tcfg, progress)
            say(f"interrupted at step {progress.step}; wrote {path}: continue with --resume")
        raise
    if ranks.main:
        save_run(path, model, optimizer, tcfg, progress)
        say(f"step {progress.step}: loss {progress.history[-1] if progress.history else float('nan'):.4f}; wrote {path} and {out / LOSS_PLOT}")
    if ranks.world > 1:
        dist.barrier()
    return path


def _model_and_optimizer(cfg: ModelConfig, tcfg: TrainConfig, video_backbone_weights: str | None
                         ) -> tuple[MirasolModel, torch.optim.AdamW]:
    torch.manual_seed(tcfg.seed)
    model = MirasolModel(cfg, video_backbone_weights)
    if tcfg.init_from is not None:  # fine-tuning: the weights of another run, trained on from step 0
        from mirasol_edge.checkpoint import load_checkpoint

        start, _ = load_checkpoint(tcfg.init_from)
        if start.cfg != cfg:
            raise ValueError(f"{tcfg.init_from} holds another model config than this run's; give the same preset "
                             f"and options, or start from scratch.")
        model.load_state_dict(start.state_dict())
    # weight decay on matrices only: not on biases, norms or position tables
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "position" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "position" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": tcfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=tcfg.lr, betas=(0.9, 0.98),
    )
    return model, optimizer


@dataclass
class _OptimizerStep:
    """One optimizer step on a global batch: the loss, its gradients (scaled for fp16), clipping, the update."""

    model: MirasolModel
    loss_module: nn.Module  # clip_batch_loss, under DistributedDataParallel with several processes
    optimizer: torch.optim.Optimizer
    autocast: Callable[[], ContextManager]
    scaler: torch.amp.GradScaler | None
    ranks: Ranks
    grad_clip: float

    def __call__(self, batch: dict[str, Tensor], lr: float) -> tuple[dict[str, Tensor], Tensor]:
        """-> (this rank's losses, the global gradient norm before clipping)."""
        counts = reduce_over_ranks(loss_counts(batch), self.ranks)  # denominators of the global batch
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with self.autocast():
            losses = self.loss_module(batch, counts)
        # each rank's loss is its share of the global mean; DDP averages gradients over ranks
        loss = losses["loss"] * self.ranks.world
        (self.scaler.scale(loss) if self.scaler else loss).backward()
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return losses, grad_norm


def _train_until_done(tcfg: TrainConfig, optimizer_step: _OptimizerStep, loader, device: torch.device, progress: RunProgress,
                      report: ProgressLog, path: Path) -> None:
    """Steps until progress.fraction_done reaches 1, updating `progress` in place; a checkpoint every
    tcfg.checkpoint_minutes."""
    started = time.perf_counter() - progress.elapsed
    last_save = time.perf_counter()
    batches = iter(loader)
    while progress.fraction_done(tcfg) < 1.0:
        t0 = time.perf_counter()
        batch = {k: v.to(device, non_blocking=True) for k, v in next(batches).items()}
        lr = learning_rate(tcfg, progress.step, progress.fraction_done(tcfg))
        losses, grad_norm = optimizer_step(batch, lr)
        progress.step += 1
        global_losses, progress.elapsed = _global_losses_and_clock(losses, started, optimizer_step.ranks)
        progress.history.append(global_losses[0])
        step_seconds = time.perf_counter() - t0
        if not math.isfinite(global_losses[0]):
            raise RuntimeError(f"the loss became {global_losses[0]} at step {progress.step}; lower --lr (now {tcfg.lr}).")
        report.record(progress.step, global_losses, lr, grad_norm, step_seconds, progress.elapsed, progress.fraction_done(tcfg))
        if optimizer_step.ranks.main and time.perf_counter() - last_save > tcfg.checkpoint_minutes * 60:
            save_run(path, optimizer_step.model, optimizer_step.optimizer, tcfg, progress)
            last_save = time.perf_counter()


def _global_losses_and_clock(losses: dict[str, Tensor], started: float, ranks: Ranks) -> tuple[tuple[float, ...], float]:
    """(LOSS_NAMES of the global batch, seconds trained): every rank stops on rank-consistent time."""
    values = reduce_over_ranks(torch.stack([losses[k].detach().float() for k in LOSS_NAMES]).cpu(), ranks)
    clock = reduce_over_ranks(torch.tensor([time.perf_counter() - started], dtype=torch.float64), ranks, op=dist.ReduceOp.MAX)
    return tuple(float(x) for x in values), float(clock)


def _run_summary(tcfg: TrainConfig, model: MirasolModel, ranks: Ranks, device: torch.device) -> str:
    cfg, budget = model.cfg, tcfg.budget_seconds
    n_params = sum(p.numel() for p in model.parameters())
    return (
        f"training {cfg.d_model}-wide model ({n_params / 1e6:.1f} M parameters, {cfg.combiner.kind} combiner) on "
        f"{'files of ' + tcfg.manifest if tcfg.manifest else 'synthetic clips'}: {tcfg.batch_size} clips x "
        f"{tcfg.questions_per_clip or 'all'} questions per step, {ranks.world} process(es) on {device.type}, "
        f"{'until step ' + str(tcfg.steps) if tcfg.steps else ''}{' or ' if tcfg.steps and budget else ''}"
        f"{format_time(budget) + ' min' if budget else ''}"
    )


def _print(line: str) -> None:
    print(line, flush=True)


def _silent(line: str) -> None:
    pass
