"""A disk cache of frozen-encoder states, so training the head never re-runs the encoder.

Token states of the chosen layers are stored as one fp16 memory map ``[tokens, layers, hidden]``
with per-text offsets; filling it is resumable (the cursor is saved after every chunk).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from ..model.alignment import Encoded
from ..model.batching import length_sorted_batches, pad_ids


@dataclass
class FeatureCache:
    states: np.ndarray  # memmap fp16 [tokens, layers, hidden]
    offsets: np.ndarray  # int64 [texts + 1]

    def token_states(self, index: int) -> np.ndarray:
        return self.states[self.offsets[index] : self.offsets[index + 1]]

    @classmethod
    def open(cls, path: Path) -> "FeatureCache":
        meta = json.loads((path / "meta.json").read_text())
        if meta["done"] < meta["texts"]:
            raise RuntimeError(f"feature cache {path} is incomplete ({meta['done']}/{meta['texts']})")
        states = np.memmap(path / "states.f16", dtype=np.float16, mode="r", shape=tuple(meta["shape"]))
        return cls(states, np.load(path / "offsets.npy"))


def build_feature_cache(states_module: torch.nn.Module, encoded: Sequence[Encoded], pad_id: int,
                        path: Path, signature: dict, max_tokens: int = 4096) -> FeatureCache:
    """Fill (or resume filling) the cache at ``path`` for ``encoded``; ``signature`` names the
    encoder and layers so a cache for another model is never reused."""
    path.mkdir(parents=True, exist_ok=True)
    lengths = [len(e.input_ids) for e in encoded]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    layers, hidden = len(signature["layers"]), signature["hidden"]
    shape = (int(offsets[-1]), layers, hidden)
    meta_path = path / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else None
    if not meta or meta["signature"] != signature or meta["shape"] != list(shape):
        meta = {"signature": signature, "shape": list(shape), "texts": len(encoded), "done": 0}
        np.save(path / "offsets.npy", offsets)
        np.memmap(path / "states.f16", dtype=np.float16, mode="w+", shape=shape).flush()
        meta_path.write_text(json.dumps(meta))
    batches = length_sorted_batches(lengths, max_tokens)
    states = np.memmap(path / "states.f16", dtype=np.float16, mode="r+", shape=shape)
    done_batches = meta.get("done_batches", 0)
    states_module.eval()
    with torch.inference_mode():
        for b in tqdm(range(done_batches, len(batches)), desc="encoder states", initial=done_batches,
                      total=len(batches)):
            batch = batches[b]
            ids, mask = pad_ids([encoded[i] for i in batch], pad_id)
            out = states_module(ids, mask).to(torch.float16).numpy()
            for row, i in enumerate(batch):
                states[offsets[i] : offsets[i + 1]] = out[row, : lengths[i]]
            if b % 20 == 19 or b == len(batches) - 1:
                states.flush()
                meta["done_batches"] = b + 1
                meta["done"] = sum(len(x) for x in batches[: b + 1])
                meta_path.write_text(json.dumps(meta))
    return FeatureCache.open(path)
