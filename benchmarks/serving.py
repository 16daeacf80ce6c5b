"""What the serving path costs above the engine: one task, and many tasks in one request.

The same model and texts (msra_test.txt sentences of 40-50 characters, results cache off) are
run in process through ``Predictor.predict`` (the engine) and over HTTP through ``/predict`` of a
``raner-backend serve`` started here, in turn for each text, in one run. The HTTP side is timed
with a plain keep-alive ``http.client`` connection, so that it measures the server; the same calls
through ``requests`` (Label Studio's client, 1.0-1.3 ms slower per call here whatever the server)
are timed as well and reported apart.

    .venv/bin/python benchmarks/serving.py        # writes benchmarks/results/serving.json
    .venv/bin/python benchmarks/serving.py --model benchmarks/models/student6 --engine onnx-int8 \
        --out benchmarks/results/serving_student6.json   # a model folder, installed in a temporary MODEL_DIR
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests

from raner_backend.model.data import msra_path, read_tagged
from raner_backend.model.registry import Registry
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


def started_server() -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = dict(os.environ, CACHE_SIZE="0", PORT=str(port), HOST="127.0.0.1")
    server = subprocess.Popen([str(Path(sys.executable).parent / "raner-backend"), "serve"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            if requests.get(f"{url}/health", timeout=1).json().get("status") == "UP":
                return server, url
        except requests.RequestException:
            time.sleep(0.5)
    server.terminate()
    raise RuntimeError("the server did not come up within 300 s")


def seconds(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def install(model: Path, model_dir: Path) -> None:
    """``model`` as the current version of a fresh ``model_dir``."""
    registry = Registry(model_dir)
    registry.commit(registry.staged_copy(model), {"name": f"benchmark copy of {model}", "origin": "benchmarks/serving.py"})


def measure(texts: list[str], batch: list[str], rounds: int) -> dict:
    """The engine in this process and ``/predict`` of a server process, called in turn for each
    text (which goes first alternates), so that the machine's drift (CPU steal here) falls on both
    alike; each side runs while the other is idle."""
    backend = Backend(Settings.from_env(cache_size=0)).start()
    predictor = backend.models.predictor()
    server, url = started_server()
    session = requests.Session()
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=600)

    def body_of(tasks: list[str]) -> dict:
        return {"tasks": [{"id": i, "data": {"text": t}} for i, t in enumerate(tasks)], "project": "1.0"}

    def over_http(tasks: list[str]) -> None:
        connection.request("POST", "/predict", body=json.dumps(body_of(tasks)).encode(),
                           headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"/predict answered {response.status}")

    def over_requests(tasks: list[str]) -> None:
        session.post(f"{url}/predict", json=body_of(tasks), timeout=600).raise_for_status()

    sides = {"engine": lambda tasks: predictor.predict(tasks), "http": over_http, "http_requests": over_requests}
    try:
        for text in texts[:10]:  # warm-up
            for call in sides.values():
                call([text])
        one = {name: [] for name in sides}
        for i, text in enumerate(texts):
            for name in (list(sides) if i % 2 else list(sides)[::-1]):
                one[name].append(1000 * seconds(lambda: sides[name]([text])))
        many = {name: [] for name in ("engine", "http")}
        for _ in range(rounds):
            for name in many:
                many[name].append(seconds(lambda: sides[name](batch)))
    finally:
        server.terminate()
        server.wait(30)
    paired = np.array(one["http"]) - np.array(one["engine"])
    return {"engine": predictor.backend.name, "model_version": predictor.version,
            "client": "http.client, one keep-alive connection (http_requests: requests.Session)",
            "one_task": {name: percentiles(ms) for name, ms in one.items()},
            "one_task_overhead_ms_p50": round(float(np.median(paired)), 2),
            "one_task_overhead_p50": round(float(np.median(paired / np.array(one["engine"]))), 3),
            "requests_client_extra_ms_p50": round(float(np.median(np.array(one["http_requests"]) - np.array(one["http"]))), 2),
            "many_tasks_s": {name: [round(x, 2) for x in xs] for name, xs in many.items()},
            "many_tasks_overhead": round(float(np.mean(many["http"]) / np.mean(many["engine"]) - 1), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--batch", type=int, default=1000, help="tasks in the one large request")
    parser.add_argument("--rounds", type=int, default=2, help="times the large request is sent to each side")
    parser.add_argument("--model", type=Path, help="a model folder to serve (default: MODEL_DIR's current version)")
    parser.add_argument("--engine", help="ENGINE for both sides (default: ENGINE, else the model's choice)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.engine:
        os.environ["ENGINE"] = args.engine
    if args.model:
        os.environ["MODEL_DIR"] = tempfile.mkdtemp(prefix="serving-models-")
        install(args.model, Path(os.environ["MODEL_DIR"]))
    sentences = [e.text for e in read_tagged(msra_path("msra_test.txt")) if 40 <= len(e.text) <= 50]
    texts, batch = sentences[: args.requests], sentences[args.requests : args.requests + args.batch]
    figures = measure(texts, batch, args.rounds)
    report = {"texts": "msra_test.txt sentences of 40-50 characters, results cache off", "requests": len(texts),
              "batch_tasks": len(batch), "method": "engine and HTTP called in turn for each text (order "
              "alternating); overhead = median of the paired differences; the large request: rounds of each",
              **figures}
    print(json.dumps(report, indent=1))
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
