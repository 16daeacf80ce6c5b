"""INT8 quantization: which products stay fp32, the INT8 head beside each version, and how the
default engine is chosen."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from raner_backend.engine.evaluation import choose_engine
from raner_backend.engine.export import fed_by_gelu, quantize_int8
from raner_backend.engine.loader import HEAD_INT8, BaseRuntime, build_predictor, ensure_head_onnx
from raner_backend.model.base import resolve_base
from raner_backend.model.bundle import HeadBundle

from .tiny_bert import tiny_examples


def _feed_forward(path) -> None:
    """x -> MatMul(up) -> Gelu -> MatMul(down): a transformer's feed-forward block."""
    rng = np.random.default_rng(0)
    up = numpy_helper.from_array(rng.normal(size=(8, 32)).astype(np.float32), "w_up")
    down = numpy_helper.from_array(rng.normal(size=(32, 8)).astype(np.float32), "w_down")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w_up"], ["h"], name="up"),
         helper.make_node("Gelu", ["h"], ["g"], name="gelu"),
         helper.make_node("MatMul", ["g", "w_down"], ["y"], name="down")],
        "ffn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 8])], [up, down])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]), str(path))


def test_products_fed_by_a_gelu_stay_fp32(tmp_path):
    source, target = tmp_path / "ffn.onnx", tmp_path / "ffn.int8.onnx"
    _feed_forward(source)
    assert fed_by_gelu(source) == ["down"]
    quantize_int8(source, target)
    nodes = {n.name: n.op_type for n in onnx.load(str(target)).graph.node}
    assert nodes.get("down") == "MatMul"  # untouched
    assert "up" not in nodes and any(op in ("MatMulInteger", "DynamicQuantizeMatMul") for op in nodes.values())


def test_the_encoder_export_is_fused_and_int8_covers_its_attention(tiny_model):
    root, base = tiny_model
    runtime = BaseRuntime(resolve_base(str(base), root / "cache"), root / "cache")
    bundle = HeadBundle.load(root / "model")

    def ops(int8: bool) -> set[str]:
        path = runtime.encoder_onnx(bundle.head.cfg.base_layers, bundle.vocab, int8=int8)
        return {n.op_type for n in onnx.load(str(path)).graph.node}

    assert {"Attention", "SkipLayerNormalization", "BiasGelu"} <= ops(int8=False)
    assert "QAttention" in ops(int8=True)
    assert runtime._torch_encoder is None  # exported from a copy with eager attention


def test_the_int8_engine_serves_an_int8_head_beside_the_fp32_export(tiny_model):
    root, base = tiny_model
    runtime = BaseRuntime(resolve_base(str(base), root / "cache"), root / "cache")
    predictor = build_predictor(runtime, root / "model", "tiny", "onnx-int8", cache_size=0)
    assert (root / "model" / HEAD_INT8).exists() and (root / "model" / "head.onnx").exists()
    assert predictor.backend.head_path.name == HEAD_INT8
    examples = tiny_examples()
    assert len(predictor.predict([e.text for e in examples])) == len(examples)
    fresh = BaseRuntime(resolve_base(str(base), root / "cache"), root / "cache")
    again = build_predictor(fresh, root / "model", "tiny", "onnx-int8", cache_size=0)
    assert again.predict(["马云在杭州"]) and fresh._torch_encoder is None  # the exports exist: no torch weights


def _engine(f1: float, p50: float, per_s: float) -> dict:
    return {"scores": {"overall": {"f1": f1}}, "one_task_p50_ms": p50, "sentences_per_s": per_s}


def test_the_default_engine_answers_one_task_fastest_within_the_f1_allowance():
    results = {"torch": _engine(0.920, 40.0, 85), "onnx-fp32": _engine(0.920, 45.0, 65),
               "onnx-int8": _engine(0.918, 25.0, 80)}
    assert choose_engine(results)["engine"] == "onnx-int8"
    results["onnx-int8"] = _engine(0.916, 25.0, 80)  # 0.4 points lower: not eligible
    assert choose_engine(results)["engine"] == "torch"


def test_every_head_export_in_a_process_keeps_the_character_length_free(tiny_model, tmp_path):
    """A running service exports a head at every deployment; the exporter once fixed the length of
    every export after the first when the head held an LSTM."""
    root, base = tiny_model
    runtime = BaseRuntime(resolve_base(str(base), root / "cache"), root / "cache")
    trained = HeadBundle.load(root / "model")
    cfg = trained.head.cfg
    bundle = HeadBundle.new(trained.scheme, trained.vocab, cfg.encoder_hidden, trained.base, layers=cfg.layers,
                            width=32, char_dim=16, lstm_hidden=8)
    for deployment in range(2):
        path = ensure_head_onnx(runtime, bundle, tmp_path / str(deployment), int8=True)
        lengths = {i.name: i.type.tensor_type.shape.dim[1] for i in onnx.load(str(path)).graph.input}
        assert all(d.dim_param for d in lengths.values()), lengths
