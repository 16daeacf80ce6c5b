"""The tagging network: a frozen pretrained encoder, a character-level head, and a CRF.

The encoder gives contextual states for its own pieces; each character takes the states of its
piece (a learned mix of several layers), plus a character embedding, a character-class
embedding and its position inside the piece. A small stack of residual dilated convolutions
sharpens boundaries between neighbouring characters, and a linear layer gives per-character
emissions for the CRF. Keeping the encoder frozen lets training reuse cached encoder states and
keeps each model version small (only the head and the CRF change).

The head may also carry its own trained copy of the encoder's top layers (``top_layers``): they
start as the base encoder's and re-compute the last chosen layer from a cached lower one, so the
encoder's upper part adapts to the task while training still reads cached states and the shared
base encoder stays untouched.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from .alignment import CHAR_CLASSES, PIECE_POSITIONS


@dataclass
class HeadConfig:
    num_tags: int
    char_vocab_size: int
    encoder_hidden: int
    layers: tuple[int, ...] = (6, 8, 10, 12)
    width: int = 256
    char_dim: int = 128
    dilations: tuple[int, ...] = (1, 2, 4, 1)
    dropout: float = 0.2
    lstm_hidden: int = 0  # > 0: a BiLSTM of this size per direction after the convolutions
    layer_mix: str = "softmax"  # "softmax": a learned weighted sum of the layers; "concat": all of them
    top_layers: int = 0  # > 0: the head's own trained copy of the encoder's last layers (see module doc)
    attention_heads: int = 12  # shape of those layers, from the base encoder's config
    intermediate_size: int = 1536
    layer_norm_eps: float = 1e-12

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def base_layers(self) -> tuple[int, ...]:
        """The layers the head reads from the base encoder: not the last when the head re-computes it."""
        return self.layers[:-1] if self.top_layers else self.layers

    @classmethod
    def from_dict(cls, d: dict) -> "HeadConfig":
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        d["layers"] = tuple(d["layers"])
        d["dilations"] = tuple(d["dilations"])
        return cls(**d)


class EncoderStates(nn.Module):
    """The chosen hidden layers of a (frozen) BERT-style encoder, stacked: [batch, tokens, layers, hidden].

    The encoder's layers are run here one by one and stop at the highest chosen layer: layers a
    head re-computes itself (``top_layers``) are never computed twice. Layer 0 is the embeddings.
    """

    def __init__(self, encoder: nn.Module, layers: tuple[int, ...]):
        super().__init__()
        self.encoder = encoder
        self.layers = layers

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder.embeddings(input_ids=input_ids)
        mask = encoder_attention_mask(self.encoder, hidden, attention_mask)
        chosen = {0: hidden} if 0 in self.layers else {}
        for index, layer in enumerate(self.encoder.encoder.layer[: max(self.layers)], start=1):
            out = layer(hidden, mask)
            hidden = out[0] if isinstance(out, tuple) else out  # transformers 4.x returned a tuple
            if index in self.layers:
                chosen[index] = hidden
        return torch.stack([chosen[i] for i in self.layers], dim=2)


def encoder_attention_mask(encoder: nn.Module, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The mask in the form the encoder's attention implementation expects (eager, SDPA), from
    transformers' public mask builder (the model's own helper is private and changed its signature
    within 5.x). Its eager form is also the graph ONNX Runtime's optimizer fuses into Attention
    nodes; a hand-made additive mask left the exported encoder unfused."""
    try:
        from transformers.masking_utils import create_bidirectional_mask
    except ImportError:  # transformers before 4.53
        return encoder.get_extended_attention_mask(attention_mask, attention_mask.shape)
    return create_bidirectional_mask(config=encoder.config, inputs_embeds=hidden, attention_mask=attention_mask)


def attention_mask_for(token_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """BERT's additive key mask ``[batch, 1, 1, tokens]`` for ``EncoderLayer``; written this way
    because ONNX Runtime's attention fusion reads this form back as a key mask."""
    return (1.0 - token_mask[:, None, None, :].to(dtype)) * -10000.0


class EncoderLayer(nn.Module):
    """A post-norm transformer layer in BERT's shape. Its attention is written as BERT's eager
    attention (separate query, key and value products, an additive mask) because that is the
    graph ONNX Runtime's transformer optimizer fuses into one Attention node per layer
    (``export.fuse_transformer``); PyTorch runs the same products through SDPA."""

    def __init__(self, cfg: HeadConfig, dropout: float = 0.1):
        super().__init__()
        width = cfg.encoder_hidden
        self.heads, self.head_size = cfg.attention_heads, width // cfg.attention_heads
        self.query, self.key, self.value = (nn.Linear(width, width) for _ in range(3))
        self.out_proj = nn.Linear(width, width)
        self.norm1 = nn.LayerNorm(width, eps=cfg.layer_norm_eps)
        self.linear1 = nn.Linear(width, cfg.intermediate_size)
        self.linear2 = nn.Linear(cfg.intermediate_size, width)
        self.norm2 = nn.LayerNorm(width, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.dropout(self.out_proj(self._attention(x, additive_mask))))
        return self.norm2(x + self.dropout(self.linear2(self.dropout(F.gelu(self.linear1(x))))))

    def _attention(self, x: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        batch = x.size(0)
        q, k, v = (p(x).view(batch, -1, self.heads, self.head_size).transpose(1, 2)
                   for p in (self.query, self.key, self.value))
        if torch.onnx.is_in_onnx_export():
            scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_size) + additive_mask
            context = torch.matmul(torch.softmax(scores, dim=-1), v)
        else:
            dropout = self.dropout.p if self.training else 0.0
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=additive_mask, dropout_p=dropout)
        return context.transpose(1, 2).reshape(batch, -1, self.heads * self.head_size)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Models saved before this layer existed hold nn.TransformerEncoderLayer's names.
        packed = prefix + "self_attn.in_proj_"
        for kind in ("weight", "bias"):
            if packed + kind in state_dict:
                for name, part in zip(("query", "key", "value"), state_dict.pop(packed + kind).chunk(3)):
                    state_dict[f"{prefix}{name}.{kind}"] = part
            if f"{prefix}self_attn.out_proj.{kind}" in state_dict:
                state_dict[f"{prefix}out_proj.{kind}"] = state_dict.pop(f"{prefix}self_attn.out_proj.{kind}")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class TopLayers(nn.Module):
    """Transformer layers (BERT's shape) that re-compute the last of the chosen layers from an
    earlier one: input index ``source`` of the stacked states. Their output replaces the last
    layer when the states hold it (caches made before ``base_layers``), else is appended."""

    def __init__(self, cfg: HeadConfig):
        super().__init__()
        self.source = cfg.layers.index(cfg.layers[-1] - cfg.top_layers)
        self.kept = len(cfg.layers) - 1
        self.last = cfg.layers[-1]
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.top_layers))

    def forward(self, states: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
        x = states[:, :, self.source]
        additive_mask = attention_mask_for(token_mask, x.dtype)
        for layer in self.layers:
            x = layer(x, additive_mask)
        return torch.cat([states[:, :, : self.kept], x.unsqueeze(2)], dim=2)

    def copy_from_bert(self, encoder: nn.Module) -> None:
        """Start from the base encoder's own weights for these layers (a BERT-style encoder)."""
        bert_layers = encoder.encoder.layer[self.last - len(self.layers) : self.last]
        with torch.no_grad():
            for ours, theirs in zip(self.layers, bert_layers):
                attention = theirs.attention
                for target, source in ((ours.query, attention.self.query), (ours.key, attention.self.key),
                                       (ours.value, attention.self.value),
                                       (ours.out_proj, attention.output.dense),
                                       (ours.norm1, attention.output.LayerNorm),
                                       (ours.linear1, theirs.intermediate.dense),
                                       (ours.linear2, theirs.output.dense),
                                       (ours.norm2, theirs.output.LayerNorm)):
                    target.weight.copy_(source.weight)
                    target.bias.copy_(source.bias)


class ResidualConv(nn.Module):
    def __init__(self, width: int, dilation: int, dropout: float):
        super().__init__()
        self.conv = nn.Conv1d(width, 2 * width, kernel_size=3, padding=dilation, dilation=dilation)
        self.norm = nn.LayerNorm(width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        value, gate = self.conv((x * mask).transpose(1, 2)).transpose(1, 2).chunk(2, dim=-1)
        return self.norm(x + self.dropout(value * torch.sigmoid(gate)))


class PaddingSafeBiLSTM(nn.Module):
    """A BiLSTM whose backward direction reads each row reversed within its own length, so a
    character's state never depends on how much padding its batch has (and it exports to ONNX)."""

    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.forward_rnn = nn.LSTM(width, hidden, batch_first=True)
        self.backward_rnn = nn.LSTM(width, hidden, batch_first=True)
        self.proj = nn.Linear(2 * hidden, width)
        self.norm = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        lengths = mask.squeeze(-1).sum(dim=1, keepdim=True).long()
        steps = torch.arange(x.size(1), device=x.device).unsqueeze(0)
        reverse = torch.where(steps < lengths, lengths - 1 - steps, steps).unsqueeze(-1)
        ahead, _ = self.forward_rnn(x)
        behind, _ = self.backward_rnn(torch.gather(x, 1, reverse.expand(-1, -1, x.size(2))))
        behind = torch.gather(behind, 1, reverse.expand(-1, -1, behind.size(2)))
        return self.norm(x + self.proj(torch.cat([ahead, behind], dim=-1)))


class CharHead(nn.Module):
    """Encoder piece states → per-character emissions."""

    def __init__(self, cfg: HeadConfig):
        super().__init__()
        self.cfg = cfg
        n_layers = len(cfg.layers)
        if cfg.layer_mix not in ("softmax", "concat"):
            raise ValueError(f"layer_mix {cfg.layer_mix!r} is not softmax or concat")
        self.layer_weights = nn.Parameter(torch.zeros(n_layers))
        mixed_width = cfg.encoder_hidden * (n_layers if cfg.layer_mix == "concat" else 1)
        self.state_proj = nn.Linear(mixed_width, cfg.width)
        self.char_embed = nn.Embedding(cfg.char_vocab_size, cfg.char_dim, padding_idx=0)
        self.class_embed = nn.Embedding(len(CHAR_CLASSES), 16, padding_idx=0)
        self.piece_embed = nn.Embedding(PIECE_POSITIONS, 16)
        self.input_proj = nn.Linear(cfg.width + cfg.char_dim + 32, cfg.width)
        self.input_norm = nn.LayerNorm(cfg.width)
        self.dropout = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(ResidualConv(cfg.width, d, cfg.dropout) for d in cfg.dilations)
        self.lstm = PaddingSafeBiLSTM(cfg.width, cfg.lstm_hidden) if cfg.lstm_hidden else None
        self.out = nn.Linear(cfg.width, cfg.num_tags)
        self.top = TopLayers(cfg) if cfg.top_layers else None

    def char_states(self, token_states: torch.Tensor, char_token: torch.Tensor) -> torch.Tensor:
        """Mix layers and gather each character's piece state: [batch, chars, width]."""
        states = token_states.float()
        if self.cfg.layer_mix == "concat":
            mixed = states.flatten(2)
        else:
            weights = torch.softmax(self.layer_weights, dim=0)
            mixed = (states * weights[None, None, :, None]).sum(dim=2)
        index = char_token.unsqueeze(-1).expand(-1, -1, mixed.size(-1))
        return self.state_proj(torch.gather(mixed, 1, index))

    def forward(self, token_states: torch.Tensor, token_mask: torch.Tensor, char_token: torch.Tensor,
                char_piece: torch.Tensor, char_ids: torch.Tensor, char_class: torch.Tensor,
                with_features: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Emissions ``[batch, chars, tags]``; with ``with_features``, also the states they are read
        from ``[batch, chars, width]`` (for a training-only auxiliary output)."""
        if self.top is not None:
            token_states = self.top(token_states.float(), token_mask)
        mask = (char_class > 0).unsqueeze(-1).float()
        x = torch.cat([self.char_states(token_states, char_token), self.char_embed(char_ids),
                       self.class_embed(char_class), self.piece_embed(char_piece)], dim=-1)
        x = self.dropout(self.input_norm(self.input_proj(x)))
        for block in self.blocks:
            x = block(x, mask)
        if self.lstm is not None:
            x = self.lstm(x * mask, mask)
        emissions = self.out(x) * mask
        return (emissions, x) if with_features else emissions


@dataclass(frozen=True)
class EnsembleConfig:
    """The shapes of an ensemble's member heads; they read the same encoder layers."""

    members: tuple[HeadConfig, ...]

    @property
    def layers(self) -> tuple[int, ...]:
        return self.members[0].layers

    @property
    def top_layers(self) -> int:
        return max(m.top_layers for m in self.members)

    @property
    def base_layers(self) -> tuple[int, ...]:
        """What every member needs from the base encoder."""
        return max((m.base_layers for m in self.members), key=len)

    def to_dict(self) -> dict:
        return {"members": [m.to_dict() for m in self.members]}


class HeadEnsemble(nn.Module):
    """Several heads over the same encoder states, their emissions averaged. With one CRF whose
    scores are the members' averaged, Viterbi decodes the product of the members' distributions;
    heads trained apart err on different names, so the ensemble errs less (msra_test: see README).
    The shared base encoder runs once, so a member costs only its own head."""

    def __init__(self, members: list[CharHead]):
        super().__init__()
        first = members[0].cfg
        for m in members[1:]:
            if (m.cfg.layers, m.cfg.num_tags, m.cfg.char_vocab_size) != (first.layers, first.num_tags,
                                                                         first.char_vocab_size):
                raise ValueError("ensemble members must read the same encoder layers with the same tags and characters")
        self.members = nn.ModuleList(members)
        self.cfg = EnsembleConfig(tuple(m.cfg for m in members))

    def forward(self, token_states: torch.Tensor, token_mask: torch.Tensor, char_token: torch.Tensor,
                char_piece: torch.Tensor, char_ids: torch.Tensor, char_class: torch.Tensor) -> torch.Tensor:
        emissions = [m(token_states, token_mask, char_token, char_piece, char_ids, char_class) for m in self.members]
        return torch.stack(emissions).mean(dim=0)


Head = CharHead | HeadEnsemble


def head_from_config(config: dict) -> Head:
    if "members" in config:
        return HeadEnsemble([CharHead(HeadConfig.from_dict(m)) for m in config["members"]])
    return CharHead(HeadConfig.from_dict(config))


def top_layer_parameters(head: nn.Module) -> list[nn.Parameter]:
    """The parameters of every copy of the encoder's top layers inside ``head``."""
    return [p for m in head.modules() if isinstance(m, TopLayers) for p in m.parameters()]
