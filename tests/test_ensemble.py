"""Combining models: emissions and CRF scores averaged, saved and loaded as one model, exported to
ONNX with the same emissions, trainable as a whole, and refused when the members do not fit."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from raner_backend.engine.loader import BaseRuntime, build_predictor
from raner_backend.model.base import resolve_base
from raner_backend.model.bundle import HeadBundle
from raner_backend.model.chars import CharVocab
from raner_backend.model.network import HeadEnsemble, top_layer_parameters
from raner_backend.training.base_model import with_top_layers
from raner_backend.training.trainer import TrainConfig, parameter_groups

from .emissions import emission_gap, window_emissions
from .tiny_bert import tiny_examples

TEXTS = ["马云在杭州", "李明昨天去了北京大学，华为在深圳发布Mate60手机。", "好"]


def _cli_on_tiny_base(tiny_model, *argv: str) -> None:
    """Run ``raner-backend ARGV`` with the tiny model's base encoder and cache; fail on a non-zero exit."""
    from raner_backend.cli import main

    root, base = tiny_model
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BASE_MODEL", str(base))
        mp.setenv("CACHE_DIR", str(root / "cache"))
        assert main(list(argv)) == 0


@pytest.fixture(scope="module")
def combined(tiny_model, tmp_path_factory):
    """(members' folders, combined folder, runtime): the tiny model, a second one grown from it with
    its own top layer and another seed, and the two combined with ``raner-backend combine``."""
    root, base = tiny_model
    work = tmp_path_factory.mktemp("ensemble")
    second, both = work / "second", work / "both"
    _cli_on_tiny_base(tiny_model, "train", "--data", str(root / "tiny.txt"), "--init", str(root / "model"),
                      "--out", str(second), "--epochs", "5", "--dev-size", "2", "--seed", "5", "--batch-chars", "256",
                      "--top-layers", "1", "--top-lr", "1e-3")
    _cli_on_tiny_base(tiny_model, "combine", "--out", str(both), str(root / "model"), str(second))
    runtime = BaseRuntime(resolve_base(str(base), root / "cache"), root / "cache").load()
    return [root / "model", second], both, runtime


def _emissions(runtime, folder):
    return window_emissions(build_predictor(runtime, folder, "x", "torch", cache_size=0), TEXTS)[1]


def test_combined_model_averages_its_members(combined):
    members, both, runtime = combined
    bundle = HeadBundle.load(both)
    assert isinstance(bundle.head, HeadEnsemble) and len(bundle.head.members) == 2
    each = [_emissions(runtime, m) for m in members]
    together = _emissions(runtime, both)
    for k, emissions in enumerate(together):
        assert np.abs(emissions - (each[0][k] + each[1][k]) / 2).max() < 1e-4
    crfs = [HeadBundle.load(m).crf for m in members]
    assert torch.allclose(bundle.crf.transitions, (crfs[0].transitions + crfs[1].transitions) / 2)


def test_combined_model_exports_to_onnx_and_finds_the_training_entities(combined):
    _, both, runtime = combined
    torch_p, onnx_p = (build_predictor(runtime, both, "x", engine, cache_size=0) for engine in ("torch", "onnx-fp32"))
    assert emission_gap(torch_p, onnx_p, TEXTS)[0] < 1e-4
    examples = tiny_examples()
    results = build_predictor(runtime, both, "x", "torch", cache_size=0).predict([e.text for e in examples])
    found = sum(len({(x.start, x.end, x.label) for x in r.entities} & {tuple(s) for s in e.spans})
                for r, e in zip(results, examples))
    assert found >= 0.8 * sum(len(e.spans) for e in examples)


def test_training_an_ensemble_trains_every_member_with_top_layers_kept_slow(combined):
    _, both, _ = combined
    head = HeadBundle.load(both).head
    groups = parameter_groups(head, HeadBundle.load(both).crf, TrainConfig(head_lr=1e-3, top_lr=1e-5))
    slow = next(g for g in groups if g["lr"] == 1e-5)
    assert {id(p) for p in slow["params"]} == {id(p) for p in top_layer_parameters(head.members[1])}
    trained = {id(p) for g in groups for p in g["params"]}
    assert all(id(p) in trained for p in head.parameters())


def test_members_must_share_characters(combined):
    members, both, runtime = combined
    first, second = HeadBundle.load(members[0]), HeadBundle.load(members[1])
    other = copy.deepcopy(second)
    other.vocab = CharVocab(second.vocab.chars[:-1])
    with pytest.raises(ValueError, match="characters"):
        HeadBundle.ensemble([first, other])
    with pytest.raises(ValueError, match="ensemble"):
        with_top_layers(HeadBundle.load(both).head, runtime.encoder, 2)


def test_a_new_head_can_take_another_models_characters(tiny_model, tmp_path):
    """``train --chars-from`` starts a fresh head (own initialisation) that can be combined with that model."""
    root, _ = tiny_model
    fresh = tmp_path / "fresh"
    _cli_on_tiny_base(tiny_model, "train", "--data", str(root / "tiny.txt"), "--chars-from", str(root / "model"),
                      "--out", str(fresh), "--epochs", "1", "--dev-size", "2", "--seed", "9", "--batch-chars", "256",
                      "--max-sentences", "6", "--head-config", '{"layers": [1, 2], "width": 32, "char_dim": 16}',
                      "--name-lists", "3", "--swap-names", "0.5")
    served, new = HeadBundle.load(root / "model"), HeadBundle.load(fresh)
    summary = json.loads((fresh / "training.json").read_text())
    assert summary["name_list_sentences"] == 3 and summary["mention_swap_sentences"] == 2
    assert summary["augmented_sentences"] == 3 + 2
    assert new.vocab.chars == served.vocab.chars
    assert new.head.cfg.width == 32
    assert len(HeadBundle.ensemble([served, new]).head.members) == 2


def test_a_combined_model_joins_another_as_its_members_each_counted_once(combined):
    """Adding a third head to a shipped pair gives the same model as combining the three singles."""
    members, both, _ = combined
    singles = [HeadBundle.load(m) for m in members]
    third = copy.deepcopy(singles[1])
    with torch.no_grad():
        third.crf.transitions.add_(1.0)
    grown = HeadBundle.ensemble([HeadBundle.load(both), third])
    flat = HeadBundle.ensemble([*singles, third])
    assert len(grown.head.members) == 3
    assert torch.allclose(grown.crf.transitions, flat.crf.transitions, atol=1e-6)
    for a, b in zip(grown.head.state_dict().values(), flat.head.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-3)


def test_averaging_gives_one_head_with_the_members_mean_weights(tiny_model, tmp_path):
    """``combine --average``: a weight average of one lineage stays one head, each weight the mean."""
    root, _ = tiny_model
    first = HeadBundle.load(root / "model")
    nudged = copy.deepcopy(first)
    with torch.no_grad():
        for p in [*nudged.head.parameters(), *nudged.crf.parameters()]:
            p.add_(0.5)
    nudged.save(tmp_path / "nudged")
    _cli_on_tiny_base(tiny_model, "combine", "--average", "--out", str(tmp_path / "soup"), str(root / "model"),
                      str(tmp_path / "nudged"))
    soup = HeadBundle.load(tmp_path / "soup")
    assert not isinstance(soup.head, HeadEnsemble)
    nudged = HeadBundle.load(tmp_path / "nudged")  # as stored (fp16), like the soup's inputs
    for a, b, mean in zip(first.head.state_dict().values(), nudged.head.state_dict().values(),
                          soup.head.state_dict().values()):
        assert torch.allclose(mean, (a + b) / 2, atol=2e-3)
    assert torch.allclose(soup.crf.transitions, (first.crf.transitions + nudged.crf.transitions) / 2)


def test_averaging_refuses_heads_of_different_shapes(combined):
    members, _, _ = combined
    with pytest.raises(ValueError, match="head shape"):
        HeadBundle.average([HeadBundle.load(m) for m in members])
