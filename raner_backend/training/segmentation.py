"""Silver word segmentation for multi-task training: jieba's words of a text as one tag per
character (B, M, E, S), which an auxiliary output of the head learns during training and serving
never runs. Word boundaries are what entity boundaries are made of; MSRA labels only entities.

jieba is an optional dependency (``pip install -e '.[train]'``), imported only when a training
asks for segmentation."""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

SEGMENT_TAGS = ("B", "M", "E", "S")
BEGIN, MIDDLE, END, SINGLE = range(len(SEGMENT_TAGS))
NO_SEGMENT = -100  # a character no segmentation speaks for (padding): the loss skips it


def word_tags(words: Iterable[str]) -> np.ndarray:
    """One index into ``SEGMENT_TAGS`` per character of the (non-empty) words, in order."""
    tags: list[int] = []
    for word in words:
        tags += [SINGLE] if len(word) == 1 else [BEGIN] + [MIDDLE] * (len(word) - 2) + [END]
    return np.asarray(tags, dtype=np.int64)


def segment_tags(texts: Sequence[str]) -> list[np.ndarray]:
    """jieba's segmentation of each text (its default dictionary, HMM for unknown words) as tags."""
    try:
        import jieba
    except ImportError as exc:
        raise RuntimeError("segmentation needs jieba: pip install -e '.[train]'") from exc
    jieba.setLogLevel(30)
    tags = [word_tags(jieba.cut(text, HMM=True)) for text in texts]
    if any(len(t) != len(text) for t, text in zip(tags, texts)):
        raise RuntimeError("jieba's words do not spell the text: segmentation tags would be misaligned")
    return tags
