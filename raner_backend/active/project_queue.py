"""Rank a Label Studio project's unlabelled tasks and store the queue there.

Diversity needs the whole pool, not one ``/predict`` request, so this runs as a job (the
``rank`` command, and after each deployment): every task is predicted with one model version,
the unlabelled ones are ranked against each other and against the labelled ones
(``ranking.rank_pool``), and each unlabelled task gets a prediction of that version carrying its
priority as ``score`` and its ``cluster``. Earlier predictions of the same version are replaced,
because Label Studio's score column averages all of them. Then the project's ``model_version``
is set, so the Data Manager and "Uncertainty sampling" order by this queue.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Protocol, Sequence

import numpy as np
from tqdm import tqdm

from ..labeling import LabelSchema, to_regions
from .ranking import rank_pool
from .uncertainty import uncertainty_of

log = logging.getLogger(__name__)

PREDICT_CHUNK = 64


class ProjectApi(Protocol):
    """What the job needs of Label Studio (``training.ls_client.LabelStudioClient`` provides it)."""

    def tasks(self, project_id: int) -> list[dict]: ...
    def delete_prediction(self, prediction_id: int) -> None: ...
    def create_prediction(self, task_id: int, result: list, score: float, version: str,
                          cluster: int | None = None) -> None: ...
    def set_model_version(self, project_id: int, version: str) -> None: ...


@dataclass(frozen=True)
class QueuedTask:
    task_id: int
    position: int
    score: float
    cluster: int
    uncertainty: dict
    diversity: float
    entities: int
    text: str

    def to_dict(self) -> dict:
        return {"task": self.task_id, "position": self.position, "score": round(self.score, 6),
                "cluster": self.cluster, **self.uncertainty, "diversity": round(self.diversity, 4),
                "entities": self.entities, "text": self.text[:60]}


@dataclass
class QueueReport:
    project: int
    model_version: str
    queue: list[QueuedTask] = field(default_factory=list)
    labelled: int = 0
    skipped: int = 0
    replaced: int = 0
    seconds: float = 0.0

    def summary(self) -> dict:
        """Counts only: this goes to the open /health route, which must not show task texts."""
        return {"project": self.project, "model_version": self.model_version, "ranked": len(self.queue),
                "labelled": self.labelled, "skipped": self.skipped, "replaced_predictions": self.replaced,
                "seconds": round(self.seconds, 1)}


def rank_project(api: ProjectApi, project_id: int, predictor, schema: LabelSchema, clusters: int = 10,
                 progress: bool = False) -> QueueReport:
    """Predict every task with ``predictor``, rank the unlabelled ones, store scores and clusters."""
    started = time.monotonic()
    report = QueueReport(project_id, predictor.version)
    tasks, report.skipped = readable_tasks(api.tasks(project_id), schema.data_key)
    texts = [t["data"][schema.data_key] for t in tasks]
    results = predict_all(predictor, texts, progress)
    pool = [i for i, t in enumerate(tasks) if not t["labelled"]]
    labelled = [i for i, t in enumerate(tasks) if t["labelled"]]
    report.labelled = len(labelled)
    if not pool:
        log.info("project %s: no unlabelled task to rank", project_id)
        report.seconds = time.monotonic() - started
        return report
    uncertainties = [uncertainty_of(results[i]) for i in pool]
    ranking = rank_pool(np.array([u.value for u in uncertainties]),
                        np.stack([results[i].embedding for i in pool]),
                        labelled=np.stack([results[i].embedding for i in labelled]) if labelled else None,
                        clusters=clusters)
    for position, k in enumerate(ranking.order.tolist()):
        i = pool[k]
        report.queue.append(QueuedTask(tasks[i]["id"], position, float(ranking.score[k]), int(ranking.cluster[k]),
                                       uncertainties[k].to_dict(), float(ranking.diversity[k]),
                                       len(results[i].entities), texts[i]))
    report.replaced = store_queue(api, report, {tasks[i]["id"]: (tasks[i], texts[i], results[i]) for i in pool},
                                  schema, progress)
    api.set_model_version(project_id, report.model_version)
    report.seconds = time.monotonic() - started
    log_queue(report)
    return report


def readable_tasks(tasks: Sequence[dict], data_key: str) -> tuple[list[dict], int]:
    """Tasks whose ``data[data_key]`` is a string; the others are logged and skipped."""
    kept = [t for t in tasks if isinstance(t.get("data"), dict) and isinstance(t["data"].get(data_key), str)]
    skipped = len(tasks) - len(kept)
    if skipped:
        log.warning("%d task(s) have no text under data.%s and are not ranked", skipped, data_key)
    return kept, skipped


def predict_all(predictor, texts: Sequence[str], progress: bool) -> list:
    results = []
    with tqdm(total=len(texts), desc="predict", unit="task", disable=not progress) as bar:
        for start in range(0, len(texts), PREDICT_CHUNK):
            chunk = texts[start : start + PREDICT_CHUNK]
            results.extend(predictor.predict(chunk))
            bar.update(len(chunk))
    return results


def store_queue(api: ProjectApi, report: QueueReport, predicted: dict[int, tuple], schema: LabelSchema,
                progress: bool) -> int:
    """One prediction of the report's version per queued task (``predicted``: task id → (task, text,
    result)); returns how many old predictions of that version it replaced."""
    replaced = 0
    for queued in tqdm(report.queue, desc="store", unit="task", disable=not progress):
        task, text, result = predicted[queued.task_id]
        for old in task["predictions"]:
            if old["model_version"] == report.model_version:
                api.delete_prediction(old["id"])
                replaced += 1
        api.create_prediction(queued.task_id, to_regions(schema, text, result.entities), queued.score,
                              report.model_version, cluster=queued.cluster)
    return replaced


def log_queue(report: QueueReport, top: int = 10) -> None:
    log.info("project %s ranked with %s: %d unlabelled task(s), %d labelled, %.1f s", report.project,
             report.model_version, len(report.queue), report.labelled, report.seconds)
    for q in report.queue[:top]:
        log.info("  #%d task %d score %.4f cluster %d entropy mean %.3f max %.3f path-doubt %.3f diversity %.3f",
                 q.position + 1, q.task_id, q.score, q.cluster, q.uncertainty["mean_entropy"],
                 q.uncertainty["max_entropy"], q.uncertainty["mnlp"], q.diversity)
