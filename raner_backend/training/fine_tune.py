"""Fine-tuning the model that serves a project on its annotations, with replay of base data, and
the deploy guard that decides whether the result may replace it.

A project may label entity types its model does not know yet: the model's tag set grows first
(``HeadBundle.with_entity_types``), and the labels are read as partial where a text cannot speak
for a type. A replayed base sentence (MSRA) never labelled the project's new types, and a project
sentence never labelled the types its config lacks: an ``O`` there may be such a type, so the CRF
loss sums over those paths (``CRF.nll`` with ``allowed``) instead of teaching that they are ``O``.
``partial=False`` is the naive way, kept for measuring (benchmarks/new_type.py)."""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import random
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from ..model.alignment import encode_texts
from ..model.bundle import HeadBundle
from ..model.chars import char_classes
from ..model.data import Example
from ..model.tags import DEFAULT_SCHEME, TagScheme
from ..model.batching import length_sorted_batches, pad_ids
from ..model.metrics import entity_scores, share_worse
from .trainer import Item, TrainConfig, evaluate_items, gold_and_predicted, item_emissions, train

log = logging.getLogger(__name__)

# A project trains on fp32 encoder states whatever engine serves it. Trained on the INT8 engine's own
# states, the old types lost 1.45 F1 points after 200 annotated sentences against 1.04 trained on
# fp32 states (both scored on INT8 states), the new type and the project's own texts the same within
# the seeds' spread (benchmarks/new_type.py --train-engine, README "Projects, versions and labels").
TRAINING_STATES = "torch"
MIN_PROJECT_EXAMPLES = 2  # annotated tasks a training needs: one is held out for the deploy guard
MAX_NEW_SHARE = 0.15  # project data is at most ~15 % of each epoch; the rest is replayed base data
MIN_STEPS = 100  # a project's training makes at least this many optimizer steps (early stopping waits) ...
MAX_REPEATS = 20  # ... by showing its examples up to this many times an epoch
NEW_TYPE_OUT_LR = 5e-3  # output layers' rate while a new type is learned (benchmarks/new_type.py)
# Replayed sentences held to the served model's emissions (TrainConfig.distill, learning without
# forgetting) at this weight while the tag set holds types replay cannot speak for. With the 0.2
# default after 200 annotated sentences of a new type (two seeds): the old types lost 0.53 / 0.66
# points instead of 1.71 / 1.33, the new type scored 0.669 / 0.659 instead of 0.698 / 0.660
# (weight 1: 0.29 points, 0.644); README "Projects, versions and labels".
GROWN_TYPES_DISTILL = 0.3
MIN_TYPE_SUPPORT = 5  # held-out mentions a type needs before the guard reads its own F1
MAX_TYPE_DROP = 0.10  # ... and how much of it a candidate may lose
WORSE_BEYOND_CHANCE = 0.95  # a candidate lower than the served model in this share of resamples is worse


@dataclass
class FineTuneResult:
    bundle: HeadBundle
    deploy: bool
    reason: str
    figures: dict = field(default_factory=dict)


def items_for(tokenizer, states: torch.nn.Module, bundle: HeadBundle, examples: Sequence[Example],
              speaks_for: Sequence[str] = (), max_tokens: int = 4096) -> list[Item]:
    """Items with the encoder states ``states`` gives for the bundle's base layers
    (``BaseRuntime.states_module``), computed in memory (project data is
    small; no disk cache needed). With ``speaks_for``, the examples' labels are partial: an ``O``
    may be any type not in it, and any tag inside an example's unsure ranges."""
    if not examples:
        return []
    encoded = encode_texts(tokenizer, [e.text for e in examples])
    per_text: list[np.ndarray | None] = [None] * len(examples)
    with torch.inference_mode():
        for batch in length_sorted_batches([len(e.input_ids) for e in encoded], max_tokens):
            ids, mask = pad_ids([encoded[i] for i in batch], tokenizer.pad_token_id)
            out = states(ids, mask).to(torch.float16).numpy()
            for row, i in enumerate(batch):
                per_text[i] = out[row, : len(encoded[i].input_ids)]
    open_tags = open_tags_of(bundle.scheme, speaks_for) if speaks_for else ()
    return [Item(per_text[i], enc.char_token, enc.char_piece, bundle.vocab.ids(ex.text), char_classes(ex.text),
                 bundle.scheme.encode(len(ex.text), ex.spans), ex.spans, open_tags,
                 unsure=ex.unsure if speaks_for else ())
            for i, (ex, enc) in enumerate(zip(examples, encoded))]


def open_tags_of(scheme: TagScheme, speaks_for: Sequence[str]) -> tuple[int, ...]:
    """The B and I tags of every type of ``scheme`` not in ``speaks_for``."""
    return scheme.tags_of([kind for kind in scheme.entity_types if kind not in speaks_for])


def project_config(epochs: int, max_steps: int = 0) -> TrainConfig:
    """How "Start Training" fine-tunes a project's model. Lower rates than base training: the
    head starts trained, and the deploy guard's MSRA probe showed forgetting at the base rates."""
    return TrainConfig(epochs=epochs, max_steps=max_steps, batch_chars=1024, patience=2, min_steps=MIN_STEPS,
                       head_lr=5e-4, crf_lr=2e-3)


def project_repeats(train_ex: Sequence[Example], replay_pool: Sequence[Example], cfg: TrainConfig,
                    share: float) -> int:
    """How many times an epoch shows the project's examples (with as many times the replay), so
    that the epochs make at least ``MIN_STEPS`` steps. A few dozen annotations make epochs of a
    handful of steps, too few to learn a new type (benchmarks/results/new_type_pilots.json: PRODUCT
    F1 0.54 -> 0.61 from 50 sentences with more steps); repeating them with fresh replay, rather
    than more epochs over the same few replayed sentences, keeps the old types from being forgotten."""
    replay_chars = sum(len(e.text) for e in replay_pool[:500]) / max(1, min(500, len(replay_pool)))
    chars = sum(len(e.text) for e in train_ex) + len(train_ex) * (1 - share) / share * replay_chars
    steps = cfg.epochs * chars / cfg.batch_chars
    return max(1, min(MAX_REPEATS, math.ceil(MIN_STEPS / max(1.0, steps))))


def split_held_out(examples: Sequence, share: float, seed: int, keys: Sequence | None = None) -> tuple[list, list]:
    """A held-out part of the project's annotations for early stopping and the deploy guard.

    With ``keys`` (Label Studio task ids) a task's side follows from its id alone, so it keeps it as
    annotations are added: the served model, trained on the training side of an earlier split, is
    never scored on a task it learned from (a shuffle of positions would move most of them)."""
    if keys is None:
        order = list(range(len(examples)))
        random.Random(seed).shuffle(order)
        n_held = round(len(examples) * share)
    else:
        fraction = [_stable_fraction(key, seed) for key in keys]
        order = sorted(range(len(examples)), key=fraction.__getitem__)
        n_held = sum(f < share for f in fraction)
    n_held = min(max(1, n_held), len(examples) - 1) if len(examples) >= 2 else 0
    held = sorted(order[:n_held])
    return [examples[i] for i in sorted(order[n_held:])], [examples[i] for i in held]


def _stable_fraction(key, seed: int) -> float:
    """Where ``key`` falls in [0, 1), the same in every process (unlike ``hash`` of a string)."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def scores_of(bundle: HeadBundle, items: Sequence[Item], types: Sequence[str]) -> dict:
    """Entity scores counting only ``types`` (what the project, or the probe, labels)."""
    if not items:
        return {"overall": {"f1": 0.0}, "per_type": {}}
    return evaluate_items(bundle.head, bundle.crf, bundle.scheme, items, types)


def fine_tune(served: HeadBundle, tokenizer, states: torch.nn.Module, project: Sequence[Example],
              replay_pool: Sequence[Example], probe: Sequence[Example], cfg: TrainConfig, project_types: Sequence[str] = (),
              replay_types: Sequence[str] = DEFAULT_SCHEME.entity_types, partial: bool = True,
              held_out_share: float = 0.2, project_share: float = MAX_NEW_SHARE,
              progress: Callable[[dict], None] | None = None, task_ids: Sequence | None = None) -> FineTuneResult:
    """Train a copy of ``served``, grown to ``project_types`` (the project's entity types; default:
    the types in its examples), on ``project`` (+ replay), then apply the deploy guard: deploy only
    if held-out F1 is not worse than the served model's beyond chance, nor much worse for a
    well-supported type.
    ``states``: fp32 encoder states (``TRAINING_STATES``; see ``items_for``). ``task_ids`` (one per
    example) keep each task on its side of the held-out split from one training to the next.
    Fewer than two examples leave nothing to check a candidate on: ValueError."""
    started = time.time()
    if len(project) < MIN_PROJECT_EXAMPLES:
        raise ValueError(f"{len(project)} usable annotated task(s): at least {MIN_PROJECT_EXAMPLES} are needed, "
                         "one of them held out to check the new model against the served one")
    project_types = tuple(project_types) or tuple(dict.fromkeys(s.label for e in project for s in e.spans))
    train_ex, held_ex = split_held_out(list(project), held_out_share, cfg.seed, task_ids)
    repeats = project_repeats(train_ex, replay_pool, cfg, project_share)
    n_replay = min(len(replay_pool), math.ceil(len(train_ex) * repeats * (1 - project_share) / project_share))
    replay = random.Random(cfg.seed).sample(list(replay_pool), n_replay) if n_replay else []
    candidate = served.with_entity_types(project_types)
    new_types = [t for t in candidate.scheme.entity_types if t not in served.scheme.entity_types]
    if new_types and not cfg.out_lr:
        cfg = dataclasses.replace(cfg, out_lr=NEW_TYPE_OUT_LR)
    if cfg.distill is None:
        beyond_replay = any(t not in replay_types for t in candidate.scheme.entity_types)
        cfg = dataclasses.replace(cfg, distill=GROWN_TYPES_DISTILL if beyond_replay else 0.0)
    replay_items = items_for(tokenizer, states, candidate, replay, replay_types if partial else ())
    if cfg.distill:
        keep_what_served_knew(served, replay_items)
    train_items = items_for(tokenizer, states, candidate, train_ex, project_types if partial else ()) * repeats + replay_items
    held_items = items_for(tokenizer, states, candidate, held_ex)
    probe_items = items_for(tokenizer, states, candidate, probe)
    gold, served_spans = gold_and_predicted(served.head, served.crf, served.scheme, held_items, project_types)
    before = {"held_out": entity_scores(gold, served_spans), "probe": scores_of(served, probe_items, replay_types)}
    summary = train(candidate.head, candidate.crf, candidate.scheme, train_items, held_items, cfg,
                    progress=progress, dev_types=project_types)
    _, candidate_spans = gold_and_predicted(candidate.head, candidate.crf, candidate.scheme, held_items, project_types)
    after = {"held_out": entity_scores(gold, candidate_spans), "probe": scores_of(candidate, probe_items, replay_types)}
    lower_in = share_worse(gold, served_spans, candidate_spans)
    learned_from_mentions(candidate, train_ex)
    figures = {"served": _f1s(before), "candidate": _f1s(after), "project_examples": len(project),
               "train_examples": len(train_ex), "held_out_examples": len(held_ex), "replay_examples": len(replay),
               "project_repeats": repeats,
               "entity_types": list(candidate.scheme.entity_types), "new_types": new_types,
               "learned_from": dict(candidate.learned_from), "young_types": list(candidate.young_types()),
               "partial_labels": partial, "replay_held_to_served": cfg.distill,
               "epochs": summary["epochs"], "steps": summary["steps"],
               "history": summary["history"], "seconds": round(time.time() - started, 1)}
    deploy, reason = deploy_verdict(before, after, lower_in, len(held_ex))
    figures["rule"], figures["candidate_lower_in_resamples"] = GUARD_RULE, round(lower_in, 4)
    return FineTuneResult(candidate, deploy, reason, figures)


def keep_what_served_knew(served: HeadBundle, replay_items: Sequence[Item]) -> None:
    """Give each replayed sentence the served model's emissions to match (``TrainConfig.distill``),
    so that learning the project's labels does not unlearn what the base data taught
    (learning without forgetting); a grown tag set matches on the tags the served model has."""
    for i, emissions in item_emissions(served.head, replay_items):
        replay_items[i].teacher = emissions.astype(np.float16)


def learned_from_mentions(bundle: HeadBundle, examples: Sequence[Example]) -> None:
    """Record how many annotated mentions of each grown type ``bundle`` has learned from. A
    project's training sees all its annotations so far, so the count is this training's (or an
    earlier one's, if larger)."""
    for kind in bundle.learned_from:
        mentions = sum(span.label == kind for e in examples for span in e.spans)
        bundle.learned_from[kind] = max(bundle.learned_from[kind], mentions)


GUARD_RULE = (f"deploy unless candidate held-out F1 is below the served model's in >= {WORSE_BEYOND_CHANCE:.0%} of "
              f"paired resamples of the held-out tasks, or a type with >= {MIN_TYPE_SUPPORT} held-out mentions "
              f"loses more than {MAX_TYPE_DROP} F1, or it finds none of the held-out mentions")


def deploy_verdict(before: dict, after: dict, lower_in: float, n_held: int) -> tuple[bool, str]:
    """``lower_in``: the share of paired resamples of the held-out tasks in which the candidate scores
    below the served model (``share_worse``). A small held-out set cannot tell one changed entity from
    a worse model (among five held-out entities one moved boundary costs 0.2 F1), so the overall
    comparison asks whether the candidate is worse on more tasks than chance explains, rather than
    lower at all; how much worse a type got is the per-type rule's part."""
    new_f1, old_f1 = after["held_out"]["overall"]["f1"], before["held_out"]["overall"]["f1"]
    worse = [f"{kind} {scores['f1']:.4f} vs {before['held_out']['per_type'].get(kind, {}).get('f1', 0.0):.4f}"
             for kind, scores in after["held_out"]["per_type"].items()
             if scores["support"] >= MIN_TYPE_SUPPORT
             and before["held_out"]["per_type"].get(kind, {}).get("f1", 0.0) - scores["f1"] > MAX_TYPE_DROP]
    mentions = after["held_out"]["overall"].get("support", 0)
    learned_nothing = new_f1 == 0.0 and mentions > 0
    deploy = lower_in < WORSE_BEYOND_CHANCE and not worse and not learned_nothing
    reason = (f"{GUARD_RULE}: {new_f1:.4f} vs {old_f1:.4f} on {n_held} held-out tasks, lower in "
              f"{lower_in:.1%} of resamples"
              + (f"; types that lost: {', '.join(worse)}" if worse else "")
              + (f"; the candidate finds none of the {mentions} held-out mentions: nothing learned to deploy "
                 f"yet (annotate more, then train again)" if learned_nothing else "")
              + f" (base probe {after['probe']['overall']['f1']:.4f} vs {before['probe']['overall']['f1']:.4f})")
    return deploy, reason


def _f1s(scores: dict) -> dict:
    """held_out_f1, probe_f1 and held-out F1 per type, for the manifest and /health."""
    return {"held_out_f1": scores["held_out"]["overall"]["f1"], "probe_f1": scores["probe"]["overall"]["f1"],
            "held_out_per_type": {k: v["f1"] for k, v in scores["held_out"]["per_type"].items()}}
