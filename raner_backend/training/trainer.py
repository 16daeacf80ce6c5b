"""Training the character head and CRF on cached encoder states.

Used both for the base model (MSRA) and for fine-tuning on a project's annotations (with replay
of base data). Length-bucketed batches, AdamW with separate learning rates for the head and the
CRF, warm-up then linear decay, early stopping on dev F1, a checkpoint after every epoch so an
interrupted run resumes where it stopped.
"""
from __future__ import annotations

import json
import logging
import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from tqdm import tqdm

from ..model.chars import UNK
from ..model.crf import CRF
from ..model.network import CharHead, Head, top_layer_parameters
from ..model.tags import Span, TagScheme
from ..model.batching import length_sorted_batches
from ..model.metrics import entity_scores
from .segmentation import NO_SEGMENT, SEGMENT_TAGS

log = logging.getLogger(__name__)


@dataclass
class Item:
    """One text ready for the head: its encoder states and per-character inputs."""

    token_states: np.ndarray  # fp16 [tokens, layers, hidden]
    char_token: np.ndarray
    char_piece: np.ndarray
    char_ids: np.ndarray
    char_class: np.ndarray
    tags: np.ndarray
    spans: tuple[Span, ...]
    open_tags: tuple[int, ...] = ()  # tags an ``O`` of this text may also be: types it never labelled
    teacher: np.ndarray | None = None  # a teacher model's emissions [chars, tags], when distilling
    segments: np.ndarray | None = None  # silver word-segmentation tags per character, for multi-task training
    unsure: tuple[tuple[int, int], ...] = ()  # character ranges where an ``O`` may be any tag


@dataclass
class TrainConfig:
    epochs: int = 8
    batch_chars: int = 2048
    head_lr: float = 2e-3
    top_lr: float = 5e-5  # the head's copy of the encoder's top layers, if it has one
    crf_lr: float = 1e-2
    out_lr: float = 0.0  # the heads' output layers (0: head_lr); higher while a new entity type is learned
    weight_decay: float = 0.01
    warmup: float = 0.05
    patience: int = 2
    min_steps: int = 0  # no early stop before this many optimizer steps (a new type's F1 stays 0 at first)
    char_dropout: float = 0.1
    seed: int = 13
    max_steps: int = 0  # a hard budget in optimizer steps (0: none), for quick runs
    # Weight of the squared distance to a teacher's emissions (items that carry them); None: the caller's
    # default (a project's training: fine_tune.GROWN_TYPES_DISTILL where its tag set needs it, else 0).
    distill: float | None = None
    fgm: float = 0.0  # FGM's epsilon: also learn from encoder states pushed this far along the loss gradient (0: off)
    segmentation: float = 0.0  # weight of an auxiliary word-segmentation loss on items' silver segments (0: off)


def collate(items: Sequence[Item], char_dropout: float = 0.0, rng: np.random.Generator | None = None,
            num_tags: int = 0):
    n_tokens = max(len(i.token_states) for i in items)
    n_chars = max(len(i.char_ids) for i in items)
    layers, hidden = items[0].token_states.shape[1:]
    states = torch.zeros((len(items), n_tokens, layers, hidden), dtype=torch.float16)
    fields = {k: torch.zeros((len(items), n_chars), dtype=torch.long)
              for k in ("char_token", "char_piece", "char_ids", "char_class", "tags")}
    fields["token_mask"] = torch.zeros((len(items), n_tokens), dtype=torch.long)
    fields["allowed"] = None
    for row, item in enumerate(items):
        states[row, : len(item.token_states)] = torch.from_numpy(np.array(item.token_states))
        fields["token_mask"][row, : len(item.token_states)] = 1
        length = len(item.char_ids)
        char_ids = item.char_ids
        if char_dropout and rng is not None:
            char_ids = np.where(rng.random(length) < char_dropout, UNK, char_ids)
        for key, value in (("char_token", item.char_token), ("char_piece", item.char_piece),
                           ("char_ids", char_ids), ("char_class", item.char_class), ("tags", item.tags)):
            fields[key][row, :length] = torch.from_numpy(np.asarray(value))
    if num_tags and any(item.open_tags or item.unsure for item in items):  # only training reads them
        fields["allowed"] = partial_labels(items, fields["tags"], num_tags)
    fields["teacher"] = teacher_emissions(items, n_chars)
    fields["segments"] = segment_targets(items, n_chars)
    return states, fields


def segment_targets(items: Sequence[Item], n_chars: int) -> torch.Tensor | None:
    """``[batch, chars]`` silver segmentation tags, ``NO_SEGMENT`` where an item has none."""
    if not any(item.segments is not None and len(item.segments) for item in items):
        return None  # nothing to learn from: a loss over no characters would be NaN
    targets = torch.full((len(items), n_chars), NO_SEGMENT, dtype=torch.long)
    for row, item in enumerate(items):
        if item.segments is not None:
            targets[row, : len(item.segments)] = torch.from_numpy(item.segments)
    return targets


def teacher_emissions(items: Sequence[Item], n_chars: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(teacher [batch, chars, teacher's tags], taught [batch])`` for a batch where some items carry a
    teacher's emissions (a teacher may know fewer tags than the student: the first ones)."""
    taught = [item for item in items if item.teacher is not None]
    if not taught:
        return None
    teacher = torch.zeros((len(items), n_chars, taught[0].teacher.shape[1]))
    rows = torch.zeros(len(items), dtype=torch.bool)
    for row, item in enumerate(items):
        if item.teacher is not None:
            teacher[row, : len(item.teacher)] = torch.from_numpy(np.asarray(item.teacher, dtype=np.float32))
            rows[row] = True
    return teacher, rows


def distillation_loss(emissions: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over characters of the squared distance between the student's and the teacher's
    emission vectors, over the tags the teacher knows: matching emissions (not only the teacher's
    best path) passes on how sure the teacher is, and under the same CRF equal emissions decode alike."""
    mask = mask.float()
    distance = ((emissions[..., : teacher.shape[-1]] - teacher) ** 2).sum(-1)
    return (distance * mask).sum() / mask.sum().clamp(min=1.0)


def partial_labels(items: Sequence[Item], tags: torch.Tensor, num_tags: int) -> torch.Tensor:
    """[batch, chars, tags] bool: the gold tag, and at an ``O`` also the item's open tags (every
    tag inside its unsure ranges, but never one that would carry a labelled span on past its end)."""
    allowed = torch.nn.functional.one_hot(tags, num_tags).bool()
    for row, item in enumerate(items):
        if item.open_tags:
            outside = (tags[row] == 0).nonzero().squeeze(1)
            allowed[row, outside.unsqueeze(1), torch.tensor(item.open_tags).unsqueeze(0)] = True
        for start, end in item.unsure:
            allowed[row, start:end] |= (tags[row, start:end] == 0).unsqueeze(1)
            for position in range(max(start, 1), end):
                before = int(tags[row, position - 1])
                if before and not tags[row, position]:
                    allowed[row, position, TagScheme.inside_of(before)] = False  # the span just ended stays ended
    return allowed


def run_head(head: Head, states: torch.Tensor, f: dict, with_features: bool = False):
    """Emissions, or ``(emissions, features)`` with ``with_features`` (a single ``CharHead`` only)."""
    extra = {"with_features": True} if with_features else {}
    return head(states, f["token_mask"], f["char_token"], f["char_piece"], f["char_ids"], f["char_class"], **extra)


def batches_of(items: Sequence[Item], batch_chars: int, shuffle: bool, rng: random.Random) -> list[list[int]]:
    batches = length_sorted_batches([len(i.char_ids) for i in items], batch_chars)
    if shuffle:
        rng.shuffle(batches)
    return batches


def item_emissions(head: Head, items: Sequence[Item], batch_chars: int = 4096) -> Iterator[tuple[int, np.ndarray]]:
    """``(index, emissions [chars, tags])`` of every item, in length-sorted batches, head in eval mode."""
    head.eval()
    batches = batches_of(items, batch_chars, shuffle=False, rng=random.Random(0))
    with torch.inference_mode():
        # A teacher's pass over a whole corpus takes minutes; a dev set's pass needs no bar.
        for batch in tqdm(batches, desc="head emissions", disable=len(items) < 10_000):
            states, f = collate([items[i] for i in batch])
            emissions = run_head(head, states, f).numpy()
            for row, i in enumerate(batch):
                yield i, emissions[row, : len(items[i].char_ids)]


def predict_spans(head: Head, crf: CRF, scheme: TagScheme, items: Sequence[Item],
                  batch_chars: int = 4096) -> list[list[Span]]:
    params = crf.params()
    out: list[list[Span]] = [[] for _ in items]
    for i, emissions in item_emissions(head, items, batch_chars):
        out[i] = scheme.decode(params.viterbi(emissions)[0])
    return out


def gold_and_predicted(head: Head, crf: CRF, scheme: TagScheme, items: Sequence[Item],
                       types: Sequence[str] | None = None) -> tuple[list[list[Span]], list[list[Span]]]:
    """The items' gold spans and the model's, per item; with ``types``, only those (what the items'
    labellers labelled)."""
    predicted = predict_spans(head, crf, scheme, items)
    if types is None:
        return [list(i.spans) for i in items], predicted
    return ([[s for s in i.spans if s.label in types] for i in items],
            [[s for s in spans if s.label in types] for spans in predicted])


def evaluate_items(head: Head, crf: CRF, scheme: TagScheme, items: Sequence[Item],
                   types: Sequence[str] | None = None) -> dict:
    """Entity scores; with ``types``, counting only those (what the items' labellers labelled)."""
    return entity_scores(*gold_and_predicted(head, crf, scheme, items, types))


def batch_loss(head: Head, crf: CRF, states: torch.Tensor, f: dict, cfg: TrainConfig,
               segmenter: torch.nn.Module | None = None) -> torch.Tensor:
    """The CRF's loss, plus the distillation and segmentation losses the config and batch ask for."""
    if segmenter is not None and f["segments"] is not None:
        emissions, features = run_head(head, states, f, with_features=True)
        loss = cfg.segmentation * torch.nn.functional.cross_entropy(
            segmenter(features).flatten(0, 1), f["segments"].flatten(), ignore_index=NO_SEGMENT)
    else:
        emissions, loss = run_head(head, states, f), 0.0
    loss = loss + crf.nll(emissions, f["tags"], f["char_class"] > 0, f["allowed"])
    if cfg.distill and f["teacher"] is not None:
        teacher, taught = f["teacher"]
        loss = loss + cfg.distill * distillation_loss(emissions, teacher, (f["char_class"] > 0) & taught[:, None])
    return loss


def adversarial_states(states: torch.Tensor, epsilon: float) -> torch.Tensor:
    """FGM (Miyato et al. 2017, the seed's method) on the head's input: each sentence's states pushed
    ``epsilon`` along their loss gradient, after ``backward`` has filled ``states.grad``. The norm is
    the whole sentence's, as FGM's is the whole input's: normalising each token's vector instead moved
    every token by ``epsilon`` and cost the old types 4 points at 1.0 (benchmarks/results/new_type_budget/)."""
    push = states.grad
    norms = push.flatten(1).norm(dim=1).clamp(min=1e-12)
    return (states + epsilon * push / norms.view(-1, *([1] * (push.dim() - 1)))).detach()


def new_segmenter(head: Head) -> torch.nn.Linear:
    """A new auxiliary word-segmentation output, reading the states the head's emissions come from;
    trained with the head, never saved with it. Its random start is drawn aside, so a run with it
    starts and shuffles exactly as one without (an ablation then differs by the loss alone)."""
    if not isinstance(head, CharHead):
        raise ValueError("segmentation trains a single head, not an ensemble")
    with torch.random.fork_rng():
        return torch.nn.Linear(head.cfg.width, len(SEGMENT_TAGS))


def parameter_groups(head: Head, crf: CRF, cfg: TrainConfig) -> list[dict]:
    """Pretrained top layers move slowly, the new head faster, the CRF's few numbers fastest; the
    output layers at their own rate when one is set."""
    top_params = top_layer_parameters(head)
    out_params = [p for m in head.modules() if isinstance(m, CharHead) for p in m.out.parameters()] if cfg.out_lr else []
    apart = {id(p) for p in top_params + out_params}
    groups = [
        {"params": [p for p in head.parameters() if id(p) not in apart], "lr": cfg.head_lr,
         "weight_decay": cfg.weight_decay},
        {"params": list(crf.parameters()), "lr": cfg.crf_lr, "weight_decay": 0.0},
    ]
    if top_params:
        groups.append({"params": top_params, "lr": cfg.top_lr, "weight_decay": cfg.weight_decay})
    if out_params:
        groups.append({"params": out_params, "lr": cfg.out_lr, "weight_decay": cfg.weight_decay})
    return groups


def train(head: Head, crf: CRF, scheme: TagScheme, train_items: Sequence[Item], dev_items: Sequence[Item],
          cfg: TrainConfig, checkpoint_dir: Path | None = None,
          progress: Callable[[dict], None] | None = None, dev_types: Sequence[str] | None = None) -> dict:
    """Train in place; leaves the best (dev F1, counting ``dev_types`` if given) weights in
    ``head``/``crf`` and returns a summary."""
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    np_rng = np.random.default_rng(cfg.seed)
    segmenter = new_segmenter(head) if cfg.segmentation else None
    groups = parameter_groups(head, crf, cfg)
    if segmenter is not None:
        groups.append({"params": list(segmenter.parameters()), "lr": cfg.head_lr, "weight_decay": cfg.weight_decay})
    optimizer = torch.optim.AdamW(groups)
    steps_per_epoch = len(batches_of(train_items, cfg.batch_chars, False, rng))
    total = steps_per_epoch * cfg.epochs
    if cfg.max_steps:
        total = min(total, cfg.max_steps)
    warmup = max(1, int(total * cfg.warmup))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (total - s) / max(1, total - warmup))))
    state = {"epoch": 0, "step": 0, "best_f1": -1.0, "bad_epochs": 0, "history": []}
    best_weights = None
    if checkpoint_dir and (checkpoint_dir / "last.pt").exists():
        saved = torch.load(checkpoint_dir / "last.pt", weights_only=False)
        if (saved.get("segmenter") is None) != (segmenter is None):
            raise ValueError(f"{checkpoint_dir / 'last.pt'} was saved with another segmentation setting: "
                             "resume with the same one, or remove the checkpoint")
        head.load_state_dict(saved["head"]); crf.load_state_dict(saved["crf"])
        if segmenter is not None:
            segmenter.load_state_dict(saved["segmenter"])
        try:
            optimizer.load_state_dict(saved["optimizer"])
        except ValueError as exc:  # the head's parameters were laid out otherwise when it was saved
            raise ValueError(f"{checkpoint_dir / 'last.pt'} was saved by an earlier layout of the head's "
                             f"parameters ({exc}); remove the checkpoint to start again") from exc
        schedule.load_state_dict(saved["schedule"])
        state, best_weights = saved["state"], saved["best"]
        rng.setstate(saved["rng"])
        log.info("resumed from epoch %d step %d (best dev F1 %.4f)", state["epoch"], state["step"], state["best_f1"])
    while state["epoch"] < cfg.epochs and state["step"] < total and not _stop_early(state, cfg):
        head.train(); crf.train()
        epoch_batches = batches_of(train_items, cfg.batch_chars, shuffle=True, rng=rng)
        losses = []
        bar = tqdm(epoch_batches, desc=f"epoch {state['epoch'] + 1}/{cfg.epochs}", leave=False)
        for batch in bar:
            states, f = collate([train_items[i] for i in batch], cfg.char_dropout, np_rng, scheme.num_tags)
            if cfg.fgm:
                states = states.float().requires_grad_(True)
            loss = batch_loss(head, crf, states, f, cfg, segmenter)
            optimizer.zero_grad()
            loss.backward()
            if cfg.fgm:
                batch_loss(head, crf, adversarial_states(states, cfg.fgm), f, cfg, segmenter).backward()
            torch.nn.utils.clip_grad_norm_(head.parameters(), 5.0)
            optimizer.step(); schedule.step()
            state["step"] += 1
            losses.append(loss.item())
            if state["step"] % 50 == 0:
                bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
            if state["step"] >= total:
                break
        state["epoch"] += 1
        scores = evaluate_items(head, crf, scheme, dev_items, dev_types)["overall"] if dev_items else {"f1": 0.0}
        record = {"epoch": state["epoch"], "step": state["step"], "loss": round(float(np.mean(losses)), 4),
                  "dev_f1": scores["f1"]}
        state["history"].append(record)
        log.info("epoch %d step %d loss %.4f dev F1 %.4f", record["epoch"], record["step"], record["loss"],
                 record["dev_f1"])
        if progress:
            progress(record)
        if scores["f1"] > state["best_f1"]:
            state["best_f1"], state["bad_epochs"] = scores["f1"], 0
            best_weights = {"head": _copy(head.state_dict()), "crf": _copy(crf.state_dict())}
        else:
            state["bad_epochs"] += 1
        if checkpoint_dir:
            checkpoint_dir.mkdir(parents=True, exist_ok=True)
            tmp = checkpoint_dir / "last.pt.tmp"
            torch.save({"head": head.state_dict(), "crf": crf.state_dict(), "optimizer": optimizer.state_dict(),
                        "schedule": schedule.state_dict(), "state": state, "best": best_weights,
                        "rng": rng.getstate(), "config": asdict(cfg),
                        "segmenter": segmenter.state_dict() if segmenter is not None else None}, tmp)
            tmp.replace(checkpoint_dir / "last.pt")
    if best_weights is not None:
        head.load_state_dict(best_weights["head"]); crf.load_state_dict(best_weights["crf"])
    head.eval(); crf.eval()
    return {"best_dev_f1": state["best_f1"], "epochs": state["epoch"], "steps": state["step"],
            "history": state["history"]}


def _stop_early(state: dict, cfg: TrainConfig) -> bool:
    return state["bad_epochs"] >= cfg.patience and state["step"] >= cfg.min_steps


def _copy(state_dict: dict) -> dict:
    return {k: v.detach().clone() for k, v in state_dict.items()}


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def split_dev(n: int, dev_size: int, seed: int) -> tuple[list[int], list[int]]:
    order = list(range(n))
    random.Random(seed).shuffle(order)
    dev_size = min(dev_size, max(1, int(math.ceil(n * 0.1))) if n < dev_size * 10 else dev_size)
    return sorted(order[dev_size:]), sorted(order[:dev_size])
