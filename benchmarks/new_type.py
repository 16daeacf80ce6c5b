"""Learning an entity type the default model never saw: F1 of the new type against the number of
annotated sentences, partial-label replay against the naive way, and what the old types lose.

Data: ``benchmarks/data/products_zh.jsonl`` (hand-labelled modern Chinese, PER/LOC/ORG in MSRA's
conventions plus PRODUCT; nobody tuned on it). A fixed shuffle splits it into an annotation pool
and a test part. For each seed and size N, N sentences of the pool are "annotated" and the
default model is fine-tuned on them exactly as a project's "Start Training" does
(``training.fine_tune.fine_tune`` with the service's settings: 20 % held out for early stopping
and the deploy guard, MSRA replay, the tag set grown by PRODUCT), once with partial labels
(replayed MSRA sentences say nothing of PRODUCT) and once naively (they say PRODUCT is ``O``).
Each candidate is scored on the test part (every type) and on a fixed sample of msra_test.txt
(the old types); the default model on the same sample is the reference. The uncertainty check:
on the test part, how well the task score (the served confidence) brings sentences that hold a
product forward, before training and after N annotated sentences (ROC AUC of uncertainty for
"holds a PRODUCT").

    .venv/bin/python benchmarks/new_type.py       # writes benchmarks/results/new_type.{json,png}
"""
from __future__ import annotations

import os

os.environ.setdefault("TQDM_DISABLE", "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import random  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from error_analysis import overlaps  # noqa: E402
from raner_backend.active.uncertainty import uncertainty_from  # noqa: E402
from raner_backend.engine.predictor import decode_emissions, tag_mass  # noqa: E402
from raner_backend.model.bundle import HeadBundle  # noqa: E402
from raner_backend.model.data import msra_path, read_examples, read_tagged  # noqa: E402
from raner_backend.service import default_model_folder  # noqa: E402
from raner_backend.settings import Settings  # noqa: E402
from raner_backend.training.fine_tune import (GROWN_TYPES_DISTILL, MAX_NEW_SHARE, NEW_TYPE_OUT_LR,  # noqa: E402
                                              TRAINING_STATES, fine_tune, items_for, project_config, scores_of)
from raner_backend.training.trainer import item_emissions, predict_spans  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "benchmarks" / "data" / "products_zh.jsonl"
RESULTS = REPO / "benchmarks" / "results"
NEW = "PRODUCT"
OLD = ("PER", "LOC", "ORG")


def split(examples: list, pool_size: int) -> tuple[list, list]:
    order = list(range(len(examples)))
    random.Random(0).shuffle(order)
    return [examples[i] for i in order[:pool_size]], [examples[i] for i in order[pool_size:]]


def uncertainty_auc(bundle: HeadBundle, items: list, young: bool = True) -> float:
    """P(a sentence holding a PRODUCT is more uncertain than one without), by the served score
    (``young``: with the term for the bundle's young types, as served; else without it)."""
    crf = bundle.crf.params()
    young_tags = np.array(bundle.scheme.tags_of(bundle.young_types() if young else ()), dtype=np.int64)
    uncertain = np.zeros(len(items))
    for i, emissions in item_emissions(bundle.head, items):
        decoded = decode_emissions(crf, emissions)
        young_mass = tag_mass(decoded.marginals, young_tags)
        uncertain[i] = uncertainty_from(decoded.entropy, decoded.best_path_prob, young_mass).value
    holds = np.array([any(s.label == NEW for s in item.spans) for item in items])
    pos, neg = uncertain[holds], uncertain[~holds]
    return float(((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()))


def new_type_errors(bundle: HeadBundle, items: list, texts: list[str], keep: int = 30) -> dict:
    """Where the new type's F1 is lost on the test part: each gold mention that is not predicted
    exactly, and each predicted mention that is not gold, by kind (boundary: overlaps one of the
    same type; type: the same span with another type; none: no overlap), with examples to read."""
    predicted = predict_spans(bundle.head, bundle.crf, bundle.scheme, items)
    counts = {"missed_boundary": 0, "missed_as_other_type": 0, "missed_entirely": 0,
              "spurious_boundary": 0, "spurious_other_type": 0, "spurious_none": 0}
    examples = []
    for item, spans, text in zip(items, predicted, texts):
        gold = set(item.spans)
        wrong = []
        for g in (s for s in gold if s.label == NEW and s not in spans):
            kind = ("missed_boundary" if any(overlaps(g, p) and p.label == NEW for p in spans) else
                    "missed_as_other_type" if any(overlaps(g, p) for p in spans) else "missed_entirely")
            counts[kind] += 1
            wrong.append(f"{kind}: {text[g.start:g.end]}")
        for p in (s for s in spans if s.label == NEW and s not in gold):
            kind = ("spurious_boundary" if any(overlaps(g, p) and g.label == NEW for g in gold) else
                    "spurious_other_type" if any(overlaps(g, p) for g in gold) else "spurious_none")
            counts[kind] += 1
            wrong.append(f"{kind}: {text[p.start:p.end]}")
        if wrong and len(examples) < keep:
            examples.append({"text": text, "errors": wrong})
    return {"counts": counts, "examples": examples}


def run(args) -> dict:
    from raner_backend.engine.loader import BaseRuntime
    from raner_backend.model.base import resolve_base

    settings = Settings.from_env()
    runtime = BaseRuntime(resolve_base(settings.base_model, settings.cache_dir), settings.cache_dir).load()
    served = HeadBundle.load(default_model_folder())
    # Scored on the states of the engine that serves the project (the manifest's choice).
    engine = args.engine or json.loads((default_model_folder() / "manifest.json").read_text())["engine"]["engine"]
    tokenizer, states = runtime.tokenizer, runtime.states_module(served.head.cfg.base_layers, served.vocab, engine)
    train_engine = args.train_engine or TRAINING_STATES  # as the service trains
    train_states = (states if train_engine == engine else
                    runtime.states_module(served.head.cfg.base_layers, served.vocab, train_engine))
    pool, test = split(list(read_examples(DATA)), args.pool)
    replay_pool = [e for _, e in zip(range(20000), read_tagged(msra_path("msra_train.txt")))]
    msra_test = [e for e in read_tagged(msra_path("msra_test.txt")) if e.text][: args.msra_sentences]
    grown = served.with_entity_types(OLD + (NEW,))
    test_items = items_for(tokenizer, states, grown, test)
    msra_items = items_for(tokenizer, states, grown, msra_test)
    reference = {"test": scores_of(served, test_items, OLD + (NEW,)), "msra_test": scores_of(served, msra_items, OLD),
                 "uncertainty_auc": uncertainty_auc(grown, test_items)}
    log.info("default model: msra_test sample F1 %.4f, PRODUCT uncertainty AUC %.3f",
             reference["msra_test"]["overall"]["f1"], reference["uncertainty_auc"])
    cfg = dataclasses.replace(project_config(settings.train_epochs, settings.train_max_steps),
                              **json.loads(args.config))
    args.config_text = (f"the service's fine-tuning (Backend.train_project) on {train_engine} encoder states, "
                        f"scored on {engine} states, "
                        f"with {args.config}: {cfg}; "
                        f"output layers {NEW_TYPE_OUT_LR} while a type is new, replay held to the served "
                        f"model's emissions at weight {GROWN_TYPES_DISTILL} unless set, 20 % held out, "
                        f"{1 - args.project_share:.0%} MSRA replay")
    results = RESULTS / f"{args.name}.json"
    runs = json.loads(results.read_text())["runs"] if args.resume and results.exists() else []
    done = {(r["seed"], r["sentences"], r["method"]) for r in runs}
    for seed in args.seeds:
        order = list(range(len(pool)))
        random.Random(seed).shuffle(order)
        for method, size in ((m, n) for m in args.methods for n in args.sizes):
            annotated = [pool[i] for i in order[:size]]
            if (seed, size, method) in done or (method == "naive" and args.naive_seeds
                                                and seed not in args.naive_seeds):
                continue
            started = time.time()
            result = fine_tune(served, tokenizer, train_states, annotated, replay_pool, [],
                               dataclasses.replace(cfg, seed=seed), project_types=OLD + (NEW,),
                               partial=method == "partial", project_share=args.project_share)
            on_test = scores_of(result.bundle, test_items, OLD + (NEW,))
            on_msra = scores_of(result.bundle, msra_items, OLD)
            record = {"seed": seed, "sentences": size, "method": method,
                      "characters": sum(len(e.text) for e in annotated),
                      "entities": sum(len(e.spans) for e in annotated),
                      "new_type_mentions": sum(s.label == NEW for e in annotated for s in e.spans),
                      "new_type_f1": on_test["per_type"].get(NEW, {}).get("f1", 0.0),
                      "new_type": on_test["per_type"].get(NEW, {}), "test_f1": on_test["overall"]["f1"],
                      "new_type_errors": new_type_errors(result.bundle, test_items, [e.text for e in test]),
                      "new_type_f1_on_its_training": round(scores_of(result.bundle, items_for(
                          tokenizer, train_states, result.bundle, annotated), (NEW,))["overall"]["f1"], 4),
                      "msra_old_f1": on_msra["overall"]["f1"],
                      "msra_old_drop_points": round(100 * (reference["msra_test"]["overall"]["f1"]
                                                           - on_msra["overall"]["f1"]), 2),
                      "uncertainty_auc": round(uncertainty_auc(result.bundle, test_items), 4),
                      "uncertainty_auc_without_young": round(uncertainty_auc(result.bundle, test_items, False), 4),
                      "deployed": result.deploy, "train_seconds": round(time.time() - started, 1),
                      "epochs": result.figures["epochs"]}
            runs.append(record)
            log.info("%s", json.dumps(record, ensure_ascii=False))
            write(args, reference, runs)
    return write(args, reference, runs)


def summarise(runs: list[dict]) -> list[dict]:
    rows = []
    for method in sorted({r["method"] for r in runs}):
        for size in sorted({r["sentences"] for r in runs}):
            group = [r for r in runs if r["method"] == method and r["sentences"] == size]
            if not group:
                continue
            mean = {k: round(float(np.mean([r[k] for r in group])), 4)
                    for k in ("new_type_f1", "msra_old_f1", "msra_old_drop_points", "uncertainty_auc",
                              "uncertainty_auc_without_young", "characters", "entities", "new_type_mentions",
                              "train_seconds")
                    if all(k in r for r in group)}  # runs from before a figure existed lack it
            mean.update({f"new_type_{k}": round(float(np.mean([r["new_type"].get(k, 0.0) for r in group])), 4)
                         for k in ("precision", "recall")})
            rows.append({"method": method, "sentences": size, "seeds": len(group),
                         "new_type_f1_std": round(float(np.std([r["new_type_f1"] for r in group])), 4), **mean})
    return rows


def write(args, reference: dict, runs: list[dict]) -> dict:
    report = {"data": {"file": DATA.name, "pool": args.pool, "test_sentences": None, "new_type": NEW,
                       "msra_test_sentences": args.msra_sentences},
              "config": args.config_text,
              "reference_default_model": {"msra_old_f1": reference["msra_test"]["overall"]["f1"],
                                          "test": reference["test"]["per_type"],
                                          "uncertainty_auc": round(reference["uncertainty_auc"], 4)},
              "summary": summarise(runs), "runs": runs}
    report["data"]["test_sentences"] = sum(1 for _ in read_examples(DATA)) - args.pool
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    if runs:
        plot(report, RESULTS / f"{args.name}.png")
    return report


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for method, style in (("partial", "o-"), ("naive", "s--")):
        rows = [r for r in report["summary"] if r["method"] == method]
        if not rows:
            continue
        axes[0].errorbar([r["sentences"] for r in rows], [r["new_type_f1"] for r in rows],
                         yerr=[r["new_type_f1_std"] for r in rows], fmt=style, label=method, capsize=3)
        axes[1].plot([r["characters"] for r in rows], [r["new_type_f1"] for r in rows], style, label=method)
        axes[2].plot([r["sentences"] for r in rows], [r["msra_old_drop_points"] for r in rows], style, label=method)
    axes[0].axhline(0.8, color="grey", lw=0.8, ls=":")
    axes[0].set(xlabel="annotated sentences", ylabel=f"{NEW} F1 (test part)", title="new type, per sentence")
    axes[1].set(xlabel="annotated characters", ylabel=f"{NEW} F1", title="new type, per character")
    axes[2].axhline(0.5, color="grey", lw=0.8, ls=":")
    axes[2].set(xlabel="annotated sentences", ylabel="points lost", title="old types on msra_test (sample)")
    for ax in axes:
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


log = logging.getLogger("new_type")

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[25, 50, 100, 200])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--methods", nargs="+", default=["partial", "naive"], choices=["partial", "naive"])
    parser.add_argument("--naive-seeds", type=int, nargs="*", default=[],
                        help="run the naive way only for these seeds (default: every seed)")
    parser.add_argument("--resume", action="store_true", help="keep the runs already in the results file")
    parser.add_argument("--engine", help="encoder states to score on (default: the default model's engine)")
    parser.add_argument("--train-engine", help="encoder states to train on (default: the service's, fp32)")
    parser.add_argument("--pool", type=int, default=300, help="sentences in the annotation pool (the rest: test)")
    parser.add_argument("--msra-sentences", type=int, default=2000, help="msra_test sentences for the old types")
    parser.add_argument("--name", default="new_type", help="results file name under benchmarks/results/")
    parser.add_argument("--project-share", type=float, default=MAX_NEW_SHARE,
                        help="share of each epoch from the project's annotations (the rest: MSRA replay)")
    parser.add_argument("--config", default="{}", help="JSON overrides of the service's TrainConfig (experiments)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run(parser.parse_args())
