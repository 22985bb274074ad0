"""Several processes under torchrun: which one this is, and the loss module DistributedDataParallel wraps."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from mirasol_edge.model import MirasolModel
from mirasol_edge.train.loss import clip_batch_loss


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0  # the GPU of this process on its machine

    @property
    def main(self) -> bool:
        """Rank 0 logs and writes; the others only compute."""
        return self.rank == 0


def init_distributed(device: torch.device) -> tuple[Ranks, torch.device]:
    """Join torchrun's process group (nccl on CUDA, gloo on the CPU), if there is one; -> (ranks, this rank's device)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Ranks(), device
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    ranks = Ranks(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        device = torch.device("cuda", ranks.local_rank)
        torch.cuda.set_device(device)
    return ranks, device


class LossModule(nn.Module):
    """What DistributedDataParallel wraps: its forward is the whole loss."""

    def __init__(self, model: MirasolModel):
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, Tensor], counts: Tensor) -> dict[str, Tensor]:
        return clip_batch_loss(self.model, batch, counts)


def wrap_loss(model: MirasolModel, ranks: Ranks, device: torch.device) -> nn.Module:
    """The loss module, under DistributedDataParallel when there are several processes."""
    if ranks.world == 1:
        return LossModule(model)
    return nn.parallel.DistributedDataParallel(
        LossModule(model), device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=model.cfg.combiner.kind == "ttm",  # a 1-chunk clip leaves the TTM's write unused
    )


def reduce_over_ranks(tensor: Tensor, ranks: Ranks, op=dist.ReduceOp.SUM) -> Tensor:
    """All-reduce in place (a no-op in one process); returns the tensor."""
    if ranks.world > 1:
        dist.all_reduce(tensor, op=op)
    return tensor
