"""Model facts without training: parameter counts and FLOPs per chunk, on the meta device."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from mirasol_edge.config import ModelConfig
from mirasol_edge.model import MirasolModel

PER_QUESTION = ("context_token", "summary_kv")  # stages of flops_per_chunk that run per question or token, not per chunk
# the modules that own parameters (a window decoder's cross keys and values are the context decoder's: "total" counts them once)
COMPONENTS = ("audio_extractor", "video_extractor", "combiner", "temporal_decoder", "context_decoder", "window_decoder", "summary")


def build_meta(cfg: ModelConfig) -> MirasolModel:
    """The model with shapes but no storage: any preset, mirasol3b included, costs no memory."""
    with torch.device("meta"):
        model = MirasolModel(cfg)
    return model.to("meta").eval()  # the mel filter bank is built on the CPU


def parameter_counts(model: MirasolModel) -> dict[str, int]:
    """Parameters per component, and "total"."""
    counts = {name: sum(p.numel() for p in getattr(model, name).parameters()) for name in COMPONENTS
              if getattr(model, name) is not None}
    counts["total"] = sum(p.numel() for p in model.parameters())
    return counts


def tokens_per_chunk(model: MirasolModel) -> dict[str, int]:
    """Audio and video tokens of one chunk and the latents they become, measured on meta tensors:
    a torchvision video backbone's token grid follows from its strides, not from the config."""
    s = model.cfg.chunk
    with torch.device("meta"), torch.no_grad():
        frames = torch.zeros(1, s.frames_per_chunk, s.frame_size, s.frame_size, 3, dtype=torch.uint8)
        video = model.video_extractor(frames).shape[1]
    return {"audio": model.cfg.audio_tokens, "video": video, "latents": model.cfg.combiner.latents}


def flops_per_chunk(model: MirasolModel, text_tokens: int = 16) -> dict[str, int]:
    """FLOPs (2 per multiply-add) of each chunk stage (by its graph's name, runtime/contract.py) for one
    chunk of one stream, the stream holding a full temporal window; of one generated token
    ("context_token") attending to that window; and, with a summary memory, of its keys and values
    ("summary_kv", once per question). Counted by torch's
    FlopCounterMode (matmuls, convolutions, attention) on meta tensors, so nothing is computed."""
    cfg = model.cfg
    spec, m, d, h = cfg.chunk, cfg.combiner.latents, cfg.d_model, cfg.n_heads
    past = cfg.temporal_window * m
    with torch.device("meta"), torch.no_grad():
        wav = torch.zeros(1, spec.samples_per_chunk)
        frames = torch.zeros(1, spec.frames_per_chunk, spec.frame_size, spec.frame_size, 3, dtype=torch.uint8)
        kv = torch.zeros(1, h, past, d // h)
        stages = {}

        def count(name, fn, *args):
            with FlopCounterMode(display=False) as counter:
                out = fn(*args)
            stages[name] = counter.get_total_flops()
            return out

        audio = count("audio_extractor", model.audio_extractor, wav)
        video = count("video_extractor", model.video_extractor, frames)
        memory = model.combiner.initial_memory(1) if model.combiner.has_memory else None
        latents, _ = count("combiner", model.combiner, audio, video, memory)
        chunk = torch.zeros(1, dtype=torch.long)
        features, _ = count("temporal_decoder", model.temporal_decoder.step, latents, chunk, [(kv, kv)] * cfg.temporal_layers)
        summary = model.summary.initial(1) if model.summary is not None else None

        def context_cross_kv(features, chunk, cross):  # as the graph: the cross ring, and the summary's update
            model.context_decoder.write_cross(features, chunk, cross)
            if summary is not None:
                model.summary(summary, features, chunk)

        count("context_cross_kv", context_cross_kv, features, chunk, [(kv, kv)] * cfg.context_layers)
        token = torch.zeros(1, 1, dtype=torch.long)
        self_kv = torch.zeros(1, h, cfg.max_text_len, d // h)
        summary_kv = None if summary is None else count("summary_kv", model.summary_keys_values, summary)
        count("context_token", model.context_decoder.step, token, torch.full((1,), text_tokens), [(self_kv, self_kv)] * cfg.context_layers,
              [(kv, kv)] * cfg.context_layers, torch.full((1,), cfg.temporal_window), summary_kv)
    stages["chunk_total"] = sum(v for k, v in stages.items() if k not in PER_QUESTION)
    return stages
