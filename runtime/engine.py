"""The graphs run in stream order: one chunk through five graphs, one text step through one.

Two executors with one interface; which values they hold is their own business:
- `NumpyEngine`: plain `session.run` with numpy arrays (the CPU path, simple on purpose);
- `BoundEngine`: IO binding, so caches, features and the TTM memory stay as OrtValues on the
  device (the CUDA path) between graphs and between steps; only frames, samples and token ids
  go in and only logits come out. Cache cuts run as tiny ONNX graphs (cache_graphs.py).

Both mirror `MirasolModel.push_chunk` and the decoder steps of `MirasolModel.generate`
(batch 1). Engines are stateless: a `StreamState` goes in and a new one comes out, so one
engine serves many streams from many threads.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from mirasol_edge.runtime import cache_graphs
from mirasol_edge.runtime.bundle import Bundle, BundleError

NUMPY_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(uint8)": np.uint8,
}


@dataclass(frozen=True)
class StreamState:
    """What a stream carries between chunks (batch 1). Immutable: pushing makes a new one.

    temporal / cross hold, per layer, key then value: (1, h, P, hd) with P <= window * m.
    The values are numpy arrays or OrtValues, whichever the engine uses.
    """

    chunks: int  # chunks pushed so far: the next chunk's position
    temporal: tuple[Any, ...]
    cross: tuple[Any, ...]
    memory: Any  # TTM memory (1, M, D), or None for the Transformer Combiner


@dataclass(frozen=True)
class Layout:
    """Names and shapes read from the sessions themselves (never bound by position)."""

    temporal_layers: int
    context_layers: int
    heads: int
    head_dim: int
    memory_shape: tuple[int, int] | None  # (M, D) when the combiner carries a TTM memory
    input_types: dict[str, dict[str, str]]  # component -> input name -> 'tensor(float)', ...
    output_types: dict[str, dict[str, str]]

    @property
    def temporal_past(self) -> list[str]:
        return _pairs("past", self.temporal_layers)

    @property
    def temporal_present(self) -> list[str]:
        return _pairs("present", self.temporal_layers)

    @property
    def context_past(self) -> list[str]:
        return _pairs("past", self.context_layers)

    @property
    def context_present(self) -> list[str]:
        return _pairs("present", self.context_layers)

    @property
    def cross(self) -> list[str]:
        return _pairs("cross", self.context_layers)

    def input_dtype(self, component: str, name: str):
        return NUMPY_DTYPES[self.input_types[component][name]]


def _pairs(prefix: str, layers: int) -> list[str]:
    """[prefix_key.0, prefix_value.0, prefix_key.1, ...]: key then value, layer by layer."""
    return [f"{prefix}_{kind}.{i}" for i in range(layers) for kind in ("key", "value")]


def read_layout(sessions: dict, bundle: Bundle) -> Layout:
    """Check that every graph has the inputs and outputs docs/bundle.md promises; BundleError if not."""
    inputs = {c: {a.name: a for a in s.get_inputs()} for c, s in sessions.items()}
    outputs = {c: {a.name: a for a in s.get_outputs()} for c, s in sessions.items()}
    temporal_layers = sum(name.startswith("past_key.") for name in inputs["temporal_decoder"])
    context_layers = sum(name.startswith("past_key.") for name in inputs["context_decoder"])
    cfg = bundle.config
    expected = {
        "audio_extractor": (["waveform"], ["audio_tokens"]),
        "video_extractor": (["frames"], ["video_tokens"]),
        "combiner": (["audio_tokens", "video_tokens"], ["latents"]),
        "temporal_decoder": (["latents", "chunk_position", *_pairs("past", temporal_layers)],
                             ["features", *_pairs("present", temporal_layers)]),
        "context_cross_kv": (["features"], _pairs("cross", context_layers)),
        "context_decoder": (["tokens", *_pairs("past", context_layers), *_pairs("cross", context_layers)],
                            ["logits", *_pairs("present", context_layers)]),
    }
    has_memory = "memory" in inputs["combiner"]
    if has_memory:
        expected["combiner"][1].append("memory_out")
    for component, (ins, outs) in expected.items():
        for kind, names, have in (("input", ins, inputs[component]), ("output", outs, outputs[component])):
            missing = [n for n in names if n not in have]
            if missing:
                raise BundleError(
                    f"{bundle.file(component)} has no {kind} named {missing[0]!r} (docs/bundle.md); "
                    f"the bundle does not match this runtime: re-export it."
                )
    if temporal_layers == 0 or context_layers == 0:
        raise BundleError(f"bundle {bundle.path} has decoders without caches; re-export it.")
    past = inputs["temporal_decoder"]["past_key.0"].shape  # [batch, h, past_len, hd]
    heads = _fixed(past, 1, int(cfg["n_heads"]))
    head_dim = _fixed(past, 3, int(cfg["d_model"]) // int(cfg["n_heads"]))
    memory_shape = None
    if has_memory:
        shape = inputs["combiner"]["memory"].shape  # [batch, M, D]
        memory_shape = (_fixed(shape, 1, int(cfg["combiner"]["memory"])), _fixed(shape, 2, int(cfg["d_model"])))
    return Layout(
        temporal_layers=temporal_layers,
        context_layers=context_layers,
        heads=heads,
        head_dim=head_dim,
        memory_shape=memory_shape,
        input_types={c: {n: a.type for n, a in ins.items()} for c, ins in inputs.items()},
        output_types={c: {n: a.type for n, a in outs.items()} for c, outs in outputs.items()},
    )


def _fixed(shape, axis: int, default: int) -> int:
    dim = shape[axis] if len(shape) > axis else None
    return dim if isinstance(dim, int) else default


def check_chunk(frames: np.ndarray, waveform: np.ndarray, spec) -> None:
    """ValueError, in one sentence, unless frames is (F, H, W, 3) uint8 and waveform (S,) float32."""
    f, s, hw = spec.frames_per_chunk, spec.samples_per_chunk, spec.frame_size
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8:
        raise ValueError(
            f"video frames must be a uint8 numpy array, got {getattr(frames, 'dtype', type(frames).__name__)}; "
            f"convert with frames.astype(np.uint8)."
        )
    if frames.shape != (f, hw, hw, 3):
        raise ValueError(
            f"a chunk's frames must have shape ({f}, {hw}, {hw}, 3) ({spec.chunk_seconds:g} s at {spec.fps} fps, "
            f"{hw}x{hw} RGB), got {frames.shape}; decode with runtime.media or cut with runtime.chunking."
        )
    if not isinstance(waveform, np.ndarray) or waveform.dtype != np.float32:
        raise ValueError(
            f"audio must be a float32 numpy array of samples in [-1, 1], got "
            f"{getattr(waveform, 'dtype', type(waveform).__name__)}."
        )
    if waveform.shape != (s,):
        raise ValueError(
            f"a chunk's audio must have shape ({s},) ({spec.chunk_seconds:g} s of {spec.sample_rate} Hz mono), "
            f"got {waveform.shape}."
        )


class _Engine:
    """The stream algorithm of docs/bundle.md, once; subclasses say how a graph runs and how a cache is cut."""

    def __init__(self, sessions: dict, layout: Layout):
        self.sessions, self.layout = sessions, layout

    # -- what a subclass provides ---------------------------------------------------------

    def _run(self, component: str, outputs: list[str], feeds: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def _keep_last(self, caches: list, keep: int) -> tuple:
        """Each (1, h, P, hd) cache cut to its last `keep` positions."""
        raise NotImplementedError

    def _append_keep_last(self, caches: list, new: list, keep: int) -> tuple:
        """Each cache with new[j] appended along the positions, then cut to its last `keep`."""
        raise NotImplementedError

    def logits_to_host(self, logits) -> np.ndarray:
        return logits

    def length(self, value) -> int:
        """Positions held by one cache tensor (1, h, P, hd)."""
        return value.shape[2]

    # -- the stream -----------------------------------------------------------------------

    def _empty(self, component: str, name: str) -> np.ndarray:
        dtype = self.layout.input_dtype(component, name)
        return np.zeros((1, self.layout.heads, 0, self.layout.head_dim), dtype)

    def initial_state(self) -> StreamState:
        """Empty caches and a zero TTM memory (host arrays, whatever the engine: they are tiny)."""
        lay = self.layout
        memory = None
        if lay.memory_shape is not None:  # the first chunk's memory is zeros
            memory = np.zeros((1, *lay.memory_shape), lay.input_dtype("combiner", "memory"))
        return StreamState(
            chunks=0,
            temporal=tuple(self._empty("temporal_decoder", n) for n in lay.temporal_past),
            cross=tuple(self._empty("context_decoder", n) for n in lay.cross),
            memory=memory,
        )

    def push(self, state: StreamState, frames: np.ndarray, waveform: np.ndarray, keep: int) -> StreamState:
        """One chunk: frames (F, H, W, 3) u8, waveform (S,) f32 -> the next state, caches cut to `keep` positions."""
        lay = self.layout
        audio = self._run("audio_extractor", ["audio_tokens"], {"waveform": waveform[None]})["audio_tokens"]
        video = self._run("video_extractor", ["video_tokens"], {"frames": frames[None]})["video_tokens"]
        feeds = {"audio_tokens": audio, "video_tokens": video}
        outs = ["latents"]
        if lay.memory_shape is not None:
            feeds["memory"], outs = state.memory, ["latents", "memory_out"]
        combined = self._run("combiner", outs, feeds)
        feeds = {"latents": combined["latents"], "chunk_position": _position(state.chunks, lay)}
        feeds.update(zip(lay.temporal_past, state.temporal))
        temporal = self._run("temporal_decoder", ["features", *lay.temporal_present], feeds)
        new_cross = self._run("context_cross_kv", lay.cross, {"features": temporal["features"]})
        present = [temporal[n] for n in lay.temporal_present]  # (1, h, P + m, hd)
        if self.length(present[0]) > keep:
            present = self._keep_last(present, keep)
        new = [new_cross[n] for n in lay.cross]  # (1, h, m, hd)
        if state.chunks == 0 and self.length(new[0]) <= keep:
            cross = new  # nothing to append to
        else:
            cross = self._append_keep_last(list(state.cross), new, keep)
        return StreamState(
            chunks=state.chunks + 1, temporal=tuple(present), cross=tuple(cross), memory=combined.get("memory_out")
        )

    def empty_self_cache(self) -> tuple:
        return tuple(self._empty("context_decoder", n) for n in self.layout.context_past)

    def decode(self, cross: tuple, tokens: list[int], past: tuple) -> tuple[np.ndarray, tuple]:
        """tokens (T,) following the P tokens in `past` -> logits of the last one (V,) f32, the new self cache."""
        lay = self.layout
        feeds = {"tokens": np.array([tokens], np.int64)}  # (1, T)
        feeds.update(zip(lay.context_past, past))
        feeds.update(zip(lay.cross, cross))
        out = self._run("context_decoder", ["logits", *lay.context_present], feeds)
        logits = self.logits_to_host(out["logits"])  # (1, T, V)
        return logits[0, -1].astype(np.float32), tuple(out[n] for n in lay.context_present)


def _position(chunk: int, layout: Layout) -> np.ndarray:
    dtype = layout.input_dtype("temporal_decoder", "chunk_position")
    return np.array(chunk, dtype)  # a 0-d tensor, as docs/bundle.md declares it


class NumpyEngine(_Engine):
    """session.run with numpy arrays in and out (the CPU path)."""

    def _run(self, component: str, outputs: list[str], feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        types = self.layout.input_types[component]
        feeds = {name: np.asarray(v, dtype=NUMPY_DTYPES[types[name]]) for name, v in feeds.items()}
        return dict(zip(outputs, self.sessions[component].run(outputs, feeds)))

    def _keep_last(self, caches: list, keep: int) -> tuple:
        return tuple(np.ascontiguousarray(c[:, :, -keep:]) for c in caches)

    def _append_keep_last(self, caches: list, new: list, keep: int) -> tuple:
        out = []
        for old, add in zip(caches, new):  # one copy each: cut the old part first, then concatenate
            if add.shape[2] >= keep:
                out.append(np.ascontiguousarray(add[:, :, -keep:]))
            else:
                start = max(0, old.shape[2] - (keep - add.shape[2]))
                out.append(np.concatenate([old[:, :, start:], add], axis=2))
        return tuple(out)


class BoundEngine(_Engine):
    """IO binding: graph outputs stay on `device` ('cuda', or 'cpu' to test the path) as OrtValues
    and go straight into the next graph; host values (numpy) are bound with bind_cpu_input. Caches
    are cut on the device by the graphs of cache_graphs.py. Only logits come back to the host."""

    def __init__(self, sessions: dict, layout: Layout, device: str, device_id: int, providers: list, session_options):
        import onnxruntime as ort

        super().__init__(sessions, layout)
        _check_same_types(layout)
        self._ort = ort
        self.device, self.device_id = device, device_id
        self._providers, self._options = providers, session_options
        self._cache_sessions: dict[tuple, Any] = {}
        self._lock = threading.Lock()

    def _bind_input(self, binding, name: str, value, dtype=None) -> None:
        if isinstance(value, self._ort.OrtValue):
            binding.bind_ortvalue_input(name, value)
        else:
            binding.bind_cpu_input(name, np.ascontiguousarray(value, dtype=dtype))

    def _run(self, component: str, outputs: list[str], feeds: dict[str, Any]) -> dict[str, Any]:
        session = self.sessions[component]
        binding = session.io_binding()  # one per call: bindings are not shared between threads
        types = self.layout.input_types[component]
        for name, value in feeds.items():
            self._bind_input(binding, name, value, NUMPY_DTYPES[types[name]])
        for name in outputs:
            if name == "logits":  # the one output the host needs
                binding.bind_output(name, "cpu")
            else:
                binding.bind_output(name, self.device, self.device_id)
        session.run_with_iobinding(binding)
        return dict(zip(outputs, binding.get_outputs()))

    def logits_to_host(self, logits) -> np.ndarray:
        return logits.numpy()

    def length(self, value) -> int:
        shape = value.shape() if isinstance(value, self._ort.OrtValue) else value.shape
        return shape[2]

    def _keep_last(self, caches: list, keep: int) -> tuple:
        return self._edit(caches, None, keep)

    def _append_keep_last(self, caches: list, new: list, keep: int) -> tuple:
        return self._edit(caches, new, keep)

    def _edit(self, caches: list, new: list | None, keep: int) -> tuple:
        elem_type = cache_graphs.ELEM_TYPES[_ort_type(caches[0] if new is None else new[0])]
        session = self._cache_session(new is not None, elem_type, len(caches), keep)
        binding = session.io_binding()
        for j, cache in enumerate(caches):
            self._bind_input(binding, f"cache.{j}", cache)
            if new is not None:
                self._bind_input(binding, f"new.{j}", new[j])
            binding.bind_output(f"out.{j}", self.device, self.device_id)
        session.run_with_iobinding(binding)
        return tuple(binding.get_outputs())

    def _cache_session(self, append: bool, elem_type: int, count: int, keep: int):
        key = (append, elem_type, count, keep)
        with self._lock:  # built once per (kind, dtype, layers, window), shared by every stream
            session = self._cache_sessions.get(key)
            if session is None:
                build = cache_graphs.append_keep_last if append else cache_graphs.keep_last
                session = self._ort.InferenceSession(
                    build(elem_type, count, keep), sess_options=self._options, providers=self._providers
                )
                self._cache_sessions[key] = session
        return session


def _ort_type(value) -> str:
    if isinstance(value, np.ndarray):
        return {np.dtype(v): k for k, v in NUMPY_DTYPES.items()}[value.dtype]
    return value.data_type()  # OrtValue: 'tensor(float)', ...


def _check_same_types(layout: Layout) -> None:
    """Under IO binding nothing converts between graphs, so each tensor must leave as it enters."""
    links = [
        ("audio_extractor", "audio_tokens", "combiner", "audio_tokens"),
        ("video_extractor", "video_tokens", "combiner", "video_tokens"),
        ("combiner", "latents", "temporal_decoder", "latents"),
        ("temporal_decoder", "features", "context_cross_kv", "features"),
        ("temporal_decoder", "present_key.0", "temporal_decoder", "past_key.0"),
        ("context_cross_kv", "cross_key.0", "context_decoder", "cross_key.0"),
        ("context_decoder", "present_key.0", "context_decoder", "past_key.0"),
    ]
    if layout.memory_shape is not None:
        links.append(("combiner", "memory_out", "combiner", "memory"))
    for src, out, dst, inp in links:
        a, b = layout.output_types[src][out], layout.input_types[dst][inp]
        if a != b:
            raise BundleError(
                f"the bundle's {src} gives {out} as {a} but {dst} takes {inp} as {b}; IO binding cannot "
                f"convert between graphs: re-export the bundle, or run without IO binding."
            )
