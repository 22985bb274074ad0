"""A Stream: one source's state on a shared Runtime (sherpa-onnx's create_stream habit).

    stream = runtime.create_stream()
    for frames, waveform in chunks:        # frames (F, H, W, 3) u8, waveform (S,) f32
        stream.push(frames, waveform)
    stream.ask("what colour is the first shape?")                      # greedy
    for piece in stream.ask_stream("how many beeps?", temperature=0.7, seed=0):
        print(piece, end="")                                           # text as it is generated

The state (temporal cache, TTM memory, cross cache, position) is an immutable StreamState
that a push replaces only once the chunk went through every graph, so a failed push leaves
the stream as it was; asking reads a snapshot and never changes it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace

import numpy as np

from mirasol_edge.runtime import tokenizer
from mirasol_edge.runtime.engine import StreamState, check_chunk
from mirasol_edge.runtime.generation import GenerationOptions, generate_ids, prompt_ids, text_pieces


class Stream:
    def __init__(self, runtime, temporal_window: int | None = None):
        window = temporal_window if temporal_window is not None else runtime.temporal_window
        if window < 1:
            raise ValueError(f"the temporal window must be at least 1 chunk, got {window}.")
        self.runtime = runtime
        self.temporal_window = window
        self._keep = window * runtime.bundle.latents_per_chunk  # cache positions kept (docs/bundle.md)
        self._push_lock = threading.Lock()  # pushes to one stream from several threads stay in order
        self._state = runtime.engine.initial_state()

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
        check_chunk(frames, waveform, self.runtime.chunk)
        with self._push_lock:
            self._state = self.runtime.engine.push(self._state, frames, waveform, self._keep)

    def push_chunks(self, source: str | os.PathLike) -> Iterator[int]:
        """Decode `source` (a file or URL PyAV opens) and push each chunk as it arrives; yields the
        chunk count after each push. MediaError (a ValueError) if the source cannot be decoded."""
        from mirasol_edge.runtime.media import iter_chunks

        for frames, waveform in iter_chunks(source, self.runtime.chunk):
            self.push(frames, waveform)
            yield self.chunks

    def push_source(self, source: str | os.PathLike) -> int:
        """Push every chunk of `source`; returns the number pushed."""
        n = 0
        for _ in self.push_chunks(source):
            n += 1
        return n

    def reset(self) -> None:
        """Forget every chunk: back to the state of a new stream."""
        with self._push_lock:
            self._state = self.runtime.engine.initial_state()

    def cache_lengths(self) -> dict[str, int]:
        """Positions held now by the temporal and cross caches (each <= temporal_window * m)."""
        length = self.runtime.engine.length
        return {"temporal": length(self._state.temporal[0]), "cross": length(self._state.cross[0])}

    # -- questions out ----------------------------------------------------------------

    def ask(self, question: str, max_new_tokens: int | None = None, temperature: float = 0.0,
            top_k: int = 0, top_p: float = 1.0, seed: int | None = None) -> str:
        """The answer to `question` about the chunks pushed so far; greedy unless temperature > 0."""
        return tokenizer.decode(self._ids(question, max_new_tokens, temperature, top_k, top_p, seed))

    def ask_stream(self, question: str, max_new_tokens: int | None = None, temperature: float = 0.0,
                   top_k: int = 0, top_p: float = 1.0, seed: int | None = None,
                   on_text: Callable[[str], None] | None = None) -> Iterator[str]:
        """Like ask, but yields the answer's text in pieces as tokens are generated (and calls
        on_text(piece) for each, if given). The pieces join to what ask returns.

        The question is checked here, before the first piece is asked for.
        """
        ids = self._ids(question, max_new_tokens, temperature, top_k, top_p, seed)
        return _with_callback(text_pieces(ids), on_text)

    def _ids(self, question, max_new_tokens, temperature, top_k, top_p, seed) -> Iterator[int]:
        rt = self.runtime
        options = GenerationOptions(max_new_tokens, float(temperature), int(top_k), float(top_p), seed)
        options.check()
        if options.max_new_tokens is None:
            options = replace(options, max_new_tokens=rt.bundle.max_new_tokens)
        prompt = prompt_ids(question, rt.bundle.max_text_len)
        state = self._state  # a snapshot: pushes meanwhile do not change this answer
        if state.chunks == 0:
            raise ValueError("no chunk has been pushed to the stream yet; push at least one chunk before asking.")
        return generate_ids(rt.engine, state.cross, prompt, options.max_new_tokens, rt.bundle.max_text_len, options)


def _with_callback(pieces: Iterator[str], on_text) -> Iterator[str]:
    for piece in pieces:
        if on_text is not None:
            on_text(piece)
        yield piece
