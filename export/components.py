"""One exporter per component: small wrappers that take and return named, flat tensors.

Each `Component` says what docs/bundle.md fixes for one graph: its file, its inputs and outputs
(dtype and shape, symbolic dims as strings), the dims it is traced with and the dims it is
validated with (other values: batch 1 and 3, empty / one-chunk / several-chunk caches, one and
several text tokens). `export_component` traces the wrapper with torch.onnx.export(dynamo=True)
and writes the graph with exactly those names and dims.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from mirasol_edge.config import ModelConfig
from mirasol_edge.model import MirasolModel

MAX_BATCH = 4096  # upper bound torch.export needs for the symbolic batch dim
MAX_CACHE = 1 << 20  # upper bound of the temporal and cross cache lengths (positions)
EXTERNAL_DATA_BYTES = 3 << 29  # graphs with 1.5 GiB of weights and up keep them in <file>.data: protobuf stops at 2 GiB


@dataclass(frozen=True)
class TensorSpec:
    """dtype (numpy name) and shape (ints, or dim names for the symbolic dims) of one graph input/output."""

    dtype: str
    shape: tuple
    sample: str = "normal"  # how validation draws it: normal, waveform, pixels, tokens, position

    def to_dict(self) -> dict:
        return {"dtype": self.dtype, "shape": list(self.shape)}


@dataclass
class Component:
    name: str
    module: nn.Module  # positional inputs in `inputs` order -> a tensor or a tuple in `outputs` order
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]
    trace: dict[str, int]  # values of the symbolic dims (and chunk_position) when tracing
    checks: list[dict[str, int]] = field(default_factory=list)  # values for validation, all different from `trace`
    dim_ranges: dict[str, tuple[int, int]] = field(default_factory=dict)  # min, max of each symbolic dim
    vocab_size: int = 0

    @property
    def file(self) -> str:
        return f"{self.name}.onnx"

    def sample(self, dims: dict[str, int], rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Random inputs whose symbolic dims take the values in `dims`."""
        return {name: _draw(spec, dims, rng, self.vocab_size) for name, spec in self.inputs.items()}

    @torch.no_grad()
    def run_torch(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The PyTorch reference: the wrapper run on `feeds`, outputs by name."""
        out = self.module(*(torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in self.inputs))
        out = out if isinstance(out, tuple) else (out,)
        return {name: t.numpy() for name, t in zip(self.outputs, out)}


def cache_names(kind: str, layers: int) -> list[str]:
    """kind past/present/cross -> [kind_key.0, kind_value.0, kind_key.1, ...]."""
    return [f"{kind}_{part}.{i}" for i in range(layers) for part in ("key", "value")]


def _pairs(flat) -> list[tuple[Tensor, Tensor]]:
    return [(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]


def _flat(pairs) -> tuple[Tensor, ...]:
    return tuple(t for kv in pairs for t in kv)


# -- wrappers: the model's modules with named flat tensors in and out --------------------------


class AudioExtractorGraph(nn.Module):
    def __init__(self, model: MirasolModel):
        super().__init__()
        self.extractor = model.audio_extractor

    def forward(self, waveform: Tensor) -> Tensor:
        return self.extractor(waveform)


class VideoExtractorGraph(nn.Module):
    def __init__(self, model: MirasolModel):
        super().__init__()
        self.extractor = model.video_extractor

    def forward(self, frames: Tensor) -> Tensor:
        return self.extractor(frames)


class CombinerGraph(nn.Module):
    def __init__(self, model: MirasolModel):
        super().__init__()
        self.combiner = model.combiner

    def forward(self, audio_tokens: Tensor, video_tokens: Tensor, memory: Tensor | None = None):
        latents, memory_out = self.combiner(audio_tokens, video_tokens, memory)
        return latents if memory is None else (latents, memory_out)


class TemporalDecoderGraph(nn.Module):
    """One chunk: latents, chunk_position, past_key.{i}/past_value.{i} -> features, present_*."""

    def __init__(self, model: MirasolModel):
        super().__init__()
        self.decoder = model.temporal_decoder

    def forward(self, latents: Tensor, chunk_position: Tensor, *past: Tensor):
        features, present = self.decoder(latents, chunk_position, _pairs(past))
        return (features, *_flat(present))


class ContextCrossKVGraph(nn.Module):
    def __init__(self, model: MirasolModel):
        super().__init__()
        self.decoder = model.context_decoder

    def forward(self, features: Tensor):
        return _flat(self.decoder.cross_keys_values(features))


class ContextDecoderGraph(nn.Module):
    """tokens, past_* (self-attention cache), cross_* (the stream's cross cache) -> logits, present_*."""

    def __init__(self, model: MirasolModel):
        super().__init__()
        self.decoder = model.context_decoder
        self.layers = len(model.context_decoder.blocks)

    def forward(self, tokens: Tensor, *caches: Tensor):
        past, cross = caches[: 2 * self.layers], caches[2 * self.layers :]
        logits, present = self.decoder(tokens, _pairs(cross), _pairs(past))
        return (logits, *_flat(present))


# -- the components of a bundle ----------------------------------------------------------------


def build_components(model: MirasolModel) -> list[Component]:
    """The six graphs of docs/bundle.md, in the order a chunk and a question run through them."""
    cfg: ModelConfig = model.cfg
    spec = cfg.chunk
    d, h, m = cfg.d_model, cfg.n_heads, cfg.combiner.latents
    hd, f32 = d // h, "float32"
    na, nv = cfg.audio_tokens, _video_tokens(model)
    batch = (1, MAX_BATCH)
    tokens_a = TensorSpec(f32, ("batch", na, d))
    tokens_v = TensorSpec(f32, ("batch", nv, d))

    def cache(length: str) -> TensorSpec:
        return TensorSpec(f32, ("batch", h, length, hd))

    per_batch = [{"batch": 1}, {"batch": 3}]
    components = [
        Component(
            "audio_extractor", AudioExtractorGraph(model),
            {"waveform": TensorSpec(f32, ("batch", spec.samples_per_chunk), "waveform")},
            {"audio_tokens": tokens_a},
            trace={"batch": 2}, checks=per_batch, dim_ranges={"batch": batch},
        ),
        Component(
            "video_extractor", VideoExtractorGraph(model),
            {"frames": TensorSpec("uint8", ("batch", spec.frames_per_chunk, spec.frame_size, spec.frame_size, 3), "pixels")},
            {"video_tokens": tokens_v},
            trace={"batch": 2}, checks=per_batch, dim_ranges={"batch": batch},
        ),
    ]
    combiner_in = {"audio_tokens": tokens_a, "video_tokens": tokens_v}
    combiner_out = {"latents": TensorSpec(f32, ("batch", m, d))}
    if model.combiner.has_memory:
        combiner_in["memory"] = combiner_out["memory_out"] = TensorSpec(f32, ("batch", cfg.combiner.memory, d))
    components.append(
        Component("combiner", CombinerGraph(model), combiner_in, combiner_out,
                  trace={"batch": 2}, checks=per_batch, dim_ranges={"batch": batch})
    )

    lt, lc = cfg.temporal_layers, cfg.context_layers
    several = min(5, cfg.temporal_window)  # chunks in a well-filled cache, within the window
    components.append(
        Component(
            "temporal_decoder", TemporalDecoderGraph(model),
            {"latents": TensorSpec(f32, ("batch", m, d)), "chunk_position": TensorSpec("int64", (), "position"),
             **{n: cache("past_len") for n in cache_names("past", lt)}},
            {"features": TensorSpec(f32, ("batch", m, d)), **{n: cache(f"past_len + {m}") for n in cache_names("present", lt)}},
            # past_len and chunk_position differ: a windowed stream's cache starts after chunk 0
            trace={"batch": 2, "past_len": 2 * m, "chunk_position": 3},
            checks=[{"batch": 1, "past_len": 0, "chunk_position": 0},
                    {"batch": 3, "past_len": m, "chunk_position": 1},
                    {"batch": 1, "past_len": several * m, "chunk_position": several + 4}],
            dim_ranges={"batch": batch, "past_len": (0, MAX_CACHE)},
        )
    )
    components.append(
        Component(
            "context_cross_kv", ContextCrossKVGraph(model),
            {"features": TensorSpec(f32, ("batch", "cross_len", d))},
            {n: cache("cross_len") for n in cache_names("cross", lc)},
            trace={"batch": 2, "cross_len": 2 * m},
            checks=[{"batch": 1, "cross_len": m}, {"batch": 3, "cross_len": several * m}],
            dim_ranges={"batch": batch, "cross_len": (1, MAX_CACHE)},
        )
    )
    t = cfg.max_text_len
    prompt = min(7, t - 1)
    components.append(
        Component(
            "context_decoder", ContextDecoderGraph(model),
            {"tokens": TensorSpec("int64", ("batch", "text_len"), "tokens"),
             **{n: cache("past_len") for n in cache_names("past", lc)},
             **{n: cache("cross_len") for n in cache_names("cross", lc)}},
            {"logits": TensorSpec(f32, ("batch", "text_len", cfg.vocab_size)),
             **{n: cache("past_len + text_len") for n in cache_names("present", lc)}},
            trace={"batch": 2, "text_len": 3, "past_len": 5, "cross_len": 2 * m},
            checks=[{"batch": 1, "text_len": prompt, "past_len": 0, "cross_len": m},  # prefill
                    {"batch": 3, "text_len": 1, "past_len": 1, "cross_len": several * m},
                    {"batch": 1, "text_len": 1, "past_len": t - 2, "cross_len": 3 * m}],  # last position
            dim_ranges={"batch": batch, "text_len": (1, t), "past_len": (0, t - 1), "cross_len": (1, MAX_CACHE)},
            vocab_size=cfg.vocab_size,
        )
    )
    for c in components:
        c.module.eval()
    return components


def _video_tokens(model: MirasolModel) -> int:
    if model.cfg.video.backbone == "tubelet":
        return model.cfg.video_tokens
    s = model.cfg.chunk  # a torchvision backbone: its output grid, measured once
    frames = torch.zeros(1, s.frames_per_chunk, s.frame_size, s.frame_size, 3, dtype=torch.uint8)
    with torch.no_grad():
        return model.video_extractor(frames).shape[1]


def _draw(spec: TensorSpec, dims: dict[str, int], rng: np.random.Generator, vocab: int) -> np.ndarray:
    shape = tuple(dims[s] if isinstance(s, str) else s for s in spec.shape)
    if spec.sample == "position":
        return np.array(dims["chunk_position"], dtype=np.int64)
    if spec.sample == "pixels":
        return rng.integers(0, 256, shape, dtype=np.uint8)
    if spec.sample == "tokens":
        return rng.integers(0, vocab, shape, dtype=np.int64)
    if spec.sample == "waveform":  # a loud tone over noise: a spectrum with a large dynamic range
        t = np.arange(shape[-1]) / 16_000
        freq, phase = rng.uniform(100, 4000, (*shape[:-1], 1)), rng.uniform(0, 2 * np.pi, (*shape[:-1], 1))
        noise = rng.uniform(-1, 1, shape) * 10 ** rng.uniform(-3, -0.5, (*shape[:-1], 1))
        return (0.8 * np.sin(2 * np.pi * freq * t + phase) + noise).clip(-1, 1).astype(np.float32)
    return rng.standard_normal(shape, dtype=np.float32)


# -- export --------------------------------------------------------------------------------------


def export_component(component: Component, path: Path, opset: int, metadata: dict[str, str],
                     external_data: bool | None = None) -> bool:
    """Trace `component` and write it to `path`, its weights in `path`.data next to it if
    external_data (None: if they reach EXTERNAL_DATA_BYTES). Returns whether they are."""
    import onnx_ir as ir
    from torch.export import Dim

    dims = {name: Dim(name, min=lo, max=hi) for name, (lo, hi) in component.dim_ranges.items()}
    example = component.sample(component.trace, np.random.default_rng(1234))
    args = tuple(torch.from_numpy(example[n]) for n in component.inputs)
    shapes = [{axis: dims[s] for axis, s in enumerate(spec.shape) if isinstance(s, str)} or None
              for spec in component.inputs.values()]
    dynamic_shapes = _nest_varargs(component.module, shapes)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # the exporter's progress and dim-renaming notes
        program = torch.onnx.export(
            component.module, args, input_names=list(component.inputs), output_names=list(component.outputs),
            dynamic_shapes=dynamic_shapes, opset_version=opset, dynamo=True, optimize=True, verbose=False,
        )
    graph = program.model.graph
    _set_signature(graph.inputs, component.inputs, component.name)
    _set_signature(graph.outputs, component.outputs, component.name)
    program.model.metadata_props.update(metadata)
    if external_data is None:
        external_data = sum(v.const_value.nbytes for v in graph.initializers.values() if v.const_value is not None) >= EXTERNAL_DATA_BYTES
    ir.save(program.model, path, external_data=f"{path.name}.data" if external_data else None)
    return external_data


def _nest_varargs(module: nn.Module, shapes: list):
    """torch.export wants the *args of a forward as one nested tuple of dynamic shapes."""
    import inspect

    params = list(inspect.signature(module.forward).parameters.values())
    fixed = [p for p in params if p.kind != p.VAR_POSITIONAL]
    if len(fixed) == len(params):
        return tuple(shapes)
    return (*shapes[: len(fixed)], tuple(shapes[len(fixed):]))


def _set_signature(values, specs: dict[str, TensorSpec], component: str) -> None:
    """Check the traced names, dtypes and fixed dims against the contract, and name the symbolic dims."""
    import onnx_ir as ir

    names = [v.name for v in values]
    assert names == list(specs), f"{component}: graph I/O {names} differ from the contract {list(specs)}"
    for value in values:
        spec = specs[value.name]
        assert value.dtype == ir.DataType.from_numpy(np.dtype(spec.dtype)), f"{component}.{value.name}: dtype {value.dtype}"
        traced = list(value.shape) if value.shape is not None else None
        assert traced is not None and len(traced) == len(spec.shape), f"{component}.{value.name}: shape {traced}"
        for got, want in zip(traced, spec.shape):
            assert isinstance(want, str) or got == want, f"{component}.{value.name}: shape {traced}, contract {spec.shape}"
        value.shape = ir.Shape([ir.SymbolicDim(s) if isinstance(s, str) else s for s in spec.shape])
