"""Emission back-ends with one interface: ONNX Runtime (fp32 or INT8 encoder) and PyTorch eager.

Each takes padded numpy batches and returns (encoder states, emissions); the predictor around
them does batching, windows, caching and CRF decoding.
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from ..model.network import EncoderStates, Head


class EmissionBackend(Protocol):
    name: str
    batch_tokens: int  # padded tokens per batch that run fastest

    def states(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray: ...

    def emissions(self, token_states: np.ndarray, token_mask: np.ndarray, char_token: np.ndarray,
                  char_piece: np.ndarray, char_ids: np.ndarray, char_class: np.ndarray) -> np.ndarray: ...


def onnx_session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # The arena keeps the largest batch's buffers for the session's life, per session (the encoder
    # and every loaded head): without it the INT8 engine held 656-738 MB after 1,000 sentences
    # instead of 1,273-1,276, at the same speed within noise (two runs each).
    options.enable_cpu_mem_arena = False
    # Idle threads sleep instead of spinning: the encoder's and the head's sessions run one after the
    # other, and each one's spinning threads took the cores from the next (one task 18-22 ms instead
    # of 24-31 on 2 cores in paired one-off timings, batches as fast; README, "Engine benchmark").
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # The exporter records a fixed character length in the head's output-shape metadata when it
    # holds an LSTM; ORT would warn on every call although the outputs are right (tests compare).
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def input_names(session) -> set[str]:
    return {i.name for i in session.get_inputs()}


def run_encoder(session, inputs: set[str], input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    # An encoder export that stops at its embeddings (a head re-computes every layer) never reads
    # attention_mask: its graph lacks it.
    feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
    return session.run(None, {k: v for k, v in feeds.items() if k in inputs})[0]


class OnnxBackend:
    """``encoder`` is the base encoder's session, shared by every loaded version."""

    # Small batches ran faster in ONNX Runtime: 1,000 msra_test sentences in INT8 at 83-106
    # sentences/s with 512 padded tokens per batch against 69-87 with 4,096, faster in each of five
    # paired rounds (one-off script); PyTorch was equal within noise at 512, 1,024 and 4,096.
    batch_tokens = 512

    def __init__(self, name: str, encoder, head_path: Path, threads: int = 0):
        self.name = name
        self.encoder = encoder
        self.head_path = head_path
        self.head = onnx_session(head_path, threads)
        # A head without top encoder layers never reads token_mask: its graph lacks it.
        self.head_inputs = input_names(self.head)
        self.encoder_inputs = input_names(encoder)

    @property
    def layers_read(self) -> int:
        """How many encoder layers the exported head takes as input."""
        return next(i.shape[2] for i in self.head.get_inputs() if i.name == "token_states")

    def states(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return run_encoder(self.encoder, self.encoder_inputs, input_ids, attention_mask)

    def emissions(self, token_states, token_mask, char_token, char_piece, char_ids, char_class) -> np.ndarray:
        feeds = {"token_states": token_states.astype(np.float32, copy=False), "token_mask": token_mask,
                 "char_token": char_token, "char_piece": char_piece, "char_ids": char_ids, "char_class": char_class}
        return self.head.run(None, {k: v for k, v in feeds.items() if k in self.head_inputs})[0]


class TorchBackend:
    name = "torch"
    batch_tokens = 4096

    def __init__(self, states: EncoderStates, head: Head, threads: int = 0):
        self.states_module = states.eval()
        self.head = head.eval()
        if threads:
            torch.set_num_threads(threads)

    def states(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.states_module(torch.from_numpy(input_ids), torch.from_numpy(attention_mask)).numpy()

    def emissions(self, token_states, token_mask, char_token, char_piece, char_ids, char_class) -> np.ndarray:
        with torch.inference_mode():
            args = [torch.from_numpy(np.ascontiguousarray(a)) for a in
                    (token_states, token_mask, char_token, char_piece, char_ids, char_class)]
            return self.head(*args).numpy()
