"""Text generation for N questions at once: one batched prefill, then lockstep decoding.

Greedy decoding (temperature 0) mirrors `MirasolModel.generate`: each prompt [bos] question [sep]
in one step from an empty self cache (`prefill`), then one token per question per step
(`decode_one_token`) until eos or the text context is full. Questions that are done drop out of
the batch once half of it is done (until then they ride along, their tokens ignored). With a
temperature, tokens are sampled (top-k, then top-p), seeded per question.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from mirasol_edge.runtime import tokenizer


TEXT_CACHE_STEP = 16  # text self caches are sized in steps of this many positions


@dataclass(frozen=True)
class GenerationOptions:
    max_new_tokens: int | None = None  # None: the bundle's runtime default
    temperature: float = 0.0  # 0: greedy (argmax); > 0: sample from softmax(logits / temperature)
    top_k: int = 0  # sample among the k most likely tokens; 0: all
    top_p: float = 1.0  # ... and among the fewest whose probabilities sum to top_p
    seed: int | None = None  # sampling seed; None: a fresh one each question

    def check(self) -> None:
        """ValueError, in one sentence, for options that make no sense."""
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}.")
        if not self.temperature >= 0:  # also catches NaN
            raise ValueError(f"temperature must be >= 0 (0 is greedy), got {self.temperature}.")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 keeps every token), got {self.top_k}.")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}.")
        if self.seed is not None and not 0 <= self.seed < 2**64:
            raise ValueError(f"the sampling seed must be between 0 and 2**64 - 1, got {self.seed}.")


def choose_token(logits: np.ndarray, options: GenerationOptions, rng: np.random.Generator | None) -> int:
    """logits (V,) -> a token id: argmax when greedy, else a sample after temperature/top-k/top-p."""
    if options.temperature == 0:
        return int(np.argmax(logits))
    scores = logits.astype(np.float64) / options.temperature
    if 0 < options.top_k < len(scores):
        kth = np.partition(scores, -options.top_k)[-options.top_k]
        scores = np.where(scores < kth, -np.inf, scores)
    probs = np.exp(scores - scores.max())
    probs /= probs.sum()
    if options.top_p < 1:
        order = np.argsort(-probs, kind="stable")
        cumulative = np.cumsum(probs[order])
        cut = int(np.searchsorted(cumulative, options.top_p)) + 1  # the fewest tokens reaching top_p
        kept = np.zeros_like(probs)
        kept[order[:cut]] = probs[order[:cut]]
        probs = kept / kept.sum()
    assert rng is not None, "sampling needs a generator"
    return int(rng.choice(len(probs), p=probs))


def generate(engine, states, prompts: list[list[int]], options: list[GenerationOptions], max_text_len: int,
             stop_at_eos: bool = True) -> Iterator[list[tuple[int, int]]]:
    """Yield, at each step, (request index, token id) for every question still being answered.

    states[i]: the stream state question i is about (a chunk pushed); prompts[i]: its prompt ids;
    options[i]: its options, max_new_tokens resolved. A question ends at eos (yielded, the last of
    its tokens) or at its token budget; stop_at_eos=False generates every budget in full (benchmarks).
    Questions answered by different graphs (engine.text_decoder: a window decoder inside the window)
    are batched per graph, their steps taken in turn and yielded together.
    """
    assert all(o.max_new_tokens is not None for o in options), "max_new_tokens is resolved by the caller"
    groups: dict[str, list[int]] = {}
    for i, state in enumerate(states):
        groups.setdefault(engine.text_decoder(state), []).append(i)
    batches = [_generate_batch(engine, states, prompts, options, max_text_len, stop_at_eos, rows) for rows in groups.values()]
    while batches:
        step = []
        for batch in list(batches):
            try:
                step += next(batch)
            except StopIteration:
                batches.remove(batch)
        if step:
            yield step


def _generate_batch(engine, states, prompts: list[list[int]], options: list[GenerationOptions], max_text_len: int,
                    stop_at_eos: bool, requests: list[int]) -> Iterator[list[tuple[int, int]]]:
    """generate for the questions `requests` (indices into states, prompts and options), one decoder's."""
    budget = np.array([min(int(o.max_new_tokens or 0), max_text_len - len(p)) for o, p in zip(options, prompts)])  # the position table ends at max_text_len
    rows = np.array([i for i in requests if budget[i] > 0], dtype=np.int64)  # the batch's rows, as request indices
    if not len(rows):
        return
    rngs = [np.random.default_rng(o.seed) if o.temperature > 0 else None for o in options]
    greedy = all(o.temperature == 0 for o in options)
    # The self cache holds what this batch's prompts and answers reach (a multiple of 16, for few
    # distinct shapes): attention and cache writes cost what the questions need, not max_text_len.
    reach = max(len(prompts[i]) + budget[i] for i in rows)
    cache_len = min(max_text_len, -(-reach // TEXT_CACHE_STEP) * TEXT_CACHE_STEP)
    logits, text = engine.prefill([states[i] for i in rows], [prompts[i] for i in rows], cache_len)
    live = np.ones(len(rows), bool)  # rows still answering
    made = np.zeros(len(options), int)
    while True:
        if greedy:
            tokens = np.argmax(logits, axis=1)
        else:
            tokens = np.array([choose_token(logits[j], options[i], rngs[i]) for j, i in enumerate(rows)])
        yield [(int(i), int(t)) for i, t, on in zip(rows, tokens, live) if on]
        made[rows[live]] += 1
        live &= made[rows] < budget[rows]
        if stop_at_eos:
            live &= tokens != tokenizer.EOS
        if not live.any():
            return
        if live.sum() <= len(rows) // 2:  # compact: the rows that are done stop costing compute
            keep = np.flatnonzero(live)
            text, rows, tokens, live = engine.select(text, keep), rows[keep], tokens[keep], live[keep]
        logits, text = engine.decode_one_token(text, tokens.astype(np.int64))


def text_pieces(ids: Iterator[int]) -> Iterator[str]:
    """Token ids -> text as it becomes complete UTF-8; the pieces join to tokenizer.detokenize(ids)."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    for i in ids:
        if i == tokenizer.EOS:
            break
        if i >= tokenizer.NUM_SPECIAL:
            piece = decoder.decode(bytes([i - tokenizer.NUM_SPECIAL]))
            if piece:
                yield piece
    tail = decoder.decode(b"", final=True)
    if tail:
        yield tail
