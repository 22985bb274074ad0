"""TrainConfig: everything a training run is asked to do, saved in its checkpoint to resume it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from mirasol_edge.config import ModelConfig, preset
from mirasol_edge.data.synth import EVENT_CLASSES

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
    off_grid_fraction: float = 0.0  # synthetic clips with events off the chunk grid (synth's off_grid mode)
    near_change: float = 0.0  # of their sounds, the fraction placed against a shape change (synth's near_change)
    init_from: str | None = None  # start from this checkpoint's weights (same config; a new optimizer and schedule)
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

    @property
    def budget_seconds(self) -> float | None:
        """The time budget in seconds (None: none)."""
        return self.minutes * 60 if self.minutes else None

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
