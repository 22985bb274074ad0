"""The Mirasol3B paper's ablations on the synthetic task, one command each (RESULTS.md, "The paper's ablations").

    python -m mirasol_edge.benchmarks.paper VARIANT --heldout runs/heldout-small/first200.jsonl --out runs/ablations
    python -m mirasol_edge.benchmarks.paper table runs/ablations        # the markdown table of every VARIANT.json

Every variant trains the `small` preset from the same initial seed on the same synthetic clips for
the same number of steps (not the same time: a slower variant is not cut short), then answers the
held-out manifest in PyTorch, and writes VARIANT.json: accuracy overall and per family, FLOPs per
chunk of one 1 s chunk (torch's FlopCounterMode; for `one-chunk` the whole clip's per second, at the
longest training clip) and the bytes of state a stream carries.

- `baseline`: the model as it is: 1 s chunks, Transformer combiner, audio + video, temporal decoder;
- `one-chunk`: no chunking: the combiner attends over the whole clip's audio and video tokens at once
  (with a per-second embedding so time stays visible) and gives the same m latents per second;
- `ttm`: the Token Turing Machine combiner (its memory carried from chunk to chunk);
- `video-only` / `audio-only`: the other modality's input is silence / black frames, always;
- `no-temporal`: no temporal decoder: each chunk's latents, with the chunk index embedding, are
  what the context decoder attends to (nothing models the sequence of chunks).

The memory past the window is ablated on long clips by `mirasol-edge train-memory` and the long
held-out set instead (RESULTS.md): it needs clips minutes long, which training from scratch here
cannot afford.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

VARIANTS = ("baseline", "one-chunk", "ttm", "video-only", "audio-only", "no-temporal")


def build(variant: str, seed: int = 0):
    """The small preset with `variant` applied: (model, batch transform)."""
    import torch

    from mirasol_edge.config import CombinerConfig, preset
    from mirasol_edge.data.synth import EVENT_CLASSES
    from mirasol_edge.model import MirasolModel

    cfg = preset("small", event_classes=EVENT_CLASSES, event_loss_weight=1.0)
    if variant == "ttm":
        cfg = replace(cfg, combiner=CombinerConfig(kind="ttm", latents=4, layers=2, memory=16))
    torch.manual_seed(seed)
    model = MirasolModel(cfg)
    if variant == "one-chunk":
        _one_chunk(model)
    elif variant == "no-temporal":
        _no_temporal(model)

    def media(waveform, frames):
        if variant == "video-only":
            waveform = torch.zeros_like(waveform)
        elif variant == "audio-only":
            frames = torch.zeros_like(frames)
        return waveform, frames

    return model, media


def _one_chunk(model) -> None:
    """The combiner over the whole clip at once: [all audio; all video; K*m queries], each token with
    its second's embedding; the last K*m outputs are the latents (B, K, m, D) as chunked."""
    import torch
    from torch import nn

    combiner, d = model.combiner, model.cfg.d_model
    combiner.second = nn.Parameter(torch.randn(64, d) * 0.02)  # clips of up to 64 s

    def combine(waveform, frames, memory=None):
        model.check_chunks(waveform, frames)
        b, k = frames.shape[:2]
        audio = model.audio_extractor(waveform.flatten(0, 1))  # (B*K, Na, D)
        video = model.video_extractor(frames.flatten(0, 1))  # (B*K, Nv, D)
        second = combiner.second[:k]  # (K, D)
        audio = (audio.view(b, k, -1, d) + second[None, :, None]).flatten(1, 2)  # (B, K*Na, D)
        video = (video.view(b, k, -1, d) + second[None, :, None]).flatten(1, 2)  # (B, K*Nv, D)
        m = combiner.queries.shape[0]
        queries = (combiner.queries[None] + second[:, None]).flatten(0, 1)  # (K*m, D)
        x = torch.cat([audio + combiner.modality[0], video + combiner.modality[1], queries.expand(b, -1, -1)], dim=1)
        n_audio, n_video = audio.shape[1], video.shape[1]
        mask = torch.ones(x.shape[1], x.shape[1], dtype=torch.bool, device=x.device)
        audio_queries = (torch.arange(k * m, device=x.device) % m) < m // 2  # as the chunked first layer: half the queries per modality
        start = n_audio + n_video
        mask[start:, n_audio:start] = audio_queries[:, None].logical_not()
        mask[start:, :n_audio] = audio_queries[:, None]
        mask[start:, start:] = True
        for i, block in enumerate(combiner.encoder.blocks):
            x, _ = block(x, mask=mask if i == 0 else None)
        latents = combiner.encoder.norm(x)[:, -k * m:]
        return latents.view(b, k, m, d), None  # (B, K*m, D) -> (B, K, m, D)

    model.combine = combine


def _no_temporal(model) -> None:
    import torch

    decoder = model.temporal_decoder

    def forward(latents, first_chunk: int = 0):
        chunk = torch.arange(latents.shape[1], device=latents.device) // decoder.latents_per_chunk + first_chunk
        return decoder.norm(decoder._inputs(latents, chunk))  # no attention across chunks

    decoder.forward = forward


def flops_and_state(variant: str, model, seconds: int) -> tuple[float, int]:
    """GFLOPs per 1 s chunk and the bytes a stream carries (caches, memory) for this variant."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from mirasol_edge.info import build_meta, flops_per_chunk
    from mirasol_edge.runtime.contract import Dims

    cfg = model.cfg
    if variant == "one-chunk":  # the whole clip's encode, per second
        s = cfg.chunk
        wav = torch.zeros(1, seconds, s.samples_per_chunk)
        frames = torch.zeros(1, seconds, s.frames_per_chunk, s.frame_size, s.frame_size, 3, dtype=torch.uint8)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model.encode(wav, frames)
        flops = counter.get_total_flops() / seconds
    else:
        stages = flops_per_chunk(build_meta(cfg))
        flops = stages["chunk_total"]
        if variant == "video-only":
            flops -= stages["audio_extractor"]
        elif variant == "audio-only":
            flops -= stages["video_extractor"]
        elif variant == "no-temporal":
            flops -= stages["temporal_decoder"]
    dims = Dims.from_config(cfg.to_dict())
    cache = 4 * dims.heads * cfg.temporal_window * dims.latents * dims.head_dim  # one (h, W*m, hd) f32 cache
    temporal_layers = 0 if variant == "no-temporal" else cfg.temporal_layers
    state = 2 * cache * (temporal_layers + cfg.context_layers) + 4 * dims.memory * dims.width
    if variant == "one-chunk":
        state = None  # no stream: the whole clip is needed before the first latent
    return flops / 1e9, state


def run(variant: str, heldout: Path, out: Path, steps: int, batch_size: int, lr: float, seed: int, data_seed: int) -> dict:
    import torch

    from mirasol_edge.batching import collate_clips
    from mirasol_edge.data.dataset import SyntheticDataset
    from mirasol_edge.data.manifest import load_manifest
    from mirasol_edge.evaluate import evaluate_manifest
    from mirasol_edge.train.config import TrainConfig
    from mirasol_edge.train.loss import clip_batch_loss
    from mirasol_edge.train.schedule import learning_rate

    model, media = build(variant, seed)
    cfg = model.cfg
    data = SyntheticDataset(cfg.chunk, steps * batch_size, data_seed, questions_per_clip=None, group=batch_size)
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size, collate_fn=lambda clips: collate_clips(clips, cfg),
                                         num_workers=1, prefetch_factor=4)
    schedule = TrainConfig(steps=steps, lr=lr, warmup_steps=min(100, steps // 10))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.05)
    model.train()
    start, losses = time.perf_counter(), []
    for step, batch in enumerate(loader):
        batch["waveform"], batch["frames"] = media(batch["waveform"], batch["frames"])
        for g in optimizer.param_groups:
            g["lr"] = learning_rate(schedule, step, step / steps)
        loss = clip_batch_loss(model, batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        if (step + 1) % 50 == 0:
            print(f"{variant} step {step + 1}/{steps} loss {np.mean(losses[-50:]):.4f} {time.perf_counter() - start:.0f} s", flush=True)
    train_seconds = time.perf_counter() - start
    model.eval()
    encode = model.encode

    def encode_media(waveform, frames):  # the ablated modality is missing at test time too
        return encode(*media(waveform, frames))

    model.encode = encode_media
    summary, _ = evaluate_manifest(model, load_manifest(heldout), workers=1)
    gflops, state = flops_and_state(variant, model, max(data.durations))
    result = {"variant": variant, "steps": steps, "batch_size": batch_size, "train_seconds": round(train_seconds, 1),
              "final_loss": round(float(np.mean(losses[-50:])), 4), "accuracy": summary["accuracy"],
              "families": {f: v["accuracy"] for f, v in summary["families"].items()}, "questions": summary["n_questions"],
              "gflops_per_chunk": round(gflops, 4), "state_bytes": state, "heldout": str(heldout),
              "date": time.strftime("%Y-%m-%d")}
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{variant}.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def table(out: Path) -> str:
    rows = [json.loads((out / f"{v}.json").read_text()) for v in VARIANTS if (out / f"{v}.json").is_file()]
    families = sorted({f for r in rows for f in r["families"]})
    lines = ["| variant | overall % | " + " | ".join(families) + " | GFLOPs / chunk | stream state | train s |",
             "|---|---:|" + "---:|" * len(families) + "---:|---:|---:|"]
    for r in rows:
        state = "none (whole clip)" if r["state_bytes"] is None else f"{r['state_bytes'] / 1024:.0f} KiB"
        lines.append(f"| {r['variant']} | {100 * r['accuracy']:.1f} | "
                     + " | ".join(f"{100 * r['families'].get(f, float('nan')):.1f}" for f in families)
                     + f" | {r['gflops_per_chunk']:.3f} | {state} | {r['train_seconds']:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variant", choices=[*VARIANTS, "table"])
    parser.add_argument("folder", nargs="?", type=Path, help="table: the folder of VARIANT.json files")
    parser.add_argument("--heldout", type=Path, default=Path("runs/heldout-small/first200.jsonl"))
    parser.add_argument("--out", type=Path, default=Path("runs/ablations"))
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.variant == "table":
        print(table(args.folder or args.out))
        return
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    result = run(args.variant, args.heldout, args.out, args.steps, args.batch_size, args.lr, args.seed, args.data_seed)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
