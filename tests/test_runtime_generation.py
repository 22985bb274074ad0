"""Token choice, text pieces and lockstep generation, on their own (no bundle needed)."""

import numpy as np
import pytest

from mirasol_edge.runtime import tokenizer
from mirasol_edge.runtime.generation import GenerationOptions, choose_token, text_pieces


def test_greedy_is_the_argmax():
    logits = np.array([0.1, 3.0, -1.0, 2.9], np.float32)
    assert choose_token(logits, GenerationOptions(), None) == 1


def test_top_k_and_top_p_keep_only_the_likely_tokens():
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    rng = np.random.default_rng(0)
    top_k = {choose_token(logits, GenerationOptions(temperature=1.0, top_k=2), rng) for _ in range(300)}
    assert top_k == {0, 1}
    top_p = {choose_token(logits, GenerationOptions(temperature=1.0, top_p=0.7), rng) for _ in range(300)}
    assert top_p == {0, 1}  # 0.5 + 0.3 reaches 0.7
    everything = {choose_token(logits, GenerationOptions(temperature=1.0), rng) for _ in range(2000)}
    assert everything == {0, 1, 2, 3}


def test_sampling_with_a_seed_repeats():
    logits = np.random.default_rng(1).standard_normal(260)
    draws = [[choose_token(logits, GenerationOptions(temperature=1.5), np.random.default_rng(7)) for _ in range(5)]
             for _ in range(2)]
    assert draws[0] == draws[1]


@pytest.mark.parametrize("seed", range(20))
def test_text_pieces_join_to_the_decoded_answer(seed):
    rng = np.random.default_rng(seed)
    text = "ok ÿ 日本 🙂 é"
    ids = tokenizer.tokenize(text)
    ids = ids + [int(i) for i in rng.integers(0, tokenizer.VOCAB_SIZE, 12)]  # broken UTF-8 and specials too
    if seed % 2:
        ids.append(tokenizer.EOS)
    assert "".join(text_pieces(iter(ids))) == tokenizer.detokenize(ids)
    pieces = list(text_pieces(iter(tokenizer.tokenize(text))))
    assert pieces[-1] == "é" and "🙂" in pieces  # multi-byte characters arrive whole


class CountingEngine:
    """A stand-in engine: row r's logits favour token 10 + its step count, then eos after `lengths[r]` steps.

    Rows carry their request's stop step as the "position" so selection and compaction can be checked."""

    def __init__(self, lengths, window=()):
        self.lengths, self.batches, self.window, self.prefills = lengths, [], set(window), []

    def text_decoder(self, state):
        return "window_context_decoder" if state in self.window else "context_decoder"

    def prefill(self, states, prompts, text_cache_len):
        self.prefills.append({self.text_decoder(s) for s in states})
        text = {"request": np.array(states), "step": np.zeros(len(states), int)}
        return self._logits(text), text

    def decode_one_token(self, text, tokens):
        text = {"request": text["request"], "step": text["step"] + 1}
        return self._logits(text), text

    def select(self, text, rows):
        return {k: v[rows] for k, v in text.items()}

    def _logits(self, text):
        self.batches.append(len(text["request"]))
        logits = np.zeros((len(text["request"]), tokenizer.VOCAB_SIZE), np.float32)
        for j, (r, step) in enumerate(zip(text["request"], text["step"])):
            logits[j, tokenizer.EOS if step >= self.lengths[r] else 10 + step] = 1.0
        return logits


def test_lockstep_generation_drops_finished_questions_and_keeps_each_answer():
    from mirasol_edge.runtime.generation import generate

    lengths = [1, 6, 2, 0, 6, 3]  # tokens before eos, per question
    engine = CountingEngine(lengths)
    options = [GenerationOptions(max_new_tokens=16)] * len(lengths)
    out = {i: [] for i in range(len(lengths))}
    for step in generate(engine, list(range(len(lengths))), [[1, 2]] * len(lengths), options, max_text_len=64):
        for i, token in step:
            out[i].append(token)
    for i, n in enumerate(lengths):
        assert out[i] == [10 + k for k in range(n)] + [tokenizer.EOS]
    assert engine.batches == [6, 6, 6, 3, 3, 3, 3]  # compacted once half of the six were done


def test_questions_for_two_decoders_decode_as_two_batches_each_answer_as_alone():
    from mirasol_edge.runtime.generation import generate

    lengths = [1, 6, 2, 0, 6, 3]
    engine = CountingEngine(lengths, window=(1, 2, 5))  # a window decoder answers these three
    options = [GenerationOptions(max_new_tokens=16)] * len(lengths)
    out = {i: [] for i in range(len(lengths))}
    for step in generate(engine, list(range(len(lengths))), [[1, 2]] * len(lengths), options, max_text_len=64):
        assert len({i for i, _ in step}) == len(step)  # one token per question per step
        for i, token in step:
            out[i].append(token)
    for i, n in enumerate(lengths):
        assert out[i] == [10 + k for k in range(n)] + [tokenizer.EOS]
    assert engine.prefills == [{"context_decoder"}, {"window_context_decoder"}]  # one batch per graph, never mixed


def test_a_question_stops_at_its_own_token_budget():
    from mirasol_edge.runtime.generation import generate

    engine = CountingEngine([50, 50])
    options = [GenerationOptions(max_new_tokens=3), GenerationOptions(max_new_tokens=5)]
    out = {0: [], 1: []}
    for step in generate(engine, [0, 1], [[1, 2], [1, 2, 3, 4]], options, max_text_len=8):
        for i, token in step:
            out[i].append(token)
    assert len(out[0]) == 3 and len(out[1]) == 4  # question 1: the text context ends at 8 = 4 + 4
