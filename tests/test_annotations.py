"""Label Studio JSON export -> training examples."""
from __future__ import annotations

import logging

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raner_backend.labeling import LabelSchema
from raner_backend.model.data import Example
from raner_backend.model.tags import Span
from raner_backend.training.annotations import SkipReason, examples_from_export

SCHEMA = LabelSchema("label", "text", "text", {"人名": "PER", "PER": "PER", "地名": "LOC", "机构名": "ORG",
                                               "杂项": "ORG"})
CHINESE = LabelSchema("ner", "doc", "sentence", {"人名": "PER", "地名": "LOC", "机构名": "ORG"})


def region(start, end, label, text=None, *, src="马云在杭州创办了阿里巴巴", rid=None, **extra):
    value = {"start": start, "end": end, "labels": [label] if isinstance(label, str) else label}
    value["text"] = src[start:end] if text is None else text
    if text is False:
        del value["text"]
    out = {"from_name": "label", "to_name": "text", "type": "labels", "value": value}
    if rid is not None:
        out["id"] = rid
    out.update(extra)
    return out


def annotation(result, aid=1, *, cancelled=False, updated="2024-05-01T10:00:00.000000Z", created=None):
    out = {"id": aid, "result": result, "was_cancelled": cancelled, "ground_truth": False,
           "created_at": created or "2024-05-01T09:00:00.000000Z"}
    if updated is not None:
        out["updated_at"] = updated
    return out


def task(annotations, tid=7, text="马云在杭州创办了阿里巴巴", key="text"):
    return {"id": tid, "data": {key: text}, "annotations": annotations, "predictions": []}


def run(tasks, schema=SCHEMA):
    examples, reasons = examples_from_export(tasks, schema)
    assert all(isinstance(r, SkipReason) for r in reasons)
    return examples, reasons


def spans_of(tasks, schema=SCHEMA):
    examples, _ = run(tasks, schema)
    assert len(examples) == 1
    return examples[0][1].spans


# --- the happy path -----------------------------------------------------------------------------


def test_basic_task_gives_model_types_sorted():
    result = [region(8, 12, "机构名"), region(0, 2, "人名"), region(3, 5, "地名")]
    examples, reasons = run([task([annotation(result)])])
    assert reasons == []
    assert examples == [(7, Example("马云在杭州创办了阿里巴巴",
                                    (Span(0, 2, "PER"), Span(3, 5, "LOC"), Span(8, 12, "ORG"))))]


def test_schema_names_and_data_key_come_from_the_schema():
    text = "李白是诗人"
    reg = {"from_name": "ner", "to_name": "doc", "type": "labels",
           "value": {"start": 0, "end": 2, "text": "李白", "labels": ["人名"]}}
    examples, _ = run([task([annotation([reg])], text=text, key="sentence")], CHINESE)
    assert examples[0][1] == Example(text, (Span(0, 2, "PER"),))


def test_empty_result_is_an_example_without_entities():
    examples, reasons = run([task([annotation([])])])
    assert examples == [(7, Example("马云在杭州创办了阿里巴巴", ()))] and reasons == []


def test_region_without_text_is_taken_at_its_offsets():
    assert spans_of([task([annotation([region(0, 2, "人名", False)])])]) == (Span(0, 2, "PER"),)


# --- which annotation wins ----------------------------------------------------------------------


def test_latest_updated_at_wins():
    old = annotation([region(0, 2, "人名")], aid=9, updated="2024-05-01T10:00:00Z")
    new = annotation([region(3, 5, "地名")], aid=3, updated="2024-06-01T10:00:00.5+00:00")
    assert spans_of([task([new, old])]) == (Span(3, 5, "LOC"),)
    assert spans_of([task([old, new])]) == (Span(3, 5, "LOC"),)


def test_ties_fall_back_to_created_at_then_id():
    same = "2024-05-01T10:00:00Z"
    a = annotation([region(0, 2, "人名")], aid=1, updated=same, created="2024-04-02T00:00:00Z")
    b = annotation([region(3, 5, "地名")], aid=2, updated=same, created="2024-04-01T00:00:00Z")
    assert spans_of([task([b, a])]) == (Span(0, 2, "PER"),)
    c = annotation([region(8, 12, "机构名")], aid=5, updated=same, created="2024-04-02T00:00:00Z")
    assert spans_of([task([c, a])]) == (Span(8, 12, "ORG"),)
    # no updated_at: created_at decides; naive and aware timestamps compare
    d = annotation([region(0, 2, "人名")], aid=1, updated=None, created="2024-07-01T00:00:00")
    assert spans_of([task([a, d])]) == (Span(0, 2, "PER"),)


def test_cancelled_annotations_never_win():
    kept = annotation([region(0, 2, "人名")], aid=1, updated="2024-01-01T00:00:00Z")
    newer_cancelled = annotation([region(3, 5, "地名")], aid=2, cancelled=True, updated="2024-09-01T00:00:00Z")
    assert spans_of([task([kept, newer_cancelled])]) == (Span(0, 2, "PER"),)


@pytest.mark.parametrize("annotations, words", [
    ([annotation([], cancelled=True), annotation([], aid=2, cancelled="true")], "cancelled"),
    ([], "no annotations"),
    (None, "no annotations"),
])
def test_task_without_usable_annotation_is_skipped(annotations, words):
    examples, reasons = run([task(annotations)])
    assert examples == []
    assert len(reasons) == 1 and reasons[0].task_id == 7 and reasons[0].scope == "task"
    assert words in reasons[0].reason


# --- task data ----------------------------------------------------------------------------------


@pytest.mark.parametrize("data, words", [
    ({"other": "马云"}, "no 'text'"),
    ({"text": None}, "NoneType"),
    ({"text": ["马云"]}, "list"),
    ({"text": 12}, "int"),
    ({"text": ""}, "empty"),
    (None, "no data"),
    ("马云", "no data"),
])
def test_task_with_bad_data_is_skipped(data, words):
    bad = {"id": 3, "data": data, "annotations": [annotation([])]}
    good = task([annotation([])], tid=4)
    examples, reasons = run([bad, good])
    assert [tid for tid, _ in examples] == [4]
    assert len(reasons) == 1 and reasons[0].task_id == 3 and words in reasons[0].reason


# --- regions ------------------------------------------------------------------------------------


def test_regions_of_other_controls_and_types_are_ignored_silently():
    result = [
        region(0, 2, "人名"),
        region(3, 5, "地名", from_name="other"),
        region(3, 5, "地名", to_name="elsewhere"),
        {"from_name": "sentiment", "to_name": "text", "type": "choices", "value": {"choices": ["pos"]}},
        {"from_id": "a", "to_id": "b", "type": "relation", "direction": "right"},
    ]
    examples, reasons = run([task([annotation(result)])])
    assert examples[0][1].spans == (Span(0, 2, "PER"),) and reasons == []


def test_only_other_controls_means_no_entities():
    result = [{"from_name": "sentiment", "to_name": "text", "type": "choices", "value": {"choices": ["pos"]}}]
    examples, reasons = run([task([annotation(result)])])
    assert examples[0][1].spans == () and reasons == []


@pytest.mark.parametrize("labels, words", [(["MISC"], "unknown label"), (["未映射"], "unknown label"),
                                           ([], "labels"), ("人名", "labels"), ([None], "labels"),
                                           (["人名", "地名"], "different entity types")])
def test_regions_with_unusable_labels_are_dropped(labels, words):
    bad = region(3, 5, "x", rid="r2")
    bad["value"]["labels"] = labels
    examples, reasons = run([task([annotation([region(0, 2, "人名"), bad], aid=11)])])
    assert examples[0][1].spans == (Span(0, 2, "PER"),)
    assert [(r.task_id, r.annotation_id, r.scope, r.region_id) for r in reasons] == [(7, 11, "region", "r2")]
    assert words in reasons[0].reason


def test_several_labels_of_one_type_are_accepted():
    assert spans_of([task([annotation([region(0, 2, ["人名", "PER", "MISC"])])])]) == (Span(0, 2, "PER"),)


@pytest.mark.parametrize("start, end, text, words", [
    (10, 14, "阿里巴巴", "outside"),
    (-1, 2, "马云", "outside"),
    (3, 3, "", "empty span"),
    (5, 3, "杭州", "empty span"),
    ("3", "5", "杭州", "non-integer"),
    (None, 5, "杭州", "non-integer"),
    (3.5, 5, "杭州", "non-integer"),
    (True, 2, "云", "non-integer"),
    (3, 5, "上海", "differs"),
    (3, 5, 35, "not a string"),
])
def test_bad_spans_are_dropped(start, end, text, words):
    bad = region(0, 2, "地名", rid="bad")
    bad["value"].update(start=start, end=end, text=text)
    examples, reasons = run([task([annotation([region(8, 12, "机构名"), bad])])])
    assert examples[0][1].spans == (Span(8, 12, "ORG"),)
    assert len(reasons) == 1 and words in reasons[0].reason and reasons[0].region_id == "bad"


def test_integral_float_offsets_are_accepted():
    assert spans_of([task([annotation([region(3.0, 5.0, "地名", "杭州")])])]) == (Span(3, 5, "LOC"),)


def test_utf16_offsets_after_emoji_are_repaired():
    text = "马云😀在杭州"
    # a client that counted UTF-16 units saw 杭州 at 5..7; the code points are 4..6
    result = [region(0, 2, "人名", src=text), region(5, 7, "地名", "杭州", src=text)]
    examples, reasons = run([task([annotation(result)], text=text)])
    assert examples[0][1] == Example(text, (Span(0, 2, "PER"), Span(4, 6, "LOC")))
    assert [r.scope for r in reasons] == ["note"] and "UTF-16" in reasons[0].reason


def test_utf16_offsets_after_cjk_extension_b_are_repaired():
    text = "𠀀𠀁张三去了北京"  # two astral characters before the spans
    result = [{"from_name": "label", "to_name": "text", "type": "labels",
               "value": {"start": 4, "end": 6, "text": "张三", "labels": ["人名"]}},
              {"from_name": "label", "to_name": "text", "type": "labels",
               "value": {"start": 8, "end": 10, "text": "北京", "labels": ["地名"]}}]
    assert spans_of([task([annotation(result)], text=text)]) == (Span(2, 4, "PER"), Span(6, 8, "LOC"))


def test_code_point_offsets_with_emoji_are_kept_as_they_are():
    text = "马云😀在杭州"
    examples, reasons = run([task([annotation([region(4, 6, "地名", src=text)])], text=text)])
    assert examples[0][1].spans == (Span(4, 6, "LOC"),) and reasons == []


def test_unrepairable_mismatch_is_dropped():
    text = "马云😀在杭州"
    examples, reasons = run([task([annotation([region(0, 2, "人名", src=text),
                                               region(5, 7, "地名", "上海", src=text),
                                               region(4, 6, "地名", "上海", src=text)])], text=text)])
    assert examples[0][1].spans == (Span(0, 2, "PER"),)
    assert [r.scope for r in reasons] == ["region", "region"]
    assert "outside" in reasons[0].reason and "differs" in reasons[1].reason


def test_overlaps_keep_the_longer_then_the_earlier_span():
    text = "北京大学在北京市海淀区"
    result = [region(0, 2, "地名", src=text, rid="short"),       # inside 北京大学
              region(0, 4, "机构名", src=text, rid="long"),
              region(5, 8, "地名", src=text, rid="early"),       # 北京市
              region(7, 10, "地名", src=text, rid="late")]       # 市海淀: same length, later
    examples, reasons = run([task([annotation(result)], text=text)])
    assert examples[0][1].spans == (Span(0, 4, "ORG"), Span(5, 8, "LOC"))
    assert sorted(r.region_id for r in reasons) == ["late", "short"]
    assert all(r.scope == "region" and "overlaps" in r.reason for r in reasons)


def test_a_dropped_region_leaves_its_place_unsure_not_taught_as_no_entity():
    text = "北京大学的张伟在上海"
    result = [region(0, 4, "机构名", src=text),
              region(2, 6, "地名", src=text, rid="overlap"),              # 大学的张 crosses the kept 北京大学
              region(5, 7, ["人名", "地名"], src=text, rid="two types"),  # 张伟: which type?
              region(0, 2, "地名", "上海", src=text, rid="stale")]       # offsets stale, 上海 is at 8
    examples, reasons = run([task([annotation(result)], text=text)])
    assert examples[0][1].spans == (Span(0, 4, "ORG"),)
    assert examples[0][1].unsure == ((0, 2), (2, 6), (5, 7), (8, 10))
    assert sorted(r.region_id for r in reasons) == ["overlap", "stale", "two types"]


def test_a_region_at_its_right_place_is_unsure_there_only():
    text = "张伟说张伟"
    examples, _ = run([task([annotation([region(0, 2, ["人名", "地名"], src=text)])], text=text)])
    assert examples == []  # its only region was dropped: the task is not used
    examples, _ = run([task([annotation([region(0, 2, ["人名", "地名"], src=text), region(2, 3, "人名", src=text)])],
                            text=text)])
    assert examples[0][1].unsure == ((0, 2),)  # not the other 张伟, which the annotator left unlabelled


def test_a_label_not_in_the_config_leaves_no_unsure_place():
    examples, _ = run([task([annotation([region(0, 2, "人名"), region(3, 5, "MISC")])])])
    assert examples[0][1] == Example("马云在杭州创办了阿里巴巴", (Span(0, 2, "PER"),))


def test_same_span_with_two_labels_keeps_the_first():
    examples, reasons = run([task([annotation([region(0, 2, "人名"), region(0, 2, "地名", rid="second")])])])
    assert examples[0][1].spans == (Span(0, 2, "PER"),)
    assert [r.region_id for r in reasons] == ["second"]


def test_exact_duplicates_collapse_silently():
    result = [region(0, 2, "人名", rid="a"), region(0, 2, "人名", rid="b"), region(0, 2, "PER", rid="c")]
    examples, reasons = run([task([annotation(result)])])
    assert examples[0][1].spans == (Span(0, 2, "PER"),) and reasons == []


def test_annotation_whose_every_region_was_dropped_is_skipped():
    result = [region(0, 2, "MISC"), region(30, 32, "人名", "马云")]
    examples, reasons = run([task([annotation(result, aid=5)])])
    assert examples == []
    assert [r.scope for r in reasons] == ["region", "region", "task"]
    assert reasons[-1].annotation_id == 5 and "every entity region" in reasons[-1].reason


# --- malformed input never raises ---------------------------------------------------------------


def _malformed_exports():
    good = region(0, 2, "人名")
    yield None
    yield "tasks"
    yield {"id": 1}
    yield [None, "task", 3, [], {}]
    yield [{"id": "7", "data": {"text": "马云"}, "annotations": [annotation([])]}]
    yield [{"id": 1, "data": {"text": "马云"}, "annotations": {"id": 1}}]
    yield [{"id": 1, "data": {"text": "马云"}, "annotations": ["x", None, 5]}]
    yield [task([annotation(None)])]
    yield [task([annotation("[]")])]
    yield [task([annotation([None, "region", 3, [good]])])]
    yield [task([annotation([{"type": "labels", "from_name": "label", "to_name": "text", "value": None}])])]
    yield [task([annotation([{"type": "labels", "from_name": "label", "to_name": "text", "value": "x"}])])]
    yield [task([annotation([{"type": "labels", "from_name": "label", "to_name": "text"}])])]
    yield [task([annotation([{"type": ["labels"], "from_name": {}, "to_name": None}])])]
    yield [task([annotation([{"type": "labels", "from_name": {}, "to_name": None}])])]
    yield [task([{"id": None, "result": [good], "updated_at": 5, "created_at": "yesterday",
                  "was_cancelled": None}, {"id": "b", "result": [good], "updated_at": None}])]
    yield [task([annotation([good], updated="2024-13-45T99:00:00")])]
    yield [task([annotation([dict(good, id=[1])])])]


@pytest.mark.parametrize("export", list(_malformed_exports()))
def test_malformed_exports_never_raise(export):
    examples, reasons = run(export)
    for tid, example in examples:
        assert isinstance(tid, int) and isinstance(example, Example)
    assert examples or reasons
    assert not any("unexpected error" in r.reason for r in reasons)


def test_malformed_mixed_with_good_keeps_the_good():
    export = [None, {"id": 2, "data": {"text": 5}}, task([annotation([region(0, 2, "人名")])], tid=3)]
    examples, reasons = run(export)
    assert [tid for tid, _ in examples] == [3] and len(reasons) == 2


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 20) | st.floats(allow_nan=True) | st.sampled_from(
        ["", "text", "label", "labels", "人名", "马云", "2024-05-01T10:00:00Z"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["id", "data", "text", "annotations", "result", "value", "start", "end",
                         "labels", "from_name", "to_name", "type", "was_cancelled", "updated_at"]),
        inner, max_size=6),
    max_leaves=25,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(json_values, max_size=3))
def test_fuzzed_exports_never_raise(export):
    examples, reasons = examples_from_export(export, SCHEMA)
    assert not any("unexpected error" in r.reason for r in reasons)
    for tid, example in examples:
        text = example.text
        for span in example.spans:
            assert 0 <= span.start < span.end <= len(text) and span.label in ("PER", "LOC", "ORG")


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet="马云😀在杭州𠀀 ab", min_size=1, max_size=12), st.data())
def test_fuzzed_regions_give_valid_spans(text, data):
    result = [{"from_name": "label", "to_name": "text", "type": "labels",
               "value": {"start": data.draw(st.integers(-2, 16)), "end": data.draw(st.integers(-2, 16)),
                         "text": data.draw(st.text(alphabet="马云😀杭州", max_size=3)),
                         "labels": [data.draw(st.sampled_from(["人名", "地名", "MISC"]))]}}
              for _ in range(data.draw(st.integers(0, 4)))]
    examples, _ = examples_from_export([task([annotation(result)], text=text)], SCHEMA)
    for _, example in examples:
        previous_end = 0
        for span in example.spans:
            assert previous_end <= span.start < span.end <= len(text)
            previous_end = span.end


def test_skips_are_logged_at_info(caplog):
    with caplog.at_level(logging.INFO, logger="raner_backend.training.annotations"):
        run([task([], tid=42), task([annotation([region(0, 2, "MISC"), region(3, 5, "地名")])], tid=43)])
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any("42" in m and "no annotations" in m for m in messages)
    assert any("43" in m and "unknown label" in m for m in messages)


@pytest.mark.parametrize("bad", [{"type": ["labels"], "from_name": "label", "to_name": "text"},
                                 {"type": "labels", "from_name": {}, "to_name": "text"}])
def test_regions_with_malformed_type_or_names_are_dropped(bad):
    examples, reasons = run([task([annotation([region(0, 2, "人名"), dict(bad, id="m")])])])
    assert examples[0][1].spans == (Span(0, 2, "PER"),)
    assert [(r.scope, r.region_id) for r in reasons] == [("region", "m")]


def test_an_unexpected_error_skips_only_that_task():
    class Hostile(dict):
        def get(self, *args):
            raise RuntimeError("boom")

    examples, reasons = run([Hostile(id=1), task([annotation([])], tid=2)])
    assert [tid for tid, _ in examples] == [2]
    assert len(reasons) == 1 and "boom" in reasons[0].reason


def test_a_reviewers_ground_truth_decides_over_a_later_annotation():
    truth = annotation([region(0, 2, "人名"), region(3, 5, "地名")], aid=61, updated="2024-05-01T10:00:00.000000Z")
    truth["ground_truth"] = True
    later = annotation([region(0, 2, "人名")], aid=62, updated="2024-05-02T10:00:00.000000Z")
    assert spans_of([task([truth, later])]) == (Span(0, 2, "PER"), Span(3, 5, "LOC"))
    truth["ground_truth"] = False
    assert spans_of([task([truth, later])]) == (Span(0, 2, "PER"),)
