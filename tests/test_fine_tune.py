"""Fine-tuning from the served model, with replay and the deploy guard."""
from __future__ import annotations

from raner_backend.active.uncertainty import uncertainty_of
from raner_backend.engine.loader import BaseRuntime, build_predictor
from raner_backend.model.base import resolve_base
from raner_backend.model.bundle import HeadBundle
from raner_backend.model.data import Example
from raner_backend.model.tags import Span
from raner_backend.training.fine_tune import MAX_NEW_SHARE, MIN_STEPS, fine_tune, project_config, split_held_out
from raner_backend.training.trainer import TrainConfig

from .tiny_bert import tiny_examples


def test_held_out_split_is_deterministic_and_disjoint():
    items = list(range(20))
    train, held = split_held_out(items, 0.2, seed=1)
    assert len(held) == 4 and not set(train) & set(held) and sorted(train + held) == items
    assert split_held_out(items, 0.2, seed=1) == (train, held)


def _runtime(tiny_model) -> BaseRuntime:
    root, base = tiny_model
    return BaseRuntime(resolve_base(str(base), root / "cache"), root / "cache").load()


def test_fine_tune_learns_project_data_and_guards_deployment(tiny_model):
    root, _ = tiny_model
    runtime = _runtime(tiny_model)
    served = HeadBundle.load(root / "model")
    # The project tags 天气 as an ORG: something the served model never predicts.
    project = [Example("今天天气很好。", (Span(2, 4, "ORG"),))] * 10
    replay = [e for e in tiny_examples() if "天气" not in e.text] * 10
    result = fine_tune(served, runtime.tokenizer, _states(runtime, served), project, replay,
                       tiny_examples(), TrainConfig(epochs=30, patience=30, batch_chars=256, head_lr=5e-3))
    f = result.figures
    assert f["replay_examples"] >= f["train_examples"] * (1 - MAX_NEW_SHARE) / MAX_NEW_SHARE - 1
    assert f["candidate"]["held_out_f1"] > f["served"]["held_out_f1"]
    assert result.deploy and "held-out" in result.reason and f["candidate_lower_in_resamples"] == 0.0
    # The served bundle itself is untouched (fine-tuning works on a copy).
    assert HeadBundle.load(root / "model").head.state_dict()["out.weight"].equal(served.head.state_dict()["out.weight"])


def test_replay_can_hold_the_model_to_what_it_knew(tiny_model):
    import numpy as np

    from raner_backend.training.fine_tune import items_for
    from raner_backend.training.trainer import item_emissions

    root, _ = tiny_model
    runtime = _runtime(tiny_model)
    served = HeadBundle.load(root / "model")
    project = [Example("今天天气很好。", (Span(2, 4, "ORG"),))] * 10
    replay = [e for e in tiny_examples() if "天气" not in e.text]
    items = items_for(runtime.tokenizer, _states(runtime, served), served, replay)
    before = dict(item_emissions(served.head, items))
    drift = {}
    for distill in (0.0, 5.0):
        result = fine_tune(served, runtime.tokenizer, _states(runtime, served), project, replay * 10, [],
                           TrainConfig(epochs=10, patience=10, batch_chars=256, head_lr=5e-3, distill=distill),
                           project_types=("PER", "LOC", "ORG"))
        assert result.figures["replay_held_to_served"] == distill
        after = dict(item_emissions(result.bundle.head, items))
        drift[distill] = np.mean([((after[i] - before[i]) ** 2).mean() for i in before])
    assert drift[5.0] < 0.5 * drift[0.0], drift


def test_a_tag_set_beyond_what_replay_speaks_for_holds_replay_to_the_served_model(tiny_model):
    from raner_backend.training.fine_tune import GROWN_TYPES_DISTILL

    root, _ = tiny_model
    runtime = _runtime(tiny_model)
    served = HeadBundle.load(root / "model")
    project = [Example("李明买了Mate60。", (Span(0, 2, "PER"), Span(4, 10, "产品")))] * 6
    for distill, used in ((None, GROWN_TYPES_DISTILL), (0.0, 0.0)):  # unless the config says otherwise
        result = fine_tune(served, runtime.tokenizer, _states(runtime, served), project, tiny_examples() * 5, [],
                           TrainConfig(epochs=2, patience=2, batch_chars=256, distill=distill),
                           project_types=("PER", "LOC", "ORG", "产品"))
        assert result.figures["replay_held_to_served"] == used
        # The served model knows fewer tags than the candidate: replay matches on the ones it has.
        assert result.bundle.scheme.entity_types[-1] == "产品"


def test_fine_tune_grows_the_tag_set_and_learns_a_new_type_from_partial_replay(tiny_model, tmp_path):
    root, _ = tiny_model
    runtime = _runtime(tiny_model)
    served = HeadBundle.load(root / "model")
    project = [Example("华为在深圳发布Mate60手机。", (Span(0, 2, "ORG"), Span(3, 5, "LOC"), Span(7, 13, "产品"))),
               Example("李明买了Mate60。", (Span(0, 2, "PER"), Span(4, 10, "产品")))] * 6
    replay = tiny_examples() * 10  # says Mate60 is O: partial labels must not learn that
    result = fine_tune(served, runtime.tokenizer, _states(runtime, served), project, replay, tiny_examples(),
                       TrainConfig(epochs=30, patience=30, batch_chars=256, head_lr=5e-3),
                       project_types=("PER", "LOC", "ORG", "产品"))
    f = result.figures
    assert result.bundle.scheme.entity_types == ("PER", "LOC", "ORG", "产品") and f["new_types"] == ["产品"]
    assert f["candidate"]["held_out_per_type"]["产品"] == 1.0 and f["served"]["held_out_per_type"]["产品"] == 0.0
    assert result.deploy, result.reason
    # Learned from a handful of mentions, 产品 is young: where the model sees it, the task is doubtful.
    assert result.bundle.learned_from == {"产品": f["train_examples"]} and f["young_types"] == ["产品"]
    result.bundle.save(tmp_path)
    predictor = build_predictor(runtime, tmp_path, "young", "torch", cache_size=0)
    product, plain = predictor.predict(["李明买了Mate60。", "李明在深圳。"])
    assert uncertainty_of(product).value >= product.young_mass > 0.9, product.young_mass
    assert plain.young_mass < product.young_mass - 0.2, plain.young_mass


def test_a_project_trains_on_the_states_of_the_engine_that_serves_it(tiny_model):
    from raner_backend.training.fine_tune import items_for

    root, _ = tiny_model
    runtime = _runtime(tiny_model)
    bundle = HeadBundle.load(root / "model")
    layers = bundle.head.cfg.base_layers
    states = {engine: [i.token_states.astype("float32") for i in items_for(
        runtime.tokenizer, runtime.states_module(layers, bundle.vocab, engine), bundle, tiny_examples())]
        for engine in ("torch", "onnx-fp32", "onnx-int8")}
    for torch_states, fp32, int8 in zip(*states.values()):
        assert torch_states.shape == fp32.shape == int8.shape and torch_states.shape[1] == len(layers)
        assert abs(fp32 - torch_states).max() < 1e-2  # fp16 in the items
        assert 0 < abs(int8 - torch_states).mean() < 0.2 * abs(torch_states).mean()


def test_scores_count_only_the_types_a_project_labels(tiny_model):
    from raner_backend.training.fine_tune import items_for
    from raner_backend.training.trainer import evaluate_items

    root, _ = tiny_model
    runtime = _runtime(tiny_model)
    bundle = HeadBundle.load(root / "model")
    items = items_for(runtime.tokenizer, _states(runtime, bundle), bundle, tiny_examples())
    every = evaluate_items(bundle.head, bundle.crf, bundle.scheme, items)
    people = evaluate_items(bundle.head, bundle.crf, bundle.scheme, items, ("PER",))
    assert set(every["per_type"]) == {"PER", "LOC", "ORG"}
    assert set(people["per_type"]) == {"PER"}
    assert people["overall"] == people["per_type"]["PER"]


def _states(runtime, bundle):
    return runtime.states_module(bundle.head.cfg.base_layers, bundle.vocab, "torch")



def _scores(f1: float, per_type: dict | None = None, support: int = 10) -> dict:
    return {"held_out": {"overall": {"f1": f1, "support": support}, "per_type": per_type or {}},
            "probe": {"overall": {"f1": 0.9}}}


def test_the_guard_refuses_a_candidate_lower_on_more_tasks_than_chance_explains():
    from raner_backend.training.fine_tune import deploy_verdict

    served = _scores(1.0)
    assert deploy_verdict(served, _scores(0.8), 0.66, 10)[0]  # one of ten held-out tasks worse
    assert deploy_verdict(served, _scores(0.9), 0.9499, 200)[0]
    deploy, reason = deploy_verdict(served, _scores(0.9), 0.95, 200)
    assert not deploy and "lower in 95.0% of resamples" in reason


def test_the_guard_refuses_a_candidate_that_loses_a_well_supported_type():
    from raner_backend.training.fine_tune import deploy_verdict

    served = _scores(1.0, {"PER": {"f1": 1.0, "support": 8}})
    deploy, reason = deploy_verdict(served, _scores(0.95, {"PER": {"f1": 0.6, "support": 8}}), 0.5, 40)
    assert not deploy and "types that lost: PER" in reason
    assert deploy_verdict(served, _scores(0.95, {"PER": {"f1": 0.6, "support": 4}}), 0.5, 40)[0]  # too few to read


def test_the_guard_refuses_a_candidate_that_finds_none_of_the_held_out_mentions():
    from raner_backend.training.fine_tune import deploy_verdict

    deploy, reason = deploy_verdict(_scores(0.0), _scores(0.0, support=12), 0.0, 7)
    assert not deploy and "finds none of the 12 held-out mentions" in reason
    assert deploy_verdict(_scores(0.0, support=0), _scores(0.0, support=0), 0.0, 7)[0]  # held-out tasks without entities


def test_early_stopping_waits_for_the_minimum_steps(tiny_model):
    from raner_backend.training.fine_tune import items_for
    from raner_backend.training.trainer import train

    root, _ = tiny_model
    runtime = _runtime(tiny_model)
    served = HeadBundle.load(root / "model")
    items = items_for(runtime.tokenizer, _states(runtime, served), served, tiny_examples())
    dev = [items[0]]
    for min_steps, epochs_run in ((0, 2), (12, None)):  # the dev F1 cannot rise after the first epoch
        bundle = HeadBundle.load(root / "model")
        cfg = TrainConfig(epochs=50, patience=1, min_steps=min_steps, batch_chars=256, head_lr=1e-9, crf_lr=1e-9)
        summary = train(bundle.head, bundle.crf, bundle.scheme, items, dev, cfg)
        assert summary["steps"] >= min_steps and (epochs_run is None or summary["epochs"] == epochs_run)
    assert project_config(10).min_steps == MIN_STEPS


def test_a_task_keeps_its_side_of_the_held_out_split_as_annotations_are_added():
    ids = list(range(100, 150))
    train, held = split_held_out(ids, 0.2, seed=13, keys=ids)
    assert 4 <= len(held) <= 18 and sorted(train + held) == ids
    more = ids + list(range(150, 160))
    train_more, held_more = split_held_out(more, 0.2, seed=13, keys=more)
    assert set(held) <= set(held_more) and set(train) <= set(train_more), "nothing trained on is held out later"
    assert split_held_out(ids[::-1], 0.2, seed=13, keys=ids[::-1])[1] == sorted(held, reverse=True)
    assert split_held_out([7, 8], 0.2, seed=13, keys=[7, 8])[1] in ([7], [8]), "two tasks: one of each side"


def test_one_annotated_task_is_refused_for_there_is_nothing_to_check_a_candidate_on(tiny_model):
    import pytest

    root, _ = tiny_model
    runtime = _runtime(tiny_model)
    served = HeadBundle.load(root / "model")
    with pytest.raises(ValueError, match="at least 2 are needed"):
        fine_tune(served, runtime.tokenizer, _states(runtime, served), [Example("今天天气很好。", (Span(2, 4, "ORG"),))],
                  tiny_examples(), tiny_examples(), TrainConfig(epochs=1))
