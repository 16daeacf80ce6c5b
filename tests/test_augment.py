"""Augmentation (modern text, name lists, swapped names) keeps every span exact."""
from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from raner_backend.model.data import Example
from raner_backend.model.tags import Span
from raner_backend.training.augment import SURFACES, augment_examples, augment_one, mention_swaps, name_lists

SENTENCE = Example("国务院总理李鹏在北京会见了日本首相。", (Span(0, 3, "ORG"), Span(5, 7, "PER"), Span(8, 10, "LOC"),
                                                   Span(13, 15, "LOC")))


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_augmented_spans_cover_whole_entities_of_the_same_types(seed):
    out = augment_one(SENTENCE, random.Random(seed))
    assert [s.label for s in out.spans] == [s.label for s in SENTENCE.spans]
    for span, original in zip(out.spans, SENTENCE.spans):
        surface = out.text[span.start : span.end]
        assert surface == SENTENCE.text[original.start : original.end] or surface in SURFACES[span.label]
        assert surface == surface.strip()
    assert all(a.end <= b.start for a, b in zip(out.spans, out.spans[1:]))


def test_a_share_of_the_sentences_with_entities_is_augmented_reproducibly():
    plain = Example("今天天气很好。", ())
    data = [SENTENCE, plain] * 50
    first, again = augment_examples(data, 0.3, seed=7), augment_examples(data, 0.3, seed=7)
    assert len(first) == 30 and first == again
    assert any(" " in e.text or "@" in e.text or "#" in e.text for e in first)


def test_name_lists_hold_only_training_names_each_spanned_exactly():
    data = [SENTENCE, Example("王芳和欧阳修见面，张会面。", (Span(0, 2, "PER"), Span(3, 6, "PER"), Span(9, 10, "PER")))]
    lists = name_lists(data, 40, seed=3)
    assert len(lists) == 40 and lists == name_lists(data, 40, seed=3)
    for example in lists:
        names = [example.text[s.start : s.end] for s in example.spans]
        assert len(names) >= 2 and set(names) <= {"李鹏", "王芳", "欧阳修"}  # one-character 张 is no full name
        assert all(s.label == "PER" for s in example.spans)
        assert all(a.end <= b.start for a, b in zip(example.spans, example.spans[1:]))
    assert any(a.end == b.start for e in lists for a, b in zip(e.spans, e.spans[1:]))  # names back to back
    assert name_lists([Example("今天天气很好。", ())], 5, seed=1) == []


def test_swapped_names_come_from_the_data_with_their_own_type_and_exact_spans():
    other = Example("美国总统克林顿访问上海交通大学。", (Span(0, 2, "LOC"), Span(4, 7, "PER"), Span(9, 15, "ORG")))
    data = [SENTENCE, other, Example("今天天气很好。", ())] * 20
    names = {label: {e.text[s.start:s.end] for e in data for s in e.spans if s.label == label} for label in SURFACES}
    swapped = mention_swaps(data, 0.5, seed=4)
    assert len(swapped) == 30 and swapped == mention_swaps(data, 0.5, seed=4)
    for example in swapped:
        assert example.text == example.text.strip() and not {"@", "#"} & set(example.text)
        for span in example.spans:
            assert example.text[span.start : span.end] in names[span.label]
    assert any(e.text not in {SENTENCE.text, other.text} for e in swapped)
