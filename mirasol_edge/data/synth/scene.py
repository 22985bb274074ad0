"""What a synthetic clip contains, before any rendering: vocabulary, scene sampling, questions, event labels.

Everything is drawn from the generator render_clip passes in (``np.random.default_rng(seed)``), in a
fixed order: the same seed gives the same scene. Answers are balanced by construction (each attribute
is drawn uniformly and independently, and colours are a random permutation), so the question alone
cannot beat chance by much; ``manifest.majority_baseline`` measures it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

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

OBJECT_SIZE = (0.40, 0.50)  # shape width as a fraction of the frame side (13-16 px at 32)


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

    start/end are whole seconds (ints) by default and floats in off-grid mode (draw_scene).
    Fields not used by a kind are None. size/offset (fractions of the frame side),
    freq_hz and onsets (seconds from the clip start) are rendering details.
    """

    kind: str
    start: float  # an int unless off-grid
    end: float
    colour: str | None = None
    shape: str | None = None
    motion: str | None = None
    size: float | None = None
    offset: float | None = None  # centre position across the motion axis
    pitch: str | None = None
    count: int | None = None
    freq_hz: float | None = None
    onsets: tuple[float, ...] | None = None


@dataclass
class Scene:
    """What a clip contains, before rendering (cheap to sample)."""

    seed: int
    duration_seconds: int
    events: list[Event]
    qa: list[QA]
    off_grid: bool = False

    @property
    def objects(self) -> list[Event]:
        return [e for e in self.events if e.kind == "object"]

    def sound(self, kind: str) -> Event:
        return next(e for e in self.events if e.kind == kind)


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


def draw_scene(
    rng: np.random.Generator, seed: int, spec: ChunkSpec, min_seconds: int, max_seconds: int, off_grid: bool = False,
    near_change: float = 0.0,
) -> Scene:
    """Scene `seed` drawn from rng, which render_clip then goes on drawing the clip's looks and sounds from.

    off_grid=False (the default): every event starts and ends on a whole second. off_grid=True:
    events start anywhere and last sub-second amounts (see _draw_off_grid); the clip is still a
    whole number of seconds and the questions are the same templates with one answer each;
    near_change: see _draw_off_grid (off-grid scenes only).
    """
    durations = allowed_durations(spec, min_seconds, max_seconds)
    d = int(durations[rng.integers(len(durations))])
    if off_grid:
        scene = Scene(int(seed), d, _draw_off_grid(rng, d, spec, near_change), [], off_grid=True)
        scene.qa = _questions(scene, rng)
        return scene

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


# off-grid mode: minimum lengths and gaps that keep every question's answer unique
OFF_GRID_OBJECT_MIN = 0.75  # s: an object lasts at least this (rounded up to whole frames)
OFF_GRID_MARGIN = 0.02  # s: a sound starts/ends at least this far inside the object on screen
OFF_GRID_SOUND_GAP = 0.15  # s of silence between two sounds (starts >= 0.25 s apart: sounds >= 0.1 s)
OFF_GRID_BEEP = 0.1  # s per beep (render.BEEP_SECONDS) ...
OFF_GRID_BEEP_GAP = (0.1, 0.25)  # ... and s of silence between two beeps
OFF_GRID_TONE = (0.3, 1.0)  # s, tone length range
OFF_GRID_NOISE = (0.3, 0.8)  # s, noise length range
_CS = 0.01  # sound times are whole centiseconds
NEAR_CHANGE = 0.12  # s: with near_change, a sound starts or ends within this of its span's edge (a shape change)


def _draw_off_grid(rng: np.random.Generator, d: int, spec: ChunkSpec, near_change: float = 0.0) -> list[Event]:
    """Events of a d-second off-grid clip: anywhere in time, crossing chunk boundaries.

    Video: a lead-in blank of 0 to 1 s (in frames: the clip's random phase against the chunks),
    then n shapes back to back (no two ever on screen together), each at least
    OFF_GRID_OBJECT_MIN long; every start and end is a whole number of frames (1/spec.fps s),
    so each frame (sampled at its slot's middle) shows one shape or none. The shape count n
    is drawn exactly as on the grid (before, and independent of, the length).

    Audio: tone (0.3-1 s), beeps (k of 0.1 s with 0.1-0.25 s of silence between them) and
    noise (0.3-0.8 s) at centisecond times. Each sound lies wholly inside one shape's time on
    screen (>= OFF_GRID_MARGIN from its ends), so "what was on screen during the X" has one
    answer; sounds never overlap and have >= OFF_GRID_SOUND_GAP of silence between them, so
    starts are >= 0.25 s apart and "which came first" and "how many beeps" are well defined.
    Object order is by start; starts differ by >= OFF_GRID_OBJECT_MIN.

    near_change (training only; 0 draws exactly the held-out sets' scenes): the probability that a
    sound is placed to start or end within NEAR_CHANGE of its free span's edge, mostly a shape
    change: the cases where "what was on screen during the X" hinges on a fraction of a frame.
    """
    fps = int(spec.fps)
    n = int(rng.integers(1, MAX_OBJECTS + 1))
    total = d * fps  # frames
    lo = max(1, int(np.ceil(OFF_GRID_OBJECT_MIN * fps - 1e-9)))
    lead = int(rng.integers(0, max(0, min(fps - 1, total - n * lo)) + 1))
    extra = total - lead - n * lo
    cuts = np.sort(rng.integers(0, extra + 1, size=n - 1)) if n > 1 else np.array([], int)
    parts = np.diff([0, *[int(c) for c in cuts], extra])
    colours = [_C[i] for i in rng.permutation(len(_C))[:n]]
    events: list[Event] = []
    f0 = lead
    for k in range(n):
        f1 = f0 + lo + int(parts[k])
        events.append(Event(
            "object", f0 / fps, f1 / fps, colour=colours[k],
            shape=SHAPES[rng.integers(len(SHAPES))], motion=MOTIONS[rng.integers(len(MOTIONS))],
            size=float(rng.uniform(*OBJECT_SIZE)), offset=float(rng.uniform(0.4, 0.6)),
        ))
        f0 = f1

    pitch = PITCHES[rng.integers(len(PITCHES))]
    tone_hz = float(TONE_HZ[pitch] * rng.uniform(0.94, 1.06))
    k_beeps = int(rng.integers(1, MAX_BEEPS + 1))
    hosts = [(round(o.start / _CS) + round(OFF_GRID_MARGIN / _CS), round(o.end / _CS) - round(OFF_GRID_MARGIN / _CS))
             for o in events]  # centiseconds a sound may occupy, per object
    pad = round(OFF_GRID_SOUND_GAP / _CS)
    for attempt in range(100):
        shrink = max(0.0, 1.0 - attempt / 20)  # later attempts draw shorter sounds (always placeable)
        tone_len = round((OFF_GRID_TONE[0] + shrink * rng.uniform(0, OFF_GRID_TONE[1] - OFF_GRID_TONE[0])) / _CS)
        noise_len = round((OFF_GRID_NOISE[0] + shrink * rng.uniform(0, OFF_GRID_NOISE[1] - OFF_GRID_NOISE[0])) / _CS)
        gaps = [round((OFF_GRID_BEEP_GAP[0] + shrink * rng.uniform(0, OFF_GRID_BEEP_GAP[1] - OFF_GRID_BEEP_GAP[0])) / _CS)
                for _ in range(k_beeps - 1)]
        beep = round(OFF_GRID_BEEP / _CS)
        rel = np.concatenate([[0], np.cumsum([beep + g for g in gaps])]).astype(int)  # beep onsets, cs
        lengths = {"tone": tone_len, "beeps": int(rel[-1]) + beep, "noise": noise_len}
        free = [h for h in hosts if h[1] > h[0]]  # disjoint [a, b) spans, centiseconds
        placed: dict[str, tuple[int, int]] = {}
        for kind in (SOUNDS[int(i)] for i in rng.permutation(len(SOUNDS))):
            ln = lengths[kind]
            fits = [h for h in free if h[1] - h[0] >= ln]
            if not fits:
                break
            a, b = fits[int(rng.integers(len(fits)))]
            s0 = a + int(rng.integers(0, b - a - ln + 1))
            if near_change and rng.random() < near_change:
                step = int(rng.integers(0, min(b - a - ln, round(NEAR_CHANGE / _CS)) + 1))
                s0 = a + step if rng.random() < 0.5 else b - ln - step
            placed[kind] = (s0, s0 + ln)
            x, y = s0 - pad, s0 + ln + pad  # the sound and its silence, out of every span
            free = [h for a_, b_ in free for h in ((a_, min(b_, x)), (max(a_, y), b_)) if h[1] > h[0]]
        if len(placed) == len(SOUNDS):
            break
    else:  # pragma: no cover - minimal sounds always fit (>= 3 s of shapes in a >= 4 s clip)
        raise RuntimeError(f"could not place the sounds of an off-grid clip of {d} s with {n} shapes")
    cs = lambda v: round(v * _CS, 2)  # noqa: E731
    (t0, t1), (b0, b1), (n0, n1) = placed["tone"], placed["beeps"], placed["noise"]
    events.append(Event("tone", cs(t0), cs(t1), pitch=pitch, freq_hz=tone_hz))
    events.append(Event("beeps", cs(b0), cs(b1), count=k_beeps, freq_hz=BEEP_HZ,
                        onsets=tuple(cs(b0 + int(r)) for r in rel)))
    events.append(Event("noise", cs(n0), cs(n1)))
    events.sort(key=lambda e: (e.start, e.kind != "object"))
    return events


def _object_at(scene: Scene, second: float) -> Event:
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


# --- per-second event labels (training targets) and chance ----------------------------------

EVENT_ATTRIBUTES = ("colour", "shape", "motion", "sound")
# classes per attribute; sound: 0 silence, 1 low tone, 2 high tone, 3..6 one to four beeps, 7 noise
EVENT_CLASSES = (len(COLOURS), len(SHAPES), len(MOTIONS), 1 + len(PITCHES) + MAX_BEEPS + 1)
SOUND_CLASS_KINDS = ("silence", *("tone",) * len(PITCHES), *("beeps",) * MAX_BEEPS, "noise")  # sound class -> which sound
UNLABELLED = -1  # second_events' class where an attribute has no label (not scored in training)


class TimedEvents(Protocol):
    """A Scene, or a clip rendered from one: what the per-second event labels are read from."""

    duration_seconds: int
    events: list[Event]


def _sound_class(e: Event) -> int:
    return 1 + PITCHES.index(e.pitch) if e.kind == "tone" else 2 + e.count if e.kind == "beeps" else 7


def second_events(clip: TimedEvents) -> np.ndarray:
    """(duration_seconds, 4) int64: per second the class of each of EVENT_ATTRIBUTES (training targets).

    On the grid each event covers whole seconds. Off the grid (float times) each second gets the
    shape that covers most of it (the nearest one if none is on screen) and the sound that
    covers most of it (silence if none plays in it), except the beeps: their class (their count)
    goes to the second that holds the last beep's middle, and a second that holds only earlier
    beeps is UNLABELLED in the sound column.
    """
    if any(not isinstance(e.start, (int, np.integer)) for e in clip.events):
        return _second_events_off_grid(clip)
    out = np.zeros((clip.duration_seconds, len(EVENT_ATTRIBUTES)), np.int64)
    for e in clip.events:
        if e.kind == "object":
            out[e.start:e.end, :3] = (_C.index(e.colour), SHAPES.index(e.shape), MOTIONS.index(e.motion))
        else:
            out[e.start, 3] = 1 + PITCHES.index(e.pitch) if e.kind == "tone" else 2 + e.count if e.kind == "beeps" else 7
    return out


def beep_chunks(beeps: Event, chunk_seconds: float = 1.0) -> list[int]:
    """The chunk each beep counts in: the one that holds its middle (one per onset, in order)."""
    return [int(np.floor((t + OFF_GRID_BEEP / 2) / chunk_seconds)) for t in beeps.onsets]


def _second_events_off_grid(clip: TimedEvents) -> np.ndarray:
    out = np.zeros((clip.duration_seconds, len(EVENT_ATTRIBUTES)), np.int64)
    objs = [e for e in clip.events if e.kind == "object"]
    sounds = [e for e in clip.events if e.kind != "object"]
    beeps = next(e for e in sounds if e.kind == "beeps")
    # the count is known only once the last beep is heard: label the beeps there (the second that
    # holds its middle), as on the grid where the whole burst is in one second; a causal model
    # cannot know in an earlier second how many beeps are still to come
    beeps_known = beep_chunks(beeps)[-1]
    for sec in range(clip.duration_seconds):
        cover = lambda e: min(e.end, sec + 1) - max(e.start, sec)  # noqa: E731  (negative: distance)
        o = max(objs, key=cover)
        out[sec, :3] = (_C.index(o.colour), SHAPES.index(o.shape), MOTIONS.index(o.motion))
        if sec == beeps_known:
            out[sec, 3] = _sound_class(beeps)
            continue
        others = [e for e in sounds if e is not beeps and cover(e) > 0]
        if others:
            out[sec, 3] = _sound_class(max(others, key=cover))
        elif cover(beeps) > 0:
            out[sec, 3] = UNLABELLED  # part of the beeps, before their count is known
    return out


def sample_scene(
    seed: int, spec: ChunkSpec, min_seconds: int = 4, max_seconds: int = 12, off_grid: bool = False
) -> Scene:
    """The events and questions of clip `seed`, without rendering (same as render_clip's)."""
    return draw_scene(np.random.default_rng(seed), seed, spec, min_seconds, max_seconds, off_grid)


def chance_accuracy(template: str) -> float:
    """1 / (number of answers the template can have): the question-only chance level.

    For order_first_of_two a reader of the question can narrow it to 1/2 and for
    order_after to 1/(len(COLOURS) - 1); those are the per-question chances.
    """
    return 1.0 / len(TEMPLATES[template].answers)

