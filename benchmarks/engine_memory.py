"""Does the engine's memory stay flat over many texts of every length? RSS after each page of
msra_test sentences predicted (results cache off), for several sizes of oneDNN's primitive cache
(1,024 is oneDNN's default), each in its own process (the size is read once, at torch's first CPU
operation), with the seconds each took.

    .venv/bin/python benchmarks/engine_memory.py [--texts 2000]   # benchmarks/results/engine_memory.json

The committed run (1,500 texts, sizes 0 8 1024 twice each, 2 cores): growth after the first page
63/74 MB (0), 64/48 MB (8), 471/385 MB (1024); seconds 56/52, 50/56, 51/56 and one-sentence p50
65/100, 87/63, 59/76 ms, all within the machine's noise. The package sets 8.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from process_memory import rss_mb

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "engine_memory.json"
PAGE = 250


def child(n: int) -> dict:
    sys.path.insert(0, str(REPO))
    from raner_backend.model.data import msra_path, read_tagged
    from raner_backend.service import Backend
    from raner_backend.settings import Settings

    predictor = Backend(Settings.from_env(cache_size=0)).start(install=False).models.predictor()
    texts = [e.text for e in read_tagged(msra_path("msra_test.txt")) if e.text][:n]
    rss, started = [[0, round(rss_mb())]], time.perf_counter()
    for k in range(0, len(texts), PAGE):
        predictor.predict(texts[k : k + PAGE])
        rss.append([k + len(texts[k : k + PAGE]), round(rss_mb())])
    seconds = time.perf_counter() - started
    one = []
    for text in [t for t in texts if 40 <= len(t) <= 50][:100]:  # seen before: their shapes may be cached
        t0 = time.perf_counter()
        predictor.predict([text + "。"])
        one.append((time.perf_counter() - t0) * 1000)
    return {"primitive_cache": os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"], "engine": predictor.backend.name,
            "seconds": round(seconds, 1), "one_sentence_p50_ms": round(float(np.median(one)), 1),
            "rss_mb_after_texts": rss,
            "growth_mb_after_first_page": rss[-1][1] - rss[1][1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--capacities", nargs="+", default=["0", "8", "64", "1024"],
                        help="oneDNN primitive cache sizes to compare (1024: oneDNN's default)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.texts)))
        return
    runs = []
    for capacity in args.capacities:
        env = dict(os.environ, ONEDNN_PRIMITIVE_CACHE_CAPACITY=capacity)
        out = subprocess.run([sys.executable, __file__, "--child", "--texts", str(args.texts)], env=env,
                             capture_output=True, text=True, check=True).stdout
        runs.append(json.loads(out.strip().splitlines()[-1]))
    report = {"texts": args.texts, "page": PAGE, "runs": runs, "cpus": os.cpu_count(),
              "command": f"benchmarks/engine_memory.py --texts {args.texts} --capacities {' '.join(args.capacities)}"}
    print(json.dumps(report, indent=1))
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
