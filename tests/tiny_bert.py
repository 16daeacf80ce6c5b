"""A tiny BERT checkpoint made on the spot: proves that any local Hugging Face checkpoint can be
the base encoder, and keeps pipeline tests fast."""
from __future__ import annotations

from pathlib import Path

from raner_backend.model.data import Example
from raner_backend.model.tags import Span

SENTENCES = [
    ("马云在杭州创办了阿里巴巴。", [(0, 2, "PER"), (3, 5, "LOC"), (8, 12, "ORG")]),
    ("李明昨天去了北京大学。", [(0, 2, "PER"), (6, 10, "ORG")]),
    ("华为在深圳发布Mate60手机。", [(0, 2, "ORG"), (3, 5, "LOC")]),
    ("王芳和张伟在上海见面。", [(0, 2, "PER"), (3, 5, "PER"), (6, 8, "LOC")]),
    ("今天天气很好。", []),
    ("腾讯总部位于深圳。", [(0, 2, "ORG"), (6, 8, "LOC")]),
]


def tiny_examples() -> list[Example]:
    return [Example(text, tuple(Span(*s) for s in spans)) for text, spans in SENTENCES]


def write_tagged(path: Path, examples: list[Example]) -> Path:
    """The examples as a BMES char-TAG file, the format of the MSRA data."""
    lines = []
    for ex in examples:
        tags = ["O"] * len(ex.text)
        for start, end, label in ex.spans:
            if end - start == 1:
                tags[start] = f"S-{label}"
            else:
                tags[start] = f"B-{label}"
                tags[start + 1 : end - 1] = [f"M-{label}"] * (end - start - 2)
                tags[end - 1] = f"E-{label}"
        lines += [f"{c} {t}" for c, t in zip(ex.text, tags)] + [""]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def make_tiny_bert(folder: Path, texts: list[str] | None = None) -> Path:
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    texts = texts or [t for t, _ in SENTENCES]
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = sorted({c for t in texts for c in t if not c.isspace()} | set("abcdefghijklmnopqrstuvwxyz0123456789"))
    vocab = {tok: i for i, tok in enumerate(specials + chars)}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(handle_chinese_chars=True, lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]", model_max_length=128)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config, add_pooling_layer=False).save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder
