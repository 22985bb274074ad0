"""Tiny bundles for the runtime tests (this side uses torch).

- `trained()`: a tiny model trained a few hundred steps on synthetic clips (answers are words,
  not noise) and its fp32 bundle;
- `trained_summary()`: the same with a memory past a window of 2 chunks (model/summary.py);
- `untrained(combiner)`: a randomly initialised tiny model and its fp32 bundle.

Exporting takes tens of seconds, so each (model, bundle) is built once and kept in the system's
temp directory under a hash of the source files that make it (model, export, this file): a
change to any of them builds afresh. MIRASOL_TEST_REBUILD=1 ignores what is kept.
Exports skip the exporter's own validation (its tests cover that); the runtime tests compare
answers with PyTorch themselves.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from mirasol_edge.runtime.chunking import chunk_clip

TRAIN_CLIPS = 48  # clip seeds 0..47 ...
TRAIN_QUESTIONS = 5  # ... and their first questions: the video and audio templates (colour, shape, motion, pitch, beeps)
TRAIN_STEPS = 250
TRAIN_BATCH = 8
CLIP_SECONDS = (4, 5)  # synthetic clips of 4-5 one-second chunks: cheap, yet every question family fits

_REPO = Path(__file__).resolve().parents[1]
_SOURCES = (  # what a kept bundle depends on: the model, its training data, the exporter, this file
    "mirasol_edge/model", "mirasol_edge/config.py", "mirasol_edge/batching.py", "mirasol_edge/data/synth",
    "mirasol_edge/train/loss.py", "runtime/chunking.py", "runtime/tokenizer.py", "export", "tests/runtime_bundles.py",
    "tests/conftest.py",
)


@contextlib.contextmanager
def one_torch_thread():
    """Tiny models run fastest on one thread, and the CI box is shared: oversubscribed threads crawl."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _source_hash() -> str:
    import torch

    digest = hashlib.sha256(torch.__version__.encode())
    for entry in _SOURCES:
        path = _REPO / entry
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(str(file.relative_to(_REPO)).encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()[:16]


def _kept(name: str, make, train=None) -> tuple:
    """(model, bundle path): make() -> a fresh model, train(model) -> trained in place; kept under the source hash."""
    import torch

    home = Path(tempfile.gettempdir()) / "mirasol-edge-test-bundles" / f"{name}-{_source_hash()}"
    if os.environ.get("MIRASOL_TEST_REBUILD") != "1" and (home / "bundle" / "manifest.json").is_file():
        model = make()
        model.load_state_dict(torch.load(home / "model.pt", weights_only=True))
        return model.eval(), home / "bundle"
    model = make()
    if train is not None:
        train(model)
    model.eval()
    from mirasol_edge.export import export_bundle

    home.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=home.parent))  # whole or not at all: renamed at the end
    with warnings.catch_warnings(), one_torch_thread():
        warnings.simplefilter("ignore")
        export_bundle(model, work / "bundle", precision="fp32", validate=False)
    torch.save(model.state_dict(), work / "model.pt")
    for stale in home.parent.glob(f"{name}-*"):  # builds from older sources, and a broken one here,
        if time.time() - stale.stat().st_mtime > 3600:  # but not another checkout's, built for a test run now
            shutil.rmtree(stale, ignore_errors=True)
    try:
        os.replace(work, home)
    except OSError:  # another test run kept the same build meanwhile: use ours from where it is
        return model, work / "bundle"
    return model, home / "bundle"


def clip_chunks(seed: int, spec):
    """Synthetic clip `seed` cut into chunks: frames (K, F, H, W, 3) u8, waveform (K, S) f32, and its QA list."""
    from mirasol_edge.data.synth import render_clip

    clip = render_clip(seed, spec, *CLIP_SECONDS)
    frames, waveform = chunk_clip(clip.frames, clip.waveform, spec)
    return frames, waveform, clip.qa


@functools.cache
def trained():
    """(model, bundle path): the tiny transformer-combiner model after TRAIN_STEPS steps."""
    from conftest import tiny_model

    return _kept("trained", lambda: tiny_model(seed=0), _train)


def _train(model) -> None:
    import torch

    from mirasol_edge.batching import Example, collate
    from mirasol_edge.train import clip_batch_loss

    model.train()
    cfg = model.cfg
    examples = []
    for seed in range(TRAIN_CLIPS):
        frames, waveform, qa = clip_chunks(seed, cfg.chunk)
        examples += [Example(frames, waveform, q.question, q.answer) for q in qa[:TRAIN_QUESTIONS]]
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    with one_torch_thread():
        for _ in range(TRAIN_STEPS):
            batch = collate([examples[i] for i in rng.choice(len(examples), TRAIN_BATCH, replace=False)], cfg)
            loss = clip_batch_loss(model, batch)["loss"]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


SUMMARY = {"summary_tokens": 4, "temporal_window": 2}  # a window shorter than every training clip: the summary must help


@functools.cache
def trained_summary():
    """(model, bundle path): a tiny model with a memory past a 2-chunk window, after TRAIN_STEPS steps."""
    from conftest import tiny_model

    return _kept("trained-summary", lambda: tiny_model(seed=0, **SUMMARY), _train)


def routed(model):
    """`model` (with a window decoder) with its context decoder's logits negated, in place: every answer it gives
    differs from the window decoder's, so a question sent to the wrong one shows (a stand-in for stage 3's change)."""
    import torch

    with torch.no_grad():
        model.context_decoder.norm.weight.neg_()
        model.context_decoder.norm.bias.neg_()
    return model.eval()


@functools.cache
def routed_summary():
    """(model, bundle path): trained_summary's model with the summary attended past its 2-chunk window only and a
    window decoder (its own context decoder, kept) answering inside it; the context decoder `routed`."""
    import dataclasses

    from mirasol_edge.model import MirasolModel

    def make():
        base, _ = trained_summary()
        model = MirasolModel(dataclasses.replace(base.cfg, summary_after_window=True, window_decoder=True))
        model.load_state_dict(base.state_dict(), strict=False)  # all but the window decoder
        model.window_decoder.load_state_dict(base.context_decoder.state_dict())
        return routed(model)

    return _kept("routed-summary", make)


@functools.cache
def untrained(combiner: str = "transformer"):
    """(model, bundle path) of a randomly initialised tiny model (seed 0)."""
    from conftest import tiny_model

    return _kept(f"untrained-{combiner}", lambda: tiny_model(combiner, seed=0))


def random_chunk(spec, rng: np.random.Generator):
    """frames (F, H, W, 3) u8 and waveform (S,) f32 of noise."""
    frames = rng.integers(0, 256, (spec.frames_per_chunk, spec.frame_size, spec.frame_size, 3), dtype=np.uint8)
    waveform = (rng.standard_normal(spec.samples_per_chunk) * 0.1).astype(np.float32)
    return frames, waveform
