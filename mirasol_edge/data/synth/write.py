"""Synthetic clips -> files: H.264/AAC .mp4 clips, a manifest of their questions, and the settings that made them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from mirasol_edge.data.manifest import ManifestRow, write_manifest
from mirasol_edge.data.synth.render import SynthClip, render_clip
from mirasol_edge.data.synth.scene import allowed_durations, clip_seed
from mirasol_edge.progress import CountProgress
from mirasol_edge.runtime.chunking import ChunkSpec

VIDEO_CRF = 12  # near-lossless on flat colours; files stay tiny (tens of kB per clip)
AUDIO_BIT_RATE = 96_000


def write_clip_mp4(path: str | os.PathLike, clip: SynthClip, spec: ChunkSpec) -> Path:
    """Write `clip` as an .mp4: H.264 (libx264, yuv420p) video at spec.fps and AAC mono audio."""
    import av  # heavy; only the writers need it

    if spec.frame_size % 2:
        raise ValueError(f"frame_size must be even for yuv420p H.264, got {spec.frame_size}.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sr = spec.sample_rate
    with av.open(str(path), "w", format="mp4") as container:
        v = container.add_stream("libx264", rate=spec.fps, options={"crf": str(VIDEO_CRF), "preset": "medium"})
        v.width = v.height = spec.frame_size
        v.pix_fmt = "yuv420p"
        a = container.add_stream("aac", rate=sr, layout="mono")
        a.bit_rate = AUDIO_BIT_RATE
        for i, f in enumerate(clip.frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
            frame.pts = i
            container.mux(v.encode(frame))
        container.mux(v.encode())
        step = 1024  # AAC frame size
        for s in range(0, len(clip.waveform), step):
            frame = av.AudioFrame.from_ndarray(clip.waveform[None, s: s + step], format="fltp", layout="mono")
            frame.sample_rate = sr
            frame.pts = s
            container.mux(a.encode(frame))
        container.mux(a.encode())
    return path


def write_dataset(
    out_dir: str | os.PathLike,
    n_clips: int,
    seed: int,
    spec: ChunkSpec,
    min_seconds: int = 4,
    max_seconds: int = 12,
    progress: bool = True,
    off_grid: bool = False,
) -> Path:
    """Render n_clips clips to out_dir/clips/NNNNNN.mp4 and write out_dir/manifest.jsonl.

    One manifest row per (clip, question); clip i uses clip_seed(seed, i). Also writes
    out_dir/spec.json (the ChunkSpec and settings). Returns the manifest's path.
    off_grid=True renders events at sub-second times (render_clip) and notes it in spec.json.
    """
    out = Path(out_dir)
    (out / "clips").mkdir(parents=True, exist_ok=True)
    allowed_durations(spec, min_seconds, max_seconds)  # fail early on a bad range
    rows: list[ManifestRow] = []
    with CountProgress("wrote") as report:
        for i in range(n_clips):
            clip = render_clip(clip_seed(seed, i), spec, min_seconds, max_seconds, off_grid)
            video = write_clip_mp4(out / "clips" / f"{i:06d}.mp4", clip, spec)
            rows.extend(ManifestRow(video.resolve(), q.question, q.answer, q.family, q.template, int(clip.seed)) for q in clip.qa)
            if progress:
                report(i + 1, n_clips)
    meta = {"spec": spec.to_dict(), "n_clips": n_clips, "seed": seed,
            "min_seconds": min_seconds, "max_seconds": max_seconds, "generator": "mirasol_edge.data.synth"}
    if off_grid:  # only then: the default spec.json stays as it was
        meta["off_grid"] = True
    (out / "spec.json").write_text(json.dumps(meta, indent=2) + "\n")
    return write_manifest(rows, out / "manifest.jsonl")
