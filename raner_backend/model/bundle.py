"""A model version on disk: the head and CRF weights, the character vocabulary, the tag scheme and
the name of the base encoder they were trained on. The base encoder itself lives in the cache
(it is shared by every version), so a version folder stays a few MB. The head's weights are stored
in fp16 (half the size; msra_test F1, precision and recall unchanged to four decimals) and computed
in fp32; the CRF's stay fp32. A model packaged for shipping (``compact``) stores its weight matrices
in int8 with one scale per output row, half again; versions trained from annotations stay fp16, so
small learning steps are never rounded away."""
from __future__ import annotations

import copy
import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from safetensors.torch import load_file, save_file

from .chars import CharVocab
from .crf import CRF
from .network import CharHead, EnsembleConfig, Head, HeadConfig, HeadEnsemble, head_from_config
from .tags import TagScheme

WEIGHTS = "head.safetensors"
CONFIG = "head_config.json"
SCALE = ".int8_scale"  # key suffix of the per-row scales of a weight stored in int8
MIN_INT8_SIZE = 4096  # smaller tensors (biases, norms) are not worth it
YOUNG_TYPE_MENTIONS = 200  # a type grown from fewer annotated mentions is young (see active/uncertainty.py)


@dataclass
class HeadBundle:
    scheme: TagScheme
    vocab: CharVocab
    head: Head
    crf: CRF
    base: dict  # {"name": ..., "sha256": ...}
    # Each type this model grew (not learned from a base corpus): the annotated mentions it learned from.
    learned_from: dict[str, int] = field(default_factory=dict)

    def young_types(self) -> tuple[str, ...]:
        """Types grown from fewer than ``YOUNG_TYPE_MENTIONS`` annotated mentions."""
        return tuple(t for t in self.scheme.entity_types if self.learned_from.get(t, YOUNG_TYPE_MENTIONS)
                     < YOUNG_TYPE_MENTIONS)

    @classmethod
    def new(cls, scheme: TagScheme, vocab: CharVocab, encoder_hidden: int, base: dict, **head_kwargs) -> "HeadBundle":
        cfg = HeadConfig(num_tags=scheme.num_tags, char_vocab_size=len(vocab), encoder_hidden=encoder_hidden,
                         **head_kwargs)
        return cls(scheme, vocab, CharHead(cfg), CRF(scheme), base)

    @classmethod
    def ensemble(cls, members: list["HeadBundle"]) -> "HeadBundle":
        """One model from several trained on the same base, tags and characters: their heads'
        emissions averaged, and their CRF scores averaged to match."""
        _require_alike(members, _basis, "ensemble members must share the base encoder, entity types and characters")
        first = members[0]
        heads_of = [single_heads(m.head) for m in members]
        # A combined member brings its own heads; its CRF already averages theirs, so it weighs
        # as many heads as it holds and every head ends up counting once.
        crf = CRF(first.scheme)
        crf.load_state_dict({k: sum(m.crf.state_dict()[k] * len(h) for m, h in zip(members, heads_of))
                             / sum(map(len, heads_of)) for k in crf.state_dict()})
        return cls(first.scheme, first.vocab, HeadEnsemble([h for hs in heads_of for h in hs]), crf.eval(),
                   first.base)

    @classmethod
    def average(cls, members: list["HeadBundle"]) -> "HeadBundle":
        """One model of the same shape whose every weight (head and CRF) is the members' mean: a
        weight average ("model soup") of models of one lineage, e.g. a student and its continuation.
        Unlike ``ensemble`` it costs no more to serve than one member; it only helps where the
        members were trained from a common start, so that their weights stay alike."""
        _require_alike(members, lambda m: (*_basis(m), m.head.cfg.to_dict()),
                       "averaged models must share the base encoder, entity types, characters and head shape")
        averaged = copy.deepcopy(members[0])
        for mine, theirs in ((averaged.head, [m.head for m in members]), (averaged.crf, [m.crf for m in members])):
            states = [t.state_dict() for t in theirs]
            mine.load_state_dict({k: sum(s[k] for s in states) / len(states) if v.is_floating_point() else v
                                  for k, v in states[0].items()})
        return averaged

    def with_entity_types(self, entity_types: Sequence[str]) -> "HeadBundle":
        """A copy that can also tag the ``entity_types`` it does not know yet, appended after the
        known ones (every known tag keeps its index and weights). A new type starts as the average
        of the known types, held ``NEW_TYPE_MARGIN`` below them, so it is not predicted until
        training has learned it, and it starts from what names in general look like."""
        new = [t for t in dict.fromkeys(entity_types) if t not in self.scheme.entity_types]
        grown = copy.deepcopy(self)
        if not new:
            return grown
        old, scheme = self.scheme, TagScheme(self.scheme.entity_types + tuple(new))
        for head in single_heads(grown.head):
            head.out = _grown_linear(head.out, old, scheme)
            head.cfg = dataclasses.replace(head.cfg, num_tags=scheme.num_tags)
        if isinstance(grown.head, HeadEnsemble):
            grown.head.cfg = EnsembleConfig(tuple(h.cfg for h in grown.head.members))
        grown.scheme, grown.crf = scheme, _grown_crf(self.crf, old, scheme)
        grown.learned_from.update({t: 0 for t in new})
        return grown

    def save(self, folder: Path, compact: bool = False) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {}
        for k, v in self.head.state_dict().items():
            if compact and v.is_floating_point() and v.dim() >= 2 and v.numel() >= MIN_INT8_SIZE:
                tensors[f"head.{k}"], tensors[f"head.{k}{SCALE}"] = quantize_rows(v)
            else:
                tensors[f"head.{k}"] = (v.half() if v.is_floating_point() else v).contiguous()
        tensors.update({f"crf.{k}": v.contiguous() for k, v in self.crf.state_dict().items()})
        save_file(tensors, str(folder / WEIGHTS))
        config = {"entity_types": list(self.scheme.entity_types), "head": self.head.cfg.to_dict(),
                  "chars": self.vocab.chars, "base": self.base, "learned_from": self.learned_from}
        (folder / CONFIG).write_text(json.dumps(config, ensure_ascii=False, indent=1))

    @classmethod
    def load(cls, folder: Path) -> "HeadBundle":
        config = json.loads((folder / CONFIG).read_text())
        scheme = TagScheme(tuple(config["entity_types"]))
        head = head_from_config(config["head"])
        crf = CRF(scheme)
        tensors = load_file(str(folder / WEIGHTS))
        head.load_state_dict({k[5:]: dequantize_rows(v, tensors[k + SCALE]) if k + SCALE in tensors else v.float()
                              for k, v in tensors.items() if k.startswith("head.") and not k.endswith(SCALE)})
        crf.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("crf.")})
        head.eval(); crf.eval()
        return cls(scheme, CharVocab(config["chars"]), head, crf, config["base"], config.get("learned_from", {}))


def _basis(bundle: HeadBundle) -> tuple:
    """What models must share to be combined: tags, characters and base encoder."""
    return bundle.scheme.entity_types, bundle.vocab.chars, bundle.base


def _require_alike(members: Sequence[HeadBundle], key, message: str) -> None:
    if any(key(m) != key(members[0]) for m in members[1:]):
        raise ValueError(message)


def single_heads(head: Head) -> list[CharHead]:
    return list(head.members) if isinstance(head, HeadEnsemble) else [head]


NEW_TYPE_MARGIN = 3.0


def _stand_ins(tag: int, old: TagScheme) -> list[int]:
    """The known tags whose weights a tag starts from: itself if known, else that role (B or I)
    of every known type."""
    if tag < old.num_tags:
        return [tag]
    role = (tag - 1) % 2
    return [old.begin(kind) + role for kind in old.entity_types]


def _grown_linear(out: torch.nn.Linear, old: TagScheme, scheme: TagScheme) -> torch.nn.Linear:
    grown = torch.nn.Linear(out.in_features, scheme.num_tags)
    with torch.no_grad():
        for tag in range(scheme.num_tags):
            rows = _stand_ins(tag, old)
            grown.weight[tag] = out.weight[rows].mean(dim=0)
            grown.bias[tag] = out.bias[rows].mean() - (NEW_TYPE_MARGIN if tag >= old.num_tags else 0.0)
    return grown


def _grown_crf(crf: CRF, old: TagScheme, scheme: TagScheme) -> CRF:
    """Transitions into and out of a new type's tags are the known types' averaged, between tags
    of one type from within a known type, between different types from across known types."""
    grown = CRF(scheme)
    n = scheme.num_tags
    with torch.no_grad():
        for i in range(n):
            grown.start[i] = crf.start[_stand_ins(i, old)].mean()
            grown.end[i] = crf.end[_stand_ins(i, old)].mean()
            for j in range(n):
                one_type = scheme.type_index(i) is not None and scheme.type_index(i) == scheme.type_index(j)
                pairs = [(a, b) for a in _stand_ins(i, old) for b in _stand_ins(j, old)
                         if (old.type_index(a) is not None and old.type_index(a) == old.type_index(b)) == one_type]
                grown.transitions[i, j] = torch.stack([crf.transitions[a, b] for a, b in pairs]).mean()
    return grown.eval()


def quantize_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 with one fp32 scale per output row (first dimension)."""
    rows = weight.detach().float().reshape(weight.shape[0], -1)
    scale = rows.abs().amax(dim=1).clamp(min=1e-12) / 127
    q = torch.round(rows / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q.reshape(weight.shape).contiguous(), scale.contiguous()


def dequantize_rows(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return (q.float().reshape(q.shape[0], math.prod(q.shape[1:])) * scale[:, None]).reshape(q.shape)
