"""A procedural audio-visual question-answering dataset, rendered with numpy.

A clip is a few whole seconds long. Its video is a sequence of coloured shapes on a
dark background, one after the other, each moving in one direction for a whole number
of seconds. Its audio has three sounds, each in its own whole second: a sustained tone
(low or high), a burst of 1-4 short beeps, and a burst of noise; the other seconds are
silent. Every clip comes with questions whose answers need the video, the audio, both
together, or the order of events across time (see scene.TEMPLATES and docs/data.md).
With ``off_grid=True`` (CLI ``--off-grid``) events start and end at sub-second times
instead and cross chunk boundaries (scene.draw_scene); the default output is unchanged.

- scene: the vocabulary, what a clip contains (events, questions) and per-second event labels;
- render: a scene's frames and waveform;
- write: clips as .mp4 files, and a data set of them with its manifest.

Everything is drawn from ``np.random.default_rng(seed)``: the same seed gives the same
arrays and questions. Needs only numpy; PyAV is imported inside the writers.
"""

from mirasol_edge.data.synth.render import SynthClip, render_clip
from mirasol_edge.data.synth.scene import (
    COLOURS,
    EVENT_ATTRIBUTES,
    EVENT_CLASSES,
    FAMILIES,
    MOTIONS,
    PITCHES,
    QA,
    SHAPES,
    SOUND_CLASS_KINDS,
    SOUNDS,
    TEMPLATES,
    TONE_HZ,
    UNLABELLED,
    Event,
    Scene,
    Template,
    allowed_durations,
    chance_accuracy,
    clip_seed,
    sample_scene,
    second_events,
)
from mirasol_edge.data.synth.write import write_clip_mp4, write_dataset

__all__ = [
    "COLOURS", "SHAPES", "MOTIONS", "PITCHES", "SOUNDS", "TONE_HZ", "FAMILIES", "TEMPLATES", "Template",
    "EVENT_ATTRIBUTES", "EVENT_CLASSES", "SOUND_CLASS_KINDS", "UNLABELLED", "QA", "Event", "Scene", "SynthClip", "allowed_durations", "clip_seed",
    "sample_scene", "second_events", "chance_accuracy", "render_clip", "write_clip_mp4", "write_dataset",
]
