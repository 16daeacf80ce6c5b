"""What combining models buys: msra_test F1 of each member model alone and of every combination
(emissions and CRF scores averaged, as ``raner-backend combine`` does), and the batched speed of
each combination with the PyTorch engine, in one run. Writes benchmarks/results/ensemble.json.

    .venv/bin/python benchmarks/ensemble.py MODEL_DIR MODEL_DIR [...] [--limit N] [--speed-sentences N]

Each member's emissions are computed once; a combination's F1 averages them (the same arithmetic
as the combined network, whose equality with the members' mean tests/test_ensemble.py checks).
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="member model folders")
    parser.add_argument("--limit", type=int, default=0, help="first N test sentences (default all 5,000)")
    parser.add_argument("--speed-sentences", type=int, default=1000, help="sentences timed per combination")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(RESULTS / "ensemble.json"))
    args = parser.parse_args()
    os.environ.setdefault("LOG_LEVEL", "warning")

    from raner_backend.engine.loader import BaseRuntime, build_predictor
    from raner_backend.engine.predictor import model_text
    from raner_backend.model.base import resolve_base
    from raner_backend.model.bundle import HeadBundle
    from raner_backend.model.data import msra_path, read_examples
    from raner_backend.settings import Settings
    from raner_backend.model.metrics import entity_scores

    settings = Settings.from_env()
    runtime = BaseRuntime(resolve_base(settings.base_model, settings.cache_dir), settings.cache_dir).load()
    examples = [e for e in read_examples(msra_path("msra_test.txt")) if e.text][: args.limit or None]
    texts = [e.text for e in examples]
    readable = [model_text(t) for t in texts]
    bundles = {m: HeadBundle.load(Path(m)) for m in args.models}

    def predictor_for(combo):
        bundle = bundles[combo[0]] if len(combo) == 1 else HeadBundle.ensemble([bundles[m] for m in combo])
        return build_predictor(runtime, Path(combo[0]), "+".join(combo), "torch", cache_size=0,
                               threads=args.threads, bundle=bundle)

    # Windows depend only on the tokenizer, so every member cuts the texts the same way and the
    # last member's windows serve every combination.
    emissions, windows = {}, []
    for model in args.models:
        predictor = predictor_for((model,))
        windows = [predictor._windows(k, t) for k, t in enumerate(readable)]
        predictor._run(readable, [w for ws in windows for w in ws])
        emissions[model] = [[w.emissions for w in ws] for ws in windows]

    rows = []
    for size in range(1, len(args.models) + 1):
        for combo in itertools.combinations(args.models, size):
            predictor = predictor_for(combo)
            predicted = []
            for k, (text, ws) in enumerate(zip(texts, windows)):
                for j, w in enumerate(ws):
                    w.emissions = np.mean([emissions[m][k][j] for m in combo], axis=0)
                predicted.append([(e.start, e.end, e.label) for e in predictor._decode(text, ws).entities])
            scores = entity_scores([e.spans for e in examples], predicted)
            timed = texts[: args.speed_sentences]
            predictor.predict(timed[:64])
            started = time.perf_counter()
            predictor.predict(timed)
            speed = len(timed) / (time.perf_counter() - started)
            row = {"members": [Path(m).name for m in combo], "f1": scores["overall"]["f1"],
                   "precision": scores["overall"]["precision"], "recall": scores["overall"]["recall"],
                   "per_type": {t: v["f1"] for t, v in scores["per_type"].items()},
                   "sentences_per_s": round(speed, 1)}
            rows.append(row)
            print(json.dumps(row, ensure_ascii=False), flush=True)
    report = {"data": {"file": "msra_test.txt", "sentences": len(examples)},
              "members": {Path(m).name: m for m in args.models}, "threads": args.threads,
              "speed_sentences": min(args.speed_sentences, len(texts)), "combinations": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print("written", args.out)


if __name__ == "__main__":
    main()
