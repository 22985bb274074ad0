"""Byte-level UTF-8 tokenizer: no vocabulary file, the same in training and at runtime.

Token ids: 0 pad, 1 bos, 2 eos, 3 sep, then byte b -> b + 4 (vocabulary of 260).
A prompt is  [bos] question-bytes [sep];  the answer follows, ended by [eos].
"""

from __future__ import annotations

PAD, BOS, EOS, SEP = 0, 1, 2, 3
NUM_SPECIAL = 4
VOCAB_SIZE = NUM_SPECIAL + 256


def tokenize(text: str) -> list[int]:
    """UTF-8 bytes of `text` as token ids (no special tokens)."""
    if not isinstance(text, str):
        raise ValueError(f"text must be str, got {type(text).__name__}; decode bytes as UTF-8 first.")
    return [b + NUM_SPECIAL for b in text.encode("utf-8")]


def detokenize(ids) -> str:
    """Token ids back to text; special tokens are skipped, stops at the first eos."""
    out = bytearray()
    for i in ids:
        i = int(i)
        if i == EOS:
            break
        if i >= NUM_SPECIAL:
            out.append(i - NUM_SPECIAL)
    return out.decode("utf-8", errors="replace")


def prompt_tokens(question, max_len: int) -> list[int]:
    """[bos] question [sep]; ValueError if it is not UTF-8 text, is empty, or cannot fit in `max_len`
    tokens with room to answer."""
    question = check_question(question)
    if not question or not question.strip():
        raise ValueError("the question is empty; ask something, e.g. -q 'what colour is the square?'.")
    ids = [BOS, *tokenize(question), SEP]
    if len(ids) >= max_len:
        raise ValueError(
            f"the question is {len(ids)} tokens (UTF-8 bytes + 2) but the model's text context is "
            f"{max_len}; shorten it to under {max_len - 2} bytes."
        )
    return ids


def example_tokens(question: str, answer: str, max_len: int) -> tuple[list[int], int]:
    """Prompt + answer + eos as one sequence, and the index where the answer starts."""
    prompt = prompt_tokens(question, max_len)
    ids = prompt + tokenize(answer) + [EOS]
    if len(ids) > max_len:
        raise ValueError(f"question and answer are {len(ids)} tokens, more than the text context {max_len}.")
    return ids, len(prompt)


def check_question(question) -> str:
    """The question as str; ValueError unless it is valid UTF-8 text.

    bytes are decoded strictly. A str can still hold lone surrogates: Python maps bytes of argv
    that are not UTF-8 to U+DC80..U+DCFF (surrogateescape), and those cannot be encoded.
    """
    if isinstance(question, (bytes, bytearray)):
        try:
            return bytes(question).decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(
                f"the question is not valid UTF-8 (byte 0x{question[e.start]:02x} at position {e.start}); "
                f"ask in UTF-8 text."
            ) from None
    if not isinstance(question, str):
        raise ValueError(f"the question must be text (str), got {type(question).__name__}.")
    try:
        question.encode("utf-8")
    except UnicodeEncodeError as e:
        char = ord(question[e.start])
        what = f"byte 0x{char - 0xDC00:02x}" if 0xDC80 <= char <= 0xDCFF else f"lone surrogate U+{char:04X}"
        raise ValueError(
            f"the question is not valid UTF-8 ({what} at character {e.start}); ask in UTF-8 text "
            f"(check the terminal's encoding)."
        ) from None
    return question
