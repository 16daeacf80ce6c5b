"""End to end on a handful of sentences with a tiny BERT made here: train → save → ONNX export →
predict through every engine; also proves that BASE_MODEL accepts any local HF checkpoint."""
from __future__ import annotations

import json

import numpy as np
import pytest

from raner_backend.engine.loader import BaseRuntime, build_predictor
from raner_backend.model.base import resolve_base

from .emissions import emission_gap
from .tiny_bert import tiny_examples


@pytest.fixture(scope="module")
def trained(tiny_model):
    return tiny_model


def test_training_writes_a_loadable_model(trained):
    root, _ = trained
    summary = json.loads((root / "model" / "training.json").read_text())
    assert summary["epochs"] >= 1 and summary["history"]
    assert (root / "model" / "head.safetensors").exists()


@pytest.mark.parametrize("engine", ["torch", "onnx-fp32", "onnx-int8"])
def test_trained_model_recovers_training_entities(trained, engine):
    root, base = trained
    runtime = BaseRuntime(resolve_base(str(base), root / "cache"), root / "cache")
    predictor = build_predictor(runtime, root / "model", "tiny", engine, cache_size=0)
    examples = tiny_examples()
    results = predictor.predict([e.text for e in examples])
    found = sum(len({(x.start, x.end, x.label) for x in r.entities} & {tuple(s) for s in e.spans})
                for r, e in zip(results, examples))
    total = sum(len(e.spans) for e in examples)
    assert found >= 0.8 * total, f"{engine}: {found}/{total} training entities recovered"
    for r, e in zip(results, examples):
        assert r.length == len(e.text)
        assert np.all((r.char_entropy >= 0) & (r.char_entropy <= 1 + 1e-5))
        for x in r.entities:
            assert e.text[x.start : x.end] == x.text and 0 <= x.score <= 1


def test_onnx_matches_torch_on_padded_batches(trained):
    root, base = trained
    runtime = BaseRuntime(resolve_base(str(base), root / "cache"), root / "cache")
    texts = ["马云在杭州", "李明昨天去了北京大学，华为在深圳发布Mate60手机。", "好", "腾讯总部位于深圳。" * 3]
    torch_p = build_predictor(runtime, root / "model", "t", "torch", cache_size=0)
    onnx_p = build_predictor(runtime, root / "model", "o", "onnx-fp32", cache_size=0)
    assert emission_gap(torch_p, onnx_p, texts)[0] < 1e-4
