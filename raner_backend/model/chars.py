"""Character vocabulary for the head's character embeddings."""
from __future__ import annotations

import unicodedata
from collections import Counter
from typing import Iterable

import numpy as np

from .alignment import char_class

PAD, UNK = 0, 1


def fold(ch: str) -> str:
    """Full-width and compatibility forms share an embedding with their plain form."""
    folded = unicodedata.normalize("NFKC", ch)
    return folded.lower() if len(folded) == 1 else ch


class CharVocab:
    def __init__(self, chars: str):
        self.chars = chars
        self.index = {c: i + 2 for i, c in enumerate(chars)}

    def __len__(self) -> int:
        return len(self.chars) + 2

    @classmethod
    def build(cls, texts: Iterable[str], min_count: int = 2) -> "CharVocab":
        counts = Counter(fold(c) for text in texts for c in text)
        kept = sorted(c for c, n in counts.items() if n >= min_count)
        return cls("".join(kept))

    def ids(self, text: str) -> np.ndarray:
        return np.fromiter((self.index.get(fold(c), UNK) for c in text), dtype=np.int64, count=len(text))


def char_classes(text: str) -> np.ndarray:
    return np.fromiter((char_class(c) for c in text), dtype=np.int64, count=len(text))
