"""Commands of the runtime: ask, stream (no torch, ever; onnxruntime and av load inside them).

Questions are checked before the bundle's graphs run or the media is decoded, so a bad question
fails in a moment. Every error a user can cause ends in one sentence on stderr and exit code 2.
"""

from __future__ import annotations

import contextlib
import json
import time
import warnings
from pathlib import Path
from typing import Optional

import typer

_QUESTION = typer.Option(..., "--question", "-q", help="A question about the clip (repeat -q to ask several).")
_PROVIDER = typer.Option("cpu", "--provider", help="cpu, or cuda (needs onnxruntime-gpu and an NVIDIA GPU).")
_MAX_NEW = typer.Option(None, "--max-new-tokens", help="Longest answer in tokens (UTF-8 bytes); default: the bundle's.")
_TEMPERATURE = typer.Option(0.0, "--temperature", help="0 answers greedily; above 0 samples.")
_TOP_K = typer.Option(0, "--top-k", help="Sample among the k most likely tokens (0: all).")
_TOP_P = typer.Option(1.0, "--top-p", help="Sample among the fewest tokens whose probabilities sum to p.")
_SEED = typer.Option(None, "--seed", help="Seed of the sampling.")
_THREADS = typer.Option(0, "--threads", help="Threads per graph run (0: all cores).")
_WINDOW = typer.Option(None, "--window", help="Chunks the stream's caches hold; default: the bundle's temporal window.")
_JSON = typer.Option(False, "--json", help="Print JSON instead of text.")
_SHARED = typer.Option(True, "--shared-threads/--graph-threads", help="One ONNX Runtime thread pool for all the "
                       "graphs (the fastest on few cores, BENCHMARKS.md), or a pool per graph.")
_SKIP_NONREF = typer.Option(False, "--skip-nonref", help="Decode faster: skip frames that no sampled instant shows and "
                            "nothing references (the same chunks on constant-frame-rate files; on variable frame rate a sampled "
                            "instant may show a neighbouring frame).")


def ask(
    bundle: Path = typer.Argument(..., help="Bundle directory written by `mirasol-edge export`."),
    source: str = typer.Argument(..., help="Video file or URL (anything FFmpeg reads)."),
    question: list[str] = _QUESTION,
    provider: str = _PROVIDER,
    json_out: bool = _JSON,
    max_new_tokens: Optional[int] = _MAX_NEW,
    temperature: float = _TEMPERATURE,
    top_k: int = _TOP_K,
    top_p: float = _TOP_P,
    seed: Optional[int] = _SEED,
    threads: int = _THREADS,
    window: Optional[int] = _WINDOW,
    skip_nonref: bool = _SKIP_NONREF,
    shared_threads: bool = _SHARED,
):
    """Answer questions about a whole clip, run through a bundle with ONNX Runtime."""
    from mirasol_edge.runtime.generation import GenerationOptions

    options = GenerationOptions(max_new_tokens, temperature, top_k, top_p, seed)
    runtime = _runtime(bundle, question, provider, threads, window, shared_threads, options)
    stream = runtime.create_stream()
    with _plain_warnings():
        start = time.perf_counter()
        chunks = stream.push_source(source, skip_nonref)
        push_seconds = time.perf_counter() - start
    start = time.perf_counter()  # every question in one batched prefill and lockstep decoding
    texts = runtime.ask_streams([(stream, q) for q in question], options)
    answer_seconds = round(time.perf_counter() - start, 4)
    answers = [{"question": q, "answer": text} for q, text in zip(question, texts)]
    report = stream.decode_report
    if json_out:
        typer.echo(json.dumps({
            "bundle": str(bundle), "source": source, "provider": provider, "chunks": chunks,
            "media_seconds": chunks * runtime.chunk.chunk_seconds, "push_seconds": round(push_seconds, 4),
            "complete": report.complete, "incomplete_reason": report.reason,  # a damaged source is answered from what decoded
            "answer_seconds": answer_seconds, "answers": answers,
        }, ensure_ascii=False))
        return
    typer.echo(f"{source}: {chunks} chunks ({chunks * runtime.chunk.chunk_seconds:g} s) in {push_seconds * 1000:.0f} ms")
    for a in answers:
        typer.echo(f"Q: {a['question']}\nA: {a['answer']}")


def stream(
    bundle: Path = typer.Argument(..., help="Bundle directory written by `mirasol-edge export`."),
    source: str = typer.Argument(..., help="Video file, URL or live source (anything FFmpeg reads)."),
    question: list[str] = _QUESTION,
    every: int = typer.Option(1, "--every", help="Answer after every K chunks (and after the last)."),
    provider: str = _PROVIDER,
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object per line."),
    max_new_tokens: Optional[int] = _MAX_NEW,
    temperature: float = _TEMPERATURE,
    top_k: int = _TOP_K,
    top_p: float = _TOP_P,
    seed: Optional[int] = _SEED,
    threads: int = _THREADS,
    window: Optional[int] = _WINDOW,
    skip_nonref: bool = _SKIP_NONREF,
    shared_threads: bool = _SHARED,
):
    """Answer questions as the chunks of a source arrive, with each chunk's latency."""
    if every < 1:
        raise ValueError(f"--every must be at least 1 chunk, got {every}.")
    from mirasol_edge.runtime.generation import GenerationOptions

    runtime = _runtime(bundle, question, provider, threads, window, shared_threads,
                       GenerationOptions(max_new_tokens, temperature, top_k, top_p, seed))
    s = runtime.create_stream()
    seconds = runtime.chunk.chunk_seconds

    def answer_all(chunk: int) -> None:
        for q in question:
            start = time.perf_counter()
            pieces = []
            if not json_out:
                typer.echo(f"  Q: {q}\n  A: ", nl=False)
            for piece in s.ask_stream(q, max_new_tokens, temperature, top_k, top_p, seed):
                pieces.append(piece)
                if not json_out:
                    typer.echo(piece, nl=False)
            ms = (time.perf_counter() - start) * 1000
            if json_out:
                typer.echo(json.dumps({"chunk": chunk, "question": q, "answer": "".join(pieces), "ms": round(ms, 2)},
                                      ensure_ascii=False))
            else:
                typer.echo(f"  ({ms:.1f} ms)")

    with _plain_warnings():
        chunks = s.push_chunks(source, skip_nonref)
        last_answered = 0
        while True:
            start = time.perf_counter()
            n = next(chunks, None)  # decoding and pushing one chunk
            if n is None:
                break
            ms = (time.perf_counter() - start) * 1000
            if json_out:
                typer.echo(json.dumps({"chunk": n, "start_s": (n - 1) * seconds, "end_s": n * seconds, "ms": round(ms, 2)}))
            else:
                typer.echo(f"chunk {n:>4}  {(n - 1) * seconds:7.1f}-{n * seconds:.1f} s  decode+push {ms:7.1f} ms")
            if n % every == 0:
                answer_all(n)
                last_answered = n
        if s.chunks and last_answered != s.chunks:
            answer_all(s.chunks)
    report = s.decode_report
    if json_out and report is not None:  # the last line: whether the source decoded to its end
        typer.echo(json.dumps({"chunks": report.chunks, "complete": report.complete, "incomplete_reason": report.reason}))


def _runtime(bundle: Path, questions: list[str], provider: str, threads: int, window: Optional[int], shared_threads: bool,
             options):
    """Check the questions and generation options, load the bundle, and check the questions fit its
    text context: all of it before a frame is decoded."""
    from mirasol_edge.runtime.tokenizer import check_question, prompt_tokens
    from mirasol_edge.runtime.session import Runtime

    for q in questions:
        check_question(q)  # non-UTF-8 argv bytes: before anything is loaded
    options.check()
    runtime = Runtime.load(bundle, provider=provider, intra_op_threads=threads, temporal_window=window,
                           thread_pool="shared" if shared_threads else "per_session")
    for q in questions:
        prompt_tokens(q, runtime.bundle.max_text_len)
    return runtime


@contextlib.contextmanager
def _plain_warnings():
    """Media warnings (no audio track, skipped packets) as one 'warning: ...' line each."""

    def show(message, category, filename, lineno, file=None, line=None):
        typer.echo(f"warning: {message}", err=True)

    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = show
        yield
