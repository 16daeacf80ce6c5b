"""Long-text windows: sentence_ends, window_bounds, stitch_owner, and the predictor's LRU cache."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raner_backend.engine.predictor import LruCache, sentence_ends, stitch_owner, window_bounds


@st.composite
def window_cases(draw):
    width = draw(st.integers(1, 300))
    overlap = draw(st.integers(0, width - 1))
    length = draw(st.integers(0, 5 * width + 7))
    return length, width, overlap


@st.composite
def cases_with_sentence_ends(draw):
    length, width, overlap = draw(window_cases())
    breaks = sorted(draw(st.sets(st.integers(1, max(1, length)), max_size=12)))
    return length, width, overlap, breaks


@settings(max_examples=300, deadline=None)
@given(window_cases())
def test_windows_cover_text_with_exact_overlap(case):
    length, width, overlap = case
    bounds = window_bounds(length, width, overlap)
    assert bounds[0][0] == 0 and bounds[-1][1] == length
    for start, end in bounds:
        assert 0 <= start < end <= length or (length == 0 and (start, end) == (0, 0))
        assert end - start <= width
    for (s0, e0), (s1, e1) in zip(bounds, bounds[1:]):
        assert e0 - s1 == overlap  # neighbours share exactly `overlap` characters
        assert s0 < s1 and e0 < e1  # strictly advancing
        assert e0 - s0 == width  # only the last window may be short


@settings(max_examples=300, deadline=None)
@given(cases_with_sentence_ends())
def test_windows_meet_at_a_sentence_end_or_overlap(case):
    length, width, overlap, breaks = case
    bounds = window_bounds(length, width, overlap, breaks)
    assert bounds[0][0] == 0 and bounds[-1][1] == length
    for start, end in bounds:
        assert end - start <= width
    for (s0, e0), (s1, e1) in zip(bounds, bounds[1:]):
        assert s0 < s1 and e0 < e1
        cut_at_sentence_end = s1 == e0 and e0 in breaks and e0 - s0 > width // 2
        assert cut_at_sentence_end or (e0 - s1 == overlap and e0 - s0 == width)
    owned = stitch_owner(bounds)
    assert owned[0][0] == 0 and owned[-1][1] == length
    for (_, hi), (lo, _) in zip(owned, owned[1:]):
        assert hi == lo
    for (lo, hi), (start, end) in zip(owned, bounds):
        assert start <= lo <= hi <= end


def test_windows_cut_at_the_last_sentence_end_in_their_second_half():
    assert window_bounds(600, 256, 64, [100, 200, 300, 450, 590]) == [(0, 200), (200, 450), (450, 600)]
    assert window_bounds(600, 256, 64, [10, 20]) == [(0, 256), (192, 448), (384, 600)]  # too early to cut


def test_sentence_ends_take_closing_quotes_and_runs_of_marks():
    text = "他说：“好的。”然后走了！！\n第二句？是的;嗯"
    assert [text[:i][-3:] for i in sentence_ends(text)] == ["的。”", "！！\n", "二句？", "是的;"]
    assert sentence_ends("没有句号") == []


def test_short_text_is_one_window():
    assert window_bounds(0, 256, 64) == [(0, 0)]
    assert window_bounds(256, 256, 64) == [(0, 256)]


def test_window_bounds_by_hand():
    assert window_bounds(10, 4, 1) == [(0, 4), (3, 7), (6, 10)]
    assert window_bounds(11, 4, 1) == [(0, 4), (3, 7), (6, 10), (9, 11)]
    assert window_bounds(600, 256, 64) == [(0, 256), (192, 448), (384, 600)]


@settings(max_examples=300, deadline=None)
@given(window_cases())
def test_owned_ranges_partition_the_text_inside_their_windows(case):
    length, width, overlap = case
    bounds = window_bounds(length, width, overlap)
    owned = stitch_owner(bounds)
    assert len(owned) == len(bounds)
    assert owned[0][0] == 0 and owned[-1][1] == length
    for (_, hi), (lo, _) in zip(owned, owned[1:]):
        assert hi == lo  # contiguous: no gap, no overlap
    for (lo, hi), (start, end) in zip(owned, bounds):
        assert start <= lo <= hi <= end
        if length:
            assert lo < hi  # every window owns something


@settings(max_examples=200, deadline=None)
@given(window_cases())
def test_owned_characters_keep_half_the_overlap_from_each_edge(case):
    length, width, overlap = case
    bounds = window_bounds(length, width, overlap)
    for k, ((lo, hi), (start, end)) in enumerate(zip(stitch_owner(bounds), bounds)):
        if k > 0:
            assert lo - start >= overlap // 2
        if k < len(bounds) - 1:
            assert end - hi >= overlap // 2


def test_stitch_owner_by_hand():
    assert stitch_owner([(0, 4), (3, 7), (6, 10)]) == [(0, 3), (3, 6), (6, 10)]
    assert stitch_owner([(0, 256), (192, 448), (384, 600)]) == [(0, 224), (224, 416), (416, 600)]
    assert stitch_owner([(0, 5)]) == [(0, 5)]


def test_lru_evicts_least_recently_used():
    cache = LruCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "a" is now the most recent
    cache.put("c", 3)
    assert cache.get("b") is None
    assert cache.get("a") == 1 and cache.get("c") == 3
    assert len(cache) == 2


def test_lru_put_refreshes_existing_key():
    cache = LruCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    cache.put("a", 10)
    cache.put("c", 3)
    assert cache.get("a") == 10 and cache.get("b") is None


def test_lru_size_zero_disables_cache():
    cache = LruCache(0)
    cache.put("a", 1)
    assert cache.get("a") is None and len(cache) == 0


def test_lru_holds_a_bounded_number_of_characters_not_only_of_texts():
    cache = LruCache(100, max_chars=10)
    cache.put("一二三四", 1)
    cache.put("五六七八", 2)
    cache.put("九十甲", 3)  # 11 characters: the oldest goes
    assert cache.get("一二三四") is None and cache.get("五六七八") == 2 and cache.get("九十甲") == 3
    cache.put("五六七八", 20)  # a refreshed key is counted once
    assert len(cache) == 2 and cache.get("九十甲") == 3
    cache.put("长" * 11, 4)  # longer than the whole budget: not cached, nothing evicted
    assert cache.get("长" * 11) is None and len(cache) == 2


def test_lru_miss_returns_none():
    assert LruCache(3).get("nothing") is None


def test_window_overlap_must_be_smaller_than_the_window():
    with pytest.raises(ValueError):
        window_bounds(10, 4, 4)
