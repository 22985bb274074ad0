"""Seeded mutation fuzz of the `ask` path: damaged media is answered or refused, never anything else.

    python tests/fuzz_media.py [BUNDLE] --mutants 200 --seed 0 [--json OUT]
    python tests/fuzz_media.py BUNDLE --seed 0 --only 17 --keep /tmp/m   # one mutant again, file kept

A few small valid files are encoded with PyAV (several containers and codecs); each mutant is
one of them damaged by one or two seeded mutations (byte flips, truncation, zeroed, duplicated or
removed ranges, header damage, a range spliced in from another file, appended garbage). Mutant i
of seed S depends on (S, i) only, so `--only i` rebuilds it without the others. Each mutant goes
through what `mirasol-edge ask` runs: one Runtime for all, then per file a new stream,
push_source and ask_streams, with the media warnings recorded rather than printed.

Every mutant ends in one class:
  answered  answers came back (with or without media warnings);
  refused   a ValueError of ours (MediaError, BundleError, ValueError; not a raw PyAV error) in
            one line that names the file;
  other     anything else: another exception type, a raw PyAV error, a message of several lines
            or one that does not name the file, a hang (over --timeout seconds), or a decoding
            thread left running after the call returned.
The table counts them per source; the exit status is 1 if any mutant is "other". A hard crash
(a signal) kills this process: the caller sees it in the return code, and the last progress
line on stderr names the mutant. A watchdog ends the process (exit 3) on a hang the alarm cannot
interrupt, or when memory grows past --max-rss-mb.
"""

from __future__ import annotations

import argparse
import faulthandler
import gc
import json
import os
import signal
import sys
import tempfile
import threading
import time
import traceback
import warnings
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

QUESTIONS = ("what shape is shown first?", "is the tone high or low?")
CLASSES = ("answered", "refused", "other")
WIDTH, HEIGHT, FPS, SECONDS = 96, 64, 12, 4  # small sources: mutations land on headers and payload alike
SECOND_MUTATION = 0.25  # chance a mutant gets a second mutation on top of the first
SKIP_NONREF = 0.3  # chance a mutant is decoded with skip_nonref (the CLI's --skip-nonref)
WHERE_FRAMES = 4  # innermost traceback frames kept for an "other"
HEADER_BYTES = 512  # "header" damage lands in the first bytes: magic numbers, box and element sizes


@dataclass(frozen=True)
class Source:
    name: str  # row of the table
    ext: str
    vcodec: str
    acodec: str | None  # None: a file without an audio track
    sample_rate: int = 48_000
    muxer_options: tuple = ()


SOURCES = (
    # moov first: a truncated file still opens, and decodes up to the cut
    Source("mp4 h264+aac", "mp4", "libx264", "aac", muxer_options=(("movflags", "+faststart"),)),
    Source("mkv h264+mp3", "mkv", "libx264", "libmp3lame", sample_rate=44_100),
    Source("webm vp9+opus", "webm", "libvpx-vp9", "libopus"),
    Source("avi mpeg4+pcm", "avi", "mpeg4", "pcm_s16le", sample_rate=8_000),
    Source("mp4 h264 no audio", "mp4", "libx264", None),  # moov last: any cut loses the index
)


# --- sources -------------------------------------------------------------------------


def moving_frames(seconds: int = SECONDS) -> np.ndarray:
    """(seconds * FPS, HEIGHT, WIDTH, 3) uint8: a gradient with a square crossing it, changing colour."""
    n = seconds * FPS
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    frames = np.empty((n, HEIGHT, WIDTH, 3), np.uint8)
    for i in range(n):
        frames[i, ..., 0] = (x * 255 // WIDTH + 8 * i) % 256
        frames[i, ..., 1] = y * 255 // HEIGHT
        frames[i, ..., 2] = 96
        left, top = (5 * i) % (WIDTH - 20), (3 * i) % (HEIGHT - 20)
        frames[i, top : top + 20, left : left + 20] = (255, 255 - 20 * (i // FPS), 0)
    return frames


def beeping_tone(sample_rate: int, seconds: int = SECONDS) -> np.ndarray:
    """(seconds * sample_rate,) float32: a 660 Hz tone, on for 0.3 s of every 0.5 s."""
    t = np.arange(seconds * sample_rate) / sample_rate
    return (0.4 * np.sin(2 * np.pi * 660 * t) * ((t % 0.5) < 0.3)).astype(np.float32)


def write_source(path: Path, source: Source) -> bytes:
    """Encode `source` to `path` and return its bytes.

    Unlike media_fixtures.write_media, encoders run on one thread and the muxer writes no version
    strings, so a seed gives the same bytes on any machine with the same FFmpeg build.
    """
    import av

    options = {"fflags": "+bitexact", **dict(source.muxer_options)}
    with av.open(str(path), mode="w", options=options) as container:
        video = container.add_stream(source.vcodec, rate=FPS)
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        video.codec_context.time_base = Fraction(1, FPS)
        video.codec_context.thread_count = 1
        video.codec_context.flags |= av.codec.context.Flags.bitexact
        if source.vcodec == "libx264":
            video.options = {"preset": "ultrafast", "crf": "23"}
        else:
            video.bit_rate = 300_000
        audio = None
        if source.acodec is not None:
            audio = container.add_stream(source.acodec, rate=source.sample_rate)
            audio.layout = "mono"
            audio.codec_context.thread_count = 1
        container.start_encoding()
        for i, rgb in enumerate(moving_frames()):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, FPS)
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        if audio is not None:
            samples = beeping_tone(source.sample_rate)
            for start in range(0, len(samples), 1024):
                block = np.ascontiguousarray(samples[None, start : start + 1024])
                frame = av.AudioFrame.from_ndarray(block, format="flt", layout="mono")
                frame.sample_rate, frame.pts = source.sample_rate, start
                frame.time_base = Fraction(1, source.sample_rate)
                container.mux(audio.encode(frame))
            container.mux(audio.encode(None))
    return path.read_bytes()


# --- mutations -----------------------------------------------------------------------


def _span(rng: np.random.Generator, size: int, longest: int) -> tuple[int, int]:
    """[start, stop) inside `size` bytes, its length log-uniform in [1, longest]."""
    length = int(np.exp(rng.uniform(0, np.log(max(2, min(longest, size))))))
    start = int(rng.integers(0, max(1, size - length + 1)))
    return start, start + length


def _flip(data: bytearray, rng, others) -> str:
    n = int(rng.integers(1, 201))
    at = rng.integers(0, len(data), n)
    for i, x in zip(at, rng.integers(1, 256, n)):
        data[i] ^= int(x)
    return f"flip {n} bytes in [{at.min()}, {at.max()}]"


def _truncate(data: bytearray, rng, others) -> str:
    at = int(rng.integers(0, len(data)))
    del data[at:]
    return f"truncate at {at}"


def _zero(data: bytearray, rng, others) -> str:
    a, b = _span(rng, len(data), len(data) // 4)
    data[a:b] = bytes(b - a)
    return f"zero [{a}, {b})"


def _duplicate(data: bytearray, rng, others) -> str:
    a, b = _span(rng, len(data), len(data) // 4)
    at = int(rng.integers(0, len(data) + 1))
    data[at:at] = data[a:b]
    return f"duplicate [{a}, {b}) at {at}"


def _remove(data: bytearray, rng, others) -> str:
    a, b = _span(rng, len(data), len(data) // 4)
    del data[a:b]
    return f"remove [{a}, {b})"


def _header(data: bytearray, rng, others) -> str:
    end = min(HEADER_BYTES, len(data))
    n = int(rng.integers(1, 17))
    at = rng.integers(0, end, n)
    data_at = rng.integers(0, 256, n)
    for i, x in zip(at, data_at):
        data[i] = int(x)
    return f"header: set {n} bytes in [0, {end})"


def _splice(data: bytearray, rng, others) -> str:
    name, other = others[int(rng.integers(len(others)))]
    a, b = _span(rng, len(other), len(other) // 4)
    at = int(rng.integers(0, len(data) + 1))
    if rng.random() < 0.5:
        data[at:at] = other[a:b]
        return f"insert {name}[{a}:{b}] at {at}"
    data[at : at + b - a] = other[a:b]
    return f"overwrite at {at} with {name}[{a}:{b}]"


def _append(data: bytearray, rng, others) -> str:
    n = int(np.exp(rng.uniform(0, np.log(65_536))))
    data += rng.integers(0, 256, n, dtype=np.uint8).tobytes()
    return f"append {n} random bytes"


MUTATIONS = {f.__name__[1:]: f for f in (_flip, _truncate, _zero, _duplicate, _remove, _header, _splice, _append)}


@dataclass
class Mutant:
    id: str  # "seed:index": `--seed seed --only index` makes it again
    source: str
    mutation: str
    skip_nonref: bool
    cls: str = ""
    error: str = ""  # "Type: first line" of what was raised, or why it is "other"
    where: list = field(default_factory=list)  # innermost frames of an "other" exception: file:line in function
    chunks: int = 0
    warnings: list = field(default_factory=list)
    seconds: float = 0.0


def make_mutant(seed: int, index: int, originals: list[bytes]) -> tuple[Mutant, bytes]:
    """Mutant `index` of `seed`: source index % len(SOURCES), damaged by one or two mutations."""
    rng = np.random.default_rng([seed, index])
    k = index % len(SOURCES)
    data = bytearray(originals[k])
    others = [(SOURCES[j].ext, originals[j]) for j in range(len(SOURCES)) if j != k]
    names = list(MUTATIONS)
    steps = []
    for _ in range(1 + int(rng.random() < SECOND_MUTATION)):
        if not data:
            break
        steps.append(MUTATIONS[names[int(rng.integers(len(names)))]](data, rng, others))
    skip = bool(rng.random() < SKIP_NONREF)
    return Mutant(f"{seed}:{index}", SOURCES[k].name, "; ".join(steps), skip), bytes(data)


# --- running -------------------------------------------------------------------------


class Hang(BaseException):
    """Raised by the alarm: BaseException, so no `except Exception` on the way swallows it."""


def _on_alarm(signum, frame):
    raise Hang()


def ask(runtime, path: Path, skip_nonref: bool) -> tuple[int, list[str], list[str]]:
    """What `mirasol-edge ask` runs on one file: (chunks, answers, warning lines)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stream = runtime.create_stream()
        chunks = stream.push_source(str(path), skip_nonref)
        answers = runtime.ask_streams([(stream, q) for q in QUESTIONS])
    return chunks, answers, [f"{w.category.__name__}: {w.message}" for w in caught]


def classify(e: BaseException, path: Path, timeout: float) -> tuple[str, str]:
    """(class, "Type: first line") of an exception raised by `ask` on `path`."""
    import av

    if isinstance(e, Hang):
        return "other", f"hang: no answer or refusal within {timeout:g} s"
    text = str(e).strip()
    lines = text.splitlines() or [""]
    summary = f"{type(e).__name__}: {lines[0][:300]}"
    if not isinstance(e, ValueError):
        return "other", summary
    if isinstance(e, av.FFmpegError):  # InvalidDataError is a ValueError too, but it is PyAV's own
        return "other", f"raw PyAV error: {summary}"
    if len(lines) > 1:
        return "other", f"{len(lines)}-line message: {summary}"
    if str(path) not in text and path.name not in text:
        return "other", f"refusal does not name the file: {summary}"
    return "refused", summary


def where(e: BaseException) -> list[str]:
    """The innermost frames of e's traceback, and the innermost one in the runtime's code if not among them."""
    import mirasol_edge.runtime

    runtime_dir = os.path.dirname(mirasol_edge.runtime.__file__) + os.sep
    frames = traceback.extract_tb(e.__traceback__)
    ours = [f for f in frames if f.filename.startswith(runtime_dir)]
    kept = frames[-WHERE_FRAMES:]
    if ours and ours[-1] not in kept:
        kept = [ours[-1], *kept[1:]]
    return [f"{'runtime/' if f.filename.startswith(runtime_dir) else ''}{Path(f.filename).name}:{f.lineno} in {f.name}"
            for f in kept]


def run_one(runtime, mutant: Mutant, path: Path, timeout: float) -> None:
    before = set(threading.enumerate())
    start = time.perf_counter()
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        try:
            mutant.chunks, answers, mutant.warnings = ask(runtime, path, mutant.skip_nonref)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except BaseException as e:  # noqa: B036 - every outcome is classified, KeyboardInterrupt aside
        if isinstance(e, KeyboardInterrupt):
            raise
        mutant.cls, mutant.error = classify(e, path, timeout)
        if mutant.cls == "other":
            mutant.where = where(e)
    else:
        if mutant.chunks >= 1 and len(answers) == len(QUESTIONS) and all(isinstance(a, str) for a in answers):
            mutant.cls = "answered"
        else:
            mutant.cls, mutant.error = "other", f"answered oddly: {mutant.chunks} chunks, answers {answers!r}"
    mutant.seconds = round(time.perf_counter() - start, 3)
    gc.collect()  # a traceback kept the prefetch generator alive until here
    left = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    if left and mutant.cls != "other":
        mutant.cls = "other"
        mutant.error = f"{len(left)} thread(s) still running after the call ({left[0].name}); was: {mutant.error or 'answered'}"


class Watchdog(threading.Thread):
    """Ends the process (exit 3) on a hang the alarm cannot interrupt, or runaway memory."""

    def __init__(self, hard_timeout: float, max_rss_mb: int):
        super().__init__(name="fuzz-watchdog", daemon=True)
        self.hard_timeout, self.max_rss_mb = hard_timeout, max_rss_mb
        self.current: tuple[str, float] | None = None  # (mutant id, start time)

    def run(self) -> None:
        page_mb = os.sysconf("SC_PAGE_SIZE") / 2**20
        while True:
            time.sleep(0.2)
            current = self.current
            if current is None:
                continue
            with open("/proc/self/statm") as f:
                rss_mb = int(f.read().split()[1]) * page_mb
            why = None
            if rss_mb > self.max_rss_mb:
                why = f"memory grew to {rss_mb:.0f} MiB (limit {self.max_rss_mb})"
            elif time.monotonic() - current[1] > self.hard_timeout:
                why = f"no return within {self.hard_timeout:g} s, not even to the alarm"
            if why:
                print(f"fuzz: mutant {current[0]}: {why}; the threads:", file=sys.stderr, flush=True)
                faulthandler.dump_traceback(all_threads=True)
                os._exit(3)


# --- report --------------------------------------------------------------------------


def table(mutants: list[Mutant]) -> str:
    counts = {s.name: dict.fromkeys(CLASSES, 0) for s in SOURCES}
    warned = dict.fromkeys(counts, 0)
    for m in mutants:
        counts[m.source][m.cls] += 1
        warned[m.source] += m.cls == "answered" and bool(m.warnings)
    width = max(len(name) for name in counts) + 2
    header = f"{'source':<{width}}" + "".join(f"{c:>10}" for c in CLASSES) + f"{'total':>8}{'(warned)':>10}"
    rows = [header, "-" * len(header)]
    for name, row in counts.items():
        rows.append(f"{name:<{width}}" + "".join(f"{row[c]:>10}" for c in CLASSES)
                    + f"{sum(row.values()):>8}{warned[name]:>10}")
    totals = {c: sum(row[c] for row in counts.values()) for c in CLASSES}
    rows.append("-" * len(header))
    rows.append(f"{'total':<{width}}" + "".join(f"{totals[c]:>10}" for c in CLASSES)
                + f"{len(mutants):>8}{sum(warned.values()):>10}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", type=Path, nargs="?",
                        help="bundle directory (default: the tests' tiny trained bundle, built if not kept)")
    parser.add_argument("--mutants", type=int, default=200, help="how many mutants (default 200)")
    parser.add_argument("--first", type=int, default=0, help="index of the first mutant (to go on past a crash)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", type=int, action="append", help="run only mutant I of the seed (repeatable)")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds per mutant before it counts as a hang")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads per graph run")
    parser.add_argument("--max-rss-mb", type=int, default=4096, help="end the run if the process grows past this")
    parser.add_argument("--keep", type=Path, help="write the sources and mutants here (default: a temp dir, removed)")
    parser.add_argument("--json", type=Path, help="write the counts and every mutant's outcome here")
    args = parser.parse_args(argv)

    from mirasol_edge.runtime.session import Runtime

    if args.bundle is None:
        sys.path.insert(0, str(Path(__file__).parent))
        from runtime_bundles import trained

        args.bundle = trained()[1]

    faulthandler.enable()  # a fatal signal prints where every thread was
    signal.signal(signal.SIGALRM, _on_alarm)
    started = time.perf_counter()
    runtime = Runtime.load(args.bundle, intra_op_threads=args.threads)
    watchdog = Watchdog(hard_timeout=2 * args.timeout + 10, max_rss_mb=args.max_rss_mb)
    watchdog.start()
    with tempfile.TemporaryDirectory(prefix="fuzz-media-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        originals = [write_source(work / f"source-{k}.{s.ext}", s) for k, s in enumerate(SOURCES)]
        for k, s in enumerate(SOURCES):  # the undamaged sources must answer, or the fuzz means nothing
            m = Mutant(f"source-{k}", s.name, "none", False)
            run_one(runtime, m, work / f"source-{k}.{s.ext}", args.timeout)
            if m.cls != "answered":
                print(f"fuzz: the undamaged source {s.name!r} was not answered: {m.error}", file=sys.stderr)
                return 2
        mutants = []
        for index in args.only or range(args.first, args.first + args.mutants):
            mutant, data = make_mutant(args.seed, index, originals)
            path = work / f"mutant-{args.seed}-{index:05d}.{SOURCES[index % len(SOURCES)].ext}"
            path.write_bytes(data)
            # the last of these lines names the mutant that killed the process, if one did
            print(f"fuzz: {mutant.id} {mutant.source}: {mutant.mutation}", file=sys.stderr, flush=True)
            watchdog.current = (mutant.id, time.monotonic())
            run_one(runtime, mutant, path, args.timeout)
            watchdog.current = None
            if args.keep is None:
                path.unlink()
            mutants.append(mutant)
    seconds = time.perf_counter() - started

    print(table(mutants))
    others = [m for m in mutants if m.cls == "other"]
    for m in others:
        print(f"other {m.id} ({m.source}; {m.mutation}{'; skip_nonref' if m.skip_nonref else ''}): {m.error}")
        if m.where:
            print(f"    at {' <- '.join(reversed(m.where))}")
    print(f"{len(mutants)} mutants of seed {args.seed} in {seconds:.1f} s; "
          + ", ".join(f"{sum(m.cls == c for m in mutants)} {c}" for c in CLASSES))
    if args.json is not None:
        args.json.write_text(json.dumps({
            "seed": args.seed, "mutants": len(mutants), "seconds": round(seconds, 2),
            "counts": {c: sum(m.cls == c for m in mutants) for c in CLASSES},
            "by_source": {s.name: {c: sum(m.cls == c and m.source == s.name for m in mutants) for c in CLASSES}
                          for s in SOURCES},
            "by_mutation": {op: {c: sum(m.cls == c and m.mutation.startswith(op) for m in mutants) for c in CLASSES}
                            for op in ("flip", "truncate", "zero", "duplicate", "remove", "header", "insert",
                                       "overwrite", "append")},
            "other": [asdict(m) for m in others],
            "results": [asdict(m) for m in mutants],
        }, indent=1))
    return 1 if others else 0


if __name__ == "__main__":
    sys.exit(main())
