"""Texts in, entities out: preprocess (windows, tokens, character alignment) → forward (length-sorted
batches through an emission back-end) → postprocess (stitch windows, CRF Viterbi and marginals,
spans with scores), with an LRU cache of finished results.

A text longer than the encoder's window is cut into character windows: at a sentence end where
one falls in the window's second half (no entity crosses one, and the model learned from whole
sentences), else with an overlap; each character takes its emissions from the window where it sits
furthest from an edge, and one CRF pass runs over the whole stitched text, so an entity across a
window edge is neither cut nor doubled, and offsets are those of the original string.
"""
from __future__ import annotations

import bisect
import re
import threading
import time
import unicodedata
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..model.alignment import NO_TOKEN, encode_texts
from ..model.chars import CharVocab, char_classes
from ..model.crf import CrfParams
from ..model.tags import TagScheme
from ..model.batching import length_sorted_batches
from .runtime import EmissionBackend

MAX_TOKENS = 512
_SURROGATES = re.compile("[\ud800-\udfff]")
# A sentence ends after these, with any closing quotes or brackets that follow.
_SENTENCE_END = re.compile("[。！？!?；;…\n]+[」』”’\"')）】》]*")


def model_text(text: str) -> str:
    """What the tokenizer may read: lone surrogates (invalid Unicode that JSON can still carry)
    become U+FFFD, one code point for one, so every offset stays that of the original text."""
    return _SURROGATES.sub("\ufffd", text)


def _in_word(ch: str) -> bool:
    """Part of a word written in an alphabet (Latin, Cyrillic, digits, ``_`` of handles, and the
    combining accents written after a letter: ``Beyonce\u0301``), not a Han character."""
    if ch == "_" or unicodedata.category(ch).startswith("M"):
        return True
    return ch.isalnum() and not ("\u3400" <= ch <= "\u9fff" or "\U00020000" <= ch <= "\U0003ffff")


def snap_to_words(text: str, start: int, end: int) -> tuple[int, int] | None:
    """An entity never starts or ends with white space, nor inside a word written in an alphabet
    (``Musk`` is not cut to ``Mus``): trims the one and widens to the whole word for the other.
    None when nothing but white space is left."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    if start == end:
        return None
    while start > 0 and _in_word(text[start - 1]) and _in_word(text[start]):
        start -= 1
    while end < len(text) and _in_word(text[end - 1]) and _in_word(text[end]):
        end += 1
    return start, end


class DeadlinePassed(RuntimeError):
    """The caller's deadline passed between two batches; what was computed is dropped."""


@dataclass(frozen=True)
class Entity:
    start: int
    end: int
    label: str
    text: str
    score: float

    def to_dict(self) -> dict:
        return {"start": self.start, "end": self.end, "label": self.label, "text": self.text,
                "score": round(self.score, 4)}


@dataclass
class TextResult:
    """What the model says of one text: entities and what uncertainty needs."""

    length: int
    entities: list[Entity]
    char_entropy: np.ndarray  # per character, normalised to [0, 1] by log(number of tags)
    best_path_prob: float  # P(best path | text) under the CRF
    embedding: np.ndarray  # mean of character states (for diversity)
    tags: np.ndarray = field(repr=False, default=None)
    young_mass: float = 0.0  # the most any character's marginals give to the tags of young types


@dataclass(frozen=True)
class Decoded:
    path: np.ndarray
    marginals: np.ndarray
    entropy: np.ndarray  # per character, normalised to [0, 1] by log(number of tags)
    best_path_prob: float


def _decoded(path: np.ndarray, marginals: np.ndarray, path_score: float, log_z: float) -> Decoded:
    p = np.clip(marginals, 1e-12, 1.0)
    entropy = (-(p * np.log(p)).sum(axis=1) / np.log(marginals.shape[1])).astype(np.float32)
    return Decoded(path, marginals, entropy, float(np.exp(min(0.0, path_score - log_z))))


def decode_emissions(crf: CrfParams, emissions: np.ndarray) -> Decoded:
    """CRF Viterbi path, forward-backward marginals and what uncertainty needs, for one text."""
    path, path_score = crf.viterbi(emissions)
    marginals, log_z = crf.forward_backward(emissions)
    return _decoded(path, marginals, path_score, log_z)


# Texts of similar length are decoded together, each step of the CRF's loops taken for all of them
# at once: in Python, one text at a time cost about as much as the network for short sentences.
DECODE_ROWS = 128
DECODE_ALONE = 512  # longer texts are decoded one by one: padding others to them would cost more


def decode_many(crf: CrfParams, emissions: Sequence[np.ndarray]) -> list[Decoded]:
    """``decode_emissions`` of each text, short texts in length-sorted batches (same paths and
    marginals within floating-point rounding)."""
    out: list[Decoded | None] = [None] * len(emissions)
    short = []
    for i, e in enumerate(emissions):
        if len(e) > DECODE_ALONE or len(e) == 0:
            out[i] = decode_emissions(crf, e)
        else:
            short.append(i)
    short.sort(key=lambda i: len(emissions[i]))
    for at in range(0, len(short), DECODE_ROWS):
        group = short[at : at + DECODE_ROWS]
        lengths = np.array([len(emissions[i]) for i in group])
        padded = np.zeros((len(group), lengths.max(), emissions[group[0]].shape[1]), dtype=np.float32)
        for row, i in enumerate(group):
            padded[row, : lengths[row]] = emissions[i]
        paths, scores = crf.viterbi_batch(padded, lengths)
        marginals, log_z = crf.forward_backward_batch(padded, lengths)
        for row, (i, n) in enumerate(zip(group, lengths)):
            out[i] = _decoded(paths[row, :n], marginals[row, :n], float(scores[row]), float(log_z[row]))
    return out


def tag_mass(marginals: np.ndarray, tags: np.ndarray) -> float:
    """The most any character's marginals give to ``tags`` together (0 without tags)."""
    return float(marginals[:, tags].sum(axis=1).max()) if len(tags) else 0.0


@dataclass
class _Window:
    text_index: int
    start: int
    end: int
    input_ids: list[int]
    char_token: np.ndarray
    char_piece: np.ndarray
    emissions: np.ndarray | None = None
    embedding_sum: np.ndarray | None = None
    embedding_count: int = 0


CACHE_CHARS = 2_000_000  # characters of text a results cache holds (~16 bytes a character with its result)


class LruCache:
    """Least recently used results, at most ``size`` texts and ``max_chars`` characters of them:
    a count alone would let a few thousand long tasks hold gigabytes per loaded version."""

    def __init__(self, size: int, max_chars: int = CACHE_CHARS):
        self.size = size
        self.max_chars = max_chars
        self._data: OrderedDict = OrderedDict()
        self._chars = 0
        self._lock = threading.Lock()

    def get(self, key: str):
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: str, value) -> None:
        if self.size <= 0 or len(key) > self.max_chars:
            return
        with self._lock:
            if key in self._data:
                self._chars -= len(key)
            self._data[key] = value
            self._data.move_to_end(key)
            self._chars += len(key)
            while len(self._data) > self.size or self._chars > self.max_chars:
                evicted, _ = self._data.popitem(last=False)
                self._chars -= len(evicted)

    def __len__(self) -> int:
        return len(self._data)


def sentence_ends(text: str) -> list[int]:
    """Offsets just after each sentence end of ``text`` (where a window may be cut without overlap)."""
    return [m.end() for m in _SENTENCE_END.finditer(text)]


def window_bounds(length: int, width: int, overlap: int, breaks: Sequence[int] = ()) -> list[tuple[int, int]]:
    """Character windows of at most ``width`` covering ``[0, length)``: a window ends at the last of
    the sorted ``breaks`` (sentence ends) in its second half, and the next starts there; where none
    is, neighbours overlap by ``overlap``, so no character sits at a blind edge."""
    if not 0 <= overlap < width:
        raise ValueError(f"window overlap {overlap} must be in [0, width {width})")
    if length <= width:
        return [(0, length)]
    bounds, start = [], 0
    while True:
        end = min(start + width, length)
        if end == length:
            bounds.append((start, end))
            return bounds
        k = bisect.bisect_right(breaks, end) - 1
        if k >= 0 and breaks[k] > start + width // 2:
            bounds.append((start, breaks[k]))
            start = breaks[k]
        else:
            bounds.append((start, end))
            start = end - overlap


def stitch_owner(bounds: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """The part of each window whose characters take their emissions from it (midpoint of overlaps)."""
    owned = []
    for k, (start, end) in enumerate(bounds):
        lo = start if k == 0 else (bounds[k - 1][1] + start) // 2
        hi = end if k == len(bounds) - 1 else (end + bounds[k + 1][0]) // 2
        owned.append((lo, hi))
    return owned


class Predictor:
    """One loaded model version: immutable after construction, safe to share across threads.
    ``batch_tokens``: padded tokens per batch (0: what the back-end runs fastest with);
    ``sentence_cuts``: long texts cut at sentence ends where they can be (else overlapping windows only)."""

    def __init__(self, version: str, tokenizer, backend: EmissionBackend, scheme: TagScheme, vocab: CharVocab,
                 crf: CrfParams, hidden: int, cache_size: int = 4096, batch_tokens: int = 0, window_chars: int = 256,
                 window_overlap: int = 64, max_tokens: int = MAX_TOKENS, young_types: Sequence[str] = (),
                 sentence_cuts: bool = True):
        self.version = version
        self.tokenizer = tokenizer
        self.backend = backend
        self.scheme = scheme
        self.vocab = vocab
        self.crf = crf
        self.hidden = hidden
        self.cache = LruCache(cache_size)
        self.batch_tokens = batch_tokens or backend.batch_tokens
        self.window_chars = window_chars
        self.window_overlap = window_overlap
        self.sentence_cuts = sentence_cuts
        self.max_tokens = max_tokens
        self.young_tags = np.array(scheme.tags_of(young_types), dtype=np.int64)

    # -- preprocess -------------------------------------------------------------------------
    def _windows(self, index: int, text: str) -> list[_Window]:
        if not text:
            return []
        width, breaks = self.window_chars, sentence_ends(text) if self.sentence_cuts else []
        while True:
            bounds = window_bounds(len(text), width, min(self.window_overlap, width // 4), breaks)
            encoded = encode_texts(self.tokenizer, [text[s:e] for s, e in bounds])
            if all(len(e.input_ids) <= self.max_tokens for e in encoded) or width <= 8:
                break
            width //= 2  # text denser in tokens than characters (rare scripts, NFKC expansions)
        return [self._fit(index, s, e, enc) for (s, e), enc in zip(bounds, encoded)]

    def _all_windows(self, texts: Sequence[str]) -> list[list[_Window]]:
        """Each text's windows; texts that fit one window are tokenized together in one call."""
        short = [k for k, t in enumerate(texts) if 0 < len(t) <= self.window_chars]
        encoded = dict(zip(short, encode_texts(self.tokenizer, [texts[k] for k in short]))) if short else {}
        out = []
        for k, text in enumerate(texts):
            enc = encoded.get(k)
            if enc is not None and len(enc.input_ids) <= self.max_tokens:
                out.append([_Window(k, 0, len(text), enc.input_ids, enc.char_token, enc.char_piece)])
            else:
                out.append(self._windows(k, text))
        return out

    def _fit(self, index: int, start: int, end: int, enc) -> _Window:
        """A window within the encoder's positions; characters past them (only possible for
        pathological inputs) keep no token state rather than failing the request."""
        if len(enc.input_ids) <= self.max_tokens:
            return _Window(index, start, end, enc.input_ids, enc.char_token, enc.char_piece)
        beyond = enc.char_token >= self.max_tokens
        return _Window(index, start, end, enc.input_ids[: self.max_tokens], np.where(beyond, 0, enc.char_token),
                       np.where(beyond, NO_TOKEN, enc.char_piece))

    # -- forward ------------------------------------------------------------------------------
    def _run(self, texts: Sequence[str], windows: list[_Window], deadline: float | None = None) -> None:
        pad = self.tokenizer.pad_token_id
        lengths = [len(w.input_ids) for w in windows]
        for done, batch in enumerate(length_sorted_batches(lengths, self.batch_tokens)):
            if done and deadline is not None and time.monotonic() > deadline:
                raise DeadlinePassed(f"the deadline passed with {done} batches of windows computed")
            group = [windows[i] for i in batch]
            n_tok = max(len(w.input_ids) for w in group)
            n_chr = max(w.end - w.start for w in group)
            ids = np.full((len(group), n_tok), pad, dtype=np.int64)
            mask = np.zeros((len(group), n_tok), dtype=np.int64)
            char_inputs = np.zeros((4, len(group), n_chr), dtype=np.int64)
            for row, w in enumerate(group):
                ids[row, : len(w.input_ids)] = w.input_ids
                mask[row, : len(w.input_ids)] = 1
                chunk = texts[w.text_index][w.start : w.end]
                n = len(chunk)
                char_inputs[0, row, :n] = w.char_token
                char_inputs[1, row, :n] = w.char_piece
                char_inputs[2, row, :n] = self.vocab.ids(chunk)
                char_inputs[3, row, :n] = char_classes(chunk)
            states = self.backend.states(ids, mask)
            emissions = self.backend.emissions(states, mask, *char_inputs)
            for row, w in enumerate(group):
                n = w.end - w.start
                w.emissions = emissions[row, :n]
                covered = w.char_piece != NO_TOKEN
                last_layer = states[row, w.char_token[covered], -1, :]
                w.embedding_sum = last_layer.sum(axis=0, dtype=np.float64)
                w.embedding_count = int(covered.sum())

    # -- postprocess --------------------------------------------------------------------------
    def _stitched(self, text: str, windows: list[_Window]) -> np.ndarray:
        emissions = np.zeros((len(text), self.scheme.num_tags), dtype=np.float32)
        for w, (lo, hi) in zip(windows, stitch_owner([(w.start, w.end) for w in windows])):
            emissions[lo:hi] = w.emissions[lo - w.start : hi - w.start]
        return emissions

    def _result(self, text: str, windows: list[_Window], decoded: Decoded) -> TextResult:
        if not text:
            return TextResult(0, [], np.zeros(0, np.float32), 1.0, np.zeros(self.hidden, np.float32),
                              np.zeros(0, np.int64))
        entities = []
        for span in self.scheme.decode(decoded.path):
            chosen = decoded.marginals[np.arange(span.start, span.end), decoded.path[span.start : span.end]]
            bounds = snap_to_words(text, span.start, span.end)
            if bounds is None or (entities and bounds[0] < entities[-1].end):
                continue
            entities.append(Entity(bounds[0], bounds[1], span.label, text[bounds[0] : bounds[1]],
                                   float(chosen.sum()) / len(chosen)))
        total = sum(w.embedding_count for w in windows)
        embedding = sum(w.embedding_sum for w in windows) / max(total, 1)
        return TextResult(len(text), entities, decoded.entropy, decoded.best_path_prob, embedding.astype(np.float32),
                          decoded.path, tag_mass(decoded.marginals, self.young_tags))

    def _forward(self, texts: Sequence[str], deadline: float | None = None) -> tuple[list[str], list[list[_Window]]]:
        """The texts as the model reads them, and each one's windows with their emissions."""
        readable = [model_text(t) for t in texts]
        per_text = self._all_windows(readable)
        self._run(readable, [w for ws in per_text for w in ws], deadline)
        return readable, per_text

    def emissions(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Each text's emissions [characters, tags] before CRF decoding (not cached): what models
        stacked on this one (benchmarks/lexicon_stack.py) learn from."""
        readable, per_text = self._forward(texts)
        return [self._stitched(t, ws) for t, ws in zip(readable, per_text)]

    def predict(self, texts: Sequence[str], deadline: float | None = None) -> list[TextResult]:
        """One result per text. ``deadline`` (``time.monotonic()``): raise ``DeadlinePassed`` rather
        than start another batch after it (one text of 200,000 characters is ~100 batches)."""
        results: list[TextResult | None] = [self.cache.get(t) for t in texts]
        todo = {}
        for i, text in enumerate(texts):
            if results[i] is None and text not in todo:
                todo[text] = i
        if todo:
            order = list(todo)
            readable, per_text = self._forward(order, deadline)
            decoded = decode_many(self.crf, [self._stitched(t, ws) for t, ws in zip(readable, per_text)])
            for text, ws, d in zip(order, per_text, decoded):
                result = self._result(text, ws, d)
                self.cache.put(text, result)
                todo[text] = result
            results = [r if r is not None else todo[t] for r, t in zip(results, texts)]
        return results
