"""`mirasol-edge bench`: latency per chunk and per token, and throughput of batched streams, every
engine side by side in one run.

One stream, per engine (ONNX Runtime for every bundle given; PyTorch eager, and torch.compile, when
a checkpoint is given): the same decoded chunks go through every stage, chunk after chunk, for
`chunks` chunks (audio extractor, video extractor, combiner, temporal step, cross K/V), then a
question: time to first token, time per token with the self cache, per token recomputing.
Many streams (the first bundle): `streams` streams stepped one at a time against all of them in one
call, in stream-chunks per second; `streams` questions answered one at a time against together, in
tokens per second. Real sources (`sources`): decoding and every model stage end to end, decoding on
its own thread, against decoding alone, with and without skipping non-reference frames.

Medians and p95 over warm chunks (the first chunk apart); ratios are taken within this one run.
FLOP rates are against this machine's matmul peak, measured here too. Imports torch only for the
PyTorch engines and for counting FLOPs. `summary` holds the headline numbers and ratios.
"""

from __future__ import annotations

import os
import resource
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from mirasol_edge.runtime import tokenizer
from mirasol_edge.runtime.contract import CHUNK_STAGES as STAGES
from mirasol_edge.runtime.generation import GenerationOptions, generate

DISTINCT_CHUNKS = 16  # distinct inputs cycled through the long run (keeps memory flat and inputs equal)
QUESTION = "what colour is the first shape?"
BATCH_STEPS = 8  # chunks per stream in the batched comparison (after one warm-up chunk)
FLAT_PUSHES = 60  # chunks pushed to each of an old and a new stream, in turn, to compare their cost


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _summary(values) -> dict:
    v = np.asarray(values, dtype=np.float64) * 1e3  # seconds -> ms
    if v.size == 0:
        return {}
    return {"p50_ms": float(np.median(v)), "p95_ms": float(np.percentile(v, 95)), "max_ms": float(v.max()), "n": int(v.size)}


class _Progress:
    def __init__(self, total: int, label: str, enabled: bool):
        self.total, self.label, self.enabled, self.start = total, label, enabled, time.perf_counter()

    def __call__(self, done: int):
        if self.enabled and (done == self.total or done % max(1, self.total // 50) == 0):
            rate = done / max(time.perf_counter() - self.start, 1e-9)
            print(f"\r{self.label:<14} {done:>5}/{self.total} chunks  {rate:6.1f} chunks/s", end="", file=sys.stderr, flush=True)
            if done == self.total:
                print(file=sys.stderr)


# -- media ----------------------------------------------------------------------------------


def write_long_clip(path: Path, spec, chunks: int) -> Path:
    """A synthetic H.264 + AAC .mp4 of `chunks` chunks: a rendered clip, tiled."""
    from mirasol_edge.data.synth import render_clip, write_clip_mp4

    clip = render_clip(0, spec, min_seconds=12, max_seconds=12)
    reps = -(-chunks * spec.frames_per_chunk // len(clip.frames))
    frames = np.tile(clip.frames, (reps, 1, 1, 1))[: chunks * spec.frames_per_chunk]
    waveform = np.tile(clip.waveform, reps)[: chunks * spec.samples_per_chunk]
    return write_clip_mp4(path, replace(clip, frames=frames, waveform=waveform), spec)


def time_decoding(path: Path, spec):
    """Seconds to decode each chunk of `path` with runtime.media, and the first DISTINCT_CHUNKS chunks."""
    from mirasol_edge.runtime.media import iter_chunks

    times, kept = [], []
    chunks = iter_chunks(path, spec)
    while True:
        start = time.perf_counter()
        try:
            frames, waveform = next(chunks)
        except StopIteration:
            break
        times.append(time.perf_counter() - start)
        if len(kept) < DISTINCT_CHUNKS:
            kept.append((frames, waveform))
    return times, kept


# -- ONNX Runtime ---------------------------------------------------------------------------


class _TimedSession:
    """Wraps an ORT session: records the wall time of every run() and run_with_iobinding()."""

    def __init__(self, session, log: list):
        self.session, self.log = session, log

    def run(self, *args, **kwargs):
        start = time.perf_counter()
        out = self.session.run(*args, **kwargs)
        self.log.append(time.perf_counter() - start)
        return out

    def run_with_iobinding(self, *args, **kwargs):
        start = time.perf_counter()
        out = self.session.run_with_iobinding(*args, **kwargs)
        self.log.append(time.perf_counter() - start)
        return out

    def __getattr__(self, name):
        return getattr(self.session, name)


@dataclass(frozen=True)
class OrtSetup:
    """How this run's ONNX Runtime engines load their bundles."""

    provider: str = "cpu"
    threads: int = 0  # intra-op threads; 0: all cores
    thread_pool: str = "per_session"  # or "shared" (RuntimeOptions)


def _load(bundle_path, setup: OrtSetup):
    from mirasol_edge.runtime.session import Runtime

    return Runtime.load(bundle_path, provider=setup.provider, intra_op_threads=setup.threads, io_binding=False,
                        thread_pool=setup.thread_pool)


def bench_ort(bundle_path, inputs, chunks: int, tokens: int, setup: OrtSetup, progress: bool) -> dict:
    runtime = _load(bundle_path, setup)
    logs = {name: [] for name in runtime.engine.sessions}
    runtime.engine.sessions = {name: _TimedSession(s, logs[name]) for name, s in runtime.engine.sessions.items()}
    stream = runtime.create_stream()
    totals, rss = [], []
    bar = _Progress(chunks, f"ort {runtime.bundle.precision}", progress)
    for k in range(chunks):
        frames, waveform = inputs[k % len(inputs)]
        start = time.perf_counter()
        stream.push(frames, waveform)
        totals.append(time.perf_counter() - start)
        rss.append(_rss_mb())
        bar(k + 1)
    per_stage = {name: logs[name][:chunks] for name in STAGES}
    flat = _late_over_early(stream, inputs)
    return {"label": f"ort-{runtime.bundle.precision}", "stages": per_stage, "total": totals, "rss_mb": rss, "flat": flat,
            "text": ort_text(runtime, [stream], tokens), "state_bytes": runtime.state_bytes(),
            "providers": sorted({p for ps in runtime.active_providers().values() for p in ps[:1]})}


def _late_over_early(old, inputs, pushes: int = FLAT_PUSHES) -> float:
    """The `old` stream (at chunk `chunks`) against a new one from chunk 10 on, pushed in turn, one
    chunk each: median time per chunk of the old over the new. Taken side by side, so the machine's
    drift over a long run (on a shared machine, +-30 % between 50-chunk stretches) cancels."""
    new = old.runtime.create_stream()
    for k in range(10):
        new.push(*inputs[k % len(inputs)])
    times = {"old": [], "new": []}
    for k in range(pushes):
        for name, stream in (("old", old), ("new", new)) if k % 2 else (("new", new), ("old", old)):
            start = time.perf_counter()
            stream.push(*inputs[k % len(inputs)])
            times[name].append(time.perf_counter() - start)
    return float(np.median(times["old"]) / np.median(times["new"]))


def _timed_generate(runtime, streams, tokens: int) -> tuple[float, list[float]]:
    """One question per stream, exactly `tokens` tokens each (eos ignored): seconds to the first
    token (the prefill) and of each later step (one decode_one_token for every question)."""
    prompt = tokenizer.prompt_tokens(QUESTION, runtime.bundle.max_text_len)
    options = [GenerationOptions(max_new_tokens=tokens)] * len(streams)
    steps = generate(runtime.engine, [s.state for s in streams], [prompt] * len(streams), options,
                     runtime.bundle.max_text_len, stop_at_eos=False)
    times, start = [], time.perf_counter()
    for _ in steps:
        now = time.perf_counter()
        times.append(now - start)
        start = now
    return times[0], times[1:]


def ort_text(runtime, streams, tokens: int) -> dict:
    """Time to first token, per token with the self cache, and per token recomputing the sequence."""
    ttft, cached = _timed_generate(runtime, streams, tokens)
    engine, state = runtime.engine, streams[0].state
    prompt = tokenizer.prompt_tokens(QUESTION, runtime.bundle.max_text_len)
    recompute = []
    for n in range(1, min(tokens, runtime.bundle.max_text_len - len(prompt))):
        start = time.perf_counter()
        engine.prefill([state], [prompt + [tokenizer.NUM_SPECIAL] * n])  # the whole sequence again
        recompute.append(time.perf_counter() - start)
    return {"ttft": ttft, "token_cached": cached, "token_recompute": recompute}


def bench_batched(bundle_path, inputs, streams: int, tokens: int, setup: OrtSetup) -> dict:
    """`streams` streams stepped one at a time vs all together, and as many questions one at a time vs together."""
    runtime = _load(bundle_path, setup)
    alone = [runtime.create_stream() for _ in range(streams)]
    together = [runtime.create_stream() for _ in range(streams)]
    for k, s in enumerate(alone):  # streams at different positions: new ones beside older ones
        for j in range(k % 4):
            s.push(*inputs[j])
    for k, s in enumerate(together):
        for j in range(k % 4):
            s.push(*inputs[j])
    per_alone, per_together = [], []
    for step in range(BATCH_STEPS + 1):  # step 0 warms up both
        chunk = [inputs[(step + k) % len(inputs)] for k in range(streams)]
        start = time.perf_counter()
        for s, c in zip(alone, chunk):
            runtime.push_streams([s], [c])
        t_alone = time.perf_counter() - start
        start = time.perf_counter()
        runtime.push_streams(together, chunk)
        t_together = time.perf_counter() - start
        if step:
            per_alone.append(t_alone)
            per_together.append(t_together)
    tokens_alone, tokens_together = [], []
    for _ in range(3):
        start = time.perf_counter()
        for s in alone:
            _timed_generate(runtime, [s], tokens)
        tokens_alone.append(time.perf_counter() - start)
        start = time.perf_counter()
        _timed_generate(runtime, together, tokens)
        tokens_together.append(time.perf_counter() - start)
    chunk_alone, chunk_together = float(np.median(per_alone)), float(np.median(per_together))
    token_alone, token_together = float(np.median(tokens_alone)), float(np.median(tokens_together))
    return {
        "streams": streams, "steps": BATCH_STEPS, "tokens": tokens,
        "one_by_one_step_ms": chunk_alone * 1e3, "batched_step_ms": chunk_together * 1e3,
        "one_by_one_stream_chunks_per_s": streams / chunk_alone, "batched_stream_chunks_per_s": streams / chunk_together,
        "one_by_one_tokens_per_s": streams * tokens / token_alone, "batched_tokens_per_s": streams * tokens / token_together,
        "per_stream_chunk_ms": chunk_together / streams * 1e3,
        "state_bytes_per_stream": runtime.state_bytes(),
    }


def bench_source(bundle_path, source, setup: OrtSetup) -> dict:
    """Decoding `source` alone, and decoding + every model stage (decoding on its own thread, as
    Stream.push_source does), each with and without skip_nonref."""
    from mirasol_edge.runtime.media import iter_chunks, prefetch, probe

    runtime = _load(bundle_path, setup)
    spec = runtime.chunk
    out = {"source": str(source)}
    out.update({k: probe(source)[k] for k in ("width", "height", "fps", "video_codec", "duration")})
    for skip in (False, True):
        tag = "_skip_nonref" if skip else ""
        start = time.perf_counter()
        n = sum(1 for _ in iter_chunks(source, spec, skip_nonref=skip))
        decode_s = time.perf_counter() - start
        stream = runtime.create_stream()
        start = time.perf_counter()
        for frames, waveform in prefetch(iter_chunks(source, spec, skip_nonref=skip)):
            stream.push(frames, waveform)
        total_s = time.perf_counter() - start
        media_s = n * spec.chunk_seconds
        out.update({"chunks": n, f"decode_ms_per_chunk{tag}": decode_s / n * 1e3,
                    f"end_to_end_ms_per_chunk{tag}": total_s / n * 1e3, f"rtf_end_to_end{tag}": total_s / media_s})
    return out


# -- PyTorch ----------------------------------------------------------------------------------


def bench_torch(checkpoint, inputs, chunks: int, tokens: int, progress: bool, compile: bool = False) -> dict:
    """The stages of MirasolModel.push_chunk (fixed-size caches, as the graphs), eager or torch.compile'd."""
    import torch

    from mirasol_edge.checkpoint import load_checkpoint

    model, _ = load_checkpoint(checkpoint)

    def context_cross_kv(features, position, cross, summary):  # as the graph: the cross ring (+ the summary)
        cross = model.context_decoder.write_cross(features, position, cross)
        return cross, None if summary is None else model.summary(summary, features, position)

    stages_fn = {
        "audio_extractor": model.audio_extractor, "video_extractor": model.video_extractor, "combiner": model.combiner,
        "temporal_decoder": model.temporal_decoder.step, "context_cross_kv": context_cross_kv,
    }
    decoder_step = model.context_decoder.step
    label = "torch-eager"
    compile_s = 0.0
    if compile:
        label = "torch-compile"
        stages_fn = {name: torch.compile(fn, dynamic=False) for name, fn in stages_fn.items()}
        decoder_step = torch.compile(decoder_step, dynamic=False)
    state = model.init_stream()
    stages = {name: [] for name in STAGES}
    totals, rss = [], []
    bar = _Progress(chunks, label, progress)

    def timed(name, *args):
        start = time.perf_counter()
        out = stages_fn[name](*args)
        stages[name].append(time.perf_counter() - start)
        return out

    with torch.inference_mode():
        if compile:  # compiling happens at the first calls of each stage: timed apart, on a throwaway stream
            start = time.perf_counter()
            warm = model.init_stream()
            for k in range(2):
                warm = _torch_chunk(model, warm, inputs[k], lambda name, *a: stages_fn[name](*a))
            _torch_text(model, warm, decoder_step, 2)
            compile_s = time.perf_counter() - start
        for k in range(chunks):
            start = time.perf_counter()
            state = _torch_chunk(model, state, inputs[k % len(inputs)], timed)
            totals.append(time.perf_counter() - start)
            rss.append(_rss_mb())
            bar(k + 1)
        text = _torch_text(model, state, decoder_step, tokens)
    return {"label": label, "stages": stages, "total": totals, "rss_mb": rss, "text": text,
            "threads": torch.get_num_threads(), "compile_s": compile_s}


def _torch_chunk(model, state, chunk, run):
    import torch

    frames, waveform = chunk
    f, w = torch.from_numpy(frames)[None], torch.from_numpy(waveform)[None]
    audio = run("audio_extractor", w)
    video = run("video_extractor", f)
    latents, memory = run("combiner", audio, video, state.memory)
    position = torch.full((1,), state.chunks, dtype=torch.long)
    features, temporal = run("temporal_decoder", latents, position, state.temporal)
    cross, summary = run("context_cross_kv", features, position, state.cross, state.summary)
    return replace(state, chunks=state.chunks + 1, temporal=temporal, cross=cross, memory=memory, summary=summary)


def _torch_text(model, state, step, tokens: int) -> dict:
    import torch

    cfg = model.cfg
    prompt = torch.tensor([tokenizer.prompt_tokens(QUESTION, cfg.max_text_len)])
    shape = (1, cfg.n_heads, cfg.max_text_len, cfg.d_model // cfg.n_heads)
    fresh = [(torch.zeros(shape), torch.zeros(shape)) for _ in range(cfg.context_layers)]
    seen = torch.full((1,), state.chunks)
    summary = model.stream_summary(state)
    start = time.perf_counter()
    logits, past = step(prompt, torch.zeros(1, dtype=torch.long), fresh, state.cross, seen, summary)
    ttft = time.perf_counter() - start
    position, cached = prompt.shape[1], []
    n = min(tokens, cfg.max_text_len - prompt.shape[1] - 1)
    for _ in range(n):  # forced length: eos is ignored so every engine does the same work
        token = logits[:, -1:].argmax(-1)
        start = time.perf_counter()
        logits, past = step(token, torch.full((1,), position), past, state.cross, seen, summary)
        cached.append(time.perf_counter() - start)
        position += 1
    recompute = []
    for k in range(1, n):
        seq = torch.cat([prompt, torch.full((1, k), tokenizer.NUM_SPECIAL)], 1)
        start = time.perf_counter()
        model.context_decoder.step(seq, torch.zeros(1, dtype=torch.long), fresh, state.cross, seen, summary)
        recompute.append(time.perf_counter() - start)
    return {"ttft": ttft, "token_cached": cached, "token_recompute": recompute}


def stage_flops(config: dict) -> dict | None:
    """FLOPs per stage from the model config, counted by torch on the meta device; None without torch."""
    try:
        from mirasol_edge.config import ModelConfig
        from mirasol_edge.info import build_meta, flops_per_chunk
    except ImportError:
        return None
    return flops_per_chunk(build_meta(ModelConfig.from_dict(config)))


# -- the run --------------------------------------------------------------------------------


def run(bundles: list, torch_checkpoint=None, chunks: int = 500, tokens: int = 32, provider: str = "cpu",
        threads: int = 0, progress: bool = True, compile: bool = False, streams: int = 32, sources=(),
        thread_pool: str = "per_session") -> dict:
    """Benchmark every bundle (and the checkpoint in PyTorch) on the same chunks; returns a report dict."""
    from mirasol_edge.benchmarks.peak import matmul_peak_gflops
    from mirasol_edge.runtime.bundle import load_bundle

    if chunks < 2:
        raise ValueError(f"--chunks must be at least 2 (the first chunk is reported apart), got {chunks}.")
    if streams < 1:
        raise ValueError(f"--streams must be at least 1, got {streams}.")
    if compile and torch_checkpoint is None:
        raise ValueError("--compile needs a checkpoint to compile: add --torch CHECKPOINT.")
    setup = OrtSetup(provider, threads, thread_pool)
    first = load_bundle(bundles[0])
    spec = first.chunk
    with tempfile.TemporaryDirectory() as tmp:
        clip = write_long_clip(Path(tmp) / "bench.mp4", spec, chunks)
        decode_times, inputs = time_decoding(clip, spec)
    engines = []
    if torch_checkpoint is not None:
        engines.append(bench_torch(torch_checkpoint, inputs, chunks, tokens, progress))
        if compile:
            engines.append(bench_torch(torch_checkpoint, inputs, chunks, tokens, progress, compile=True))
    for path in bundles:
        engines.append(bench_ort(path, inputs, chunks, tokens, setup, progress))
    batched = bench_batched(bundles[0], inputs, streams, tokens, setup)
    real = [bench_source(bundles[0], source, setup) for source in sources]
    peak = matmul_peak_gflops()
    report = {
        "machine": _machine(), "ort_setup": vars(setup), "chunk_seconds": spec.chunk_seconds, "chunks": chunks, "tokens": tokens,
        "matmul_peak_gflops": peak, "flops": stage_flops(first.config),
        "decode": {"first_ms": decode_times[0] * 1e3, **_summary(decode_times[1:]), "per_chunk_ms": [t * 1e3 for t in decode_times]},
        "engines": [_engine_report(e, spec.chunk_seconds) for e in engines],
        "batched": batched, "sources": real,
    }
    report["comparisons"] = _comparisons(report)
    report["summary"] = _headline(report)
    return report


def _engine_report(e: dict, chunk_seconds: float) -> dict:
    stages = {name: {"first_ms": times[0] * 1e3, **_summary(times[1:])} for name, times in e["stages"].items()}
    warm = e["total"][1:]
    n = len(e["total"])
    # around chunk 10 against the last chunks, one after the other (torch) or side by side (ORT: "flat")
    span = 50 if n >= 110 else 10
    early = np.median(e["total"][5 : 5 + span]) if n > 5 + span else np.median(warm)
    late = np.median(e["total"][-span:])
    text = e["text"]
    return {
        "label": e["label"], "providers": e.get("providers"), "threads": e.get("threads"),
        "compile_s": e.get("compile_s"), "state_bytes": e.get("state_bytes"),
        "stages": stages,
        "chunk": {"first_ms": e["total"][0] * 1e3, **_summary(warm)},
        "real_time_factor": float(np.median(warm)) / chunk_seconds,
        "late_over_early": e.get("flat", float(late / early)),
        "rss_mb": {"after_first": e["rss_mb"][0], "at_10": e["rss_mb"][min(10, n - 1)], "last": e["rss_mb"][-1], "max": max(e["rss_mb"])},
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "text": {"ttft_ms": text["ttft"] * 1e3, "token_cached": _summary(text["token_cached"]),
                 "token_recompute": _summary(text["token_recompute"]),
                 "cached_speedup": float(np.sum(text["token_recompute"]) / np.sum(text["token_cached"][: len(text["token_recompute"])]))
                 if text["token_recompute"] else None},
        "per_chunk_ms": [t * 1e3 for t in e["total"]],
        "per_stage_chunk_ms": {name: [t * 1e3 for t in times] for name, times in e["stages"].items()},
    }


def _comparisons(report: dict) -> dict:
    by = {e["label"]: e for e in report["engines"]}
    out = {}
    for a, b in (("torch-eager", "ort-fp32"), ("torch-compile", "ort-fp32"), ("ort-fp32", "ort-int8"),
                 ("torch-eager", "ort-int8"), ("torch-eager", "torch-compile")):
        if a in by and b in by:
            out[f"{b} vs {a}"] = {
                "chunk_speedup": by[a]["chunk"]["p50_ms"] / by[b]["chunk"]["p50_ms"],
                "token_speedup": by[a]["text"]["token_cached"]["p50_ms"] / by[b]["text"]["token_cached"]["p50_ms"],
            }
    if report["flops"]:
        peak = report["matmul_peak_gflops"]
        for e in report["engines"]:
            e["flop_rate"] = {
                name: {"gflops": report["flops"][name] / (s["p50_ms"] / 1e3) / 1e9,
                       "of_peak": report["flops"][name] / (s["p50_ms"] / 1e3) / 1e9 / peak}
                for name, s in e["stages"].items()
            }
    return out


def _headline(report: dict) -> dict:
    """The numbers the throughput issue asks for, measured in this run (None where not run)."""
    comparisons, batched = report["comparisons"], report["batched"]
    ort = next((e for e in report["engines"] if e["label"].startswith("ort")), None)
    eager, compiled = comparisons.get("ort-fp32 vs torch-eager"), comparisons.get("ort-fp32 vs torch-compile")
    return {
        "ort_vs_eager_chunk": eager["chunk_speedup"] if eager else None,
        "ort_vs_eager_token": eager["token_speedup"] if eager else None,
        "ort_vs_compile_chunk": compiled["chunk_speedup"] if compiled else None,
        "ort_vs_compile_token": compiled["token_speedup"] if compiled else None,
        "batched_vs_one_by_one_chunk": batched["batched_stream_chunks_per_s"] / batched["one_by_one_stream_chunks_per_s"],
        "batched_vs_one_by_one_token": batched["batched_tokens_per_s"] / batched["one_by_one_tokens_per_s"],
        "streams": batched["streams"],
        "rtf_model": ort["real_time_factor"] if ort else None,
        "rtf_end_to_end": report["sources"][0]["rtf_end_to_end"] if report["sources"] else None,  # the first --source
        "rtf_end_to_end_skip_nonref": report["sources"][0]["rtf_end_to_end_skip_nonref"] if report["sources"] else None,
        "state_bytes_per_stream": batched["state_bytes_per_stream"],
        # every model stage of a stream's chunk, batched: how many 1x real-time streams this machine's cores hold
        "realtime_streams_model": report["chunk_seconds"] * 1e3 / batched["per_stream_chunk_ms"],
        "late_over_early": ort["late_over_early"] if ort else None,
    }


def _machine() -> dict:
    import platform

    import onnxruntime

    info = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__, "numpy": np.__version__, "date": time.strftime("%Y-%m-%d")}
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:
        pass
    return info


# -- output ---------------------------------------------------------------------------------


def format_table(report: dict) -> str:
    lines = [f"machine: {report['machine']['cpu']} ({report['machine']['cores']} cores), "
             f"matmul peak {report['matmul_peak_gflops']:.1f} GFLOP/s; {report['chunks']} chunks of {report['chunk_seconds']} s"]
    d = report["decode"]
    lines.append(f"decode (PyAV): p50 {d['p50_ms']:.2f} ms/chunk, p95 {d['p95_ms']:.2f}, first {d['first_ms']:.2f}")
    labels = [e["label"] for e in report["engines"]]
    head = f"{'stage (p50 ms)':<20}" + "".join(f"{label:>16}" for label in labels)
    lines += ["", head, "-" * len(head)]
    for name in STAGES:
        lines.append(f"{name:<20}" + "".join(f"{e['stages'][name]['p50_ms']:>16.3f}" for e in report["engines"]))

    def speedup(e):
        s = e["text"]["cached_speedup"]
        return "-" if s is None else f"{s:.2f}"

    rows = [
        ("chunk p50 ms", lambda e: f"{e['chunk']['p50_ms']:.3f}"),
        ("chunk p95 ms", lambda e: f"{e['chunk']['p95_ms']:.3f}"),
        ("chunk max ms", lambda e: f"{e['chunk']['max_ms']:.3f}"),
        ("first chunk ms", lambda e: f"{e['chunk']['first_ms']:.1f}"),
        ("real-time factor", lambda e: f"{e['real_time_factor']:.4f}"),
        ("last / early chunks", lambda e: f"{e['late_over_early']:.3f}"),
        ("RSS MB @10 / last", lambda e: f"{e['rss_mb']['at_10']:.0f}/{e['rss_mb']['last']:.0f}"),
        ("TTFT ms", lambda e: f"{e['text']['ttft_ms']:.2f}"),
        ("token cached ms", lambda e: f"{e['text']['token_cached']['p50_ms']:.3f}"),
        ("token recompute ms", lambda e: f"{e['text']['token_recompute'].get('p50_ms', float('nan')):.3f}"),
        ("cache speedup", speedup),
    ]
    lines.append("-" * len(head))
    for title, fn in rows:
        lines.append(f"{title:<20}" + "".join(f"{fn(e):>16}" for e in report["engines"]))
    for e in report["engines"]:
        if e.get("compile_s"):
            lines.append(f"{e['label']}: compile time {e['compile_s']:.1f} s (first chunk, apart)")
    if report["flops"]:
        lines += ["", f"{'stage':<20}{'MFLOP':>10}" + "".join(f"{'% peak ' + label:>22}" for label in labels)]
        for name in STAGES:
            lines.append(f"{name:<20}{report['flops'][name] / 1e6:>10.1f}"
                         + "".join(f"{100 * e['flop_rate'][name]['of_peak']:>21.1f}%" for e in report["engines"]))
    if report["comparisons"]:
        lines.append("")
        for name, c in report["comparisons"].items():
            lines.append(f"{name}: per chunk x{c['chunk_speedup']:.2f}, per token x{c['token_speedup']:.2f}")
    b = report["batched"]
    lines += ["", f"{b['streams']} streams, one call per stream vs one call for all: "
                  f"{b['one_by_one_stream_chunks_per_s']:.1f} vs {b['batched_stream_chunks_per_s']:.1f} stream-chunks/s; "
                  f"{b['one_by_one_tokens_per_s']:.0f} vs {b['batched_tokens_per_s']:.0f} tokens/s; "
                  f"state {b['state_bytes_per_stream'] / 1e6:.2f} MB per stream"]
    for s in report["sources"]:
        lines.append(f"source {s['width']}x{s['height']} {s['fps']:.0f} fps {s['video_codec']}: decode {s['decode_ms_per_chunk']:.1f} "
                     f"ms/chunk ({s['decode_ms_per_chunk_skip_nonref']:.1f} skipping non-reference frames); decode + model "
                     f"{s['end_to_end_ms_per_chunk']:.1f} ({s['end_to_end_ms_per_chunk_skip_nonref']:.1f}) ms/chunk, real-time "
                     f"factor {s['rtf_end_to_end']:.4f} ({s['rtf_end_to_end_skip_nonref']:.4f})")
    lines += ["", "summary: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                          for k, v in report["summary"].items())]
    return "\n".join(lines)


def plot(report: dict, path) -> None:
    """Latency per stage against chunk index for each engine, and the engines' chunk p50 side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    engines = report["engines"]
    fig, axes = plt.subplots(1, len(engines) + 1, figsize=(5 * (len(engines) + 1), 4))
    for ax, e in zip(axes, engines):
        for name, series in e["per_stage_chunk_ms"].items():
            ax.plot(series, label=name, linewidth=0.8)
        ax.plot(e["per_chunk_ms"], label="chunk total", color="black", linewidth=1)
        ax.set_yscale("log")
        ax.set(title=e["label"], xlabel="chunk index", ylabel="ms")
        ax.legend(fontsize=6)
    ax = axes[-1]
    labels = [e["label"] for e in engines]
    ax.bar(labels, [e["chunk"]["p50_ms"] for e in engines], label="chunk p50")
    ax.bar(labels, [e["text"]["token_cached"]["p50_ms"] for e in engines], label="token p50", alpha=0.7)
    ax.set(title="p50 per chunk and per token", ylabel="ms")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
