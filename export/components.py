"""One exporter per component: small wrappers that take and return named, flat tensors.

What each graph takes and gives (names, dtypes, shapes) is the runtime's contract
(runtime/contract.py); a `Component` adds what export needs on top: the module to trace, the
dims it is traced with and the dims it is validated with (other values: batch 1 and 3, one-chunk
and several-chunk rings, streams at different positions, one and several text tokens).
`export_component` traces the wrapper with torch.onnx.export(dynamo=True) and writes the graph
with exactly the contract's names and dims.
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

from mirasol_edge.model import MirasolModel
from mirasol_edge.runtime.contract import WINDOW_CONTEXT_DECODER, Dims, GraphSpec, TensorSpec, graph_specs

MAX_BATCH = 4096  # upper bound torch.export needs for the symbolic batch dim
MAX_WINDOW = 1 << 16  # upper bound of the chunk slots of the temporal and cross caches
EXTERNAL_DATA_BYTES = 3 << 29  # graphs with 1.5 GiB of weights and up keep them in <file>.data: protobuf stops at 2 GiB


@dataclass
class Component:
    spec: GraphSpec  # the contract: names, dtypes, shapes
    module: nn.Module  # positional inputs in `inputs` order -> a tensor or a tuple in `outputs` order
    trace: dict[str, int]  # values of the symbolic dims when tracing
    checks: list[dict[str, int]] = field(default_factory=list)  # values for validation, all different from `trace`
    dim_ranges: dict[str, tuple[int, int]] = field(default_factory=dict)  # min, max of each symbolic dim
    dims: Dims | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def file(self) -> str:
        return self.spec.file

    @property
    def inputs(self) -> dict[str, TensorSpec]:
        return self.spec.inputs

    @property
    def outputs(self) -> dict[str, TensorSpec]:
        return self.spec.outputs

    def sample(self, values: dict[str, int], rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Random inputs whose symbolic dims take the values in `values`."""
        return {name: _draw(name, spec, values, rng, self.dims) for name, spec in self.inputs.items()}

    @torch.no_grad()
    def run_torch(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The PyTorch reference: the wrapper run on `feeds`, outputs by name."""
        out = self.module(*(torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in self.inputs))
        out = out if isinstance(out, tuple) else (out,)
        return {name: t.numpy() for name, t in zip(self.outputs, out)}


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
    """One chunk per stream: latents, chunk_position, past_key.{i}/past_value.{i} -> features, present_*."""

    def __init__(self, model: MirasolModel):
        super().__init__()
        self.decoder = model.temporal_decoder

    def forward(self, latents: Tensor, chunk_position: Tensor, *past: Tensor):
        features, present = self.decoder.step(latents, chunk_position, _pairs(past))
        return (features, *_flat(present))


class ContextCrossKVGraph(nn.Module):
    """One chunk per stream into the cross cache: features, chunk_position, cross_* (, summary) ->
    present_cross_* (, summary_out)."""

    def __init__(self, model: MirasolModel):
        super().__init__()
        self.decoder, self.summary = model.context_decoder, model.summary

    def forward(self, features: Tensor, chunk_position: Tensor, *state: Tensor):
        cross, summary = (state[:-1], state[-1]) if self.summary is not None else (state, None)
        present = _flat(self.decoder.write_cross(features, chunk_position, _pairs(cross)))
        if summary is None:
            return present
        return (*present, self.summary(summary, features, chunk_position))


class SummaryKVGraph(nn.Module):
    """When a question is asked: summary (a stream's state) -> summary_key.{i} / summary_value.{i}."""

    def __init__(self, model: MirasolModel):
        super().__init__()
        self.model = model

    def forward(self, summary: Tensor):
        return _flat(self.model.summary_keys_values(summary))


class ContextDecoderGraph(nn.Module):
    """tokens, text_position, chunks_seen, past_* (self cache), cross_* (the stream's cross cache)
    (, summary_* (the summary's keys and values)) -> logits, present_*. window=True: the model's window
    decoder (window_context_decoder), which has no summary inputs."""

    def __init__(self, model: MirasolModel, window: bool = False):
        super().__init__()
        self.decoder = model.window_decoder if window else model.context_decoder
        self.layers = len(self.decoder.blocks)

    def forward(self, tokens: Tensor, text_position: Tensor, chunks_seen: Tensor, *caches: Tensor):
        n = 2 * self.layers
        past, cross, summary = caches[:n], caches[n : 2 * n], caches[2 * n :]
        logits, present = self.decoder.step(tokens, text_position, _pairs(past), _pairs(cross), chunks_seen,
                                            _pairs(summary) or None)
        return (logits, *_flat(present))


# -- the components of a bundle ----------------------------------------------------------------


def build_components(model: MirasolModel) -> list[Component]:
    """The graphs of the contract (contract.graph_specs), in the order a chunk and a question run through them."""
    cfg = model.cfg
    dims = Dims.from_config(cfg.to_dict(), _video_tokens(model))
    specs = graph_specs(dims)
    m, t = dims.latents, dims.max_text_len
    batch = {"batch": (1, MAX_BATCH)}
    per_batch = [{"batch": 1}, {"batch": 3}]
    rings = {**batch, "cache_len": (m, m * MAX_WINDOW)}
    wrappers = {
        "audio_extractor": AudioExtractorGraph, "video_extractor": VideoExtractorGraph, "combiner": CombinerGraph,
        "temporal_decoder": TemporalDecoderGraph, "context_cross_kv": ContextCrossKVGraph, "context_decoder": ContextDecoderGraph,
        "summary_kv": SummaryKVGraph, WINDOW_CONTEXT_DECODER: lambda model: ContextDecoderGraph(model, window=True),
    }
    # Rings of 3 chunk slots when tracing; validated with 1, 2 and 5 (streams at random positions, some past the ring).
    ring_checks = [{"batch": 1, "cache_len": m}, {"batch": 3, "cache_len": 2 * m}, {"batch": 2, "cache_len": 5 * m}]
    prompt = min(7, t - 1)
    text = (
        {"batch": 2, "cache_len": 3 * m, "text_cache_len": t - 2, "text_len": 3},
        [{"batch": 1, "cache_len": m, "text_cache_len": t, "text_len": prompt},  # a prefill, the whole text context
         {"batch": 3, "cache_len": 5 * m, "text_cache_len": prompt + 2, "text_len": 1},  # decoding one token
         {"batch": 2, "cache_len": 2 * m, "text_cache_len": t - 1, "text_len": 2}],
        {**rings, "text_cache_len": (2, t), "text_len": (1, t)},
    )
    plan = {
        "audio_extractor": ({"batch": 2}, per_batch, batch),
        "video_extractor": ({"batch": 2}, per_batch, batch),
        "combiner": ({"batch": 2}, per_batch, batch),
        "temporal_decoder": ({"batch": 2, "cache_len": 3 * m}, ring_checks, rings),
        "context_cross_kv": ({"batch": 2, "cache_len": 3 * m}, ring_checks, rings),
        "summary_kv": ({"batch": 2}, per_batch, batch),
        WINDOW_CONTEXT_DECODER: text,
        "context_decoder": text,
    }
    components = []
    for name, spec in specs.items():
        trace, checks, ranges = plan[name]
        components.append(Component(spec, wrappers[name](model), trace, checks, ranges, dims))
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


def _draw(name: str, spec: TensorSpec, values: dict[str, int], rng: np.random.Generator, dims: Dims) -> np.ndarray:
    shape = tuple(values[s] if isinstance(s, str) else s for s in spec.shape)
    slots = values.get("cache_len", dims.latents) // dims.latents
    if name == "chunk_position":  # streams at different positions, some past the end of the ring
        return rng.integers(0, 3 * slots, shape, dtype=np.int64)
    if name == "chunks_seen":  # some rings still filling, some full
        return rng.integers(1, 2 * slots + 1, shape, dtype=np.int64)
    if name == "text_position":  # where each row's tokens start, all within the text context
        return rng.integers(0, values["text_cache_len"] - values["text_len"] + 1, shape, dtype=np.int64)
    if name == "frames":
        return rng.integers(0, 256, shape, dtype=np.uint8)
    if name == "tokens":
        return rng.integers(0, dims.vocab, shape, dtype=np.int64)
    if name == "waveform":  # a loud tone over noise: a spectrum with a large dynamic range
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

    dims = {name: Dim(name, min=lo, max=hi) for name, (lo, hi) in component.dim_ranges.items() if name != "cache_len"}
    if "cache_len" in component.dim_ranges:  # whole chunk slots: cache_len = m * window
        m = component.dims.latents
        lo, hi = component.dim_ranges["cache_len"]
        dims["cache_len"] = m * Dim("window", min=lo // m, max=hi // m)
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
