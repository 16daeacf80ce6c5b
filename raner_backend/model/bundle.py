"""A model version on disk: the head and CRF weights, the character vocabulary, the tag scheme and
the name of the base encoder they were trained on. The base encoder itself lives in the cache
(it is shared by every version), so a version folder stays a few MB. The head's weights are stored
in fp16 (half the size; msra_test F1, precision and recall unchanged to four decimals) and computed
in fp32; the CRF's stay fp32."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from safetensors.torch import load_file, save_file

from .chars import CharVocab
from .crf import CRF
from .network import CharHead, Head, HeadConfig, HeadEnsemble, head_from_config
from .tags import TagScheme

WEIGHTS = "head.safetensors"
CONFIG = "head_config.json"


@dataclass
class HeadBundle:
    scheme: TagScheme
    vocab: CharVocab
    head: Head
    crf: CRF
    base: dict  # {"name": ..., "sha256": ...}

    @classmethod
    def new(cls, scheme: TagScheme, vocab: CharVocab, encoder_hidden: int, base: dict, **head_kwargs) -> "HeadBundle":
        cfg = HeadConfig(num_tags=scheme.num_tags, char_vocab_size=len(vocab), encoder_hidden=encoder_hidden,
                         **head_kwargs)
        return cls(scheme, vocab, CharHead(cfg), CRF(scheme), base)

    @classmethod
    def ensemble(cls, members: list["HeadBundle"]) -> "HeadBundle":
        """One model from several trained on the same base, tags and characters: their heads'
        emissions averaged, and their CRF scores averaged to match."""
        first = members[0]
        for m in members[1:]:
            if (m.scheme.entity_types, m.vocab.chars, m.base) != (first.scheme.entity_types, first.vocab.chars,
                                                                   first.base):
                raise ValueError("ensemble members must share the base encoder, entity types and characters")
        heads = [m.head for m in members]
        if not all(isinstance(h, CharHead) for h in heads):
            raise ValueError("ensemble members must be single heads")
        crf = CRF(first.scheme)
        crf.load_state_dict({k: sum(m.crf.state_dict()[k] for m in members) / len(members)
                             for k in crf.state_dict()})
        return cls(first.scheme, first.vocab, HeadEnsemble(heads), crf.eval(), first.base)

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {f"head.{k}": (v.half() if v.is_floating_point() else v).contiguous()
                   for k, v in self.head.state_dict().items()}
        tensors.update({f"crf.{k}": v.contiguous() for k, v in self.crf.state_dict().items()})
        save_file(tensors, str(folder / WEIGHTS))
        config = {"entity_types": list(self.scheme.entity_types), "head": self.head.cfg.to_dict(),
                  "chars": self.vocab.chars, "base": self.base}
        (folder / CONFIG).write_text(json.dumps(config, ensure_ascii=False, indent=1))

    @classmethod
    def load(cls, folder: Path) -> "HeadBundle":
        config = json.loads((folder / CONFIG).read_text())
        scheme = TagScheme(tuple(config["entity_types"]))
        head = head_from_config(config["head"])
        crf = CRF(scheme)
        tensors = load_file(str(folder / WEIGHTS))
        head.load_state_dict({k[5:]: v.float() for k, v in tensors.items() if k.startswith("head.")})
        crf.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("crf.")})
        head.eval(); crf.eval()
        return cls(scheme, CharVocab(config["chars"]), head, crf, config["base"])
