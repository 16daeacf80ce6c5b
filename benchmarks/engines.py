"""Engine benchmark: PyTorch eager fp32 vs ONNX Runtime fp32 vs ONNX Runtime INT8, in one run.

For each engine, in its own process (so peak memory is its own): F1 on msra_test.txt, batched
throughput over the test sentences, p50/p95 latency of one ~50-character sentence, size on disk,
peak resident memory. Writes benchmarks/results/engines.json and prints a Markdown table.

    .venv/bin/python benchmarks/engines.py [--limit N] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ENGINES = ["torch", "onnx-fp32", "onnx-int8"]
RESULTS = Path(__file__).resolve().parent / "results"


def _size_mb(paths) -> float:
    return round(sum(Path(p).stat().st_size for p in paths if Path(p).exists()) / 2**20, 1)


def run_child(engine: str, limit: int, threads: int) -> dict:
    import numpy as np

    from raner_backend.engine.loader import BaseRuntime, build_predictor
    from raner_backend.model.base import resolve_base
    from raner_backend.model.bundle import HeadBundle
    from raner_backend.model.data import msra_path, read_tagged
    from raner_backend.settings import Settings
    from raner_backend.training.metrics import entity_scores
    from raner_backend.model.registry import Registry

    settings = Settings.from_env()
    current = Registry(settings.model_dir).current()
    runtime = BaseRuntime(resolve_base(settings.base_model, settings.cache_dir), settings.cache_dir)
    predictor = build_predictor(runtime, current.path, current.name, engine, cache_size=0, threads=threads)
    examples = [e for e in read_tagged(msra_path("msra_test.txt")) if e.text][: limit or None]
    texts = [e.text for e in examples]
    predictor.predict(texts[:64])

    started = time.perf_counter()
    results = predictor.predict(texts)
    batched_s = time.perf_counter() - started
    scores = entity_scores([e.spans for e in examples],
                           [[(x.start, x.end, x.label) for x in r.entities] for r in results])

    singles = [t for t in texts if 45 <= len(t) <= 55][:200]
    latencies = []
    for text in singles:
        t0 = time.perf_counter()
        predictor.predict([text])
        latencies.append((time.perf_counter() - t0) * 1000)

    bundle = HeadBundle.load(current.path)
    if engine == "torch":
        files = list(Path(runtime.base.path).glob("*.safetensors")) + [current.path / "head.safetensors"]
    else:
        folder = runtime.onnx_dir(bundle.head.cfg.layers)
        files = [folder / ("encoder.int8.onnx" if engine == "onnx-int8" else "encoder.fp32.onnx"),
                 current.path / "head.onnx"]
    return {"engine": engine, "model_version": current.name, "sentences": len(texts),
            "f1": scores["overall"]["f1"], "per_type": {k: v["f1"] for k, v in scores["per_type"].items()},
            "sentences_per_s": round(len(texts) / batched_s, 1), "batched_seconds": round(batched_s, 2),
            "latency_ms_p50": round(float(np.percentile(latencies, 50)), 2),
            "latency_ms_p95": round(float(np.percentile(latencies, 95)), 2),
            "latency_sentences": len(latencies), "size_mb": _size_mb(files),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=0, help="first N test sentences (default all 5,000)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(RESULTS / "engines.json"))
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_child(args.child, args.limit, args.threads)))
        return 0
    rows = []
    for engine in args.engines.split(","):
        out = subprocess.run([sys.executable, __file__, "--child", engine, "--limit", str(args.limit),
                              "--threads", str(args.threads)], capture_output=True, text=True, env=os.environ)
        if out.returncode != 0:
            print(out.stderr[-3000:], file=sys.stderr)
            return out.returncode
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    base = next((r for r in rows if r["engine"] == "torch"), rows[0])
    for r in rows:
        r["speedup_vs_torch"] = round(r["sentences_per_s"] / base["sentences_per_s"], 2)
        r["f1_loss_points_vs_torch"] = round((base["f1"] - r["f1"]) * 100, 2)
    report = {"machine": f"{os.cpu_count()} cores", "threads": args.threads,
              "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "engines": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print("| engine | F1 | sentences/s (batched) | × torch | p50 ms | p95 ms | size MB | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['engine']} | {r['f1']:.4f} | {r['sentences_per_s']:.0f} | {r['speedup_vs_torch']:.2f} | "
              f"{r['latency_ms_p50']:.1f} | {r['latency_ms_p95']:.1f} | {r['size_mb']:.0f} | {r['peak_rss_mb']:.0f} |")
    print("written", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
