"""The Runtime: a checked bundle's ONNX Runtime sessions, created once and shared.

    runtime = Runtime.load("bundle/")                 # CPU; Runtime.load(..., provider="cuda")
    stream = runtime.create_stream()
    stream.push_source("clip.mp4")                    # or stream.push(frames, waveform) per chunk
    print(stream.ask("what colour is the first shape?"))

One Runtime serves any number of streams from any number of threads: ORT sessions' run() is
thread-safe and every per-stream value lives in the Stream.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np

from mirasol_edge.runtime.bundle import Bundle, BundleError, load_bundle
from mirasol_edge.runtime.chunking import check_media
from mirasol_edge.runtime.contract import MAX_DIM, config_components
from mirasol_edge.runtime.engine import BoundEngine, NumpyEngine, check_same_types, check_sessions
from mirasol_edge.runtime.generation import GenerationOptions, generate
from mirasol_edge.runtime.tokenizer import prompt_tokens

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
THREAD_POOLS = ("per_session", "shared")
_shared_pool_threads: int | None = None  # the process's global ONNX Runtime thread pool, once made
_shared_pool_lock = threading.Lock()


@dataclass(frozen=True)
class RuntimeOptions:
    provider: str = "cpu"  # "cpu" or "cuda"
    device_id: int = 0  # CUDA device
    intra_op_threads: int = 0  # threads inside one graph run; 0: ONNX Runtime's default (all cores)
    # "per_session": each graph its own intra-op thread pool; "shared": one pool for every session of
    # the process (ONNX Runtime's global pool: made once per process, by the first runtime that asks,
    # with its intra_op_threads; every later session of the process must use it too). BENCHMARKS.md
    # compares them; the CLI uses "shared", which is faster on few cores.
    thread_pool: str = "per_session"
    # Idle threads of a per-session pool spin between runs. Off: the six graphs run in turn, and five
    # pools spinning on two cores took 2-3x longer per batched step (BENCHMARKS.md).
    spinning: bool = False
    io_binding: bool | None = None  # keep values on the device between graphs; None: on for cuda only
    temporal_window: int | None = None  # chunks the temporal and cross caches hold; None: the bundle's default
    verify: bool = True  # check every file's sha256 when loading

    def check(self) -> None:
        if self.provider not in PROVIDERS:
            raise ValueError(f"provider must be one of {', '.join(PROVIDERS)}, got {self.provider!r}.")
        if not 0 <= self.intra_op_threads <= max_threads():
            raise ValueError(f"the thread count must be between 0 (all cores) and {max_threads()} (4 per core), "
                             f"got {self.intra_op_threads}.")
        if self.thread_pool not in THREAD_POOLS:
            raise ValueError(f"thread_pool must be one of {', '.join(THREAD_POOLS)}, got {self.thread_pool!r}.")
        if self.temporal_window is not None and not 1 <= self.temporal_window <= MAX_DIM:
            raise ValueError(f"the temporal window must be between 1 and {MAX_DIM} chunks, got {self.temporal_window}.")


class Runtime:
    """A bundle's sessions and its execution engine (numpy arrays, or IO binding on the device).

    `push_streams` steps a chunk of each of N streams through every graph at batch N, and
    `ask_streams` answers N questions by one batched prefill and lockstep decoding; `Stream.push`
    and `Stream.ask` are the N = 1 case of the same calls.
    """

    def __init__(self, bundle: Bundle, options: RuntimeOptions = RuntimeOptions()):
        options.check()
        import onnxruntime as ort

        self.bundle, self.options = bundle, options
        self.providers = _providers(ort, options)
        self.session_options = _session_options(ort, options)
        self.sessions = {name: self._session(ort, name) for name in config_components(bundle.config)}
        self.dims = check_sessions(self.sessions, bundle)
        cache_len = self.temporal_window * self.dims.latents
        io_binding = options.io_binding if options.io_binding is not None else options.provider == "cuda"
        self.engine: NumpyEngine  # BoundEngine is a NumpyEngine whose values stay OrtValues
        if io_binding:
            check_same_types(self.sessions, self.dims)
            device = "cuda" if options.provider == "cuda" else "cpu"
            self.engine = BoundEngine(self.sessions, self.dims, cache_len, device, options.device_id)
        else:
            self.engine = NumpyEngine(self.sessions, self.dims, cache_len)
        self.io_binding = io_binding

    @classmethod
    def load(cls, path: str | os.PathLike, **options) -> "Runtime":
        """Runtime.load(bundle_dir, provider="cpu", intra_op_threads=0, ...): see RuntimeOptions."""
        opts = replace(RuntimeOptions(), **options)
        opts.check()
        return cls(load_bundle(path, verify=opts.verify), opts)

    @property
    def chunk(self):
        """The ChunkSpec pushed chunks must follow."""
        return self.bundle.chunk

    @property
    def temporal_window(self) -> int:
        """Chunks the temporal and cross caches of every stream hold (a ring: older chunks are overwritten)."""
        return self.options.temporal_window or self.bundle.temporal_window

    def state_bytes(self) -> int:
        """Bytes of one stream's state (caches and TTM memory), the same for every stream at every chunk."""
        return self.engine.state_bytes()

    def create_stream(self):
        """A new, empty stream on this runtime."""
        from mirasol_edge.runtime.stream import Stream

        return Stream(self)

    def push_streams(self, streams: Sequence, chunks: Sequence[tuple[np.ndarray, np.ndarray]]) -> None:
        """A chunk of each of N distinct streams, all through every graph at batch N.

        chunks[i] = (frames (F, H, W, 3) uint8, waveform (S,) float32) for streams[i]. Streams may be at
        any position, new or long-running. ValueError (no stream changed) if a chunk does not fit.
        """
        if len(streams) != len(chunks):
            raise ValueError(f"push_streams got {len(streams)} streams but {len(chunks)} chunks; give one chunk per stream.")
        if not streams:
            return
        if len({id(s) for s in streams}) != len(streams):
            raise ValueError("a stream appears twice in one push_streams call; push its chunks one call after the other.")
        for s in streams:
            if s.runtime is not self:
                raise ValueError("a stream of another Runtime was passed to push_streams; push it on its own runtime.")
        for frames, waveform in chunks:
            check_media(frames, waveform, self.chunk, lead=0)
        frames = np.stack([f for f, _ in chunks])  # (N, F, H, W, 3)
        waveform = np.stack([w for _, w in chunks])  # (N, S)
        locks = sorted(streams, key=id)  # one order for every caller: no deadlock between concurrent pushes
        for s in locks:
            s._push_lock.acquire()
        try:
            states = self.engine.push([s._state for s in streams], frames, waveform)
            for s, state in zip(streams, states):
                s._state = state
        finally:
            for s in locks:
                s._push_lock.release()

    def ask_streams(self, requests: Sequence[tuple], options: GenerationOptions | Sequence[GenerationOptions] = GenerationOptions()) -> list[str]:
        """Answers to N questions, requests[i] = (stream, question), by one batched prefill and lockstep
        decoding (a stream may be asked several questions). Each answer is the one Stream.ask gives.

        options: one GenerationOptions for all, or one per request. Streams are read as they are now;
        asking never changes them. ValueError for a bad question or option, or a stream with no chunk.
        """
        from mirasol_edge.runtime import tokenizer

        return [tokenizer.detokenize(ids) for ids in self._generate(requests, options)]

    def _generate(self, requests: Sequence[tuple], options) -> list[list[int]]:
        states, prompts, opts = self._prepare(requests, options)
        out: list[list[int]] = [[] for _ in requests]
        for step in generate(self.engine, states, prompts, opts, self.bundle.max_text_len):
            for i, token in step:
                out[i].append(token)
        return out

    def _token_stream(self, stream, question: str, options: GenerationOptions) -> Iterator[int]:
        """One question's token ids as they are generated (checked now, generated when iterated)."""
        states, prompts, opts = self._prepare([(stream, question)], options)
        steps = generate(self.engine, states, prompts, opts, self.bundle.max_text_len)
        return (token for step in steps for _, token in step)

    def _prepare(self, requests: Sequence[tuple], options):
        """Check every question and option, resolve defaults, and snapshot the streams' states."""
        if isinstance(options, GenerationOptions):
            options = [options] * len(requests)
        if len(options) != len(requests):
            raise ValueError(f"ask_streams got {len(requests)} questions but {len(options)} generation options.")
        opts = []
        for o in options:
            o.check()
            opts.append(o if o.max_new_tokens is not None else replace(o, max_new_tokens=self.bundle.max_new_tokens))
        prompts = [prompt_tokens(question, self.bundle.max_text_len) for _, question in requests]
        states = [stream._state for stream, _ in requests]  # snapshots: pushes meanwhile do not change these answers
        for (stream, _), state in zip(requests, states):
            if stream.runtime is not self:
                raise ValueError("a stream of another Runtime was passed to ask_streams; ask it on its own runtime.")
            if state.chunks == 0:
                raise ValueError("no chunk has been pushed to the stream yet; push at least one chunk before asking.")
        return states, prompts, opts

    def active_providers(self) -> dict[str, list[str]]:
        """component -> the providers its session really runs on (ORT may fall back silently)."""
        return {name: s.get_providers() for name, s in self.sessions.items()}

    def _session(self, ort, component: str):
        file = self.bundle.file(component)
        try:
            session = ort.InferenceSession(str(file), sess_options=self.session_options, providers=self.providers)
        except Exception as e:  # ORT raises its own pybind classes; a user sees one sentence
            raise BundleError(f"ONNX Runtime cannot load {file} ({_first_line(e)}); re-export the bundle.") from None
        if self.options.provider == "cuda" and session.get_providers()[0] != PROVIDERS["cuda"]:
            raise ValueError(
                f"CUDA was asked for, but ONNX Runtime could not start it for {file.name} and fell back to "
                f"{session.get_providers()[0]}; check the CUDA and cuDNN libraries, or use --provider cpu."
            )
        return session


def max_threads() -> int:
    """More threads than 4 per core only add memory and switching (100 000 once took 5.6 GB)."""
    return 4 * (os.cpu_count() or 1)


def _session_options(ort, options: RuntimeOptions):
    if options.thread_pool == "shared":
        use_shared_thread_pool(options.intra_op_threads)
    return session_options(options.intra_op_threads, options.spinning)


def use_shared_thread_pool(threads: int = 0) -> None:
    """Make ONNX Runtime's process-wide thread pool with `threads` threads (0: one per core); every
    session created by `session_options` from now on uses it. It is made once per process: later
    calls keep the pool the first one made, whatever they ask for."""
    import onnxruntime as ort

    global _shared_pool_threads
    with _shared_pool_lock:
        if _shared_pool_threads is None:
            ort.set_global_thread_pool_sizes(threads, 1)
            _shared_pool_threads = threads


def session_options(intra_op_threads: int = 0, spinning: bool = False):
    """ONNX Runtime session options for every session of this package: full graph optimisation, and
    the process's shared thread pool if there is one (then it must be used), else a pool per session."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Errors only: the CUDA provider warns about ScatterND (the cache rings' writes, whose indices never
    # repeat) once per kernel, 144 lines a run; where graphs really run is checked by Runtime itself.
    so.log_severity_level = 3
    if _shared_pool_threads is not None:
        so.use_per_session_threads = False
        return so
    so.intra_op_num_threads = intra_op_threads
    so.inter_op_num_threads = 1  # graphs are chains: no parallel branches to run
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return so


def available_providers() -> list[str]:
    import onnxruntime as ort

    return ort.get_available_providers()


def _providers(ort, options: RuntimeOptions) -> list:
    if options.provider == "cpu":
        return ["CPUExecutionProvider"]
    if hasattr(ort, "preload_dlls"):  # CUDA/cuDNN from the nvidia-* wheels (torch's), if there
        ort.preload_dlls()
    available = ort.get_available_providers()
    if PROVIDERS["cuda"] not in available:
        raise ValueError(
            f"CUDA was asked for, but this onnxruntime ({ort.__version__}) offers only {', '.join(available)}; "
            f"install onnxruntime-gpu (pip install 'mirasol-edge[gpu]') on a machine with an NVIDIA GPU, "
            f"or use --provider cpu."
        )
    return [(PROVIDERS["cuda"], {"device_id": options.device_id}), "CPUExecutionProvider"]


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:300]
