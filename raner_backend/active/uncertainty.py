"""Per-task uncertainty from the CRF, normalised to [0, 1] and independent of text length.

For a text of n characters with CRF marginals p_i(y) over T tags:

    H_i     = -sum_y p_i(y) log p_i(y) / log T         (normalised character entropy)
    mean_H  = (1/n) sum_i H_i                           (length-normalised, Shen et al. 2017)
    max_H   = max_i H_i                                 (the single most doubtful character)
    mnlp    = 1 - P(best path)^(1/n)                    (length-normalised path doubt)
    young   = max_i sum_{y in tags of young types} p_i(y)
    u       = max((mean_H + max_H + mnlp) / 3, young)

A text with no entity that the model is sure of has all three near 0; a long text is not
uncertain merely for being long, since each term is a mean, a maximum, or a per-character rate.
A young type (one the project's model learned from fewer than ``YOUNG_TYPE_MENTIONS`` annotated
mentions, ``HeadBundle.young_types``) is doubtful wherever the model sees it, sure or not: its
likely mentions come forward in the queue until it has been learned from enough of them.
The task's ``score`` for Label Studio is a confidence, ``1 - u`` (low = label first).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Uncertainty:
    mean_entropy: float
    max_entropy: float
    mnlp: float
    young: float = 0.0

    @property
    def value(self) -> float:
        return max((self.mean_entropy + self.max_entropy + self.mnlp) / 3.0, self.young)

    @property
    def confidence(self) -> float:
        return 1.0 - self.value

    def to_dict(self) -> dict:
        return {"mean_entropy": round(self.mean_entropy, 4), "max_entropy": round(self.max_entropy, 4),
                "mnlp": round(self.mnlp, 4), "young_type": round(self.young, 4), "uncertainty": round(self.value, 4)}


def uncertainty_of(result) -> Uncertainty:
    """From an engine ``TextResult`` (char_entropy, best_path_prob, young_mass)."""
    return uncertainty_from(result.char_entropy, result.best_path_prob, result.young_mass)


def uncertainty_from(char_entropy: np.ndarray, best_path_prob: float, young_mass: float = 0.0) -> Uncertainty:
    """From normalised per-character entropies, P(best path) and the young types' largest
    per-character mass of one text."""
    length = len(char_entropy)
    if length == 0:
        return Uncertainty(0.0, 0.0, 0.0)
    per_char = math.exp(math.log(max(best_path_prob, 1e-300)) / length)
    return Uncertainty(_unit(char_entropy.mean()), _unit(char_entropy.max()), _unit(1.0 - per_char), _unit(young_mass))


def _unit(x) -> float:
    return float(min(1.0, max(0.0, x)))
