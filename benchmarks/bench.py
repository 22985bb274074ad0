"""`mirasol-edge bench`: latency per chunk and per token, every engine side by side in one run.

For each engine (ONNX Runtime for every bundle given, PyTorch eager when a checkpoint is given)
the same decoded chunks go through every stage, chunk after chunk, for `chunks` chunks:
audio extractor, video extractor, combiner, temporal step, cross K/V. Then a question: time to
first token, time per token with the self-attention cache, and per token when the whole
sequence is recomputed without caches. Decoding of the media (PyAV) is timed once, per chunk.

Medians and p95 over warm chunks (the first chunk is reported apart); ratios between engines are
taken within this one run. FLOP rates are against this machine's matmul peak, measured here too.
Imports torch only for the PyTorch engine and for counting FLOPs.
"""

from __future__ import annotations

import os
import resource
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from mirasol_edge.runtime import tokenizer

STAGES = ("audio_extractor", "video_extractor", "combiner", "temporal_decoder", "context_cross_kv")
DISTINCT_CHUNKS = 16  # distinct inputs cycled through the long run (keeps memory flat and inputs equal)


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


# -- engines --------------------------------------------------------------------------------


class _TimedSession:
    """Wraps an ORT session: records the wall time of every run()."""

    def __init__(self, session, log: list):
        self.session, self.log = session, log

    def run(self, *args, **kwargs):
        start = time.perf_counter()
        out = self.session.run(*args, **kwargs)
        self.log.append(time.perf_counter() - start)
        return out

    def __getattr__(self, name):
        return getattr(self.session, name)


def bench_ort(bundle_path, inputs, chunks: int, tokens: int, provider: str, threads: int, progress: bool) -> dict:
    from mirasol_edge.runtime.session import Runtime

    runtime = Runtime.load(bundle_path, provider=provider, intra_op_threads=threads, io_binding=False)
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
    engine = runtime.engine
    prompt = tokenizer.encode_prompt("what colour is the first shape?", runtime.bundle.max_text_len)
    text = _ort_text(engine, stream.state.cross, prompt, tokens)
    return {"label": f"ort-{runtime.bundle.precision}", "stages": per_stage, "total": totals, "rss_mb": rss, "text": text,
            "providers": sorted({p for ps in runtime.active_providers().values() for p in ps[:1]})}


def _ort_text(engine, cross, prompt, tokens: int) -> dict:
    """Time to first token, per-token time with the cache, and per token recomputing without it."""
    start = time.perf_counter()
    logits, past = engine.decode(cross, prompt, engine.empty_self_cache())
    ttft = time.perf_counter() - start
    seq, cached = list(prompt), []
    for _ in range(tokens):  # forced length: eos is ignored so both ways do the same work
        token = int(np.argmax(logits))
        seq.append(token)
        start = time.perf_counter()
        logits, past = engine.decode(cross, [token], past)
        cached.append(time.perf_counter() - start)
    recompute = []
    for n in range(len(prompt) + 1, len(seq) + 1):
        start = time.perf_counter()
        engine.decode(cross, seq[:n], engine.empty_self_cache())
        recompute.append(time.perf_counter() - start)
    return {"ttft": ttft, "token_cached": cached, "token_recompute": recompute}


def bench_torch(checkpoint, inputs, chunks: int, tokens: int, progress: bool) -> dict:
    import torch

    from mirasol_edge.checkpoint import load_checkpoint

    model, _ = load_checkpoint(checkpoint)
    keep = model.cfg.temporal_window * model.cfg.combiner.latents
    state = model.init_stream()
    stages = {name: [] for name in STAGES}
    totals, rss = [], []
    bar = _Progress(chunks, "torch eager", progress)

    def timed(name, fn, *args):
        start = time.perf_counter()
        out = fn(*args)
        stages[name].append(time.perf_counter() - start)
        return out

    with torch.inference_mode():
        for k in range(chunks):
            frames, waveform = inputs[k % len(inputs)]
            start = time.perf_counter()
            f, w = torch.from_numpy(frames)[None], torch.from_numpy(waveform)[None]
            audio = timed("audio_extractor", model.audio_extractor, w)
            video = timed("video_extractor", model.video_extractor, f)
            latents, memory = timed("combiner", model.combiner, audio, video, state.memory)
            features, temporal = timed("temporal_decoder", model.temporal_decoder, latents, state.chunks, state.temporal)
            new_cross = timed("context_cross_kv", model.context_decoder.cross_keys_values, features)
            cross = [(torch.cat([k_, nk], 2)[:, :, -keep:], torch.cat([v_, nv], 2)[:, :, -keep:])
                     for (k_, v_), (nk, nv) in zip(state.cross, new_cross)]
            temporal = [(k_[:, :, -keep:], v_[:, :, -keep:]) for k_, v_ in temporal]
            state = replace(state, chunks=state.chunks + 1, temporal=temporal, cross=cross, memory=memory)
            totals.append(time.perf_counter() - start)
            rss.append(_rss_mb())
            bar(k + 1)
        prompt = torch.tensor([tokenizer.encode_prompt("what colour is the first shape?", model.cfg.max_text_len)])
        decoder = model.context_decoder
        start = time.perf_counter()
        logits, past = decoder(prompt, state.cross)
        ttft = time.perf_counter() - start
        seq, cached = prompt, []
        for _ in range(tokens):
            token = logits[:, -1:].argmax(-1)
            seq = torch.cat([seq, token], 1)
            start = time.perf_counter()
            logits, past = decoder(token, state.cross, past)
            cached.append(time.perf_counter() - start)
        recompute = []
        for n in range(prompt.shape[1] + 1, seq.shape[1] + 1):
            start = time.perf_counter()
            decoder(seq[:, :n], state.cross)
            recompute.append(time.perf_counter() - start)
    return {"label": "torch-eager", "stages": stages, "total": totals, "rss_mb": rss,
            "text": {"ttft": ttft, "token_cached": cached, "token_recompute": recompute}, "threads": torch.get_num_threads()}


def stage_flops(config: dict) -> dict | None:
    """FLOPs per stage from the model config, counted by torch on the meta device; None without torch."""
    try:
        from mirasol_edge.config import ModelConfig
        from mirasol_edge.info import build_meta, flops_per_chunk
    except ImportError:
        return None
    flops = flops_per_chunk(build_meta(ModelConfig.from_dict(config)))
    flops["context_cross_kv"] = flops.pop("cross_kv")
    return flops


# -- the run --------------------------------------------------------------------------------


def run(bundles: list, torch_checkpoint=None, chunks: int = 500, tokens: int = 32, provider: str = "cpu",
        threads: int = 0, progress: bool = True) -> dict:
    """Benchmark every bundle (and the checkpoint in PyTorch eager) on the same chunks; returns a report dict."""
    from mirasol_edge.benchmarks.peak import matmul_peak_gflops
    from mirasol_edge.runtime.bundle import load_bundle

    if chunks < 2:
        raise ValueError(f"--chunks must be at least 2 (the first chunk is reported apart), got {chunks}.")
    first = load_bundle(bundles[0])
    spec = first.chunk
    with tempfile.TemporaryDirectory() as tmp:
        source = write_long_clip(Path(tmp) / "bench.mp4", spec, chunks)
        decode_times, inputs = time_decoding(source, spec)
    engines = []
    if torch_checkpoint is not None:
        engines.append(bench_torch(torch_checkpoint, inputs, chunks, tokens, progress))
    for path in bundles:
        engines.append(bench_ort(path, inputs, chunks, tokens, provider, threads, progress))
    peak = matmul_peak_gflops()
    report = {
        "machine": _machine(), "chunk_seconds": spec.chunk_seconds, "chunks": chunks, "tokens": tokens,
        "matmul_peak_gflops": peak, "flops": stage_flops(first.config),
        "decode": {"first_ms": decode_times[0] * 1e3, **_summary(decode_times[1:]), "per_chunk_ms": [t * 1e3 for t in decode_times]},
        "engines": [_engine_report(e, spec.chunk_seconds) for e in engines],
    }
    report["comparisons"] = _comparisons(report)
    return report


def _engine_report(e: dict, chunk_seconds: float) -> dict:
    stages = {name: {"first_ms": times[0] * 1e3, **_summary(times[1:])} for name, times in e["stages"].items()}
    warm = e["total"][1:]
    n = len(e["total"])
    early = np.median(e["total"][5:15]) if n > 15 else np.median(warm)  # around chunk 10
    late = np.median(e["total"][-10:])  # the last chunks
    text = e["text"]
    return {
        "label": e["label"], "providers": e.get("providers"), "threads": e.get("threads"),
        "stages": stages,
        "chunk": {"first_ms": e["total"][0] * 1e3, **_summary(warm)},
        "real_time_factor": float(np.median(warm)) / chunk_seconds,
        "late_over_early": float(late / early),
        "rss_mb": {"after_first": e["rss_mb"][0], "at_10": e["rss_mb"][min(10, n - 1)], "last": e["rss_mb"][-1], "max": max(e["rss_mb"])},
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "text": {"ttft_ms": text["ttft"] * 1e3, "token_cached": _summary(text["token_cached"]),
                 "token_recompute": _summary(text["token_recompute"]),
                 "cached_speedup_32": float(np.sum(text["token_recompute"]) / np.sum(text["token_cached"]))},
        "per_chunk_ms": [t * 1e3 for t in e["total"]],
        "per_stage_chunk_ms": {name: [t * 1e3 for t in times] for name, times in e["stages"].items()},
    }


def _comparisons(report: dict) -> dict:
    by = {e["label"]: e for e in report["engines"]}
    out = {}
    for a, b in (("torch-eager", "ort-fp32"), ("ort-fp32", "ort-int8"), ("torch-eager", "ort-int8")):
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
    rows = [
        ("chunk p50 ms", lambda e: f"{e['chunk']['p50_ms']:.3f}"),
        ("chunk p95 ms", lambda e: f"{e['chunk']['p95_ms']:.3f}"),
        ("chunk max ms", lambda e: f"{e['chunk']['max_ms']:.3f}"),
        ("first chunk ms", lambda e: f"{e['chunk']['first_ms']:.1f}"),
        ("real-time factor", lambda e: f"{e['real_time_factor']:.4f}"),
        ("last/chunk-10", lambda e: f"{e['late_over_early']:.3f}"),
        ("RSS MB @10 / last", lambda e: f"{e['rss_mb']['at_10']:.0f}/{e['rss_mb']['last']:.0f}"),
        ("TTFT ms", lambda e: f"{e['text']['ttft_ms']:.2f}"),
        ("token cached ms", lambda e: f"{e['text']['token_cached']['p50_ms']:.3f}"),
        ("token recompute ms", lambda e: f"{e['text']['token_recompute']['p50_ms']:.3f}"),
        (f"cache speedup x{report['tokens']}", lambda e: f"{e['text']['cached_speedup_32']:.2f}"),
    ]
    lines.append("-" * len(head))
    for title, fn in rows:
        lines.append(f"{title:<20}" + "".join(f"{fn(e):>16}" for e in report["engines"]))
    if report["flops"]:
        lines += ["", f"{'stage':<20}{'MFLOP':>10}" + "".join(f"{'% peak ' + label:>22}" for label in labels)]
        for name in STAGES:
            lines.append(f"{name:<20}{report['flops'][name] / 1e6:>10.1f}"
                         + "".join(f"{100 * e['flop_rate'][name]['of_peak']:>21.1f}%" for e in report["engines"]))
    if report["comparisons"]:
        lines.append("")
        for name, c in report["comparisons"].items():
            lines.append(f"{name}: per chunk x{c['chunk_speedup']:.2f}, per token x{c['token_speedup']:.2f}")
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
