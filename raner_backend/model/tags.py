"""The tag scheme: BIO over entity types, and which tag may follow which."""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np

OUTSIDE = "O"


class Span(NamedTuple):
    """An entity: ``text[start:end]`` (code points, end exclusive) of type ``label``."""

    start: int
    end: int
    label: str


@dataclass(frozen=True)
class TagScheme:
    """``O`` then ``B-X``, ``I-X`` for each entity type ``X``, in a fixed order."""

    entity_types: tuple[str, ...]

    @property
    def tags(self) -> list[str]:
        return [OUTSIDE] + [f"{p}-{t}" for t in self.entity_types for p in ("B", "I")]

    @property
    def num_tags(self) -> int:
        return 1 + 2 * len(self.entity_types)

    def begin(self, entity_type: str) -> int:
        return 1 + 2 * self.entity_types.index(entity_type)

    def tags_of(self, entity_types: Sequence[str]) -> tuple[int, ...]:
        """The B and I tags of ``entity_types``."""
        return tuple(self.begin(kind) + role for kind in entity_types for role in (0, 1))

    @staticmethod
    def type_index(tag: int) -> int | None:
        """Which entity type (by position) a tag belongs to; None for ``O``."""
        return None if tag == 0 else (tag - 1) // 2

    @staticmethod
    def inside_of(tag: int) -> int:
        """The ``I-`` tag of the entity type of ``tag`` (not ``O``)."""
        return 2 + 2 * TagScheme.type_index(tag)

    def allowed_transitions(self) -> np.ndarray:
        """``allowed[i, j]``: tag ``j`` may follow tag ``i`` (``I-X`` only after ``B-X``/``I-X``)."""
        n = self.num_tags
        allowed = np.ones((n, n), dtype=bool)
        for k in range(len(self.entity_types)):
            inside = 2 + 2 * k
            allowed[:, inside] = False
            allowed[inside - 1, inside] = True
            allowed[inside, inside] = True
        return allowed

    def allowed_starts(self) -> np.ndarray:
        """An ``I-`` tag cannot open a sequence."""
        starts = np.ones(self.num_tags, dtype=bool)
        starts[2::2] = False
        return starts

    def encode(self, length: int, spans: Sequence[Span]) -> np.ndarray:
        """Character tag ids for ``spans`` (assumed non-overlapping and inside ``length``)."""
        tags = np.zeros(length, dtype=np.int64)
        for start, end, label in spans:
            begin = self.begin(label)
            tags[start] = begin
            tags[start + 1 : end] = begin + 1
        return tags

    def decode(self, tag_ids: Sequence[int]) -> list[Span]:
        """Spans from tag ids; a stray ``I-X`` (impossible under the CRF) opens a new span."""
        spans: list[Span] = []
        start, current = None, None
        for i, tag in enumerate(list(tag_ids) + [0]):
            tag = int(tag)
            kind = self.entity_types[self.type_index(tag)] if tag else None
            continues = tag and tag % 2 == 0 and kind == current
            if start is not None and not continues:
                spans.append(Span(start, i, current))
                start, current = None, None
            if tag and not continues:
                start, current = i, kind
        return spans


DEFAULT_SCHEME = TagScheme(("PER", "LOC", "ORG"))
