"""FGM adversarial training on the head's input states (``TrainConfig.fgm``)."""
from __future__ import annotations

import numpy as np
import torch

from raner_backend.model.crf import CRF
from raner_backend.model.network import CharHead, HeadConfig
from raner_backend.model.tags import DEFAULT_SCHEME, Span
from raner_backend.training.trainer import Item, TrainConfig, adversarial_states, batch_loss, collate, train


def _items(n: int = 24, seed: int = 0) -> list[Item]:
    rng = np.random.default_rng(seed)
    items = []
    for _ in range(n):
        length = int(rng.integers(4, 9))
        start = int(rng.integers(0, length - 2))
        spans = (Span(start, start + 2, "PER"),)
        states = rng.normal(size=(length, 1, 8)).astype(np.float16)
        states[start : start + 2, 0, :4] += 4.0  # the name shows in the states
        positions = np.arange(length, dtype=np.int64)
        items.append(Item(states, positions, np.zeros(length, np.int64), np.ones(length, np.int64),
                          np.ones(length, np.int64), DEFAULT_SCHEME.encode(length, spans), spans))
    return items


def _head() -> tuple[CharHead, CRF]:
    torch.manual_seed(0)
    cfg = HeadConfig(num_tags=DEFAULT_SCHEME.num_tags, char_vocab_size=4, encoder_hidden=8, layers=(1,), width=16,
                     char_dim=4, dilations=(1,), dropout=0.0)
    return CharHead(cfg), CRF(DEFAULT_SCHEME)


def test_each_sentence_is_pushed_epsilon_along_its_gradient_and_the_loss_rises():
    head, crf = _head()
    states, f = collate(_items(4), num_tags=DEFAULT_SCHEME.num_tags)
    states = states.float().requires_grad_(True)
    cfg = TrainConfig()
    loss = batch_loss(head, crf, states, f, cfg)
    loss.backward()
    pushed = adversarial_states(states, 0.05)
    push = pushed - states.detach()
    lengths = push.flatten(1).norm(dim=1)
    assert torch.allclose(lengths, torch.full_like(lengths, 0.05), atol=1e-4)
    assert (push * states.grad).sum() > 0 and not pushed.requires_grad
    assert batch_loss(head, crf, pushed, f, cfg).item() > loss.item()


def test_training_with_fgm_learns_and_takes_the_adversarial_step():
    learned = {}
    for epsilon in (0.0, 0.3):
        head, crf = _head()
        summary = train(head, crf, DEFAULT_SCHEME, _items(), _items(8, seed=1),
                        TrainConfig(epochs=15, patience=15, batch_chars=64, head_lr=1e-2, char_dropout=0.0, fgm=epsilon))
        learned[epsilon] = (summary["best_dev_f1"], head.out.weight.detach().clone())
    assert learned[0.3][0] >= 0.8, learned[0.3][0]
    assert not torch.allclose(learned[0.0][1], learned[0.3][1])
