"""Accuracy and speed of each engine on a tagged corpus, and the choice of the default engine:
the one that answers a single task fastest among those whose F1 is within ``MAX_F1_LOSS`` of
PyTorch fp32."""
from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Sequence

from ..model.data import Example
from ..model.metrics import bootstrap_f1, entity_scores
from .loader import BaseRuntime, build_predictor

MAX_F1_LOSS = 0.003  # 0.3 F1 points
LATENCY_SENTENCES = 200  # predicted one at a time for the single-task latency


def evaluate_engines(runtime: BaseRuntime, folder: Path, version: str, engines: Sequence[str],
                     examples: Sequence[Example], threads: int = 0) -> dict:
    texts = [e.text for e in examples]
    results = {}
    for engine in engines:
        predictor = build_predictor(runtime, folder, version, engine, cache_size=0, threads=threads)
        predictor.predict(texts[:64])  # warm-up: first-run allocations are not the engine's speed
        started = time.perf_counter()
        predicted = predictor.predict(texts)
        seconds = time.perf_counter() - started
        spans = [[(e.start, e.end, e.label) for e in r.entities] for r in predicted]
        gold = [e.spans for e in examples]
        results[engine] = {"scores": entity_scores(gold, spans), "f1_ci95": bootstrap_f1(gold, spans),
                           "seconds": round(seconds, 2), "sentences_per_s": round(len(texts) / seconds, 1),
                           "one_task_p50_ms": one_task_p50_ms(predictor, texts[:LATENCY_SENTENCES])}
    return results


def one_task_p50_ms(predictor, texts: Sequence[str]) -> float:
    """Median time to label one text alone, as an annotator opening a task waits for it."""
    times = []
    for text in texts:
        started = time.perf_counter()
        predictor.predict([text])
        times.append(time.perf_counter() - started)
    return round(1000 * statistics.median(times), 1)


def choose_engine(results: dict) -> dict:
    """Among the engines within ``MAX_F1_LOSS`` of torch fp32, the one with the lowest single-task
    latency: Label Studio asks for one task each time an annotator opens one, while batched
    throughput (ranking a project) differed little between the engines (README, Engine benchmark)."""
    reference = results["torch"]["scores"]["overall"]["f1"]
    eligible = [name for name, r in results.items() if reference - r["scores"]["overall"]["f1"] <= MAX_F1_LOSS]
    best = min(eligible, key=lambda name: results[name]["one_task_p50_ms"])
    return {"engine": best, "rule": f"lowest one-task latency among engines with F1 within "
                                    f"{MAX_F1_LOSS * 100:.1f} points of torch fp32",
            "torch_f1": reference, "f1": results[best]["scores"]["overall"]["f1"],
            "sentences_per_s": results[best]["sentences_per_s"], "one_task_p50_ms": results[best]["one_task_p50_ms"]}
