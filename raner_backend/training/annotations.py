"""Label Studio's JSON export -> training examples (text + spans of model entity types).

The export is untrusted input: nothing here raises on malformed records. What cannot be used is
left out and reported as a :class:`SkipReason` (and logged at INFO).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from ..labeling import LabelSchema
from ..model.data import Example
from ..model.tags import Span

log = logging.getLogger(__name__)

_EPOCH = datetime.min.replace(tzinfo=timezone.utc)


@dataclass
class SkipReason:
    """Something of the export that was not used (or, for ``scope="note"``, was repaired).

    ``scope``: ``"task"`` (the task gave no example), ``"annotation"`` (an unusable annotation
    entry that did not decide the task), ``"region"`` (a region dropped; the task may still give
    an example), ``"note"`` (a region kept after repairing its offsets).
    """

    task_id: Any
    annotation_id: Any
    reason: str
    scope: str = "task"
    region_id: Any = None


def examples_from_export(
    tasks: list, schema: LabelSchema
) -> tuple[list[tuple[int, Example]], list[SkipReason]]:
    """(task id, :class:`Example`) for each usable task of a Label Studio JSON export, and the
    reasons for everything left out.

    A task's non-cancelled annotation marked ground truth decides it, else its latest (by
    ``updated_at``, then ``created_at``, then ``id``).
    """
    examples: list[tuple[int, Example]] = []
    reasons: list[SkipReason] = []

    def skip(task_id, annotation_id, reason, scope="task", region=None):
        entry = SkipReason(task_id, annotation_id, reason, scope, region)
        reasons.append(entry)
        where = f"task {task_id!r}" + (f" annotation {annotation_id!r}" if annotation_id is not None else "")
        if region is not None:
            where += f" region {region!r}"
        log.info("%s %s: %s", "repaired" if scope == "note" else "skipped", where, reason)

    if not isinstance(tasks, (list, tuple)):
        skip(None, None, f"the export is a {type(tasks).__name__}, not a list of tasks")
        return examples, reasons

    for position, task in enumerate(tasks):
        try:
            example = _task_example(task, position, schema, skip)
        except Exception as exc:  # a safety net: a malformed record must never stop an export
            try:
                task_id = task.get("id") if isinstance(task, dict) else None
            except Exception:
                task_id = None
            skip(task_id, None, f"unexpected error reading the task: {type(exc).__name__}: {exc}")
            continue
        if example is not None:
            examples.append(example)
    return examples, reasons


def _task_example(task, position, schema: LabelSchema, skip) -> tuple[int, Example] | None:
    if not isinstance(task, dict):
        skip(None, None, f"record #{position} is a {type(task).__name__}, not a task object")
        return None
    task_id = task.get("id")
    if not _is_int(task_id):
        skip(task_id, None, f"record #{position} has no integer task id")
        return None

    data = task.get("data")
    if not isinstance(data, dict):
        skip(task_id, None, "the task has no data object")
        return None
    if schema.data_key not in data:
        skip(task_id, None, f"the task data has no {schema.data_key!r} field")
        return None
    text = data[schema.data_key]
    if not isinstance(text, str):
        skip(task_id, None, f"the task data field {schema.data_key!r} is a "
                            f"{type(text).__name__}, not a string")
        return None
    if not text:
        skip(task_id, None, f"the task data field {schema.data_key!r} is empty")
        return None

    annotations = task.get("annotations")
    if annotations is None:
        annotations = []
    if not isinstance(annotations, list):
        skip(task_id, None, f"'annotations' is a {type(annotations).__name__}, not a list")
        return None
    candidates = []
    cancelled = 0
    for index, annotation in enumerate(annotations):
        if not isinstance(annotation, dict):
            skip(task_id, None, f"annotation #{index} is a {type(annotation).__name__}, not an "
                                "object; ignored", scope="annotation")
            continue
        if _truthy(annotation.get("was_cancelled")):
            cancelled += 1
            continue
        candidates.append(annotation)
    if not candidates:
        skip(task_id, None, "all annotations are cancelled (skipped)" if cancelled
             else "the task has no usable annotation" if annotations
             else "the task has no annotations")
        return None

    annotation = max(candidates, key=_precedence)
    annotation_id = annotation.get("id")
    result = annotation.get("result")
    if not isinstance(result, list):
        skip(task_id, annotation_id, f"the latest annotation's result is a "
                                     f"{type(result).__name__}, not a list")
        return None

    found = _spans(result, text, schema, lambda reason, scope="region", region=None:
                   skip(task_id, annotation_id, reason, scope, region))
    if found is None:
        skip(task_id, annotation_id, "every entity region of the latest annotation was dropped; "
                                     "the task is not used (it is not taken as 'no entities')")
        return None
    spans, unsure = found
    return task_id, Example(text=text, spans=tuple(spans), unsure=tuple(sorted(set(unsure))))


def _spans(result: list, text: str, schema: LabelSchema, drop) -> tuple[list[Span], list[tuple[int, int]]] | None:
    """The spans of ``result`` and the character ranges where a dropped region may lie (not to be
    taught as "no entity"); ``None`` if it had entity regions and all of them were dropped."""
    candidates: list[tuple[Span, Any]] = []
    unsure: list[tuple[int, int]] = []
    seen_regions = 0
    for index, region in enumerate(result):
        if not isinstance(region, dict):
            seen_regions += 1
            drop(f"result item #{index} is a {type(region).__name__}, not an object", region=f"#{index}")
            continue
        rid = region.get("id")
        if not isinstance(rid, (str, int)) or isinstance(rid, bool):
            rid = f"#{index}"
        kind, names = region.get("type"), (region.get("from_name"), region.get("to_name"))
        if not isinstance(kind, str):
            seen_regions += 1
            drop(f"the region type {kind!r} is not a string", region=rid)
            continue
        if kind != "labels":
            continue  # relations, choices, textareas...: not ours
        if not all(isinstance(name, str) for name in names):
            seen_regions += 1
            drop(f"the region's from_name/to_name {names!r} are not strings", region=rid)
            continue
        if names != (schema.from_name, schema.to_name):
            continue  # another control of the config
        seen_regions += 1
        span = _region_span(region, text, schema, lambda reason, scope="region": drop(reason, scope, rid),
                            unsure)
        if span is not None:
            candidates.append((span, rid))

    if seen_regions and not candidates:
        return None

    # exact duplicates collapse silently (first occurrence kept)
    unique: dict[Span, Any] = {}
    for span, rid in candidates:
        unique.setdefault(span, rid)
    ordered = list(unique.items())
    # overlaps: the longer span wins, then the earlier one, then the one listed first
    ranked = sorted(range(len(ordered)),
                    key=lambda i: (-(ordered[i][0].end - ordered[i][0].start), ordered[i][0].start, i))
    kept: list[Span] = []
    for i in ranked:
        span, rid = ordered[i]
        clash = next((k for k in kept if span.start < k.end and k.start < span.end), None)
        if clash is not None:
            drop(f"{span.label} [{span.start}, {span.end}) {text[span.start:span.end]!r} overlaps "
                 f"the kept {clash.label} [{clash.start}, {clash.end}) "
                 f"{text[clash.start:clash.end]!r}; dropped", region=rid)
            unsure.append((span.start, span.end))
            continue
        kept.append(span)
    return sorted(kept, key=lambda s: (s.start, s.end)), unsure


def _region_span(region: dict, text: str, schema: LabelSchema, drop, unsure: list[tuple[int, int]]) -> Span | None:
    """The region's span, or None (dropped with its reason). A region that marks an entity of the
    config's types but cannot be used adds the places it may lie to ``unsure``."""
    value = region.get("value")
    if not isinstance(value, dict):
        drop("the region has no value object")
        return None

    labels = value.get("labels")
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
        drop(f"the region's labels {labels!r} are not a non-empty list of strings")
        return None
    kinds = {schema.to_model[x] for x in labels if x in schema.to_model}
    if not kinds:
        drop(f"unknown label(s) {', '.join(map(repr, labels))}: not a config label with a model "
             f"entity type (known: {', '.join(map(repr, schema.to_model)) or 'none'})")
        return None

    def drop_entity(reason: str) -> None:  # a region of the config's types: its place stays unsure
        drop(reason)
        unsure.extend(_places(value, text))

    if len(kinds) > 1:
        drop_entity(f"the labels {', '.join(map(repr, labels))} map to different entity types "
                    f"({', '.join(sorted(kinds))})")
        return None
    kind = kinds.pop()

    start, end = _as_offset(value.get("start")), _as_offset(value.get("end"))
    if start is None or end is None:
        drop_entity(f"non-integer offsets start={value.get('start')!r} end={value.get('end')!r}")
        return None
    if start >= end:
        drop_entity(f"empty span: start={start} >= end={end}")
        return None

    expected = value.get("text", None)
    if expected is not None and not isinstance(expected, str):
        drop_entity(f"the region text is a {type(expected).__name__}, not a string")
        return None

    in_range = 0 <= start and end <= len(text)
    if in_range and (expected is None or text[start:end] == expected):
        return Span(start, end, kind)

    if expected:
        # Offsets counted in UTF-16 units (astral characters such as emoji or CJK Ext-B count
        # twice) instead of code points: convert and check against the region text.
        fixed = _utf16_to_code_points(text, start, end)
        if fixed is not None and text[fixed[0]:fixed[1]] == expected:
            drop(f"UTF-16 offsets [{start}, {end}) converted to code points "
                 f"[{fixed[0]}, {fixed[1]}) for {expected!r}", scope="note")
            return Span(fixed[0], fixed[1], kind)

    if not in_range:
        drop_entity(f"span [{start}, {end}) is outside the text (length {len(text)})")
    else:
        drop_entity(f"the region text {expected!r} differs from the task text at [{start}, {end}) "
                    f"{text[start:end]!r}")
    return None


def _places(value: dict, text: str) -> list[tuple[int, int]]:
    """Where a region may lie: at its offsets when they hold its text; else there (if they fit the
    text) and at every occurrence of its text (offsets go stale when a task's text is edited after
    it was annotated)."""
    places = []
    start, end = _as_offset(value.get("start")), _as_offset(value.get("end"))
    expected = value.get("text")
    if start is not None and end is not None and 0 <= start < end <= len(text):
        places.append((start, end))
        if not isinstance(expected, str) or text[start:end] == expected:
            return places
    if isinstance(expected, str) and expected:
        at = text.find(expected)
        while at >= 0:
            places.append((at, at + len(expected)))
            at = text.find(expected, at + 1)
    return places


def _utf16_to_code_points(text: str, start: int, end: int) -> tuple[int, int] | None:
    """Code-point offsets of UTF-16 offsets ``start``/``end``; None if either is not on a
    character boundary of ``text``."""
    if start < 0:
        return None
    found: dict[int, int] = {}
    units = 0
    for index, char in enumerate(text):
        if units == start:
            found[start] = index
        if units == end:
            found[end] = index
            break
        if units > end:
            break
        units += 2 if ord(char) > 0xFFFF else 1
    else:
        if units == end:
            found[end] = len(text)
    if start in found and end in found:
        return found[start], found[end]
    return None


def _as_offset(value) -> int | None:
    if _is_int(value):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _truthy(value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes")
    return bool(value) if isinstance(value, (bool, int, float)) else False


def _timestamp(value) -> datetime:
    if not isinstance(value, str) or not value:
        return _EPOCH
    try:
        stamp = datetime.fromisoformat(value.strip())
    except ValueError:
        return _EPOCH
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=timezone.utc)
    return stamp


def _precedence(annotation: dict):
    """A reviewer's ground truth first, then the latest."""
    return (_truthy(annotation.get("ground_truth")), *_recency(annotation))


def _recency(annotation: dict):
    created = _timestamp(annotation.get("created_at"))
    updated = _timestamp(annotation.get("updated_at"))
    if updated == _EPOCH:
        updated = created
    ident = annotation.get("id")
    return (updated, created, ident if _is_int(ident) else -1)
