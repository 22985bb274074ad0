"""Before/after rows of BENCHMARKS.md for the throughput changes, each measured side by side.

    python -m mirasol_edge.benchmarks.ablation graphs OUT_DIR      # each graph change undone, per graph
    python -m mirasol_edge.benchmarks.ablation pools BUNDLE        # thread pools, batch 1 / 8 / 32
    python -m mirasol_edge.benchmarks.ablation text-cache BUNDLE   # text cache sized per batch vs max_text_len
    python -m mirasol_edge.benchmarks.ablation old-runtime BUNDLE OLD_BUNDLE OLD_CHECKOUT   # vs the format-1 runtime

`graphs` exports the small preset (random weights: latency does not depend on them) as it is and
with one change undone at a time (opset 20 instead of 23's Attention op; the video stem as 3-D
convolutions after a (B, 3, F, H, W) Sub/Div normalisation; concatenated caches with
ScatterElements writes), then runs the same inputs through each variant's graph in turn.
`old-runtime` runs 32 streams one at a time on the runtime of an older checkout (e.g. `git worktree
add ../old 4872de1`, its bundle exported by it) against 32 streams stepped together here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

STREAMS, TOKENS = 32, 24


def _chunks(spec, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, 256, (spec.frames_per_chunk, spec.frame_size, spec.frame_size, 3), dtype=np.uint8),
             (rng.standard_normal(spec.samples_per_chunk) * 0.1).astype(np.float32)) for _ in range(n)]


# -- graphs ---------------------------------------------------------------------------------------


def _undo(variant: str) -> None:
    """Patch the model code back to before one change (this process only)."""
    import torch

    from mirasol_edge.model import decoders, extractors, layers

    if variant == "stem3d":
        mean = torch.tensor(extractors.IMAGE_MEAN).view(1, 3, 1, 1, 1)
        std = torch.tensor(extractors.IMAGE_STD).view(1, 3, 1, 1, 1)

        def forward(self, frames):
            x = (frames.permute(0, 4, 1, 2, 3).float() / 255.0 - mean) / std  # (B, 3, F, H, W)
            x = self.patch(self.stem(x)).flatten(2).transpose(1, 2)
            return self.encoder(x + self.position)

        extractors.VideoExtractor.forward = forward
    elif variant == "concat_scatter_elements":
        def write_cache(cache, new, write):
            return cache.scatter(2, write[:, None, :, None].expand_as(new), new)

        def step(self, tokens, position, past, cross, chunks):
            b, t = tokens.shape
            write = position[:, None] + torch.arange(t)
            x = self.embed(tokens) + self.position[write]
            cache = torch.arange(past[0][0].shape[2])
            earlier = (cache[None, :] < position[:, None])[:, None, :].expand(b, t, -1)
            causal = torch.ones(t, t, dtype=torch.bool).tril()[None].expand(b, -1, -1)
            mask = torch.cat([earlier, causal], dim=2)[:, None]
            cross_mask = decoders.ring_slots_filled(cross[0][0].shape[2], self.latents_per_chunk, chunks)[:, None, None, :]
            present = []
            for block, kv, ckv in zip(self.blocks, past, cross):
                x, kv = block(x, mask=mask, past=kv, cross=ckv, cross_mask=cross_mask, write=write)
                present.append(kv)
            return self._logits(x), present

        layers.write_cache = write_cache
        decoders.write_cache = write_cache
        decoders.ContextDecoder.step = step
    elif variant not in ("final", "opset20"):
        raise ValueError(f"unknown variant {variant}")


def export_variant(variant: str, out: Path) -> None:
    import torch

    from mirasol_edge.config import preset
    from mirasol_edge.export import export_bundle
    from mirasol_edge.model import MirasolModel

    _undo(variant)
    torch.manual_seed(0)
    model = MirasolModel(preset("small")).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_bundle(model, out, force=True, validate=variant == "final", opset=20 if variant == "opset20" else None)


def _feeds(spec, dims, batch: int, rng) -> dict:
    values = {"batch": batch, "cache_len": 64 * dims.latents, "text_len": 1, "text_cache_len": 64}
    out = {}
    for name, t in spec.inputs.items():
        shape = tuple(values[d] if isinstance(d, str) else d for d in t.shape)
        if name == "frames":
            out[name] = rng.integers(0, 256, shape, dtype=np.uint8)
        elif name == "tokens":
            out[name] = rng.integers(4, 260, shape, dtype=np.int64)
        elif name in ("chunk_position", "chunks_seen"):
            out[name] = np.full(shape, 100, np.int64)
        elif name == "text_position":
            out[name] = np.full(shape, 40, np.int64)
        else:
            out[name] = (rng.standard_normal(shape) * 0.1).astype(np.float32)
    return out


def time_graphs(bundles: dict[str, Path], reps: int = 30) -> dict:
    """ms per run of every graph of every variant, at batch 1 and 32, variants interleaved."""
    import onnxruntime as ort

    from mirasol_edge.runtime.bundle import load_bundle
    from mirasol_edge.runtime.contract import CHUNK_STAGES, Dims, graph_specs
    from mirasol_edge.runtime.session import session_options

    dims = Dims.from_config(load_bundle(next(iter(bundles.values())), verify=False).config)
    specs, rng, out = graph_specs(dims), np.random.default_rng(0), {}
    for graph in (*CHUNK_STAGES, "context_decoder"):
        sessions = {v: ort.InferenceSession(str(b / f"{graph}.onnx"), session_options(), providers=["CPUExecutionProvider"])
                    for v, b in bundles.items()}
        for batch in (1, 32):
            feeds = _feeds(specs[graph], dims, batch, rng)
            times = {v: [] for v in bundles}
            for r in range(reps):
                for v in list(bundles) if r % 2 == 0 else list(bundles)[::-1]:
                    start = time.perf_counter()
                    sessions[v].run(None, feeds)
                    times[v].append(time.perf_counter() - start)
            out[f"{graph}/{batch}"] = {v: 1e3 * float(np.median(t[3:])) for v, t in times.items()}
            print(graph, "batch", batch, {v: round(ms, 3) for v, ms in out[f"{graph}/{batch}"].items()}, flush=True)
    return out


# -- thread pools, text cache, old runtime ----------------------------------------------------------


def pools(bundle: Path, mode: str) -> dict:
    """ms per stream-chunk at batch 1, 8 and 32 for one thread-pool setting (run in a process of its own)."""
    from mirasol_edge.runtime.session import Runtime

    opts = {"graph": dict(thread_pool="per_session", spinning=False),
            "graph-spinning": dict(thread_pool="per_session", spinning=True),
            "shared": dict(thread_pool="shared")}[mode]
    runtime = Runtime.load(bundle, **opts)
    data = _chunks(runtime.chunk, 8)
    out = {}
    for n in (1, 8, 32):
        streams = [runtime.create_stream() for _ in range(n)]
        runtime.push_streams(streams, [data[k % 8] for k in range(n)])
        times = []
        for k in range(max(8, 96 // n)):
            start = time.perf_counter()
            runtime.push_streams(streams, [data[(k + i) % 8] for i in range(n)])
            times.append(time.perf_counter() - start)
        out[n] = 1e3 * float(np.median(times[1:])) / n
    return out


def text_cache(bundle: Path) -> dict:
    """Decoding tokens per second (median step), 1 and 32 questions, text cache sized per batch vs max_text_len."""
    from mirasol_edge.benchmarks.bench import _timed_generate
    from mirasol_edge.runtime import generation
    from mirasol_edge.runtime.session import Runtime

    runtime = Runtime.load(bundle, thread_pool="shared")
    data = _chunks(runtime.chunk, 8)
    streams = [runtime.create_stream() for _ in range(STREAMS)]
    for k in range(3):
        runtime.push_streams(streams, [data[(k + i) % 8] for i in range(STREAMS)])
    step, rates = generation.TEXT_CACHE_STEP, {}
    for _ in range(4):
        for mode, size in (("sized", step), ("max_text_len", 1 << 30)):
            generation.TEXT_CACHE_STEP = size
            for n in (1, STREAMS):
                _, times = _timed_generate(runtime, streams[:n], TOKENS)
                rates.setdefault(f"{mode}/{n}", []).append(n / float(np.median(times)))
    generation.TEXT_CACHE_STEP = step
    return {k: float(np.median(v)) for k, v in rates.items()}


_OLD_PROBE = """
import json, sys, time, numpy as np
from mirasol_edge.runtime.session import Runtime
from mirasol_edge.runtime import tokenizer
rt = Runtime.load(sys.argv[1])
spec, rng = rt.chunk, np.random.default_rng(0)
data = [(rng.integers(0, 256, (spec.frames_per_chunk, spec.frame_size, spec.frame_size, 3), dtype=np.uint8),
         (rng.standard_normal(spec.samples_per_chunk) * 0.1).astype(np.float32)) for _ in range(8)]
n, tok = int(sys.argv[2]), int(sys.argv[3])
streams = [rt.create_stream() for _ in range(n)]
for k, s in enumerate(streams):
    for j in range(k % 4):
        s.push(*data[j])
steps = []
for step in range(9):
    t = time.perf_counter()
    for k, s in enumerate(streams):
        s.push(*data[(step + k) % 8])
    if step:
        steps.append(time.perf_counter() - t)
engine = rt.engine
prompt = tokenizer.encode_prompt("what colour is the first shape?", rt.bundle.max_text_len)
runs = []
for _ in range(3):
    t = time.perf_counter()
    for s in streams:
        logits, past = engine.decode(s.state.cross, prompt, engine.empty_self_cache())
        for _ in range(tok - 1):
            logits, past = engine.decode(s.state.cross, [int(np.argmax(logits))], past)
    runs.append(time.perf_counter() - t)
print(json.dumps({"stream_chunks_per_s": n / float(np.median(steps)), "tokens_per_s": n * tok / float(np.median(runs))}))
"""


def old_runtime(bundle: Path, old_bundle: Path, old_checkout: Path, rounds: int = 3) -> dict:
    """32 streams one at a time on an older checkout's runtime against 32 stepped together here, in turn."""
    from mirasol_edge.benchmarks.bench import OrtSetup, bench_batched
    from mirasol_edge.runtime.session import Runtime

    data = _chunks(Runtime.load(bundle).chunk, 8)
    old_checkout = Path(old_checkout).resolve()
    for name in ("runtime", "export", "benchmarks"):  # map its folders as its pyproject does (links in that checkout)
        link = old_checkout / "mirasol_edge" / name
        if not link.exists():
            link.symlink_to(Path("..") / name)
    env = {**os.environ, "PYTHONPATH": str(old_checkout)}
    old, new = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(rounds):
            result = subprocess.run([sys.executable, "-c", _OLD_PROBE, str(Path(old_bundle).resolve()), str(STREAMS), str(TOKENS)],
                                    capture_output=True, text=True, env=env, cwd=tmp, check=True)
            old.append(json.loads(result.stdout.splitlines()[-1]))
            new.append(bench_batched(bundle, data, STREAMS, TOKENS, OrtSetup(thread_pool="shared")))
    return {
        "old_stream_chunks_per_s": float(np.median([o["stream_chunks_per_s"] for o in old])),
        "old_tokens_per_s": float(np.median([o["tokens_per_s"] for o in old])),
        "batched_stream_chunks_per_s": float(np.median([n["batched_stream_chunks_per_s"] for n in new])),
        "batched_tokens_per_s": float(np.median([n["batched_tokens_per_s"] for n in new])),
        "rounds": rounds,
    }


def main() -> None:
    what, args = sys.argv[1], sys.argv[2:]
    if what == "graphs":
        out = Path(args[0])
        for variant in ("final", "opset20", "stem3d", "concat_scatter_elements"):
            subprocess.run([sys.executable, "-c", f"from mirasol_edge.benchmarks.ablation import export_variant; "
                            f"from pathlib import Path; export_variant({variant!r}, Path({str(out / variant)!r}))"], check=True)
        result = time_graphs({v: out / v for v in ("final", "opset20", "stem3d", "concat_scatter_elements")})
    elif what == "pools":
        result = {}
        for _ in range(2):
            for mode in ("graph", "graph-spinning", "shared"):  # each in its own process: the shared pool is process-wide
                code = f"import json; from mirasol_edge.benchmarks.ablation import pools; print(json.dumps(pools({args[0]!r}, {mode!r})))"
                run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
                result.setdefault(mode, []).append(json.loads(run.stdout.splitlines()[-1]))
                print(mode, result[mode][-1], flush=True)
    elif what == "text-cache":
        result = text_cache(Path(args[0]))
    elif what == "old-runtime":
        result = old_runtime(Path(args[0]), Path(args[1]), Path(args[2]))
    else:
        raise SystemExit(f"unknown ablation {what!r}: graphs, pools, text-cache or old-runtime")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
