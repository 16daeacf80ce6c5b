"""Faults: half-written versions are never loaded, secrets never reach logs or answers."""
from __future__ import annotations

import errno
import json
import logging
import time

import pytest

from raner_backend.model.registry import Registry


def test_half_written_versions_and_staging_leftovers_are_never_loaded(tiny_settings):
    from raner_backend.service import Backend

    registry = Registry(tiny_settings.model_dir)
    served = registry.current().name
    # What a kill -9 can leave: a build in staging, a version folder without its manifest, a
    # version folder whose manifest is cut short, and a CURRENT pointing at nothing.
    leftover = registry.new_staging()
    (leftover / "head.safetensors").write_bytes(b"partial")
    (registry.versions_dir / "raner-7-0123abcd").mkdir()
    broken = registry.versions_dir / "raner-8-89abcdef"
    broken.mkdir()
    (broken / "manifest.json").write_text('{"version": "raner-8-')
    backend = Backend(tiny_settings).start()
    assert backend.models.version() == served
    assert list(registry.staging_dir.iterdir()) == []
    (tiny_settings.model_dir / "CURRENT").write_text("raner-9-00000000\n")
    assert Registry(tiny_settings.model_dir).current().name == served


def test_secrets_never_reach_logs_or_answers(tiny_backend, client, caplog):
    caplog.set_level(logging.DEBUG)
    client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 11}})
    deadline = time.time() + 30
    while time.time() < deadline and not tiny_backend.trainer.status().get("11", {}).get("last_error"):
        time.sleep(0.1)
    answers = json.dumps([client.get("/health").json, client.get("/versions").json,
                          client.post("/setup", json={"schema": "<View/>"}).json])
    secret = tiny_backend.settings.label_studio_api_key
    assert tiny_backend.trainer.status()["11"]["last_error"]
    assert secret not in caplog.text and secret not in answers
    assert secret not in repr(tiny_backend.settings)


def test_a_password_inside_label_studio_url_never_reaches_errors_or_health(tiny_settings, caplog):
    import dataclasses

    from raner_backend.server.app import create_app
    from raner_backend.service import Backend
    from raner_backend.training.ls_client import LabelStudioClient

    assert LabelStudioClient("http://ops:pa55word@127.0.0.1:9/", "k").shown_url == "http://127.0.0.1:9"
    assert LabelStudioClient("http://127.0.0.1:9/ls", "k").shown_url == "http://127.0.0.1:9/ls"
    caplog.set_level(logging.DEBUG)
    backend = Backend(dataclasses.replace(tiny_settings, label_studio_url="http://ops:pa55word@127.0.0.1:9")).start()
    backend.attach_training()
    client = create_app(backend).test_client()
    client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 13}})
    deadline = time.time() + 30
    while time.time() < deadline and not backend.trainer.status().get("13", {}).get("last_error"):
        time.sleep(0.1)
    error = backend.trainer.status()["13"]["last_error"]
    assert "127.0.0.1:9" in error and "pa55word" not in error
    assert "pa55word" not in caplog.text and "pa55word" not in json.dumps(client.get("/health").json)


def test_a_storm_of_annotation_webhooks_answers_fast_and_trains_at_most_twice(client, tiny_backend):
    slowest = 0.0
    for i in range(100):
        t0 = time.perf_counter()
        r = client.post("/webhook", json={"action": "ANNOTATION_CREATED", "project": {"id": 21},
                                          "annotation": {"id": i, "task": i, "project": 21, "result": []}})
        slowest = max(slowest, time.perf_counter() - t0)
        assert r.status_code == 200
    assert slowest < 0.1
    time.sleep(tiny_backend.settings.train_debounce_s + 0.5)
    deadline = time.time() + 30
    while time.time() < deadline and tiny_backend.trainer.busy():
        time.sleep(0.1)
    assert 1 <= tiny_backend.trainer.status()["21"]["jobs_started"] <= 2


def _candidate(tiny_backend, deploy=True):
    from raner_backend.model.bundle import HeadBundle
    from raner_backend.training.fine_tune import FineTuneResult

    bundle = HeadBundle.load(tiny_backend.registry.current().path)
    return FineTuneResult(bundle, deploy, "test verdict", {"note": "test"})


@pytest.mark.parametrize("code, message", [(errno.ENOSPC, "No space left on device"),
                                           (errno.EROFS, "Read-only file system")])
def test_a_full_or_read_only_disk_while_writing_a_version_keeps_the_old_model(tiny_backend, monkeypatch, code,
                                                                             message):
    current = tiny_backend.registry.current()

    def failing_write(*args, **kwargs):
        raise OSError(code, message)

    monkeypatch.setattr("raner_backend.model.bundle.save_file", failing_write)
    with pytest.raises(OSError):
        tiny_backend.deploy(_candidate(tiny_backend), current, 5, 0)
    assert tiny_backend.models.version(5) == current.name
    assert [v.name for v in tiny_backend.registry.versions()] == [current.name]
    assert list(tiny_backend.registry.staging_dir.iterdir()) == []
    assert message in tiny_backend.deploy_notes[-1]["reason"]


def test_a_refused_candidate_keeps_the_old_model_and_says_why(tiny_backend):
    current = tiny_backend.registry.current()
    note = tiny_backend.deploy(_candidate(tiny_backend, deploy=False), current, 5, 0)
    assert not note["deployed"] and tiny_backend.models.version(5) == current.name
    assert tiny_backend.health()["deployments"][-1]["reason"] == "test verdict"


def test_kill_9_while_writing_a_version_leaves_the_last_complete_one(tiny_settings):
    import os
    import signal
    import subprocess
    import sys

    from raner_backend.service import Backend

    served = Registry(tiny_settings.model_dir).current().name
    writer = subprocess.Popen([sys.executable, "-c", f"""
import time
from pathlib import Path
from raner_backend.model.registry import Registry
registry = Registry(Path({str(tiny_settings.model_dir)!r}))
staging = registry.new_staging()
with open(staging / "head.safetensors", "wb") as f:
    f.write(b"half")
    f.flush()
    print("writing", flush=True)
    time.sleep(60)
"""], stdout=subprocess.PIPE)
    assert writer.stdout.readline().strip() == b"writing"
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    assert any(Registry(tiny_settings.model_dir).staging_dir.iterdir())
    backend = Backend(tiny_settings).start()
    assert backend.models.version() == served
    assert not any(backend.registry.staging_dir.iterdir())


def test_out_of_memory_in_training_keeps_serving_and_the_next_trigger_retries(tiny_backend, client, monkeypatch):
    from .fake_labelstudio import FakeLabelStudio

    fake = FakeLabelStudio(["张伟在北京工作。", "李娜去了上海。", "王芳在广州。", "今天天气很好。"])
    for index, spans in ((0, [(0, 2, "PER"), (3, 5, "LOC")]), (1, [(0, 2, "PER"), (4, 6, "LOC")]),
                         (2, [(0, 2, "PER"), (3, 5, "LOC")])):
        fake.annotate(index, spans)
    monkeypatch.setattr("raner_backend.training.ls_client.LabelStudioClient", lambda *a, **k: fake)
    served = tiny_backend.models.version()

    def out_of_memory(*args, **kwargs):
        raise MemoryError("simulated: cannot allocate 2.0 GiB for the encoder states")

    monkeypatch.setattr("raner_backend.training.fine_tune.fine_tune", out_of_memory)
    status = _train_and_wait(client, tiny_backend, 31)
    assert status["last_error"].startswith("MemoryError") and status["jobs_started"] == 1
    assert tiny_backend.models.version() == served
    assert client.post("/ner", json={"text": "张伟在北京。"}).status_code == 200
    assert "MemoryError" in json.dumps(client.get("/health").json["training"])

    monkeypatch.undo()
    monkeypatch.setattr("raner_backend.training.ls_client.LabelStudioClient", lambda *a, **k: fake)
    status = _train_and_wait(client, tiny_backend, 31)
    assert status["jobs_started"] == 2 and status["last_error"] is None, status
    assert tiny_backend.models.version(31) != served == tiny_backend.models.version(), tiny_backend.deploy_notes
    assert fake.model_version == tiny_backend.models.version(31), "the new version queued the unlabelled task"


def _train_and_wait(client, tiny_backend, project: int, timeout: float = 120) -> dict:
    before = tiny_backend.trainer.status().get(str(project), {}).get("jobs_started", 0)
    assert client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": project}}).status_code == 200
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = tiny_backend.trainer.status().get(str(project), {})
        if status.get("jobs_started", 0) > before and not tiny_backend.trainer.busy():
            return status
        time.sleep(0.1)
    raise AssertionError(f"training of project {project} did not finish: {tiny_backend.trainer.status()}")


def test_predictions_do_not_wait_for_a_hanging_label_studio(tiny_backend, client, monkeypatch):
    import threading

    release = threading.Event()

    class HangingLabelStudio:
        def __init__(self, *args, **kwargs):
            pass

        def label_config(self, project_id):
            release.wait(30)
            raise TimeoutError("Label Studio did not answer")

    monkeypatch.setattr("raner_backend.training.ls_client.LabelStudioClient", HangingLabelStudio)
    client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 41}})
    try:
        deadline = time.time() + 10
        while not tiny_backend.trainer.busy() and time.time() < deadline:
            time.sleep(0.05)
        assert tiny_backend.trainer.busy(), "the job should be stuck on Label Studio"
        started = time.perf_counter()
        r = client.post("/predict", json={"tasks": [{"data": {"text": f"张伟第{i}次在北京。"}} for i in range(8)]})
        assert r.status_code == 200 and len(r.json["results"]) == 8
        assert time.perf_counter() - started < 5
    finally:
        release.set()
    deadline = time.time() + 30
    while tiny_backend.trainer.busy() and time.time() < deadline:
        time.sleep(0.05)
    assert "TimeoutError" in (tiny_backend.trainer.status()["41"]["last_error"] or "")
