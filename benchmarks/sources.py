"""Benchmark sources: H.264 + AAC .mp4 files made from FFmpeg's own test sources, through PyAV.

The `ffmpeg` command is not a dependency, so the lavfi sources run in a PyAV filter graph:
`testsrc2` (moving pattern, colour bars, a counter) for the video, `sine` for the audio.
With x264's defaults the files come out near typical web video (720p30 about 3 Mbit/s,
1080p30 about 6); `noise` adds temporal grain, which raises the bitrate and so the
decoding cost (noise=10: about 22 Mbit/s at 720p30).
"""

from __future__ import annotations

import os
from pathlib import Path

import av

AUDIO_RATE = 48_000


def write_test_source(
    path: str | os.PathLike,
    width: int,
    height: int,
    fps: int,
    seconds: float,
    codec: str = "libx264",
    noise: int = 0,
    preset: str | None = None,
) -> Path:
    """Write `seconds` of testsrc2 video (width x height at fps) and a 440 Hz sine to `path`.

    The encoder keeps its defaults (x264: preset medium, CRF 23, 3 B-frames, as in typical
    files) unless `preset` is given. noise: strength of the temporal grain, 0 (none) to 100.
    Returns `path` as a Path.
    """
    path = Path(path)
    video_graph = _source_graph(
        f"testsrc2=size={width}x{height}:rate={fps}:duration={seconds}"
        + (f",noise=alls={noise}:allf=t" if noise else ""),
        "buffersink",
    )
    audio_graph = _source_graph(f"sine=frequency=440:sample_rate={AUDIO_RATE}:duration={seconds}", "abuffersink")
    with av.open(str(path), mode="w") as container:
        vstream = container.add_stream(codec, rate=fps)
        vstream.width, vstream.height, vstream.pix_fmt = width, height, "yuv420p"
        if preset is not None:
            vstream.options = {"preset": preset}
        astream = container.add_stream("aac", rate=AUDIO_RATE)
        astream.layout = "mono"
        container.start_encoding()
        audio_time = 0.0
        for frame in _pull(video_graph):
            # Keep audio up to the video's time so the file is interleaved like a real one.
            while audio_time is not None and audio_time <= frame.time:
                audio_time = _mux_audio(container, astream, audio_graph)
            frame.pict_type = av.video.frame.PictureType.NONE  # testsrc2 marks every frame I: x264 would obey
            container.mux(vstream.encode(frame))
        container.mux(vstream.encode(None))
        while audio_time is not None:
            audio_time = _mux_audio(container, astream, audio_graph)
        container.mux(astream.encode(None))
    return path


def _source_graph(chain: str, sink: str) -> "av.filter.Graph":
    """A configured graph running `chain` ("filter=args,filter=args") into `sink`."""
    graph = av.filter.Graph()
    nodes = [graph.add(*link.split("=", 1)) for link in chain.split(",")] + [graph.add(sink)]
    for a, b in zip(nodes, nodes[1:]):
        a.link_to(b)
    graph.configure()
    return graph


def _pull(graph):
    """The graph's frames until its source ends."""
    while True:
        try:
            yield graph.pull()
        except av.error.EOFError:
            return


def _mux_audio(container, astream, graph) -> float | None:
    """Encode one audio frame; return the time it ends, or None once the source is spent."""
    frame = next(_pull(graph), None)
    if frame is None:
        return None
    container.mux(astream.encode(frame))
    return frame.time + frame.samples / frame.sample_rate


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Write an H.264 + AAC .mp4 from FFmpeg's test sources.")
    parser.add_argument("out", type=Path)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    print(write_test_source(args.out, args.width, args.height, args.fps, args.seconds))


if __name__ == "__main__":
    main()
