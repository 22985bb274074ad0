"""Commands of the PyTorch side: data synth, train, eval, demo (torch is imported inside them)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Optional

import typer

from mirasol_edge.cli.app import (
    ACTORS, ADDRESS, COMBINER, CPUS_PER_ACTOR, GPUS_PER_ACTOR, VIDEO_BACKBONE, VIDEO_BACKBONE_WEIGHTS, json_option,
    with_video_backbone, write_json,
)

_SAVING_MINUTES = 0.1  # of --total-minutes kept for the last step and writing the checkpoint
_THREADS = typer.Option(None, "--threads", help="Torch CPU threads (default: torch's choice; torchrun sets 1 per process).")


def _numbers(text: Optional[str], what: str, kind: type, example: str) -> Optional[tuple]:
    """A comma-separated option (--durations 4,6) as a tuple of `kind`; None when not given."""
    if not text:
        return None
    try:
        return tuple(kind(x) for x in text.split(","))
    except ValueError:
        numbers = "whole numbers" if kind is int else "numbers"
        raise ValueError(f"{what} must be comma-separated {numbers}, e.g. {example}; got {text!r}.") from None


def _set_threads(threads: Optional[int]) -> None:
    from mirasol_edge.runtime.session import max_threads

    if threads is not None and not 0 <= threads <= max_threads():
        raise ValueError(f"--threads must be between 0 (torch's default) and {max_threads()} (4 per core), got {threads}.")
    import torch

    if threads:
        torch.set_num_threads(threads)


def data_synth(
    out: Path = typer.Argument(..., help="Folder to write: clips/*.mp4, manifest.jsonl, spec.json."),
    n: int = typer.Option(1000, "--n", help="Number of clips."),
    seed: int = typer.Option(0, "--seed", help="Dataset seed (use different seeds for training and held-out sets)."),
    preset: str = typer.Option("small", "--preset", "-p", help="Model preset whose chunk spec (fps, frame size, audio rate) the clips match."),
    min_seconds: int = typer.Option(4, help="Shortest clip, seconds."),
    max_seconds: int = typer.Option(12, help="Longest clip, seconds."),
    off_grid: bool = typer.Option(False, "--off-grid", help="Events at sub-second times that cross chunk boundaries (default: on whole seconds)."),
    json_out: Optional[Path] = json_option("out, manifest, clips, questions, seconds"),
):
    """Render the procedural audio-visual QA set as H.264/AAC .mp4 clips with a manifest (docs/data.md)."""
    from mirasol_edge.config import preset as get_preset
    from mirasol_edge.data.synth import write_dataset

    if n < 1:
        raise ValueError(f"--n must be at least 1 clip, got {n}.")
    spec = get_preset(preset).chunk
    start = time.perf_counter()
    manifest = write_dataset(out, n, seed, spec, min_seconds, max_seconds, progress=True, off_grid=off_grid)
    seconds = time.perf_counter() - start
    questions = sum(1 for line in manifest.read_text().splitlines() if line.strip())
    typer.echo(f"wrote {n} clips and {questions} questions to {manifest} in {seconds:.1f} s")
    if json_out is not None:
        write_json(json_out, {"out": str(out), "manifest": str(manifest), "clips": n, "questions": questions,
                              "seconds": round(seconds, 3)})


def train(
    out: Path = typer.Option(Path("runs/small"), "--out", "-o", help="Run folder: checkpoint.pt, loss.png, log.jsonl."),
    preset: str = typer.Option("small", "--preset", "-p", help="Model preset: tiny, small, base."),
    combiner: Optional[str] = COMBINER,
    video_backbone: Optional[str] = VIDEO_BACKBONE,
    video_backbone_weights: Optional[Path] = VIDEO_BACKBONE_WEIGHTS,
    steps: Optional[int] = typer.Option(None, "--steps", help="Optimizer steps (the schedule ends here) ..."),
    minutes: Optional[float] = typer.Option(None, "--minutes", help="... and/or a training-time budget; the first to run out ends the run."),
    batch_size: int = typer.Option(16, "--batch-size", "-b", help="Clips per global batch (split across torchrun processes)."),
    questions: int = typer.Option(4, "--questions-per-clip", help="Questions per clip in a batch, sharing one clip encode (0: all)."),
    event_loss: float = typer.Option(0.0, "--event-loss-weight", help="Synthetic data: weight of a training-only head that classifies each second's events (0: off)."),
    lr: float = typer.Option(1e-3, "--lr", help="Peak learning rate (AdamW; linear warm-up, cosine decay)."),
    warmup: int = typer.Option(100, "--warmup-steps", help="Linear warm-up steps."),
    durations: Optional[str] = typer.Option(None, "--durations", help="Synthetic clip lengths in seconds, e.g. 4,6 (default: 4-12 s)."),
    duration_weights: Optional[str] = typer.Option(None, "--duration-weights", help="Relative frequency of each of --durations, e.g. 3,1."),
    manifest: Optional[Path] = typer.Option(None, "--manifest", "-m", help="Train on the media files of this manifest instead of synthetic clips."),
    off_grid_fraction: float = typer.Option(0.0, "--off-grid-fraction", help="Synthetic clips with events off the chunk grid (data synth --off-grid), as a fraction."),
    near_change: float = typer.Option(0.0, "--near-change", help="Of the off-grid clips' sounds, the fraction placed to start or end within 0.12 s of a shape change (hard examples)."),
    init_from: Optional[Path] = typer.Option(None, "--init-from", help="Start from this checkpoint's weights (same config): fine-tuning with a new optimizer and schedule."),
    resume: bool = typer.Option(False, "--resume", help="Continue OUT/checkpoint.pt: weights, optimizer, step, elapsed time."),
    seed: int = typer.Option(0, "--seed", help="Seed of the model initialisation."),
    data_seed: int = typer.Option(1, "--data-seed", help="Seed of the synthetic training clips (held-out sets use others)."),
    workers: int = typer.Option(0, "--workers", help="DataLoader worker processes per training process."),
    amp: str = typer.Option("auto", "--amp", help="Mixed precision. auto: bf16 (or fp16) on CUDA, none on CPU; bf16: also on CPU (fast with AMX); fp16; off."),
    threads: Optional[int] = _THREADS,
    json_out: Optional[Path] = json_option(
        "checkpoint, log, and the last line of log.jsonl (step, loss, answer_loss, latent_loss, event_loss, lr, "
        "grad_norm, clips_per_s, elapsed_s)"),
):
    """Train a model on synthetic clips (default) or on a manifest's files.

    Several processes: torchrun --nproc_per_node N $(which mirasol-edge) train ...
    """
    from mirasol_edge.train import LOG, TrainConfig, train as run_training

    if manifest is not None and not manifest.is_file():
        raise ValueError(f"manifest {manifest} does not exist; write one with `mirasol-edge data synth` or see docs/data.md.")
    tcfg = TrainConfig(
        preset=preset, combiner=combiner, steps=steps, minutes=minutes, batch_size=batch_size,
        questions_per_clip=questions or None, event_loss_weight=event_loss, lr=lr, warmup_steps=warmup,
        durations=_numbers(durations, "--durations", int, "4,6,8"),
        duration_weights=_numbers(duration_weights, "--duration-weights", float, "3,1,1"),
        manifest=str(manifest) if manifest else None, off_grid_fraction=off_grid_fraction,
        near_change=near_change, init_from=str(init_from) if init_from else None, seed=seed, data_seed=data_seed, num_workers=workers, amp=amp,
    )
    cfg = with_video_backbone(tcfg.model_config(), video_backbone)  # bad options fail before anything starts
    _set_threads(threads)
    weights = str(video_backbone_weights) if video_backbone_weights is not None else None
    checkpoint = run_training(tcfg, out, resume=resume, model_cfg=cfg, video_backbone_weights=weights)
    if json_out is not None and os.environ.get("RANK", "0") == "0":  # under torchrun, the process that wrote the run
        log = checkpoint.with_name(LOG)
        lines = log.read_text().splitlines() if log.is_file() else []
        write_json(json_out, {"checkpoint": str(checkpoint), "log": str(log), **(json.loads(lines[-1]) if lines else {})})


def train_memory(
    checkpoint: Path = typer.Argument(..., help="A trained window-only checkpoint (mirasol-edge train): its per-chunk stack is kept frozen."),
    out: Path = typer.Option(Path("runs/small-memory"), "--out", "-o", help="Run folder: checkpoint.pt, log.jsonl."),
    summary_tokens: int = typer.Option(64, "--summary-tokens", help="S: tokens of the memory past the window."),
    summary_pooling: str = typer.Option(
        "latent", "--summary-pooling", help="What a summary token weighs: each chunk's latents one by one (latent) or whole chunks (chunk)."),
    summary_after_window: bool = typer.Option(
        False, "--summary-after-window/--summary-always", help="Whether the context decoder attends to the summary only once "
        "a chunk has left the window (clips that fit in it answer from the window alone; the recipe's), or always."),
    summary_order: int = typer.Option(
        0, "--summary-order", help="R: the first R summary tokens also carry which of the others found something later and "
        "which earlier (from each token's pooled mean time; model/summary.py); 0: none. With --pooling-weight, the "
        "supervised tokens are the first 9 (tone, beeps, noise, first chunk, a colour each)."),
    window_decoder: bool = typer.Option(
        False, "--window-decoder", help="Keep the checkpoint's context decoder, untrained, for questions asked before any "
        "chunk has left the window (needs --summary-after-window): clips that fit the window answer exactly as before; "
        "the decoder trained here answers past the window only."),
    long_clips: int = typer.Option(1500, "--long-clips", help="Synthetic training clips longer than the window ..."),
    long_seconds: str = typer.Option("80,160", "--long-seconds", help="... their shortest and longest length, seconds."),
    short_clips: int = typer.Option(300, "--short-clips", help="Synthetic training clips of 4-12 s beside them ..."),
    short_per_step: int = typer.Option(
        0, "--short-per-step", help="... of which this many join every step's batch of long clips, in turn (0: short clips "
        "are batched like the long ones, a share of the steps)."),
    off_grid_fraction: float = typer.Option(0.5, "--off-grid-fraction", help="Clips with events off the chunk grid, as a fraction."),
    minutes: float = typer.Option(7.0, "--minutes", help="Training time after the features are cached."),
    total_minutes: Optional[float] = typer.Option(
        None, "--total-minutes", help="Wall-clock budget of the whole command instead, caching included: the steps get "
        "what loading and caching leave (the recipe's, so its three stages fit their hour however fast clips cache)."),
    batch_size: int = typer.Option(16, "--batch-size", "-b", help="Clips per step."),
    questions_per_clip: int = typer.Option(
        0, "--questions-per-clip", help="Questions of each clip scored per step, drawn afresh each time (0: all); a step "
        "costs the context decoder over its questions, so fewer buy more steps in the same minutes (measured: not more "
        "accuracy; RESULTS.md)."),
    lr: float = typer.Option(2e-3, "--lr", help="Peak learning rate (AdamW; warm-up, cosine over the time budget)."),
    decoder_lr_scale: float = typer.Option(
        1.0, "--decoder-lr-scale", help="The context decoder's learning rate as a fraction of --lr (the summary memory's); "
        "0 keeps it as trained (0.1 measured: short clips drift less, long ones learn no more; RESULTS.md)."),
    data_seed: int = typer.Option(11, "--data-seed", help="Seed of the training clips (held-out sets use others)."),
    pooling_weight: float = typer.Option(
        1.0, "--pooling-weight", help="Weight of the loss that shows the first summary tokens, one each, where the tone, the "
        "beeps, the noise, the first chunk and each colour are (the generator's per-second labels); 0: the answers alone."),
    workers: int = typer.Option(
        0, "--workers", help="Processes rendering clips while the model encodes (0: the same process, in turn; on 2 "
        "cores 1.3-1.4x faster than one worker, which competes with the encoder's threads and ships each clip over; RESULTS.md)."),
    amp: str = typer.Option("off", "--amp", help="Mixed precision of the training steps: off or bf16 "
                            "(measured no faster on a CPU with AVX-512 BF16 and no AMX; RESULTS.md)."),
    cache_amp: str = typer.Option("off", "--cache-amp", help="Mixed precision of the frozen stack while caching: off or "
                                  "bf16 (the features are kept in float32; 1.1x faster in one process with AVX-512 BF16, RESULTS.md)."),
    threads: Optional[int] = _THREADS,
    json_out: Optional[Path] = json_option("checkpoint, log, and the last line of log.jsonl (step, epoch, seconds, loss)"),
):
    """Add a memory past the window to a trained model: cache the frozen features of long and short synthetic
    clips once, then train the summary memory and the context decoder on them (docs: README, RESULTS.md)."""
    started = time.perf_counter()
    from mirasol_edge.checkpoint import load_checkpoint
    from mirasol_edge.data.dataset import SyntheticDataset
    from mirasol_edge.train.memory import cache_features, train_memory as run, with_summary

    lo_hi = _numbers(long_seconds, "--long-seconds", int, "80,200")
    if lo_hi is None or len(lo_hi) != 2 or not 4 <= lo_hi[0] <= lo_hi[1]:
        raise ValueError(f"--long-seconds must be two whole numbers, shortest and longest, from 4 s up, e.g. 80,200; got {long_seconds!r}.")
    if not 1 <= summary_tokens <= 4096 or long_clips < 0 or short_clips < 0 or long_clips + short_clips < 1 or minutes <= 0:
        raise ValueError("--summary-tokens must be 1..4096, the clip counts >= 0 with at least one clip, and --minutes > 0.")
    if not 0 <= decoder_lr_scale < float("inf"):
        raise ValueError(f"--decoder-lr-scale must be a finite number >= 0, got {decoder_lr_scale}.")
    if questions_per_clip < 0:
        raise ValueError(f"--questions-per-clip must be >= 0 (0: every question), got {questions_per_clip}.")
    if short_per_step < 0 or (short_per_step and not (long_clips and short_clips)):
        raise ValueError(f"--short-per-step must be >= 0, and above 0 only with both long and short clips; got {short_per_step}.")
    if total_minutes is not None and not 0 < total_minutes < float("inf"):
        raise ValueError(f"--total-minutes must be a finite number > 0, got {total_minutes}.")
    for flag, value in (("--amp", amp), ("--cache-amp", cache_amp)):
        if value not in ("off", "bf16"):
            raise ValueError(f"{flag} must be off or bf16 for train-memory (it runs on the CPU), got {value!r}.")
    if summary_pooling not in ("latent", "chunk"):
        raise ValueError(f"--summary-pooling must be latent or chunk, got {summary_pooling!r}.")
    if not 0 <= summary_order <= summary_tokens:
        raise ValueError(f"--summary-order must be 0..--summary-tokens ({summary_tokens}), got {summary_order}.")
    if not 0 <= pooling_weight < float("inf"):
        raise ValueError(f"--pooling-weight must be a finite number >= 0, got {pooling_weight}.")
    if window_decoder and not summary_after_window:
        raise ValueError("--window-decoder answers the questions asked before the summary is attended; add --summary-after-window.")
    _set_threads(threads)
    window_only, _ = load_checkpoint(checkpoint)
    if window_only.summary is not None:
        raise ValueError(f"{checkpoint} already has a memory past the window; start from a window-only checkpoint.")
    model = with_summary(window_only, summary_tokens, summary_pooling, summary_after_window, seed=data_seed, order=summary_order,
                         window_decoder=window_decoder)
    spec = model.cfg.chunk
    long, short = [], []
    if long_clips:
        durations = list(range(lo_hi[0], lo_hi[1] + 1))
        long_set = SyntheticDataset(spec, long_clips, data_seed, None, durations, off_grid=off_grid_fraction)
        long = cache_features(model, long_set, "caching long clips", workers, cache_amp)
    if short_clips:
        short_set = SyntheticDataset(spec, short_clips, data_seed + 1, None, off_grid=off_grid_fraction)
        short = cache_features(model, short_set, "caching short clips", workers, cache_amp)
    cached = (time.perf_counter() - started) / 60
    if total_minutes is not None:
        minutes = total_minutes - cached - _SAVING_MINUTES
        if minutes < _SAVING_MINUTES:
            raise ValueError(f"Loading and caching took {cached:.1f} of the {total_minutes} --total-minutes, leaving no time "
                             "to train: give more minutes or fewer --long-clips / --short-clips.")
        typer.echo(f"cached in {cached:.1f} min; {minutes:.1f} min of steps left of --total-minutes {total_minutes}")
    clips, rehearsal = (long, short) if short_per_step else (long + short, [])
    path = run(model, clips, out, minutes, batch_size, lr, data_seed, say=typer.echo, pooling_weight=pooling_weight,
               rehearsal=rehearsal, rehearsal_per_step=short_per_step, amp=amp, questions_per_clip=questions_per_clip,
               decoder_lr_scale=decoder_lr_scale, caching={"amp": cache_amp, "seconds": round(cached * 60, 2)})
    typer.echo(f"wrote {path}")
    if json_out is not None:
        lines = (out / "log.jsonl").read_text().splitlines()
        write_json(json_out, {"checkpoint": str(path), "log": str(out / "log.jsonl"), **(json.loads(lines[-1]) if lines else {})})


_SCORES = ("n_clips, n_questions, accuracy, baseline, families {family: {n, accuracy, baseline}}, "
           "templates {template: {n, accuracy}}")


def eval_command(
    checkpoint: Path = typer.Argument(..., help="Checkpoint (.pt) written by mirasol-edge train, or a bundle directory (runs it through the ONNX runtime)."),
    manifest: Path = typer.Argument(..., help="Manifest (.jsonl) of the held-out clips and questions."),
    json_out: Optional[Path] = json_option(f"checkpoint, manifest, {_SCORES}"),
    predictions_out: Optional[Path] = typer.Option(None, "--predictions", help="Also write every answer here, one JSON line per question."),
    baseline_manifest: Optional[Path] = typer.Option(
        None, "--baseline-manifest", help="Train manifest the question-only baseline learns from "
        "(default for synthetic data: the questions of 2000 generated clips)."),
    batch_clips: int = typer.Option(8, "--batch-clips", help="Clips of equal length encoded together."),
    workers: int = typer.Option(2, "--workers", help="Decoding threads."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Torch CPU threads for a checkpoint (default: torch's "
                                          "choice); a bundle runs on one ONNX Runtime thread pool of all cores."),
    ray: bool = typer.Option(False, "--ray", help="A bundle: answer on Ray Data as `mirasol-edge batch` does (decoding "
                             "tasks, a pool of runtime actors; the `ray` extra)."),
    address: Optional[str] = ADDRESS,
    actors: int = ACTORS,
    cpus_per_actor: float = CPUS_PER_ACTOR,
    gpus_per_actor: float = GPUS_PER_ACTOR,
):
    """Exact-match accuracy overall and per family on media files, beside the question-only baseline."""
    from mirasol_edge.data.manifest import load_manifest
    from mirasol_edge.progress import CountProgress
    from mirasol_edge.scoring import format_table

    rows = load_manifest(manifest)
    baseline_rows = load_manifest(baseline_manifest, check_files=False) if baseline_manifest else None
    if ray and not checkpoint.is_dir():
        raise ValueError(f"--ray evaluates a bundle; {checkpoint} is a checkpoint: export it first (mirasol-edge export).")
    if ray:
        from mirasol_edge.batch import ClusterOptions
        from mirasol_edge.evaluate_runtime import evaluate_bundle_on_ray

        options = ClusterOptions(address, actors, cpus_per_actor, gpus_per_actor, batch_clips)
        with CountProgress("answered", unit="questions") as progress:
            summary, predictions = evaluate_bundle_on_ray(checkpoint, rows, options, baseline_rows, progress)
    elif checkpoint.is_dir():  # a bundle: the same clips and scoring, through the runtime (no torch)
        from mirasol_edge.evaluate_runtime import evaluate_bundle

        summary, predictions = evaluate_bundle(checkpoint, rows, baseline_rows, workers, CountProgress("evaluated"), thread_pool="shared")
    else:
        from mirasol_edge.checkpoint import load_checkpoint
        from mirasol_edge.evaluate import evaluate_manifest

        _set_threads(threads)
        model, _ = load_checkpoint(checkpoint)
        summary, predictions = evaluate_manifest(model, rows, baseline_rows, batch_clips, workers, CountProgress("evaluated"))
    summary["checkpoint"], summary["manifest"] = str(checkpoint), str(manifest)
    typer.echo(format_table(summary))
    if json_out is not None:
        write_json(json_out, summary)
    if predictions_out:
        from dataclasses import asdict

        predictions_out.parent.mkdir(parents=True, exist_ok=True)
        with open(predictions_out, "w", encoding="utf-8") as f:
            for p in sorted(predictions, key=lambda p: (p.clip, p.question)):
                f.write(json.dumps(asdict(p), ensure_ascii=False) + "\n")
        typer.echo(f"wrote {predictions_out}")


DEMO_TRAIN_SEED, DEMO_HELD_OUT_SEED = 1, 7  # training clips and the held-out .mp4 clips never share a seed


def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Folder for the checkpoint, loss curve and clips."),
    minutes: float = typer.Option(3.0, "--minutes", help="Training time budget."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Train this many steps instead (e.g. 5 for a smoke test)."),
    held_out: int = typer.Option(30, "--held-out", help="Held-out .mp4 clips whose accuracy is printed."),
    threads: Optional[int] = _THREADS,
    json_out: Optional[Path] = json_option(
        f"checkpoint, held_out_manifest, evaluation {{{_SCORES}}}, clip, answers [{{question, answer, expected, correct}}]"),
):
    """Train the tiny model briefly on synthetic clips, then answer questions about new .mp4 clips."""
    import warnings

    from mirasol_edge.checkpoint import load_checkpoint
    from mirasol_edge.data.manifest import load_manifest
    from mirasol_edge.data.synth import write_dataset
    from mirasol_edge.evaluate import evaluate_manifest
    from mirasol_edge.runtime.media import iter_chunks
    from mirasol_edge.scoring import format_table
    from mirasol_edge.train import TrainConfig, train as run_training

    import torch

    if held_out < 1:
        raise ValueError(f"--held-out must be at least 1 clip, got {held_out}.")
    _set_threads(threads or 1)  # the tiny model's ops are too small for threads to pay off
    tcfg = TrainConfig(
        preset="tiny", steps=steps, minutes=None if steps else minutes, batch_size=16, questions_per_clip=None,
        durations=(4, 5, 6), event_loss_weight=1.0, lr=3e-3, warmup_steps=min(50, max(1, (steps or 250) // 5)), data_seed=DEMO_TRAIN_SEED,
        log_every=max(1, min(50, (steps or 250) // 5)), checkpoint_minutes=60,
    )
    typer.echo(f"1/3 training the tiny model on synthetic clips rendered on the fly ({f'{steps} steps' if steps else f'{minutes:g} min'})")
    checkpoint = run_training(tcfg, out)
    model, _ = load_checkpoint(checkpoint)

    typer.echo(f"\n2/3 writing {held_out} held-out clips as .mp4 (seed {DEMO_HELD_OUT_SEED}; training never saw them) and answering their questions")
    manifest = write_dataset(out / "held_out", held_out, DEMO_HELD_OUT_SEED, model.cfg.chunk, progress=False)
    rows = load_manifest(manifest)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary, _ = evaluate_manifest(model, rows)
    typer.echo(format_table(summary))

    clip = rows[0].video
    typer.echo(f"\n3/3 one clip, decoded by runtime.media and streamed chunk by chunk: {clip}")
    state = model.init_stream()
    for frames, waveform in iter_chunks(clip, model.cfg.chunk):
        state = model.push_chunk(state, torch.from_numpy(waveform)[None], torch.from_numpy(frames)[None])
    answers = []
    for r in (r for r in rows if r.video == clip):
        answer = model.answer(state, r.question)
        correct = answer.strip().lower() == r.answer.lower()
        answers.append({"question": r.question, "answer": answer, "expected": r.answer, "correct": correct})
        typer.echo(f"  Q: {r.question}\n     model: {answer!r:<10} right answer: {r.answer!r:<10} {'ok' if correct else 'wrong'}")
    typer.echo(
        f"\n{sum(a['correct'] for a in answers)}/{len(answers)} right on this clip; {100 * summary['accuracy']:.1f} % on all "
        f"{summary['n_questions']} held-out questions (question-only baseline {100 * (summary['baseline'] or 0):.1f} %). "
        f"The full recipe (make reproduce) trains the small preset for 30 min."
    )
    if json_out is not None:
        write_json(json_out, {"checkpoint": str(checkpoint), "held_out_manifest": str(manifest), "evaluation": summary,
                              "clip": str(clip), "answers": answers})
