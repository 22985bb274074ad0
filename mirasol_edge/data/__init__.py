"""Datasets: the procedural audio-visual QA generator (synth) and manifests (manifest).

Light on purpose: numpy and the standard library only (PyAV inside the writers), no torch.
"""

from mirasol_edge.data.manifest import ManifestRow, load_manifest, majority_baseline, write_manifest
from mirasol_edge.data.synth import (
    FAMILIES,
    QA,
    TEMPLATES,
    Event,
    Scene,
    SynthClip,
    render_clip,
    sample_scene,
    write_clip_mp4,
    write_dataset,
)

__all__ = [
    "FAMILIES", "QA", "TEMPLATES", "Event", "Scene", "SynthClip", "render_clip", "sample_scene",
    "write_clip_mp4", "write_dataset", "ManifestRow", "load_manifest", "majority_baseline", "write_manifest",
]
