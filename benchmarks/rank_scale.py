"""Ranking at scale: a real Label Studio project of N tasks ranked end to end (pull, predict, rank,
store score and cluster, set model_version), wall time per stage and memory.

A Label Studio 1.23.2 is started as the end-to-end tests start it (``tests/e2e/labelstudio.py``,
``.venv-ls``), a project gets N MSRA test sentences (repeated with a numbered suffix past the
5,000 there are), a few of them are annotated, and every task first gets a prediction of the
served version, as "Retrieve predictions" leaves it, so the ranking has to replace them all (the
`rank` command's usual case). The backend runs in this process on ``MODEL_DIR`` (default
``var/models``, after ``raner-backend setup``); its memory is sampled while it ranks.

    flock /tmp/e2e.lock .venv/bin/python benchmarks/rank_scale.py --tasks 10000   # benchmarks/results/rank_scale.json
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import threading
import time
from collections import Counter
from itertools import cycle, islice
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from raner_backend.model.data import msra_path, read_tagged  # noqa: E402
from raner_backend.service import Backend  # noqa: E402
from raner_backend.settings import Settings  # noqa: E402
from raner_backend.training.ls_client import LabelStudioClient  # noqa: E402
from tests.e2e.labelstudio import LabelStudioApi, LabelStudioServer, install_label_studio, region_id  # noqa: E402

from process_memory import rss_mb  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "rank_scale.json"
IMPORT_CHUNK = 2000


def texts(n: int) -> list[str]:
    """The first ``n`` of msra_test.txt's 5,000 sentences, then the same again with a suffix, so
    no two tasks share a text (and the results cache never answers for the model)."""
    base = [e.text for e in read_tagged(msra_path("msra_test.txt"))]
    return [text if k < len(base) else f"{text}（{k // len(base)}）" for k, text in enumerate(islice(cycle(base), n))]


class TimedClient:
    """The backend's Label Studio client, timing each kind of call (the pull is inside ``predict``)."""

    def __init__(self, client: LabelStudioClient) -> None:
        self.client = client
        self.seconds: Counter = Counter()
        self.calls: Counter = Counter()

    def __getattr__(self, name: str):
        method = getattr(self.client, name)

        def timed(*args, **kwargs):
            started = time.monotonic()
            try:
                return method(*args, **kwargs)
            finally:
                self.seconds[name] += time.monotonic() - started
                self.calls[name] += 1

        return timed

    def summary(self) -> dict:
        return {name: {"calls": self.calls[name], "seconds": round(self.seconds[name], 1)} for name in self.calls}


class Stages:
    """The ranking's progress callback: when each stage starts and ends, the peak RSS in it (sampled
    every 0.2 s by a thread), and the RSS after each page predicted (flat memory: no growth with
    the tasks seen beyond the engine's own working set)."""

    def __init__(self) -> None:
        self.stage = "predict"
        self.times: dict[str, list[float]] = {}
        self.peak: dict[str, float] = {}
        self.rss_by_predicted: list[list[int]] = []
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        self.times.setdefault(stage, [now, now])[1] = now
        self.stage = stage
        if stage == "predict" and done:
            self.rss_by_predicted.append([done, round(rss_mb())])

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            self.peak[self.stage] = max(self.peak.get(self.stage, 0.0), rss_mb())

    def __enter__(self) -> "Stages":
        self._sampler.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._sampler.join()

    def seconds(self, started: float) -> dict[str, float]:
        """Each stage from the end of the one before (the first from ``started``) to its own end."""
        out, previous = {}, started
        for stage, (_, end) in self.times.items():
            out[stage] = round(end - previous, 1)
            previous = end
        return out


def prepare_project(api: LabelStudioApi, n: int, labelled: int, version: str) -> tuple[int, dict]:
    """The project, its tasks, ``labelled`` annotations, and a prediction of ``version`` on every task."""
    timings = {}
    started = time.monotonic()
    pid = api.create_project(f"rank scale {n}")
    all_texts = texts(n)
    for start in range(0, n, IMPORT_CHUNK):
        api.sdk.projects.import_tasks(id=pid, request=[{"text": t} for t in all_texts[start : start + IMPORT_CHUNK]])
    timings["import_tasks"] = round(time.monotonic() - started, 1)
    ids = task_ids(api, pid)
    started = time.monotonic()
    for task_id in ids[:: max(1, n // max(labelled, 1))][:labelled]:
        api.submit_annotation(task_id, [{"id": region_id(), "from_name": "label", "to_name": "text", "type": "labels",
                                         "value": {"start": 0, "end": 1, "labels": ["PER"]}}])
    timings["annotate"] = round(time.monotonic() - started, 1)
    started = time.monotonic()
    for start in range(0, n, IMPORT_CHUNK):
        rows = [{"task": i, "result": [], "score": 0.5, "model_version": version} for i in ids[start : start + IMPORT_CHUNK]]
        api.sdk.projects.import_predictions(id=pid, request=rows)
    timings["import_earlier_predictions"] = round(time.monotonic() - started, 1)
    return pid, timings


def task_ids(api: LabelStudioApi, pid: int, page_size: int = 1000) -> list[int]:
    ids: list[int] = []
    while True:
        body = api.request("GET", "/api/tasks", params={"project": pid, "page": len(ids) // page_size + 1,
                                                         "page_size": page_size, "include": "id"})
        ids += [t["id"] for t in body["tasks"]]
        if len(ids) >= body["total"]:
            return ids


def check_label_studio(api: LabelStudioApi, pid: int, report) -> dict:
    """What Label Studio holds afterwards: predictions per version, and the unlabelled tasks at the
    head of the Data Manager sorted by score against the head of the queue (labelled tasks keep
    their own prediction of the version, so they sort in among them)."""
    versions = api.request("GET", f"/api/projects/{pid}/model-versions/")
    view = api.create_view(pid, ["tasks:predictions_score"], title="by score")
    head = api.request("GET", "/api/tasks", params={"project": pid, "view": view, "page": 1, "page_size": 50,
                                                    "include": "id"})
    queued = {q.task_id for q in report.queue}
    head_ids = [t["id"] for t in head["tasks"] if t["id"] in queued]
    return {"project_model_version": api.get_project(pid)["model_version"], "predictions_per_version": versions,
            "data_manager_head_is_queue_head": head_ids == [q.task_id for q in report.queue[: len(head_ids)]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=10000)
    parser.add_argument("--labelled", type=int, default=20, help="tasks annotated before ranking")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    ok, output, _ = install_label_studio()
    if not ok:
        raise SystemExit(f"Label Studio could not be installed into .venv-ls:\n{output}")
    with LabelStudioServer() as ls:
        api = ls.api()
        started = time.monotonic()
        settings = Settings.from_env(label_studio_url=ls.base_url, label_studio_api_key=ls.token)
        backend = Backend(settings).start(install=False)
        version = backend.models.version()
        backend.models.predictor().predict(["张伟在北京工作。"])  # the engine loaded before the clock starts
        model_load_s = time.monotonic() - started
        rss_before = rss_mb()
        pid, setup = prepare_project(api, args.tasks, args.labelled, version)
        client = TimedClient(LabelStudioClient(ls.base_url, ls.token))
        with Stages() as stages:
            started = time.monotonic()
            report = backend.rank_project(pid, client=client, progress=stages)
            total_s = time.monotonic() - started
        result = {
            "tasks": args.tasks, "labelled": args.labelled, "model_version": version,
            "engine": backend.models.predictor().backend.name, "cpus": os.cpu_count(),
            "load_average_1m": round(os.getloadavg()[0], 2),
            "setup_s": {"model_load": round(model_load_s, 1), **setup},
            "rank_s": {"total": round(total_s, 1), **stages.seconds(started)},
            "label_studio_calls": client.summary(),
            "tasks_per_s": round(args.tasks / total_s, 1),
            "rss_mb": {"before_ranking": round(rss_before), **{f"peak_{k}": round(v) for k, v in stages.peak.items()},
                       "process_peak": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                       "after_tasks_predicted": stages.rss_by_predicted},
            "label_studio_peak_rss_mb": round(rss_mb((ls.data_dir / "ls.pid").read_text().strip(), "VmHWM")),
            "ranking": report.summary(),
            "label_studio": check_label_studio(api, pid, report),
            "command": f"benchmarks/rank_scale.py --tasks {args.tasks} --labelled {args.labelled}",
        }
    print(json.dumps(result, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
