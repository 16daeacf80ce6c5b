"""Where a model folder goes wrong on msra_test.txt: F1 on sentences with back-to-back entities
against the rest, missed gold spans whose boundary falls inside one of the tokenizer's pieces,
counts of error kinds, and how many entity mentions of dev (the default 2,000-sentence split of
train) and of test are names seen in the rest of train. Writes benchmarks/results/error_analysis.json.

    .venv/bin/python benchmarks/error_analysis.py [--model raner_backend/default_model] [--limit N]
"""
from __future__ import annotations

import argparse
import json
import os
from collections import Counter
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent

Span = tuple[int, int, str]


def overlaps(a: Span, b: Span) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def error_kind(gold: Span, wrong_predictions: set[Span]) -> str:
    """What became of a gold span the model did not find exactly."""
    overlapping = [p for p in wrong_predictions if overlaps(p, gold)]
    if not overlapping:
        return "missed"
    if any(p[:2] == gold[:2] for p in overlapping):
        return "wrong type"
    if len(overlapping) > 1:
        return "split"
    only = overlapping[0]
    return "too long" if only[0] <= gold[0] and only[1] >= gold[1] else "boundary"


def has_adjacent_entities(spans: list[Span]) -> bool:
    ends = {s[1] for s in spans}
    return any(s[0] in ends for s in spans)


def share_of_known_names(known: set[str], examples) -> float:
    mentions = [e.text[s.start:s.end] for e in examples for s in e.spans]
    return round(sum(m in known for m in mentions) / max(1, len(mentions)), 4)


def known_name_shares(test) -> dict:
    """Dev, carved from train, shares train's names more than test does: dev F1 flatters a model
    that remembers names."""
    from raner_backend.model.data import msra_path, read_tagged
    from raner_backend.training.base_model import split_dev
    from raner_backend.training.trainer import TrainConfig

    train = [e for e in read_tagged(msra_path("msra_train.txt")) if e.text]
    train_idx, dev_idx = split_dev(len(train), 2000, TrainConfig().seed)
    known = {train[i].text[s.start:s.end] for i in train_idx for s in train[i].spans}
    return {"dev": share_of_known_names(known, [train[i] for i in dev_idx]), "test": share_of_known_names(known, test)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=str(ROOT / "raner_backend" / "default_model"))
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--out", default=str(RESULTS / "error_analysis.json"))
    args = parser.parse_args()

    from raner_backend.engine.loader import BaseRuntime, build_predictor
    from raner_backend.model.base import resolve_base
    from raner_backend.model.data import msra_path, read_tagged
    from raner_backend.settings import Settings
    from raner_backend.model.metrics import entity_scores

    settings = Settings.from_env()
    runtime = BaseRuntime(resolve_base(settings.base_model, settings.cache_dir), settings.cache_dir)
    predictor = build_predictor(runtime, Path(args.model), Path(args.model).name, "torch", cache_size=0)
    examples = [e for e in read_tagged(msra_path("msra_test.txt")) if e.text][: args.limit or None]
    golds = [[(s.start, s.end, s.label) for s in e.spans] for e in examples]
    preds = [[(x.start, x.end, x.label) for x in r.entities] for r in predictor.predict([e.text for e in examples])]

    kinds: Counter = Counter()
    not_found = not_found_inside_piece = 0
    for example, gold, pred in zip(examples, golds, preds):
        wrong = set(pred) - set(gold)
        piece_edges = {edge for pair in runtime.tokenizer(example.text, return_offsets_mapping=True,
                                                          add_special_tokens=False)["offset_mapping"]
                       for edge in pair}
        for span in set(gold) - set(pred):
            kinds[f"{error_kind(span, wrong)} {span[2]}"] += 1
            not_found += 1
            not_found_inside_piece += span[0] not in piece_edges or span[1] not in piece_edges
        for p in wrong:
            if not any(overlaps(g, p) for g in gold):
                kinds[f"spurious {p[2]}"] += 1

    adjacent = [i for i, gold in enumerate(golds) if has_adjacent_entities(gold)]
    rest = sorted(set(range(len(golds))) - set(adjacent))

    def f1(indices) -> float:
        return entity_scores([golds[i] for i in indices], [preds[i] for i in indices])["overall"]["f1"]

    report = {
        "model": os.path.relpath(args.model, ROOT), "data": {"file": "msra_test.txt", "sentences": len(examples)},
        "f1": f1(range(len(golds))),
        "sentences_with_adjacent_entities": {"sentences": len(adjacent), "f1": f1(adjacent)},
        "other_sentences": {"sentences": len(rest), "f1": f1(rest)},
        "gold_spans_not_found": not_found,
        "of_them_with_a_boundary_inside_a_piece": not_found_inside_piece,
        "entity_mentions_that_are_training_names": known_name_shares(examples),
        "error_kinds": dict(kinds.most_common()),
    }
    Path(args.out).write_text(json.dumps(report, ensure_ascii=False, indent=1) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "error_kinds"}, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
