"""When to train: webhook events counted and debounced per project, one job at a time.

``START_TRAINING`` trains now; annotation events count towards a threshold, and the training
they trigger starts ``debounce_s`` later (a burst becomes one job; a steady stream of saves cannot
put it off for ever); anything else is ignored. One worker thread runs the jobs of every project,
oldest request first, so no project trains beside another and a storm of webhooks (for any number
of projects) never makes threads. A project never has more than one job running and one queued,
so a storm of events gives one training plus at most one more. The webhook is open (Label
Studio's sends no auth), so the projects tracked are bounded too: the idle one used longest ago
(by an event or a finished job; one with no annotations counted first) is forgotten to make
room, and events of a new project are ignored, and logged, while every tracked one is busy.
"""
from __future__ import annotations

import logging
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

log = logging.getLogger(__name__)

COUNTED = {"ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_CREATED", "ANNOTATIONS_DELETED",
           "ANNOTATION_DELETED"}
TRAIN_NOW = "START_TRAINING"
BUSY = "ignored: every tracked project has training pending"


@dataclass
class ProjectState:
    new_annotations: int = 0
    running: bool = False
    waiting: bool = False  # its job waits for the worker
    queued: bool = False  # another job after the running one
    jobs_started: int = 0
    progress: dict = field(default_factory=dict)
    last_error: str | None = None
    last_result: dict | None = None
    timer: threading.Timer | None = field(default=None, repr=False)

    def public(self) -> dict:
        return {"state": "running" if self.running else "queued" if self.waiting else "idle",
                "new_annotations": self.new_annotations, "jobs_started": self.jobs_started,
                "progress": self.progress, "last_error": self.last_error, "last_result": self.last_result}


class TrainingManager:
    """``job(project_id, report)`` does the training; ``report(dict)`` publishes progress."""

    def __init__(self, job: Callable[[int, Callable[[dict], None]], dict], threshold: int = 10,
                 debounce_s: float = 5.0, max_projects: int = 1024):
        self.job = job
        self.threshold = max(1, threshold)
        self.debounce_s = debounce_s
        self.max_projects = max(1, max_projects)
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._waiting: deque[int] = deque()  # projects whose job waits for the worker, oldest first
        self._worker: threading.Thread | None = None
        self._projects: dict[int, ProjectState] = {}

    def _state(self, project_id: int) -> ProjectState | None:
        """The project's state, most recently used last; None if it is new and no room can be made."""
        state = self._projects.pop(project_id, None)
        if state is None:
            if len(self._projects) >= self.max_projects and not self._forget_an_idle_project():
                log.warning("events of project %s ignored: all %d projects tracked are busy",
                            project_id, len(self._projects))
                return None
            state = ProjectState()
        self._projects[project_id] = state
        return state

    def _forget_an_idle_project(self) -> bool:
        """Forget the idle project used longest ago, one with no annotations counted first."""
        idle = [pid for pid, s in self._projects.items() if not (s.running or s.waiting or s.queued or s.timer)]
        if not idle:
            return False
        del self._projects[next((pid for pid in idle if not self._projects[pid].new_annotations), idle[0])]
        return True

    def on_event(self, action: str, project_id: int) -> str:
        """Classify an event; returns what was decided (for the webhook's answer)."""
        if action == TRAIN_NOW:
            return "training scheduled" if self.request(project_id) else BUSY
        if action not in COUNTED:
            return "ignored"
        with self._lock:
            state = self._state(project_id)
            if state is None:
                return BUSY
            state.new_annotations += 1
            if state.new_annotations < self.threshold:
                return f"counted ({state.new_annotations}/{self.threshold})"
            if state.timer is None:
                state.timer = threading.Timer(self.debounce_s, self.request, args=(project_id,))
                state.timer.daemon = True
                state.timer.start()
        return "training scheduled (debounced)"

    def request(self, project_id: int) -> bool:
        """Train the project as soon as the worker is free (once more after its running job);
        False if it cannot be tracked (every tracked project busy)."""
        with self._lock:
            state = self._state(project_id)
            if state is None:
                return False
            if state.timer is not None:
                state.timer.cancel()  # harmless when the timer itself is calling
                state.timer = None
            if state.running:
                state.queued = True
                return True
            if not state.waiting:
                state.waiting, state.new_annotations = True, 0
                self._waiting.append(project_id)
                self._work.notify()
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._run_jobs, name="training", daemon=True)
                self._worker.start()
        return True

    def _run_jobs(self) -> None:
        while True:
            with self._lock:
                while not self._waiting:
                    self._work.wait()
                project_id = self._waiting.popleft()
                state = self._projects[project_id]
                state.waiting, state.running = False, True
                state.jobs_started += 1
                state.progress = {"stage": "starting", "started": time.time()}
            self._run_one(project_id, state)
            with self._lock:
                state.progress = dict(state.progress, stage="finished")
                state.running = False
                self._projects[project_id] = self._projects.pop(project_id)  # just used: forgotten last
                if state.queued:
                    state.queued, state.waiting, state.new_annotations = False, True, 0
                    self._waiting.append(project_id)

    def _run_one(self, project_id: int, state: ProjectState) -> None:
        try:
            result = self.job(project_id, lambda p: self._report(project_id, p))
            with self._lock:
                state.last_result, state.last_error = result, None
        except Exception as exc:  # a failed job must never take the service down
            log.error("training for project %s failed: %s", project_id, exc)
            log.debug("%s", traceback.format_exc())
            with self._lock:
                state.last_error = f"{type(exc).__name__}: {exc}"

    def _report(self, project_id: int, progress: dict) -> None:
        with self._lock:
            state = self._projects[project_id]  # running: never forgotten
            state.progress = dict(state.progress, **progress)

    def status(self) -> dict:
        with self._lock:
            return {str(pid): state.public() for pid, state in self._projects.items()}

    def busy(self) -> bool:
        with self._lock:
            return any(s.running or s.waiting for s in self._projects.values())
