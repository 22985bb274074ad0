"""Scenes -> arrays: video frames (a coloured shape moving on a dark background) and audio (tone, beeps, noise)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mirasol_edge.data.synth.scene import COLOURS, QA, SHAPES, Event, Scene, draw_scene
from mirasol_edge.runtime.chunking import ChunkSpec

TRAVEL = 0.45  # a shape's centre moves this fraction of the frame side each second (then restarts)
BACKGROUND_MAX = 40  # background is a dark grey-blue, each channel <= this
BEEP_SECONDS = 0.1  # beep onsets are on a quarter-second grid: >= 0.15 s of silence between
NOISE_SECONDS = 0.7
FADE_SECONDS = 0.01  # raised-cosine fades: no clicks
TONE_AMP, BEEP_AMP, NOISE_AMP = 0.5, 0.6, 0.3  # peak amplitudes; the mix stays in [-1, 1]


@dataclass
class SynthClip:
    frames: np.ndarray  # (T, H, W, 3) uint8, T = duration * fps
    waveform: np.ndarray  # (N,) float32 in [-1, 1], N = duration * sample_rate
    duration_seconds: int
    events: list[Event]
    qa: list[QA]
    seed: int = 0


def _render_video(scene: Scene, spec: ChunkSpec, background: np.ndarray) -> np.ndarray:
    fps, s = spec.fps, spec.frame_size
    t_frames = scene.duration_seconds * fps
    t = (np.arange(t_frames) + 0.5) / fps  # each frame shows the middle of its time slot
    objs = scene.objects
    idx = np.searchsorted(np.array([o.end for o in objs]), t, side="right")  # object on each frame
    # off the grid a frame may show no shape (before the first, after the last): t in [start, end)
    shown = (idx < len(objs)) & (t >= np.array([o.start for o in objs])[np.minimum(idx, len(objs) - 1)])
    idx = np.minimum(idx, len(objs) - 1)
    # each second the shape sweeps TRAVEL across the frame in its direction, then starts
    # again: motion is steady inside every 1 s chunk however long the object stays
    progress = (t - np.floor(t)) - 0.5  # -0.5 .. 0.5 through the current second
    dir_xy = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}  # y grows downwards
    dx = np.array([dir_xy[o.motion][0] for o in objs], np.float64)[idx]
    dy = np.array([dir_xy[o.motion][1] for o in objs], np.float64)[idx]
    offset = np.array([o.offset for o in objs])[idx]
    # along the motion axis: 0.5 + progress * TRAVEL; across it: the object's offset
    cx = np.where(dx != 0, 0.5 + dx * progress * TRAVEL, offset) * s  # (T,)
    cy = np.where(dy != 0, 0.5 + dy * progress * TRAVEL, offset) * s
    r = np.array([o.size for o in objs])[idx] * s / 2  # half width
    shape_id = np.array([SHAPES.index(o.shape) for o in objs])[idx]
    colour = np.array([COLOURS[o.colour] for o in objs], np.uint8)[idx]  # (T, 3)

    grid = np.arange(s, dtype=np.float32) + 0.5
    ux = (grid[None, None, :] - cx[:, None, None].astype(np.float32)) / r[:, None, None].astype(np.float32)
    uy = (grid[None, :, None] - cy[:, None, None].astype(np.float32)) / r[:, None, None].astype(np.float32)
    # in units of the half width, with similar areas (2.4-3.1): square |x|,|y| <= 0.85,
    # circle radius 1, triangle apex up at y = -1.1, base at y = 1.0 with half width 1.15
    sq = (np.abs(ux) <= 0.85) & (np.abs(uy) <= 0.85)
    circ = ux * ux + uy * uy <= 1.0
    tri = (uy <= 1.0) & (np.abs(ux) <= (uy + 1.1) * (1.15 / 2.1))
    sid = shape_id[:, None, None]
    mask = np.where(sid == 0, sq, np.where(sid == 1, circ, tri)) & shown[:, None, None]  # (T, H, W)
    frames = np.where(mask[..., None], colour[:, None, None, :], background[None, None, None, :])
    return frames.astype(np.uint8, copy=False)


def _fade(n: int, sr: int) -> np.ndarray:
    """Raised-cosine envelope of length n with FADE_SECONDS ramps."""
    env = np.ones(n, np.float32)
    m = min(int(FADE_SECONDS * sr), n // 2)
    if m > 0:
        ramp = (0.5 - 0.5 * np.cos(np.pi * (np.arange(m) + 0.5) / m)).astype(np.float32)
        env[:m] = ramp
        env[n - m:] = ramp[::-1]
    return env


def _render_audio(scene: Scene, spec: ChunkSpec, rng: np.random.Generator) -> np.ndarray:
    sr = spec.sample_rate
    wav = np.zeros(scene.duration_seconds * sr, np.float32)

    tone = scene.sound("tone")
    i0 = int(round(tone.start * sr))
    n = int(round(tone.end * sr)) - i0  # one second on the grid
    ph = float(rng.uniform(0, 2 * np.pi))
    wav[i0: i0 + n] += (
        TONE_AMP * _fade(n, sr) * np.sin(2 * np.pi * tone.freq_hz * np.arange(n, dtype=np.float32) / sr + ph)
    )

    beeps = scene.sound("beeps")
    nb = int(round(BEEP_SECONDS * sr))
    burst = BEEP_AMP * _fade(nb, sr) * np.sin(2 * np.pi * beeps.freq_hz * np.arange(nb, dtype=np.float32) / sr)
    for onset in beeps.onsets:
        i = int(round(onset * sr))
        wav[i: i + nb] += burst

    noise = scene.sound("noise")
    if scene.off_grid:  # the noise fills its event
        i = int(round(noise.start * sr))
        nn = int(round(noise.end * sr)) - i
    else:  # NOISE_SECONDS in the middle of its second
        nn = int(round(NOISE_SECONDS * sr))
        i = noise.start * sr + int(round((1 - NOISE_SECONDS) / 2 * sr))
    wav[i: i + nn] += NOISE_AMP * _fade(nn, sr) * rng.uniform(-1, 1, nn).astype(np.float32)
    return np.clip(wav, -1.0, 1.0)


def render_clip(
    seed: int, spec: ChunkSpec, min_seconds: int = 4, max_seconds: int = 12, off_grid: bool = False,
    near_change: float = 0.0,
) -> SynthClip:
    """Render clip `seed`: frames at spec.fps x spec.frame_size, mono audio at spec.sample_rate.

    The length is a whole number of seconds in [min_seconds, max_seconds] (a multiple of
    chunk_seconds when that is whole, see allowed_durations). Deterministic for a seed.
    off_grid=True: events at sub-second times that cross chunk boundaries (scene.draw_scene);
    each frame shows the shape whose [start, end) holds the frame's middle, or none; near_change
    (training only) places that fraction of its sounds against a shape change (scene._draw_off_grid).
    """
    rng = np.random.default_rng(seed)
    scene = draw_scene(rng, seed, spec, min_seconds, max_seconds, off_grid, near_change)
    background = rng.integers(0, BACKGROUND_MAX + 1, size=3).astype(np.uint8)
    frames = _render_video(scene, spec, background)
    waveform = _render_audio(scene, spec, rng)
    return SynthClip(frames, waveform, scene.duration_seconds, scene.events, scene.qa, int(seed))
