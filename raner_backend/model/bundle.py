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
from .network import CharHead, HeadConfig
from .tags import TagScheme

WEIGHTS = "head.safetensors"
CONFIG = "head_config.json"


@dataclass
class HeadBundle:
    scheme: TagScheme
    vocab: CharVocab
    head: CharHead
    crf: CRF
    base: dict  # {"name": ..., "sha256": ...}

    @classmethod
    def new(cls, scheme: TagScheme, vocab: CharVocab, encoder_hidden: int, base: dict, **head_kwargs) -> "HeadBundle":
        cfg = HeadConfig(num_tags=scheme.num_tags, char_vocab_size=len(vocab), encoder_hidden=encoder_hidden,
                         **head_kwargs)
        return cls(scheme, vocab, CharHead(cfg), CRF(scheme), base)

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
        head = CharHead(HeadConfig.from_dict(config["head"]))
        crf = CRF(scheme)
        tensors = load_file(str(folder / WEIGHTS))
        head.load_state_dict({k[5:]: v.float() for k, v in tensors.items() if k.startswith("head.")})
        crf.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("crf.")})
        head.eval(); crf.eval()
        return cls(scheme, CharVocab(config["chars"]), head, crf, config["base"])
