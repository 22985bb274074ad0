"""Mistakes a user can make reach them as one clear sentence; the stream stays usable after each."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from media_fixtures import tone, write_media
from runtime_bundles import clip_chunks, trained
from mirasol_edge.cli import app
from mirasol_edge.data.synth import render_clip, write_clip_mp4
from mirasol_edge.runtime.bundle import BundleError, load_bundle
from mirasol_edge.runtime.contract import FORMAT
from mirasol_edge.runtime.media import MediaError
from mirasol_edge.runtime.session import Runtime, available_providers

REPO = Path(__file__).resolve().parents[1]
CLI = "from mirasol_edge.cli import main; main()"  # `python -m mirasol_edge.cli` would import cli.py twice


@pytest.fixture(scope="module")
def bundle():
    return trained()[1]


@pytest.fixture(scope="module")
def runtime(bundle):
    return Runtime.load(bundle, intra_op_threads=1)


@pytest.fixture(scope="module")
def clip_mp4(tmp_path_factory, runtime):
    path = tmp_path_factory.mktemp("media") / "clip.mp4"
    return str(write_clip_mp4(path, render_clip(11, runtime.chunk, 4, 4), runtime.chunk))


@pytest.fixture
def copied_bundle(bundle, tmp_path):
    return Path(shutil.copytree(bundle, tmp_path / "bundle"))


def cli(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def assert_cli_error(args: tuple, *needles: str) -> None:
    code, _, stderr = cli(*args)
    assert_one_line_error(code, stderr, *needles)


def assert_one_line_error(code: int, stderr: str, *needles: str) -> None:
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


# -- the bundle ----------------------------------------------------------------------------


def test_a_missing_bundle_directory_is_named(tmp_path, clip_mp4):
    with pytest.raises(BundleError, match="does not exist"):
        load_bundle(tmp_path / "nope")
    assert_cli_error(("ask", tmp_path / "nope", clip_mp4, "-q", "what?"), "does not exist")


def test_a_missing_bundle_file_is_named(copied_bundle, clip_mp4):
    (copied_bundle / "combiner.onnx").unlink()
    with pytest.raises(BundleError, match="combiner.onnx is missing"):
        load_bundle(copied_bundle)
    assert_cli_error(("ask", copied_bundle, clip_mp4, "-q", "what?"), "combiner.onnx is missing")


def test_a_changed_byte_is_caught_by_its_sha256(copied_bundle, clip_mp4):
    file = copied_bundle / "context_decoder.onnx"
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0x01
    file.write_bytes(data)
    with pytest.raises(BundleError, match="context_decoder.onnx has changed since export"):
        load_bundle(copied_bundle)
    assert_cli_error(("ask", copied_bundle, clip_mp4, "-q", "what?"), "context_decoder.onnx", "sha256")


def test_an_unknown_format_version_is_named(copied_bundle, clip_mp4):
    manifest = json.loads((copied_bundle / "manifest.json").read_text())
    manifest["format"] = "mirasol-edge-bundle/99"
    (copied_bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="mirasol-edge-bundle/99"):
        load_bundle(copied_bundle)
    assert_cli_error(("ask", copied_bundle, clip_mp4, "-q", "what?"), "format", FORMAT)


@pytest.mark.parametrize("version", [1, 2, 3])  # 1: caches that grow every step; 2: a manifest without the media rules;
# 3: a summary's keys and values made every chunk
def test_a_bundle_of_an_older_format_is_refused_with_how_to_re_export(copied_bundle, clip_mp4, version):
    manifest = json.loads((copied_bundle / "manifest.json").read_text())
    manifest["format"] = f"mirasol-edge-bundle/{version}"
    (copied_bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=f"older mirasol-edge \\(format {version}: .*mirasol-edge export CHECKPOINT"):
        load_bundle(copied_bundle)
    assert_cli_error(("ask", copied_bundle, clip_mp4, "-q", "what?"), "older mirasol-edge", "mirasol-edge export")


@pytest.mark.skipif("CUDAExecutionProvider" in available_providers(), reason="CUDA is available here")
def test_cuda_where_there_is_none_is_named(bundle, clip_mp4):
    with pytest.raises(ValueError, match="CUDA was asked for"):
        Runtime.load(bundle, provider="cuda")
    assert_cli_error(("ask", bundle, clip_mp4, "-q", "what?", "--provider", "cuda"),
                          "CUDA was asked for", "--provider cpu")


def test_an_unknown_provider_is_named(bundle):
    with pytest.raises(ValueError, match="provider must be one of cpu, cuda"):
        Runtime.load(bundle, provider="tpu")


# -- media ---------------------------------------------------------------------------------


def test_truncated_media_is_named_and_the_stream_stays_usable(runtime, clip_mp4, tmp_path, bundle):
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(Path(clip_mp4).read_bytes()[:2000])
    stream = runtime.create_stream()
    stream.push_source(clip_mp4)
    before = stream.ask("what shape is shown first?")
    with pytest.raises(MediaError, match="truncated"):
        stream.push_source(truncated)
    assert stream.chunks == 4 and stream.ask("what shape is shown first?") == before
    assert_cli_error(("ask", bundle, truncated, "-q", "what?"), str(truncated))


def test_a_missing_media_file_is_named(bundle, tmp_path):
    assert_cli_error(("ask", bundle, tmp_path / "none.mp4", "-q", "what?"), "not found")


def test_a_source_without_video_is_named(runtime, bundle, tmp_path):
    audio_only = write_media(tmp_path / "audio.m4a", None, fps=4, waveform=tone(440, 2.0, 48_000))
    with pytest.raises(MediaError, match="no video"):
        runtime.create_stream().push_source(audio_only)
    assert_cli_error(("ask", bundle, audio_only, "-q", "what?"), "no video")


def test_chunks_of_the_wrong_shape_or_type_leave_the_stream_as_it_was(runtime):
    frames, waveform, _ = clip_chunks(3, runtime.chunk)
    stream = runtime.create_stream()
    with pytest.raises(ValueError, match="no chunk has been pushed"):
        stream.ask("what colour is the first shape?")
    stream.push(frames[0], waveform[0])
    state = stream.state
    bad = [
        (frames[0].astype(np.float32), waveform[0], "uint8"),
        (frames[0][:, :16], waveform[0], r"shape \(4, 32, 32, 3\)"),
        (frames[0], waveform[0].astype(np.float64), "float32"),
        (frames[0], waveform[0][:100], r"shape \(16000,\)"),
    ]
    for f, w, message in bad:
        with pytest.raises(ValueError, match=message):
            stream.push(f, w)
        assert stream.state is state
    stream.push(frames[1], waveform[1])
    assert stream.chunks == 2


# -- questions -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "question, message",
    [
        ("", "question is empty"),
        ("   ", "question is empty"),
        ("why? " * 40, "text context is 96"),
        (b"what \xff colour?", r"not valid UTF-8 \(byte 0xff at position 5\)"),
        ("what \udcff colour?", r"not valid UTF-8 \(byte 0xff at character 5\)"),
        (42, "must be text"),
    ],
)
def test_bad_questions_are_named_and_the_stream_stays_usable(runtime, question, message):
    frames, waveform, _ = clip_chunks(3, runtime.chunk)
    stream = runtime.create_stream()
    stream.push(frames[0], waveform[0])
    answer = stream.ask("what colour is the first shape?")
    with pytest.raises(ValueError, match=message):
        stream.ask(question)
    with pytest.raises(ValueError, match=message):
        stream.ask_stream(question)  # checked at the call, before any piece is asked for
    assert stream.ask("what colour is the first shape?") == answer
    assert stream.ask(b"what colour is the first shape?") == answer  # UTF-8 bytes are fine


@pytest.mark.parametrize(
    "options, message",
    [
        ({"temperature": -1}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_k": -2}, "top_k"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
    ],
)
def test_bad_generation_options_are_named(runtime, options, message):
    frames, waveform, _ = clip_chunks(3, runtime.chunk)
    stream = runtime.create_stream()
    stream.push(frames[0], waveform[0])
    with pytest.raises(ValueError, match=message):
        stream.ask("what?", **options)


def test_cli_question_errors(bundle, clip_mp4):
    assert_cli_error(("ask", bundle, clip_mp4, "-q", " "), "question is empty")
    assert_cli_error(("ask", bundle, clip_mp4, "-q", "x" * 200), "text context is 96")
    assert_cli_error(("stream", bundle, clip_mp4, "-q", "what?", "--every", "0"), "--every")


def test_non_utf8_bytes_in_argv_are_named(bundle, clip_mp4):
    """Bytes that are not UTF-8 arrive in sys.argv as lone surrogates (surrogateescape)."""
    env = {**os.environ, "LC_ALL": "C.UTF-8", "PYTHONUTF8": "1"}
    args = [sys.executable, "-c", CLI, "ask", str(bundle), clip_mp4, "-q", b"what \xff colour?"]
    result = subprocess.run(args, capture_output=True, env=env, cwd=REPO, timeout=120)
    assert_one_line_error(result.returncode, result.stderr.decode(), "not valid UTF-8", "byte 0xff")


def test_cli_ask_and_stream_answer(bundle, clip_mp4, runtime):
    stream = runtime.create_stream()
    stream.push_source(clip_mp4)
    expected = [stream.ask("what shape is shown first?"), stream.ask("is the tone high or low?")]
    code, out, err = cli("ask", bundle, clip_mp4, "-q", "what shape is shown first?", "-q", "is the tone high or low?",
                         "--json", "--threads", "1")
    assert code == 0, err
    report = json.loads(out)
    assert report["chunks"] == 4 and [a["answer"] for a in report["answers"]] == expected
    assert report["complete"] is True and report["incomplete_reason"] is None
    code, out, err = cli("stream", bundle, clip_mp4, "-q", "what shape is shown first?", "--every", "3", "--json")
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert events[-1] == {"chunks": 4, "complete": True, "incomplete_reason": None}
    events = events[:-1]
    assert [e["chunk"] for e in events if "question" not in e] == [1, 2, 3, 4]
    answers = [e for e in events if "question" in e]
    assert [e["chunk"] for e in answers] == [3, 4] and answers[-1]["answer"] == expected[0]
    code, out, err = cli("stream", bundle, clip_mp4, "-q", "what shape is shown first?", "--every", "2")
    assert code == 0, err
    assert out.count("decode+push") == 4 and out.count(f"A: {expected[0]}") == 2


def test_cli_window_sets_the_caches_of_the_runtime_it_loads(bundle, clip_mp4, monkeypatch):
    loaded = []
    load = Runtime.load.__func__
    monkeypatch.setattr(Runtime, "load", classmethod(lambda cls, *a, **kw: loaded.append(load(cls, *a, **kw)) or loaded[-1]))
    code, out, err = cli("ask", bundle, clip_mp4, "-q", "what shape is shown first?", "--json", "--threads", "1",
                         "--window", "2")
    assert code == 0, err
    (runtime,) = loaded
    assert runtime.temporal_window == 2 and runtime.state_bytes() < Runtime.load(bundle).state_bytes()
    code, _, err = cli("ask", bundle, clip_mp4, "-q", "what shape is shown first?", "--window", "0")
    assert code == 2 and "window" in err


def test_a_source_that_ends_early_is_answered_with_a_warning_and_marked_incomplete(bundle, tmp_path):
    import av

    clip = tmp_path / "clip.mkv"
    rng = np.random.default_rng(0)
    with av.open(str(clip), "w") as out:  # 4 s of noise: every frame costs bytes, so a cut lands mid-clip
        video = out.add_stream("libx264", rate=8)
        video.width = video.height = 64
        video.pix_fmt = "yuv420p"
        for i in range(32):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(clip.read_bytes()[: len(clip.read_bytes()) // 2])
    code, out, err = cli("ask", bundle, cut, "-q", "what shape is shown first?", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["complete"] is False and report["incomplete_reason"] and 0 < report["chunks"] < 4
    assert "warning:" in err and "cut.mkv" in err
