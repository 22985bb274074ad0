"""Export a model whose context decoder alone holds more than 2 GB of weights, and time it.

    python -m benchmarks.export_large [--out DIR] [--context-layers 9] [--keep]

The `base` preset widened to the paper's d_model = 2048 (16 heads), one layer in every
component but the context decoder. Its graph holds 14 d^2 weights per layer (self-attention 4,
cross-attention queries and output 2, MLP 8; the cross keys/values are context_cross_kv's), so
10 layers come to ~590 M parameters = 2.36 GB in fp32: past protobuf's 2 GiB (2.15 GB) limit, so
the graph is written with its weights in context_decoder.onnx.data. The whole bundle is
exported and validated (ONNX Runtime loads every graph, external weights included).
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path


def large_config(context_layers: int):
    from mirasol_edge.config import preset

    base = preset("base")
    return replace(
        base,
        d_model=2048, n_heads=16,
        audio=replace(base.audio, layers=1),
        video=replace(base.video, layers=1),
        combiner=replace(base.combiner, layers=1),
        temporal_layers=1, context_layers=context_layers,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="bundle directory (default: a temporary one)")
    parser.add_argument("--context-layers", type=int, default=10)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "int8"])
    parser.add_argument("--keep", action="store_true", help="keep the bundle (it is several GB)")
    args = parser.parse_args()

    import torch

    from mirasol_edge.export import export_bundle
    from mirasol_edge.runtime.bundle import verify_manifest
    from mirasol_edge.model import MirasolModel

    torch.manual_seed(0)
    cfg = large_config(args.context_layers)
    start = time.perf_counter()
    model = MirasolModel(cfg).eval()
    build = time.perf_counter() - start
    for name in ("audio_extractor", "video_extractor", "combiner", "temporal_decoder", "context_decoder"):
        n = sum(p.numel() for p in getattr(model, name).parameters())
        print(f"{name:<18} {n / 1e6:8.1f} M parameters  {4 * n / 1e9:6.2f} GB fp32")
    print(f"model built in {build:.1f} s")

    root = args.out or Path(tempfile.mkdtemp(prefix="mirasol-large-")) / "bundle"
    start = time.perf_counter()
    export_bundle(model, root, precision=args.precision, force=True, progress=print)
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    manifest = verify_manifest(root)
    verify = time.perf_counter() - start
    print(f"\nexported and validated in {seconds:.1f} s; sha256 of every file checked in {verify:.1f} s")
    for name, entry in manifest["components"].items():
        files = [entry["file"], *(e["file"] for e in entry["external_data"])]
        size = sum(manifest["files"][f]["bytes"] for f in files)
        print(f"{name:<18} {size / 1e9:6.2f} GB  {', '.join(files)}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB on Linux
    print(f"peak resident memory {peak:.1f} GB")
    if not args.keep:
        shutil.rmtree(root.parent if args.out is None else root)


if __name__ == "__main__":
    main()
