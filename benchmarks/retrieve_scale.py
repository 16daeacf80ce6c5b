"""Retrieve predictions at scale: a real Label Studio project of N tasks connected to the backend as
a real HTTP server, "Retrieve predictions" pressed on every task right after connecting, and the
time until every task holds a prediction of the served version.

Label Studio 1.23 sends every selected task that lacks a prediction of the backend's current
``model_version`` in ONE ``/predict`` request and gives up after 100 s (``ML_TIMEOUT_PREDICT``);
its action still answers 200 "Retrieved N predictions" (the queryset's count, whatever was stored).
The backend defends in two ways: a project's first ``/setup`` for a version starts a background
ranking that predicts every task page by page and stores the predictions in bulk through the API
(``service.Backend._rank_on_connect``), and a ``/predict`` still computing after
``PREDICT_TIMEOUT_S`` stops with 503 instead of computing for no one.

Label Studio 1.23.2 is started as the end-to-end tests start it (``tests/e2e/labelstudio.py``,
``.venv-ls``); the backend runs as the end-to-end tests run it (``BackendServer``: a copy of
``--model-dir``, ``.venv/bin/raner-backend serve``, its log's tail printed on failure). The first
"Retrieve predictions" runs in a thread while the main thread polls Label Studio every ``--poll``
seconds, so the counts are seen while Label Studio waits on ``/predict``.

    flock /tmp/e2e.lock .venv/bin/python benchmarks/retrieve_scale.py --tasks 10000 --wait 3600   # benchmarks/results/retrieve_scale.json

(``--wait`` defaults to 600 s; 10,000 tasks took 622 s in the first run, so give more.) Each poll
asks Label Studio for the predictions per version (one light request); the task listing, which
checks that every task holds one, runs only once that count reaches the number of tasks. A 300-task
run (2 cores, load about 2 from another job) saw: /predict answered all 300 at 47 s, Label Studio
then stored them one by one until 106 s while the connect ranking stored its own, so every task
ended with two predictions of the version (the ranking's delete of the version came first); a second
"Retrieve predictions" sent nothing to /predict and took 0.2 s. Since then a /predict of many tasks
during the project's ranking answers 503 with the ranking's progress, and the ranking's predictions
are the only ones.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shlex
import sys
import tempfile
import threading
import time
from itertools import cycle, islice
from pathlib import Path
from typing import Any


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from process_memory import rss_mb  # noqa: E402
from raner_backend.model.data import msra_path, read_tagged  # noqa: E402
from tests.e2e.labelstudio import (  # noqa: E402
    BackendServer, HarnessError, LabelStudioApi, LabelStudioServer, install_label_studio)

RESULTS = REPO / "benchmarks" / "results" / "retrieve_scale.json"
IMPORT_CHUNK = 2000
COUNT_PAGE = 1000
TERMINAL = ("done", "failed")


def texts(n: int) -> list[str]:
    """As ``benchmarks/rank_scale.py``: the first ``n`` of msra_test.txt's 5,000 sentences, then the same
    again with a numbered suffix, so no two tasks share a text (no cache answers for the model)."""
    base = [e.text for e in read_tagged(msra_path("msra_test.txt"))]
    return [text if k < len(base) else f"{text}（{k // len(base)}）" for k, text in enumerate(islice(cycle(base), n))]


# -- the backend as a real server --------------------------------------------------------------------
class Backend(BackendServer):
    """The e2e harness's backend server (a copy of the models, served over HTTP, with the service's
    own training and ranking settings), plus what this benchmark reads from its process and log."""

    def __init__(self, model_dir: Path, work_dir: Path, ls_url: str, ls_token: str):
        super().__init__(model_dir, work_dir, ls_url, ls_token, health_timeout=300,
                         extra_env={"TRAIN_THRESHOLD": "100000", "TRAIN_MAX_STEPS": "0"})

    def peak_rss_mb(self) -> float:
        return rss_mb(self.proc.pid, "VmHWM") if self.proc is not None else float("nan")

    def log_counts(self) -> dict:
        """What the log says /predict did: tasks answered (one INFO line per request), requests stopped
        at the deadline and requests refused while the project's ranking stores the same version (503)."""
        text = self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""
        return {"tasks_answered_by_predict": sum(map(int, re.findall(r"/predict: (\d+) tasks of project", text))),
                "predict_stopped_503": len(re.findall(r"/predict: stopped after", text)),
                "predict_refused_during_ranking_503": len(re.findall(r"/predict: the backend is computing", text))}

    def predict_answered(self, since_wall: float) -> dict:
        """When /predict had its answers (the first and last request's line, logged just before the
        response goes out), in seconds after the wall-clock time ``since_wall``."""
        stamps = []
        text = self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""
        for match in re.finditer(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO \S+: /predict: \d+ tasks of project", text, re.M):
            when = datetime.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            stamps.append(round(when - since_wall, 1))
        return {"first_predict_answer_s_after_connect": min(stamps), "last_predict_answer_s_after_connect": max(stamps)} \
            if stamps else {}


# -- Label Studio ------------------------------------------------------------------------------------
def create_project(api: LabelStudioApi, n: int) -> int:
    pid = api.create_project(f"retrieve scale {n}")
    all_texts = texts(n)
    for start in range(0, n, IMPORT_CHUNK):
        api.sdk.projects.import_tasks(id=pid, request=[{"text": t} for t in all_texts[start : start + IMPORT_CHUNK]])
    return pid


def tasks_with_version(api: LabelStudioApi, pid: int, version: str) -> tuple[int, int]:
    """(tasks holding a prediction of ``version``, tasks). Counted through the Data Manager's task list
    ``GET /api/tasks`` in pages of 1,000, as Label Studio 1.23 supports it: ``fields=all`` makes it
    compute ``predictions_model_versions`` (the versions of a task's predictions, joined with "," on
    SQLite and ", " on PostgreSQL) and ``include=id,predictions_model_versions`` keeps everything
    else, the predictions themselves included, out of the answer (the backend's ranking reads the
    same listing). Pages past the last answer 404."""
    have, seen, page = 0, 0, 1
    while True:
        try:
            body = api.request("GET", "/api/tasks", params={"project": pid, "page": page, "page_size": COUNT_PAGE,
                                                             "fields": "all",
                                                             "include": "id,predictions_model_versions"})
        except HarnessError as exc:
            if page > 1 and "HTTP 404" in str(exc):
                return have, seen
            raise
        tasks = body.get("tasks", [])
        for task in tasks:
            versions = task.get("predictions_model_versions") or ""
            versions = {v.strip() for v in (versions.split(",") if isinstance(versions, str) else versions)}
            have += version in versions
        seen += len(tasks)
        if not tasks or seen >= int(body.get("total") or 0):
            return have, seen
        page += 1


def predictions_per_version(api: LabelStudioApi, pid: int) -> dict:
    """``GET /api/projects/{id}/model-versions/``: how many predictions each version has (a task with
    two predictions of one version counts twice: it shows duplicates the task count cannot)."""
    return api.request("GET", f"/api/projects/{pid}/model-versions/")


def retrieve(api: LabelStudioApi, pid: int) -> dict:
    """Data Manager "Retrieve predictions" on all tasks: the request ``api.retrieve_predictions`` sends
    (``POST /api/dm/actions/?id=retrieve_tasks_predictions``), raw so that Label Studio's answer is
    kept. Without Redis the action runs inside the request, /predict included."""
    started = time.monotonic()
    out: dict[str, Any] = {}
    try:
        resp = api.http.post(f"{api.base_url}/api/dm/actions/", timeout=api.timeout,
                             params={"id": "retrieve_tasks_predictions", "project": pid},
                             json={"selectedItems": {"all": True, "excluded": []}})
        out["http_status"] = resp.status_code
        try:
            out["answer"] = resp.json()
        except ValueError:
            out["answer"] = resp.text[:500]
        out["outcome"] = "ok" if resp.status_code < 400 else "error"
    except Exception as exc:  # noqa: BLE001: recorded, not raised
        out["outcome"] = "error"
        out["error"] = f"{type(exc).__name__}: {exc}"[:500]
    out["seconds"] = round(time.monotonic() - started, 2)
    return out


def ranking_of(health: dict, pid: int) -> dict:
    return (health.get("rankings") or {}).get(str(pid)) or {}


# -- the run -------------------------------------------------------------------------------------------
def run(args, ls: LabelStudioServer, backend: Backend) -> dict:
    api = ls.api(timeout=900)
    started = time.monotonic()
    pid = create_project(api, args.tasks)
    import_s = time.monotonic() - started
    health = backend.health()
    version = health["model_version"]

    t0, t0_wall = time.monotonic(), time.time()
    ml_id = api.connect_backend(pid, backend.url, title="raner-backend")
    connect_s = time.monotonic() - t0
    served = backend.model_version(pid)  # the project's version; the default one until it trains
    if served != version:
        version = served

    first: dict[str, Any] = {}
    retrieve_api = ls.api(timeout=900)  # its own session: the main thread polls meanwhile
    thread = threading.Thread(target=lambda: first.update(retrieve(retrieve_api, pid)), name="first-retrieve", daemon=True)
    first_started = time.monotonic() - t0
    thread.start()

    timeline: list[dict] = []
    all_first_s = None
    deadline = t0 + args.wait
    while True:
        # One light request per poll; the task listing (ten heavy pages at 10,000 tasks, which slowed
        # Label Studio's own storing by half in the first 10k run) only once every task may hold one.
        stored = int(predictions_per_version(api, pid).get(version, 0))
        have, total = tasks_with_version(api, pid, version) if stored >= args.tasks else (None, args.tasks)
        now = time.monotonic() - t0
        ranking = ranking_of(backend.health(), pid)
        timeline.append({"s": round(now, 1), "predictions_of_current": stored, "tasks_with_current": have,
                         "ranking_stage": ranking.get("stage"), "ranking_done": ranking.get("done"),
                         "first_retrieve_running": thread.is_alive()})
        print(f"  {now:6.1f} s: {stored} {version} predictions, {have} of {total} tasks hold one; ranking "
              f"{ranking.get('stage')} {ranking.get('done', '')}/{ranking.get('total', '')}; "
              f"retrieve {'running' if thread.is_alive() else 'returned'}", flush=True)
        if have is not None and have >= args.tasks and all_first_s is None:
            all_first_s = round(now, 1)
        settled = not thread.is_alive() and ranking.get("stage") in TERMINAL
        if (settled and have is not None and have >= args.tasks) or (settled and ranking.get("stage") == "failed") \
                or time.monotonic() >= deadline:
            break
        time.sleep(args.poll)
    thread.join(timeout=max(0.0, deadline - time.monotonic()) + 1)
    settled_s = round(time.monotonic() - t0, 1)
    have_settled, _ = tasks_with_version(api, pid, version)
    per_version_settled = predictions_per_version(api, pid)
    log_settled = backend.log_counts()

    # "Retrieve predictions" again: every task holds the version, so Label Studio sends nothing
    second = retrieve(api, pid)
    have_end, total_end = tasks_with_version(api, pid, version)
    per_version_end = predictions_per_version(api, pid)
    log_end = backend.log_counts()
    health = backend.health()
    ranking = ranking_of(health, pid)
    dips = [p["tasks_with_current"] for p in timeline if all_first_s is not None and p["s"] > all_first_s
            and p["tasks_with_current"] is not None]

    return {
        "tasks": args.tasks,
        "model_version": version,
        "engine": health.get("engine"),
        "cpus": os.cpu_count(),
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "setup_s": {"label_studio_start": round(ls.start_seconds or 0, 1),
                    "backend_start": round(backend.start_seconds or 0, 1),
                    "create_project_and_import": round(import_s, 1), "connect_backend": round(connect_s, 1)},
        "first_retrieve": {**first, "started_s_after_connect": round(first_started, 2),
                           "returned_s_after_connect": round(first_started + first.get("seconds", 0), 1),
                           "predict": backend.predict_answered(t0_wall)},
        "all_tasks_current_s_after_connect": all_first_s,
        "tasks_with_current_dropped_after_all": bool(dips) and min(dips) < args.tasks,
        "settled_s_after_connect": settled_s,
        "tasks_with_current_when_settled": have_settled,
        "predictions_per_version_when_settled": per_version_settled,
        "second_retrieve": second,
        "tasks_with_current_at_end": have_end,
        "tasks_at_end": total_end,
        "predictions_per_version_at_end": per_version_end,
        # a task that got one from the first retrieve's /predict and one from the connect ranking
        "extra_predictions_of_current_version": int(per_version_end.get(version, 0)) - have_end,
        "predict_log": {"when_settled": log_settled, "at_end": log_end,
                        "tasks_sent_by_second_retrieve": log_end["tasks_answered_by_predict"]
                        - log_settled["tasks_answered_by_predict"]},
        "backend_ranking": ranking,
        "backend_peak_rss_mb": round(backend.peak_rss_mb()),
        "label_studio_peak_rss_mb": round(rss_mb((ls.data_dir / "ls.pid").read_text().strip(), "VmHWM")),
        "project_model_version_in_label_studio": api.get_project(pid).get("model_version"),
        "ml_backend_state": api.ml_backend(ml_id).get("state"),
        "timeline": timeline,
        "command": "flock /tmp/e2e.lock .venv/bin/python benchmarks/retrieve_scale.py "
                   + " ".join(shlex.quote(a) for a in sys.argv[1:]),
    }


def summary(r: dict) -> str:
    first, second = r["first_retrieve"], r["second_retrieve"]
    return "\n".join([
        f"{r['tasks']} tasks, {r['model_version']} ({r['engine']}), {r['cpus']} cores",
        f"first Retrieve predictions: {first.get('seconds')} s, {first.get('outcome')} "
        f"(HTTP {first.get('http_status')}: {first.get('answer') or first.get('error')})",
        f"all tasks held a current prediction {r['all_tasks_current_s_after_connect']} s after connect; "
        f"settled at {r['settled_s_after_connect']} s with {r['tasks_with_current_at_end']}/{r['tasks_at_end']}",
        f"/predict answers logged at {first.get('predict')} (s after connect)",
        f"predictions per version: {r['predictions_per_version_at_end']} "
        f"({r['extra_predictions_of_current_version']} more than tasks holding it)",
        f"second Retrieve predictions: {second.get('seconds')} s, {second.get('outcome')}, "
        f"{r['predict_log']['tasks_sent_by_second_retrieve']} task(s) sent to /predict",
        f"backend ranking: {r['backend_ranking']}",
        f"backend peak RSS {r['backend_peak_rss_mb']} MB; /predict answered "
        f"{r['predict_log']['at_end']['tasks_answered_by_predict']} task(s), "
        f"{r['predict_log']['at_end']['predict_stopped_503']} stopped with 503",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=10000)
    parser.add_argument("--wait", type=float, default=600, help="seconds to wait for every task's prediction")
    parser.add_argument("--poll", type=float, default=5, help="seconds between counts")
    parser.add_argument("--model-dir", type=Path, default=REPO / "var" / "models")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    ok, output, _ = install_label_studio()
    if not ok:
        raise SystemExit(f"Label Studio could not be installed into .venv-ls:\n{output}")
    with tempfile.TemporaryDirectory(prefix="retrieve-scale-") as work:
        with LabelStudioServer() as ls:
            backend = Backend(args.model_dir.resolve(), Path(work), ls.base_url, ls.token)
            try:
                backend.start()
                result = run(args, ls, backend)
            except BaseException:
                print(f"--- backend log tail ---\n{backend.log_tail()}", file=sys.stderr)
                raise
            finally:
                backend.stop()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(summary(result))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
