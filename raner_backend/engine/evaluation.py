"""Accuracy and speed of each engine on a tagged corpus, and the choice of the default engine:
the fastest whose F1 is within ``MAX_F1_LOSS`` of PyTorch fp32."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

from ..model.data import Example
from ..training.metrics import bootstrap_f1, entity_scores
from .loader import BaseRuntime, build_predictor

MAX_F1_LOSS = 0.003  # 0.3 F1 points


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
                           "seconds": round(seconds, 2), "sentences_per_s": round(len(texts) / seconds, 1)}
    return results


def choose_engine(results: dict) -> dict:
    reference = results["torch"]["scores"]["overall"]["f1"]
    eligible = [name for name, r in results.items() if reference - r["scores"]["overall"]["f1"] <= MAX_F1_LOSS]
    best = max(eligible, key=lambda name: results[name]["sentences_per_s"])
    return {"engine": best, "rule": f"fastest engine with F1 within {MAX_F1_LOSS * 100:.1f} points of torch fp32",
            "torch_f1": reference, "f1": results[best]["scores"]["overall"]["f1"],
            "sentences_per_s": results[best]["sentences_per_s"]}
