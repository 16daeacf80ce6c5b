"""The catalogue of bad inputs: each gets a clear 4xx with a message, or is served correctly (2xx),
never a 5xx. Outcomes are written to ``bad_inputs.json`` in a temporary folder, or in
``$RANER_RESULTS_DIR`` when set (``benchmarks/recorded_tests.py`` sets it to benchmarks/results)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from raner_backend.labeling import DEFAULT_LABEL_CONFIG

RESULTS_NAME = "bad_inputs.json"
LS_CONFIG_NO_LABELS = '<View><Text name="text" value="$text"/></View>'
LS_CONFIG_NO_TEXT = '<View><Labels name="l" toName="t"><Label value="PER"/></Labels></View>'
TWO_LABELS = ('<View><Labels name="a" toName="t"><Label value="PER"/></Labels><Labels name="b" toName="t">'
              '<Label value="LOC"/></Labels><Text name="t" value="$text"/></View>')
NO_LABELS = '<View><Labels name="l" toName="t"></Labels><Text name="t" value="$text"/></View>'


def task(text, key="text"):
    return {"tasks": [{"id": 1, "data": {key: text}}], "label_config": DEFAULT_LABEL_CONFIG}


# (name, route, body (bytes or JSON), expected status class: "4xx" or "2xx")
CASES = [
    ("body not JSON", "/predict", b"tasks please", "4xx"),
    ("JSON not an object", "/predict", b"[1, 2, 3]", "4xx"),
    ("empty body", "/predict", b"", "4xx"),
    ("tasks missing", "/predict", {"project": "1.1"}, "4xx"),
    ("tasks not a list", "/predict", {"tasks": {"id": 1}}, "4xx"),
    ("task without data", "/predict", {"tasks": [{"id": 1}]}, "4xx"),
    ("task not an object", "/predict", {"tasks": ["马云"]}, "4xx"),
    ("data key missing", "/predict", task("马云", key="content"), "4xx"),
    ("data value not a string", "/predict", {"tasks": [{"id": 1, "data": {"text": ["马云"]}}]}, "4xx"),
    ("empty string", "/predict", task(""), "2xx"),
    ("whitespace only", "/predict", task(" \n\t　"), "2xx"),
    ("1 MB of text", "/ner", {"text": "马云在杭州。" * 10}, "2xx"),
    ("control characters", "/predict", task("马云\x00\x07在\x1b杭州"), "2xx"),
    ("lone surrogate", "/ner", b'{"text": "\\ud800\\u9a6c\\u4e91"}', "2xx"),
    ("emoji and CJK Ext-B", "/predict", task("马云😀在𠀀杭州"), "2xx"),
    ("mixed scripts", "/predict", task("Apple CEO Tim Cook在北京会见了Иван和محمد"), "2xx"),
    ("label config without Labels", "/setup", {"project": "1.1", "schema": LS_CONFIG_NO_LABELS}, "4xx"),
    ("label config without Text", "/setup", {"project": "1.1", "schema": LS_CONFIG_NO_TEXT}, "4xx"),
    ("a Labels control without labels", "/setup", {"project": "1.1", "schema": NO_LABELS}, "4xx"),
    ("two Labels tags", "/setup", {"project": "1.1", "schema": TWO_LABELS}, "4xx"),
    ("broken XML at /setup", "/setup", {"project": "1.1", "schema": "<View><Labels"}, "4xx"),
    ("schema missing at /setup", "/setup", {"project": "1.1"}, "4xx"),
    ("config without labels in /predict", "/predict", dict(task("马云"), label_config=NO_LABELS), "4xx"),
    ("webhook unknown action", "/webhook", {"action": "SOMETHING_NEW", "project": {"id": 1}}, "2xx"),
    ("webhook action missing", "/webhook", {"project": {"id": 1}}, "4xx"),
    ("webhook action not a string", "/webhook", {"action": 5, "project": {"id": 1}}, "4xx"),
    ("webhook without annotation", "/webhook", {"action": "ANNOTATION_CREATED", "project": {"id": 1}}, "2xx"),
    ("webhook non-numeric project id", "/webhook", {"action": "ANNOTATION_CREATED", "project": {"id": "x1"}}, "2xx"),
    ("webhook negative project id", "/webhook", {"action": "ANNOTATIONS_DELETED", "project": -3}, "2xx"),
    ("webhook body not an object", "/webhook", b'"START_TRAINING"', "4xx"),
    ("ner texts not strings", "/ner", {"texts": [1, 2]}, "4xx"),
    ("ner neither text nor texts", "/ner", {"sentence": "马云"}, "4xx"),
    ("rollback path escape", "/rollback", {"version": "../../etc/passwd"}, "4xx"),
    ("rollback unknown version", "/rollback", {"version": "raner-99-deadbeef"}, "4xx"),
]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    found: list[dict] = []
    yield found
    folder = os.environ.get("RANER_RESULTS_DIR")
    results = (Path(folder) if folder else tmp_path_factory.mktemp("results")) / RESULTS_NAME
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps({"cases": len(found), "served_2xx": sum(o["status"] < 300 for o in found),
                                   "refused_4xx": sum(400 <= o["status"] < 500 for o in found),
                                   "server_errors": sum(o["status"] >= 500 for o in found), "outcomes": found},
                                  indent=1, ensure_ascii=False) + "\n")


@pytest.mark.parametrize("name,route,body,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input(client, outcomes, name, route, body, expected):
    if name == "1 MB of text":
        body = {"text": "马云在杭州创办了阿里巴巴。" * 27000}  # about 1 MB of UTF-8
    if isinstance(body, bytes):
        response = client.post(route, data=body, content_type="application/json")
    else:
        response = client.post(route, json=body)
    payload = response.get_json(silent=True) or {}
    outcomes.append({"case": name, "route": route, "status": response.status_code,
                     "message": payload.get("error", "")[:200]})
    assert response.status_code < 500
    if expected == "4xx":
        assert 400 <= response.status_code < 500 and payload.get("error"), payload
    else:
        assert response.status_code < 300, payload
