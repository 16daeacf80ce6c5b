"""Entity scores and the bootstrap interval of F1."""
from __future__ import annotations

from raner_backend.model.tags import Span
from raner_backend.model.metrics import bootstrap_f1, entity_scores, share_worse

GOLD = [[Span(0, 2, "PER"), Span(3, 5, "LOC")], [Span(0, 2, "ORG")], [], [Span(1, 3, "PER")]] * 25


def test_perfect_predictions_have_a_point_interval_at_one():
    assert bootstrap_f1(GOLD, GOLD) == [1.0, 1.0]


def test_the_interval_holds_the_f1_and_narrows_with_more_sentences():
    predicted = [[s for s in g if s.label != "ORG"] for g in GOLD]  # every ORG missed
    f1 = entity_scores(GOLD, predicted)["overall"]["f1"]
    lo, hi = bootstrap_f1(GOLD, predicted)
    assert lo < f1 < hi
    wide = bootstrap_f1(GOLD[:20], predicted[:20])
    assert wide[1] - wide[0] > hi - lo


def test_no_sentences_give_an_empty_interval():
    assert bootstrap_f1([], []) == [0.0, 0.0]


def test_a_candidate_worse_on_many_sentences_is_worse_beyond_chance():
    missing_every_org = [[s for s in g if s.label != "ORG"] for g in GOLD]
    assert share_worse(GOLD, GOLD, missing_every_org) == 1.0
    assert share_worse(GOLD, missing_every_org, GOLD) == 0.0


def test_one_changed_entity_in_a_small_held_out_set_is_not_worse_beyond_chance():
    held_out = GOLD[:10]
    one_wrong = [list(g) for g in held_out]
    one_wrong[0] = [Span(0, 3, "PER"), Span(3, 5, "LOC")]  # one boundary moved
    assert entity_scores(held_out, one_wrong)["overall"]["f1"] < 1.0
    assert 0.3 < share_worse(held_out, held_out, one_wrong) < 0.95
    assert share_worse([], [], []) == 0.0
