"""GPU check of the runtime: CUDA execution provider, IO binding, fp16, latency per chunk and token.

Run by benchmarks/gpu_check.sh on the lent GPU machine (docs: /work/shared/device/README.md);
runs anywhere, and where there is no CUDA it does the CPU rows and says why CUDA was skipped.

For each preset (tiny, small) it exports random-weight bundles (fp32, fp16) with torch, then
runs the same chunks and questions through
  cpu   fp32   numpy engine       (the reference)
  cuda  fp32   IO binding         (caches stay on the GPU)
  cuda  fp16   IO binding
  cuda  fp32   numpy engine       (what IO binding saves)
and checks: every session really runs on CUDA (session.get_providers()), the stream's caches are
OrtValues on the GPU, the greedy answer and the cross cache agree with the CPU reference.
Latency: per chunk (all five graphs, median and p90 over CHUNKS pushes after WARMUP) and per
generated token (one decoder step with the self cache, median over TOKENS steps); throughput: 32,
256 and 1024 streams stepped together (Runtime.push_streams), as real-time streams held.
Full log and JSON go to $OUT (or --out); the table is printed last.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CHUNKS, WARMUP, TOKENS = 24, 3, 32
QUESTION = "what colour is the first shape?"


def import_runtime():
    """mirasol_edge.runtime from the checkout, installed or not (export/ and runtime/ are mapped in pyproject)."""
    try:
        import mirasol_edge.export  # noqa: F401
        import mirasol_edge.runtime  # noqa: F401
    except ImportError:
        import importlib.util

        sys.path.insert(0, str(REPO))
        import mirasol_edge

        for name, folder in (("runtime", "runtime"), ("export", "export")):
            spec = importlib.util.spec_from_file_location(
                f"mirasol_edge.{name}", REPO / folder / "__init__.py", submodule_search_locations=[str(REPO / folder)]
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


def export_bundles(preset_name: str, root: Path, log) -> dict[str, Path]:
    import torch

    from mirasol_edge.config import preset
    from mirasol_edge.export import export_bundle
    from mirasol_edge.model import MirasolModel

    torch.manual_seed(0)
    model = MirasolModel(preset(preset_name)).eval()
    out = {}
    for precision in ("fp32", "fp16"):
        start = time.perf_counter()
        path = root / f"{preset_name}-{precision}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                export_bundle(model, path, precision=precision, validate=False, force=True)
            except Exception as e:  # a failed variant is a row of the table, not the end of the check
                log(f"export {preset_name} {precision}: FAILED {type(e).__name__}: {e}")
                continue
        out[precision] = path
        log(f"export {preset_name} {precision}: {time.perf_counter() - start:.1f} s -> {path}")
    return out


def chunks_for(spec, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        frames = rng.integers(0, 256, (spec.frames_per_chunk, spec.frame_size, spec.frame_size, 3), dtype=np.uint8)
        waveform = (rng.standard_normal(spec.samples_per_chunk) * 0.1).astype(np.float32)
        yield frames, waveform


def device_of(value) -> str:
    return "numpy" if isinstance(value, np.ndarray) else value.device_name()


def run_case(bundle: Path, provider: str, io_binding: bool, log, batches=(32, 256, 1024)) -> dict:
    from mirasol_edge.runtime import tokenizer
    from mirasol_edge.runtime.generation import GenerationOptions, generate
    from mirasol_edge.runtime.session import Runtime

    start = time.perf_counter()
    runtime = Runtime.load(bundle, provider=provider, io_binding=io_binding)
    load_s = time.perf_counter() - start
    active = runtime.active_providers()
    on_cuda = all(p[0] == "CUDAExecutionProvider" for p in active.values())
    log(f"  sessions: {json.dumps({k: v[0] for k, v in active.items()})}")
    stream = runtime.create_stream()
    times = []
    for i, (frames, waveform) in enumerate(chunks_for(runtime.chunk, WARMUP + CHUNKS)):
        t = time.perf_counter()
        stream.push(frames, waveform)
        if i >= WARMUP:
            times.append(time.perf_counter() - t)
    batch = stream.state.batch
    cache_devices = sorted({device_of(v) for v in [*batch.temporal.values(), *batch.cross.values()]})
    # per token: the prompt in one prefill, then TOKENS one-token steps, eos or not (generation.generate)
    prompt = tokenizer.prompt_tokens(QUESTION, runtime.bundle.max_text_len)
    steps = generate(runtime.engine, [stream.state], [prompt], [GenerationOptions(max_new_tokens=TOKENS)],
                     runtime.bundle.max_text_len, stop_at_eos=False)
    step_times, t = [], time.perf_counter()
    for _ in steps:
        step_times.append(time.perf_counter() - t)
        t = time.perf_counter()
    t = time.perf_counter()
    answer = stream.ask(QUESTION, max_new_tokens=16)
    ask_s = time.perf_counter() - t
    ids = tokenizer.tokenize(answer)
    throughput = {}
    for n in batches:  # n streams stepped together: stream-chunks per second, i.e. real-time streams held
        try:
            streams = [runtime.create_stream() for _ in range(n)]
            chunk = list(chunks_for(runtime.chunk, 4, seed=1))
            runtime.push_streams(streams, [chunk[k % 4] for k in range(n)])  # warm-up
            t = time.perf_counter()
            for step in range(4):
                runtime.push_streams(streams, [chunk[(k + step) % 4] for k in range(n)])
            per_step = (time.perf_counter() - t) / 4
            throughput[n] = n * runtime.chunk.chunk_seconds / per_step
            log(f"  {n} streams: {per_step * 1e3:.1f} ms per step, {throughput[n]:.0f} real-time streams")
        except Exception as e:  # out of memory at a large n is a result, not the end of the check
            log(f"  {n} streams: {type(e).__name__}: {str(e).splitlines()[0][:120]}")
            break
    return {
        "load_s": load_s,
        "on_cuda": on_cuda,
        "providers": {k: v for k, v in active.items()},
        "io_binding": runtime.io_binding,
        "cache_devices": cache_devices,
        "chunk_ms_p50": 1000 * float(np.median(times)),
        "chunk_ms_p90": 1000 * float(np.percentile(times, 90)),
        "prefill_ms": 1000 * step_times[0],
        "token_ms_p50": 1000 * float(np.median(step_times[1:])) if len(step_times) > 1 else float("nan"),
        "ask_ms": 1000 * ask_s,
        "answer_ids": ids,
        "answer": answer,
        "realtime_streams": throughput,
        "cross": [a for n, a in sorted(stream.arrays().items()) if n.startswith("cross_")],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT", "/tmp/mirasol-gpu-check-out"))
    parser.add_argument("--presets", default="tiny,small")
    parser.add_argument("--work", default="/tmp/mirasol-gpu-check", help="where bundles are exported")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = Log(out / "gpu_check.log")
    import_runtime()
    import onnxruntime as ort

    log(f"onnxruntime {ort.__version__}; available providers: {ort.get_available_providers()}")
    cuda_reason = None
    if hasattr(ort, "preload_dlls"):
        try:
            ort.preload_dlls()
        except Exception as e:
            log(f"preload_dlls: {e}")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        cuda_reason = "this onnxruntime has no CUDAExecutionProvider (CPU build, or no onnxruntime-gpu)"
        log(f"CUDA: skipped: {cuda_reason}")
    try:
        import torch

        log(f"torch {torch.__version__}; cuda available: {torch.cuda.is_available()}"
            + (f" ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else ""))
    except ImportError:
        log("torch: not importable here; nothing can be exported")
        return 1

    cases = [("cpu", "fp32", False), ("cuda", "fp32", True), ("cuda", "fp16", True), ("cuda", "fp32", False)]
    rows, results = [], {}
    for preset_name in args.presets.split(","):
        bundles = export_bundles(preset_name, Path(args.work), log)
        reference = None
        for provider, precision, binding in cases:
            key = f"{preset_name}/{precision}/{provider}/{'iobinding' if binding else 'numpy'}"
            row = {"case": key}
            if provider == "cuda" and cuda_reason:
                row["status"] = "skipped"
                rows.append(row)
                continue
            if precision not in bundles:
                row["status"] = "no bundle"
                rows.append(row)
                continue
            log(f"{key}:")
            try:
                r = run_case(bundles[precision], provider, binding, log)
            except Exception as e:
                log(traceback.format_exc())
                row["status"] = f"error: {type(e).__name__}: {str(e).splitlines()[0][:80]}"
                rows.append(row)
                continue
            if reference is None and provider == "cpu":
                reference = r
            same_ids = reference is not None and r["answer_ids"] == reference["answer_ids"]
            cross_diff = (max(float(np.abs(a - b).max()) for a, b in zip(r["cross"], reference["cross"]))
                          if reference is not None else float("nan"))
            ok = (provider == "cpu") or (r["on_cuda"] and (not binding or r["cache_devices"] == ["cuda"]))
            row.update(status="ok" if ok else "NOT ON CUDA", same_answer=same_ids, cross_max_abs=cross_diff,
                       **{k: v for k, v in r.items() if k not in ("cross", "providers")})
            log(f"  {json.dumps({k: v for k, v in row.items() if k != 'answer_ids'}, default=str)}")
            rows.append(row)
        results[preset_name] = {k: str(v) for k, v in bundles.items()}
    (out / "gpu_check.json").write_text(json.dumps({"rows": rows, "bundles": results}, indent=1, default=str))

    header = (f"{'case':<28}{'status':<8}{'graphs':<7}{'caches':<11}{'chunk p50':>10}{'p90':>10}"
              f"{'token p50':>10}{'prefill':>9}{'ask':>9}  {'same ans':<9}{'max|dcross|':>11}")
    lines = [header, "-" * len(header)]
    for row in rows:
        if "chunk_ms_p50" not in row:
            lines.append(f"{row['case']:<28}{row['status']}")
            continue
        lines.append(
            f"{row['case']:<28}{row['status']:<8}{'cuda' if row['on_cuda'] else 'cpu':<7}"
            f"{','.join(row['cache_devices']):<11}{row['chunk_ms_p50']:>8.2f}ms{row['chunk_ms_p90']:>8.2f}ms"
            f"{row['token_ms_p50']:>8.3f}ms{row['prefill_ms']:>7.2f}ms{row['ask_ms']:>7.1f}ms  "
            f"{str(row['same_answer']):<9}{row['cross_max_abs']:>11.2e}"
        )
    lines.append(f"ms per chunk: all five graphs for one chunk ({CHUNKS} after {WARMUP} warm-up); "
                 f"token: one decoder step with the self cache; ask: a whole greedy answer (<= 16 tokens)")
    if cuda_reason:
        lines.append(f"CUDA rows skipped: {cuda_reason}")
    log("\n" + "\n".join(lines))
    bad = [r for r in rows if r.get("status") not in ("ok", "skipped")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
