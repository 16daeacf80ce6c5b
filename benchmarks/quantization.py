"""INT8 quantization of the default model, part by part: which matrix products cost F1 in INT8.

Each variant quantizes the exported base encoder (ONNX Runtime dynamic quantization: INT8
weights with one scale per output channel, activations quantized per call) with some of its
products left in fp32, and runs it under the default model's fp32 head (the last variant is the
`onnx-int8` engine as served: the fused encoder and the head in INT8). Every variant labels the same msra_test
sentences; the table gives F1 against PyTorch fp32 in the same run, batched time and one-task
latency (a text alone, as an annotator opening a task waits for it). Timings share the machine
with whatever else runs: compare them within one run.

    .venv/bin/python benchmarks/quantization.py      # writes benchmarks/results/quantization.json
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
PER_LAYER = ("query", "key", "value", "attention output", "feed-forward in", "feed-forward out (after GELU)")
# name: (products left in fp32 by part name, by encoder layer (1-based), other quantize_dynamic options)
VARIANTS = {
    "every product and the embeddings in INT8 (the engine until now)": ((), (), {}),
    "the same, reduce_range (7-bit weights)": ((), (), {"reduce_range": True}),
    "the same, unsigned INT8 weights": ((), (), {"weight_type": "QUInt8"}),
    "embeddings in fp32": ((), (), {"op_types": ["MatMul"]}),
    "layers 1-2 in fp32": ((), (1, 2), {}),
    "layers 9-10 in fp32": ((), (9, 10), {}),
    "query/key/value in fp32": (("query", "key", "value"), (), {}),
    "attention output in fp32": (("attention output",), (), {}),
    "feed-forward in in fp32": (("feed-forward in",), (), {}),
    "feed-forward out (after GELU) in fp32 (shipped encoder)": (("feed-forward out (after GELU)",), (), {}),
}


def encoder_products(path: Path) -> list[tuple[str, int, str]]:
    """(node name, layer, part) of each MatMul with a constant weight, in graph order: six per layer."""
    import onnx

    graph = onnx.load(str(path)).graph
    weights = {i.name for i in graph.initializer}
    products = [n.name for n in graph.node if n.op_type == "MatMul" and n.input[1] in weights]
    return [(name, i // 6 + 1, PER_LAYER[i % 6]) for i, name in enumerate(products)]


def check_parts(path: Path, products: list[tuple[str, int, str]]) -> None:
    """The graph-order reading of the parts must agree with the GELU rule: the sixth of each layer
    is the one fed by a GELU."""
    from raner_backend.engine.export import fed_by_gelu

    after_gelu = {name for name, _, part in products if part == PER_LAYER[-1]}
    if after_gelu != set(fed_by_gelu(path)):
        raise SystemExit("the encoder graph's products are not in the expected order; parts would be mislabelled")


def unfused_encoder(runtime, bundle, path: Path) -> Path:
    """The served encoder's graph before fusion, its GELUs alone fused into Gelu nodes (the rule
    ``fed_by_gelu`` reads them): six MatMuls per layer, in graph order."""
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    from raner_backend.engine.export import export_encoder
    from raner_backend.model.network import EncoderStates

    export_encoder(EncoderStates(runtime.base.load_encoder(attention="eager"), bundle.head.cfg.base_layers),
                   runtime.tokenizer, bundle.vocab, path, fuse=False)
    options = FusionOptions("bert")
    for fusion in ("enable_attention", "enable_skip_layer_norm", "enable_embed_layer_norm", "enable_bias_gelu"):
        setattr(options, fusion, False)
    config = runtime.config
    optimizer.optimize_model(str(path), model_type="bert", num_heads=config.num_attention_heads,
                             hidden_size=config.hidden_size, opt_level=0,
                             optimization_options=options).save_model_to_file(str(path))
    return path


def quantized(pre: Path, out: Path, products, parts, layers, options: dict) -> Path:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    keep = [name for name, layer, part in products if part in parts or layer in layers]
    quantize_dynamic(str(pre), str(out), weight_type=getattr(QuantType, options.get("weight_type", "QInt8")),
                     per_channel=True, reduce_range=options.get("reduce_range", False),
                     op_types_to_quantize=options.get("op_types", ["MatMul", "Gather"]), nodes_to_exclude=keep,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    return out


def measure(predictor, texts: list[str], gold: list, latency_texts: list[str]) -> dict:
    from raner_backend.engine.evaluation import one_task_p50_ms
    from raner_backend.model.metrics import entity_scores

    predictor.predict(texts[:32])
    started = time.perf_counter()
    predicted = predictor.predict(texts)
    seconds = time.perf_counter() - started
    spans = [[(e.start, e.end, e.label) for e in r.entities] for r in predicted]
    return {"f1": round(entity_scores(gold, spans)["overall"]["f1"], 4), "batched_s": round(seconds, 2),
            "one_task_p50_ms": one_task_p50_ms(predictor, latency_texts)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sentences", type=int, default=1500, help="first N msra_test sentences")
    parser.add_argument("--latency-sentences", type=int, default=200)
    parser.add_argument("--out", default=str(RESULTS / "quantization.json"))
    args = parser.parse_args()

    from onnxruntime.quantization.shape_inference import quant_pre_process

    from raner_backend.engine.loader import BaseRuntime, build_predictor, ensure_head_onnx
    from raner_backend.engine.predictor import Predictor
    from raner_backend.engine.runtime import OnnxBackend, onnx_session
    from raner_backend.model.base import resolve_base
    from raner_backend.model.bundle import HeadBundle
    from raner_backend.model.data import msra_path, read_tagged
    from raner_backend.service import default_model_folder
    from raner_backend.settings import Settings

    settings = Settings.from_env()
    runtime = BaseRuntime(resolve_base(settings.base_model, settings.cache_dir), settings.cache_dir).load()
    folder = default_model_folder()
    bundle = HeadBundle.load(folder)
    fp32 = runtime.encoder_onnx(bundle.head.cfg.base_layers, bundle.vocab, int8=False)
    head = ensure_head_onnx(runtime, bundle, folder)
    examples = [e for e in read_tagged(msra_path("msra_test.txt")) if e.text][: args.sentences]
    texts, gold = [e.text for e in examples], [e.spans for e in examples]
    latency_texts = texts[: args.latency_sentences]

    def onnx_predictor(encoder: Path) -> Predictor:
        return Predictor("variant", runtime.tokenizer, OnnxBackend("variant", onnx_session(encoder, 0), head),
                         bundle.scheme, bundle.vocab, bundle.crf.params(), hidden=runtime.config.hidden_size,
                         cache_size=0)

    rows = {"PyTorch fp32 (reference)": measure(build_predictor(runtime, folder, "t", "torch", cache_size=0),
                                                texts, gold, latency_texts),
            "ONNX Runtime fp32": measure(onnx_predictor(fp32), texts, gold, latency_texts)}
    with tempfile.TemporaryDirectory() as work:
        pre = Path(work) / "pre.onnx"
        unfused = unfused_encoder(runtime, bundle, Path(work) / "unfused.onnx")
        quant_pre_process(str(unfused), str(pre), skip_symbolic_shape=True)
        products = encoder_products(pre)
        check_parts(pre, products)
        for i, (name, (parts, layers, options)) in enumerate(VARIANTS.items()):
            encoder = quantized(pre, Path(work) / f"v{i}.onnx", products, parts, layers, options)
            rows[name] = measure(onnx_predictor(encoder), texts, gold, latency_texts)
            print(name, rows[name], flush=True)
    rows["shipped onnx-int8 engine: that rule on the fused encoder, the head's products in INT8"] = measure(
        build_predictor(runtime, folder, "i", "onnx-int8", cache_size=0), texts, gold, latency_texts)
    reference = rows["PyTorch fp32 (reference)"]
    for row in rows.values():
        row["f1_points_vs_torch"] = round(100 * (row["f1"] - reference["f1"]), 2)
        row["batched_speed_vs_torch"] = round(reference["batched_s"] / row["batched_s"], 2)
        row["one_task_speed_vs_torch"] = round(reference["one_task_p50_ms"] / row["one_task_p50_ms"], 2)
    report = {"model": str(folder.name), "sentences": len(texts), "latency_sentences": len(latency_texts),
              "command": "benchmarks/quantization.py " + " ".join(f"--{k.replace('_', '-')} {v}"
                                                                   for k, v in vars(args).items() if k != "out"),
              "variants": rows}
    Path(args.out).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    for name, row in rows.items():
        print(f"{name:75s} F1 {row['f1']:.4f} ({row['f1_points_vs_torch']:+.2f})  batched x{row['batched_speed_vs_torch']}"
              f"  one task {row['one_task_p50_ms']} ms (x{row['one_task_speed_vs_torch']})")


if __name__ == "__main__":
    main()
