"""Silver word segmentation for multi-task training: jieba's words of a text as one tag per
character (B, M, E, S), which an auxiliary output of the head learns during training and serving
never runs. Word boundaries are what entity boundaries are made of; MSRA labels only entities.

jieba is an optional dependency (``pip install -e '.[train]'``), imported only when a training
asks for segmentation."""
from __future__ import annotations

from typing import Iterable

import numpy as np

SEGMENT_TAGS = ("B", "M", "E", "S")
NO_SEGMENT = -100  # a character no segmentation speaks for (padding): the loss skips it


def word_tags(words: Iterable[str]) -> np.ndarray:
    """One index into ``SEGMENT_TAGS`` per character of the words, in order."""
    tags: list[int] = []
    for word in words:
        tags += [3] if len(word) == 1 else [0] + [1] * (len(word) - 2) + [2]
    return np.asarray(tags, dtype=np.int64)


def segment_tags(texts: Iterable[str]) -> list[np.ndarray]:
    """jieba's segmentation of each text (its default dictionary, HMM for unknown words) as tags."""
    try:
        import jieba
    except ImportError as exc:
        raise RuntimeError("segmentation needs jieba: pip install -e '.[train]'") from exc
    jieba.setLogLevel(30)
    return [word_tags(jieba.cut(text, HMM=True)) for text in texts]
