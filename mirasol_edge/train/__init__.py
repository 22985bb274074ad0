"""Training: AdamW, warm-up + cosine schedule, gradient clipping, mixed precision on GPU, resumable
checkpoints, a time budget, and multi-process data parallelism under torchrun (gloo on CPU, nccl on GPU).

A global batch is `batch_size` clips with `questions_per_clip` questions each; every clip is encoded
once for all its questions. Under torchrun each rank takes its contiguous slice of the global batch
and the loss is normalised over the whole global batch, so N processes take the same step as one.

- config: TrainConfig;
- loss: the training loss (answer cross-entropy + weighted next-chunk latent loss + event loss);
- schedule: the learning rate per step;
- sampler: which clips each rank reads, in which order;
- distributed, precision: torchrun's process group and DDP; mixed precision;
- loop: train(), step by step; resume: its checkpoint; progress, plots: what it reports.
"""

from mirasol_edge.train.config import TrainConfig
from mirasol_edge.train.loop import train
from mirasol_edge.train.loss import clip_batch_loss
from mirasol_edge.train.progress import LOG
from mirasol_edge.train.resume import CHECKPOINT, LOSS_PLOT
from mirasol_edge.train.sampler import GlobalBatchSampler
from mirasol_edge.train.schedule import learning_rate

__all__ = ["CHECKPOINT", "LOG", "LOSS_PLOT", "GlobalBatchSampler", "TrainConfig", "clip_batch_loss", "learning_rate", "train"]
