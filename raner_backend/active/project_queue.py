"""Rank a Label Studio project's unlabelled tasks and store the queue there.

Diversity needs the whole pool, not one ``/predict`` request, so this runs as a job (the
``rank`` command, and after each deployment) in stages, each reported to ``progress``:

- ``predict``: the tasks are pulled page by page (id, data, labelled, the versions of their
  predictions) and each page is predicted in one call (the engine sorts a page into batches of
  similar length: 2.5x the rate of 64-task calls here). Of each task only what the queue needs
  is kept (its uncertainty, embedding and regions: about 4 kB with the engine's results cache,
  which is bounded), never the pages or the engine's results;
- ``rank``: the unlabelled tasks are ranked against each other and against the labelled ones
  (``ranking.rank_pool``);
- ``store``: each unlabelled task gets a prediction of that version carrying its priority as
  ``score``. Earlier predictions of the same version are replaced, because Label Studio's score
  column averages all of them: one request deletes the version, and labelled tasks that held a
  prediction of it get theirs back (``/predict``'s). Predictions go in bulk, a chunk per request,
  large because each request costs Label Studio time in proportion to the project
  (benchmarks/results/rank_scale_10k_chunks500.json: 20 chunks of 500 took 152 s in a 10,000-task
  project). Label Studio 1.23's bulk import drops ``cluster``, and one request per task costs
  0.1-0.2 s, so a pool of up to ``cluster_limit`` tasks is stored one task at a time with its
  cluster, a larger one without clusters: Label Studio's uncertainty sampling then follows the
  score order, which the k-center queue has already spread over kinds of text.

Last, the project's ``model_version`` is set, so the Data Manager and "Uncertainty sampling"
order by this queue.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Protocol, Sequence

import numpy as np
from tqdm import tqdm

from ..labeling import LabelSchema, to_regions
from .ranking import rank_pool
from .uncertainty import Uncertainty, uncertainty_of

log = logging.getLogger(__name__)

PAGE_SIZE = 500
STORE_CHUNK = 5000  # Label Studio 1.23 spends ~8 s per import call in a 10,000-task project, whatever its size
CLUSTER_LIMIT = 300
PREVIEW_CHARS = 60

Progress = Callable[[str, int, int], None]  # (stage, done, total)


class ProjectApi(Protocol):
    """What the job needs of Label Studio (``training.ls_client.LabelStudioClient`` provides it)."""

    def task_page(self, project_id: int, page: int, page_size: int) -> tuple[list[dict], int]: ...
    def delete_predictions_of_version(self, project_id: int, version: str, expected: int = 0) -> int: ...
    def import_predictions(self, project_id: int, predictions: list[dict]) -> None: ...
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
    text: str  # the first PREVIEW_CHARS characters: the queue is for display

    def to_dict(self) -> dict:
        return {"task": self.task_id, "position": self.position, "score": round(self.score, 6),
                "cluster": self.cluster, **self.uncertainty, "diversity": round(self.diversity, 4),
                "entities": self.entities, "text": self.text}


@dataclass
class QueueReport:
    project: int
    model_version: str
    queue: list[QueuedTask] = field(default_factory=list)
    labelled: int = 0
    skipped: int = 0
    replaced: int = 0
    clusters_stored: bool = False
    seconds: float = 0.0

    def summary(self) -> dict:
        """Counts only: this goes to the open /health route, which must not show task texts."""
        return {"project": self.project, "model_version": self.model_version, "stage": "done",
                "ranked": len(self.queue), "labelled": self.labelled, "skipped": self.skipped,
                "replaced_predictions": self.replaced, "clusters_stored": self.clusters_stored,
                "seconds": round(self.seconds, 1)}


@dataclass(frozen=True)
class PooledTask:
    """What the queue keeps of one predicted task."""

    task_id: int
    labelled: bool
    uncertainty: Uncertainty
    regions: list | None  # only where a prediction will be stored: unlabelled, or labelled and restored
    entities: int
    preview: str


@dataclass
class Pool:
    tasks: list[PooledTask] = field(default_factory=list)
    embeddings: list[np.ndarray] = field(default_factory=list)
    skipped: int = 0
    holding_version: int = 0  # tasks listed with a prediction of the version already

    def indices(self, labelled: bool) -> list[int]:
        return [i for i, t in enumerate(self.tasks) if t.labelled == labelled]


def rank_project(api: ProjectApi, project_id: int, predictor, schema: LabelSchema, clusters: int = 10,
                 progress: Progress | None = None, page_size: int = PAGE_SIZE,
                 cluster_limit: int = CLUSTER_LIMIT) -> QueueReport:
    """Predict every task with ``predictor``, rank the unlabelled ones, store scores (and clusters)."""
    started = time.monotonic()
    progress = progress or (lambda stage, done, total: None)
    report = QueueReport(project_id, predictor.version)
    pool = predict_pool(api, project_id, predictor, schema, page_size, progress)
    report.skipped = pool.skipped
    unlabelled, labelled = pool.indices(labelled=False), pool.indices(labelled=True)
    report.labelled = len(labelled)
    if not unlabelled:
        log.info("project %s: no unlabelled task to rank", project_id)
        report.seconds = time.monotonic() - started
        return report
    progress("rank", 0, len(unlabelled))
    report.queue = queue_of(pool, unlabelled, labelled, clusters)
    progress("rank", len(unlabelled), len(unlabelled))
    report.clusters_stored = len(report.queue) <= cluster_limit
    report.replaced = store_queue(api, report, pool, progress)
    api.set_model_version(project_id, report.model_version)
    report.seconds = time.monotonic() - started
    log_queue(report)
    return report


def task_pages(api: ProjectApi, project_id: int, page_size: int) -> Iterator[tuple[list[dict], int]]:
    """The project's tasks a page at a time, with the project's task count."""
    page, seen = 1, 0
    while True:
        tasks, total = api.task_page(project_id, page, page_size)
        if not tasks:
            return
        seen += len(tasks)
        yield tasks, total
        if seen >= total:
            return
        page += 1


def predict_pool(api: ProjectApi, project_id: int, predictor, schema: LabelSchema, page_size: int,
                 progress: Progress) -> Pool:
    pool, done = Pool(), 0
    for tasks, total in task_pages(api, project_id, page_size):
        readable, skipped = readable_tasks(tasks, schema.data_key)
        pool.skipped += skipped
        texts = [t["data"][schema.data_key] for t in readable]
        pool.holding_version += sum(predictor.version in t["versions"] for t in tasks)
        for task, text, result in zip(readable, texts, predictor.predict(texts)):
            pool.tasks.append(pooled(task, text, result, schema, predictor.version))
            pool.embeddings.append(np.asarray(result.embedding, dtype=np.float32))
        done += len(tasks)
        progress("predict", done, total)
    return pool


def pooled(task: dict, text: str, result, schema: LabelSchema, version: str) -> PooledTask:
    stored = not task["labelled"] or version in task["versions"]
    return PooledTask(task["id"], task["labelled"], uncertainty_of(result),
                      to_regions(schema, text, result.entities) if stored else None, len(result.entities),
                      text[:PREVIEW_CHARS])


def readable_tasks(tasks: Sequence[dict], data_key: str) -> tuple[list[dict], int]:
    """Tasks whose ``data[data_key]`` is a string; the others are logged and skipped."""
    kept = [t for t in tasks if isinstance(t.get("data"), dict) and isinstance(t["data"].get(data_key), str)]
    skipped = len(tasks) - len(kept)
    if skipped:
        log.warning("%d task(s) have no text under data.%s and are not ranked", skipped, data_key)
    return kept, skipped


def queue_of(pool: Pool, unlabelled: list[int], labelled: list[int], clusters: int) -> list[QueuedTask]:
    ranking = rank_pool(np.array([pool.tasks[i].uncertainty.value for i in unlabelled]),
                        np.stack([pool.embeddings[i] for i in unlabelled]),
                        labelled=np.stack([pool.embeddings[i] for i in labelled]) if labelled else None,
                        clusters=clusters)
    queue = []
    for position, k in enumerate(ranking.order.tolist()):
        task = pool.tasks[unlabelled[k]]
        queue.append(QueuedTask(task.task_id, position, float(ranking.score[k]), int(ranking.cluster[k]),
                                task.uncertainty.to_dict(), float(ranking.diversity[k]), task.entities,
                                task.preview))
    return queue


def store_queue(api: ProjectApi, report: QueueReport, pool: Pool, progress: Progress) -> int:
    """One prediction of the report's version per queued task, and the labelled tasks' own back;
    returns how many predictions of that version it replaced."""
    version = report.model_version
    regions = {t.task_id: t.regions for t in pool.tasks if t.regions is not None}
    restored = [{"task": t.task_id, "result": t.regions, "score": t.uncertainty.confidence, "model_version": version}
                for t in pool.tasks if t.labelled and t.regions is not None]
    total = len(report.queue) + len(restored)
    progress("store", 0, total)
    replaced = api.delete_predictions_of_version(report.project, version, expected=pool.holding_version)
    if report.clusters_stored:
        for done, q in enumerate(report.queue, 1):
            api.create_prediction(q.task_id, regions[q.task_id], q.score, version, cluster=q.cluster)
            progress("store", done, total)
        rows, done = restored, len(report.queue)
    else:
        rows, done = [{"task": q.task_id, "result": regions[q.task_id], "score": q.score, "model_version": version}
                      for q in report.queue] + restored, 0
    for start in range(0, len(rows), STORE_CHUNK):
        chunk = rows[start : start + STORE_CHUNK]
        api.import_predictions(report.project, chunk)
        done += len(chunk)
        progress("store", done, total)
    return replaced


class StageBars:
    """Progress on the command line: one tqdm bar per stage (on stderr)."""

    def __init__(self) -> None:
        self.stage: str | None = None
        self.bar: tqdm | None = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage != self.stage:
            self.close()
            self.stage, self.bar = stage, tqdm(total=total, desc=f"{stage:<8}", unit="task")
        self.bar.total = total
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.stage, self.bar = None, None


def log_queue(report: QueueReport, top: int = 10) -> None:
    log.info("project %s ranked with %s: %d unlabelled task(s), %d labelled, %.1f s", report.project,
             report.model_version, len(report.queue), report.labelled, report.seconds)
    for q in report.queue[:top]:
        log.info("  #%d task %d score %.4f cluster %d entropy mean %.3f max %.3f path-doubt %.3f diversity %.3f",
                 q.position + 1, q.task_id, q.score, q.cluster, q.uncertainty["mean_entropy"],
                 q.uncertainty["max_entropy"], q.uncertainty["mnlp"], q.diversity)
