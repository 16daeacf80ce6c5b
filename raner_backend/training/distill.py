"""Distilling a model into a faster student.

The default model is two heads, each with a sequential BiLSTM, over a 12-layer encoder. The
student is one head without the BiLSTM that starts from the first member's weights, learns to
give the teacher's emissions (``TrainConfig.distill``) as well as the gold tags, and reads its
encoder states from the engine it will be served with: trained on the INT8 encoder's states, it
learns to undo the quantization error that costs the teacher 0.6 F1 points under INT8.
"""
from __future__ import annotations

import copy
import logging
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from ..engine.loader import ENGINES, BaseRuntime
from ..model.bundle import HeadBundle, single_heads
from ..model.data import Example
from ..model.network import CharHead, HeadConfig
from .base_model import Corpus
from .trainer import Item, TrainConfig, evaluate_items, item_emissions, train

log = logging.getLogger(__name__)

def student_of(teacher: HeadBundle, overrides: dict) -> HeadBundle:
    """A single head shaped as the teacher's first member with ``overrides``, starting from that
    member's weights wherever the shapes agree, and the teacher's CRF."""
    member = single_heads(teacher.head)[0]
    head = CharHead(HeadConfig.from_dict(dict(member.cfg.to_dict(), **overrides)))
    own = head.state_dict()
    head.load_state_dict({k: v for k, v in member.state_dict().items() if k in own and own[k].shape == v.shape},
                         strict=False)
    return HeadBundle(teacher.scheme, teacher.vocab, head, copy.deepcopy(teacher.crf), teacher.base)


def attach_teacher(teacher: HeadBundle, teacher_items: Sequence[Item], student_items: Sequence[Item],
                   saved: Path) -> None:
    """Give each student item the teacher's emissions of the same sentence (computed once, kept in ``saved``)."""
    lengths = np.array([len(i.char_ids) for i in teacher_items])
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    if saved.exists() and np.load(saved, mmap_mode="r").shape[0] == offsets[-1]:
        flat = np.load(saved)
    else:
        flat = np.zeros((offsets[-1], teacher.scheme.num_tags), dtype=np.float16)
        for i, emissions in item_emissions(teacher.head, teacher_items):
            flat[offsets[i] : offsets[i + 1]] = emissions
        saved.parent.mkdir(parents=True, exist_ok=True)
        np.save(saved, flat)
    for i, item in enumerate(student_items):
        item.teacher = flat[offsets[i] : offsets[i + 1]]


def distil_base_model(runtime: BaseRuntime, examples: Sequence[Example], out_dir: Path, teacher_dir: Path,
                      cfg: TrainConfig, overrides: dict, states: str = "onnx-int8", dev_size: int = 2000,
                      augment: float = 0.0, lists: int = 0, swaps: float = 0.0, init: Path | None = None) -> dict:
    """Train a student of the model in ``teacher_dir`` on ``examples`` (a dev part carved off, the
    same augmentation as ``train``), its encoder states from the ``states`` engine; save it to
    ``out_dir`` and return a summary. ``init``: continue from the student in that folder."""
    if states not in ENGINES:
        raise ValueError(f"states {states!r} is not one of {', '.join(ENGINES)}")
    started = time.time()
    runtime.load()
    tokenizer, encoder, base, cache_dir = runtime.tokenizer, runtime.encoder, runtime.base, runtime.cache_dir
    teacher = HeadBundle.load(teacher_dir)
    student = HeadBundle.load(init) if init else student_of(teacher, overrides)
    corpus = Corpus.build(examples, dev_size, cfg.seed, augment, lists, swaps)
    teacher_train, teacher_dev = corpus.items(tokenizer, encoder, base, teacher, teacher.head.cfg.base_layers,
                                              cache_dir)
    layers = student.head.cfg.base_layers
    module = runtime.states_module(layers, student.vocab, states)
    train_items, dev_items = corpus.items(tokenizer, encoder, base, student, layers, cache_dir, module, states)
    attach_teacher(teacher, teacher_train, train_items, out_dir / "checkpoint" / "teacher_emissions.npy")
    teacher_dev_f1 = evaluate_items(teacher.head, teacher.crf, teacher.scheme, teacher_dev)["overall"]["f1"]
    log.info("teacher dev F1 %.4f", teacher_dev_f1)
    summary = train(student.head, student.crf, student.scheme, train_items, dev_items, cfg,
                    checkpoint_dir=out_dir / "checkpoint")
    student.save(out_dir)
    summary.update(corpus.summary(), teacher=str(teacher_dir), teacher_dev_f1=teacher_dev_f1, states=states,
                   head_overrides=overrides, init=str(init) if init else None, distill=cfg.distill,
                   seconds=round(time.time() - started, 1))
    return summary
