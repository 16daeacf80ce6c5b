"""The head's own copy of the encoder's top layers: it starts as the encoder itself, ignores
padding, is stored in fp16, and exports to ONNX with the same emissions as PyTorch."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from raner_backend.engine.loader import HEAD_INT8, BaseRuntime, build_predictor
from raner_backend.model.base import resolve_base
from raner_backend.model.bundle import WEIGHTS, HeadBundle
from raner_backend.model.network import CharHead, EncoderLayer, EncoderStates, HeadConfig, attention_mask_for
from raner_backend.training.base_model import with_top_layers

from .emissions import emission_gap, window_emissions
from .tiny_bert import make_tiny_bert, tiny_examples, write_tagged

TEXTS = ["马云在杭州", "李明昨天去了北京大学，华为在深圳发布Mate60手机。", "好", "腾讯总部位于深圳。" * 3]


@pytest.fixture(scope="module")
def top_model(tmp_path_factory):
    """(model folder, base runtime): a tiny model trained with the tiny BERT's last layer in its head."""
    from raner_backend.cli import main

    root = tmp_path_factory.mktemp("top")
    base = make_tiny_bert(root / "bert")
    data = write_tagged(root / "tiny.txt", tiny_examples() * 4)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BASE_MODEL", str(base))
        mp.setenv("CACHE_DIR", str(root / "cache"))
        code = main(["train", "--data", str(data), "--out", str(root / "model"), "--epochs", "30",
                     "--dev-size", "2", "--patience", "30", "--batch-chars", "256", "--head-lr", "5e-3",
                     "--top-lr", "1e-3", "--head-config",
                     json.dumps({"layers": [1, 2], "width": 64, "char_dim": 32, "top_layers": 1})])
    assert code == 0
    return root / "model", BaseRuntime(resolve_base(str(base), root / "cache"), root / "cache").load()


def _tokens(runtime, texts):
    batch = runtime.tokenizer(texts, padding=True, return_tensors="pt")
    return batch["input_ids"], batch["attention_mask"]


def test_top_layers_start_as_the_encoders_own(top_model):
    folder, runtime = top_model
    cfg = HeadBundle.load(folder).head.cfg
    grown = with_top_layers(CharHead(HeadConfig.from_dict(dict(cfg.to_dict(), top_layers=0))), runtime.encoder, 1)
    ids, mask = _tokens(runtime, TEXTS)
    with torch.inference_mode():
        states = EncoderStates(runtime.encoder, (1, 2))(ids, mask)
        recomputed = grown.eval().top(states, mask)
    real = mask.bool()
    assert torch.allclose(recomputed[real], states[real], atol=1e-5)


def test_more_top_layers_keep_the_trained_ones_on_top(top_model):
    folder, runtime = top_model
    cfg = HeadBundle.load(folder).head.cfg
    head = with_top_layers(CharHead(HeadConfig.from_dict(dict(cfg.to_dict(), layers=[0, 1, 2], top_layers=0))),
                           runtime.encoder, 1)
    with torch.no_grad():
        for p in head.top.parameters():
            p.add_(0.01)  # stands for training
    grown = with_top_layers(head, runtime.encoder, 2)
    assert grown.cfg.top_layers == 2
    for a, b in zip(grown.top.layers[1].parameters(), head.top.layers[0].parameters()):
        assert torch.equal(a, b)
    ids, mask = _tokens(runtime, TEXTS)
    with torch.inference_mode():
        states = EncoderStates(runtime.encoder, (0, 1, 2))(ids, mask)
        first = grown.eval().top.layers[0](states[:, :, 0], attention_mask_for(mask, states.dtype))
    real = mask.bool()
    assert torch.allclose(first[real], states[:, :, 1][real], atol=1e-5)


def test_top_layers_need_their_input_layer_among_the_heads_layers(top_model):
    folder, runtime = top_model
    cfg = HeadBundle.load(folder).head.cfg
    with pytest.raises(ValueError, match="need layer 0"):
        with_top_layers(CharHead(HeadConfig.from_dict(dict(cfg.to_dict(), top_layers=0))), runtime.encoder, 2)


def test_training_moved_the_top_layers_and_stores_the_head_in_fp16(top_model):
    folder, runtime = top_model
    bundle = HeadBundle.load(folder)
    assert bundle.head.cfg.top_layers == 1
    with safe_open(str(folder / WEIGHTS), "pt") as weights:
        dtypes = {k: weights.get_tensor(k).dtype for k in weights.keys()}
    assert {d for k, d in dtypes.items() if k.startswith("head.")} == {torch.float16}
    assert {d for k, d in dtypes.items() if k.startswith("crf.")} == {torch.float32}
    trained = bundle.head.top.layers[0].linear1.weight
    assert not torch.allclose(trained, runtime.encoder.encoder.layer[1].intermediate.dense.weight, atol=1e-3)


@pytest.mark.parametrize("engine", ["torch", "onnx-fp32"])
def test_emissions_do_not_depend_on_the_batch(top_model, engine):
    """A text's emissions alone and in a batch padded for a longer text agree: padding is masked."""
    folder, runtime = top_model
    predictor = build_predictor(runtime, folder, "top", engine, cache_size=0)
    windows, together = window_emissions(predictor, TEXTS)
    for w, expected in zip(windows, together):
        predictor._run(TEXTS, [w])
        assert np.abs(w.emissions - expected).max() < 1e-4


def test_onnx_head_with_top_layers_matches_torch(top_model):
    folder, runtime = top_model
    torch_p = build_predictor(runtime, folder, "t", "torch", cache_size=0)
    onnx_p = build_predictor(runtime, folder, "o", "onnx-fp32", cache_size=0)
    assert emission_gap(torch_p, onnx_p, TEXTS)[0] < 1e-4


def test_a_compact_model_stores_int8_weights_and_predicts_the_same(top_model, tmp_path):
    folder, runtime = top_model
    HeadBundle.load(folder).save(tmp_path, compact=True)
    with safe_open(str(tmp_path / WEIGHTS), "pt") as weights:
        dtypes = {k: weights.get_tensor(k).dtype for k in weights.keys()}
    assert any(d == torch.int8 for k, d in dtypes.items() if k.startswith("head."))
    assert dtypes["crf.transitions"] == torch.float32
    assert (tmp_path / WEIGHTS).stat().st_size < 0.7 * (folder / WEIGHTS).stat().st_size
    full = build_predictor(runtime, folder, "fp16", "torch", cache_size=0)
    compact = build_predictor(runtime, tmp_path, "int8", "torch", cache_size=0)
    gap, scale = emission_gap(full, compact, TEXTS)
    assert gap < 0.02 * scale
    spans = [[[(e.start, e.end, e.label) for e in r.entities] for r in p.predict(TEXTS)] for p in (full, compact)]
    assert spans[0] == spans[1]


def test_a_head_with_top_layers_reads_the_base_layers_alone_or_with_the_last(top_model):
    folder, runtime = top_model
    head = HeadBundle.load(folder).head.eval()
    assert head.cfg.base_layers == (1,)
    ids, mask = _tokens(runtime, TEXTS)
    with torch.inference_mode():
        only_base = EncoderStates(runtime.encoder, (1,))(ids, mask)
        with_last = EncoderStates(runtime.encoder, (1, 2))(ids, mask)
        f = _char_inputs(runtime, folder)
        assert torch.allclose(head(only_base, mask, *f), head(with_last, mask, *f), atol=1e-5)


def _char_inputs(runtime, folder):
    from raner_backend.engine.export import sample_inputs

    _, _, f = sample_inputs(runtime.tokenizer, HeadBundle.load(folder).vocab, TEXTS)
    return [f[k] for k in ("char_token", "char_piece", "char_ids", "char_class")]


def test_a_head_exported_for_the_whole_encoder_is_exported_again(top_model, tmp_path):
    import shutil

    from raner_backend.engine.export import export_head

    folder, runtime = top_model
    old = tmp_path / "old"
    shutil.copytree(folder, old)
    bundle = HeadBundle.load(old)
    export_head(bundle.head, EncoderStates(runtime.encoder, bundle.head.cfg.layers), runtime.tokenizer,
                bundle.vocab, old / "head.onnx")
    assert _layers_read(old / "head.onnx") == 2
    predictor = build_predictor(runtime, old, "old", "onnx-fp32", cache_size=0)
    assert _layers_read(old / "head.onnx") == 1
    spans = [[(e.start, e.end, e.label) for e in r.entities] for r in predictor.predict(TEXTS)]
    expected = [[(e.start, e.end, e.label) for e in r.entities]
                for r in build_predictor(runtime, folder, "new", "torch", cache_size=0).predict(TEXTS)]
    assert spans == expected


def _layers_read(head_onnx) -> int:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(head_onnx), providers=["CPUExecutionProvider"])
    return next(i.shape[2] for i in session.get_inputs() if i.name == "token_states")


def test_encoder_states_equal_the_full_encoders_and_stop_at_the_highest_layer_read(top_model):
    _, runtime = top_model
    ids, mask = _tokens(runtime, TEXTS)
    computed = []
    hook = runtime.encoder.encoder.layer[1].register_forward_hook(lambda *_: computed.append(True))
    try:
        with torch.inference_mode():
            full = runtime.encoder(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
            computed.clear()
            for layers in [(0, 1), (1, 2), (2,)]:
                ours = EncoderStates(runtime.encoder, layers)(ids, mask)
                expected = torch.stack([full[i] for i in layers], dim=2)
                assert torch.allclose(ours[mask.bool()], expected[mask.bool()], atol=1e-5)
            assert len(computed) == 2  # layer 2 runs for (1, 2) and (2,), never for (0, 1)
    finally:
        hook.remove()


def test_a_layer_saved_under_torchs_transformer_layer_names_loads_unchanged():
    """Models trained before EncoderLayer stored nn.TransformerEncoderLayer's weights."""
    torch.manual_seed(0)
    cfg = HeadConfig(num_tags=3, char_vocab_size=5, encoder_hidden=16, attention_heads=4, intermediate_size=32,
                     layer_norm_eps=1e-12)
    old = torch.nn.TransformerEncoderLayer(16, 4, 32, dropout=0.1, activation="gelu", layer_norm_eps=1e-12,
                                           batch_first=True).eval()
    ours = EncoderLayer(cfg).eval()
    ours.load_state_dict(old.state_dict())
    x, mask = torch.randn(2, 5, 16), torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    with torch.inference_mode():
        expected = old(x, src_key_padding_mask=mask == 0)
        got = ours(x, attention_mask_for(mask, x.dtype))
    assert torch.allclose(got[mask.bool()], expected[mask.bool()], atol=1e-5)


def test_the_exported_head_runs_its_top_layers_as_fused_attention(top_model):
    import onnx

    folder, runtime = top_model
    build_predictor(runtime, folder, "int8", "onnx-int8", cache_size=0)
    ops = {name: {n.op_type for n in onnx.load(str(folder / name)).graph.node}
           for name in ("head.onnx", HEAD_INT8)}
    assert "Attention" in ops["head.onnx"] and "SkipLayerNormalization" in ops["head.onnx"]
    assert "QAttention" in ops[HEAD_INT8]
