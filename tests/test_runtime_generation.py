"""Token choice, text pieces and the device-side cache graphs, on their own (no bundle needed)."""

import numpy as np
import onnxruntime as ort
import pytest

from mirasol_edge.runtime import cache_graphs, tokenizer
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
    ids = tokenizer.encode(text)
    ids = ids + [int(i) for i in rng.integers(0, tokenizer.VOCAB_SIZE, 12)]  # broken UTF-8 and specials too
    if seed % 2:
        ids.append(tokenizer.EOS)
    assert "".join(text_pieces(iter(ids))) == tokenizer.decode(ids)
    pieces = list(text_pieces(iter(tokenizer.encode(text))))
    assert pieces[-1] == "é" and "🙂" in pieces  # multi-byte characters arrive whole


@pytest.mark.parametrize("elem_type, dtype", [(1, np.float32), (10, np.float16)])
def test_cache_graphs_cut_and_append_like_numpy(elem_type, dtype):
    rng = np.random.default_rng(0)
    keep = 6
    append = ort.InferenceSession(cache_graphs.append_keep_last(elem_type, 2, keep), providers=["CPUExecutionProvider"])
    cut = ort.InferenceSession(cache_graphs.keep_last(elem_type, 2, keep), providers=["CPUExecutionProvider"])
    for old_len, new_len in [(0, 4), (2, 4), (4, 4), (8, 4), (0, 9)]:
        old = [rng.standard_normal((1, 2, old_len, 3)).astype(dtype) for _ in range(2)]
        new = [rng.standard_normal((1, 2, new_len, 3)).astype(dtype) for _ in range(2)]
        out = append.run(None, {"cache.0": old[0], "new.0": new[0], "cache.1": old[1], "new.1": new[1]})
        for o, a, b in zip(out, old, new):
            np.testing.assert_array_equal(o, np.concatenate([a, b], axis=2)[:, :, -keep:])
        out = cut.run(None, {"cache.0": new[0], "cache.1": new[1]})
        for o, b in zip(out, new):
            np.testing.assert_array_equal(o, b[:, :, -keep:])


def test_cache_graphs_are_valid_onnx():
    onnx = pytest.importorskip("onnx")  # a training extra: only checked where it is installed
    for graph in (cache_graphs.keep_last(1, 3, 5), cache_graphs.append_keep_last(10, 1, 2)):
        onnx.checker.check_model(onnx.load_from_string(graph), full_check=True)
