"""One priority per task from uncertainty and diversity, over a whole pool of tasks.

Uncertainty alone queues near-duplicates side by side: ten reposts of one doubtful sentence all
rank first, and labelling the second one teaches the model nothing the first did not. So the
queue is built by a greedy, uncertainty-weighted k-center selection (in the spirit of BADGE,
Ash et al. 2020) over the tasks' encoder embeddings:

    e_i      embedding of task i, centred on the pool mean and L2-normalised
    d(i, j)  = (1 - cos(e_i, e_j)) / 2                      in [0, 1]
    D_i(S)   = min over j in S of d(i, j)                   (S: tasks already queued or labelled)
    g_i(S)   = u_i * min(1, D_i(S) / tau)                   the gain of queueing i next
    tau      = half the median pairwise distance in the pool (the "redundancy" radius; a median
               is not fooled by a pool where many tasks are copies of one another), over every
               pair of a pool up to TAU_SAMPLE tasks, else over every pair of a fixed-seed sample
               of TAU_SAMPLE of them (about a million pairs: the median moves by well under 1 %)

Step by step the task of highest gain joins the queue. A task unlike everything ahead of it keeps
its full uncertainty as gain; a near-duplicate of a queued task loses it in proportion to how
close it is. Gains never rise as the queue grows, so the priority written to Label Studio,

    score_i = 1 - g_i   (at the moment i was queued),

sorts ascending in exactly the queue order, and equals ``/predict``'s ``1 - u_i`` for every task
that nothing ahead of it resembles. Tasks past the greedy horizon keep the gain they have against
the queue at that point, which is below every queued gain. ``cluster`` is the index of the nearest
of the first ``clusters`` queued tasks, the centres of the k-center cover, so Label Studio can
spread annotators over different kinds of text.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GREEDY_HORIZON = 2000
TAU_FRACTION = 0.5
TAU_SAMPLE = 1500
LABELLED_BLOCK = 256  # labelled tasks compared with the pool at a time: memory n x 256, never n x labelled


@dataclass(frozen=True)
class Ranking:
    order: np.ndarray  # pool indices, label first to last
    score: np.ndarray  # per pool index: 1 - gain when queued (low = label first)
    diversity: np.ndarray  # per pool index: min(1, D_i / tau) when queued
    cluster: np.ndarray  # per pool index


def normalise(embeddings: np.ndarray, centre: np.ndarray) -> np.ndarray:
    centred = np.asarray(embeddings, dtype=np.float32) - centre
    norms = np.linalg.norm(centred, axis=1, keepdims=True)
    return centred / np.maximum(norms, 1e-6)


def redundancy_radius(unit: np.ndarray, fraction: float = TAU_FRACTION, sample: int = TAU_SAMPLE,
                      seed: int = 0) -> float:
    """``tau``: ``fraction`` of the median cosine distance between distinct pool tasks: exact up to
    ``sample`` tasks, else on a fixed-seed sample of ``sample`` tasks (memory ``sample``², not n²)."""
    if len(unit) < 2:
        return 1.0
    rng = np.random.default_rng(seed)
    picked = unit[rng.choice(len(unit), size=min(sample, len(unit)), replace=False)]
    distances = (1.0 - picked @ picked.T) / 2.0
    upper = distances[np.triu_indices(len(picked), k=1)]
    return float(max(fraction * np.median(upper), 1e-4))


def diversity_factor(nearest: np.ndarray, tau: float) -> np.ndarray:
    """``min(1, D_i / tau)``, and never below 0: float32 rounding can put an exact copy a hair below
    distance 0, and Label Studio silently drops a prediction whose score is above 1."""
    return np.clip(nearest / tau, 0.0, 1.0)


def rank_pool(uncertainty: np.ndarray, embeddings: np.ndarray, labelled: np.ndarray | None = None,
              clusters: int = 10, horizon: int = GREEDY_HORIZON, tau: float | None = None) -> Ranking:
    """The queue over a pool; ``labelled`` (embeddings of tasks already labelled) count as queued."""
    u = np.clip(np.asarray(uncertainty, dtype=np.float64), 0.0, 1.0)
    n = len(u)
    if n == 0:
        empty = np.zeros(0)
        return Ranking(np.zeros(0, np.int64), empty, empty, np.zeros(0, np.int64))
    embeddings = np.asarray(embeddings, dtype=np.float32)
    centre = embeddings.mean(axis=0)
    unit = normalise(embeddings, centre)
    tau = redundancy_radius(unit) if tau is None else tau
    nearest = np.full(n, np.inf)
    if labelled is not None and len(labelled):
        labelled_unit = normalise(labelled, centre)
        for start in range(0, len(labelled_unit), LABELLED_BLOCK):
            block = labelled_unit[start : start + LABELLED_BLOCK]
            nearest = np.minimum(nearest, ((1.0 - unit @ block.T) / 2.0).min(axis=1))

    queued = np.zeros(n, dtype=bool)
    order, gain, diversity = [], np.zeros(n), np.zeros(n)
    for _ in range(min(n, horizon)):
        current = diversity_factor(nearest, tau)
        candidate = np.where(queued, -1.0, u * current)
        i = int(candidate.argmax())
        order.append(i)
        queued[i] = True
        gain[i], diversity[i] = candidate[i], current[i]
        nearest = np.minimum(nearest, (1.0 - unit @ unit[i]) / 2.0)
    rest = np.flatnonzero(~queued)
    if len(rest):
        current = diversity_factor(nearest, tau)
        gain[rest], diversity[rest] = u[rest] * current[rest], current[rest]
        order.extend(rest[np.argsort(-gain[rest], kind="stable")].tolist())
    order = np.asarray(order, dtype=np.int64)
    centres = order[: max(1, min(clusters, n))]
    cluster = (unit @ unit[centres].T).argmax(axis=1).astype(np.int64)
    return Ranking(order, 1.0 - gain, diversity, cluster)


def rank_by_uncertainty(uncertainty: np.ndarray) -> np.ndarray:
    """The queue of plain uncertainty sampling (most uncertain first), for comparison."""
    return np.argsort(-np.asarray(uncertainty, dtype=np.float64), kind="stable")
