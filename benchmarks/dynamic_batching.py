"""Does coalescing concurrent requests pay? 8 concurrent clients send one ~50-character sentence
each, through the backend's Coalescer (a) switched off (BATCH_WAIT_MS=0: one predict call per
request) and (b) on (2 ms): requests per second and p50/p95 latency. Writes
benchmarks/results/dynamic_batching.json.

    MODEL_DIR=<set up> .venv/bin/python benchmarks/dynamic_batching.py
"""
from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "dynamic_batching.json"


def main(clients: int = 8, rounds: int = 40) -> int:
    from raner_backend.model.data import msra_path, read_tagged
    from raner_backend.service import Backend
    from raner_backend.settings import Settings

    import numpy as np

    from raner_backend.engine.batcher import Coalescer

    backend = Backend(Settings.from_env(cache_size=0)).start()
    texts = [e.text for e in read_tagged(msra_path("msra_test.txt")) if 45 <= len(e.text) <= 55]
    texts = texts[: clients * rounds]
    predictor = backend.models.predictor()
    report = {"clients": clients, "requests": len(texts), "engine": predictor.backend.name}
    for name, wait_ms in (("separate", 0.0), ("coalesced", 2.0)):
        coalescer = Coalescer(wait_ms=wait_ms)
        latencies = []

        def call(text, coalescer=coalescer, latencies=latencies):
            t0 = time.perf_counter()
            coalescer.predict(predictor, [text])
            latencies.append((time.perf_counter() - t0) * 1000)

        with ThreadPoolExecutor(clients) as pool:
            started = time.perf_counter()
            list(pool.map(call, texts))
            seconds = time.perf_counter() - started
        report[name] = {"wait_ms": wait_ms, "requests_per_s": round(len(texts) / seconds, 1),
                        "latency_ms_p50": round(float(np.percentile(latencies, 50)), 1),
                        "latency_ms_p95": round(float(np.percentile(latencies, 95)), 1),
                        "batched_calls": coalescer.batches or len(texts)}
    report["gain"] = round(report["coalesced"]["requests_per_s"] / report["separate"]["requests_per_s"], 2)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
