"""The CRF against brute-force enumeration of every tag path on tiny problems."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from raner_backend.model.crf import CRF, FORBIDDEN, CrfParams
from raner_backend.model.tags import DEFAULT_SCHEME, TagScheme

TINY = TagScheme(("PER",))  # O, B-PER, I-PER


def random_crf(scheme: TagScheme, seed: int) -> CRF:
    crf = CRF(scheme)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in (crf.transitions, crf.start, crf.end):
            p.copy_(torch.randn(p.shape, generator=gen))
    return crf


def penalised(crf: CRF) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return tuple(x.detach().double().numpy() for x in crf.scores())


def path_score(path, emissions, trans, start, end) -> float:
    score = start[path[0]] + end[path[-1]] + sum(emissions[t, k] for t, k in enumerate(path))
    return float(score + sum(trans[a, b] for a, b in zip(path, path[1:])))


def brute_force(emissions: np.ndarray, crf: CRF):
    """Every path's score; returns (paths, scores)."""
    trans, start, end = penalised(crf)
    length, n = emissions.shape
    paths = list(itertools.product(range(n), repeat=length))
    scores = np.array([path_score(p, emissions, trans, start, end) for p in paths])
    return paths, scores


def log_sum_exp(x: np.ndarray) -> float:
    return float(x.max() + np.log(np.exp(x - x.max()).sum()))


def test_scores_penalise_exactly_the_forbidden_moves():
    crf = CRF(TINY)
    trans, start, end = penalised(crf)
    assert trans.tolist() == [[0, 0, FORBIDDEN], [0, 0, 0], [0, 0, 0]]
    assert start.tolist() == [0, 0, FORBIDDEN]
    assert end.tolist() == [0, 0, 0]


@pytest.mark.parametrize("length", [1, 2, 3])
@pytest.mark.parametrize("seed", range(4))
def test_viterbi_matches_brute_force(length, seed):
    crf = random_crf(TINY, seed)
    emissions = np.random.default_rng(seed).normal(0, 2, (length, TINY.num_tags)).astype(np.float32)
    paths, scores = brute_force(emissions.astype(np.float64), crf)
    path, score = crf.params().viterbi(emissions)
    assert tuple(path.tolist()) == paths[int(scores.argmax())]
    assert score == pytest.approx(scores.max(), abs=1e-4)


def test_viterbi_on_hand_worked_case():
    # Zero CRF scores: the best path follows the emissions unless that needs a forbidden move.
    crf = CRF(TINY)
    emissions = np.array([[0.5, 0, 5], [0, 1, 0], [0, 0, 3]], dtype=np.float32)
    path, score = crf.params().viterbi(emissions)
    # I-PER cannot start (its 5 is unreachable); O (0.5), B-PER (1), I-PER (3) beats B, I, I (0 + 0 + 3).
    assert path.tolist() == [0, 1, 2]
    assert score == pytest.approx(4.5)


def test_viterbi_empty_sequence():
    path, score = CRF(TINY).params().viterbi(np.zeros((0, 3), np.float32))
    assert path.shape == (0,) and score == 0.0


@pytest.mark.parametrize("length", [1, 2, 3])
@pytest.mark.parametrize("seed", range(4))
def test_forward_backward_matches_brute_force(length, seed):
    crf = random_crf(TINY, 100 + seed)
    emissions = np.random.default_rng(seed).normal(0, 2, (length, TINY.num_tags)).astype(np.float32)
    paths, scores = brute_force(emissions.astype(np.float64), crf)
    log_z = log_sum_exp(scores)
    probs = np.exp(scores - log_z)
    expected = np.zeros((length, TINY.num_tags))
    for p, prob in zip(paths, probs):
        expected[np.arange(length), list(p)] += prob
    marginals, got_log_z = crf.params().forward_backward(emissions)
    assert got_log_z == pytest.approx(log_z, abs=1e-4)
    np.testing.assert_allclose(marginals, expected, atol=1e-5)


@pytest.mark.parametrize("seed", range(5))
def test_marginals_sum_to_one_and_forbidden_start_has_none(seed):
    rng = np.random.default_rng(seed)
    crf = random_crf(DEFAULT_SCHEME, seed)
    emissions = rng.normal(0, 3, (17, DEFAULT_SCHEME.num_tags)).astype(np.float32)
    marginals, _ = crf.params().forward_backward(emissions)
    np.testing.assert_allclose(marginals.sum(axis=1), 1.0, atol=1e-5)
    assert marginals[0, 2::2].max() < 1e-6  # no I- tag at the first position


@pytest.mark.parametrize("spread", [400.0, 5000.0])
def test_marginals_stay_exact_where_scores_differ_beyond_floating_point_range(spread):
    """Scores this far apart underflow in probability space; the log-space fallback answers."""
    crf = random_crf(DEFAULT_SCHEME, 3)
    emissions = np.random.default_rng(3).normal(0, spread, (30, DEFAULT_SCHEME.num_tags)).astype(np.float32)
    params = crf.params()
    marginals, log_z = params.forward_backward(emissions)
    path, best = params.viterbi(emissions)
    assert np.all(np.isfinite(marginals)) and np.isfinite(log_z)
    np.testing.assert_allclose(marginals.sum(axis=1), 1.0, atol=1e-5)
    assert marginals.argmax(axis=1).tolist() == path.tolist() and best <= log_z + 1e-3


def test_best_path_probability_is_at_most_one():
    crf = random_crf(DEFAULT_SCHEME, 7)
    emissions = np.random.default_rng(7).normal(0, 3, (12, DEFAULT_SCHEME.num_tags)).astype(np.float32)
    params = crf.params()
    _, best = params.viterbi(emissions)
    _, log_z = params.forward_backward(emissions)
    assert best <= log_z + 1e-4


def gold_nll_brute_force(crf: CRF, emissions: np.ndarray, tags: np.ndarray, lengths: list[int]) -> float:
    trans, start, end = penalised(crf)
    total = 0.0
    for row, n in enumerate(lengths):
        e = emissions[row, :n].astype(np.float64)
        _, scores = brute_force(e, crf)
        total += log_sum_exp(scores) - path_score(list(tags[row, :n]), e, trans, start, end)
    return total / len(lengths)


def padded_batch(seed: int, lengths: list[int], width: int, scheme: TagScheme):
    rng = np.random.default_rng(seed)
    n = scheme.num_tags
    emissions = rng.normal(0, 2, (len(lengths), width, n)).astype(np.float32)
    tags = np.zeros((len(lengths), width), dtype=np.int64)
    mask = np.zeros((len(lengths), width), dtype=bool)
    for row, length in enumerate(lengths):
        gold = scheme.encode(length, [])  # start from all O, then sprinkle allowed entities
        if length >= 2:
            gold[0], gold[1] = scheme.begin(scheme.entity_types[-1]), scheme.begin(scheme.entity_types[-1]) + 1
        if length >= 3:
            gold[-1] = scheme.begin(scheme.entity_types[0])
        tags[row, :length] = gold
        mask[row, :length] = True
    return emissions, tags, mask


def test_nll_matches_brute_force_on_padded_batch():
    scheme = TagScheme(("PER", "LOC"))  # 5 tags: 5**4 paths at most
    crf = random_crf(scheme, 3)
    lengths = [4, 1, 3, 2]
    emissions, tags, mask = padded_batch(0, lengths, 4, scheme)
    got = crf.nll(torch.from_numpy(emissions), torch.from_numpy(tags), torch.from_numpy(mask)).item()
    assert got == pytest.approx(gold_nll_brute_force(crf, emissions, tags, lengths), abs=1e-3)


def test_padding_does_not_change_nll():
    scheme = TagScheme(("PER", "LOC"))
    crf = random_crf(scheme, 4)
    lengths = [4, 1, 3, 2]
    emissions, tags, mask = padded_batch(1, lengths, 4, scheme)
    base = crf.nll(torch.from_numpy(emissions), torch.from_numpy(tags), torch.from_numpy(mask)).item()
    # Garbage in the padding (large emissions, forbidden tag pairs) and extra padded columns.
    rng = np.random.default_rng(9)
    wide = np.concatenate([emissions, rng.normal(0, 50, (4, 3, scheme.num_tags)).astype(np.float32)], axis=1)
    wide_tags = np.concatenate([tags, np.full((4, 3), 2)], axis=1)  # I-PER everywhere
    wide_mask = np.concatenate([mask, np.zeros((4, 3), bool)], axis=1)
    for row, n in enumerate(lengths):
        wide[row, n:] = rng.normal(0, 50, (wide.shape[1] - n, scheme.num_tags))
        wide_tags[row, n:] = 4  # I-LOC
    got = crf.nll(torch.from_numpy(wide), torch.from_numpy(wide_tags), torch.from_numpy(wide_mask)).item()
    assert got == pytest.approx(base, abs=1e-4)


def test_nll_of_rows_is_mean_of_single_rows():
    crf = random_crf(DEFAULT_SCHEME, 5)
    lengths = [6, 2, 4]
    emissions, tags, mask = padded_batch(2, lengths, 6, DEFAULT_SCHEME)
    batch = crf.nll(torch.from_numpy(emissions), torch.from_numpy(tags), torch.from_numpy(mask)).item()
    singles = [crf.nll(torch.from_numpy(emissions[r : r + 1, :n]), torch.from_numpy(tags[r : r + 1, :n]),
                       torch.ones(1, n, dtype=torch.bool)).item() for r, n in enumerate(lengths)]
    assert batch == pytest.approx(np.mean(singles), abs=1e-4)


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), length=st.integers(1, 30), spread=st.floats(0.1, 20))
def test_viterbi_never_takes_a_forbidden_move(seed, length, spread):
    rng = np.random.default_rng(seed)
    crf = CRF(DEFAULT_SCHEME)
    with torch.no_grad():
        for p in (crf.transitions, crf.start, crf.end):
            p.copy_(torch.from_numpy(rng.normal(0, spread, p.shape).astype(np.float32)))
    emissions = rng.normal(0, spread, (length, DEFAULT_SCHEME.num_tags)).astype(np.float32)
    emissions[:, 2::2] += spread * 3  # push hard towards I- tags
    path, _ = crf.params().viterbi(emissions)
    allowed = DEFAULT_SCHEME.allowed_transitions()
    assert DEFAULT_SCHEME.allowed_starts()[path[0]]
    assert all(allowed[a, b] for a, b in zip(path[:-1], path[1:]))


def test_params_round_trip_through_dict():
    params = random_crf(DEFAULT_SCHEME, 11).params()
    back = CrfParams.from_dict(params.to_dict())
    for a, b in zip((params.transitions, params.start, params.end), (back.transitions, back.start, back.end)):
        np.testing.assert_array_equal(a, b)


def test_adam_training_lowers_nll_and_keeps_penalties_fixed():
    torch.manual_seed(0)
    scheme = DEFAULT_SCHEME
    lengths = [8, 5, 7, 3]
    _, tags, mask = padded_batch(0, lengths, 8, scheme)
    # Fixed weak emissions: only the CRF's transitions/start/end learn.
    emissions = torch.randn(len(lengths), 8, scheme.num_tags) * 0.1
    tags_t, mask_t = torch.from_numpy(tags), torch.from_numpy(mask)
    crf = CRF(scheme)
    optimiser = torch.optim.Adam(crf.parameters(), lr=0.05)
    before = crf.nll(emissions, tags_t, mask_t).item()
    for _ in range(300):
        optimiser.zero_grad()
        loss = crf.nll(emissions, tags_t, mask_t)
        loss.backward()
        optimiser.step()
    after = crf.nll(emissions, tags_t, mask_t).item()
    assert after < 0.5 * before
    assert torch.equal(crf.transition_penalty, CRF(scheme).transition_penalty)  # buffers not trained


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_padded_batch_decodes_as_its_rows_alone(seed):
    """Rows of several lengths, one whose scores underflow in probability space (log-space fallback
    for that row only): the same paths, scores, marginals and partition functions as one by one."""
    params = random_crf(DEFAULT_SCHEME, seed).params()
    rng = np.random.default_rng(seed)
    lengths = np.array([1, 7, 30, 2, 30, 13])
    rows = [rng.normal(0, 3, (n, DEFAULT_SCHEME.num_tags)).astype(np.float32) for n in lengths]
    rows[4] = rng.normal(0, 5000, (30, DEFAULT_SCHEME.num_tags)).astype(np.float32)
    padded = np.full((len(rows), lengths.max(), DEFAULT_SCHEME.num_tags), 99.0, dtype=np.float32)
    for i, row in enumerate(rows):
        padded[i, : len(row)] = row
    paths, scores = params.viterbi_batch(padded, lengths)
    marginals, log_z = params.forward_backward_batch(padded, lengths)
    for i, row in enumerate(rows):
        path, score = params.viterbi(row)
        alone, alone_z = params.forward_backward(row)
        assert paths[i, : len(row)].tolist() == path.tolist()
        assert scores[i] == pytest.approx(score, rel=1e-6)
        np.testing.assert_allclose(marginals[i, : len(row)], alone, atol=1e-6)
        assert log_z[i] == pytest.approx(alone_z, rel=1e-9, abs=1e-6)
