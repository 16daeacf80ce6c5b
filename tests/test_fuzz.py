"""Whatever arrives, /predict, /ner, /setup and /webhook answer 2xx or 4xx with a message, never 5xx."""
from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60) | st.sampled_from(
    ["", " ", "\x00\x01", "马云😀在杭州", "𠀀𠀁阿里巴巴", "e\u0301", "华为Mate60"])
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
                    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
                    max_leaves=12)
TASK = st.fixed_dictionaries({"id": st.integers(), "data": st.dictionaries(st.sampled_from(["text", "other"]),
                                                                         JSON | TEXT, max_size=2)}) | JSON
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _check(response):
    assert response.status_code < 500, response.data
    if response.status_code >= 400:
        assert json.loads(response.data)["error"]


@FUZZ
@given(body=JSON | st.fixed_dictionaries({"tasks": st.lists(TASK, max_size=4)}))
def test_predict_never_fails(client, body):
    _check(client.post("/predict", json=body))


@FUZZ
@given(body=JSON | st.fixed_dictionaries({"texts": st.lists(TEXT, max_size=4)}) | st.fixed_dictionaries({"text": TEXT}))
def test_ner_never_fails(client, body):
    _check(client.post("/ner", json=body))


@FUZZ
@given(body=JSON | st.fixed_dictionaries({"action": TEXT | JSON, "project": JSON, "annotation": JSON}))
def test_webhook_never_fails(client, body):
    _check(client.post("/webhook", json=body))


@FUZZ
@given(body=JSON | st.fixed_dictionaries({"project": JSON, "schema": TEXT | JSON}))
def test_setup_never_fails(client, body):
    _check(client.post("/setup", json=body))


def test_raw_bytes_and_oversized_bodies(client, tiny_backend):
    for raw in (b"\xff\xfe\x00", b"{", b"null", b"[]", b'"x"'):
        _check(client.post("/predict", data=raw, content_type="application/json"))
    huge = b'{"text": "' + b"a" * (tiny_backend.settings.max_request_bytes + 10) + b'"}'
    r = client.post("/ner", data=huge, content_type="application/json")
    assert r.status_code == 413


def test_lone_surrogates_and_control_characters(client):
    for raw in (b'{"text": "\\ud800\\u9a6c\\u4e91"}', b'{"texts": ["\\udfff", "\\u0000\\u0007\\u001b"]}'):
        r = client.post("/ner", data=raw, content_type="application/json")
        _check(r)
    r = client.post("/predict", data=b'{"tasks": [{"id": 1, "data": {"text": "\\ud83d\\u9a6c\\u4e91"}}]}',
                    content_type="application/json")
    _check(r)


def test_an_entity_next_to_a_lone_surrogate_keeps_its_offsets(client):
    r = client.post("/ner", data=b'{"text": "\\ud800\\u9a6c\\u4e91\\u5728\\u676d\\u5dde"}', content_type="application/json")
    assert r.status_code == 200
    text = "\ud800马云在杭州"
    for e in r.json["results"][0]["entities"]:
        assert text[e["start"] : e["end"]] == e["text"]
