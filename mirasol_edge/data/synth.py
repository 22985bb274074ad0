"""A procedural audio-visual question-answering dataset, rendered with numpy.

A clip is a few whole seconds long. Its video is a sequence of coloured shapes on a
dark background, one after the other, each moving in one direction for a whole number
of seconds. Its audio has three sounds, each in its own whole second: a sustained tone
(low or high), a burst of 1-4 short beeps, and a burst of noise; the other seconds are
silent. Every clip comes with questions whose answers need the video, the audio, both
together, or the order of events across time (see TEMPLATES and docs/data.md).

Everything is drawn from ``np.random.default_rng(seed)``: the same seed gives the same
arrays and questions. Answers are balanced by construction (each attribute is drawn
uniformly and independently, and colours are a random permutation), so the question
alone cannot beat chance by much; ``manifest.majority_baseline`` measures it.

This module needs only numpy; PyAV is imported inside the writers.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mirasol_edge.runtime.chunking import ChunkSpec

# --- vocabulary ---------------------------------------------------------------------

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 90, 255),
    "yellow": (240, 220, 40),
    "white": (235, 235, 235),
}
SHAPES = ("square", "circle", "triangle")
MOTIONS = ("left", "right", "up", "down")
PITCHES = ("low", "high")
SOUNDS = ("tone", "beeps", "noise")
MAX_OBJECTS = 4  # objects per clip: 1..MAX_OBJECTS, drawn uniformly
MAX_BEEPS = 4  # beeps per clip: 1..MAX_BEEPS, drawn uniformly

TONE_HZ = {"low": 250.0, "high": 2500.0}  # +-6 % jitter per clip; beeps sit between
BEEP_HZ = 800.0
BEEP_SECONDS = 0.1  # beep onsets are on a quarter-second grid: >= 0.15 s of silence between
NOISE_SECONDS = 0.7
FADE_SECONDS = 0.01  # raised-cosine fades: no clicks
TONE_AMP, BEEP_AMP, NOISE_AMP = 0.5, 0.6, 0.3  # peak amplitudes; the mix stays in [-1, 1]

OBJECT_SIZE = (0.40, 0.50)  # shape width as a fraction of the frame side (13-16 px at 32)
TRAVEL = 0.45  # a shape's centre moves this fraction of the frame side each second (then restarts)
BACKGROUND_MAX = 40  # background is a dark grey-blue, each channel <= this


@dataclass(frozen=True)
class Template:
    family: str
    answers: tuple[str, ...]  # every answer this template can have
    phrasings: tuple[str, ...]  # str.format patterns; fields named in the template code


FAMILIES = ("video", "audio", "av_align", "temporal_order", "counting")
_C = tuple(COLOURS)
_N_OBJ = tuple(str(i) for i in range(1, MAX_OBJECTS + 1))
_N_BEEP = tuple(str(i) for i in range(1, MAX_BEEPS + 1))

TEMPLATES: dict[str, Template] = {
    # video: attributes of the first (or only) shape
    "video_colour": Template("video", _C, (
        "what colour is the first shape?", "what color is the first shape?",
        "which colour does the first object have?")),
    "video_shape": Template("video", SHAPES, (
        "what shape is shown first?", "what is the first shape?", "which shape appears first?")),
    "video_motion": Template("video", MOTIONS, (
        "which way does the first shape move?", "in which direction does the first shape move?",
        "where is the first shape moving?")),
    # audio
    "audio_pitch": Template("audio", PITCHES, (
        "is the tone high or low?", "what pitch is the tone?", "was the tone high or low?")),
    "audio_beeps": Template("audio", _N_BEEP, (
        "how many beeps are there?", "how many beeps do you hear?", "how many times does it beep?")),
    # av_align: what was on screen when a sound played
    "av_noise_colour": Template("av_align", _C, (
        "what colour was on screen during the noise?", "what color is the shape when the noise plays?",
        "which colour is shown while the noise plays?")),
    "av_beep_shape": Template("av_align", SHAPES, (
        "what shape was on screen during the beeps?", "which shape is shown when the beeps play?",
        "what shape do you see while it beeps?")),
    "av_tone_motion": Template("av_align", MOTIONS, (
        "which way was the shape moving during the tone?", "where does the shape move while the tone plays?",
        "in which direction is the shape moving during the tone?")),
    # temporal_order
    "order_first_of_two": Template("temporal_order", _C, (
        "which came first, the {a} shape or the {b} shape?", "which appeared first: {a} or {b}?",
        "was the {a} shape or the {b} shape shown first?")),
    "order_last": Template("temporal_order", _C, (
        "what colour was the last shape?", "what color is the final shape?",
        "which colour is shown last?")),
    "order_after": Template("temporal_order", _C, (
        "what colour came right after the {c} shape?", "which colour followed the {c} shape?",
        "what color was shown after the {c} one?")),
    "order_sounds": Template("temporal_order", SOUNDS, (
        "which came first, the {a} or the {b}?", "which did you hear first: the {a} or the {b}?",
        "was the {a} or the {b} first?")),
    # counting: across the whole clip
    "count_objects": Template("counting", _N_OBJ, (
        "how many shapes were shown?", "how many objects appear?", "how many shapes are there?")),
}


@dataclass(frozen=True)
class QA:
    question: str
    answer: str
    family: str
    template: str


@dataclass(frozen=True)
class Event:
    """One thing that happens in [start, end) seconds. kind: object | tone | beeps | noise.

    Fields not used by a kind are None. size/offset (fractions of the frame side),
    freq_hz and onsets (seconds from the clip start) are rendering details.
    """

    kind: str
    start: int
    end: int
    colour: str | None = None
    shape: str | None = None
    motion: str | None = None
    size: float | None = None
    offset: float | None = None  # centre position across the motion axis
    pitch: str | None = None
    count: int | None = None
    freq_hz: float | None = None
    onsets: tuple[float, ...] | None = None

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items() if v is not None}


@dataclass
class Scene:
    """What a clip contains, before rendering (cheap to sample)."""

    seed: int
    duration_seconds: int
    events: list[Event]
    qa: list[QA]

    @property
    def objects(self) -> list[Event]:
        return [e for e in self.events if e.kind == "object"]

    def sound(self, kind: str) -> Event:
        return next(e for e in self.events if e.kind == kind)


@dataclass
class SynthClip:
    frames: np.ndarray  # (T, H, W, 3) uint8, T = duration * fps
    waveform: np.ndarray  # (N,) float32 in [-1, 1], N = duration * sample_rate
    duration_seconds: int
    events: list[Event]
    qa: list[QA]
    seed: int = 0


# --- sampling -----------------------------------------------------------------------


def allowed_durations(spec: ChunkSpec, min_seconds: int = 4, max_seconds: int = 12) -> list[int]:
    """Clip lengths (whole seconds) that render_clip draws from, uniformly.

    When chunk_seconds is a whole number (1 s, 2 s, ...) only multiples of it are used,
    so every clip cuts into full chunks; otherwise any whole second in range.
    """
    if min_seconds < MAX_OBJECTS:
        raise ValueError(
            f"min_seconds={min_seconds} is too short: a clip may hold {MAX_OBJECTS} shapes of at least "
            f"1 s each (and the shape count must not depend on the length); use min_seconds >= {MAX_OBJECTS}."
        )
    if max_seconds < min_seconds:
        raise ValueError(f"max_seconds={max_seconds} is less than min_seconds={min_seconds}.")
    c = spec.chunk_seconds
    step = int(round(c)) if c >= 1 and abs(c - round(c)) < 1e-9 else 1
    out = [d for d in range(int(min_seconds), int(max_seconds) + 1) if d % step == 0]
    if not out:
        raise ValueError(
            f"no clip length in [{min_seconds}, {max_seconds}] s is a multiple of chunk_seconds={c}; widen the range."
        )
    return out


def clip_seed(seed: int, index: int) -> int:
    """Seed of clip `index` of a dataset made with `seed` (independent streams)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1, dtype=np.uint32)[0])


def _sample_scene(rng: np.random.Generator, seed: int, spec: ChunkSpec, min_seconds: int, max_seconds: int) -> Scene:
    durations = allowed_durations(spec, min_seconds, max_seconds)
    d = int(durations[rng.integers(len(durations))])

    # video: n shapes back to back, lengths a random composition of d into n parts
    n = int(rng.integers(1, MAX_OBJECTS + 1))
    cuts = np.sort(rng.choice(np.arange(1, d), size=n - 1, replace=False)) if n > 1 else np.array([], int)
    bounds = [0, *[int(c) for c in cuts], d]
    colours = [_C[i] for i in rng.permutation(len(_C))[:n]]  # distinct within a clip
    events: list[Event] = []
    for k in range(n):
        events.append(Event(
            "object", bounds[k], bounds[k + 1], colour=colours[k],
            shape=SHAPES[rng.integers(len(SHAPES))], motion=MOTIONS[rng.integers(len(MOTIONS))],
            size=float(rng.uniform(*OBJECT_SIZE)), offset=float(rng.uniform(0.4, 0.6)),
        ))

    # audio: tone, beeps and noise, each in its own whole second
    t_tone, t_beeps, t_noise = (int(s) for s in rng.choice(d, size=3, replace=False))
    pitch = PITCHES[rng.integers(len(PITCHES))]
    events.append(Event("tone", t_tone, t_tone + 1, pitch=pitch,
                        freq_hz=float(TONE_HZ[pitch] * rng.uniform(0.94, 1.06))))
    k_beeps = int(rng.integers(1, MAX_BEEPS + 1))
    slots = np.sort(rng.choice(4, size=k_beeps, replace=False))
    events.append(Event("beeps", t_beeps, t_beeps + 1, count=k_beeps, freq_hz=BEEP_HZ,
                        onsets=tuple(float(t_beeps + 0.05 + 0.25 * s) for s in slots)))
    events.append(Event("noise", t_noise, t_noise + 1))
    events.sort(key=lambda e: (e.start, e.kind != "object"))

    scene = Scene(int(seed), d, events, [])
    scene.qa = _questions(scene, rng)
    return scene


def _object_at(scene: Scene, second: int) -> Event:
    return next(o for o in scene.objects if o.start <= second < o.end)


def _questions(scene: Scene, rng: np.random.Generator) -> list[QA]:
    """Every question the scene answers, one per template (all have exactly one answer)."""
    objs = scene.objects
    answers: dict[str, tuple[str, dict]] = {
        "video_colour": (objs[0].colour, {}),
        "video_shape": (objs[0].shape, {}),
        "video_motion": (objs[0].motion, {}),
        "audio_pitch": (scene.sound("tone").pitch, {}),
        "audio_beeps": (str(scene.sound("beeps").count), {}),
        "av_noise_colour": (_object_at(scene, scene.sound("noise").start).colour, {}),
        "av_beep_shape": (_object_at(scene, scene.sound("beeps").start).shape, {}),
        "av_tone_motion": (_object_at(scene, scene.sound("tone").start).motion, {}),
    }
    if len(objs) >= 2:
        i, j = (int(x) for x in rng.choice(len(objs), size=2, replace=False))  # i is mentioned first
        answers["order_first_of_two"] = (objs[min(i, j)].colour, {"a": objs[i].colour, "b": objs[j].colour})
        k = int(rng.integers(len(objs) - 1))
        answers["order_after"] = (objs[k + 1].colour, {"c": objs[k].colour})
    answers["order_last"] = (objs[-1].colour, {})
    a, b = (SOUNDS[int(x)] for x in rng.choice(len(SOUNDS), size=2, replace=False))
    first = a if scene.sound(a).start < scene.sound(b).start else b
    answers["order_sounds"] = (first, {"a": a, "b": b})
    answers["count_objects"] = (str(len(objs)), {})

    qa = []
    for name, tpl in TEMPLATES.items():  # fixed order
        if name not in answers:
            continue
        answer, fields = answers[name]
        assert answer in tpl.answers, (name, answer)
        question = tpl.phrasings[rng.integers(len(tpl.phrasings))].format(**fields)
        qa.append(QA(question, answer, tpl.family, name))
    return qa


EVENT_ATTRIBUTES = ("colour", "shape", "motion", "sound")
# classes per attribute; sound: 0 silence, 1 low tone, 2 high tone, 3..6 one to four beeps, 7 noise
EVENT_CLASSES = (len(COLOURS), len(SHAPES), len(MOTIONS), 1 + len(PITCHES) + MAX_BEEPS + 1)


def second_events(clip: Scene | SynthClip) -> np.ndarray:
    """(duration_seconds, 4) int64: per second the class of each of EVENT_ATTRIBUTES (training targets)."""
    out = np.zeros((clip.duration_seconds, len(EVENT_ATTRIBUTES)), np.int64)
    for e in clip.events:
        if e.kind == "object":
            out[e.start:e.end, :3] = (_C.index(e.colour), SHAPES.index(e.shape), MOTIONS.index(e.motion))
        else:
            out[e.start, 3] = 1 + PITCHES.index(e.pitch) if e.kind == "tone" else 2 + e.count if e.kind == "beeps" else 7
    return out


def sample_scene(seed: int, spec: ChunkSpec, min_seconds: int = 4, max_seconds: int = 12) -> Scene:
    """The events and questions of clip `seed`, without rendering (same as render_clip's)."""
    return _sample_scene(np.random.default_rng(seed), seed, spec, min_seconds, max_seconds)


# --- rendering ----------------------------------------------------------------------


def _render_video(scene: Scene, spec: ChunkSpec, background: np.ndarray) -> np.ndarray:
    fps, s = spec.fps, spec.frame_size
    t_frames = scene.duration_seconds * fps
    t = (np.arange(t_frames) + 0.5) / fps  # each frame shows the middle of its time slot
    objs = scene.objects
    idx = np.searchsorted(np.array([o.end for o in objs]), t, side="right")  # object on each frame
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
    mask = np.where(sid == 0, sq, np.where(sid == 1, circ, tri))  # (T, H, W)
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
    n = sr  # one second
    ph = float(rng.uniform(0, 2 * np.pi))
    wav[tone.start * sr: tone.start * sr + n] += (
        TONE_AMP * _fade(n, sr) * np.sin(2 * np.pi * tone.freq_hz * np.arange(n, dtype=np.float32) / sr + ph)
    )

    beeps = scene.sound("beeps")
    nb = int(round(BEEP_SECONDS * sr))
    burst = BEEP_AMP * _fade(nb, sr) * np.sin(2 * np.pi * beeps.freq_hz * np.arange(nb, dtype=np.float32) / sr)
    for onset in beeps.onsets:
        i = int(round(onset * sr))
        wav[i: i + nb] += burst

    noise = scene.sound("noise")
    nn = int(round(NOISE_SECONDS * sr))
    i = noise.start * sr + int(round((1 - NOISE_SECONDS) / 2 * sr))
    wav[i: i + nn] += NOISE_AMP * _fade(nn, sr) * rng.uniform(-1, 1, nn).astype(np.float32)
    return np.clip(wav, -1.0, 1.0)


def render_clip(seed: int, spec: ChunkSpec, min_seconds: int = 4, max_seconds: int = 12) -> SynthClip:
    """Render clip `seed`: frames at spec.fps x spec.frame_size, mono audio at spec.sample_rate.

    The length is a whole number of seconds in [min_seconds, max_seconds] (a multiple of
    chunk_seconds when that is whole, see allowed_durations). Deterministic for a seed.
    """
    rng = np.random.default_rng(seed)
    scene = _sample_scene(rng, seed, spec, min_seconds, max_seconds)
    background = rng.integers(0, BACKGROUND_MAX + 1, size=3).astype(np.uint8)
    frames = _render_video(scene, spec, background)
    waveform = _render_audio(scene, spec, rng)
    return SynthClip(frames, waveform, scene.duration_seconds, scene.events, scene.qa, int(seed))


# --- writing ------------------------------------------------------------------------

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


def dataset_rows(clip: SynthClip | Scene, video: str) -> list[dict]:
    """Manifest rows (dicts) for the questions of one clip stored at `video`."""
    return [
        {"video": video, "question": q.question, "answer": q.answer, "family": q.family,
         "template": q.template, "seed": int(clip.seed)}
        for q in clip.qa
    ]


def write_dataset(
    out_dir: str | os.PathLike,
    n_clips: int,
    seed: int,
    spec: ChunkSpec,
    min_seconds: int = 4,
    max_seconds: int = 12,
    progress: bool = True,
) -> Path:
    """Render n_clips clips to out_dir/clips/NNNNNN.mp4 and write out_dir/manifest.jsonl.

    One manifest row per (clip, question); clip i uses clip_seed(seed, i). Also writes
    out_dir/spec.json (the ChunkSpec and settings). Returns the manifest's path.
    """
    out = Path(out_dir)
    (out / "clips").mkdir(parents=True, exist_ok=True)
    allowed_durations(spec, min_seconds, max_seconds)  # fail early on a bad range
    rows: list[dict] = []
    for i in range(n_clips):
        clip = render_clip(clip_seed(seed, i), spec, min_seconds, max_seconds)
        rel = f"clips/{i:06d}.mp4"
        write_clip_mp4(out / rel, clip, spec)
        rows.extend(dataset_rows(clip, rel))
        if progress and (i + 1 == n_clips or (i + 1) % max(1, n_clips // 20) == 0):
            print(f"\rwrote {i + 1}/{n_clips} clips", end="\n" if i + 1 == n_clips else "", flush=True)
    meta = {"spec": spec.to_dict(), "n_clips": n_clips, "seed": seed,
            "min_seconds": min_seconds, "max_seconds": max_seconds, "generator": "mirasol_edge.data.synth"}
    (out / "spec.json").write_text(json.dumps(meta, indent=2) + "\n")
    manifest = out / "manifest.jsonl"
    tmp = manifest.with_suffix(".jsonl.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, manifest)
    return manifest


def chance_accuracy(template: str) -> float:
    """1 / (number of answers the template can have): the question-only chance level.

    For order_first_of_two a reader of the question can narrow it to 1/2 and for
    order_after to 1/(len(COLOURS) - 1); those are the per-question chances.
    """
    return 1.0 / len(TEMPLATES[template].answers)


__all__ = [
    "COLOURS", "SHAPES", "MOTIONS", "PITCHES", "SOUNDS", "FAMILIES", "TEMPLATES", "Template",
    "QA", "Event", "Scene", "SynthClip", "allowed_durations", "clip_seed", "sample_scene",
    "render_clip", "write_clip_mp4", "write_dataset", "dataset_rows", "chance_accuracy",
]
