"""Tokenization with character alignment.

Labels live on the characters (code points) of the original string. Each character is tied to
the token whose offsets cover it, with its position inside that token, so the encoder's native
pieces (``在北京``) keep their state while boundaries inside a piece stay learnable. Offsets come
from the fast tokenizer, which tracks normalisation (NFKC, collapsed spaces) back to the input.
"""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Sequence

import numpy as np

# Position of a character inside its token.
NO_TOKEN, SINGLE, FIRST, MIDDLE, LAST = range(5)
PIECE_POSITIONS = 5

# Character classes, a coarse shape feature that generalises to characters never seen in training.
CHAR_CLASSES = ("pad", "han", "latin", "digit", "punct", "space", "symbol", "other")


def char_class(ch: str) -> int:
    cp = ord(ch)
    if 0x3400 <= cp <= 0x9FFF or 0xF900 <= cp <= 0xFAFF or 0x20000 <= cp <= 0x3134F:
        return 1
    cat = unicodedata.category(ch)
    if cat.startswith("L"):
        return 2
    if cat == "Nd":
        return 3
    if cat.startswith("P"):
        return 4
    if cat.startswith("Z") or ch in "\t\n\r":
        return 5
    if cat.startswith("S"):
        return 6
    return 7


@dataclass
class Encoded:
    """One text's tokens and, per character, its token index and position in that token."""

    input_ids: list[int]
    char_token: np.ndarray  # int64 [chars]; index into input_ids, 0 (the <s> token) when uncovered
    char_piece: np.ndarray  # int64 [chars]; NO_TOKEN/SINGLE/FIRST/MIDDLE/LAST


def align(offsets: Sequence[tuple[int, int]], n_chars: int) -> tuple[np.ndarray, np.ndarray]:
    """Tie each character to the last token whose offsets cover it."""
    char_token = np.zeros(n_chars, dtype=np.int64)
    for index, (start, end) in enumerate(offsets):
        if end > start:
            char_token[start:end] = index
    char_piece = np.full(n_chars, NO_TOKEN, dtype=np.int64)
    for i in range(n_chars):
        token = char_token[i]
        if token == 0:
            continue
        first = i == 0 or char_token[i - 1] != token
        last = i == n_chars - 1 or char_token[i + 1] != token
        char_piece[i] = SINGLE if first and last else FIRST if first else LAST if last else MIDDLE
    return char_token, char_piece


def encode_texts(tokenizer, texts: Sequence[str]) -> list[Encoded]:
    batch = tokenizer(list(texts), return_offsets_mapping=True, add_special_tokens=True)
    out = []
    for text, ids, offsets in zip(texts, batch["input_ids"], batch["offset_mapping"]):
        char_token, char_piece = align(offsets, len(text))
        out.append(Encoded(list(ids), char_token, char_piece))
    return out
