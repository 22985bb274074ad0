"""Commands about a model before training: info (config, parameters, FLOPs) and init (a random checkpoint)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mirasol_edge.cli.app import COMBINER, VIDEO_BACKBONE, VIDEO_BACKBONE_WEIGHTS, json_option, model_config, write_json


# components with no per-chunk graph of their own: what the FLOPs column says instead
NO_CHUNK_COST = {"summary": "(in context)",  # its update runs in the context_cross_kv graph, counted there
                 "window_decoder": "(per token)"}  # reads the context decoder's cross ring


def info(
    preset: Optional[str] = typer.Option(None, "--preset", "-p", help="tiny, small (default), base or mirasol3b."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", "-c", help="Describe a checkpoint's model instead."),
    combiner: Optional[str] = COMBINER,
    video_backbone: Optional[str] = VIDEO_BACKBONE,
    json_out: Optional[Path] = json_option(
        "model, config, tokens_per_chunk {audio, video, latents}, parameters {component: count, total}, "
        "flops_per_chunk {stage: FLOPs, chunk_total}, flops_per_token, flops_per_question (the summary's keys and values; 0 without)"),
):
    """Config, parameter counts and FLOPs per chunk of a preset (built on the meta device: no memory)."""
    from mirasol_edge.info import PER_QUESTION, build_meta, flops_per_chunk, parameter_counts, tokens_per_chunk

    if checkpoint is not None:
        from mirasol_edge.checkpoint import load_checkpoint

        cfg = load_checkpoint(checkpoint)[0].cfg
    else:
        cfg = model_config(preset or "small", combiner, video_backbone)
    model = build_meta(cfg)
    spec, tokens = cfg.chunk, tokens_per_chunk(model)
    name = str(checkpoint or (preset or "small"))
    typer.echo(f"model: {name}  width {cfg.d_model}, {cfg.n_heads} heads, combiner {cfg.combiner.kind}, video backbone {cfg.video.backbone}")
    typer.echo(
        f"chunk: {spec.chunk_seconds} s = {spec.frames_per_chunk} frames of {spec.frame_size}x{spec.frame_size} at {spec.fps} fps"
        f" + {spec.samples_per_chunk} samples at {spec.sample_rate} Hz"
    )
    typer.echo(
        f"tokens per chunk: audio {tokens['audio']}, video {tokens['video']} -> {tokens['latents']} latents;"
        f" temporal window {cfg.temporal_window} chunks; text context {cfg.max_text_len} tokens"
    )
    counts = parameter_counts(model)
    flops = flops_per_chunk(model)
    typer.echo(f"\n{'component':<18}{'parameters':>16}{'GFLOPs/chunk':>15}")
    for component, n in counts.items():
        if component == "total":
            continue
        if component in NO_CHUNK_COST:
            typer.echo(f"{component:<18}{n:>16,}{NO_CHUNK_COST[component]:>15}")
            continue
        f = flops[component] if component != "context_decoder" else flops["context_cross_kv"]
        typer.echo(f"{component:<18}{n:>16,}{f / 1e9:>15.3f}")
    typer.echo(f"{'total':<18}{counts['total']:>16,}{flops['chunk_total'] / 1e9:>15.3f}")
    typer.echo(f"\nparameters: {counts['total'] / 1e9:.3f} B")
    typer.echo(f"generated token (full window): {flops['context_token'] / 1e9:.4f} GFLOPs")
    if "summary_kv" in flops:
        typer.echo(f"summary keys and values (once per question): {flops['summary_kv'] / 1e9:.4f} GFLOPs")
    if json_out is not None:
        per_chunk = {stage: n for stage, n in flops.items() if stage not in PER_QUESTION}
        write_json(json_out, {"model": name, "config": cfg.to_dict(), "tokens_per_chunk": tokens, "parameters": counts,
                              "flops_per_chunk": per_chunk, "flops_per_token": flops["context_token"],
                              "flops_per_question": flops.get("summary_kv", 0)})


def init(
    out: Path = typer.Argument(..., help="Checkpoint to write (.pt)."),
    preset: str = typer.Option("small", "--preset", "-p", help="tiny, small, base (mirasol3b is too large to allocate here)."),
    combiner: Optional[str] = COMBINER,
    video_backbone: Optional[str] = VIDEO_BACKBONE,
    video_backbone_weights: Optional[Path] = VIDEO_BACKBONE_WEIGHTS,
    seed: int = typer.Option(0, help="Seed of the random initialisation."),
):
    """Write a randomly initialised checkpoint of a preset (config inside)."""
    import torch

    from mirasol_edge.checkpoint import save_checkpoint
    from mirasol_edge.model import MirasolModel

    cfg = model_config(preset, combiner, video_backbone)
    weights = str(video_backbone_weights) if video_backbone_weights is not None else None
    torch.manual_seed(seed)
    save_checkpoint(out, MirasolModel(cfg, weights))
    typer.echo(f"wrote {out}")
