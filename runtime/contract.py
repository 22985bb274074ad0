"""The bundle contract, once: every graph's inputs and outputs by name, dtype and shape (docs/bundle.md).

Export builds its graphs from it and validates them against it, the runtime checks the sessions it
loads against it and feeds them by these names, `info` and `bench` name their stages by it. It needs
only the model config (a dict, as the manifest carries it), so it works without torch.

Dims: `batch` (streams or questions stepped together), `cache_len` (positions of the temporal and
cross caches: window * m, a ring of `window` chunk slots, chosen by the runtime), `text_cache_len`
(positions of the text self cache, at most max_text_len, chosen per batch of questions) and
`text_len` (tokens in one context decoder step) are symbolic; every other dim is fixed by the config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# 2: fixed-size caches (rings of chunk slots, a static text cache), batched positions;
# 3: a manifest without training-only fields or repeated data, the chunking rule and tokenizer stated (docs/bundle.md);
# 4: a summary memory's keys and values from their own graph (summary_kv), run when a question is asked, not every chunk;
# 5: a window decoder (window_context_decoder) answers the questions asked before any chunk has left the window
FORMAT = "mirasol-edge-bundle/5"
# What this runtime reads: a /4 bundle is a /5 one without a window decoder (the same manifest and graphs).
READABLE_FORMATS = (FORMAT, "mirasol-edge-bundle/4")

# The graphs of every bundle, in the order a chunk and then a question run through them.
COMPONENTS = ("audio_extractor", "video_extractor", "combiner", "temporal_decoder", "context_cross_kv", "context_decoder")
CHUNK_STAGES = COMPONENTS[:5]  # what one chunk runs through
SUMMARY_KV = "summary_kv"  # the seventh graph of a bundle with a summary memory: run before a question's prefill
# With ModelConfig.window_decoder: the context decoder of the questions asked while no chunk has left the window
# (chunks_seen <= the cross cache's slots); the context decoder then answers past the window only.
WINDOW_CONTEXT_DECODER = "window_context_decoder"
SYMBOLIC_DIMS = ("batch", "cache_len", "text_cache_len", "text_len")
ORT_TYPES = {"float32": "tensor(float)", "float16": "tensor(float16)", "uint8": "tensor(uint8)", "int64": "tensor(int64)"}  # as sessions report them


@dataclass(frozen=True)
class TensorSpec:
    """dtype (numpy name) and shape (ints, or names of symbolic dims) of one graph input or output."""

    dtype: str
    shape: tuple

    def to_dict(self) -> dict:
        return {"dtype": self.dtype, "shape": list(self.shape)}


@dataclass(frozen=True)
class GraphSpec:
    name: str
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]

    @property
    def file(self) -> str:
        return f"{self.name}.onnx"


@dataclass(frozen=True)
class Dims:
    """The fixed dims of a bundle's graphs, from its model config."""

    samples: int  # S: audio samples per chunk
    frames: int  # F: video frames per chunk
    frame_size: int  # H = W
    audio_tokens: int  # Na
    video_tokens: int  # Nv
    width: int  # D
    heads: int  # h
    latents: int  # m: latents per chunk, the positions one chunk takes in the temporal and cross caches
    memory: int  # M: TTM memory tokens (0: the Transformer combiner carries none)
    max_text_len: int  # L: the text context (position table); a text self cache holds at most L positions
    vocab: int  # V
    temporal_layers: int
    context_layers: int
    summary: int = 0  # Sm: summary tokens of the memory past the window (0: the window only)
    summary_order: int = 0  # the first of them related by time: each token's state also pools its time (1)
    window_decoder: bool = False  # questions inside the window have a context decoder of their own

    @property
    def summary_width(self) -> int:
        """Per summary token in its state: the pooled output (D), its pooled time (1, with summary_order) and
        the log of its softmax denominator (1): model/summary.py."""
        return self.width + (1 if self.summary_order else 0) + 1

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    @classmethod
    def from_config(cls, config: dict, video_tokens: int | None = None) -> "Dims":
        """config: ModelConfig.to_dict(); video_tokens: Nv when a torchvision backbone sets it (else from the tubelets)."""
        chunk, audio, video = config["chunk"], config["audio"], config["video"]
        frames = round(chunk["chunk_seconds"] * chunk["fps"])
        samples = round(chunk["chunk_seconds"] * chunk["sample_rate"])
        spectrogram_frames = samples // audio["hop_length"] + 1  # centred STFT frames
        if video_tokens is None:
            video_tokens = (frames // video["tubelet_frames"]) * (chunk["frame_size"] // video["patch_size"]) ** 2
        combiner = config["combiner"]
        return cls(
            samples=samples, frames=frames, frame_size=chunk["frame_size"],
            audio_tokens=(audio["n_mels"] // audio["patch_mels"]) * (spectrogram_frames // audio["patch_frames"]),
            video_tokens=video_tokens, width=config["d_model"], heads=config["n_heads"], latents=combiner["latents"],
            memory=combiner["memory"] if combiner["kind"] == "ttm" else 0, max_text_len=config["max_text_len"],
            vocab=config["vocab_size"], temporal_layers=config["temporal_layers"], context_layers=config["context_layers"],
            summary=config.get("summary_tokens", OPTIONAL["summary_tokens"]),
            summary_order=config.get("summary_order", OPTIONAL["summary_order"]),
            window_decoder=config.get("window_decoder", OPTIONAL["window_decoder"]),
        )


def cache_names(kind: str, layers: int) -> list[str]:
    """kind past/present/cross/present_cross -> [kind_key.0, kind_value.0, kind_key.1, ...]."""
    return [f"{kind}_{part}.{i}" for i in range(layers) for part in ("key", "value")]


def component_names(summary_tokens: int, window_decoder: bool = False) -> tuple[str, ...]:
    """COMPONENTS, with SUMMARY_KV (when the model has summary tokens) and WINDOW_CONTEXT_DECODER (with a window
    decoder) before the context decoder."""
    extra = (SUMMARY_KV,) * bool(summary_tokens) + (WINDOW_CONTEXT_DECODER,) * bool(window_decoder)
    return (*COMPONENTS[:-1], *extra, COMPONENTS[-1])


def config_components(config: dict) -> tuple[str, ...]:
    """The graphs of a bundle with this model config (a dict, as the manifest carries it)."""
    return component_names(config.get("summary_tokens", OPTIONAL["summary_tokens"]),
                           config.get("window_decoder", OPTIONAL["window_decoder"]))


def graph_specs(dims: Dims) -> dict[str, GraphSpec]:
    """The graphs of a bundle (six, seven with a summary memory, eight with a window decoder too): name -> GraphSpec,
    in run order."""
    d, h, hd, m = dims.width, dims.heads, dims.head_dim, dims.latents
    f32, i64 = "float32", "int64"
    per_stream = TensorSpec(i64, ("batch",))

    def cache(length) -> TensorSpec:
        return TensorSpec(f32, ("batch", h, length, hd))

    audio = TensorSpec(f32, ("batch", dims.audio_tokens, d))
    video = TensorSpec(f32, ("batch", dims.video_tokens, d))
    combiner_in = {"audio_tokens": audio, "video_tokens": video}
    combiner_out = {"latents": TensorSpec(f32, ("batch", m, d))}
    if dims.memory:
        combiner_in["memory"] = combiner_out["memory_out"] = TensorSpec(f32, ("batch", dims.memory, d))
    lt, lc = dims.temporal_layers, dims.context_layers
    # The memory past the window: context_cross_kv rewrites it from each chunk's features; summary_kv gives
    # its keys and values when a question is asked (not every chunk: they are most of the summary's cost),
    # which the context decoder attends to beside the cross cache.
    summary_in, summary_out, summary_kv = {}, {}, {}
    if dims.summary:
        summary_in["summary"] = summary_out["summary_out"] = TensorSpec(f32, ("batch", dims.summary, dims.summary_width))
        summary_kv = {n: cache(dims.summary) for n in cache_names("summary", lc)}
    specs = [
        GraphSpec("audio_extractor", {"waveform": TensorSpec(f32, ("batch", dims.samples))}, {"audio_tokens": audio}),
        GraphSpec("video_extractor",
                  {"frames": TensorSpec("uint8", ("batch", dims.frames, dims.frame_size, dims.frame_size, 3))},
                  {"video_tokens": video}),
        GraphSpec("combiner", combiner_in, combiner_out),
        GraphSpec("temporal_decoder",
                  {"latents": TensorSpec(f32, ("batch", m, d)), "chunk_position": per_stream,
                   **{n: cache("cache_len") for n in cache_names("past", lt)}},
                  {"features": TensorSpec(f32, ("batch", m, d)),
                   **{n: cache("cache_len") for n in cache_names("present", lt)}}),
        GraphSpec("context_cross_kv",
                  {"features": TensorSpec(f32, ("batch", m, d)), "chunk_position": per_stream,
                   **{n: cache("cache_len") for n in cache_names("cross", lc)}, **summary_in},
                  {**{n: cache("cache_len") for n in cache_names("present_cross", lc)}, **summary_out}),
    ]

    def context_decoder(name: str, summary: dict) -> GraphSpec:
        return GraphSpec(name,
                         {"tokens": TensorSpec(i64, ("batch", "text_len")), "text_position": per_stream, "chunks_seen": per_stream,
                          **{n: cache("text_cache_len") for n in cache_names("past", lc)},
                          **{n: cache("cache_len") for n in cache_names("cross", lc)}, **summary},
                         {"logits": TensorSpec(f32, ("batch", "text_len", dims.vocab)),
                          **{n: cache("text_cache_len") for n in cache_names("present", lc)}})

    if dims.summary:
        specs.append(GraphSpec(SUMMARY_KV, summary_in, summary_kv))
    if dims.window_decoder:  # never attends to the summary
        specs.append(context_decoder(WINDOW_CONTEXT_DECODER, {}))
    specs.append(context_decoder("context_decoder", summary_kv))
    assert [s.name for s in specs] == list(component_names(dims.summary, dims.window_decoder))
    return {s.name: s for s in specs}


# What flows back in: output of one step -> input of the next (the stream's state, and a question's).
def temporal_state(dims: Dims) -> dict[str, str]:
    """temporal_decoder outputs -> its inputs at the next chunk."""
    return dict(zip(cache_names("present", dims.temporal_layers), cache_names("past", dims.temporal_layers)))


def cross_state(dims: Dims) -> dict[str, str]:
    """context_cross_kv outputs -> its inputs at the next chunk (and the context decoder's cross inputs)."""
    return dict(zip(cache_names("present_cross", dims.context_layers), cache_names("cross", dims.context_layers)))


def summary_state(dims: Dims) -> dict[str, str]:
    """context_cross_kv's summary output -> its input at the next chunk (and summary_kv's when a question is
    asked, whose outputs are the context decoder's inputs of the same names). Empty without a summary memory."""
    return {"summary_out": "summary"} if dims.summary else {}


def text_state(dims: Dims) -> dict[str, str]:
    """context_decoder outputs -> its inputs at the next token."""
    return dict(zip(cache_names("present", dims.context_layers), cache_names("past", dims.context_layers)))


# -- what a config and a manifest must hold (one sentence per fault) ------------------------------

MAX_DIM = 1 << 16  # widths, token counts, windows: far past any preset, far below what would exhaust memory
_SECTIONS: dict[str | None, dict[str, tuple[type, Any, Any]]] = {  # section -> field -> (type, low, high); None: the top level
    "chunk": {"chunk_seconds": (float, 1e-3, 3600.0), "fps": (int, 1, 1000), "frame_size": (int, 8, 4096),
              "sample_rate": (int, 1000, 384_000)},
    "audio": {"n_mels": (int, 1, 1024), "n_fft": (int, 16, 1 << 15), "hop_length": (int, 1, 1 << 15),
              "patch_mels": (int, 1, 1024), "patch_frames": (int, 1, 4096), "layers": (int, 0, 256)},
    "video": {"tubelet_frames": (int, 1, 1024), "patch_size": (int, 4, 4096), "layers": (int, 0, 256), "backbone": (str, None, None)},
    "combiner": {"kind": (str, None, None), "latents": (int, 1, 4096), "layers": (int, 0, 256), "memory": (int, 1, 4096)},
    None: {"d_model": (int, 1, MAX_DIM), "n_heads": (int, 1, 1024), "mlp_ratio": (int, 1, 64), "temporal_layers": (int, 1, 256),
           "temporal_window": (int, 1, MAX_DIM), "context_layers": (int, 1, 256), "max_text_len": (int, 3, MAX_DIM),
           "vocab_size": (int, 1, MAX_DIM), "summary_tokens": (int, 0, 4096),
           "summary_order": (int, 0, 4096), "window_decoder": (bool, None, None)},
}
# top-level fields older configs lack, and the value that means "none"
OPTIONAL = {"summary_tokens": 0, "summary_order": 0, "window_decoder": False}


def bundle_config(config: dict) -> dict:
    """A model config (ModelConfig.to_dict()) as a bundle carries it (docs/bundle.md): the fields above only,
    so nothing of training's (loss weights, event classes), and a Transformer combiner without a memory size."""
    out = {}
    for key, value in config.items():
        if key in _SECTIONS:
            out[key] = {k: v for k, v in value.items() if k in _SECTIONS[key]}
        elif key in _SECTIONS[None]:
            out[key] = value
    if out["combiner"]["kind"] != "ttm":
        del out["combiner"]["memory"]
    for key, none in OPTIONAL.items():  # a window-only model's manifest stays as it was
        if out.get(key, none) == none:
            out.pop(key, None)
    return out


def config_faults(config) -> list[str]:
    """What is wrong with a model config dict (ModelConfig.to_dict()), one sentence each; [] if nothing.

    Types, ranges and the consistency the model's shapes need; used for bundles and checkpoints alike,
    so a hand-edited config is refused with a reason instead of failing somewhere inside.
    """
    if not isinstance(config, dict):
        return [f"the model config is {type(config).__name__}, not a mapping"]
    faults = []
    for section, fields in _SECTIONS.items():
        where = config if section is None else config.get(section)
        if not isinstance(where, dict):
            faults.append(f"the model config has no '{section}' section")
            continue
        for name, (kind, low, high) in fields.items():
            if section == "combiner" and name == "memory" and where.get("kind") != "ttm":
                continue  # only a TTM carries a memory: a bundle's Transformer combiner states none
            label = name if section is None else f"{section}.{name}"
            value = where.get(name, OPTIONAL.get(name) if section is None else None)
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
                faults.append(f"config {label} is {value!r}, not a{'n' if kind is int else ''} {kind.__name__}")
            elif low is not None and not low <= value <= high:  # NaN fails this too
                faults.append(f"config {label} is {value!r}, outside {low}..{high}")
    if faults:
        return faults
    chunk, audio, video, combiner = config["chunk"], config["audio"], config["video"], config["combiner"]
    for what, per_second in (("fps", chunk["fps"]), ("sample_rate", chunk["sample_rate"])):
        count = chunk["chunk_seconds"] * per_second
        if abs(count - round(count)) > 1e-6 or round(count) < 1:
            faults.append(f"config chunk.chunk_seconds x chunk.{what} is {count:g}, not a whole number of samples")
    if faults:
        return faults
    frames = round(chunk["chunk_seconds"] * chunk["fps"])
    checks = [
        (config["d_model"] % config["n_heads"] == 0, "config d_model must be a multiple of n_heads"),
        (combiner["kind"] in ("transformer", "ttm"), f"config combiner.kind is {combiner['kind']!r}, not transformer or ttm"),
        (video["backbone"] in ("tubelet", "r3d_18", "mc3_18", "r2plus1d_18"), f"config video.backbone {video['backbone']!r} is unknown"),
        (frames % video["tubelet_frames"] == 0, "config video.tubelet_frames must divide the frames of a chunk"),
        (chunk["frame_size"] % video["patch_size"] == 0, "config video.patch_size must divide chunk.frame_size"),
        (video["patch_size"] % 4 == 0, "config video.patch_size must be a multiple of 4 (the stem downsamples 4x)"),
        (audio["n_mels"] % audio["patch_mels"] == 0, "config audio.patch_mels must divide audio.n_mels"),
        (round(chunk["chunk_seconds"] * chunk["sample_rate"]) // audio["hop_length"] + 1 >= audio["patch_frames"],
         "config audio.patch_frames is longer than a chunk's spectrogram"),
        (not config.get("window_decoder") or config.get("summary_tokens"),
         "config window_decoder needs summary_tokens: it answers while the summary is not attended"),
    ]
    return [message for ok, message in checks if not ok]


def signature_faults(inputs: dict[str, TensorSpec], outputs: dict[str, TensorSpec], session, exact: bool) -> list[str]:
    """How an onnxruntime session's inputs and outputs differ from the contract's, bound by name.

    exact (the exporter's check): the same names and the same symbolic dim names too; otherwise
    (the runtime's check) every contract name must be there with its dtype and fixed dims.
    """
    faults = []
    for kind, want, args in (("input", inputs, session.get_inputs()), ("output", outputs, session.get_outputs())):
        have = {a.name: a for a in args}
        if exact and set(have) != set(want):
            faults.append(f"its {kind}s {sorted(have)} differ from the contract's {sorted(want)}")
            continue
        for name, spec in want.items():
            arg = have.get(name)
            if arg is None:
                faults.append(f"it has no {kind} named {name!r}")
                continue
            same_dims = len(arg.shape) == len(spec.shape) and all(
                g == w if exact or not isinstance(w, str) else True for g, w in zip(arg.shape, spec.shape))
            if arg.type != ORT_TYPES[spec.dtype] or not same_dims:
                faults.append(f"its {kind} {name} is {arg.type} {list(arg.shape)}, the contract says "
                              f"{spec.dtype} {list(spec.shape)}")
    return faults
