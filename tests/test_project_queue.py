"""`rank`: a project's unlabelled tasks queued by uncertainty and diversity, stored in Label Studio
(a fake API here; the real one in tests/e2e)."""
from __future__ import annotations

import json

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
    assert report.replaced == 6 and len(fake.deleted) == 6
    assert all(len(p) == 1 for p in current_predictions(fake).values())


def test_a_project_with_every_task_labelled_ranks_nothing(tiny_backend):
    fake = FakeLabelStudio(TEXTS[:3], labelled={0, 1, 2})
    report = tiny_backend.rank_project(5, client=fake)
    assert report.queue == [] and fake.model_version is None


def test_the_rank_command_prints_the_queue(tiny_settings, tiny_backend, monkeypatch, capsys):
    from raner_backend import cli

    fake = FakeLabelStudio(TEXTS[:6])
    monkeypatch.setattr("raner_backend.training.ls_client.LabelStudioClient", lambda *a, **k: fake)
    monkeypatch.setattr(cli.Settings, "from_env", classmethod(lambda cls: tiny_settings))
    assert cli.main(["rank", "--project", "3", "--json", "--quiet"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["ranked"] == 6 and [q["task"] for q in printed["queue"]] == [
        q["task"] for q in sorted(printed["queue"], key=lambda q: q["score"])]
    assert {"mean_entropy", "max_entropy", "mnlp", "diversity", "cluster"} <= set(printed["queue"][0])
    assert cli.main(["rank", "--project", "3", "--quiet", "--top", "3"]) == 0
    table = capsys.readouterr().out
    assert "label first" in table and len(table.strip().splitlines()) == 5
