"""A client of a mirasol-edge bundle written from docs/bundle.md alone: numpy, onnxruntime and PyAV.

    python examples/bundle_client.py BUNDLE_DIR clip.mp4 "what colour is the first shape?" ...

It gives the answers `mirasol-edge ask` gives. What it leaves out: it reads the whole file before
cutting chunks (fine for files; a live source needs the incremental reading of the doc), so it never
meets the max_av_skew_seconds rule, and it does not report incomplete decoding.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import av
import numpy as np
import onnxruntime as ort

FORMATS = ("mirasol-edge-bundle/5", "mirasol-edge-bundle/4")  # a /4 bundle is a /5 one without a window decoder
EPS = 1e-6  # seconds: the tolerance of every timestamp comparison (docs/bundle.md, Media)
TEXT_CACHE_STEP = 16  # the text self cache is sized in steps of 16 positions
CROSS_SLOT_STEP = 4  # questions see the filled cross slots, rounded up to a multiple of 4


class Bundle:
    def __init__(self, path: str | Path):
        path = Path(path)
        self.manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
        if self.manifest["format"] not in FORMATS:
            raise ValueError(f"{path} is a {self.manifest['format']} bundle; this client reads {' and '.join(FORMATS)}.")
        self.config, self.chunk, self.media = self.manifest["config"], self.manifest["config"]["chunk"], self.manifest["media"]
        self.tokenizer = self.manifest["tokenizer"]
        self.components = self.manifest["components"]
        self.sessions = {name: ort.InferenceSession(str(path / c["file"]), providers=["CPUExecutionProvider"])
                         for name, c in self.components.items()}

    def run(self, name: str, feeds: dict) -> dict:
        outputs = list(self.components[name]["outputs"])
        return dict(zip(outputs, self.sessions[name].run(outputs, feeds)))

    def zeros(self, name: str, tensor: str, **dims) -> np.ndarray:
        """An input of graph `name` filled with zeros, its symbolic dims given by `dims`."""
        shape = self.components[name]["inputs"][tensor]["shape"]
        return np.zeros([dims[d] if isinstance(d, str) else d for d in shape], np.float32)


# -- media: a file -> chunks of (frames (F, H, W, 3) uint8 RGB, waveform (S,) float32) -------------------


def read_chunks(source: str, bundle: Bundle) -> list[tuple[np.ndarray, np.ndarray]]:
    chunk, media = bundle.chunk, bundle.media
    fps, size, rate = chunk["fps"], chunk["frame_size"], chunk["sample_rate"]
    frames_per_chunk = round(chunk["chunk_seconds"] * fps)
    samples_per_chunk = round(chunk["chunk_seconds"] * rate)
    with av.open(source) as container:
        videos = [s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
        best = container.streams.best("video")
        video = best if best in videos else videos[0]
        audio = container.streams.best("audio") if container.streams.audio else None
        video.thread_type = "AUTO"
        sampler, sound = VideoSampler(video, fps, size, media, declared_end(container, [video, audio])), AudioTrack(rate, media)
        for frame in container.decode(*[s for s in (video, audio) if s is not None]):
            if isinstance(frame, av.VideoFrame):
                sampler.push(frame)
            else:
                sound.push(frame)
        frames = sampler.finish()
        waveform, offset = sound.finish(sampler.origin)
    full, rest = divmod(len(frames), frames_per_chunk)
    count = full + (rest > 0 and rest >= media["keep_partial_fraction"] * frames_per_chunk)
    if count == 0:
        raise ValueError(f"{source} holds less than half a chunk of video.")
    frames += [frames[-1]] * (count * frames_per_chunk - len(frames))  # the last chunk: its last frame repeated
    chunks = []
    for k in range(count):
        wave = np.zeros(samples_per_chunk, np.float32)  # silence where the audio has no samples
        lo, hi = k * samples_per_chunk - offset, (k + 1) * samples_per_chunk - offset  # indices into `waveform`
        a, b = max(lo, 0), min(hi, len(waveform))
        if b > a:
            wave[a - lo : b - lo] = waveform[a:b]
        chunks.append((np.stack(frames[k * frames_per_chunk : (k + 1) * frames_per_chunk]), wave))
    return chunks


def declared_end(container, streams) -> float | None:
    """Where the container says the streams end (absolute seconds): their own durations, else the container's."""
    ends = [(float(s.start_time * s.time_base) if s.start_time is not None else 0.0) + float(s.duration * s.time_base)
            for s in streams if s is not None and s.duration and s.duration > 0 and s.time_base]
    if ends:
        return max(ends)
    if container.duration and container.duration > 0:
        return ((container.start_time or 0) + container.duration) / 1_000_000
    return None


class VideoSampler:
    """Output frame i shows the latest decoded frame whose clip time is at most i / fps (+ EPS)."""

    def __init__(self, stream, fps: int, size: int, media: dict, declared: float | None):
        self.fps, self.size, self.media, self.declared = fps, size, media, declared
        rate = stream.average_rate or stream.guessed_rate
        self.period = min(1 / float(rate) if rate and rate > 0 else 1 / fps, media["max_timestamp_jump_seconds"])
        sar = stream.codec_context.sample_aspect_ratio
        self.sar = float(sar) if sar else 1.0
        self.origin, self.shift, self.last, self.last_time, self.step = None, 0.0, None, 0.0, 0.0
        self.out: list[np.ndarray] = []

    def push(self, frame) -> None:
        if self.origin is None:
            self.origin = frame.time if frame.time is not None else 0.0
        if frame.time is None:
            t = self.last_time + self.period if self.last is not None else 0.0
        else:
            t = frame.time - self.origin - self.shift
            if self.last is not None:
                t = self.across_jump(t)
        if self.last is not None:
            t = max(t, self.last_time)  # a small step back: a reordered frame, shown at once
            self.emit_until(t)
        self.step = t - self.last_time if self.last is not None else 0.0
        self.last, self.last_rgb, self.last_time = frame, None, t

    def across_jump(self, t: float) -> float:
        step, m = t - self.last_time, self.media
        past_end = self.declared is not None and t > self.declared - self.origin + m["duration_slack_seconds"]
        if step > m["max_timestamp_jump_seconds"] or step < -m["max_backward_step_seconds"] or (step > 2 * self.period and past_end):
            self.shift += step - self.period  # a discontinuity: continue one frame period on
            return self.last_time + self.period
        return t

    def emit_until(self, t: float) -> None:
        while len(self.out) / self.fps < t - EPS:
            if self.last_rgb is None:
                self.last_rgb = to_rgb(self.last, self.size, self.sar)
            self.out.append(self.last_rgb)

    def finish(self) -> list[np.ndarray]:
        if self.last is None:
            raise ValueError("no video frame could be decoded.")
        last = self.last
        duration = float(last.duration * last.time_base) if last.duration and last.time_base else None
        self.emit_until(self.last_time + min(duration or self.step or self.period, self.media["max_timestamp_jump_seconds"]))
        return self.out


def to_rgb(frame, size: int, sar: float) -> np.ndarray:
    """Scale to cover size x size (AREA, swscale), crop the centre, turn by the display rotation."""
    w, h = frame.width, frame.height
    scale = size / min(w * sar, h)
    sw, sh = max(size, round(w * sar * scale)), max(size, round(h * scale))
    rgb = frame.reformat(width=sw, height=sh, format="rgb24", interpolation="AREA", threads=1).to_ndarray()
    top, left = (sh - size) // 2, (sw - size) // 2
    rgb = rgb[top : top + size, left : left + size]
    return np.ascontiguousarray(np.rot90(rgb, round((frame.rotation or 0) / 90) % 4))


class AudioTrack:
    """Decoded audio through libswresample to float32 mono at `rate`, laid end to end from the first timestamp."""

    def __init__(self, rate: int, media: dict):
        self.rate, self.media = rate, media
        self.resampler, self.kind = None, None
        self.parts: list[np.ndarray] = []
        self.count = 0  # output samples so far
        self.start = self.next_in = None  # absolute seconds: of output sample 0, where the input goes on

    def push(self, frame) -> None:
        t = frame.time
        if t is not None:
            if self.start is None:
                self.start = t - self.count / self.rate
            elif self.next_in is not None:
                gap = t - self.next_in
                if self.media["audio_gap_seconds"] < gap <= self.media["max_timestamp_jump_seconds"]:
                    self.append(np.zeros(round(gap * self.rate), np.float32))
            self.next_in = t
        if self.next_in is not None:
            self.next_in += frame.samples / frame.sample_rate
        kind = (frame.format.name, frame.layout.name, frame.sample_rate)
        if kind != self.kind:  # a new input format, layout or rate: a new resampler
            self.flush()
            self.resampler, self.kind = av.AudioResampler(format="flt", layout="mono", rate=self.rate), kind
        for out in self.resampler.resample(frame):
            self.append(out.to_ndarray().reshape(-1))

    def flush(self) -> None:
        if self.resampler is not None:
            for out in self.resampler.resample(None):
                self.append(out.to_ndarray().reshape(-1))

    def append(self, samples: np.ndarray) -> None:
        self.parts.append(samples.astype(np.float32))
        self.count += len(samples)

    def finish(self, origin: float) -> tuple[np.ndarray, int]:
        """The waveform, and the clip sample index of its first sample (negative: audio began before video)."""
        self.flush()
        waveform = np.concatenate(self.parts) if self.parts else np.zeros(0, np.float32)
        offset = round((self.start - origin) * self.rate) if self.start is not None else 0
        return waveform, offset


# -- the graphs: chunks -> the stream's caches; a question -> its answer ---------------------------------


def push_chunks(bundle: Bundle, chunks) -> dict:
    """The stream after `chunks`, one at a time at batch 1: its rings, summary (if any) and chunk count."""
    window = bundle.config["temporal_window"]
    m = bundle.components["combiner"]["outputs"]["latents"]["shape"][1]
    ring = {"batch": 1, "cache_len": window * m}
    temporal = {n: bundle.zeros("temporal_decoder", n, **ring) for n in bundle.components["temporal_decoder"]["inputs"] if n.startswith("past_")}
    cross = {n: bundle.zeros("context_cross_kv", n, **ring) for n in bundle.components["context_cross_kv"]["inputs"] if n.startswith("cross_")}
    memory = bundle.zeros("combiner", "memory", batch=1) if "memory" in bundle.components["combiner"]["inputs"] else None
    # the memory past the window, where the bundle has one: zeros, then rewritten by every chunk
    summary = {"summary": bundle.zeros("context_cross_kv", "summary", batch=1)} if "summary" in bundle.components["context_cross_kv"]["inputs"] else {}
    for k, (frames, waveform) in enumerate(chunks):
        feeds = {"audio_tokens": bundle.run("audio_extractor", {"waveform": waveform[None]})["audio_tokens"],
                 "video_tokens": bundle.run("video_extractor", {"frames": frames[None]})["video_tokens"]}
        if memory is not None:
            feeds["memory"] = memory
        combined = bundle.run("combiner", feeds)
        memory = combined.get("memory_out")
        position = np.array([k], np.int64)
        out = bundle.run("temporal_decoder", {"latents": combined["latents"], "chunk_position": position, **temporal})
        temporal = {n.replace("present_", "past_"): v for n, v in out.items() if n != "features"}
        out = bundle.run("context_cross_kv", {"features": out["features"], "chunk_position": position, **cross, **summary})
        cross = {n.replace("present_cross_", "cross_"): v for n, v in out.items() if n.startswith("present_cross_")}
        if summary:
            summary = {"summary": out["summary_out"]}
    return {"cross": cross, "summary": summary, "chunks": len(chunks), "window": window, "m": m}


def ask(bundle: Bundle, stream: dict, question: str, max_new_tokens: int | None = None) -> str:
    """Greedy decoding: the prompt in one step from an empty self cache, then one token per step."""
    tok, length = bundle.tokenizer, bundle.config["max_text_len"]
    prompt = [tok["bos"], *(b + tok["byte_offset"] for b in question.encode("utf-8")), tok["sep"]]
    if not question.strip() or len(prompt) >= length:
        raise ValueError(f"the question must be 1 to {length - 3} UTF-8 bytes, not only spaces.")
    budget = min(max_new_tokens or bundle.manifest["runtime_defaults"]["max_new_tokens"], length - len(prompt))
    text_cache_len = min(length, math.ceil((len(prompt) + budget) / TEXT_CACHE_STEP) * TEXT_CACHE_STEP)
    slots = math.ceil(min(stream["chunks"], stream["window"]) / CROSS_SLOT_STEP) * CROSS_SLOT_STEP
    cross = {n: v[:, :, : slots * stream["m"]] if slots < stream["window"] else v for n, v in stream["cross"].items()}
    # a window decoder, where the bundle has one, answers while no chunk has left the window
    inside = "window_context_decoder" in bundle.components and stream["chunks"] <= stream["window"]
    decoder = "window_context_decoder" if inside else "context_decoder"
    past = {n: bundle.zeros(decoder, n, batch=1, text_cache_len=text_cache_len)
            for n in bundle.components[decoder]["inputs"] if n.startswith("past_")}
    # the summary's keys and values, once per question (the graph exists where the bundle has a summary)
    summary_kv = bundle.run("summary_kv", stream["summary"]) if stream["summary"] and not inside else {}
    tokens, position, answer = np.array([prompt], np.int64), 0, []
    while True:
        out = bundle.run(decoder, {"tokens": tokens, "text_position": np.array([position], np.int64),
                                   "chunks_seen": np.array([stream["chunks"]], np.int64), **past, **cross, **summary_kv})
        past = {n.replace("present_", "past_"): v for n, v in out.items() if n != "logits"}
        position += tokens.shape[1]
        answer.append(int(np.argmax(out["logits"][0, -1])))
        if answer[-1] == tok["eos"] or len(answer) == budget:
            break
        tokens = np.array([[answer[-1]]], np.int64)
    text = bytes(i - tok["byte_offset"] for i in answer if i >= tok["byte_offset"])  # specials dropped; eos is last
    return text.decode("utf-8", errors="replace")


def main(argv: list[str]) -> None:
    if len(argv) < 3:
        sys.exit("usage: bundle_client.py BUNDLE_DIR MEDIA QUESTION...")
    bundle = Bundle(argv[0])
    stream = push_chunks(bundle, read_chunks(argv[1], bundle))
    for question in argv[2:]:
        print(f"Q: {question}\nA: {ask(bundle, stream, question)}")


if __name__ == "__main__":
    main(sys.argv[1:])
