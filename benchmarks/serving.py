"""What the serving path costs above the engine: one task, and many tasks in one request.

The same model and texts (msra_test.txt sentences of 40-50 characters, results cache off) are
run in process through ``Predictor.predict`` (the engine) and over HTTP through ``/predict`` of a
``raner-backend serve`` started here, one after the other, in one run.

    .venv/bin/python benchmarks/serving.py        # writes benchmarks/results/serving.json
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import requests

from raner_backend.model.data import msra_path, read_tagged
from raner_backend.service import Backend
from raner_backend.settings import Settings

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "serving.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentiles(ms: list[float]) -> dict:
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2), "p95_ms": round(float(np.percentile(ms, 95)), 2)}


def timed(call, texts: list[str]) -> list[float]:
    out = []
    for text in texts:
        started = time.perf_counter()
        call(text)
        out.append((time.perf_counter() - started) * 1000)
    return out


def in_process(texts: list[str], batch: list[str]) -> dict:
    backend = Backend(Settings.from_env(cache_size=0)).start()
    predictor = backend.models.predictor()
    timed(lambda t: predictor.predict([t]), texts[:10])  # warm-up
    one = timed(lambda t: predictor.predict([t]), texts)
    started = time.perf_counter()
    predictor.predict(batch)
    return {"engine": predictor.backend.name, "one_task": percentiles(one),
            "many_tasks_s": round(time.perf_counter() - started, 2)}


def over_http(texts: list[str], batch: list[str]) -> dict:
    port = free_port()
    env = dict(os.environ, CACHE_SIZE="0", PORT=str(port), HOST="127.0.0.1")
    server = subprocess.Popen([str(Path(sys.executable).parent / "raner-backend"), "serve"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            try:
                if requests.get(f"{url}/health", timeout=1).json().get("status") == "UP":
                    break
            except requests.RequestException:
                time.sleep(0.5)
        session = requests.Session()

        def predict(tasks: list[str]) -> None:
            body = {"tasks": [{"id": i, "data": {"text": t}} for i, t in enumerate(tasks)], "project": "1.0"}
            session.post(f"{url}/predict", json=body, timeout=600).raise_for_status()

        timed(lambda t: predict([t]), texts[:10])
        one = timed(lambda t: predict([t]), texts)
        started = time.perf_counter()
        predict(batch)
        return {"one_task": percentiles(one), "many_tasks_s": round(time.perf_counter() - started, 2)}
    finally:
        server.terminate()
        server.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--batch", type=int, default=1000, help="tasks in the one large request")
    args = parser.parse_args()
    sentences = [e.text for e in read_tagged(msra_path("msra_test.txt")) if 40 <= len(e.text) <= 50]
    texts, batch = sentences[: args.requests], sentences[args.requests : args.requests + args.batch]
    engine = in_process(texts, batch)
    http = over_http(texts, batch)
    report = {"texts": "msra_test.txt sentences of 40-50 characters, results cache off", "requests": len(texts),
              "batch_tasks": len(batch), "engine_in_process": engine, "http_predict": http,
              "one_task_overhead_ms_p50": round(http["one_task"]["p50_ms"] - engine["one_task"]["p50_ms"], 2),
              "many_tasks_overhead": round(http["many_tasks_s"] / engine["many_tasks_s"] - 1, 3)}
    print(json.dumps(report, indent=1))
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
