"""Entity-level precision, recall and F1 (exact span and type), per type and overall."""
from __future__ import annotations

from collections import Counter
from typing import Iterable, Sequence

import numpy as np

from .tags import Span


def prf(tp: int, n_pred: int, n_gold: int) -> dict:
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
            "support": n_gold, "predicted": n_pred}


def entity_scores(gold: Iterable[Sequence[Span]], predicted: Iterable[Sequence[Span]]) -> dict:
    tp, n_pred, n_gold = Counter(), Counter(), Counter()
    for gold_spans, pred_spans in zip(gold, predicted):
        gold_set, pred_set = set(map(tuple, gold_spans)), set(map(tuple, pred_spans))
        for span in pred_set:
            n_pred[span[2]] += 1
        for span in gold_set:
            n_gold[span[2]] += 1
        for span in gold_set & pred_set:
            tp[span[2]] += 1
    labels = sorted(set(n_gold) | set(n_pred))
    result = {"overall": prf(sum(tp.values()), sum(n_pred.values()), sum(n_gold.values()))}
    result["per_type"] = {label: prf(tp[label], n_pred[label], n_gold[label]) for label in labels}
    return result


def _per_sentence_counts(gold: Sequence[Sequence[Span]], predicted: Sequence[Sequence[Span]]) -> np.ndarray:
    """``[sentences, 3]``: true positives, predicted and gold entities of each sentence."""
    return np.array([(len(set(map(tuple, g)) & set(map(tuple, p))), len(set(map(tuple, p))), len(set(map(tuple, g))))
                     for g, p in zip(gold, predicted)], dtype=np.float64).reshape(-1, 3)


def _resamples(n: int, samples: int, seed: int) -> np.ndarray:
    """``[samples, n]`` sentence indices drawn with replacement."""
    return np.random.default_rng(seed).integers(0, n, size=(samples, n))


def _f1_of_draws(counts: np.ndarray, draws: np.ndarray) -> np.ndarray:
    tp, n_pred, n_gold = (counts[draws].sum(axis=1)).T
    return np.divide(2 * tp, n_pred + n_gold, out=np.zeros_like(tp), where=n_pred + n_gold > 0)


def bootstrap_f1(gold: Sequence[Sequence[Span]], predicted: Sequence[Sequence[Span]], samples: int = 2000,
                 seed: int = 0) -> list[float]:
    """The 95 % interval of overall F1 when the sentences are drawn again with replacement: on a
    few hundred sentences a one-point change can be noise, and this says how much."""
    counts = _per_sentence_counts(gold, predicted)
    if not len(counts):
        return [0.0, 0.0]
    f1 = _f1_of_draws(counts, _resamples(len(counts), samples, seed))
    return [round(float(np.percentile(f1, 2.5)), 4), round(float(np.percentile(f1, 97.5)), 4)]


def share_worse(gold: Sequence[Sequence[Span]], before: Sequence[Sequence[Span]], after: Sequence[Sequence[Span]],
                samples: int = 2000, seed: int = 0) -> float:
    """In what share of paired resamples of the sentences ``after`` scores a lower F1 than ``before``.
    It counts sentences rather than points: with k sentences worse and none better it is about
    1 - exp(-k) (one of ten held-out tasks worse: 0.66; three: 0.95), however large or small the
    drop in F1."""
    counts_before, counts_after = _per_sentence_counts(gold, before), _per_sentence_counts(gold, after)
    if not len(counts_before):
        return 0.0
    draws = _resamples(len(counts_before), samples, seed)
    return float(np.mean(_f1_of_draws(counts_after, draws) < _f1_of_draws(counts_before, draws)))
