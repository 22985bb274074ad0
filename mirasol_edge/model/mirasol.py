"""MirasolModel: extractors -> combiner -> temporal decoder per chunk; context decoder for text.

Two ways through the same weights, which give the same features and the same greedy answer:
- whole clip: `encode` (training; its loss is mirasol_edge.train.loss), all chunks at once under a
  block-causal mask;
- streaming: `init_stream` -> `push_chunk` ... -> `generate` (inference, mirrored by the
  exporter and the ONNX runtime), every cache an explicit tensor in a `StreamState`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from mirasol_edge.config import ModelConfig
from mirasol_edge.model.combiner import build_combiner
from mirasol_edge.model.decoders import KV, ContextDecoder, TemporalDecoder
from mirasol_edge.model.extractors import AudioExtractor, VideoExtractor
from mirasol_edge.model.summary import SummaryMemory
from mirasol_edge.runtime import tokenizer
from mirasol_edge.runtime.chunking import check_media, chunk_clip


@dataclass(frozen=True)
class StreamState:
    """Everything a stream carries between chunks. Immutable: push_chunk returns a new one."""

    chunks: int  # chunks pushed so far (the next chunk's position)
    temporal: list[KV]  # per layer (B, h, W*m, hd): a ring of W chunk slots (decoders.py)
    cross: list[KV]  # per layer (B, h, W*m, hd): the context decoder's cross-attention cache, the same ring
    memory: Tensor | None  # TTM memory (B, M, D), None for the Transformer Combiner
    summary: Tensor | None = None  # memory past the window (B, S, D + 1) (model/summary.py), None without one


class MirasolModel(nn.Module):
    def __init__(self, cfg: ModelConfig, video_backbone_weights: str | None = None):
        super().__init__()
        self.cfg = cfg
        self.audio_extractor = AudioExtractor(cfg)
        self.video_extractor = VideoExtractor(cfg, video_backbone_weights)
        self.combiner = build_combiner(cfg)
        self.temporal_decoder = TemporalDecoder(cfg)
        self.context_decoder = ContextDecoder(cfg)
        self.window_decoder = _window_decoder(cfg, self.context_decoder) if cfg.window_decoder else None
        self.summary = SummaryMemory(cfg) if cfg.summary_tokens else None
        # training only (never exported): a chunk's m features -> the classes of its events
        self.event_head = nn.Linear(cfg.combiner.latents * cfg.d_model, sum(cfg.event_classes)) if cfg.event_classes else None

    # -- inputs ---------------------------------------------------------------------------

    def check_chunks(self, waveform: Tensor, frames: Tensor) -> None:
        """Raise ValueError if waveform (B, K, S) float32 / frames (B, K, F, H, W, 3) uint8 do not fit."""
        check_media(frames, waveform, self.cfg.chunk, lead=2)

    # -- whole clip -------------------------------------------------------------------------

    def combine(self, waveform: Tensor, frames: Tensor, memory: Tensor | None = None):
        """waveform (B, K, S), frames (B, K, F, H, W, 3) -> latents (B, K, m, D), TTM memory (B, M, D) or None."""
        self.check_chunks(waveform, frames)
        b, k = frames.shape[:2]
        audio = self.audio_extractor(waveform.flatten(0, 1))  # (B*K, Na, D)
        video = self.video_extractor(frames.flatten(0, 1))  # (B*K, Nv, D)
        if not self.combiner.has_memory:
            latents, _ = self.combiner(audio, video)  # chunks are independent: all at once
            return latents.view(b, k, *latents.shape[1:]), None  # (B*K, m, D) -> (B, K, m, D)
        audio, video = audio.view(b, k, *audio.shape[1:]), video.view(b, k, *video.shape[1:])
        if memory is None:
            memory = self.combiner.initial_memory(b, frames.device)
        latents = []
        for i in range(k):  # the memory makes the TTM sequential over chunks
            chunk_latents, memory = self.combiner(audio[:, i], video[:, i], memory)
            latents.append(chunk_latents)
        return torch.stack(latents, dim=1), memory

    def encode(self, waveform: Tensor, frames: Tensor):
        """Whole clip: -> latents (B, K, m, D) and temporal features (B, K*m, D)."""
        latents, _ = self.combine(waveform, frames)
        features = self.temporal_decoder(latents.flatten(1, 2))  # (B, K, m, D) -> (B, K*m, D)
        return latents, features

    def summarize(self, features: Tensor, chunk_mask: Tensor | None = None) -> Tensor:
        """Whole clip: features (B, K*m, D) -> the summary state after its chunks (B, S, D + 1), what a stream
        has after pushing them one by one; chunk_mask (B, K) False for padding chunks, which count for nothing."""
        assert self.summary is not None, "the model has no summary memory (summary_tokens = 0)"
        m = self.cfg.combiner.latents
        chunk = torch.arange(features.shape[1], device=features.device) // m  # (K*m,) the chunk of each feature
        mask = None if chunk_mask is None else chunk_mask.repeat_interleave(m, dim=1)  # (B, K) -> (B, K*m)
        return self.summary.pool(features, chunk, mask)

    def summary_keys_values(self, summary: Tensor) -> list[KV]:
        """A summary state (B, S, D + 1) as the context decoder attends to it: per layer (B, h, S, hd)."""
        return self.context_decoder.cross_keys_values(self.summary.summary_tokens(summary))

    def window(self, features: Tensor, chunk_mask: Tensor) -> tuple[Tensor, Tensor]:
        """Whole clips with a summary: features (B, K*m, D), chunk_mask (B, K) with padding after the real
        chunks -> the features of each clip's last W = min(temporal_window, K) real chunks (B, W*m, D), what
        a question cross-attends to in a stream (the summary holds the rest), and their mask (B, W*m).
        Gathered rather than masked: on clips of minutes the rest would cost many times the window."""
        b, k = chunk_mask.shape
        m, w = self.cfg.combiner.latents, min(self.cfg.temporal_window, k)
        assert bool((chunk_mask[:, 1:] <= chunk_mask[:, :-1]).all()), "padding chunks come after a clip's real ones"
        lengths = chunk_mask.sum(dim=1)  # (B,)
        chunk = (lengths - w).clamp(min=0)[:, None] + torch.arange(w, device=features.device)  # (B, W) chunks gathered
        grouped = features.view(b, k, m, -1)  # (B, K*m, D) -> (B, K, m, D)
        window = grouped.gather(1, chunk[..., None, None].expand(b, w, m, grouped.shape[-1])).flatten(1, 2)  # (B, W*m, D)
        return window, (chunk < lengths[:, None]).repeat_interleave(m, dim=1)  # (B, W) -> (B, W*m)

    def clip_context(self, features: Tensor) -> tuple[list[KV], list[KV] | None]:
        """Whole clip: features (B, K*m, D) -> what a question cross-attends to, per layer: the keys and
        values (B, h, n, hd) of the chunks in the window (`window`), and the summary's (B, h, S, hd),
        or None without one. `generate(cross, prompt, summary=...)` takes them."""
        if self.summary is None:
            return self.context_decoder.cross_keys_values(features), None
        window = self.cfg.temporal_window * self.cfg.combiner.latents
        return self.context_decoder.cross_keys_values(features[:, -window:]), self.summary_keys_values(self.summarize(features))

    # -- streaming ----------------------------------------------------------------------------

    def init_stream(self, batch: int = 1, window: int | None = None) -> StreamState:
        """The state before the first chunk: empty fixed-size caches of `window` chunks (default: the
        config's temporal_window), initial TTM memory."""
        cfg, device = self.cfg, self.temporal_decoder.slot.device
        window = window or cfg.temporal_window
        assert window >= 1, "the window holds at least one chunk"
        shape = (batch, cfg.n_heads, window * cfg.combiner.latents, cfg.d_model // cfg.n_heads)

        def ring(layers: int) -> list[KV]:  # distinct tensors: no aliasing for torch.compile to guard on
            return [(torch.zeros(shape, device=device), torch.zeros(shape, device=device)) for _ in range(layers)]

        memory = self.combiner.initial_memory(batch, device) if self.combiner.has_memory else None
        summary = self.summary.initial(batch, device) if self.summary is not None else None
        return StreamState(chunks=0, temporal=ring(cfg.temporal_layers), cross=ring(cfg.context_layers), memory=memory,
                           summary=summary)

    @torch.no_grad()
    def push_chunk(self, state: StreamState, waveform: Tensor, frames: Tensor) -> StreamState:
        """One chunk: waveform (B, S) f32, frames (B, F, H, W, 3) u8 -> the stream's next state.

        Both caches are rings of the last `window` chunks: the temporal one sees what the whole-clip
        mask lets it see, the cross one bounds memory on endless streams (the whole-clip encode sees all).
        """
        latents, memory = self.combine(waveform[:, None], frames[:, None], state.memory)  # (B, 1, m, D)
        chunk = torch.full((latents.shape[0],), state.chunks, dtype=torch.long, device=latents.device)
        features, temporal = self.temporal_decoder.step(latents[:, 0], chunk, state.temporal)
        cross = self.context_decoder.write_cross(features, chunk, state.cross)
        summary = self.summary(state.summary, features, chunk) if self.summary is not None else None
        return StreamState(chunks=state.chunks + 1, temporal=temporal, cross=cross, memory=memory, summary=summary)

    def stream_summary(self, state: StreamState) -> list[KV] | None:
        """A stream's summary as the context decoder attends to it: per layer (B, h, S, hd); None without one."""
        return None if state.summary is None else self.summary_keys_values(state.summary)

    @torch.no_grad()
    def generate(self, cross: list[KV], prompt: Tensor, max_new_tokens: int = 16, chunks: int | None = None,
                 summary: list[KV] | None = None) -> Tensor:
        """Greedy decoding with the fixed-size self-attention cache.

        cross: per layer (B, h, C, hd), a stream's cross cache after `chunks` chunks (None: C / m, every
        slot filled; with clip_context's keys and values pass the clip's K, so that a summary attended only
        past the window is attended as in a stream); summary: per layer (B, h, S, hd), the
        summary's keys and values (stream_summary, clip_context), required with a summary memory;
        prompt (B, T0) ids -> generated ids
        (B, n), n <= max_new_tokens, ending where every row has produced eos (eos included; rows
        done early are padded with eos). With a window decoder, it answers while no chunk has left the
        cross cache (chunks <= C / m; the runtime's engine.text_decoder), the context decoder past that.
        """
        cfg, decoder = self.cfg, self.context_decoder
        b, t0 = prompt.shape
        max_new_tokens = min(max_new_tokens, cfg.max_text_len - t0)
        empty = prompt.new_zeros(b, cfg.n_heads, cfg.max_text_len, cfg.d_model // cfg.n_heads, dtype=cross[0][0].dtype)
        slots = cross[0][0].shape[2] // cfg.combiner.latents
        seen = torch.full((b,), slots if chunks is None else chunks, dtype=torch.long, device=prompt.device)
        position = torch.zeros(b, dtype=torch.long, device=prompt.device)
        assert (summary is None) == (self.summary is None), "pass the summary's keys and values exactly when the model has one"
        if self.window_decoder is not None and (chunks is None or chunks <= slots):
            decoder, summary = self.window_decoder, None  # it never attends to the summary
        logits, past = decoder.step(prompt, position, [(empty, empty)] * cfg.context_layers, cross, seen, summary)  # prefill
        position = position + t0
        out, done = [], torch.zeros(b, dtype=torch.bool, device=prompt.device)
        for _ in range(max_new_tokens):
            token = logits[:, -1].argmax(dim=-1).masked_fill(done, tokenizer.EOS)  # (B,)
            out.append(token)
            done |= token == tokenizer.EOS
            if done.all() or len(out) == max_new_tokens:
                break
            logits, past = decoder.step(token[:, None], position, past, cross, seen, summary)  # decode one token
            position = position + 1
        return torch.stack(out, dim=1) if out else prompt.new_zeros(b, 0)

    def prompt_tokens(self, question: str) -> Tensor:
        """question -> (1, T0) ids [bos] question [sep]; ValueError if empty or too long."""
        ids = tokenizer.prompt_tokens(question, self.cfg.max_text_len)
        return torch.tensor([ids], device=self.temporal_decoder.slot.device)

    @torch.no_grad()
    def answer(self, state: StreamState, question: str, max_new_tokens: int = 16) -> str:
        """Greedy answer to `question` about the chunks pushed so far (batch 1). Leaves the stream as it is."""
        if state.chunks == 0:
            raise ValueError("no chunk has been pushed to the stream yet; push at least one chunk before asking.")
        ids = self.generate(state.cross, self.prompt_tokens(question), max_new_tokens, chunks=state.chunks,
                            summary=self.stream_summary(state))
        return tokenizer.detokenize(ids[0].tolist())

    @torch.no_grad()
    def answer_clip(self, frames: np.ndarray, waveform: np.ndarray, question: str, max_new_tokens: int = 16) -> str:
        """Whole clip from arrays: frames (T, H, W, 3) u8 at the model's fps and size, waveform (N,) f32."""
        prompt = self.prompt_tokens(question)  # checks the question before any compute
        frames, waveform = chunk_clip(frames, waveform, self.cfg.chunk)  # (K, F, H, W, 3), (K, S)
        device = prompt.device
        _, features = self.encode(torch.from_numpy(waveform)[None].to(device), torch.from_numpy(frames)[None].to(device))
        cross, summary = self.clip_context(features)
        return tokenizer.detokenize(self.generate(cross, prompt, max_new_tokens, chunks=len(frames), summary=summary)[0].tolist())


def _window_decoder(cfg: ModelConfig, context_decoder: ContextDecoder) -> ContextDecoder:
    """ModelConfig.window_decoder's decoder: its cross keys and values are the context decoder's own modules,
    so the cross cache context_cross_kv writes serves both (stage 3 keeps them frozen: train/memory.py)."""
    decoder = ContextDecoder(cfg)
    for own, shared in zip(decoder.blocks, context_decoder.blocks):
        own.cross_attn.key_value = shared.cross_attn.key_value
    return decoder
