"""Load with a model swap: 20 concurrent clients on /predict (loopback) for a bounded time while
the served version is swapped back and forth; counts failures, reports p50/p95 latency.

    MODEL_DIR=<set up> .venv/bin/python benchmarks/load.py [--seconds 30] [--clients 20]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import requests

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "load.json"
TEXTS = ["国务院总理李强在北京会见了法国总统马克龙。", "华为在深圳发布了Mate60手机，余承东称销量超出预期。",
         "@张伟 今天在上海外滩拍照📷 #旅行# 风景太美了！", "梅西随阿根廷队在卡塔尔赢得了世界杯冠军。"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def second_version(model_dir: Path) -> str:
    """A second complete version (a copy of the current head) to swap to."""
    sys.path.insert(0, str(ROOT))
    from raner_backend.model.registry import Registry

    registry = Registry(model_dir)
    current = registry.current()
    staging = registry.staged_copy(current.path, ("head.safetensors", "head_config.json", "head.onnx"))
    info = registry.commit(staging, dict(current.manifest, origin="load-test copy"), make_current=False)
    return info.name


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--clients", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        model_dir = Path(work) / "models"
        shutil.copytree(os.environ["MODEL_DIR"], model_dir)
        from raner_backend.model.registry import Registry

        first = Registry(model_dir).current().name
        other = second_version(model_dir)
        port = free_port()
        env = dict(os.environ, MODEL_DIR=str(model_dir), PORT=str(port), HOST="127.0.0.1")
        server = subprocess.Popen([str(ROOT / ".venv/bin/raner-backend"), "serve"], env=env,
                                  stdout=open(Path(work) / "server.log", "wb"), stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.time() + 120
            while time.time() < deadline:
                try:
                    if requests.get(f"{url}/health", timeout=1).ok:
                        break
                except requests.RequestException:
                    time.sleep(0.5)
            latencies, failures, versions, stop = [], [], set(), threading.Event()

            def client(k: int) -> None:
                session = requests.Session()
                i = k
                while not stop.is_set():
                    body = {"tasks": [{"id": i, "data": {"text": f"{TEXTS[i % len(TEXTS)]}{i}"}}]}
                    t0 = time.perf_counter()
                    try:
                        r = session.post(f"{url}/predict", json=body, timeout=60)
                        ok = r.status_code == 200 and len(r.json()["results"]) == 1
                        if ok:
                            versions.add(r.json()["results"][0]["model_version"])
                    except requests.RequestException as exc:
                        ok, r = False, exc
                    latencies.append((time.perf_counter() - t0) * 1000)
                    if not ok:
                        failures.append(str(getattr(r, "status_code", r)))
                    i += args.clients

            threads = [threading.Thread(target=client, args=(k,)) for k in range(args.clients)]
            for t in threads:
                t.start()
            swaps = 0
            end = time.time() + args.seconds
            while time.time() < end:
                time.sleep(args.seconds / 4)
                target = other if swaps % 2 == 0 else first
                assert requests.post(f"{url}/rollback", json={"version": target}, timeout=60).ok
                swaps += 1
            stop.set()
            for t in threads:
                t.join()
        finally:
            server.terminate()
            server.wait(30)
    report = {"clients": args.clients, "seconds": args.seconds, "requests": len(latencies),
              "failed": len(failures), "failures": failures[:10], "swaps": swaps,
              "versions_seen": sorted(versions), "requests_per_s": round(len(latencies) / args.seconds, 1),
              "latency_ms_p50": round(float(np.percentile(latencies, 50)), 1),
              "latency_ms_p95": round(float(np.percentile(latencies, 95)), 1)}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
