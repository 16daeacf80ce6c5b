"""Would coalescing concurrent requests pay? 8 concurrent clients sending one ~50-character
sentence each, served (a) one predict call per request, concurrently, or (b) coalesced into one
batched call per round. Writes benchmarks/results/dynamic_batching.json.

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

    backend = Backend(Settings.from_env(cache_size=0)).start()
    predictor = backend.live.predictor
    texts = [e.text for e in read_tagged(msra_path("msra_test.txt")) if 45 <= len(e.text) <= 55]
    texts = texts[: clients * rounds]
    with ThreadPoolExecutor(clients) as pool:
        started = time.perf_counter()
        list(pool.map(lambda t: predictor.predict([t]), texts))
        separate = time.perf_counter() - started
    started = time.perf_counter()
    for r in range(rounds):
        predictor.predict(texts[r * clients : (r + 1) * clients])
    coalesced = time.perf_counter() - started
    report = {"clients": clients, "requests": len(texts), "engine": predictor.backend.name,
              "separate_calls_requests_per_s": round(len(texts) / separate, 1),
              "coalesced_requests_per_s": round(len(texts) / coalesced, 1),
              "gain": round(separate / coalesced, 2)}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
