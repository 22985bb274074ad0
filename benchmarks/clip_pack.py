"""Decoded clips and their questions in one .npz, for a machine without PyAV (the lent GPU machine).

    python -m mirasol_edge.benchmarks.clip_pack MANIFEST BUNDLE OUT.npz [--clips N]

Clips are decoded exactly as evaluation decodes them (scoring.manifest_clips: runtime.media.read_clip
at the bundle's chunk spec) and kept bit for bit (uint8 frames, float32 waveform), so a bundle
evaluated from the pack answers as it does from the media files.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Iterator

import numpy as np

from mirasol_edge.scoring import Clip, Question


def pack_clips(clips: list[Clip], out: str | os.PathLike) -> None:
    """Clips (name, frames (K, F, H, W, 3) u8, waveform (K, S) f32, questions) -> one compressed .npz."""
    meta = [{"name": name, "chunks": len(frames), "questions": [vars(q) for q in questions]}
            for name, frames, _, questions in clips]
    np.savez_compressed(
        out,
        frames=np.concatenate([c[1] for c in clips]),  # (sum K, F, H, W, 3): clips one after the other
        waveform=np.concatenate([c[2] for c in clips]),  # (sum K, S)
        meta=np.array(json.dumps(meta)),
    )


def unpack_clips(path: str | os.PathLike) -> Iterator[Clip]:
    """The clips of a pack, in order, as scoring.manifest_clips yields them."""
    with np.load(path, allow_pickle=False) as pack:
        frames, waveform, meta = pack["frames"], pack["waveform"], json.loads(str(pack["meta"]))
    start = 0
    for clip in meta:
        end = start + clip["chunks"]
        yield clip["name"], frames[start:end], waveform[start:end], [Question(**q) for q in clip["questions"]]
        start = end
    assert start == len(frames), "the pack's clip lengths add up to its chunks"


def main() -> None:
    from mirasol_edge.data.manifest import load_manifest
    from mirasol_edge.runtime.bundle import load_bundle
    from mirasol_edge.scoring import manifest_clips

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("manifest")
    parser.add_argument("bundle", help="the bundle whose chunk spec the clips are decoded at")
    parser.add_argument("out")
    parser.add_argument("--clips", type=int, default=0, help="only the first N clips (0: all)")
    args = parser.parse_args()
    rows = load_manifest(args.manifest)
    if args.clips:
        videos = list(dict.fromkeys(r.video for r in rows))[: args.clips]
        rows = [r for r in rows if r.video in set(videos)]
    clips = list(manifest_clips(rows, load_bundle(args.bundle).chunk, workers=2))
    pack_clips(clips, args.out)
    print(f"{len(clips)} clips, {sum(len(c[1]) for c in clips)} chunks, "
          f"{sum(len(c[3]) for c in clips)} questions -> {args.out} ({os.path.getsize(args.out) / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
