"""Character alignment: every code point of the ORIGINAL string is tied to the token that covers it."""
from __future__ import annotations

import unicodedata

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raner_backend.model.alignment import (
    FIRST, LAST, MIDDLE, NO_TOKEN, SINGLE, align, char_class, encode_texts)

FRAGMENTS = [
    "华为", "Mate", "60", "发布", "杭州", "在", "马云", "国务院",  # Han, Latin words, digits
    "，", "。", "、", "ＡＢＣ", "１２３", "Ａ", "（", "）",  # full-width punctuation, letters, digits
    " ", "  ", "\n", "\t", "\u3000", " \n ",  # spaces, newlines, ideographic space
    "😀", "👍🏽", "𠀀", "𪚥", "🇨🇳",  # emoji and CJK Ext-B, all non-BMP
    "e\u0301", "a\u0308\u0301", "\u0301",  # combining marks (and a stray one)
    "ﬁ", "①", "⑳", "㈱", "㍿", "ｶﾞ", "™", "½",  # characters NFKC changes
]
ALPHABET = "".join(sorted({c for f in FRAGMENTS for c in f}))
texts = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(alphabet=ALPHABET, max_size=4)),
                 max_size=14).map("".join)


def key(text: str) -> str:
    """Compatibility letters without combining marks: what a token and its source share."""
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def token_body(tokenizer, token_id: int) -> str:
    return tokenizer.convert_ids_to_tokens(token_id).replace("▁", " ")


def covering_token(offsets, i: int) -> int:
    """The last token whose offsets contain character ``i`` (0 when none does)."""
    hits = [t for t, (a, b) in enumerate(offsets) if a <= i < b]
    return hits[-1] if hits else 0


def expected_pieces(char_token: np.ndarray) -> list[int]:
    out = []
    for i, t in enumerate(char_token):
        if t == 0:
            out.append(NO_TOKEN)
            continue
        first = i == 0 or char_token[i - 1] != t
        last = i == len(char_token) - 1 or char_token[i + 1] != t
        out.append(SINGLE if first and last else FIRST if first else LAST if last else MIDDLE)
    return out


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=texts, data=st.data())
def test_alignment_is_per_code_point_of_the_original_string(base_tokenizer, text, data):
    enc = encode_texts(base_tokenizer, [text])[0]
    ref = base_tokenizer(text, return_offsets_mapping=True, add_special_tokens=True)
    offsets = [tuple(o) for o in ref["offset_mapping"]]
    assert enc.input_ids == ref["input_ids"]
    assert enc.char_token.shape == (len(text),) and enc.char_piece.shape == (len(text),)
    assert ((0 <= enc.char_token) & (enc.char_token < len(enc.input_ids))).all()
    unk = base_tokenizer.unk_token_id
    for i, ch in enumerate(text):
        t = int(enc.char_token[i])
        assert t == covering_token(offsets, i), (i, ch)
        if t == 0:
            continue
        assert offsets[t][0] <= i < offsets[t][1]
        # The token's text comes from this very code point: offsets count code points of the input.
        if enc.input_ids[t] != unk and len(unicodedata.normalize("NFKC", ch)) == 1:
            assert key(ch) in key(token_body(base_tokenizer, enc.input_ids[t])), (i, ch)
    for t, (a, b) in enumerate(offsets):
        if b > a and enc.input_ids[t] != unk:
            # NFKC composes a base letter with a following combining mark (i + ̈ → ï); the
            # tokenizer's offsets then point at the mark alone, so the base letter counts too.
            start = a - 1 if a > 0 and unicodedata.combining(text[a]) else a
            assert key(token_body(base_tokenizer, enc.input_ids[t])).strip() in key(text[start:b]), (t, a, b)
    assert enc.char_piece.tolist() == expected_pieces(enc.char_token)
    # Any span of the string: its characters are tied to tokens drawn from that same substring.
    a = data.draw(st.integers(0, len(text)))
    b = data.draw(st.integers(a, len(text)))
    for i in range(a, b):
        t = int(enc.char_token[i])
        if t:
            lo, hi = offsets[t]
            assert text[i] in text[lo:hi] and lo <= i < hi


def test_han_after_emoji_sits_at_its_code_points(base_tokenizer):
    text = "马云😀在杭州"
    assert text.index("杭州") == 4  # code points, not UTF-16 units (which would say 5)
    enc = encode_texts(base_tokenizer, [text])[0]
    ref = base_tokenizer(text, return_offsets_mapping=True)
    hz = set(enc.char_token[4:6].tolist())
    assert len(hz) == 1
    token = hz.pop()
    assert tuple(ref["offset_mapping"][token]) == (4, 6)
    assert base_tokenizer.convert_ids_to_tokens(enc.input_ids[token]).strip("▁") == "杭州"
    assert enc.char_piece[4:6].tolist() == [FIRST, LAST]
    assert enc.char_token[2] != enc.char_token[4]  # the emoji is its own character, not part of 杭州


def test_non_bmp_chars_keep_one_position_each(base_tokenizer):
    text = "𠀀😀👍🏽北京"
    enc = encode_texts(base_tokenizer, [text])[0]
    assert len(enc.char_token) == len(text) == 6
    tokens = base_tokenizer.convert_ids_to_tokens(enc.input_ids)
    assert tokens[enc.char_token[4]].strip("▁") in ("北京", "北")
    assert enc.char_token[5] != 0


def test_piece_positions_follow_token_runs(base_tokenizer):
    text = "华为Mate60发布"
    enc = encode_texts(base_tokenizer, [text])[0]
    assert enc.char_piece.tolist() == expected_pieces(enc.char_token)
    tokens = base_tokenizer.convert_ids_to_tokens(enc.input_ids)
    assert tokens[enc.char_token[2]].strip("▁") == "Mate"
    assert enc.char_piece[2:6].tolist() == [FIRST, MIDDLE, MIDDLE, LAST]


def test_batch_encoding_matches_one_by_one(base_tokenizer):
    batch = ["马云在杭州", "", "ＡＢＣ １２３\n😀", "e\u0301"]
    together = encode_texts(base_tokenizer, batch)
    for text, enc in zip(batch, together):
        alone = encode_texts(base_tokenizer, [text])[0]
        assert enc.input_ids == alone.input_ids
        np.testing.assert_array_equal(enc.char_token, alone.char_token)
        np.testing.assert_array_equal(enc.char_piece, alone.char_piece)


def test_align_by_hand():
    # <s>, a token over 0..3, a zero-width token, a token over 3..4, </s>; char 4 uncovered.
    char_token, char_piece = align([(0, 0), (0, 3), (3, 3), (3, 4), (0, 0)], 5)
    assert char_token.tolist() == [1, 1, 1, 3, 0]
    assert char_piece.tolist() == [FIRST, MIDDLE, LAST, SINGLE, NO_TOKEN]


def test_align_last_covering_token_wins():
    # NFKC expansions (㈱ → "(株)") give several tokens the same one-character offsets.
    char_token, char_piece = align([(0, 0), (0, 1), (0, 1), (0, 1), (1, 2), (0, 0)], 2)
    assert char_token.tolist() == [3, 4]
    assert char_piece.tolist() == [SINGLE, SINGLE]


@pytest.mark.parametrize("ch, cls", [("中", "han"), ("𠀀", "han"), ("a", "latin"), ("Ａ", "latin"),
                                     ("٣", "digit"), ("１", "digit"), ("，", "punct"), ("\n", "space"),
                                     ("\u3000", "space"), ("😀", "symbol"), ("\u0301", "other")])
def test_char_class(ch, cls):
    from raner_backend.model.alignment import CHAR_CLASSES

    assert CHAR_CLASSES[char_class(ch)] == cls
