"""Multi-task training: an auxiliary output learns silver word segmentation beside the entities."""
from __future__ import annotations

import numpy as np
import torch

from raner_backend.model.tags import DEFAULT_SCHEME
from raner_backend.training.segmentation import segment_tags, word_tags
from raner_backend.training.trainer import TrainConfig, batch_loss, collate, segmentation_output, train

from .test_fgm import _head, _items


def test_words_become_one_tag_per_character():
    assert word_tags(["华为", "在", "深圳市", "Mate60"]).tolist() == [0, 2, 3, 0, 1, 2, 0, 1, 1, 1, 1, 2]


def test_jieba_segments_every_character_of_modern_text():
    texts = ["华为在深圳发布Mate60手机。", "@张伟 今天🎉去了北京 #科技#", "臺北市政府", ""]
    tags = segment_tags(texts)
    assert [len(t) for t in tags] == [len(t) for t in texts]
    assert tags[0][:2].tolist() == [0, 2]  # 华为 is one word


def _with_segments(items):
    for item in items:  # the tiny items' name (two characters) is one word, every other character alone
        item.segments = np.full(len(item.char_ids), 3, dtype=np.int64)
        start = item.spans[0].start
        item.segments[start : start + 2] = [0, 2]
    return items


def test_the_segmentation_loss_adds_to_the_entity_loss_and_only_where_asked():
    head, crf = _head()
    states, f = collate(_with_segments(_items(4)), num_tags=DEFAULT_SCHEME.num_tags)
    cfg = TrainConfig(segmentation=1.0)
    plain = batch_loss(head, crf, states, f, cfg)
    with_words = batch_loss(head, crf, states, f, cfg, segmentation_output(head))
    assert with_words.item() > plain.item()
    states, f = collate(_items(4), num_tags=DEFAULT_SCHEME.num_tags)  # no segments: the entity loss alone
    assert f["segments"] is None
    assert torch.isclose(batch_loss(head, crf, states, f, cfg, segmentation_output(head)), plain)


def test_training_with_segmentation_learns_entities_and_saves_no_extra_output():
    learned = {}
    for weight in (0.0, 1.0):
        head, crf = _head()
        summary = train(head, crf, DEFAULT_SCHEME, _with_segments(_items()), _items(8, seed=1),
                        TrainConfig(epochs=15, patience=15, batch_chars=64, head_lr=1e-2, char_dropout=0.0,
                                    segmentation=weight))
        learned[weight] = (summary["best_dev_f1"], head.state_dict())
    assert learned[1.0][0] >= 0.8, learned[1.0][0]
    assert learned[1.0][1].keys() == learned[0.0][1].keys()
    assert not torch.allclose(learned[0.0][1]["out.weight"], learned[1.0][1]["out.weight"])
