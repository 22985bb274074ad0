"""A Stream: one source's state on a shared Runtime (sherpa-onnx's create_stream habit).

    stream = runtime.create_stream()
    for frames, waveform in chunks:        # frames (F, H, W, 3) u8, waveform (S,) f32
        stream.push(frames, waveform)
    stream.ask("what colour is the first shape?")                      # greedy
    for piece in stream.ask_stream("how many beeps?", temperature=0.7, seed=0):
        print(piece, end="")                                           # text as it is generated

The state (temporal cache, TTM memory, cross cache, position) is an immutable StreamState that a
push replaces only once the chunk went through every graph, so a failed push leaves the stream as
it was; asking reads a snapshot and never changes it. Every cache has a fixed size: the state
takes `runtime.state_bytes()` whether the stream is one chunk or a day old. Push and ask are the
one-stream case of `Runtime.push_streams` / `Runtime.ask_streams`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator

import numpy as np

from mirasol_edge.runtime.engine import StreamState
from mirasol_edge.runtime.generation import GenerationOptions, text_pieces


class Stream:
    def __init__(self, runtime):
        self.runtime = runtime
        self._push_lock = threading.Lock()  # pushes to one stream from several threads stay in order
        self._state = StreamState()
        self.decode_report = None  # media.DecodeReport of the last source pushed: complete or not, and why

    # -- media in ---------------------------------------------------------------------

    @property
    def chunks(self) -> int:
        """Chunks pushed so far."""
        return self._state.chunks

    @property
    def state(self) -> StreamState:
        """The current state (immutable): caches, memory and position."""
        return self._state

    def push(self, frames: np.ndarray, waveform: np.ndarray) -> None:
        """One chunk: frames (F, H, W, 3) uint8 RGB at the bundle's size and fps, waveform (S,) float32 mono.

        ValueError (the stream unchanged) if the arrays do not fit runtime.chunk.
        """
        self.runtime.push_streams([self], [(frames, waveform)])

    def push_chunks(self, source: str | os.PathLike, skip_nonref: bool = False) -> Iterator[int]:
        """Decode `source` (a file or URL PyAV opens) and push each chunk as it arrives; yields the
        chunk count after each push. Decoding runs on its own thread, a chunk ahead of the model
        (media.prefetch); skip_nonref: see media.iter_chunks. MediaError (a ValueError) if the source
        cannot be decoded."""
        from mirasol_edge.runtime.media import iter_chunks, prefetch

        chunks = prefetch(iter_chunks(source, self.runtime.chunk, skip_nonref=skip_nonref))
        try:
            for frames, waveform in chunks:
                self.push(frames, waveform)
                yield self.chunks
        finally:
            chunks.close()
            self.decode_report = chunks.report

    def push_source(self, source: str | os.PathLike, skip_nonref: bool = False) -> int:
        """Push every chunk of `source`; returns the number pushed."""
        n = 0
        for _ in self.push_chunks(source, skip_nonref):
            n += 1
        return n

    def reset(self) -> None:
        """Forget every chunk: back to the state of a new stream."""
        with self._push_lock:
            self._state = StreamState()

    def arrays(self) -> dict[str, np.ndarray]:
        """This stream's state as host arrays (copies): temporal and cross caches by their graph input
        names (past_key.{i}, cross_key.{i}, ...; each (h, C, hd)) and, for a TTM, "memory" (M, D)."""
        return self.runtime.engine.state_arrays(self._state)

    def cache_lengths(self) -> dict[str, int]:
        """Positions of the temporal and cross caches that hold a chunk (each <= temporal_window * m);
        the caches themselves always have temporal_window * m positions."""
        filled = min(self.chunks, self.runtime.temporal_window) * self.runtime.dims.latents
        return {"temporal": filled, "cross": filled}

    # -- questions out ----------------------------------------------------------------

    def ask(self, question: str, max_new_tokens: int | None = None, temperature: float = 0.0,
            top_k: int = 0, top_p: float = 1.0, seed: int | None = None) -> str:
        """The answer to `question` about the chunks pushed so far; greedy unless temperature > 0."""
        options = GenerationOptions(max_new_tokens, float(temperature), int(top_k), float(top_p), seed)
        return self.runtime.ask_streams([(self, question)], options)[0]

    def ask_stream(self, question: str, max_new_tokens: int | None = None, temperature: float = 0.0,
                   top_k: int = 0, top_p: float = 1.0, seed: int | None = None,
                   on_text: Callable[[str], None] | None = None) -> Iterator[str]:
        """Like ask, but yields the answer's text in pieces as tokens are generated (and calls
        on_text(piece) for each, if given). The pieces join to what ask returns.

        The question is checked here, before the first piece is asked for.
        """
        options = GenerationOptions(max_new_tokens, float(temperature), int(top_k), float(top_p), seed)
        ids = self.runtime._token_stream(self, question, options)
        return _with_callback(text_pieces(ids), on_text)


def _with_callback(pieces: Iterator[str], on_text) -> Iterator[str]:
    for piece in pieces:
        if on_text is not None:
            on_text(piece)
        yield piece
