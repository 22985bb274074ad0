"""Model configuration: plain dataclasses, saved inside every checkpoint and bundle."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

from mirasol_edge.runtime.chunking import ChunkSpec
from mirasol_edge.runtime.contract import config_faults
from mirasol_edge.runtime.tokenizer import VOCAB_SIZE


@dataclass(frozen=True)
class AudioConfig:
    n_mels: int = 32  # mel bins of the log-mel spectrogram
    n_fft: int = 400  # 25 ms window at 16 kHz
    hop_length: int = 160  # 10 ms hop: spectrogram frames per chunk = samples // hop + 1
    patch_mels: int = 16  # a spectrogram patch spans this many mel bins ...
    patch_frames: int = 20  # ... and this many 10 ms frames
    layers: int = 1


@dataclass(frozen=True)
class VideoConfig:
    tubelet_frames: int = 2  # a tubelet spans this many frames ...
    patch_size: int = 16  # ... and patch_size x patch_size pixels
    layers: int = 1
    backbone: str = "tubelet"  # "tubelet" (ViT-style) or a torchvision video net: r3d_18, mc3_18, r2plus1d_18


@dataclass(frozen=True)
class CombinerConfig:
    kind: str = "transformer"  # "transformer" (keep the last m outputs) or "ttm" (Token Turing Machine)
    latents: int = 4  # m: latent tokens per chunk handed to the temporal decoder
    layers: int = 1
    memory: int = 8  # TTM memory tokens carried from chunk to chunk


@dataclass(frozen=True)
class ModelConfig:
    chunk: ChunkSpec = field(default_factory=ChunkSpec)
    d_model: int = 32  # width of every transformer in the model
    n_heads: int = 2
    mlp_ratio: int = 4
    audio: AudioConfig = field(default_factory=AudioConfig)
    video: VideoConfig = field(default_factory=VideoConfig)
    combiner: CombinerConfig = field(default_factory=CombinerConfig)
    temporal_layers: int = 1
    temporal_window: int = 32  # past chunks a chunk attends to; caps the temporal and cross caches
    # memory past the window: S summary tokens rewritten from every chunk's features and cross-attended
    # by the context decoder beside the window (model/summary.py); 0: the window only
    summary_tokens: int = 0
    # what one summary entry is: each of a chunk's m latents ("latent", the first design, which older
    # checkpoints have) or the whole chunk, its m latents side by side ("chunk"): RESULTS.md
    summary_pooling: str = "latent"
    # the context decoder attends to the summary only once a chunk has left the window (False: always, as
    # older checkpoints do); before that the window holds every chunk, and short clips answer from it alone
    summary_after_window: bool = False
    # the first summary_order summary tokens (the supervised ones: a sound, a colour) also carry, as content,
    # which of the others found something later and which earlier than they did, from the exact mean time each
    # pooled (model/summary.py): "which came first" is then read, not computed (0: none, as older checkpoints)
    summary_order: int = 0
    # questions asked before any chunk has left the window go to a second context decoder, the window-only
    # model's, kept as it was trained (it shares the cross keys and values, so one cross cache serves both);
    # the one trained with the summary answers past the window only (needs summary_after_window)
    window_decoder: bool = False
    context_layers: int = 1
    max_text_len: int = 96  # text context: question + answer tokens, bos/sep/eos included
    vocab_size: int = VOCAB_SIZE
    latent_loss_weight: float = 0.1  # weight of the next-chunk latent loss beside the answer loss
    # training-only head on each chunk's temporal features: classes per event attribute (empty: none)
    event_classes: tuple[int, ...] = ()
    event_loss_weight: float = 0.0  # weight of its cross-entropy beside the answer loss

    def __post_init__(self):
        assert self.d_model % self.n_heads == 0, "d_model must be divisible by n_heads"
        assert self.chunk.frames_per_chunk % self.video.tubelet_frames == 0, "tubelets must tile a chunk"
        assert self.chunk.frame_size % self.video.patch_size == 0, "patches must tile a frame"
        assert self.video.patch_size % 4 == 0, "the video stem downsamples 4x: patch_size must be a multiple of 4"
        assert self.audio.n_mels % self.audio.patch_mels == 0, "patches must tile the mel bins"
        assert self.combiner.kind in ("transformer", "ttm"), f"unknown combiner {self.combiner.kind!r}"
        assert self.summary_pooling in ("latent", "chunk"), f"unknown summary pooling {self.summary_pooling!r}"
        assert 0 <= self.summary_order <= self.summary_tokens, "summary_order relates some of the summary tokens"
        assert not self.window_decoder or (self.summary_tokens and self.summary_after_window), \
            "a window decoder answers while the summary is not attended: it needs summary tokens attended after the window"

    @property
    def audio_tokens(self) -> int:
        """Na: audio tokens per chunk."""
        frames = self.chunk.samples_per_chunk // self.audio.hop_length + 1  # centred STFT frames
        return (self.audio.n_mels // self.audio.patch_mels) * (frames // self.audio.patch_frames)

    @property
    def video_tokens(self) -> int:
        """Nv: video tokens per chunk (tubelet backbone)."""
        t = self.chunk.frames_per_chunk // self.video.tubelet_frames
        return t * (self.chunk.frame_size // self.video.patch_size) ** 2

    def to_dict(self) -> dict:
        """JSON-shaped (lists, not tuples): what json.loads gives back from the bundle's metadata."""
        return {**asdict(self), "event_classes": list(self.event_classes)}

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        """The config of a checkpoint or bundle; ValueError, in one sentence, for one that cannot be built."""
        faults = config_faults(d)
        if faults:
            raise ValueError(faults[0])
        d = {k: v for k, v in d.items() if k in {f.name for f in fields(cls)}}
        return cls(
            chunk=ChunkSpec(**_known(ChunkSpec, d.pop("chunk"))),
            audio=AudioConfig(**_known(AudioConfig, d.pop("audio"))),
            video=VideoConfig(**_known(VideoConfig, d.pop("video"))),
            combiner=CombinerConfig(**_known(CombinerConfig, d.pop("combiner"))),
            **{k: tuple(v) if k == "event_classes" else v for k, v in d.items()},
        )


def _known(cls, d: dict) -> dict:
    return {k: v for k, v in d.items() if k in {f.name for f in fields(cls)}}


def _preset(name: str) -> ModelConfig:
    if name == "tiny":  # tests: seconds on CPU
        return ModelConfig()
    if name == "small":  # the edge default: 1 s chunks (a new answer every second), 2.79 M parameters
        return ModelConfig(
            chunk=ChunkSpec(chunk_seconds=1.0, fps=4, frame_size=64),
            d_model=128, n_heads=4,
            audio=AudioConfig(n_mels=64, patch_mels=64, patch_frames=5, layers=2),  # 50 ms full-band tokens
            video=VideoConfig(tubelet_frames=2, patch_size=16, layers=2),
            combiner=CombinerConfig(kind="transformer", latents=4, layers=2, memory=16),
            temporal_layers=2, context_layers=3, max_text_len=128, temporal_window=64,
            latent_loss_weight=0.0,
        )
    if name == "base":
        return ModelConfig(
            chunk=ChunkSpec(chunk_seconds=2.0, fps=8, frame_size=128),
            d_model=512, n_heads=8,
            audio=AudioConfig(n_mels=80, patch_mels=16, patch_frames=16, layers=4),
            video=VideoConfig(tubelet_frames=2, patch_size=16, layers=4),
            combiner=CombinerConfig(kind="transformer", latents=16, layers=2, memory=32),
            temporal_layers=4, context_layers=6, max_text_len=256, temporal_window=128,
        )
    if name == "mirasol3b":  # paper scale (~3B parameters); build on the meta device to count
        return ModelConfig(
            chunk=ChunkSpec(chunk_seconds=2.0, fps=8, frame_size=224),
            d_model=2048, n_heads=16,
            audio=AudioConfig(n_mels=80, patch_mels=16, patch_frames=16, layers=12),
            video=VideoConfig(tubelet_frames=2, patch_size=16, layers=12),
            combiner=CombinerConfig(kind="ttm", latents=32, layers=4, memory=64),
            temporal_layers=8, context_layers=16, max_text_len=512, temporal_window=128,
        )
    raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}.")


PRESETS = ("tiny", "small", "base", "mirasol3b")


def preset(name: str, **overrides) -> ModelConfig:
    """A named configuration, with top-level fields overridden (e.g. combiner=CombinerConfig(kind="ttm"))."""
    return replace(_preset(name), **overrides)
