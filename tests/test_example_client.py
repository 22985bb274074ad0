"""examples/bundle_client.py, written from docs/bundle.md alone, gives `ask`'s chunks and answers.

Clips of several sizes (odd ones too), frame rates and audio formats, written here: the client's
frames must be the runtime's bit for bit, its waveforms the same to 1e-6, its answers the same.
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av")

from media_fixtures import write_media  # noqa: E402
from runtime_bundles import routed_summary, trained, trained_summary, untrained  # noqa: E402

from mirasol_edge.data.synth import render_clip  # noqa: E402
from mirasol_edge.runtime.chunking import ChunkSpec  # noqa: E402
from mirasol_edge.runtime.media import read_clip  # noqa: E402
from mirasol_edge.runtime.session import Runtime  # noqa: E402

CLIENT = Path(__file__).resolve().parents[1] / "examples" / "bundle_client.py"
QUESTIONS = 3  # per clip: the synthetic clip's first questions, which the tiny model was trained on

# name, (width, height), fps, video seconds, audio (codec, rate, channels, seconds) or None, rotation
CLIPS = [
    ("small.mp4", (64, 48), 10, 2.6, ("aac", 48_000, 2, 3.4), 0),  # a padded last chunk with audio past the video
    ("vga.mkv", (320, 240), 25, 3.6, ("libmp3lame", 44_100, 1, 3.6), 0),  # a kept partial chunk
    ("odd.webm", (97, 61), Fraction(30_000, 1001), 3.3, ("libopus", 48_000, 1, 2.5), 0),  # audio ends first
    ("phone.mov", (96, 64), 12, 2.9, ("pcm_s16le", 8_000, 1, 2.9), 90),  # display rotation
    ("silent.mkv", (80, 80), 15, 3.1, None, 0),  # no audio track; a dropped partial chunk
]


# The client runs in a process of its own where importing anything of ours fails (it follows the
# document only), and where no shared ONNX Runtime thread pool of another test's runtime is in force.
CLIENT_RUN = """
import json, runpy, sys
import numpy as np
sys.modules["mirasol_edge"] = None
client, (bundle_dir, source, out, *questions) = runpy.run_path(sys.argv[1]), sys.argv[2:]
bundle = client["Bundle"](bundle_dir)
chunks = client["read_chunks"](source, bundle)
stream = client["push_chunks"](bundle, chunks)
answers = [client["ask"](bundle, stream, q) for q in questions]
np.savez(out, frames=np.stack([f for f, _ in chunks]), waveform=np.stack([w for _, w in chunks]), answers=np.array(answers))
"""


def run_client(bundle: Path, source: Path, questions: list[str], out: Path):
    """The client's chunks (frames (K, F, H, W, 3), waveform (K, S)) and answers for `source`."""
    subprocess.run([sys.executable, "-c", CLIENT_RUN, str(CLIENT), str(bundle), str(source), str(out), *questions],
                   check=True, capture_output=True, timeout=300)
    with np.load(out) as got:
        return got["frames"], got["waveform"], [str(a) for a in got["answers"]]


def write_clip(path: Path, size, fps, seconds, audio, rotation, seed: int) -> list[str]:
    """A synthetic clip (what the tiny model was trained on) at another size, rate and audio format; its questions."""
    clip = render_clip(seed, ChunkSpec(1.0, 30, 128, 48_000), 4, 4)
    width, height = size
    count = int(round(seconds * float(fps)))
    at = np.minimum((np.arange(count) / float(fps) * 30).astype(int), len(clip.frames) - 1)  # nearest source frames
    rows, cols = np.arange(height) * 128 // height, np.arange(width) * 128 // width
    frames = clip.frames[at][:, rows][:, :, cols]
    vcodec = {".webm": "libvpx-vp9", ".mkv": "libx264", ".mov": "libx264", ".mp4": "libx264"}[path.suffix]
    if path.name == "silent.mkv":
        vcodec = "mpeg4"
    if audio is None:
        write_media(path, frames, fps, None, vcodec=vcodec, rotation=rotation)
    else:
        codec, rate, channels, audio_seconds = audio
        t = np.arange(int(audio_seconds * rate)) / rate
        wave = np.interp(t, np.arange(len(clip.waveform)) / 48_000, clip.waveform).astype(np.float32)
        if channels == 1:
            write_media(path, frames, fps, wave, rate, vcodec=vcodec, acodec=codec, rotation=rotation)
        else:
            write_media(path, frames, fps, None, vcodec=vcodec, rotation=rotation)
            _add_stereo(path, wave, rate, codec)
    return [qa.question for qa in clip.qa[:QUESTIONS]]


def _add_stereo(path: Path, wave: np.ndarray, rate: int, codec: str) -> None:
    """Remux `path` with a stereo track: the left channel `wave`, the right a quieter copy of it."""
    video_only = path.with_suffix(".video" + path.suffix)
    path.rename(video_only)
    left_right = np.stack([wave, 0.5 * wave])
    with av.open(str(video_only)) as src, av.open(str(path), "w", options={"avoid_negative_ts": "disabled"}) as out:
        video_in = src.streams.video[0]
        video_out = out.add_stream_from_template(video_in)
        sound = out.add_stream(codec, rate=rate)
        sound.layout = "stereo"
        out.start_encoding()
        for packet in src.demux(video_in):
            if packet.dts is not None:
                packet.stream = video_out
                out.mux(packet)
        for start in range(0, left_right.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(left_right[:, start : start + 1024]), format="fltp", layout="stereo")
            frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
            out.mux(sound.encode(frame))
        out.mux(sound.encode(None))
    video_only.unlink()


@pytest.fixture(scope="module")
def both():
    """(the runtime, its bundle directory): the tiny trained bundle."""
    bundle = trained()[1]
    return Runtime.load(bundle, intra_op_threads=1), bundle


@pytest.mark.parametrize("seed, clip", list(enumerate(CLIPS)), ids=[c[0] for c in CLIPS])
def test_the_example_client_gives_the_runtimes_chunks_and_answers(tmp_path, both, seed, clip):
    runtime, bundle = both
    name, *media = clip
    path = tmp_path / name
    questions = write_clip(path, *media, seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no audio track: the runtime warns, as it should
        frames, waveform = read_clip(str(path), runtime.chunk)
        stream = runtime.create_stream()
        stream.push_source(str(path))
    client_frames, client_waveform, answers = run_client(bundle, path, questions, tmp_path / "client.npz")
    assert len(client_frames) == len(frames) == stream.chunks
    assert np.array_equal(client_frames, frames)
    assert np.abs(client_waveform - waveform).max() <= 1e-6
    assert answers == [stream.ask(q) for q in questions]


def test_the_example_client_carries_the_memory_past_the_window(tmp_path):
    bundle = trained_summary()[1]  # a 2-chunk window: a 4 s clip leaves half of it to the summary
    runtime = Runtime.load(bundle, intra_op_threads=1)
    path = tmp_path / "clip.mp4"
    questions = write_clip(path, *CLIPS[0][1:], seed=7)
    stream = runtime.create_stream()
    stream.push_source(str(path))
    _, _, answers = run_client(bundle, path, questions, tmp_path / "client.npz")
    assert answers == [stream.ask(q) for q in questions]


def test_the_example_client_sends_questions_inside_the_window_to_the_window_decoder(tmp_path):
    bundle = routed_summary()[1]  # a 2-chunk window: a 2 s clip is inside it, a 4 s one past it
    runtime = Runtime.load(bundle, intra_op_threads=1)
    for seconds in (2.0, 4.0):
        path = tmp_path / f"clip-{seconds:g}.mp4"
        questions = write_clip(path, (64, 48), 10, seconds, ("aac", 48_000, 1, seconds), 0, seed=7)
        stream = runtime.create_stream()
        stream.push_source(str(path))
        assert stream.chunks == seconds
        _, _, answers = run_client(bundle, path, questions, tmp_path / "client.npz")
        assert answers == [stream.ask(q) for q in questions]


def test_the_example_client_runs_as_a_script_without_any_of_our_code(tmp_path, both):
    runtime, _ = both
    path = tmp_path / "clip.mp4"
    name, *media = CLIPS[0]
    question = write_clip(path, *media, seed=0)[0]
    blocked = ("import runpy, sys; sys.modules['mirasol_edge'] = None; sys.argv = sys.argv[1:]; "
               "runpy.run_path(sys.argv[0], run_name='__main__')")  # importing anything of ours fails
    done = subprocess.run([sys.executable, "-c", blocked, str(CLIENT), str(trained()[1]), str(path), question],
                          capture_output=True, text=True, check=True)
    stream = runtime.create_stream()
    stream.push_source(str(path))
    assert done.stdout == f"Q: {question}\nA: {stream.ask(question)}\n"


def test_the_example_client_carries_a_ttm_memory_as_the_runtime_does(tmp_path):
    bundle = untrained("ttm")[1]
    path = tmp_path / "clip.mkv"
    name, *media = CLIPS[1]
    questions = write_clip(path, *media, seed=1)
    runtime = Runtime.load(bundle, intra_op_threads=1)
    stream = runtime.create_stream()
    stream.push_source(str(path))
    assert run_client(bundle, path, questions, tmp_path / "client.npz")[2] == [stream.ask(q) for q in questions]
