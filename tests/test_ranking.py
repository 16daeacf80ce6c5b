"""Uncertainty + diversity ranking over a pool (raner_backend.active.ranking)."""
from __future__ import annotations

import numpy as np
import pytest

from raner_backend.active.ranking import rank_by_uncertainty, rank_pool
from raner_backend.active.uncertainty import uncertainty_from


def pool_with_duplicates(seed: int = 0):
    """Ten distinct 'topics'; topic 0 is the most uncertain and has nine near-copies."""
    rng = np.random.default_rng(seed)
    topics = rng.normal(size=(10, 32)).astype(np.float32)
    embeddings = [topics[0] + 0.01 * rng.normal(size=32) for _ in range(10)]
    embeddings += [topics[k] for k in range(1, 10)]
    uncertainty = [0.9 - 0.001 * i for i in range(10)] + [0.5 - 0.01 * k for k in range(1, 10)]
    return np.asarray(uncertainty), np.asarray(embeddings, dtype=np.float32)


def test_uncertainty_alone_queues_the_duplicates_first():
    u, _ = pool_with_duplicates()
    assert set(rank_by_uncertainty(u)[:10]) == set(range(10))


def test_diversity_spreads_the_top_of_the_queue():
    u, emb = pool_with_duplicates()
    ranking = rank_pool(u, emb, clusters=10)
    top = ranking.order[:10].tolist()
    assert top[0] == 0, "the most uncertain task still comes first"
    assert sum(1 for i in top if i < 10) == 1, f"near-duplicates crowd the top: {top}"
    assert len(set(ranking.cluster[top])) == 10


def test_scores_sort_in_queue_order_and_match_confidence_for_novel_tasks():
    u, emb = pool_with_duplicates()
    ranking = rank_pool(u, emb)
    in_order = ranking.score[ranking.order]
    assert np.all(np.diff(in_order) >= -1e-12), "ascending score must give the queue order"
    assert np.all((ranking.score >= 0) & (ranking.score <= 1))
    assert np.all(ranking.score >= 1 - u - 1e-12), "diversity only ever lowers a task's priority"
    first = ranking.order[0]
    assert ranking.score[first] == pytest.approx(1 - u[first])
    for i in range(10, 19):  # distinct topics: their score is /predict's 1 - u
        assert ranking.score[i] == pytest.approx(1 - u[i], abs=1e-6)


def test_a_task_like_an_already_labelled_one_is_pushed_down():
    u, emb = pool_with_duplicates()
    ranking = rank_pool(u, emb, labelled=emb[:1] + 0.001)
    assert all(i >= 10 for i in ranking.order[:9]), ranking.order[:12]


def test_the_greedy_horizon_keeps_the_order_consistent():
    rng = np.random.default_rng(1)
    u, emb = rng.random(300), rng.normal(size=(300, 16)).astype(np.float32)
    full, cut = rank_pool(u, emb, horizon=300), rank_pool(u, emb, horizon=50)
    assert full.order[:50].tolist() == cut.order[:50].tolist()
    assert np.all(np.diff(cut.score[cut.order]) >= -1e-12)
    assert sorted(cut.order.tolist()) == list(range(300))


def test_degenerate_pools():
    assert len(rank_pool(np.zeros(0), np.zeros((0, 8))).order) == 0
    one = rank_pool(np.array([0.3]), np.ones((1, 8)))
    assert one.order.tolist() == [0] and one.score[0] == pytest.approx(0.7) and one.cluster.tolist() == [0]
    same = rank_pool(np.array([0.5, 0.5, 0.5]), np.ones((3, 8)))
    assert sorted(same.order.tolist()) == [0, 1, 2] and np.all(np.isfinite(same.score))


def test_a_confident_text_without_entities_is_not_uncertain_and_length_does_not_count():
    sure = uncertainty_from(np.full(20, 0.001, np.float32), 0.99)
    assert sure.value < 0.01
    short = uncertainty_from(np.full(10, 0.2, np.float32), 0.5)
    long = uncertainty_from(np.full(1000, 0.2, np.float32), 0.5 ** 100)
    assert long.value == pytest.approx(short.value, abs=1e-6)
