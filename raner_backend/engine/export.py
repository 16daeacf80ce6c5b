"""ONNX export of the emission network as two graphs, and INT8 dynamic quantization.

``encoder.onnx`` (the frozen base encoder's chosen layers) depends only on the base model, so it
is exported and quantized once into the cache and shared by every model version; each version
carries only ``head.onnx`` (a few MB), which keeps deployments quick and small. The CRF runs
beside them in numpy (``CrfParams``).
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch

from ..console import details, step
from ..model.chars import char_classes
from ..model.alignment import encode_texts
from ..model.batching import pad_ids
from ..model.network import EncoderLayer, EncoderStates, Head

log = logging.getLogger(__name__)

ENCODER_INPUTS = ["input_ids", "attention_mask"]
CHAR_INPUTS = ["char_token", "char_piece", "char_ids", "char_class"]
HEAD_INPUTS = ["token_states", "token_mask", *CHAR_INPUTS]
SAMPLE_TEXTS = ["国务院总理在北京会见了法国总统。", "华为Mate60发布"]


def _atomic_write(target: Path, write) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _trace(module: torch.nn.Module, args: tuple, path: Path, inputs: list[str], output: str, axes: dict) -> None:
    """TorchScript export: its graph of eager attention is the one ONNX Runtime's transformer
    optimizer fuses (the dynamo exporter's is not)."""
    torch.onnx.export(module.eval(), args, str(path), input_names=inputs, output_names=[output],
                      dynamic_axes=axes, dynamo=False, opset_version=17)


def sample_inputs(tokenizer, vocab, texts=SAMPLE_TEXTS):
    encoded = encode_texts(tokenizer, texts)
    ids, mask = pad_ids(encoded, tokenizer.pad_token_id)
    n_chars = max(len(t) for t in texts)
    fields = {k: torch.zeros((len(texts), n_chars), dtype=torch.long) for k in CHAR_INPUTS}
    for row, (text, enc) in enumerate(zip(texts, encoded)):
        for key, value in (("char_token", enc.char_token), ("char_piece", enc.char_piece),
                           ("char_ids", vocab.ids(text)), ("char_class", char_classes(text))):
            fields[key][row, : len(text)] = torch.from_numpy(value)
    return ids, mask, fields


def export_encoder(states: EncoderStates, tokenizer, vocab, path: Path, fuse: bool = True) -> Path:
    """The base encoder's chosen layers, traced and (with ``fuse``) fused by ``fuse_transformer``.
    The states' encoder must use eager attention: neither the dynamo exporter's graph nor SDPA's is
    one that ONNX Runtime's transformer optimizer recognises."""
    ids, mask, _ = sample_inputs(tokenizer, vocab)
    axes = {name: {0: "batch", 1: "tokens"} for name in (*ENCODER_INPUTS, "token_states")}

    def write(tmp: Path) -> None:
        with details(f"ONNX export of the base encoder to {path}"), torch.no_grad():
            _trace(states, (ids, mask), tmp, ENCODER_INPUTS, "token_states", axes)
            if fuse:
                config = states.encoder.config
                fuse_transformer(tmp, config.num_attention_heads, config.hidden_size)

    with step("export ONNX: base encoder"):
        return _atomic_write(path, write)


def fuse_transformer(path: Path, num_heads: int, hidden_size: int) -> None:
    """ONNX Runtime's BERT fusions in place: one Attention node per layer (whose query, key and
    value products INT8 quantization then covers), each residual's layer norm, bias + GELU, and the
    embeddings with their layer norm. Served in INT8, the model scores 0.9192 on msra_test instead
    of 0.9176 unfused (`raner-backend evaluate`). The fused embeddings keep their table in fp32:
    left a plain lookup and quantized, the file is 84 MB instead of 248 but F1 falls to 0.9170.
    Python-level fusions only (``opt_level=0``): the file holds nothing specific to this CPU."""
    from onnxruntime.transformers import optimizer

    try:
        model = optimizer.optimize_model(str(path), model_type="bert", num_heads=num_heads,
                                         hidden_size=hidden_size, opt_level=0)
    except Exception as exc:  # a speed-up only: a base model the optimizer cannot read is served unfused
        log.warning("transformer fusion skipped: %s", exc)
        return
    log.info("fused %s", {op: n for op, n in model.get_fused_operator_statistics().items() if n})
    model.save_model_to_file(str(path))


def export_head(head: Head, states: EncoderStates, tokenizer, vocab, path: Path) -> Path:
    """The head traced like the encoder (TorchScript, the graph ONNX Runtime's optimizer reads) and,
    when it carries its own top encoder layers, fused: the unfused INT8 head of a six-layer student
    took 1.26x the fused one's time, the default's 1.08x (benchmarks/results/head_graphs_*.json)."""
    ids, mask, f = sample_inputs(tokenizer, vocab)
    with torch.inference_mode():
        token_states = states(ids, mask)
    axes = {"token_states": {0: "batch", 1: "tokens"}, "token_mask": {0: "batch", 1: "tokens"},
            "emissions": {0: "batch", 1: "chars"}}
    axes.update({k: {0: "batch", 1: "chars"} for k in CHAR_INPUTS})
    args = (token_states.clone(), mask, *(f[k] for k in CHAR_INPUTS))
    transformer_layers = [m for m in head.modules() if isinstance(m, EncoderLayer)]

    def write(tmp: Path) -> None:
        # The exporter's warnings and the optimizer's logging go to the details log.
        with details(f"ONNX export of {type(head).__name__} to {path}"), torch.no_grad():
            _trace(head, args, tmp, HEAD_INPUTS, "emissions", axes)
            if transformer_layers:
                fuse_transformer(tmp, transformer_layers[0].heads, token_states.size(-1))
        _refuse_fixed_lengths(tmp)

    with step("export ONNX: model head"):
        return _atomic_write(path, write)


def _refuse_fixed_lengths(path: Path) -> None:
    """A head whose exporter fixed a length would refuse every other text at serving time."""
    import onnx

    fixed = [i.name for i in onnx.load(str(path)).graph.input if i.type.tensor_type.shape.dim[1].dim_value]
    if fixed:
        raise RuntimeError(f"the ONNX exporter fixed the length of {', '.join(fixed)}; the head would only "
                           "read texts of the export sample's length")


# Matrix products whose input comes out of a GELU stay in fp32 (part by part on 1,500 msra_test
# sentences: every MatMul in INT8 lost 0.49 F1 points, all but these 0.00; benchmarks/quantization.py).
# GELU's output is lopsided (a long positive tail over values near zero), which one dynamic
# scale per tensor resolves badly.
FP32_AFTER = ("Gelu", "FastGelu", "BiasGelu")


def fed_by_gelu(path: Path) -> list[str]:
    """Names of the MatMul nodes whose first input is a GELU's output (a feed-forward block's second
    product)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    producer = {output: node.op_type for node in graph.node for output in node.output}
    return [node.name for node in graph.node
            if node.op_type == "MatMul" and producer.get(node.input[0]) in FP32_AFTER]


def quantize_int8(source: Path, target: Path, op_types: tuple[str, ...] = ("MatMul", "Gather", "Attention")) -> Path:
    """INT8 weights (7-bit, one scale per output channel) for the graph's matrix products, embedding
    lookups and fused attention's input products (``op_types``), activations quantized per call,
    except products fed by a GELU (``FP32_AFTER``)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    def write(tmp: Path) -> None:
        with tempfile.TemporaryDirectory() as work:
            # Shape inference and pre-processing make quantize_dynamic's graph cleaner.
            pre = Path(work) / "pre.onnx"
            try:
                from onnxruntime.quantization.shape_inference import quant_pre_process

                quant_pre_process(str(source), str(pre), skip_symbolic_shape=True)
            except Exception as exc:  # pre-processing is an optimisation; quantize the raw graph
                log.warning("quantization pre-processing skipped: %s", exc)
                shutil.copy(source, pre)
            # 7-bit weights (reduce_range): on AVX2 without VNNI, ONNX Runtime multiplies u8 activations
            # by s8 weights in pairs summed into int16, which can saturate with full-range weights (its
            # documentation's advice). On such a machine (AMD EPYC, ORT 1.32) the six-layer default
            # scored 0.8530 on the modern set with 8-bit weights, 0.8626 with 7-bit, 0.8637 in fp32
            # (README, "Engine benchmark"); an earlier Intel machine had shown no such loss.
            quantize_dynamic(str(pre), str(tmp), weight_type=QuantType.QInt8, per_channel=True, reduce_range=True,
                             op_types_to_quantize=list(op_types), nodes_to_exclude=fed_by_gelu(pre),
                             # Shape inference gives no types past the fused (com.microsoft) nodes.
                             extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})

    with step(f"quantize INT8: {source.stem}"), details(f"INT8 quantization of {source}"):
        return _atomic_write(target, write)
