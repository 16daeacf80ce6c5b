"""When training runs: counting, debouncing, one job at a time, at most one queued."""
from __future__ import annotations

import threading
import time

from raner_backend.training.jobs import TrainingManager


class Recorder:
    def __init__(self, seconds=0.3, fail=False):
        self.calls, self.active, self.max_active = [], 0, 0
        self.seconds, self.fail = seconds, fail
        self.lock = threading.Lock()

    def __call__(self, project_id, report):
        with self.lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            self.calls.append(project_id)
        report({"epoch": 1})
        time.sleep(self.seconds)
        with self.lock:
            self.active -= 1
        if self.fail:
            raise RuntimeError("boom")
        return {"ok": True}


def wait_idle(manager, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not manager.busy() and all(not s.timer for s in manager._projects.values()):
            return
        time.sleep(0.05)
    raise AssertionError("manager never went idle")


def test_unknown_events_are_ignored():
    job = Recorder()
    manager = TrainingManager(job, threshold=1, debounce_s=0.05)
    assert manager.on_event("TASKS_CREATED", 1) == "ignored"
    assert manager.on_event("PROJECT_UPDATED", 1) == "ignored"
    time.sleep(0.2)
    assert job.calls == []


def test_annotations_count_towards_the_threshold_and_are_debounced():
    job = Recorder(seconds=0.01)
    manager = TrainingManager(job, threshold=3, debounce_s=0.2)
    assert manager.on_event("ANNOTATION_CREATED", 4).startswith("counted")
    assert manager.on_event("ANNOTATION_UPDATED", 4).startswith("counted")
    for _ in range(5):
        manager.on_event("ANNOTATION_CREATED", 4)
    wait_idle(manager)
    assert job.calls == [4]


def test_a_storm_gives_one_training_plus_at_most_one_queued():
    job = Recorder(seconds=0.5)
    manager = TrainingManager(job, threshold=1, debounce_s=0.0)
    started = time.perf_counter()
    for _ in range(100):
        manager.on_event("START_TRAINING", 2)
    assert time.perf_counter() - started < 1.0  # answering never waits for training
    wait_idle(manager)
    assert 1 <= len(job.calls) <= 2 and job.max_active == 1


def test_projects_never_train_concurrently():
    job = Recorder(seconds=0.2)
    manager = TrainingManager(job, threshold=1, debounce_s=0.0)
    manager.on_event("START_TRAINING", 1)
    manager.on_event("START_TRAINING", 2)
    wait_idle(manager)
    assert sorted(job.calls) == [1, 2] and job.max_active == 1


def test_a_failed_job_is_reported_and_the_next_trigger_tries_again():
    job = Recorder(seconds=0.01, fail=True)
    manager = TrainingManager(job, threshold=1, debounce_s=0.0)
    manager.on_event("START_TRAINING", 3)
    wait_idle(manager)
    assert "boom" in manager.status()["3"]["last_error"]
    job.fail = False
    manager.on_event("START_TRAINING", 3)
    wait_idle(manager)
    assert manager.status()["3"]["last_error"] is None and len(job.calls) == 2


def test_a_steady_stream_of_saves_does_not_put_training_off():
    job = Recorder(seconds=0.01)
    manager = TrainingManager(job, threshold=2, debounce_s=0.3)
    started = time.perf_counter()
    while not job.calls and time.perf_counter() - started < 3.0:
        manager.on_event("ANNOTATION_CREATED", 5)  # one save every 0.1 s, never a quiet 0.3 s
        time.sleep(0.1)
    assert job.calls == [5] and time.perf_counter() - started < 1.0


def test_start_training_takes_over_a_pending_debounce():
    job = Recorder(seconds=0.01)
    manager = TrainingManager(job, threshold=1, debounce_s=0.3)
    manager.on_event("ANNOTATION_CREATED", 6)
    manager.on_event("START_TRAINING", 6)
    wait_idle(manager)
    time.sleep(0.4)  # past the debounce: the cancelled timer must not start a second job
    assert job.calls == [6]


def test_webhooks_for_many_projects_make_no_thread_per_project():
    job = Recorder(seconds=0.02)
    manager = TrainingManager(job, threshold=1, debounce_s=0.0)
    before = threading.active_count()
    for project in range(1, 51):
        manager.on_event("START_TRAINING", project)
    assert threading.active_count() <= before + 1
    wait_idle(manager)
    assert job.calls == list(range(1, 51)) and job.max_active == 1


def test_the_projects_tracked_are_bounded_and_the_one_idle_longest_is_forgotten():
    manager = TrainingManager(Recorder(), threshold=100, debounce_s=0.0, max_projects=2)
    for project in (1, 2, 1, 3):  # 1 was used again after 2: 2 has been idle longest
        assert manager.on_event("ANNOTATION_CREATED", project).startswith("counted")
    assert sorted(manager.status()) == ["1", "3"]
    assert manager.status()["1"]["new_annotations"] == 2


def test_a_new_project_is_ignored_while_every_tracked_project_is_busy():
    job = Recorder(seconds=0.3)
    manager = TrainingManager(job, threshold=1, debounce_s=0.0, max_projects=2)
    manager.on_event("START_TRAINING", 1)
    manager.on_event("START_TRAINING", 2)
    assert manager.on_event("START_TRAINING", 3).startswith("ignored")
    assert manager.on_event("ANNOTATION_CREATED", 3).startswith("ignored")
    wait_idle(manager)
    assert job.calls == [1, 2]
    assert manager.on_event("START_TRAINING", 3) == "training scheduled"
    wait_idle(manager)
    assert job.calls == [1, 2, 3]


def test_a_busy_project_is_never_forgotten_and_one_without_counted_annotations_goes_first():
    job = Recorder(seconds=0.3)
    manager = TrainingManager(job, threshold=100, debounce_s=0.0, max_projects=2)
    manager.on_event("ANNOTATION_CREATED", 1)
    manager.on_event("START_TRAINING", 2)  # running: cannot be forgotten
    assert manager.on_event("ANNOTATION_CREATED", 3).startswith("counted")  # 1 (idle) made room
    assert sorted(manager.status()) == ["2", "3"]
    wait_idle(manager)
    manager.on_event("ANNOTATION_CREATED", 4)  # 2 has nothing counted; 3 would lose its count
    assert sorted(manager.status()) == ["3", "4"] and manager.status()["3"]["new_annotations"] == 1
