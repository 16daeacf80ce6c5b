"""Multi-task training: an auxiliary output learns silver word segmentation beside the entities."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from raner_backend.model.tags import DEFAULT_SCHEME
from raner_backend.training.segmentation import NO_SEGMENT, segment_tags, word_tags
from raner_backend.training.trainer import TrainConfig, batch_loss, collate, new_segmenter, run_head, train

from .test_fgm import _head, _items


def test_words_become_one_tag_per_character():
    assert word_tags(["华为", "在", "深圳市", "Mate60"]).tolist() == [0, 2, 3, 0, 1, 2, 0, 1, 1, 1, 1, 2]


def test_jieba_segments_every_character_of_modern_text():
    pytest.importorskip("jieba")  # the '.[train]' extra; the test install has it
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


def test_the_segmentation_loss_is_its_weight_times_the_cross_entropy_of_the_segmented_characters():
    head, crf = _head()
    items = _items(4)
    _with_segments(items[:2])  # the other two have no segmentation: their characters must not count
    states, f = collate(items, num_tags=DEFAULT_SCHEME.num_tags)
    segmenter = new_segmenter(head)
    cfg = TrainConfig(segmentation=0.5)
    extra = batch_loss(head, crf, states, f, cfg, segmenter) - batch_loss(head, crf, states, f, cfg)
    _, features = run_head(head, states, f, with_features=True)
    logits = torch.cat([segmenter(features[row, : len(items[row].segments)]) for row in range(2)])
    targets = torch.from_numpy(np.concatenate([items[row].segments for row in range(2)]))
    assert torch.isclose(extra, 0.5 * torch.nn.functional.cross_entropy(logits, targets), atol=1e-5)
    assert (f["segments"][2:] == NO_SEGMENT).all()


def test_a_batch_with_nothing_segmented_takes_the_entity_loss_alone():
    head, crf = _head()
    items = _items(2)
    items[0].segments = np.zeros(0, dtype=np.int64)  # an empty segmentation: a loss over no characters is NaN
    states, f = collate(items, num_tags=DEFAULT_SCHEME.num_tags)
    assert f["segments"] is None
    cfg = TrainConfig(segmentation=1.0)
    assert torch.equal(batch_loss(head, crf, states, f, cfg, new_segmenter(head)), batch_loss(head, crf, states, f, cfg))


def test_the_segmentation_loss_changes_what_the_head_learns_and_only_it_does():
    def trained(weight: float, segmented: bool):
        head, crf = _head()
        items = _with_segments(_items()) if segmented else _items()
        summary = train(head, crf, DEFAULT_SCHEME, items, _items(8, seed=1),
                        TrainConfig(epochs=15, patience=15, batch_chars=64, head_lr=1e-2, char_dropout=0.0,
                                    segmentation=weight))
        return summary["best_dev_f1"], head.state_dict()["out.weight"]

    plain, unsegmented, segmented = trained(0.0, True), trained(1.0, False), trained(1.0, True)
    assert torch.equal(plain[1], unsegmented[1])  # the auxiliary output alone changes nothing
    assert not torch.allclose(plain[1], segmented[1])
    assert segmented[0] >= 0.8, segmented[0]


def test_resuming_with_another_segmentation_setting_says_so(tmp_path):
    head, crf = _head()
    train(head, crf, DEFAULT_SCHEME, _with_segments(_items()), [], TrainConfig(epochs=1, batch_chars=64),
          checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="another segmentation setting"):
        train(head, crf, DEFAULT_SCHEME, _with_segments(_items()), [], TrainConfig(epochs=2, batch_chars=64,
              segmentation=1.0), checkpoint_dir=tmp_path)
