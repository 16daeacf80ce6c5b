"""End to end against a real Label Studio 1.23.2: connect, predict, annotate, train, re-predict, sort.

Needs ``.venv-ls`` (installed on first use by ``scripts/labelstudio.sh install``) and a ``MODEL_DIR``
prepared with ``raner-backend setup`` (copied, never written to). ``RANER_SKIP_E2E=1`` skips it.
Timings go to ``e2e_labelstudio.json`` in ``$RANER_RESULTS_DIR`` (``benchmarks/recorded_tests.py`` sets it to
benchmarks/results), else in a temporary folder.
"""
from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from .labelstudio import (BACKEND_BIN, PRODUCT_CONFIG, REPO, TO_CONFIG_LABEL, BackendServer, LabelStudioApi,
                          product_sentences, region_id)

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

LABELS = {"PER", "LOC", "ORG"}
TRAIN_TIMEOUT_S = 600
N_ANNOTATED = 12

# (text, gold entities as (surface, label); a surface is found at its first occurrence)
SENTENCES: list[tuple[str, list[tuple[str, str]]]] = [
    ("华为在深圳发布Mate60手机", [("华为", "ORG"), ("深圳", "LOC")]),
    ("@张伟 今天在上海外滩拍照📷 #旅行#", [("张伟", "PER"), ("上海", "LOC"), ("外滩", "LOC")]),
    ("国务院总理李强在北京会见了来访的德国总理朔尔茨。",
     [("国务院", "ORG"), ("李强", "PER"), ("北京", "LOC"), ("德国", "LOC"), ("朔尔茨", "PER")]),
    ("阿里巴巴集团宣布张勇卸任董事会主席，蔡崇信接任。", [("阿里巴巴集团", "ORG"), ("张勇", "PER"), ("蔡崇信", "PER")]),
    ("中国人民银行今日宣布下调存款准备金率0.5个百分点。", [("中国人民银行", "ORG")]),
    ("腾讯控股在香港交易所的股价周五上涨3.2%。", [("腾讯控股", "ORG"), ("香港交易所", "ORG")]),
    ("梅西在迈阿密国际的首秀中打进制胜球⚽️", [("梅西", "PER"), ("迈阿密国际", "ORG")]),
    ("谷爱凌在北京冬奥会上为中国队夺得自由式滑雪金牌。", [("谷爱凌", "PER"), ("北京", "LOC"), ("中国队", "ORG")]),
    ("清华大学与微软亚洲研究院联合发布了新的大语言模型。", [("清华大学", "ORG"), ("微软亚洲研究院", "ORG")]),
    ("刚在成都吃了火锅🔥🔥 @李娜 下次一起来啊 #美食#", [("成都", "LOC"), ("李娜", "PER")]),
    ("苹果公司CEO库克访问杭州，与马云共进午餐。", [("苹果公司", "ORG"), ("库克", "PER"), ("杭州", "LOC"), ("马云", "PER")]),
    ("长江三峡水利枢纽今年发电量创历史新高。", [("长江", "LOC"), ("三峡", "LOC")]),
    ("小米汽车在武汉的新工厂将于明年投产，雷军表示产能翻倍。", [("小米汽车", "ORG"), ("武汉", "LOC"), ("雷军", "PER")]),
    ("姚明当选中国篮球协会主席后首次来到广州视察。", [("姚明", "PER"), ("中国篮球协会", "ORG"), ("广州", "LOC")]),
    ("比亚迪在巴西建厂的消息让圣保罗的投资者很兴奋😂", [("比亚迪", "ORG"), ("巴西", "LOC"), ("圣保罗", "LOC")]),
    ("联合国秘书长古特雷斯呼吁加沙地带立即停火。", [("联合国", "ORG"), ("古特雷斯", "PER"), ("加沙地带", "LOC")]),
    ("周杰伦台北演唱会门票秒光了😭😭 #周杰伦#", [("周杰伦", "PER"), ("台北", "LOC")]),
    ("复旦大学王建华教授团队在Nature发表了量子计算的最新成果。", [("复旦大学", "ORG"), ("王建华", "PER"), ("Nature", "ORG")]),
    ("据新华社报道，西藏林芝市今晨发生4.5级地震，暂无人员伤亡。", [("新华社", "ORG"), ("西藏", "LOC"), ("林芝市", "LOC")]),
    ("𠮷野家在东京新开了一家门店，Elon Musk也在推特上点赞👍", [("𠮷野家", "ORG"), ("东京", "LOC"), ("Elon Musk", "PER"), ("推特", "ORG")]),
]
TEXTS = [text for text, _ in SENTENCES]


def gold_spans(text: str, entities: list[tuple[str, str]]) -> list[tuple[int, int, str]]:
    spans = []
    for surface, label in entities:
        start = text.find(surface)
        assert start >= 0, f"{surface!r} not in {text!r}"
        spans.append((start, start + len(surface), label))
    return spans


def results_file() -> Path:
    folder = os.environ.get("RANER_RESULTS_DIR")
    return (Path(folder) if folder else Path(tempfile.gettempdir()) / "raner-e2e-results") / "e2e_labelstudio.json"


def check_prediction(pred: dict, text: str, labels: set[str] = LABELS) -> None:
    """One Label Studio prediction of our backend: regions consistent with the text (code points)."""
    score = pred.get("score")
    assert isinstance(score, (int, float)) and 0.0 <= score <= 1.0, f"task score {score!r} not in [0, 1]"
    assert isinstance(pred.get("result"), list)
    for region in pred["result"]:
        assert region.get("from_name") == "label", region
        assert region.get("to_name") == "text", region
        assert region.get("type") == "labels", region
        value = region.get("value") or {}
        start, end = value.get("start"), value.get("end")
        assert isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= len(text), (region, text)
        assert value.get("text") == text[start:end], (region, text, text[start:end])
        assert isinstance(value.get("labels"), list) and len(value["labels"]) == 1 and value["labels"][0] in labels, region
        region_score = region.get("score")
        assert isinstance(region_score, float) and math.isfinite(region_score), region


def predictions_of_version(api: LabelStudioApi, tasks: list[dict], version: str, timeout: float = 120) -> dict:
    """{task id: the task's prediction with ``model_version == version``}; waits for all of them."""
    deadline = time.monotonic() + timeout
    while True:
        found = {}
        for task in tasks:
            for pred in api.predictions(task["id"]):
                if pred.get("model_version") == version:
                    found[task["id"]] = pred
        if len(found) == len(tasks) or time.monotonic() > deadline:
            return found
        time.sleep(1)


def corrected_result(pred: dict, text: str, gold: list[tuple[int, int, str]], fix: bool) -> list[dict]:
    """An annotator's result: the predicted regions, with (when ``fix``) one gold entity fixed or added."""
    regions = [{"id": region_id(), "from_name": r["from_name"], "to_name": r["to_name"], "type": "labels",
                "origin": "manual",
                "value": {k: r["value"][k] for k in ("start", "end", "text", "labels")}} for r in pred["result"]]
    if fix:
        predicted = {(r["value"]["start"], r["value"]["end"], r["value"]["labels"][0]) for r in regions}
        missing = [g for g in gold if g not in predicted]
        if missing:
            start, end, label = missing[0]
            regions = [r for r in regions if r["value"]["end"] <= start or r["value"]["start"] >= end]
            regions.append({"id": region_id(), "from_name": "label", "to_name": "text", "type": "labels",
                            "origin": "manual",
                            "value": {"start": start, "end": end, "text": text[start:end], "labels": [label]}})
    return sorted(regions, key=lambda r: r["value"]["start"])


def retrieve_and_check(api, pid: int, tasks: list[dict], version: str, text_of: dict, timings: dict,
                       timing_key: str, labels: set[str] = LABELS) -> dict:
    """"Retrieve predictions" for the whole project; every task gets a valid one of ``version``."""
    started = time.monotonic()
    api.retrieve_predictions(pid)
    found = predictions_of_version(api, tasks, version)
    timings[timing_key] = round(time.monotonic() - started, 1)
    missing = [t["id"] for t in tasks if t["id"] not in found]
    assert not missing, f"tasks without a {version} prediction: {missing}"
    for task_id, pred in found.items():
        check_prediction(pred, text_of[task_id], labels)
    return found


def write_results(data: dict) -> None:
    """Merged into the results file: each test adds its own part."""
    path = results_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**old, **data}, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def test_label_studio_round_trip(source_model_dir: Path, label_studio_install, label_studio, tmp_path: Path):
    timings: dict[str, float] = {}
    record: dict = {
        "test": "tests/e2e/test_labelstudio_e2e.py::test_label_studio_round_trip",
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "label_studio": "1.23.2", "cpus": os.cpu_count(), "machine": platform.machine(),
        "tasks": len(TEXTS), "annotated": N_ANNOTATED,
        "backend_env": {"TRAIN_EPOCHS": "1", "TRAIN_MAX_STEPS": "60"},
        "seconds": timings, "passed": False,
    }
    timings["ls_install_check"] = label_studio_install["seconds"]
    timings["ls_start"] = round(label_studio.start_seconds or 0.0, 1)
    record["ls_started_from_template"] = label_studio.from_template

    api = label_studio.api()
    pid = api.create_project("raner e2e")
    tasks = api.import_tasks(pid, TEXTS)
    assert [t["data"]["text"] for t in tasks] == TEXTS
    text_of = {t["id"]: t["data"]["text"] for t in tasks}
    gold_of = {t["id"]: gold_spans(text, ents) for t, (text, ents) in zip(tasks, SENTENCES)}

    # TRAIN_THRESHOLD: only "Start Training" trains here, not the 12 annotation webhooks;
    # RANK_ON_CONNECT off: "Retrieve predictions" below is what asks for the first predictions.
    backend = BackendServer(source_model_dir, tmp_path / "backend", label_studio.base_url, label_studio.token,
                            extra_env={"TRAIN_THRESHOLD": "100000", "RANK_ON_CONNECT": "false"})
    try:
        with backend:
            timings["backend_start"] = round(backend.start_seconds or 0.0, 1)
            _round_trip(api, backend, pid, tasks, text_of, gold_of, timings, record)
        record["passed"] = True
    except BaseException as exc:
        record["error"] = f"{type(exc).__name__}: {exc}"[:2000]
        print(f"--- backend log ({backend.log_path}) ---\n{backend.log_tail(120)}")
        raise
    finally:
        write_results(record)


def _round_trip(api, backend, pid, tasks, text_of, gold_of, timings, record):
    v0 = backend.model_version(pid)
    assert v0, "the backend reports no model_version"
    record["version_before"] = v0

    # -- connect and predict ------------------------------------------------------------------
    ml_id = api.connect_backend(pid, backend.url, title="raner-backend")
    first = retrieve_and_check(api, pid, tasks, v0, text_of, timings, "retrieve_predictions_1")
    with_regions = sum(1 for p in first.values() if p["result"])
    record["tasks_with_regions_before"] = with_regions
    assert with_regions >= len(tasks) / 2, f"only {with_regions}/{len(tasks)} tasks have a predicted entity"

    # -- annotate 12 tasks: the prediction, corrected in some ------------------------------------
    started = time.monotonic()
    for i, task in enumerate(tasks[:N_ANNOTATED]):
        result = corrected_result(first[task["id"]], text_of[task["id"]], gold_of[task["id"]], fix=i % 2 == 0)
        api.submit_annotation(task["id"], result)
    timings["submit_annotations"] = round(time.monotonic() - started, 1)
    project = api.get_project(pid)
    assert project.get("num_tasks_with_annotations", N_ANNOTATED) == N_ANNOTATED

    # -- train until a new version is served ---------------------------------------------------
    started = time.monotonic()
    api.train(ml_id)
    timings["train_call"] = round(time.monotonic() - started, 1)
    v1, health = _wait_new_version(backend, pid, v0, started)
    timings["train_to_new_version"] = round(time.monotonic() - started, 1)
    record["version_after"] = v1
    record["deployments"] = health.get("deployments")
    versions = backend.versions()["versions"]
    assert v1 in versions and v0 in versions, versions
    _wait_training_idle(backend, pid)

    # -- the backend sets the project's model_version to the new version ------------------------
    # Label Studio accepts PATCH {"model_version": v} only when v is the title of one of the
    # project's ML backends or the model_version of an existing prediction in the project
    # (projects/serializers.py validate_model_version), so the backend uploads the new version's
    # predictions before it PATCHes: this must hold before anyone retrieves predictions again.
    deadline = time.monotonic() + 60
    while (project_version := api.get_project(pid).get("model_version")) != v1 and time.monotonic() < deadline:
        time.sleep(1)
    record["project_model_version_after"] = project_version
    assert project_version == v1, (
        f"project model_version is {project_version!r}, the backend serves {v1!r} (Label Studio refuses a "
        f"PATCH to a version that has no prediction in the project yet)")

    # -- after the deployment the backend queued the unlabelled tasks: scores and clusters ---------
    unlabelled = tasks[N_ANNOTATED:]
    queued = predictions_of_version(api, unlabelled, v1, timeout=60)
    assert len(queued) == len(unlabelled), f"ranked after deploy: {sorted(queued)}"
    assert all(isinstance(p.get("cluster"), int) for p in queued.values()), [p.get("cluster") for p in queued.values()]
    assert backend.health()["rankings"][str(pid)]["ranked"] == len(unlabelled)

    # -- predict again with the new version ----------------------------------------------------
    second = retrieve_and_check(api, pid, tasks, v1, text_of, timings, "retrieve_predictions_2")
    record["tasks_with_regions_after"] = sum(1 for p in second.values() if p["result"])

    # -- Data Manager: ordered by prediction score ---------------------------------------------
    ordered = api.tasks_by_prediction_score(pid)
    assert sorted(t["id"] for t in ordered) == sorted(t["id"] for t in tasks)
    scores = [t.get("predictions_score") for t in ordered]
    assert all(s is not None for s in scores), f"tasks without a prediction score in the view: {scores}"
    assert all(a <= b + 1e-9 for a, b in zip(scores, scores[1:])), f"not sorted by prediction score: {scores}"
    for task in ordered:  # the score column averages the current (v1) predictions: one per task here
        assert abs(task["predictions_score"] - second[task["id"]]["score"]) < 1e-3, task
    record["scores_in_view_order"] = [round(s, 4) for s in scores]
    _rank_command_orders_the_data_manager(api, backend, pid, unlabelled, timings, record)


def _rank_command_orders_the_data_manager(api, backend, pid, unlabelled, timings, record):
    """`raner-backend rank --project` against the real server: the Data Manager sorted by score lists
    the unlabelled tasks in the command's queue order, with its scores and clusters stored."""
    started = time.monotonic()
    done = subprocess.run([str(BACKEND_BIN), "rank", "--project", str(pid), "--json", "--quiet"], cwd=REPO,
                          env=backend.env(), capture_output=True, text=True, timeout=300)
    timings["rank_command"] = round(time.monotonic() - started, 1)
    assert done.returncode == 0, done.stderr[-3000:]
    queue = json.loads(done.stdout)["queue"]
    assert sorted(q["task"] for q in queue) == sorted(t["id"] for t in unlabelled)
    in_view = [t for t in api.tasks_by_prediction_score(pid) if t["id"] in {q["task"] for q in queue}]
    position = {q["task"]: q["position"] for q in queue}
    for a, b in zip(in_view, in_view[1:]):
        assert position[a["id"]] < position[b["id"]] or abs(a["predictions_score"] - b["predictions_score"]) < 1e-6, (
            f"Data Manager order differs from the queue: {[t['id'] for t in in_view]} vs {[q['task'] for q in queue]}")
    stored = predictions_of_version(api, unlabelled, api.get_project(pid)["model_version"], timeout=10)
    for q in queue:
        (pred,) = [p for p in api.predictions(q["task"]) if p.get("model_version") == stored[q["task"]]["model_version"]]
        assert abs(pred["score"] - q["score"]) < 1e-5 and pred["cluster"] == q["cluster"], (pred, q)
    record["rank_queue"] = [{k: q[k] for k in ("task", "score", "cluster", "uncertainty", "diversity")} for q in queue]


def _wait_new_version(backend: BackendServer, pid: int, v0: str, started: float) -> tuple[str, dict]:
    """Polls ``/health`` until the project's model_version changes; fails early when the job ended
    without it."""
    deadline = started + TRAIN_TIMEOUT_S
    health: dict = {}
    while time.monotonic() < deadline:
        health = backend.health()
        served = (health.get("projects") or {}).get(str(pid), health.get("model_version"))
        if served not in (None, v0):
            return served, health
        state = (health.get("training") or {}).get(str(pid)) or {}
        if state.get("state") == "idle" and state.get("jobs_started", 0) > 0:
            pytest.fail(f"training ended without a new version: error={state.get('last_error')!r} "
                        f"result={state.get('last_result')!r} deployments={health.get('deployments')!r}")
        time.sleep(2)
    pytest.fail(f"no new model version within {TRAIN_TIMEOUT_S} s; last /health: {health}")


def _wait_training_idle(backend: BackendServer, pid: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = (backend.health().get("training") or {}).get(str(pid)) or {}
        if state.get("state", "idle") == "idle":
            return
        time.sleep(1)
    pytest.fail(f"training of project {pid} still busy {timeout:.0f} s after the new version")


def test_faults_wrong_api_key_and_kill_9_during_training(source_model_dir: Path, label_studio, tmp_path: Path):
    """A wrong API key gives a visible 401 and keeps the model serving; a ``kill -9`` in the middle of a
    training leaves the last complete version serving on restart, and the next trigger trains."""
    api = label_studio.api()
    pid = api.create_project("raner faults")
    tasks = api.import_tasks(pid, TEXTS)
    _annotate_gold(api, tasks)
    record: dict = {}

    wrong_key = "wrong-key-" + region_id()
    with BackendServer(source_model_dir, tmp_path / "wrong-key", label_studio.base_url, wrong_key,
                       extra_env={"TRAIN_THRESHOLD": "100000"}) as backend:
        v0 = backend.health()["model_version"]
        # MODEL_DIR may hold earlier versions (an upgrade keeps the old default); v0 is the newest.
        before = backend.versions()["versions"]
        assert before[-1] == v0
        backend.webhook({"action": "START_TRAINING", "project": {"id": pid}})
        state = _wait_job_done(backend, pid, jobs=1)
        assert "401" in (state.get("last_error") or ""), state
        assert backend.health()["model_version"] == v0
        assert backend.versions()["versions"] == before
        record["wrong_key_error"] = state["last_error"]
    assert wrong_key not in backend.log_path.read_text(encoding="utf-8", errors="replace")

    backend = BackendServer(source_model_dir, tmp_path / "kill", label_studio.base_url, label_studio.token,
                            extra_env={"TRAIN_THRESHOLD": "100000", "TRAIN_EPOCHS": "3", "TRAIN_MAX_STEPS": "0"})
    try:
        backend.start()
        v0 = backend.health()["model_version"]
        backend.webhook({"action": "START_TRAINING", "project": {"id": pid}})
        progress = _wait_first_epoch(backend, pid)
        backend.kill9()
        record["killed_at"] = progress
        backend.start(fresh=False)
        assert backend.health()["model_version"] == v0
        assert backend.versions()["versions"] == before
        assert not any((backend.model_dir / "staging").glob("*"))
        backend.webhook({"action": "START_TRAINING", "project": {"id": pid}})
        state = _wait_job_done(backend, pid, jobs=1)
        assert state.get("last_error") is None, state
        v1 = backend.model_version(pid)
        assert v1 != v0 == backend.health()["model_version"] and backend.versions()["versions"] == before + [v1]
        record["after_restart"] = {"served_before_retrain": v0, "served_after_retrain": v1}
    except BaseException:
        print(f"--- backend log ({backend.log_path}) ---\n{backend.log_tail(120)}")
        raise
    finally:
        backend.stop()
    write_results({"faults": record})


def _annotate_gold(api, tasks: list[dict]) -> None:
    """The first ``N_ANNOTATED`` tasks (``TEXTS``) annotated with their gold spans."""
    for task, (text, entities) in zip(tasks[:N_ANNOTATED], SENTENCES):
        api.submit_annotation(task["id"], [
            {"id": region_id(), "from_name": "label", "to_name": "text", "type": "labels", "origin": "manual",
             "value": {"start": s, "end": e, "text": text[s:e], "labels": [label]}}
            for s, e, label in gold_spans(text, entities)])


def _wait_first_epoch(backend: BackendServer, pid: int, timeout: float = 180) -> dict:
    """The training's progress once its first epoch is done and the next one runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        progress = ((backend.health().get("training") or {}).get(str(pid)) or {}).get("progress") or {}
        if progress.get("stage") == "training" and progress.get("epoch", 0) >= 1:
            return progress
        time.sleep(0.2)
    pytest.fail(f"training of project {pid} never finished its first epoch")


def _wait_job_done(backend: BackendServer, pid: int, jobs: int, timeout: float = TRAIN_TIMEOUT_S) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = (backend.health().get("training") or {}).get(str(pid)) or {}
        if state.get("jobs_started", 0) >= jobs and state.get("state") == "idle":
            return state
        time.sleep(0.5)
    pytest.fail(f"training job {jobs} of project {pid} did not finish within {timeout:.0f} s")


N_PRODUCT_TASKS, N_PRODUCT_ANNOTATED = 60, 45


def test_two_projects_one_backend_and_a_label_the_default_model_does_not_know(
        source_model_dir: Path, label_studio, tmp_path: Path):
    """Project 1 (PER/LOC/ORG) and project 2 (人物/地点/机构/产品) on one backend: project 2 trains,
    learns 产品 and predicts it on tasks nobody annotated; project 1 keeps its model_version and
    its predictions; each project's Data Manager sorts by its own scores."""
    api = label_studio.api()
    record: dict = {"tasks_project_2": N_PRODUCT_TASKS, "annotated_project_2": N_PRODUCT_ANNOTATED}
    first_pid = api.create_project("raner news")
    first_tasks = api.import_tasks(first_pid, TEXTS)
    examples = product_sentences(N_PRODUCT_TASKS)
    second_pid = api.create_project("raner products", config=PRODUCT_CONFIG)
    second_tasks = api.import_tasks(second_pid, [e.text for e in examples])
    # The service's own budget (at least 100 steps), not the 60-step cap of the round trip above.
    backend = BackendServer(source_model_dir, tmp_path / "backend", label_studio.base_url, label_studio.token,
                            extra_env={"TRAIN_THRESHOLD": "100000", "TRAIN_MAX_STEPS": "0"})
    try:
        with backend:
            _two_projects(api, backend, (first_pid, first_tasks), (second_pid, second_tasks, examples), record)
    except BaseException:
        print(f"--- backend log ({backend.log_path}) ---\n{backend.log_tail(120)}")
        raise
    finally:
        write_results({"two_projects": record})


def _two_projects(api, backend, first, second, record):
    (first_pid, first_tasks), (second_pid, second_tasks, examples) = first, second
    v0 = backend.model_version(first_pid)
    assert backend.model_version(second_pid) == v0, "an untrained project is served by the default model"
    first_ml = api.connect_backend(first_pid, backend.url)
    second_ml = api.connect_backend(second_pid, backend.url)
    for pid in (first_pid, second_pid):  # the backend ranks a project when it connects
        _wait_project_version(api, pid, v0)
    first_text = {t["id"]: t["data"]["text"] for t in first_tasks}
    second_text = {t["id"]: t["data"]["text"] for t in second_tasks}
    timings: dict = {}
    before = retrieve_and_check(api, first_pid, first_tasks, v0, first_text, timings, "retrieve_project_1")
    unknown = retrieve_and_check(api, second_pid, second_tasks, v0, second_text, timings, "retrieve_project_2",
                                 labels=set(TO_CONFIG_LABEL.values()))
    assert not any(r["value"]["labels"] == ["产品"] for p in unknown.values() for r in p["result"]), \
        "产品 is predicted before anyone taught it"

    for task, example in zip(second_tasks[:N_PRODUCT_ANNOTATED], examples):
        api.submit_annotation(task["id"], [
            {"id": region_id(), "from_name": "label", "to_name": "text", "type": "labels", "origin": "manual",
             "value": {"start": s.start, "end": s.end, "text": example.text[s.start:s.end],
                       "labels": [TO_CONFIG_LABEL[s.label]]}} for s in example.spans])
    started = time.monotonic()
    api.train(second_ml)
    v1, health = _wait_new_version(backend, second_pid, v0, started)
    record["train_to_new_version_s"] = round(time.monotonic() - started, 1)
    _wait_training_idle(backend, second_pid)
    training = backend.health()["deployments"][-1]
    record["deployment"] = training

    # -- project 1 is untouched ------------------------------------------------------------------
    assert backend.model_version(first_pid) == v0 and backend.health()["model_version"] == v0
    assert api.get_project(first_pid).get("model_version") != v1
    # Label Studio would not ask again (its tasks hold v0 predictions): ask the backend directly.
    answer = backend.predict(first_tasks, first_pid)
    assert [item["model_version"] for item in answer] == [v0] * len(first_tasks)
    for task, item in zip(first_tasks, answer):
        assert _spans(item["result"]) == _spans(before[task["id"]]["result"]), task

    # -- project 2 predicts 产品 on tasks nobody annotated --------------------------------------------
    unseen = second_tasks[N_PRODUCT_ANNOTATED:]
    _wait_project_version(api, second_pid, v1)
    learned = retrieve_and_check(api, second_pid, second_tasks, v1, second_text, timings, "retrieve_project_2_again",
                                 labels=set(TO_CONFIG_LABEL.values()))
    gold = {t["id"]: {(s.start, s.end) for s in e.spans if s.label == "PRODUCT"}
            for t, e in zip(second_tasks, examples)}
    found = {t["id"]: {(r["value"]["start"], r["value"]["end"]) for r in learned[t["id"]]["result"]
                       if r["value"]["labels"] == ["产品"]} for t in unseen}
    hits = sum(len(found[i] & gold[i]) for i in found)
    record["unseen_tasks"] = len(unseen)
    record["unseen_product_mentions"] = sum(len(gold[t["id"]]) for t in unseen)
    record["unseen_product_found_exactly"] = hits
    record["unseen_product_predicted"] = sum(map(len, found.values()))
    assert hits >= record["unseen_product_mentions"] / 3, record

    # -- each project's Data Manager follows its own scores -----------------------------------------
    for pid, predictions in ((first_pid, before), (second_pid, learned)):
        ordered = api.tasks_by_prediction_score(pid)
        scores = [t.get("predictions_score") for t in ordered]
        assert all(s is not None for s in scores) and scores == sorted(scores), scores
        for task in ordered:
            assert abs(task["predictions_score"] - predictions[task["id"]]["score"]) < 1e-3, task
    record["seconds"] = timings

    # -- a second deployment in the same backend process: project 1 trains too -------------------
    # Each deployment exports its head to ONNX; the exporter once fixed every later export in a
    # process to its sample's length, and that version then refused texts of any other length.
    _annotate_gold(api, first_tasks)
    started = time.monotonic()
    api.train(first_ml)
    v2, _ = _wait_new_version(backend, first_pid, v0, started)
    record["second_deployment_s"] = round(time.monotonic() - started, 1)
    _wait_training_idle(backend, first_pid)
    assert backend.model_version(second_pid) == v1
    _wait_project_version(api, first_pid, v2)  # its ranking stored; /predict of many tasks waits for that
    answer = backend.predict(first_tasks, first_pid)
    assert [item["model_version"] for item in answer] == [v2] * len(first_tasks)
    assert len({len(t["data"]["text"]) for t in first_tasks}) > 1


def _wait_project_version(api, pid: int, version: str, timeout: float = 180) -> None:
    """Until the backend has set the project's model_version (after storing its predictions)."""
    deadline = time.monotonic() + timeout
    while api.get_project(pid).get("model_version") != version and time.monotonic() < deadline:
        time.sleep(1)
    assert api.get_project(pid).get("model_version") == version, f"project {pid} never got model_version {version}"


def _spans(result: list[dict]) -> list[tuple]:
    return sorted((r["value"]["start"], r["value"]["end"], r["value"]["labels"][0]) for r in result)
