"""Fine-tuning the served model on a project's annotations, with replay of base data, and the
deploy guard that decides whether the result may replace the served model."""
from __future__ import annotations

import copy
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
from ..model.network import EncoderStates
from .features import length_sorted_batches, pad_ids
from .metrics import entity_scores
from .trainer import Item, TrainConfig, predict_spans, train

log = logging.getLogger(__name__)

MAX_NEW_SHARE = 0.15  # project data is at most ~15 % of each epoch; the rest is replayed base data


@dataclass
class FineTuneResult:
    bundle: HeadBundle
    deploy: bool
    reason: str
    figures: dict = field(default_factory=dict)


def items_for(tokenizer, encoder, bundle: HeadBundle, examples: Sequence[Example], max_tokens: int = 4096) -> list[Item]:
    """Encoder states computed in memory (project data is small; no disk cache needed)."""
    encoded = encode_texts(tokenizer, [e.text for e in examples])
    states_module = EncoderStates(encoder, bundle.head.cfg.layers).eval()
    states: list[np.ndarray | None] = [None] * len(examples)
    with torch.inference_mode():
        for batch in length_sorted_batches([len(e.input_ids) for e in encoded], max_tokens):
            ids, mask = pad_ids([encoded[i] for i in batch], tokenizer.pad_token_id)
            out = states_module(ids, mask).to(torch.float16).numpy()
            for row, i in enumerate(batch):
                states[i] = out[row, : len(encoded[i].input_ids)]
    return [Item(states[i], enc.char_token, enc.char_piece, bundle.vocab.ids(ex.text), char_classes(ex.text),
                 bundle.scheme.encode(len(ex.text), ex.spans), ex.spans)
            for i, (ex, enc) in enumerate(zip(examples, encoded))]


def split_held_out(examples: Sequence, share: float, seed: int) -> tuple[list, list]:
    """A held-out part of the project's annotations for early stopping and the deploy guard."""
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_held = max(1, int(round(len(examples) * share))) if len(examples) >= 2 else 0
    held = sorted(order[:n_held])
    return [examples[i] for i in sorted(order[n_held:])], [examples[i] for i in held]


def f1_of(bundle: HeadBundle, items: Sequence[Item]) -> float:
    if not items:
        return 0.0
    predicted = predict_spans(bundle.head, bundle.crf, bundle.scheme, items)
    return entity_scores([i.spans for i in items], predicted)["overall"]["f1"]


def fine_tune(served: HeadBundle, tokenizer, encoder, project: Sequence[Example], replay_pool: Sequence[Example],
              probe: Sequence[Example], cfg: TrainConfig, held_out_share: float = 0.2,
              progress: Callable[[dict], None] | None = None) -> FineTuneResult:
    """Train a copy of ``served`` on ``project`` (+ replay), then apply the deploy guard:
    deploy only if held-out F1 is not worse than the served model's."""
    started = time.time()
    train_ex, held_ex = split_held_out(list(project), held_out_share, cfg.seed)
    if not train_ex:
        train_ex = list(project)
    n_replay = min(len(replay_pool), math.ceil(len(train_ex) * (1 - MAX_NEW_SHARE) / MAX_NEW_SHARE))
    replay = random.Random(cfg.seed).sample(list(replay_pool), n_replay) if n_replay else []
    candidate = copy.deepcopy(served)
    train_items = items_for(tokenizer, encoder, candidate, train_ex + replay)
    held_items = items_for(tokenizer, encoder, candidate, held_ex)
    probe_items = items_for(tokenizer, encoder, candidate, probe)
    before = {"held_out_f1": f1_of(served, held_items), "probe_f1": f1_of(served, probe_items)}
    summary = train(candidate.head, candidate.crf, candidate.scheme, train_items, held_items, cfg,
                    progress=progress)
    after = {"held_out_f1": f1_of(candidate, held_items), "probe_f1": f1_of(candidate, probe_items)}
    figures = {"served": before, "candidate": after, "project_examples": len(project),
               "train_examples": len(train_ex), "held_out_examples": len(held_ex), "replay_examples": len(replay),
               "epochs": summary["epochs"], "steps": summary["steps"], "history": summary["history"],
               "seconds": round(time.time() - started, 1)}
    rule = "deploy if candidate held-out F1 >= served held-out F1"
    deploy = after["held_out_f1"] >= before["held_out_f1"]
    reason = (f"{rule}: {after['held_out_f1']:.4f} vs {before['held_out_f1']:.4f} on {len(held_ex)} held-out "
              f"tasks (base probe {after['probe_f1']:.4f} vs {before['probe_f1']:.4f})")
    figures["rule"] = rule
    return FineTuneResult(candidate, deploy, reason, figures)
