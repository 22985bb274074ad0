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
from dataclasses import dataclass, replace

from mirasol_edge.runtime.bundle import COMPONENTS, Bundle, BundleError, load_bundle
from mirasol_edge.runtime.engine import BoundEngine, NumpyEngine, read_layout

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


@dataclass(frozen=True)
class RuntimeOptions:
    provider: str = "cpu"  # "cpu" or "cuda"
    device_id: int = 0  # CUDA device
    intra_op_threads: int = 0  # threads inside one graph run; 0: ONNX Runtime's default (all cores)
    io_binding: bool | None = None  # keep values on the device between graphs; None: on for cuda only
    temporal_window: int | None = None  # chunks a stream's caches keep; None: the bundle's default
    verify: bool = True  # check every file's sha256 when loading

    def check(self) -> None:
        if self.provider not in PROVIDERS:
            raise ValueError(f"provider must be one of {', '.join(PROVIDERS)}, got {self.provider!r}.")
        if self.intra_op_threads < 0:
            raise ValueError(f"intra_op_threads must be >= 0, got {self.intra_op_threads}.")
        if self.temporal_window is not None and self.temporal_window < 1:
            raise ValueError(f"the temporal window must be at least 1 chunk, got {self.temporal_window}.")


class Runtime:
    """A bundle's sessions and its execution engine (numpy arrays, or IO binding on the device)."""

    def __init__(self, bundle: Bundle, options: RuntimeOptions = RuntimeOptions()):
        options.check()
        import onnxruntime as ort

        self.bundle, self.options = bundle, options
        self.providers = _providers(ort, options)
        self.session_options = ort.SessionOptions()
        self.session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session_options.intra_op_num_threads = options.intra_op_threads
        self.session_options.inter_op_num_threads = 1  # graphs are chains: no parallel branches to run
        self.sessions = {name: self._session(ort, name) for name in COMPONENTS}
        self.layout = read_layout(self.sessions, bundle)
        io_binding = options.io_binding if options.io_binding is not None else options.provider == "cuda"
        if io_binding:
            device = "cuda" if options.provider == "cuda" else "cpu"
            self.engine = BoundEngine(self.sessions, self.layout, device, options.device_id,
                                      self.providers, self.session_options)
        else:
            self.engine = NumpyEngine(self.sessions, self.layout)
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
        return self.options.temporal_window or self.bundle.temporal_window

    def create_stream(self, temporal_window: int | None = None):
        """A new, empty stream on this runtime; temporal_window overrides the runtime's."""
        from mirasol_edge.runtime.stream import Stream

        return Stream(self, temporal_window=temporal_window)

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
