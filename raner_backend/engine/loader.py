"""Building a ready ``Predictor`` for a model folder, and the shared base-encoder artefacts.

The base encoder (tokenizer, torch weights, ONNX fp32 and INT8 exports of its chosen layers) is
loaded or exported once per process and per base model; every model version reuses it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..model.base import BaseEncoder
from ..model.bundle import HeadBundle
from ..model.network import EncoderStates
from .export import export_encoder, export_head, quantize_int8
from .predictor import MAX_TOKENS, Predictor
from .runtime import OnnxBackend, TorchBackend, input_names, onnx_session, run_encoder

log = logging.getLogger(__name__)

ENGINES = ("onnx-int8", "onnx-fp32", "torch")
HEAD_ONNX = "head.onnx"
# Part of the export's cache key: 2 = the encoder stops at the highest layer read (was all layers);
# 3 = traced with eager attention and fused (export.fuse_transformer).
ENCODER_EXPORT = 3
# The INT8 files' names change with how they are quantized, so an older quantization in a cache or a
# version folder is not reused: v2 keeps the products fed by a GELU in fp32 (export.FP32_AFTER); v3 has
# 7-bit weights (export.quantize_int8).
ENCODER_INT8 = "encoder.int8.v3.onnx"
HEAD_INT8 = "head.int8.v3.onnx"


class OnnxStates(torch.nn.Module):
    """The encoder states an ONNX Runtime session gives, in the torch interface of ``EncoderStates``."""

    def __init__(self, session):
        super().__init__()
        self.session = session
        self.inputs = input_names(session)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(run_encoder(self.session, self.inputs, input_ids.numpy(), attention_mask.numpy()))


@dataclass
class BaseRuntime:
    """The base encoder and the folder of its ONNX exports. ``load`` reads the tokenizer and the
    configuration; the torch weights load on first use of ``encoder``, since an ONNX engine never
    runs them (exports, the torch engine and training on its states do)."""

    base: BaseEncoder
    cache_dir: Path
    tokenizer: object = None
    config: object = None
    _torch_encoder: object = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _weights_lock: threading.Lock = field(default_factory=threading.Lock)
    _sessions: dict = field(default_factory=dict)

    def load(self) -> "BaseRuntime":
        if self.tokenizer is None:
            self.tokenizer, self.config = self.base.load_tokenizer(), self.base.load_config()
        return self

    @property
    def encoder(self):
        """The torch encoder, loaded on first use."""
        with self._weights_lock:
            if self._torch_encoder is None:
                self._torch_encoder = self.base.load_encoder()
            return self._torch_encoder

    def onnx_dir(self, layers: tuple[int, ...]) -> Path:
        key = hashlib.sha256(json.dumps([self.base.name, self.base.checksum(), list(layers),
                                         ENCODER_EXPORT]).encode())
        return self.cache_dir / "onnx" / key.hexdigest()[:16]

    def encoder_onnx(self, layers: tuple[int, ...], vocab, int8: bool) -> Path:
        """The exported encoder for these layers (exported and quantized on first use)."""
        with self._lock:
            folder = self.onnx_dir(layers)
            fp32 = folder / "encoder.fp32.onnx"
            if not fp32.exists():
                log.info("exporting the base encoder to ONNX (once per base model)")
                # A copy with eager attention, for the export only: the shared encoder keeps the faster SDPA.
                eager = self.base.load_encoder(attention="eager")
                export_encoder(EncoderStates(eager, layers), self.load().tokenizer, vocab, fp32)
            if not int8:
                return fp32
            quantized = folder / ENCODER_INT8
            if not quantized.exists():
                log.info("quantizing the base encoder to INT8 (once per base model)")
                quantize_int8(fp32, quantized)
                drop_older_quantizations(quantized)
            return quantized

    def states_module(self, layers: tuple[int, ...], vocab, engine: str, threads: int = 0) -> torch.nn.Module:
        """The encoder states of ``layers`` as ``engine`` computes them, in the torch interface training
        and its evaluation read."""
        if engine not in ENGINES:
            raise ValueError(f"engine {engine!r} is not one of {', '.join(ENGINES)}")
        if engine == "torch":
            return EncoderStates(self.load().encoder, tuple(layers)).eval()
        return OnnxStates(self.encoder_session(tuple(layers), vocab, int8=engine == "onnx-int8", threads=threads))

    def encoder_session(self, layers: tuple[int, ...], vocab, int8: bool, threads: int):
        """One ONNX Runtime session of the encoder per export, shared by every model version."""
        path = self.encoder_onnx(layers, vocab, int8)
        with self._lock:
            key = (str(path), threads)
            if key not in self._sessions:
                self._sessions[key] = onnx_session(path, threads)
            return self._sessions[key]

    def close_sessions(self) -> None:
        """Forget the shared encoder sessions (predictors built keep theirs): after engines were timed
        side by side, the ones not chosen would otherwise hold their memory (212 MB for the 0.2
        default's fp32 embeddings) for the process's life."""
        with self._lock:
            self._sessions.clear()


def ensure_head_onnx(runtime: BaseRuntime, bundle: HeadBundle, folder: Path, again: bool = False,
                     int8: bool = False) -> Path:
    """The head's ONNX export in ``folder``, exported when missing (or ``again``); with ``int8``, its
    INT8 quantization beside it (``HEAD_INT8``, quantized like the encoder), which is returned."""
    path = folder / HEAD_ONNX
    if again or not path.exists():
        runtime.load()
        export_head(bundle.head, EncoderStates(runtime.encoder, bundle.head.cfg.base_layers), runtime.tokenizer,
                    bundle.vocab, path)
    if not int8:
        return path
    quantized = folder / HEAD_INT8
    if again or not quantized.exists():
        # The character embedding is small: its lookups stay fp32.
        quantize_int8(path, quantized, op_types=("MatMul", "Attention"))
        drop_older_quantizations(quantized)
    return quantized


def drop_older_quantizations(current: Path) -> None:
    """Remove the INT8 files an earlier way of quantizing left beside ``current`` (``head.int8.onnx``
    beside ``head.int8.v3.onnx``): nothing reads them any more, and each is the size of the model."""
    stem = current.name.split(".int8")[0]
    for older in current.parent.glob(f"{stem}.int8*.onnx"):
        if older != current:
            older.unlink(missing_ok=True)


def _onnx_backend(runtime: BaseRuntime, bundle: HeadBundle, folder: Path, engine: str, threads: int) -> OnnxBackend:
    layers, int8 = bundle.head.cfg.base_layers, engine == "onnx-int8"
    encoder = runtime.encoder_session(layers, bundle.vocab, int8=int8, threads=threads)
    backend = OnnxBackend(engine, encoder, ensure_head_onnx(runtime, bundle, folder, int8=int8), threads)
    if backend.layers_read != len(layers):
        # Exported when the head was handed every chosen layer, the one it re-computes included.
        log.info("re-exporting %s for the encoder's layers %s", folder / HEAD_ONNX, layers)
        backend = OnnxBackend(engine, encoder, ensure_head_onnx(runtime, bundle, folder, again=True, int8=int8),
                              threads)
    return backend


def build_predictor(runtime: BaseRuntime, folder: Path, version: str, engine: str, cache_size: int = 4096,
                    threads: int = 0, bundle: HeadBundle | None = None) -> Predictor:
    if engine not in ENGINES:
        raise ValueError(f"engine {engine!r} is not one of {', '.join(ENGINES)}")
    bundle = bundle or HeadBundle.load(folder)
    runtime.load()
    if engine == "torch":
        backend = TorchBackend(EncoderStates(runtime.encoder, bundle.head.cfg.base_layers), bundle.head, threads)
    else:
        backend = _onnx_backend(runtime, bundle, folder, engine, threads)
    config = runtime.config
    return Predictor(version, runtime.tokenizer, backend, bundle.scheme, bundle.vocab, bundle.crf.params(),
                     hidden=config.hidden_size, cache_size=cache_size,
                     max_tokens=min(MAX_TOKENS, getattr(config, "max_position_embeddings", MAX_TOKENS)),
                     young_types=bundle.young_types())
