"""Uncertainty + diversity ranking over a pool (raner_backend.active.ranking)."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from raner_backend.active.ranking import TAU_SAMPLE, normalise, rank_by_uncertainty, rank_pool, redundancy_radius
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


def test_a_likely_mention_of_a_young_type_is_uncertain_however_sure_the_model_is():
    sure = uncertainty_from(np.full(20, 0.001, np.float32), 0.99, young_mass=0.9)
    assert sure.value == pytest.approx(0.9) and sure.to_dict()["young_type"] == 0.9
    doubtful = uncertainty_from(np.full(20, 0.6, np.float32), 0.01, young_mass=0.1)
    assert doubtful.value == uncertainty_from(np.full(20, 0.6, np.float32), 0.01).value > 0.1


def clustered_pool(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    topics = rng.normal(size=(20, dim))
    return (topics[rng.integers(0, 20, n)] + 0.7 * rng.normal(size=(n, dim))).astype(np.float32)


def exact_radius(unit: np.ndarray) -> float:
    distances = (1.0 - unit @ unit.T) / 2.0
    return 0.5 * float(np.median(distances[np.triu_indices(len(unit), k=1)]))


def test_the_radius_is_exact_below_the_sample_size_and_close_above_it():
    small = normalise(clustered_pool(TAU_SAMPLE - 1, 16), 0.0)
    assert redundancy_radius(small) == pytest.approx(exact_radius(small), rel=1e-6)
    large = clustered_pool(3000, 16, seed=1)
    large = normalise(large, large.mean(axis=0))
    sampled = redundancy_radius(large)
    assert sampled == redundancy_radius(large), "a fixed seed: the same pool gives the same radius"
    assert sampled == pytest.approx(exact_radius(large), rel=0.01)


def test_labelled_tasks_compared_in_blocks_give_the_same_queue(monkeypatch):
    from raner_backend.active import ranking

    rng = np.random.default_rng(2)
    u, emb, labelled = rng.random(200), clustered_pool(200, 16), clustered_pool(600, 16, seed=3)
    blocks = rank_pool(u, emb, labelled=labelled)
    monkeypatch.setattr(ranking, "LABELLED_BLOCK", 10**6)
    whole = rank_pool(u, emb, labelled=labelled)
    assert blocks.order.tolist() == whole.order.tolist()
    assert np.allclose(blocks.score, whole.score)


def test_ranking_a_large_pool_needs_memory_linear_in_the_pool():
    """10,000 tasks and 3,000 labelled: an n x n float32 matrix alone would be 400 MB, n x labelled 120 MB."""
    rng = np.random.default_rng(4)
    u, emb, labelled = rng.random(10_000), clustered_pool(10_000, 64), clustered_pool(3_000, 64, seed=5)
    tracemalloc.start()
    try:
        ranking = rank_pool(u, emb, labelled=labelled, horizon=200)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert sorted(ranking.order.tolist()) == list(range(10_000))
    assert peak < 64 * 2**20, f"peak {peak / 2**20:.0f} MB"


def test_exact_copies_keep_every_score_between_0_and_1():
    """Label Studio drops a prediction whose score is above 1; float32 rounding can put a copy's
    distance a hair below 0."""
    rng = np.random.default_rng(6)
    emb = np.repeat(rng.normal(size=(30, 64)).astype(np.float32), 4, axis=0)
    u = rng.random(len(emb))
    ranking = rank_pool(u, emb, labelled=emb[::7])
    assert np.all((ranking.score >= 0.0) & (ranking.score <= 1.0)) and np.all(ranking.diversity >= 0.0)
