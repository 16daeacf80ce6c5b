"""Distilling a model into a faster student.

The default model is two heads, each with its own copy of encoder layers 11-12 and a sequential
BiLSTM, over a 12-layer encoder. A student is one head of another shape (``overrides`` of the
first member's), for instance one that re-computes only encoder layers 1-4 from the embeddings
and trains them, without the BiLSTM. It learns to give the teacher's emissions as the teacher is
served (``TrainConfig.distill``) as well as the gold tags, and reads its encoder states from the
engine it will be served with.
"""
from __future__ import annotations

import copy
import hashlib
import logging
import time
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from ..engine.loader import ENGINES, BaseRuntime, build_predictor
from ..engine.predictor import Predictor
from ..model.bundle import HeadBundle, single_heads
from ..model.data import Example
from ..model.metrics import entity_scores
from ..model.network import CharHead, HeadConfig
from .base_model import Corpus
from .trainer import TrainConfig, train

log = logging.getLogger(__name__)


def student_of(teacher: HeadBundle, overrides: dict, encoder) -> HeadBundle:
    """A single head shaped as the teacher's first member with ``overrides``, starting from that
    member's weights wherever the shapes agree, and the teacher's CRF. Its own encoder layers start
    as the member's when they are the same layers, else as the base encoder's (a student that
    re-computes layers 1-4 from the embeddings starts from the base's layers 1-4)."""
    member = single_heads(teacher.head)[0]
    head = CharHead(HeadConfig.from_dict(dict(member.cfg.to_dict(), **overrides)))
    own = head.state_dict()
    same_top = (head.cfg.layers[-1], head.cfg.top_layers) == (member.cfg.layers[-1], member.cfg.top_layers)
    head.load_state_dict({k: v for k, v in member.state_dict().items()
                          if k in own and own[k].shape == v.shape and (same_top or not k.startswith("top."))},
                         strict=False)
    if head.top is not None and not same_top:
        head.top.copy_from_bert(encoder)
    return HeadBundle(teacher.scheme, teacher.vocab, head, copy.deepcopy(teacher.crf), teacher.base)


def teacher_emissions(teacher: Predictor, texts: Sequence[str], saved: Path, batch: int = 2048) -> list[np.ndarray]:
    """The teacher's emissions of each text as it is served (``Predictor.emissions``), computed once
    and kept in ``saved`` (with the texts' digest: another corpus computes them again)."""
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    lengths = np.array([len(t) for t in texts])
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    path = saved.with_name(f"{saved.stem}.{digest}.npy")
    if path.exists():
        flat = np.load(path)
    else:
        flat = np.zeros((offsets[-1], teacher.scheme.num_tags), dtype=np.float16)
        for at in tqdm(range(0, len(texts), batch), desc="teacher emissions"):
            for i, emissions in enumerate(teacher.emissions(texts[at : at + batch]), start=at):
                flat[offsets[i] : offsets[i + 1]] = emissions
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, flat)
    return [flat[offsets[i] : offsets[i + 1]] for i in range(len(texts))]


def distil_base_model(runtime: BaseRuntime, examples: Sequence[Example], out_dir: Path, teacher_dir: Path,
                      cfg: TrainConfig, overrides: dict, states: str = "onnx-int8", dev_size: int = 2000,
                      augment: float = 0.0, lists: int = 0, swaps: float = 0.0, init: Path | None = None,
                      teacher_engine: str = "onnx-int8") -> dict:
    """Train a student of the model in ``teacher_dir`` on ``examples`` (a dev part carved off, the
    same augmentation as ``train``), its encoder states from the ``states`` engine, the teacher's
    emissions from the ``teacher_engine`` it is served with; save it to ``out_dir`` and return a
    summary. ``init``: continue from the student in that folder."""
    for engine in (states, teacher_engine):
        if engine not in ENGINES:
            raise ValueError(f"engine {engine!r} is not one of {', '.join(ENGINES)}")
    started = time.time()
    runtime.load()
    tokenizer, encoder, base, cache_dir = runtime.tokenizer, runtime.encoder, runtime.base, runtime.cache_dir
    teacher = build_predictor(runtime, teacher_dir, "teacher", teacher_engine, cache_size=0)
    student = HeadBundle.load(init) if init else student_of(HeadBundle.load(teacher_dir), overrides, encoder)
    corpus = Corpus.build(examples, dev_size, cfg.seed, augment, lists, swaps)
    layers = student.head.cfg.base_layers
    module = runtime.states_module(layers, student.vocab, states)
    train_items, dev_items = corpus.items(tokenizer, encoder, base, student, layers, cache_dir, module, states)
    train_texts = [e.text for e in corpus.train] + [e.text for extra in corpus.extras for e in extra]
    for item, emissions in zip(train_items, teacher_emissions(teacher, train_texts,
                                                              out_dir / "checkpoint" / "teacher_emissions")):
        item.teacher = emissions
    teacher_dev_f1 = entity_scores([list(e.spans) for e in corpus.dev],
                                   [[(x.start, x.end, x.label) for x in r.entities]
                                    for r in teacher.predict([e.text for e in corpus.dev])])["overall"]["f1"]
    log.info("teacher dev F1 %.4f", teacher_dev_f1)
    summary = train(student.head, student.crf, student.scheme, train_items, dev_items, cfg,
                    checkpoint_dir=out_dir / "checkpoint")
    student.save(out_dir)
    summary.update(corpus.summary(), teacher=str(teacher_dir), teacher_engine=teacher_engine,
                   teacher_dev_f1=teacher_dev_f1, states=states, head_overrides=overrides,
                   init=str(init) if init else None, distill=cfg.distill, seconds=round(time.time() - started, 1))
    return summary
