"""`rank`: a project's unlabelled tasks queued by uncertainty and diversity, stored in Label Studio
(a fake API here; the real one in tests/e2e)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from .fake_labelstudio import FakeLabelStudio

TEXTS = ["张伟在北京工作。", "张伟在北京工作。", "李娜去了上海。", "今天天气很好。", "华为在深圳发布新手机。",
         "王芳和李明在广州见面。", "", "他说：好的。"]


def current_predictions(fake):
    return {t["id"]: [p for p in t["predictions"] if p["model_version"] == fake.model_version] for t in fake.tasks_}


def test_rank_stores_one_prediction_per_unlabelled_task_in_queue_order(tiny_backend):
    fake = FakeLabelStudio(TEXTS, labelled={0}, broken={7})
    report = tiny_backend.rank_project(5, client=fake)
    assert fake.model_version == tiny_backend.models.version() == report.model_version
    assert report.labelled == 1 and report.skipped == 1 and len(report.queue) == 6
    stored = current_predictions(fake)
    assert stored[10] == [] and stored[17] == []
    queue_ids = [q.task_id for q in report.queue]
    by_score = sorted(queue_ids, key=lambda tid: stored[tid][0]["score"])
    assert by_score == queue_ids, "Label Studio's ascending score order is the queue order"
    for q in report.queue:
        (pred,) = stored[q.task_id]
        assert pred["cluster"] == q.cluster and 0.0 <= pred["score"] <= 1.0
    empty = next(q for q in report.queue if q.task_id == 16)
    assert empty.score == pytest.approx(1.0) and empty.entities == 0
    health = tiny_backend.health()
    assert health["rankings"][5]["ranked"] == 6
    assert "张伟" not in json.dumps(health, ensure_ascii=False), "/health is open: no task text in it"


def test_a_copy_of_a_labelled_task_is_not_first_and_its_score_never_beats_predict(tiny_backend, client):
    fake = FakeLabelStudio(TEXTS, labelled={0})
    report = tiny_backend.rank_project(5, client=fake)
    copy = next(q for q in report.queue if q.task_id == 11)
    assert copy.diversity == pytest.approx(0.0, abs=1e-3) and copy.score == pytest.approx(1.0, abs=1e-3)
    assert copy.position >= len(report.queue) - 2, "only the empty text may share the end of the queue"
    answer = client.post("/predict", json={"tasks": [{"data": {"text": t}} for t in TEXTS[:6]]}).json
    predicted = [r["score"] for r in answer["results"]]
    for q in report.queue:
        if q.task_id - 10 < 6:
            assert q.score >= predicted[q.task_id - 10] - 1e-6, "diversity only lowers a priority"


def test_ranking_again_replaces_the_predictions_of_the_same_version(tiny_backend):
    fake = FakeLabelStudio(TEXTS[:6])
    tiny_backend.rank_project(5, client=fake)
    report = tiny_backend.rank_project(5, client=fake)
    assert report.replaced == 6 and fake.calls["delete_predictions_of_version"] == 2
    assert fake.expected_deletes == [0, 6], "the listing told how many predictions the delete removes"
    assert all(len(p) == 1 for p in current_predictions(fake).values())


def test_deleting_many_predictions_waits_in_proportion_to_them(monkeypatch):
    """Label Studio took about 9 ms per deleted prediction; 10,000 ran past the 60 s timeout and failed
    a whole ranking after it had predicted every task."""
    from raner_backend.training.ls_client import LabelStudioClient

    ls, sent = LabelStudioClient("http://127.0.0.1:9", "secret", timeout=60), {}

    class Answer:
        def raise_for_status(self):
            pass

        def json(self):
            return {"deleted_predictions": 10000}

    def request(path, **kwargs):
        sent.update(kwargs, path=path)
        return Answer()

    monkeypatch.setattr(ls.client._client_wrapper.httpx_client, "request", request)
    assert ls.delete_predictions_of_version(3, "raner-2", expected=10000) == 10000
    assert sent["path"] == "api/projects/3/model-versions/" and sent["json"] == {"model_version": "raner-2"}
    assert sent["request_options"]["timeout"] >= 60 + 3 * 0.009 * 10000
    ls.delete_predictions_of_version(3, "raner-2")
    assert sent["request_options"]["timeout"] == 60


def test_a_labelled_task_keeps_its_prediction_of_the_version_and_other_versions_stay(tiny_backend, client):
    fake = FakeLabelStudio(TEXTS[:6], labelled={0})
    version = tiny_backend.models.version()
    fake.create_prediction(10, [], 0.5, version)  # "Retrieve predictions" before task 10 was labelled
    fake.create_prediction(11, [], 0.5, "raner-0-older")
    report = tiny_backend.rank_project(5, client=fake)
    assert report.replaced == 1
    (kept,) = current_predictions(fake)[10]
    predicted = client.post("/predict", json={"tasks": [{"data": {"text": TEXTS[0]}}]}).json["results"][0]
    assert kept["score"] == pytest.approx(predicted["score"], abs=1e-6) and kept["result"] == predicted["result"]
    assert [p["model_version"] for p in fake.tasks_[1]["predictions"]] == ["raner-0-older", version]


def many_texts(n: int) -> list[str]:
    people, places = ["张伟", "李娜", "王芳", "刘洋", "陈静"], ["北京", "上海", "广州", "深圳", "杭州", "成都"]
    return [f"{people[i % 5]}第{i}次去{places[i % 6]}开会。" for i in range(n)]


def test_pages_give_the_queue_of_the_whole_pool_ranked_at_once(tiny_backend):
    from raner_backend.active import project_queue
    from raner_backend.active.ranking import rank_pool
    from raner_backend.active.uncertainty import uncertainty_of

    texts, labelled = many_texts(40), [0, 3, 17, 31]
    predictor = tiny_backend.models.predictor(5)
    results = predictor.predict(texts[:39])
    pool = [i for i in range(39) if i not in labelled]
    expected = rank_pool(np.array([uncertainty_of(results[i]).value for i in pool]),
                         np.stack([results[i].embedding for i in pool]),
                         labelled=np.stack([results[i].embedding for i in labelled]))
    fake = FakeLabelStudio(texts, labelled=set(labelled), broken={39})
    report = project_queue.rank_project(fake, 5, predictor, tiny_backend.schema_for(fake.config), page_size=7)
    assert fake.calls["task_page"] == 6 and report.skipped == 1 and report.labelled == 4
    assert [q.task_id for q in report.queue] == [10 + pool[k] for k in expected.order.tolist()]
    assert [q.score for q in report.queue] == pytest.approx(expected.score[expected.order].tolist())
    assert [q.cluster for q in report.queue] == expected.cluster[expected.order].tolist()


def test_a_large_pool_is_stored_in_bulk_without_clusters(tiny_backend, monkeypatch):
    from raner_backend.active import project_queue

    monkeypatch.setattr(project_queue, "STORE_CHUNK", 8)
    fake = FakeLabelStudio(many_texts(20), labelled={0})
    report = project_queue.rank_project(fake, 5, tiny_backend.models.predictor(5), tiny_backend.schema_for(fake.config),
                                        cluster_limit=10)
    assert not report.clusters_stored and len(report.queue) == 19
    assert fake.calls["import_predictions"] == 3 and fake.calls["delete_predictions_of_version"] == 1
    stored = current_predictions(fake)
    assert stored[10] == [] and fake.model_version == report.model_version
    for q in report.queue:
        (pred,) = stored[q.task_id]
        assert pred["score"] == pytest.approx(q.score) and pred["cluster"] is None


def test_progress_goes_to_the_caller_and_to_health_while_ranking_runs(tiny_backend):
    fake = FakeLabelStudio(many_texts(30), labelled={0, 1})
    seen = []

    def progress(stage, done, total):
        seen.append((stage, done, total, dict(tiny_backend.health()["rankings"][5])))

    report = tiny_backend.rank_project(5, client=fake, progress=progress)
    stages = [s for s, *_ in seen]
    assert stages[0] == "predict" and stages[-1] == "store" and "rank" in stages
    assert stages == sorted(stages, key=["predict", "rank", "store"].index), "stages run in order"
    assert [(d, t) for s, d, t, _ in seen if s == "predict"][-1] == (30, 30)
    assert [(d, t) for s, d, t, _ in seen if s == "store"][-1] == (28, 28)
    for stage, done, total, health in seen:
        assert (health["stage"], health["done"], health["total"]) == (stage, done, total)
        assert health["model_version"] == report.model_version
    assert tiny_backend.health()["rankings"][5] == report.summary() and report.summary()["stage"] == "done"


def test_a_failed_ranking_shows_where_it_failed_in_health(tiny_backend):
    from raner_backend.training.ls_client import LabelStudioError

    fake = FakeLabelStudio(many_texts(5))

    def refuse(*args, **kwargs):
        raise LabelStudioError("Label Studio prediction upload failed (HTTP 500)")

    fake.create_prediction = refuse
    with pytest.raises(LabelStudioError):
        tiny_backend.rank_project(5, client=fake)
    health = tiny_backend.health()["rankings"][5]
    assert (health["stage"], health["failed_in"], health["error"]) == ("failed", "store", "LabelStudioError")


def test_a_project_with_every_task_labelled_ranks_nothing(tiny_backend):
    fake = FakeLabelStudio(TEXTS[:3], labelled={0, 1, 2})
    report = tiny_backend.rank_project(5, client=fake)
    assert report.queue == [] and fake.model_version is None


def test_the_rank_command_prints_the_queue(tiny_settings, tiny_backend, monkeypatch, capsys):
    from raner_backend import cli

    fake = FakeLabelStudio(TEXTS[:6])
    monkeypatch.setattr("raner_backend.training.ls_client.LabelStudioClient", lambda *a, **k: fake)
    monkeypatch.setattr(cli.Settings, "from_env", classmethod(lambda cls, env=None, **overrides: tiny_settings))
    assert cli.main(["rank", "--project", "3", "--json", "--quiet"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["ranked"] == 6 and [q["task"] for q in printed["queue"]] == [
        q["task"] for q in sorted(printed["queue"], key=lambda q: q["score"])]
    assert {"mean_entropy", "max_entropy", "mnlp", "diversity", "cluster"} <= set(printed["queue"][0])
    assert cli.main(["rank", "--project", "3", "--quiet", "--top", "3"]) == 0
    table = capsys.readouterr().out
    assert "label first" in table and len(table.strip().splitlines()) == 5
    assert cli.main(["rank", "--project", "3", "--top", "3"]) == 0
    bars = capsys.readouterr().err
    for stage in ("predict", "rank", "store"):
        assert f"{stage:<8}: 100%" in bars, bars
