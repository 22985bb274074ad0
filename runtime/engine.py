"""The graphs at batch N: a chunk of each of N streams through the five chunk graphs, and a text step
of N questions through the context decoder (sherpa-onnx's decode_streams). One stream is N = 1.

Every graph input and output is bound by its contract name (runtime/contract.py). Two executors:
- `NumpyEngine`: plain `session.run` with numpy arrays (the CPU path);
- `BoundEngine`: IO binding; caches, features and the TTM memory stay as OrtValues on the device
  ('cuda', or 'cpu' to test the path) between graphs and between steps; only frames, samples and
  token ids go in and only logits come out.

Caches have fixed sizes, so a step's outputs are the next step's inputs as they are. The N streams
stepped together keep their state as rows of that step's batched outputs (`ChunkBatch`): stepping
the same streams again in the same order passes those arrays straight back in; any other mix of
streams (new ones, some left out, another order) is stacked row by row first.
Engines hold no per-stream state: one engine serves many streams from many threads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from mirasol_edge.runtime import contract
from mirasol_edge.runtime.bundle import Bundle, BundleError

CROSS_SLOT_STEP = 4  # questions attend to the filled cross slots, counted in steps of this many chunks


@dataclass(frozen=True)
class ChunkBatch:
    """The state of the N streams stepped together by one push: each value (N, ...), by input name."""

    streams: int  # N
    temporal: dict[str, Any]  # past_key.{i} / past_value.{i}: (N, h, C, hd)
    cross: dict[str, Any]  # cross_key.{i} / cross_value.{i}: (N, h, C, hd)
    memory: Any  # TTM memory (N, M, D), or None
    summary: dict[str, Any]  # summary (N, S, Dims.summary_width); {} without one


@dataclass(frozen=True)
class StreamState:
    """What a stream carries between chunks. Immutable: a push makes a new one.

    chunks: chunks pushed so far, the next chunk's position; batch and row: the stream's caches are
    row `row` of `batch` (None before the first chunk: empty caches, zero TTM memory).
    """

    chunks: int = 0
    batch: ChunkBatch | None = None
    row: int = 0


@dataclass
class TextBatch:
    """N questions being answered together: their self caches, positions and cross caches (rows aligned)."""

    past: dict[str, Any]  # past_key.{i} / past_value.{i}: (N, h, L, hd)
    position: np.ndarray  # (N,) int64: where each row's next token goes
    cross: dict[str, Any]  # cross_key.{i} / cross_value.{i}: (N, h, C, hd), and summary_key.{i} / ... (N, h, S, hd)
    chunks_seen: np.ndarray  # (N,) int64
    decoder: str = "context_decoder"  # the graph that answers them (NumpyEngine.text_decoder)

    def __len__(self) -> int:
        return len(self.position)


def check_sessions(sessions: dict, bundle: Bundle) -> contract.Dims:
    """BundleError unless every graph has the contract's inputs and outputs (names, dtypes, fixed dims)."""
    video_out = {a.name: a for a in sessions["video_extractor"].get_outputs()}.get("video_tokens")
    nv = video_out.shape[1] if video_out is not None and isinstance(video_out.shape[1], int) else None
    try:
        dims = contract.Dims.from_config(bundle.config, nv)
    except (KeyError, TypeError, ZeroDivisionError) as e:
        raise BundleError(f"{bundle.path / 'manifest.json'} has an incomplete model config ({e!r}); re-export the bundle.") from None
    for name, spec in contract.graph_specs(dims).items():
        session = sessions[name]
        exported = session.get_modelmeta().custom_metadata_map.get("config")
        try:
            same = exported is None or json.loads(exported) == bundle.config
        except ValueError:
            same = False
        if not same:  # a manifest edited after export would make the runtime feed the graphs wrong shapes
            raise BundleError(f"{bundle.file(name)} was exported with another model config than the bundle manifest's; "
                              f"re-export the bundle.")
        faults = contract.signature_faults(spec.inputs, spec.outputs, session, exact=False)
        if faults:
            raise BundleError(f"{bundle.file(name)} does not match this runtime's contract (docs/bundle.md): "
                              f"{faults[0]}; re-export the bundle.")
    return dims


class NumpyEngine:
    """session.run with numpy arrays in and out (the CPU path)."""

    def __init__(self, sessions: dict, dims: contract.Dims, cache_len: int):
        self.sessions, self.dims, self.cache_len = sessions, dims, cache_len
        specs = contract.graph_specs(dims)
        self._outputs = {name: list(s.outputs) for name, s in specs.items()}
        self._temporal = contract.temporal_state(dims)  # present_* -> past_*
        self._cross = contract.cross_state(dims)  # present_cross_* -> cross_*
        self._text = contract.text_state(dims)
        self._summary = contract.summary_state(dims)  # summary_out -> summary
        self._summary_shapes = {"summary": (dims.summary, dims.summary_width)} if dims.summary else {}
        self.has_memory = dims.memory > 0

    # -- how a graph runs and how values are stacked (what BoundEngine changes) ----------------

    def _run(self, component: str, feeds: dict[str, Any], outputs: list[str] | None = None) -> dict[str, Any]:
        outputs = outputs or self._outputs[component]
        try:
            return dict(zip(outputs, self.sessions[component].run(outputs, feeds)))
        except Exception as e:  # ONNX Runtime's own error classes: the bundle and this runtime disagree
            raise _run_error(component, e) from None

    def _stack(self, rows: list, shape: tuple) -> Any:
        """Rows of `shape` (None: zeros, a new stream) -> one (N, *shape) value."""
        out = np.zeros((len(rows), *shape), np.float32)
        for i, r in enumerate(rows):
            if r is not None:
                out[i] = r
        return out

    def _host(self, value) -> np.ndarray:
        return value

    def logits_to_host(self, logits) -> np.ndarray:
        return logits

    # -- the stream -------------------------------------------------------------------------

    def cache_shape(self) -> tuple[int, ...]:
        return (self.dims.heads, self.cache_len, self.dims.head_dim)

    def state_bytes(self) -> int:
        """Bytes of one stream's state: temporal and cross caches, TTM memory and summary."""
        per_cache = 4 * int(np.prod(self.cache_shape()))
        memory = 4 * self.dims.memory * self.dims.width
        summary = sum(4 * int(np.prod(shape)) for shape in self._summary_shapes.values())
        return per_cache * 2 * (self.dims.temporal_layers + self.dims.context_layers) + memory + summary

    def state_arrays(self, state: StreamState) -> dict[str, np.ndarray]:
        """One stream's caches (by temporal and cross input name, each (h, C, hd)), TTM memory ((M, D),
        as "memory") and summary (by input name): host copies, to inspect; zeros before the first chunk."""
        if state.batch is None:
            out = {n: np.zeros(self.cache_shape(), np.float32) for n in [*self._temporal.values(), *self._cross.values()]}
            out.update({n: np.zeros(shape, np.float32) for n, shape in self._summary_shapes.items()})
            if self.has_memory:
                out["memory"] = np.zeros((self.dims.memory, self.dims.width), np.float32)
            return out
        parts = {**state.batch.temporal, **state.batch.cross, **state.batch.summary}
        out = {n: np.array(self._host(v)[state.row]) for n, v in parts.items()}
        if self.has_memory:
            out["memory"] = np.array(self._host(state.batch.memory)[state.row])
        return out

    def _gather(self, states: Sequence[StreamState], part: str):
        """The N states' `part` (temporal, cross, memory or summary) as batched values: the batch they share
        when they are all its rows in order, else stacked row by row (zeros for new streams)."""
        first = states[0].batch
        if first is not None and first.streams == len(states) and all(s.batch is first and s.row == i for i, s in enumerate(states)):
            return getattr(first, part)
        hosts: dict[int, np.ndarray] = {}  # each batched value comes to the host once, not once per row

        def row(value, i: int):
            if id(value) not in hosts:
                hosts[id(value)] = self._host(value)
            return hosts[id(value)][i]

        if part == "memory":
            return self._stack([None if s.batch is None else row(s.batch.memory, s.row) for s in states],
                               (self.dims.memory, self.dims.width))
        shapes = (self._summary_shapes if part == "summary" else
                  dict.fromkeys({"temporal": self._temporal, "cross": self._cross}[part].values(), self.cache_shape()))
        return {n: self._stack([None if s.batch is None else row(getattr(s.batch, part)[n], s.row) for s in states],
                               shape) for n, shape in shapes.items()}

    def push(self, states: Sequence[StreamState], frames: np.ndarray, waveform: np.ndarray) -> list[StreamState]:
        """A chunk of each of N streams: frames (N, F, H, W, 3) u8, waveform (N, S) f32 -> the N next states."""
        audio = self._run("audio_extractor", {"waveform": waveform})["audio_tokens"]
        video = self._run("video_extractor", {"frames": frames})["video_tokens"]
        feeds = {"audio_tokens": audio, "video_tokens": video}
        if self.has_memory:
            feeds["memory"] = self._gather(states, "memory")
        combined = self._run("combiner", feeds)
        position = np.array([s.chunks for s in states], np.int64)  # (N,) each stream's next chunk
        temporal = self._run("temporal_decoder", {"latents": combined["latents"], "chunk_position": position,
                                                  **self._gather(states, "temporal")})
        summary = self._gather(states, "summary") if self._summary else {}
        cross = self._run("context_cross_kv", {"features": temporal["features"], "chunk_position": position,
                                               **self._gather(states, "cross"), **summary})
        batch = ChunkBatch(
            streams=len(states),
            temporal={past: temporal[present] for present, past in self._temporal.items()},
            cross={name: cross[present] for present, name in self._cross.items()},
            memory=combined.get("memory_out"),
            summary={name: cross[out] for out, name in self._summary.items()},
        )
        return [StreamState(chunks=s.chunks + 1, batch=batch, row=i) for i, s in enumerate(states)]

    # -- questions --------------------------------------------------------------------------

    def text_decoder(self, state: StreamState) -> str:
        """The graph that answers a question about `state`: with a window decoder (contract.WINDOW_CONTEXT_DECODER),
        it while no chunk has left the cross cache's slots (as MirasolModel.generate), else the context decoder."""
        if self.dims.window_decoder and state.chunks <= self.cache_len // self.dims.latents:
            return contract.WINDOW_CONTEXT_DECODER
        return "context_decoder"

    def prefill(self, states: Sequence[StreamState], prompts: Sequence[Sequence[int]], text_cache_len: int | None = None
                ) -> tuple[np.ndarray, TextBatch]:
        """N prompts (row i about states[i], which has a chunk; all answered by one `text_decoder`) -> logits
        of each prompt's last token (N, V) f32 and the TextBatch to decode from. Shorter prompts are padded
        at the end. text_cache_len: positions of the self cache (all that prompt + answer tokens reach;
        default max_text_len): every decoding step of this batch then has this shape."""
        decoder = self.text_decoder(states[0])
        assert all(self.text_decoder(s) == decoder for s in states), "one decoder per batch of questions (generation.generate)"
        n, longest = len(prompts), max(len(p) for p in prompts)
        text_cache_len = text_cache_len or self.dims.max_text_len
        assert longest <= text_cache_len <= self.dims.max_text_len
        tokens = np.zeros((n, longest), np.int64)  # (N, T), pad id 0
        for i, p in enumerate(prompts):
            tokens[i, : len(p)] = p
        lengths = np.array([len(p) for p in prompts], np.int64)
        text = TextBatch(
            past={name: np.zeros((n, self.dims.heads, text_cache_len, self.dims.head_dim), np.float32)
                  for name in self._text.values()},
            position=np.zeros(n, np.int64),
            cross={**self._filled_cross(states), **(self._summary_keys_values(states) if decoder == "context_decoder" else {})},
            chunks_seen=np.array([s.chunks for s in states], np.int64),
            decoder=decoder,
        )
        logits, text = self._text_step(text, tokens)  # (N, T, V)
        text.position = lengths
        return logits[np.arange(n), lengths - 1], text

    def _filled_cross(self, states: Sequence[StreamState]) -> dict[str, Any]:
        """The N states' cross caches, cut to the ring slots any of them has filled (in steps of
        CROSS_SLOT_STEP): a question about a 10-chunk clip attends to 12 slots, not the whole
        window. Slots fill from the first, so the cut keeps every filled one; shapes stay fixed for
        all the steps of one batch of questions."""
        cross = self._gather(states, "cross")
        slots = self.cache_len // self.dims.latents
        filled = -(-max(min(s.chunks, slots) for s in states) // CROSS_SLOT_STEP) * CROSS_SLOT_STEP
        if filled >= slots:
            return cross
        keep = filled * self.dims.latents  # (N, h, C, hd) -> (N, h, keep, hd)
        return {n: np.ascontiguousarray(v[:, :, :keep]) for n, v in cross.items()}

    def _summary_keys_values(self, states: Sequence[StreamState]) -> dict[str, Any]:
        """The N states' summary keys and values (N, h, S, hd) by the context decoder's input names, from
        the summary_kv graph: once per batch of questions, not per chunk ({} without a summary)."""
        if not self._summary:
            return {}
        return self._run(contract.SUMMARY_KV, self._gather(states, "summary"))

    def decode_one_token(self, text: TextBatch, tokens: np.ndarray) -> tuple[np.ndarray, TextBatch]:
        """tokens (N,) int64, one per row, at each row's position -> logits (N, V) f32 and the TextBatch after them."""
        logits, text = self._text_step(text, tokens[:, None])
        text.position = text.position + 1
        return logits[:, 0], text

    def _text_step(self, text: TextBatch, tokens: np.ndarray) -> tuple[np.ndarray, TextBatch]:
        # Rows that are done keep stepping until the batch is compacted; they must stay inside the cache.
        position = np.minimum(text.position, self._text_cache_len(text) - tokens.shape[1])
        out = self._run(text.decoder, {"tokens": tokens, "text_position": position, "chunks_seen": text.chunks_seen,
                                       **text.past, **text.cross})
        past = {past: out[present] for present, past in self._text.items()}
        return self.logits_to_host(out["logits"]), TextBatch(past, text.position, text.cross, text.chunks_seen, text.decoder)

    def _text_cache_len(self, text: TextBatch) -> int:
        value = next(iter(text.past.values()))
        return (value.shape() if callable(value.shape) else value.shape)[2]

    def select(self, text: TextBatch, rows: np.ndarray) -> TextBatch:
        """The TextBatch of `rows` only (questions still being answered)."""
        take = self._take
        return TextBatch({n: take(v, rows) for n, v in text.past.items()}, text.position[rows],
                         {n: take(v, rows) for n, v in text.cross.items()}, text.chunks_seen[rows], text.decoder)

    def _take(self, value, rows: np.ndarray):
        return value[rows]


class BoundEngine(NumpyEngine):
    """IO binding: graph outputs stay on `device` ('cuda', or 'cpu' to test the path) as OrtValues and go
    straight into the next graph; host values (numpy) are bound with bind_cpu_input. Only logits come
    back. Stacking rows of different steps goes through the host (it happens when streams join or leave)."""

    def __init__(self, sessions: dict, dims: contract.Dims, cache_len: int, device: str, device_id: int):
        import onnxruntime as ort

        super().__init__(sessions, dims, cache_len)
        self._ort, self.device, self.device_id = ort, device, device_id

    def _run(self, component: str, feeds: dict[str, Any], outputs: list[str] | None = None) -> dict[str, Any]:
        outputs = outputs or self._outputs[component]
        session = self.sessions[component]
        binding = session.io_binding()  # one per call: bindings are not shared between threads
        for name, value in feeds.items():
            if isinstance(value, self._ort.OrtValue):
                binding.bind_ortvalue_input(name, value)
            else:
                binding.bind_cpu_input(name, np.ascontiguousarray(value))
        for name in outputs:
            binding.bind_output(name, "cpu" if name == "logits" else self.device, self.device_id)
        try:
            session.run_with_iobinding(binding)
        except Exception as e:
            raise _run_error(component, e) from None
        return dict(zip(outputs, binding.get_outputs()))

    def _host(self, value) -> np.ndarray:
        return value.numpy() if isinstance(value, self._ort.OrtValue) else value

    def _device(self, array: np.ndarray):
        return self._ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), self.device, self.device_id)

    def _stack(self, rows: list, shape: tuple):
        return self._device(super()._stack(rows, shape))

    def _filled_cross(self, states: Sequence[StreamState]) -> dict[str, Any]:
        return self._gather(states, "cross")  # cutting would be a host round trip: the whole ring, on the device

    def _take(self, value, rows: np.ndarray):
        return self._device(self._host(value)[rows])

    def logits_to_host(self, logits) -> np.ndarray:
        return self._host(logits)


def _run_error(component: str, e: Exception) -> BundleError:
    first = (str(e).strip() or type(e).__name__).splitlines()[0][:300]
    return BundleError(f"ONNX Runtime failed to run {component} ({first}); the bundle does not match this runtime: re-export it.")


def check_same_types(sessions: dict, dims: contract.Dims) -> None:
    """Under IO binding nothing converts between graphs, so each tensor must leave as it enters."""
    links = [
        ("audio_extractor", "audio_tokens", "combiner", "audio_tokens"),
        ("video_extractor", "video_tokens", "combiner", "video_tokens"),
        ("combiner", "latents", "temporal_decoder", "latents"),
        ("temporal_decoder", "features", "context_cross_kv", "features"),
        ("temporal_decoder", "present_key.0", "temporal_decoder", "past_key.0"),
        ("context_cross_kv", "present_cross_key.0", "context_decoder", "cross_key.0"),
        ("context_decoder", "present_key.0", "context_decoder", "past_key.0"),
    ]
    if dims.memory:
        links.append(("combiner", "memory_out", "combiner", "memory"))
    if dims.window_decoder:
        window = contract.WINDOW_CONTEXT_DECODER
        links += [("context_cross_kv", "present_cross_key.0", window, "cross_key.0"), (window, "present_key.0", window, "past_key.0")]
    if dims.summary:
        links += [("context_cross_kv", "summary_out", "context_cross_kv", "summary"),
                  ("context_cross_kv", "summary_out", contract.SUMMARY_KV, "summary"),
                  (contract.SUMMARY_KV, "summary_key.0", "context_decoder", "summary_key.0")]
    for src, out, dst, inp in links:
        a = {o.name: o.type for o in sessions[src].get_outputs()}[out]
        b = {i.name: i.type for i in sessions[dst].get_inputs()}[inp]
        if a != b:
            raise BundleError(
                f"the bundle's {src} gives {out} as {a} but {dst} takes {inp} as {b}; IO binding cannot "
                f"convert between graphs: re-export the bundle, or run without IO binding."
            )
