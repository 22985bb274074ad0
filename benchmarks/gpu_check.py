"""GPU check of the runtime: CUDA execution provider, IO binding, fp16, latency, batched throughput,
fp16 accuracy, beside PyTorch eager on the same GPU in the same run.

Run by benchmarks/gpu_check.sh on the lent GPU machine; `--device cpu` runs every row on the CPU
instead (the dry run that tests this script anywhere).

For each bundle given (--bundle, fp32 and its fp16 twin --bundle-fp16) and each preset exported
here with random weights (--preset: fp32 and fp16 bundles, latency does not depend on weights):
  ort  cpu   fp32  numpy         the reference answer and cross cache
  ort  cuda  fp32  IO binding    caches stay on the GPU
  ort  cuda  fp16  IO binding
  ort  cuda  fp32  numpy         what IO binding saves
  torch eager cuda fp32          the same config, push_chunk and context_decoder.step
Per case: ms per chunk for one stream (all five graphs; median and p90 of CHUNKS after WARMUP),
prefill and ms per generated token (self cache), whether every graph runs on CUDA, which nodes
ONNX Runtime placed on the CPU (its profiler), same greedy answer as the CPU, max |d cross|.
Batched (--streams): N streams stepped together (Runtime.push_streams; torch: push_chunk at
batch N), ms per step and real-time streams held = N * chunk_seconds / step; N questions decoded
together, ms per token step. Accuracy (--clips, a clip_pack of held-out clips): every bundle in
fp32 and fp16 on the device, exact match, and how often the two answer alike.
Log, JSON and the tables (printed last) go to --out.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
import traceback
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CHUNKS, WARMUP, TOKENS, STEPS = 24, 3, 32, 4


def import_package():
    """mirasol_edge.runtime/.export/.benchmarks from the checkout, installed or not (pyproject maps them)."""
    try:
        import mirasol_edge.benchmarks  # noqa: F401
        import mirasol_edge.export  # noqa: F401
        import mirasol_edge.runtime  # noqa: F401
    except ImportError:
        import importlib.util

        sys.path.insert(0, str(REPO))
        import mirasol_edge

        for name in ("runtime", "export", "benchmarks"):
            spec = importlib.util.spec_from_file_location(
                f"mirasol_edge.{name}", REPO / name / "__init__.py", submodule_search_locations=[str(REPO / name)]
            )
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module
            spec.loader.exec_module(module)
            setattr(mirasol_edge, name, module)


class Log:
    def __init__(self, path: Path):
        self.file = open(path, "w", encoding="utf-8")

    def __call__(self, *parts) -> None:
        line = " ".join(str(p) for p in parts)
        print(line, flush=True)
        self.file.write(line + "\n")
        self.file.flush()


class Clock:
    """The run's time budget: optional sections are skipped, and said so, once it is spent."""

    def __init__(self, budget_s: float):
        self.start, self.budget_s = time.perf_counter(), budget_s

    def left(self) -> float:
        return self.budget_s - (time.perf_counter() - self.start)


def versions(log) -> dict:
    import onnxruntime as ort

    out = {"onnxruntime": ort.__version__, "ort_providers": ort.get_available_providers(), "python": sys.version.split()[0]}
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        out["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
        head = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=30).stdout.splitlines()
        out["cuda_driver_api"] = next((line.split("CUDA Version:")[1].strip(" |") for line in head if "CUDA Version" in line), "")
    except (OSError, subprocess.SubprocessError) as e:
        out["nvidia_smi"] = f"not available ({type(e).__name__})"
    import torch

    out.update(torch=torch.__version__, torch_cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
               torch_sees_gpu=torch.cuda.is_available(),
               gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
               torch_matmul_tf32=torch.backends.cuda.matmul.allow_tf32)
    log(f"versions: {json.dumps(out)}")
    return out


# -- bundles ------------------------------------------------------------------------------------


def export_preset(preset_name: str, root: Path, log) -> dict[str, Path]:
    """fp32 and fp16 bundles of the preset with random weights (seed 0), exported here."""
    import torch

    from mirasol_edge.config import preset
    from mirasol_edge.export import export_bundle
    from mirasol_edge.model import MirasolModel

    torch.manual_seed(0)
    model = MirasolModel(preset(preset_name)).eval()
    out = {}
    for precision in ("fp32", "fp16"):
        start = time.perf_counter()
        path = root / f"{preset_name}-random-{precision}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                export_bundle(model, path, precision=precision, validate=False, force=True)
            except Exception as e:  # a failed export is a row of the table, not the end of the check
                log(f"export {preset_name} {precision}: FAILED {type(e).__name__}: {str(e)[:300]}")
                continue
        out[precision] = path
        log(f"export {preset_name} {precision}: {time.perf_counter() - start:.1f} s -> {path}")
    return out


def chunks_for(spec, n: int, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, 256, (spec.frames_per_chunk, spec.frame_size, spec.frame_size, 3), dtype=np.uint8),
             (rng.standard_normal(spec.samples_per_chunk) * 0.1).astype(np.float32)) for _ in range(n)]


# -- ONNX Runtime -------------------------------------------------------------------------------


@contextlib.contextmanager
def profiled_sessions(prefix: Path):
    """Sessions created inside profile their runs (ONNX Runtime's profiler names each node's provider)."""
    from mirasol_edge.runtime import session as session_module

    original = session_module.session_options

    def with_profiling(*args, **kwargs):
        so = original(*args, **kwargs)
        so.enable_profiling = True
        so.profile_file_prefix = str(prefix)
        return so

    session_module.session_options = with_profiling
    try:
        yield
    finally:
        session_module.session_options = original


def node_placement(runtime) -> dict:
    """component -> {provider: node count} and the op types placed on the CPU, from one profiled run each."""
    out = {}
    for name, session in runtime.sessions.items():
        events = json.loads(Path(session.end_profiling()).read_text())
        nodes = {}
        for e in events:
            if e.get("cat") == "Node" and "provider" in e.get("args", {}):
                nodes[e["name"].removesuffix("_kernel_time")] = (e["args"]["provider"], e["args"].get("op_name", "?"))
        counts: dict[str, int] = {}
        for provider, _ in nodes.values():
            counts[provider] = counts.get(provider, 0) + 1
        cpu_ops = sorted({op for provider, op in nodes.values() if provider == "CPUExecutionProvider"})
        out[name] = {"nodes": counts, "cpu_ops": cpu_ops}
    return out


def ort_case(bundle: Path, provider: str, io_binding: bool, work: Path, log) -> dict:
    """One stream: latency per chunk and per token, the answer, the cross cache, node placement."""
    from mirasol_edge.benchmarks.bench import QUESTION, _timed_generate
    from mirasol_edge.runtime import tokenizer
    from mirasol_edge.runtime.session import Runtime

    start = time.perf_counter()
    with profiled_sessions(work / f"profile-{bundle.name}-{provider}-{int(io_binding)}"):
        runtime = Runtime.load(bundle, provider=provider, io_binding=io_binding)
    load_s = time.perf_counter() - start
    stream = runtime.create_stream()
    stream.push(*chunks_for(runtime.chunk, 1, seed=5)[0])
    stream.ask(QUESTION, max_new_tokens=2)
    placement = node_placement(runtime)  # profiled: the first push and question (and the sessions' set-up)
    stream = runtime.create_stream()
    active = runtime.active_providers()
    times = []
    for i, (frames, waveform) in enumerate(chunks_for(runtime.chunk, WARMUP + CHUNKS)):
        t = time.perf_counter()
        stream.push(frames, waveform)
        if i >= WARMUP:
            times.append(time.perf_counter() - t)
    prefill_s, token_times = _timed_generate(runtime, [stream], TOKENS)
    batch = stream.state.batch
    devices = sorted({"numpy" if isinstance(v, np.ndarray) else v.device_name().lower() for v in [*batch.temporal.values(), *batch.cross.values()]})
    answer = stream.ask(QUESTION, max_new_tokens=16)
    return {
        "runtime": runtime, "load_s": load_s, "io_binding": runtime.io_binding,
        "on_cuda": all(p[0] == "CUDAExecutionProvider" for p in active.values()),
        "provider_options": next(iter(runtime.sessions.values())).get_provider_options(),
        "placement": placement, "cache_devices": devices,
        "chunk_ms_p50": 1e3 * float(np.median(times)), "chunk_ms_p90": 1e3 * float(np.percentile(times, 90)),
        "prefill_ms": 1e3 * prefill_s, "token_ms_p50": 1e3 * float(np.median(token_times)),
        "answer_ids": tokenizer.tokenize(answer), "answer": answer,
        "cross": [a for n, a in sorted(stream.arrays().items()) if n.startswith("cross_")],
    }


class GraphTimer:
    """Wall time of each graph's runs (ORT synchronises the device at the end of a run), by component,
    while installed on a runtime's engine."""

    def __init__(self, runtime):
        self.engine, self.sessions = runtime.engine, runtime.engine.sessions
        self.times: dict[str, list[float]] = {name: [] for name in self.sessions}

    def __enter__(self):
        from mirasol_edge.benchmarks.bench import _TimedSession

        self.engine.sessions = {name: _TimedSession(s, self.times[name]) for name, s in self.sessions.items()}
        return self

    def __exit__(self, *exc):
        self.engine.sessions = self.sessions

    def per_step_ms(self, steps: int) -> dict[str, float]:
        return {name: 1e3 * sum(t) / steps for name, t in self.times.items() if t}


def ort_batched(runtime, ns: list[int], clock: Clock, log, label: str) -> list[dict]:
    """N streams stepped together, and N questions decoded together, for each N (stops at the first failure)."""
    from mirasol_edge.benchmarks.bench import _timed_generate

    rows = []
    chunks = chunks_for(runtime.chunk, 4, seed=1)
    for n in ns:
        if clock.left() < 60:
            log(f"  {label} N={n}: skipped, out of time")
            break
        try:
            streams = [runtime.create_stream() for _ in range(n)]
            t = time.perf_counter()
            runtime.push_streams(streams, [chunks[k % 4] for k in range(n)])  # new streams: zero state made and sent
            first_s = time.perf_counter() - t
            step_times = []
            with GraphTimer(runtime) as timer:
                for step in range(STEPS):
                    t = time.perf_counter()
                    runtime.push_streams(streams, [chunks[(k + step) % 4] for k in range(n)])
                    step_times.append(time.perf_counter() - t)
            graphs = timer.per_step_ms(STEPS)
            prefill_s, token_times = _timed_generate(runtime, streams, 8)
            step = float(np.median(step_times))
            row = {"engine": label, "streams": n, "first_step_ms": first_s * 1e3, "step_ms": step * 1e3,
                   "realtime_streams": n * runtime.chunk.chunk_seconds / step,
                   "prefill_ms": prefill_s * 1e3, "token_step_ms": float(np.median(token_times)) * 1e3,
                   "state_mb": n * runtime.state_bytes() / 1e6,
                   "stages_ms": {**graphs, "host": float(np.mean(step_times)) * 1e3 - sum(graphs.values())}}
            log(f"  {json.dumps(row)}")
            rows.append(row)
            del streams
        except Exception as e:  # out of memory at a large N is a result, not the end of the check
            log(f"  {label} N={n}: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}")
            rows.append({"engine": label, "streams": n, "error": f"{type(e).__name__}: {str(e)[:120]}"})
            break
    return rows


# -- PyTorch eager ------------------------------------------------------------------------------


def torch_case(cfg, device: str, ns: list[int], clock: Clock, log) -> tuple[dict, list[dict]]:
    """PyTorch eager on `device`: the model of config `cfg` (random weights), one stream, then N streams."""
    import torch

    from mirasol_edge.benchmarks.bench import QUESTION
    from mirasol_edge.model import MirasolModel
    from mirasol_edge.runtime import tokenizer

    torch.manual_seed(0)
    model = MirasolModel(cfg).to(device).eval()
    spec = cfg.chunk
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def upload(batch):  # from the host every step, as the runtime's inputs come
        frames = torch.from_numpy(np.stack([f for f, _ in batch])).to(device)
        waveform = torch.from_numpy(np.stack([w for _, w in batch])).to(device)
        return waveform, frames

    def text(state, n: int, tokens: int):
        prompt = torch.tensor([tokenizer.prompt_tokens(QUESTION, cfg.max_text_len)] * n, device=device)
        shape = (n, cfg.n_heads, cfg.max_text_len, cfg.d_model // cfg.n_heads)
        past = [(torch.zeros(shape, device=device), torch.zeros(shape, device=device)) for _ in range(cfg.context_layers)]
        seen = torch.full((n,), state.chunks, device=device)
        summary = model.stream_summary(state)
        times = []
        t = time.perf_counter()
        logits, past = model.context_decoder.step(prompt, torch.zeros(n, dtype=torch.long, device=device), past,
                                                  state.cross, seen, summary)
        sync()
        times.append(time.perf_counter() - t)
        position = prompt.shape[1]
        for _ in range(tokens):
            t = time.perf_counter()
            token = logits[:, -1:].argmax(-1)
            logits, past = model.context_decoder.step(token, torch.full((n,), position, device=device), past,
                                                      state.cross, seen, summary)
            logits[:, -1].argmax(-1).cpu()  # the token reaches the host, as in generation
            times.append(time.perf_counter() - t)
            position += 1
        return times

    chunks = chunks_for(spec, WARMUP + CHUNKS)
    with torch.inference_mode():
        state = model.init_stream()
        times = []
        for i, c in enumerate(chunks):
            t = time.perf_counter()
            state = model.push_chunk(state, *upload([c]))
            sync()
            if i >= WARMUP:
                times.append(time.perf_counter() - t)
        token_times = text(state, 1, TOKENS)
        single = {"chunk_ms_p50": 1e3 * float(np.median(times)), "chunk_ms_p90": 1e3 * float(np.percentile(times, 90)),
                  "prefill_ms": 1e3 * token_times[0], "token_ms_p50": 1e3 * float(np.median(token_times[1:]))}
        log(f"  torch eager {device}: {json.dumps(single)}")
        rows = []
        batch_chunks = chunks_for(spec, 4, seed=1)
        for n in ns:
            if clock.left() < 60:
                log(f"  torch N={n}: skipped, out of time")
                break
            try:
                state = model.init_stream(n)
                t = time.perf_counter()
                state = model.push_chunk(state, *upload([batch_chunks[k % 4] for k in range(n)]))
                sync()
                first_s = time.perf_counter() - t
                step_times = []
                for step in range(STEPS):
                    t = time.perf_counter()
                    state = model.push_chunk(state, *upload([batch_chunks[(k + step) % 4] for k in range(n)]))
                    sync()
                    step_times.append(time.perf_counter() - t)
                stages = torch_stages(model, state, *upload([batch_chunks[k % 4] for k in range(n)]), sync)
                token_times = text(state, n, 8)
                step = float(np.median(step_times))
                row = {"engine": f"torch-eager-{device}", "streams": n, "first_step_ms": first_s * 1e3, "step_ms": step * 1e3,
                       "realtime_streams": n * spec.chunk_seconds / step, "prefill_ms": token_times[0] * 1e3,
                       "token_step_ms": float(np.median(token_times[1:])) * 1e3, "stages_ms": stages}
                log(f"  {json.dumps(row)}")
                rows.append(row)
                del state
            except Exception as e:
                log(f"  torch N={n}: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}")
                rows.append({"engine": f"torch-eager-{device}", "streams": n, "error": f"{type(e).__name__}: {str(e)[:120]}"})
                break
            finally:
                if device == "cuda":
                    torch.cuda.empty_cache()
    return single, rows


def torch_stages(model, state, waveform, frames, sync) -> dict[str, float]:
    """ms of each stage of one push_chunk, the device synchronised around each (as the graphs split it)."""
    import torch

    times = {}

    def timed(name, fn, *args):
        sync()
        t = time.perf_counter()
        out = fn(*args)
        sync()
        times[name] = 1e3 * (time.perf_counter() - t)
        return out

    audio = timed("audio_extractor", model.audio_extractor, waveform)
    video = timed("video_extractor", model.video_extractor, frames)
    latents, _ = timed("combiner", model.combiner, audio, video, state.memory)
    position = torch.full((latents.shape[0],), state.chunks, dtype=torch.long, device=latents.device)
    features, _ = timed("temporal_decoder", model.temporal_decoder.step, latents, position, state.temporal)
    timed("context_cross_kv", lambda: (model.context_decoder.write_cross(features, position, state.cross),
                                       model.summary(state.summary, features, position) if model.summary is not None else None))
    return times


def profile_ops(bundle: Path, provider: str, n: int, work: Path, log, top: int = 12) -> list:
    """ONNX Runtime's profile of STEPS batched steps of N streams: per (graph, op type), ms per step
    (each node's median over the steps), the largest `top`."""
    from mirasol_edge.runtime.session import Runtime

    with profiled_sessions(work / f"ops-{bundle.name}-{n}"):
        runtime = Runtime.load(bundle, provider=provider, io_binding=True)
    streams = [runtime.create_stream() for _ in range(n)]
    chunks = chunks_for(runtime.chunk, 4, seed=1)
    for step in range(STEPS + 1):
        runtime.push_streams(streams, [chunks[(k + step) % 4] for k in range(n)])
    by_op: dict[tuple[str, str], float] = {}
    for name, session in runtime.sessions.items():
        durations: dict[str, list[float]] = {}
        ops = {}
        for e in json.loads(Path(session.end_profiling()).read_text()):
            if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
                durations.setdefault(e["name"], []).append(e["dur"])
                ops[e["name"]] = e["args"].get("op_name", "?")
        for node, d in durations.items():
            key = (name, ops[node])
            by_op[key] = by_op.get(key, 0.0) + float(np.median(d)) / 1e3
    rows = sorted(([g, op, ms] for (g, op), ms in by_op.items()), key=lambda r: -r[2])[:top]
    log(f"  ops of {bundle.name} at N={n} (ms per step): " + ", ".join(f"{g}/{op} {ms:.2f}" for g, op, ms in rows))
    return rows


def run_modes(bundle: Path, provider: str, n: int, log, repeats: int = 5) -> dict:
    """Where a batched step's graph time goes: each graph of one step of N streams run again on the same
    feeds, (engine) as the engine runs it: host inputs copied in by the run, outputs allocated by it;
    (device in) the host inputs already on the device; (prealloc out) and the outputs bound to buffers
    allocated before. ms per run, median of `repeats`."""
    import onnxruntime as ort

    from mirasol_edge.runtime.session import Runtime

    runtime = Runtime.load(bundle, provider=provider, io_binding=True)
    device = runtime.engine.device
    streams = [runtime.create_stream() for _ in range(n)]
    chunks = chunks_for(runtime.chunk, 4, seed=1)
    for step in range(2):
        runtime.push_streams(streams, [chunks[(k + step) % 4] for k in range(n)])
    captured = {}
    engine_run = runtime.engine._run

    def capture(component, feeds, outputs=None):
        out = engine_run(component, feeds, outputs)
        captured[component] = (feeds, out)
        return out

    runtime.engine._run = capture
    runtime.push_streams(streams, [chunks[(k + 2) % 4] for k in range(n)])
    del runtime.engine._run
    out = {}
    for component, (feeds, outputs) in captured.items():
        on_device = {k: v if isinstance(v, ort.OrtValue) else ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(v), device, 0)
                     for k, v in feeds.items()}
        session = runtime.sessions[component]
        modes = {}
        for mode, inputs, prealloc in (("engine", feeds, False), ("device in", on_device, False), ("prealloc out", on_device, True)):
            times = []
            for _ in range(repeats):
                binding = session.io_binding()
                for k, v in inputs.items():
                    if isinstance(v, ort.OrtValue):
                        binding.bind_ortvalue_input(k, v)
                    else:
                        binding.bind_cpu_input(k, np.ascontiguousarray(v))
                for k, v in outputs.items():
                    if prealloc:
                        binding.bind_ortvalue_output(k, v)
                    else:
                        binding.bind_output(k, device, 0)
                t = time.perf_counter()
                session.run_with_iobinding(binding)
                times.append(time.perf_counter() - t)
            modes[mode] = 1e3 * float(np.median(times))
        out[component] = modes
    log(f"  run modes of {bundle.name} at N={n} (ms per run): {json.dumps(out)}")
    return out


# -- accuracy -----------------------------------------------------------------------------------


def accuracy(bundles: dict[str, Path], clips: Path, provider: str, clock: Clock, log) -> dict:
    """Exact match of each bundle (fp32, fp16) on the packed clips through `provider` with IO binding,
    and the share of questions the two answer alike."""
    from mirasol_edge.benchmarks.clip_pack import unpack_clips
    from mirasol_edge.evaluate_runtime import answer_clips
    from mirasol_edge.runtime.session import Runtime
    from mirasol_edge.scoring import summarize

    out, answers = {}, {}
    for precision, bundle in bundles.items():
        if clock.left() < 60:
            log(f"accuracy {precision}: skipped, out of time")
            continue
        start = time.perf_counter()
        runtime = Runtime.load(bundle, provider=provider, io_binding=True)
        predictions = answer_clips(runtime, unpack_clips(clips), streams=64)
        summary = summarize(predictions)
        answers[precision] = [p.predicted for p in predictions]
        out[precision] = {"accuracy": summary["accuracy"], "n_questions": summary["n_questions"], "n_clips": summary["n_clips"],
                          "families": {k: v["accuracy"] for k, v in summary["families"].items()},
                          "seconds": time.perf_counter() - start}
        log(f"accuracy {precision} ({provider}): {json.dumps(out[precision])}")
    if len(answers) == 2:
        a, b = answers.values()
        out["same_answer"] = float(np.mean([x == y for x, y in zip(a, b)]))
        log(f"fp16 and fp32 answer alike on {out['same_answer']:.2%} of the questions")
    return out


# -- the run ------------------------------------------------------------------------------------


def check_bundles(name: str, bundles: dict[str, Path], config, device: str, ns: list[int], clock: Clock, work: Path,
                  log) -> dict:
    """Every case of one model (its fp32 and fp16 bundles; config: a ModelConfig), single stream and batched."""

    cases = [("cpu", "fp32", False), (device, "fp32", True), (device, "fp16", True), (device, "fp32", False)]
    rows, batched, reference = [], [], None
    for provider, precision, binding in cases:
        key = f"{name}/{precision}/{provider}/{'iobinding' if binding else 'numpy'}"
        row: dict = {"case": key}
        rows.append(row)
        if precision not in bundles:
            row["status"] = "no bundle"
            continue
        if clock.left() < 60:
            row["status"] = "out of time"
            continue
        log(f"{key}:")
        try:
            r = ort_case(bundles[precision], provider, binding, work, log)
        except Exception as e:
            log(traceback.format_exc())
            row["status"] = f"error: {type(e).__name__}: {str(e).splitlines()[0][:100] if str(e) else ''}"
            continue
        runtime, cross = r.pop("runtime"), r.pop("cross")
        if reference is None and provider == "cpu" and not binding:
            reference = {"answer_ids": r["answer_ids"], "cross": cross}
        same = reference is not None and r["answer_ids"] == reference["answer_ids"]
        cross_diff = max(float(np.abs(a - b).max()) for a, b in zip(cross, reference["cross"])) if reference else float("nan")
        on_device = provider == "cpu" or device == "cpu" or (r["on_cuda"] and (not binding or r["cache_devices"] == ["cuda"]))
        row.update(status="ok" if on_device else "NOT ON CUDA", same_answer=same, cross_max_abs=cross_diff, **r)
        log(f"  {json.dumps({k: v for k, v in row.items() if k != 'answer_ids'}, default=str)}")
        if binding and provider == device:
            batched += ort_batched(runtime, ns, clock, log, f"ort-{precision}-{device}-iobinding")
            del runtime
            n = max(k for k in ns if k <= 512)
            try:
                row["ops"] = {"streams": n, "top": profile_ops(bundles[precision], provider, n, work, log)}
            except Exception as e:
                log(f"  profile: {type(e).__name__}: {str(e)[:200]}")
    torch_row: dict = {"case": f"{name}/fp32/{device}/torch-eager"}
    rows.append(torch_row)
    if clock.left() > 60:
        log(f"{torch_row['case']}:")
        try:
            single, torch_batched = torch_case(config, device, ns, clock, log)
            torch_row.update(status="ok", **single)
            batched += torch_batched
        except Exception:
            log(traceback.format_exc())
            torch_row["status"] = "error"
    return {"rows": rows, "batched": batched}


def tables(results: dict, versions_: dict) -> str:
    lines = []
    header = (f"{'case':<34}{'status':<8}{'caches':<8}{'chunk p50':>10}{'p90':>9}{'prefill':>9}{'token':>9}"
              f"  {'same':<6}{'max|dx|':>9}  cpu nodes")
    lines += [header, "-" * len(header)]
    for model in results["models"].values():
        for row in model["rows"]:
            if "chunk_ms_p50" not in row:
                lines.append(f"{row['case']:<34}{row.get('status', '')}")
                continue
            cpu_nodes = sum(p["nodes"].get("CPUExecutionProvider", 0) for p in row.get("placement", {}).values())
            lines.append(
                f"{row['case']:<34}{row['status']:<8}{','.join(row.get('cache_devices', ['torch'])):<8}"
                f"{row['chunk_ms_p50']:>8.2f}ms{row['chunk_ms_p90']:>7.2f}ms{row['prefill_ms']:>7.2f}ms{row['token_ms_p50']:>7.3f}ms"
                f"  {str(row.get('same_answer', '-')):<6}{row.get('cross_max_abs', float('nan')):>9.1e}  "
                f"{cpu_nodes if 'placement' in row else '-'}"
            )
    for model in results["models"].values():
        for row in model["rows"]:
            if "/cuda/" in row["case"] and "placement" in row:
                ops = {g: p["cpu_ops"] for g, p in row["placement"].items() if p["cpu_ops"]}
                lines.append(f"  {row['case']}: ops on the CPU: {json.dumps(ops) if ops else 'none'}")
    lines.append("")
    header = f"{'engine (batched)':<34}{'N':>6}{'step':>11}{'RT streams':>12}{'prefill':>10}{'token step':>12}{'state':>10}"
    lines += [header, "-" * len(header)]
    for name, model in results["models"].items():
        for row in model["batched"]:
            if "error" in row:
                lines.append(f"{name + ' ' + row['engine']:<34}{row['streams']:>6}  {row['error'][:60]}")
                continue
            lines.append(f"{name + ' ' + row['engine']:<34}{row['streams']:>6}{row['step_ms']:>9.2f}ms{row['realtime_streams']:>12.0f}"
                         f"{row['prefill_ms']:>8.2f}ms{row['token_step_ms']:>10.3f}ms"
                         f"{row.get('state_mb', float('nan')):>8.0f}MB")
    short = {"audio_extractor": "audio", "video_extractor": "video", "combiner": "comb", "temporal_decoder": "temporal",
             "context_cross_kv": "cross", "context_decoder": "text", "host": "host"}
    lines.append("")
    lines.append("ms per batched step, by stage (host: the step's time outside the graphs' runs)")
    for name, model in results["models"].items():
        for row in model["batched"]:
            if "stages_ms" in row:
                lines.append(f"  {name + ' ' + row['engine']:<34}{row['streams']:>6}  "
                             + "  ".join(f"{short.get(k, k)} {v:.2f}" for k, v in row["stages_ms"].items()))
        for row in model["rows"]:
            if "ops" in row:
                lines.append(f"  {row['case']} ops at N={row['ops']['streams']} (ms per step): "
                             + ", ".join(f"{g}/{op} {ms:.2f}" for g, op, ms in row["ops"]["top"]))
    for name, modes in results.get("run_modes", {}).items():
        lines.append(f"graph runs of {name} (ms): " + "; ".join(
            f"{short.get(g, g)} " + "/".join(f"{v:.2f}" for v in m.values()) for g, m in modes.items())
            + "  (engine / device in / prealloc out)")
    for name, acc in results.get("accuracy", {}).items():
        lines.append("")
        for precision in ("fp32", "fp16"):
            if precision in acc:
                a = acc[precision]
                lines.append(f"accuracy {name} {precision}: {a['accuracy']:.2%} of {a['n_questions']} questions on {a['n_clips']} clips "
                             f"({a['seconds']:.0f} s); " + ", ".join(f"{k} {v:.1%}" for k, v in sorted(a["families"].items())))
        if "same_answer" in acc:
            lines.append(f"fp16 and fp32 answer alike: {acc['same_answer']:.2%}")
    lines.append("")
    lines.append(f"{versions_.get('gpu')} | nvidia-smi: {versions_.get('nvidia_smi')} | CUDA (driver) {versions_.get('cuda_driver_api')} "
                 f"| torch {versions_.get('torch')} (CUDA {versions_.get('torch_cuda')}, cuDNN {versions_.get('cudnn')}) "
                 f"| onnxruntime {versions_.get('onnxruntime')}")
    lines.append(f"chunk: one stream, all five graphs, median/p90 of {CHUNKS} after {WARMUP} warm-up; token: one decoder step "
                 f"with the self cache; batched: median of {STEPS} steps after the first; RT streams = N * chunk_seconds / step")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT", "/tmp/mirasol-gpu-check-out"))
    parser.add_argument("--work", default="/tmp/mirasol-gpu-check", help="where bundles are exported and profiles written")
    parser.add_argument("--bundle", action="append", default=[], help="NAME=FP32_DIR,FP16_DIR (trained bundles)")
    parser.add_argument("--preset", action="append", default=[], help="NAME=N1,N2,... a preset exported here with random weights, "
                                                                      "and its batched stream counts")
    parser.add_argument("--streams", default="1,64,512,2048,8192", help="batched stream counts for --bundle models")
    parser.add_argument("--clips", help="a clip_pack .npz: fp32 and fp16 accuracy of every --bundle")
    parser.add_argument("--run-modes", action="append", default=[], help="BUNDLE@N: each graph of a step of N streams "
                                                                          "with host or device inputs, allocated or bound outputs")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="cpu: the dry run of this script")
    parser.add_argument("--budget", type=float, default=480, help="seconds; later optional sections are skipped past it")
    args = parser.parse_args()
    out, work = Path(args.out), Path(args.work)
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    log = Log(out / "gpu_check.log")
    clock = Clock(args.budget)
    import_package()
    import onnxruntime as ort

    from mirasol_edge.config import ModelConfig, preset
    from mirasol_edge.runtime.bundle import load_bundle

    if hasattr(ort, "preload_dlls"):
        with contextlib.suppress(Exception):
            ort.preload_dlls()
    versions_ = versions(log)
    if args.device == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
        log("CUDA: this onnxruntime has no CUDAExecutionProvider (CPU build, or no onnxruntime-gpu); use --device cpu for the dry run")
        return 1
    results: dict = {"versions": versions_, "models": {}, "accuracy": {}, "run_modes": {}}
    streams = [int(n) for n in args.streams.split(",")]
    trained = {}
    for spec in args.bundle:
        name, paths = spec.split("=")
        fp32, fp16 = paths.split(",")
        trained[name] = {"fp32": Path(fp32), "fp16": Path(fp16)}
        config = ModelConfig.from_dict(load_bundle(fp32).config)
        results["models"][name] = check_bundles(name, trained[name], config, args.device, streams, clock, work, log)
    if args.clips:
        for name, bundles in trained.items():
            results["accuracy"][name] = accuracy(bundles, Path(args.clips), args.device, clock, log)
    for spec in args.run_modes:
        bundle, n = spec.rsplit("@", 1)
        try:
            results["run_modes"][f"{Path(bundle).name}@{n}"] = run_modes(Path(bundle), args.device, int(n), log)
        except Exception:
            log(traceback.format_exc())
    for spec in args.preset:
        name, ns = spec.split("=")
        if clock.left() < 150:
            log(f"preset {name}: skipped, out of time")
            continue
        bundles = export_preset(name, work, log)
        results["models"][f"{name}-random"] = check_bundles(f"{name}-random", bundles, preset(name), args.device,
                                                            [int(n) for n in ns.split(",")], clock, work, log)
    (out / "gpu_check.json").write_text(json.dumps(results, indent=1, default=str))
    log("\n" + tables(results, versions_))
    bad = [r for m in results["models"].values() for r in m["rows"] if r.get("status") not in ("ok",)]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
