"""When to train: webhook events counted and debounced per project, one job at a time.

``START_TRAINING`` trains now; annotation events count towards a threshold and are debounced
(a burst becomes one job); anything else is ignored. A project never has more than one job
running and one queued, so a storm of events gives one training plus at most one more.
"""
from __future__ import annotations

import logging
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable

log = logging.getLogger(__name__)

COUNTED = {"ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_CREATED", "ANNOTATIONS_DELETED",
           "ANNOTATION_DELETED"}
TRAIN_NOW = "START_TRAINING"


@dataclass
class ProjectState:
    new_annotations: int = 0
    running: bool = False
    queued: bool = False
    jobs_started: int = 0
    progress: dict = field(default_factory=dict)
    last_error: str | None = None
    last_result: dict | None = None
    timer: threading.Timer | None = field(default=None, repr=False)

    def public(self) -> dict:
        return {"state": "running" if self.running else "queued" if self.queued else "idle",
                "new_annotations": self.new_annotations, "jobs_started": self.jobs_started,
                "progress": self.progress, "last_error": self.last_error, "last_result": self.last_result}


class TrainingManager:
    """``job(project_id, report)`` does the training; ``report(dict)`` publishes progress."""

    def __init__(self, job: Callable[[int, Callable[[dict], None]], dict], threshold: int = 10,
                 debounce_s: float = 5.0):
        self.job = job
        self.threshold = max(1, threshold)
        self.debounce_s = debounce_s
        self._lock = threading.Lock()
        self._run_lock = threading.Lock()  # one training at a time on this machine
        self._projects: dict[int, ProjectState] = {}

    def _state(self, project_id: int) -> ProjectState:
        return self._projects.setdefault(project_id, ProjectState())

    def on_event(self, action: str, project_id: int) -> str:
        """Classify an event; returns what was decided (for the webhook's answer)."""
        if action == TRAIN_NOW:
            self.request(project_id)
            return "training scheduled"
        if action not in COUNTED:
            return "ignored"
        with self._lock:
            state = self._state(project_id)
            state.new_annotations += 1
            if state.new_annotations < self.threshold:
                return f"counted ({state.new_annotations}/{self.threshold})"
            if state.timer is not None:
                state.timer.cancel()
            state.timer = threading.Timer(self.debounce_s, self.request, args=(project_id,))
            state.timer.daemon = True
            state.timer.start()
        return "training scheduled (debounced)"

    def request(self, project_id: int) -> None:
        with self._lock:
            state = self._state(project_id)
            state.timer = None
            if state.running:
                state.queued = True
                return
            state.running = True
            state.new_annotations = 0
        threading.Thread(target=self._worker, args=(project_id,), name=f"train-{project_id}", daemon=True).start()

    def _worker(self, project_id: int) -> None:
        while True:
            state = self._projects[project_id]
            with self._run_lock:
                with self._lock:
                    state.jobs_started += 1
                    state.progress = {"stage": "starting", "started": time.time()}
                try:
                    result = self.job(project_id, lambda p: self._report(project_id, p))
                    with self._lock:
                        state.last_result, state.last_error = result, None
                except Exception as exc:  # a failed job must never take the service down
                    log.error("training for project %s failed: %s", project_id, exc)
                    log.debug("%s", traceback.format_exc())
                    with self._lock:
                        state.last_error = f"{type(exc).__name__}: {exc}"
            with self._lock:
                state.progress = dict(state.progress, stage="finished")
                if state.queued:
                    state.queued = False
                    state.new_annotations = 0
                    continue
                state.running = False
                return

    def _report(self, project_id: int, progress: dict) -> None:
        with self._lock:
            self._state(project_id).progress = dict(self._state(project_id).progress, **progress)

    def status(self) -> dict:
        with self._lock:
            return {str(pid): state.public() for pid, state in self._projects.items()}

    def busy(self) -> bool:
        with self._lock:
            return any(s.running for s in self._projects.values())
