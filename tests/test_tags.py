"""TagScheme: tag order, the forbidden BIO moves, and span encode/decode."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from raner_backend.model.tags import DEFAULT_SCHEME, Span, TagScheme

SCHEME = DEFAULT_SCHEME  # PER, LOC, ORG


def tag_id(name: str) -> int:
    return SCHEME.tags.index(name)


def test_tags_are_outside_then_begin_inside_per_type():
    assert SCHEME.tags == ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]
    assert SCHEME.num_tags == len(SCHEME.tags)
    assert [SCHEME.begin(t) for t in ("PER", "LOC", "ORG")] == [1, 3, 5]


def test_inside_tag_only_follows_begin_or_inside_of_same_type():
    allowed = SCHEME.allowed_transitions()
    assert allowed.shape == (7, 7)
    for i, prev in enumerate(SCHEME.tags):
        for j, nxt in enumerate(SCHEME.tags):
            if nxt.startswith("I-"):
                expected = prev in ("B-" + nxt[2:], nxt)
            else:
                expected = True
            assert allowed[i, j] == expected, (prev, nxt)


def test_no_inside_of_other_type_after_begin():
    allowed = SCHEME.allowed_transitions()
    assert not allowed[tag_id("B-PER"), tag_id("I-ORG")]
    assert not allowed[tag_id("I-LOC"), tag_id("I-PER")]
    assert not allowed[tag_id("O"), tag_id("I-LOC")]
    assert allowed[tag_id("B-PER"), tag_id("I-PER")]
    assert allowed[tag_id("I-ORG"), tag_id("B-ORG")]


def test_sequence_may_not_start_with_inside_tag():
    starts = SCHEME.allowed_starts()
    assert [t for t, ok in zip(SCHEME.tags, starts) if ok] == ["O", "B-PER", "B-LOC", "B-ORG"]


def test_encode_hand_made_spans():
    spans = [Span(0, 2, "PER"), Span(2, 3, "PER"), Span(5, 8, "ORG")]
    tags = SCHEME.encode(9, spans)
    assert [SCHEME.tags[t] for t in tags] == [
        "B-PER", "I-PER", "B-PER", "O", "O", "B-ORG", "I-ORG", "I-ORG", "O"]
    assert SCHEME.decode(tags) == spans


def test_decode_span_reaching_the_end():
    assert SCHEME.decode([0, tag_id("B-LOC"), tag_id("I-LOC")]) == [Span(1, 3, "LOC")]


def test_decode_stray_inside_opens_a_span():
    tags = [tag_id(t) for t in ("O", "I-PER", "I-PER", "O", "B-PER", "I-LOC", "I-LOC")]
    assert SCHEME.decode(tags) == [Span(1, 3, "PER"), Span(4, 5, "PER"), Span(5, 7, "LOC")]


def test_decode_accepts_numpy_ids():
    assert SCHEME.decode(np.array([tag_id("B-ORG")], dtype=np.int64)) == [Span(0, 1, "ORG")]


@st.composite
def spans_in_text(draw):
    """Non-overlapping, non-empty spans over a text of some length."""
    length = draw(st.integers(0, 40))
    cuts = sorted(draw(st.lists(st.integers(0, length), max_size=12)))
    spans = []
    for a, b in zip(cuts[::2], cuts[1::2]):
        if b > a:
            spans.append(Span(a, b, draw(st.sampled_from(SCHEME.entity_types))))
    return length, spans


@settings(max_examples=200, deadline=None)
@given(spans_in_text())
def test_encode_decode_round_trip(case):
    length, spans = case
    tags = SCHEME.encode(length, spans)
    assert len(tags) == length
    assert SCHEME.decode(tags) == spans


def test_single_type_scheme():
    scheme = TagScheme(("PER",))
    assert scheme.tags == ["O", "B-PER", "I-PER"]
    assert scheme.allowed_transitions().tolist() == [[True, True, False], [True, True, True], [True, True, True]]
    assert scheme.allowed_starts().tolist() == [True, True, False]
