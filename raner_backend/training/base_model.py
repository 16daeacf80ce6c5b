"""Training the default model on a character-tagged corpus (MSRA train) from a base encoder."""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from ..model.alignment import encode_texts
from ..model.base import BaseEncoder
from ..model.bundle import HeadBundle
from ..model.chars import CharVocab, char_classes
from ..model.data import Example
from ..model.network import CharHead, EncoderStates, HeadConfig
from ..model.tags import TagScheme
from .augment import augment_examples, mention_swaps, name_lists
from .features import build_feature_cache
from .segmentation import segment_tags
from .trainer import Item, TrainConfig, split_dev, train

log = logging.getLogger(__name__)


def feature_cache_dir(cache_dir: Path, base: BaseEncoder, layers: Sequence[int], texts: Sequence[str],
                      states_name: str = "torch") -> tuple[Path, dict]:
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    signature = {"base": base.name, "base_sha256": base.checksum(), "layers": list(layers)}
    if states_name != "torch":  # caches made before states could come from another engine keep their key
        signature["states"] = states_name
    key = hashlib.sha256(json.dumps(signature, sort_keys=True).encode()).hexdigest()[:16]
    return Path(cache_dir) / "features" / key / digest, signature


def build_items(tokenizer, encoder, bundle_vocab: CharVocab, scheme: TagScheme, examples: Sequence[Example],
                layers: Sequence[int], cache_path: Path, signature: dict,
                states_module: torch.nn.Module | None = None, segments: bool = False) -> list[Item]:
    """Items with cached encoder states; ``states_module`` (default: the torch encoder's layers)
    gives them, and ``signature`` must name it. ``segments``: with silver word segmentation."""
    texts = [e.text for e in examples]
    encoded = encode_texts(tokenizer, texts)
    signature = dict(signature, hidden=encoder.config.hidden_size)
    cache = build_feature_cache(states_module or EncoderStates(encoder, tuple(layers)), encoded,
                                tokenizer.pad_token_id, cache_path, signature)
    silver = segment_tags(texts) if segments else [None] * len(texts)
    return [Item(cache.token_states(i), enc.char_token, enc.char_piece, bundle_vocab.ids(ex.text),
                 char_classes(ex.text), scheme.encode(len(ex.text), ex.spans), ex.spans, segments=silver[i])
            for i, (ex, enc) in enumerate(zip(examples, encoded))]


@dataclass
class Corpus:
    """The training sentences (with their augmented copies) and the dev sentences, in parts that
    are cached apart, so adding name lists or swaps never re-encodes the corpus."""

    train: list[Example]
    dev: list[Example]
    extras: list[list[Example]]
    originals: int  # training sentences before augmentation
    name_lists: int
    swaps: int

    @classmethod
    def build(cls, examples: Sequence[Example], dev_size: int, seed: int, augment: float = 0.0, lists: int = 0,
              swaps: float = 0.0) -> "Corpus":
        train_idx, dev_idx = split_dev(len(examples), dev_size, seed)
        train_ex = [examples[i] for i in train_idx]
        swapped = mention_swaps(train_ex, swaps, seed)
        train_ex += augment_examples(train_ex, augment, seed) if augment else []
        listed = name_lists(train_ex, lists, seed)
        extras = [part for part in (listed, swapped) if part]
        return cls(train_ex, [examples[i] for i in dev_idx], extras, len(train_idx), len(listed), len(swapped))

    def summary(self) -> dict:
        sentences = len(self.train) + sum(map(len, self.extras))
        return {"train_sentences": sentences, "augmented_sentences": sentences - self.originals,
                "name_list_sentences": self.name_lists, "mention_swap_sentences": self.swaps,
                "dev_sentences": len(self.dev)}

    def items(self, tokenizer, encoder, base: BaseEncoder, bundle: HeadBundle, layers: Sequence[int],
              cache_dir: Path, states_module: torch.nn.Module | None = None,
              states_name: str = "torch", segments: bool = False) -> tuple[list[Item], list[Item]]:
        """(train items, dev items) with encoder states from ``states_module`` (named ``states_name``);
        ``segments``: with silver word segmentation."""
        items = []
        for part in (self.train + self.dev, *self.extras):
            cache_path, signature = feature_cache_dir(cache_dir, base, layers, [e.text for e in part], states_name)
            items.append(build_items(tokenizer, encoder, bundle.vocab, bundle.scheme, part, layers, cache_path,
                                     signature, states_module, segments))
        train_items = items[0][: len(self.train)] + [item for extra in items[1:] for item in extra]
        return train_items, items[0][len(self.train) :]


def train_base_model(base: BaseEncoder, examples: Sequence[Example], out_dir: Path, cache_dir: Path,
                     scheme: TagScheme, cfg: TrainConfig, dev_size: int = 2000,
                     head_config: dict | None = None, init: Path | None = None, augment: float = 0.0,
                     lists: int = 0, top_layers: int = 0, chars_from: Path | None = None, swaps: float = 0.0) -> dict:
    """Train a head on ``examples`` (a dev part carved off), save it to ``out_dir``; return a summary.

    ``init``: continue from the model in that folder (its head, CRF and character vocabulary);
    ``augment``: add modern-text copies of that share of the training sentences (never of dev);
    ``lists``: add that many name-list sentences built from the training names;
    ``swaps``: add copies of that share of the training sentences with their names swapped for
    other training names of the same type;
    ``chars_from``: a new head takes that model's character vocabulary, so the two can be combined;
    ``top_layers``: give an ``init`` model its own copy of the encoder's last layers, up to this many
    (layers it already trained are kept).
    """
    started = time.time()
    tokenizer, encoder = base.load()
    corpus = Corpus.build(examples, dev_size, cfg.seed, augment, lists, swaps)
    vocab = HeadBundle.load(chars_from).vocab if chars_from else CharVocab.build(e.text for e in corpus.train)
    bundle = HeadBundle.load(init) if init else new_bundle(base, encoder, scheme, vocab, head_config)
    if top_layers > bundle.head.cfg.top_layers:
        bundle.head = with_top_layers(bundle.head, encoder, top_layers)
    train_items, dev_items = corpus.items(tokenizer, encoder, base, bundle, bundle.head.cfg.base_layers, cache_dir,
                                          segments=cfg.segmentation > 0)
    summary = train(bundle.head, bundle.crf, bundle.scheme, train_items, dev_items,
                    cfg, checkpoint_dir=out_dir / "checkpoint")
    bundle.save(out_dir)
    summary.update(corpus.summary(), init=str(init) if init else None, seconds=round(time.time() - started, 1))
    return summary


def with_top_layers(head: CharHead, encoder, count: int) -> CharHead:
    """The same head with its own copy of the encoder's last ``count`` layers. Layers the head
    already trained are kept as the topmost; the others start from the encoder's weights, so a
    head without top layers gives unchanged output until training moves them."""
    if not isinstance(head, CharHead):
        raise ValueError("top layers are grown on a single head, not on an ensemble")
    config = encoder.config
    cfg = HeadConfig.from_dict(dict(head.cfg.to_dict(), top_layers=count,
                                    attention_heads=config.num_attention_heads,
                                    intermediate_size=config.intermediate_size,
                                    layer_norm_eps=config.layer_norm_eps))
    if cfg.layers[-1] - count not in cfg.layers:
        raise ValueError(f"{count} top layers need layer {cfg.layers[-1] - count} among the head's layers {cfg.layers}")
    trained = head.top.layers if head.top is not None else []
    if len(trained) > count:
        raise ValueError(f"the head already has {len(trained)} top layers, more than {count}")
    grown = CharHead(cfg)
    missing, unexpected = grown.load_state_dict(
        {k: v for k, v in head.state_dict().items() if not k.startswith("top.")}, strict=False)
    if unexpected or any(not k.startswith("top.") for k in missing):
        raise ValueError(f"head weights do not fit: missing {missing}, unexpected {unexpected}")
    grown.top.copy_from_bert(encoder)
    for ours, kept in zip(grown.top.layers[count - len(trained):], trained):
        ours.load_state_dict(kept.state_dict())
    return grown


def new_bundle(base: BaseEncoder, encoder, scheme: TagScheme, vocab: CharVocab,
               head_config: dict | None) -> HeadBundle:
    head_kwargs = dict(head_config or {})
    layers = tuple(head_kwargs.pop("layers", HeadConfig.layers))
    layers = tuple(min(layer, encoder.config.num_hidden_layers) for layer in layers)
    top_layers = head_kwargs.pop("top_layers", 0)
    bundle = HeadBundle.new(scheme, vocab, encoder.config.hidden_size,
                            {"name": base.name, "sha256": base.checksum()}, layers=layers, **head_kwargs)
    if top_layers:
        bundle.head = with_top_layers(bundle.head, encoder, top_layers)
    return bundle
