"""The HTTP surface, with Flask's test client, payloads shaped as Label Studio 1.23 sends them."""
from __future__ import annotations

import base64
import time

from raner_backend.labeling import DEFAULT_LABEL_CONFIG

CHINESE_CONFIG = """<View><Labels name="ner" toName="doc"><Label value="人名"/><Label value="地名"/>
<Label value="机构名"/></Labels><Text name="doc" value="$content"/></View>"""


def predict_body(texts, key="text", config=DEFAULT_LABEL_CONFIG):
    return {"tasks": [{"id": i + 1, "data": {key: t}} for i, t in enumerate(texts)], "project": "1.1712345678",
            "label_config": config, "params": {"login": None, "password": None, "context": None}}


def test_health_is_cheap_and_reports_the_version(client, tiny_backend):
    for path in ("/health", "/"):
        r = client.get(path)
        assert r.status_code == 200
        assert r.json["status"] == "UP" and r.json["model_version"] == tiny_backend.models.version()
    assert tiny_backend.models.version().startswith("raner-1-")


def test_setup_returns_the_model_version(client, tiny_backend):
    r = client.post("/setup", json={"project": "3.1712345678", "schema": DEFAULT_LABEL_CONFIG,
                                    "hostname": "http://evil.example", "access_token": "x", "extra_params": None})
    assert r.status_code == 200 and r.json == {"model_version": tiny_backend.models.version()}


def test_setup_rejects_configs_it_cannot_serve(client):
    broken = client.post("/setup", json={"project": "1.1", "schema": "<View><Labels"})
    assert broken.status_code == 400 and "error" in broken.json
    no_labels = client.post("/setup", json={"project": "1.1", "schema": """<View><Labels name="l" toName="t">
        </Labels><Text name="t" value="$text"/></View>"""})
    assert no_labels.status_code == 400 and "no <Label" in no_labels.json["error"]


def test_setup_accepts_labels_the_model_has_not_learned_and_predicts_only_known_ones(client, tiny_backend):
    config = """<View><Labels name="l" toName="t"><Label value="人物"/><Label value="产品"/></Labels>
        <Text name="t" value="$text"/></View>"""
    r = client.post("/setup", json={"project": "4.1", "schema": config})
    assert r.status_code == 200 and r.json == {"model_version": tiny_backend.models.version()}
    r = client.post("/predict", json={"tasks": [{"id": 1, "data": {"text": "马云在杭州创办了阿里巴巴。"}}],
                                      "project": "4.1", "label_config": config})
    labels = {region["value"]["labels"][0] for region in r.json["results"][0]["result"]}
    assert r.status_code == 200 and labels == {"人物"}


def test_predict_gives_one_item_per_task_in_order(client, tiny_backend):
    texts = ["马云在杭州创办了阿里巴巴。", "", "今天天气很好。", "马云😀在杭州"]
    r = client.post("/predict", json=predict_body(texts))
    assert r.status_code == 200
    results = r.json["results"]
    assert len(results) == len(texts)
    for text, item in zip(texts, results):
        assert set(item) == {"result", "score", "model_version"}
        assert item["model_version"] == tiny_backend.models.version()
        assert 0.0 <= item["score"] <= 1.0
        for region in item["result"]:
            v = region["value"]
            assert region["from_name"] == "label" and region["to_name"] == "text" and region["type"] == "labels"
            assert text[v["start"] : v["end"]] == v["text"] and v["labels"][0] in {"PER", "LOC", "ORG"}
            assert 0.0 <= region["score"] <= 1.0
    assert results[1]["result"] == []
    first = {(r["value"]["text"], r["value"]["labels"][0]) for r in results[0]["result"]}
    assert ("马云", "PER") in first and ("杭州", "LOC") in first


def test_predict_logs_one_line_per_request_not_per_task(client, caplog):
    texts = ["马云在杭州创办了阿里巴巴。"] * 5
    with caplog.at_level("INFO", logger="raner_backend.server.app"):
        assert client.post("/predict", json=predict_body(texts)).status_code == 200
    lines = [r.getMessage() for r in caplog.records if r.name == "raner_backend.server.app" and r.levelname == "INFO"]
    assert len(lines) == 1 and lines[0].startswith("/predict: 5 tasks of project")


def test_predict_maps_labels_and_data_key_from_the_config(client):
    r = client.post("/predict", json=predict_body(["马云在杭州创办了阿里巴巴。"], key="content",
                                                   config=CHINESE_CONFIG))
    assert r.status_code == 200
    regions = r.json["results"][0]["result"]
    assert regions and all(x["from_name"] == "ner" and x["to_name"] == "doc" for x in regions)
    assert {x["value"]["labels"][0] for x in regions} <= {"人名", "地名", "机构名"}


def test_predict_uses_the_config_remembered_at_setup(client):
    client.post("/setup", json={"project": "9.1712345678", "schema": CHINESE_CONFIG})
    body = predict_body(["马云在杭州"], key="content", config=None)
    body["project"] = "9.1712345678"
    r = client.post("/predict", json=body)
    assert r.status_code == 200 and r.json["results"][0]["result"][0]["from_name"] == "ner"


def test_predict_rejects_bad_tasks_with_a_message(client):
    cases = [b"not json", b"[1, 2]", b'{"tasks": 5}', b'{"no_tasks": []}', b'{"tasks": [{"id": 1}]}',
             b'{"tasks": [{"data": {"text": 12}}]}', b'{"tasks": [{"data": {"other": "x"}}]}']
    for raw in cases:
        r = client.post("/predict", data=raw, content_type="application/json")
        assert r.status_code == 400, raw
        assert r.json["error"], raw


def test_one_unreadable_task_among_many_gets_an_empty_prediction_and_a_logged_reason(client, caplog):
    body = predict_body(["马云在杭州创办了阿里巴巴。", "今天天气很好。", "李鹏在北京会见了日本客人。"])
    body["tasks"][1]["data"] = {"text": 2024}
    body["tasks"].insert(2, "not a task")
    with caplog.at_level("WARNING", logger="raner_backend.service"):
        r = client.post("/predict", json=body)
    assert r.status_code == 200
    results = r.json["results"]
    assert len(results) == 4 and results[1]["result"] == [] and results[2]["result"] == []
    assert results[1]["score"] == 1.0  # sinks to the end of the queue instead of leading it
    alone = client.post("/predict", json=predict_body(["马云在杭州创办了阿里巴巴。", "李鹏在北京会见了日本客人。"]))
    assert [results[0], results[3]] == alone.json["results"]
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "task #1 (id 2): data.text is missing or not a string" in logged and "task #2 has no 'data'" in logged


def test_project_ids_in_every_form_label_studio_sends_and_none_other():
    from raner_backend.service import project_id_of

    for value in (7, "7", "7.1712345678", {"id": 7}, {"id": "7"}, " 7"):
        assert project_id_of(value) == 7, value
    for value in (None, True, 0, -3, "x1", "²", "7²", "٣", {"id": None}, [7], 2**63):
        assert project_id_of(value) is None, value


def test_odd_project_ids_on_open_routes_are_never_a_server_error(client):
    assert client.post("/webhook", json={"action": "ANNOTATION_CREATED", "project": "²"}).status_code == 200
    assert client.get("/versions?project=7²").status_code == 400


def test_ner_endpoint(client):
    one = client.post("/ner", json={"text": "马云在杭州"})
    assert one.status_code == 200
    entities = one.json["results"][0]["entities"]
    assert {"start", "end", "label", "text", "score"} <= set(entities[0])
    many = client.post("/ner", json={"texts": ["马云在杭州", "李明昨天去了北京大学。"]})
    assert len(many.json["results"]) == 2
    assert client.post("/ner", json={"texts": "马云"}).status_code == 400
    assert client.post("/ner", json={}).status_code == 400


def test_webhook_ignores_unknown_events_and_counts_annotations(client, tiny_backend):
    assert client.post("/webhook", json={"action": "PROJECT_UPDATED", "project": {"id": 1}}).status_code == 200
    r = client.post("/webhook", json={"action": "ANNOTATION_CREATED", "project": {"id": 5},
                                      "annotation": {"id": 1, "result": [], "task": 1, "project": 5},
                                      "task": {"id": 1}})
    assert r.status_code == 200 and r.json["status"].startswith("counted")
    assert client.post("/webhook", json={"project": {"id": 1}}).status_code == 400
    assert client.post("/webhook", json={"action": "ANNOTATION_CREATED"}).json["status"] == "ignored"


def test_failed_training_is_visible_and_the_model_keeps_serving(client, tiny_backend):
    """Label Studio unreachable: the job fails, /health says why, predictions go on."""
    version = tiny_backend.models.version()
    r = client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 7, "title": "x"}})
    assert r.status_code == 200
    deadline = time.time() + 30
    while time.time() < deadline:
        status = client.get("/health").json["training"].get("7", {})
        if status.get("state") == "idle" and status.get("last_error"):
            break
        time.sleep(0.1)
    assert "Label Studio" in status["last_error"]
    assert "secret-token-123" not in str(client.get("/health").json)
    assert client.post("/ner", json={"text": "马云在杭州"}).status_code == 200
    assert tiny_backend.models.version() == version


def test_versions_route(client, tiny_backend):
    r = client.get("/versions")
    assert r.status_code == 200 and r.json["versions"] == [tiny_backend.models.version()]


def test_rollback_refuses_names_outside_the_registry(client):
    for name in ("../../etc", "raner-1-deadbeef", None, "/tmp/x"):
        r = client.post("/rollback", json={"version": name})
        assert r.status_code == 400


def test_basic_auth(tiny_settings):
    from dataclasses import replace

    from raner_backend.server.app import create_app
    from raner_backend.service import Backend

    settings = replace(tiny_settings, basic_auth_user="ann", basic_auth_pass="pa:ss")
    client = create_app(Backend(settings).start()).test_client()
    good = "Basic " + base64.b64encode(b"ann:pa:ss").decode()
    bad = "Basic " + base64.b64encode(b"ann:nope").decode()
    assert client.post("/ner", json={"text": "x"}).status_code == 401
    assert client.post("/ner", json={"text": "x"}, headers={"Authorization": bad}).status_code == 401
    assert client.post("/ner", json={"text": "x"}, headers={"Authorization": "Basic !!"}).status_code == 401
    assert client.post("/ner", json={"text": "x"}, headers={"Authorization": good}).status_code == 200
    assert client.get("/health").status_code == 200
    assert client.post("/webhook", json={"action": "PROJECT_UPDATED"}).status_code == 200


def test_rollback_loads_in_the_background_and_reports_in_health(client, tiny_backend):
    import time

    from raner_backend.model.bundle import HeadBundle
    from raner_backend.training.fine_tune import FineTuneResult

    first = tiny_backend.models.version()
    bundle = HeadBundle.load(tiny_backend.registry.current().path)
    second = tiny_backend.deploy(FineTuneResult(bundle, True, "test", {}), tiny_backend.registry.current(), 1, 0)
    assert tiny_backend.models.version(1) == second["version"] != first
    assert tiny_backend.models.version() == first, "the default did not change"
    r = client.post("/rollback", json={"version": first, "project": 1})
    assert r.status_code == 202 and r.json["version"] == first
    deadline = time.time() + 30
    while client.get("/health").json["rollback"]["1"].get("state") == "loading" and time.time() < deadline:
        time.sleep(0.05)
    assert client.get("/health").json["rollback"]["1"] == {"version": first, "state": "serving"}
    assert tiny_backend.models.version(1) == first == tiny_backend.registry.current(1).name


def test_a_rollback_to_a_version_whose_exports_were_dropped_exports_it_again(client, tiny_backend):
    from raner_backend.model.bundle import HeadBundle
    from raner_backend.training.fine_tune import FineTuneResult

    bundle = HeadBundle.load(tiny_backend.registry.current().path)
    deploy = lambda: tiny_backend.deploy(FineTuneResult(bundle, True, "test", {}),  # noqa: E731
                                         tiny_backend.registry.current(1), 1, 0)["version"]
    second = deploy()
    third = deploy()
    assert third != second and not list(tiny_backend.registry.get(second).path.glob("*.onnx"))
    tiny_backend.rollback(second, 1)  # still loaded here: served from memory
    r = client.post("/predict", json={"tasks": [{"id": 1, "data": {"text": "李明在北京工作。"}}], "project": "1.1"})
    assert r.status_code == 200 and r.json["results"][0]["model_version"] == second
    restarted = type(tiny_backend)(tiny_backend.settings).start()
    assert restarted.models.predictor(1).version == second
    assert (tiny_backend.registry.get(second).path / "head.onnx").exists(), "exported again to load it"


def test_a_project_version_cannot_serve_another_project_or_the_default(client, tiny_backend):
    from raner_backend.model.bundle import HeadBundle
    from raner_backend.training.fine_tune import FineTuneResult

    bundle = HeadBundle.load(tiny_backend.registry.current().path)
    own = tiny_backend.deploy(FineTuneResult(bundle, True, "test", {}), tiny_backend.registry.current(), 1, 0)
    for body in ({"version": own["version"], "project": 2}, {"version": own["version"]}):
        r = client.post("/rollback", json=body)
        assert r.status_code == 400 and "trained for project 1" in r.json["error"]
    assert client.get("/versions?project=2").json["versions"] == [tiny_backend.models.version()]
    listed = client.get("/versions?project=1").json
    assert listed["versions"] == [tiny_backend.models.version(), own["version"]] and listed["current"] == own["version"]


def test_a_predict_that_outlives_its_caller_stops_with_503(tiny_settings, monkeypatch):
    import dataclasses

    from raner_backend import service
    from raner_backend.server.app import create_app

    monkeypatch.setattr(service, "PREDICT_CHUNK", 2)
    backend = service.Backend(dataclasses.replace(tiny_settings, predict_timeout_s=1e-6)).start()
    client = create_app(backend).test_client()
    texts = ["马云在杭州创办了阿里巴巴。", "今天天气很好。", "腾讯总部位于深圳。"]
    r = client.post("/predict", json=predict_body(texts))
    assert r.status_code == 503
    assert "2 of 3 tasks" in r.json["error"] and "PREDICT_TIMEOUT_S" in r.json["error"]
    within_one_chunk = client.post("/predict", json=predict_body(texts[:2]))
    assert within_one_chunk.status_code == 200 and len(within_one_chunk.json["results"]) == 2


def test_one_long_text_stops_at_the_deadline_between_batches(tiny_settings):
    import dataclasses

    from raner_backend import service
    from raner_backend.server.app import create_app

    backend = service.Backend(dataclasses.replace(tiny_settings, predict_timeout_s=1e-6)).start()
    predictor = backend.models.predictor()
    predictor.window_chars, predictor.batch_tokens = 16, 64  # many windows, several batches
    client = create_app(backend).test_client()
    r = client.post("/predict", json=predict_body(["马云在杭州创办了阿里巴巴。" * 40]))
    assert r.status_code == 503 and "0 of 1 tasks" in r.json["error"]
    short = client.post("/predict", json=predict_body(["马云在杭州。"]))
    assert short.status_code == 200, "one batch always runs"


def test_chunks_bound_texts_and_characters(monkeypatch):
    from raner_backend import service

    monkeypatch.setattr(service, "PREDICT_CHUNK", 3)
    monkeypatch.setattr(service, "PREDICT_CHUNK_CHARS", 10)
    texts = ["a" * 4, "b" * 4, "c" * 30, "d", "e", "f", "g"]
    assert list(service.text_chunks(texts)) == [(0, 2), (2, 3), (3, 6), (6, 7)]
    assert list(service.text_chunks([])) == []


def test_many_tasks_wait_for_the_projects_running_ranking_but_one_task_is_answered(client, tiny_backend):
    version = tiny_backend.models.version()
    tiny_backend.rankings[1] = {"project": 1, "model_version": version, "stage": "predict", "done": 500,
                                "total": 2000}
    texts = ["马云在杭州创办了阿里巴巴。", "今天天气很好。"]
    busy = client.post("/predict", json=predict_body(texts))
    assert busy.status_code == 503 and "500 of 2000" in busy.json["error"] and "rankings" in busy.json["error"]
    assert client.post("/predict", json=predict_body(texts[:1])).status_code == 200
    tiny_backend.rankings[1] = {"project": 1, "model_version": version, "stage": "done"}
    assert client.post("/predict", json=predict_body(texts)).status_code == 200
