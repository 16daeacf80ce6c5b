"""Training the default model on a character-tagged corpus (MSRA train) from a base encoder."""
from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Sequence

from ..model.alignment import encode_texts
from ..model.base import BaseEncoder
from ..model.bundle import HeadBundle
from ..model.chars import CharVocab, char_classes
from ..model.data import Example
from ..model.network import CharHead, EncoderStates, HeadConfig
from ..model.tags import TagScheme
from .augment import augment_examples, mention_swaps, name_lists
from .features import build_feature_cache
from .trainer import Item, TrainConfig, split_dev, train

log = logging.getLogger(__name__)


def feature_cache_dir(cache_dir: Path, base: BaseEncoder, layers: Sequence[int], texts: Sequence[str]) -> tuple[Path, dict]:
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    signature = {"base": base.name, "base_sha256": base.checksum(), "layers": list(layers)}
    key = hashlib.sha256(json.dumps(signature, sort_keys=True).encode()).hexdigest()[:16]
    return Path(cache_dir) / "features" / key / digest, signature


def build_items(tokenizer, encoder, bundle_vocab: CharVocab, scheme: TagScheme, examples: Sequence[Example],
                layers: Sequence[int], cache_path: Path, signature: dict) -> list[Item]:
    texts = [e.text for e in examples]
    encoded = encode_texts(tokenizer, texts)
    signature = dict(signature, hidden=encoder.config.hidden_size)
    cache = build_feature_cache(EncoderStates(encoder, tuple(layers)), encoded, tokenizer.pad_token_id,
                                cache_path, signature)
    return [Item(cache.token_states(i), enc.char_token, enc.char_piece, bundle_vocab.ids(ex.text),
                 char_classes(ex.text), scheme.encode(len(ex.text), ex.spans), ex.spans)
            for i, (ex, enc) in enumerate(zip(examples, encoded))]


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
    train_idx, dev_idx = split_dev(len(examples), dev_size, cfg.seed)
    train_ex = [examples[i] for i in train_idx]
    swapped = mention_swaps(train_ex, swaps, cfg.seed)
    train_ex += augment_examples(train_ex, augment, cfg.seed) if augment else []
    vocab = HeadBundle.load(chars_from).vocab if chars_from else CharVocab.build(e.text for e in train_ex)
    bundle = HeadBundle.load(init) if init else new_bundle(base, encoder, scheme, vocab, head_config)
    if top_layers > bundle.head.cfg.top_layers:
        bundle.head = with_top_layers(bundle.head, encoder, top_layers)
    layers = bundle.head.cfg.layers
    data = train_ex + [examples[i] for i in dev_idx]
    # Each part has its own cache, so adding name lists or swaps never re-encodes the corpus.
    parts = [data, *(part for part in (name_lists(train_ex, lists, cfg.seed), swapped) if part)]
    items = []
    for part in parts:
        cache_path, signature = feature_cache_dir(cache_dir, base, layers, [e.text for e in part])
        items.append(build_items(tokenizer, encoder, bundle.vocab, bundle.scheme, part, layers, cache_path,
                                 signature))
    train_items = items[0][: len(train_ex)] + [item for extra in items[1:] for item in extra]
    summary = train(bundle.head, bundle.crf, bundle.scheme, train_items, items[0][len(train_ex) :],
                    cfg, checkpoint_dir=out_dir / "checkpoint")
    bundle.save(out_dir)
    summary.update({"train_sentences": len(train_items), "augmented_sentences": len(train_items) - len(train_idx),
                    "name_list_sentences": lists, "mention_swap_sentences": len(swapped),
                    "dev_sentences": len(dev_idx), "init": str(init) if init else None,
                    "seconds": round(time.time() - started, 1)})
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
