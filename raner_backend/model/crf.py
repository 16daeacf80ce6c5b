"""A linear-chain CRF over BIO tags with forbidden transitions.

Training uses the torch module (negative log-likelihood by the forward algorithm). Serving uses
the numpy functions on the emissions that ONNX Runtime returns: Viterbi decoding, and
forward–backward marginals per character (for uncertainty). Forbidden moves (``I-ORG`` after
``B-PER``, ``I-`` first) get a score of ``-1e4``, fixed, so no path through them can win.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .tags import TagScheme

FORBIDDEN = -1e4


class CRF(nn.Module):
    def __init__(self, scheme: TagScheme):
        super().__init__()
        n = scheme.num_tags
        self.transitions = nn.Parameter(torch.zeros(n, n))
        self.start = nn.Parameter(torch.zeros(n))
        self.end = nn.Parameter(torch.zeros(n))
        self.register_buffer("transition_penalty",
                             torch.where(torch.from_numpy(scheme.allowed_transitions()), 0.0, FORBIDDEN))
        self.register_buffer("start_penalty",
                             torch.where(torch.from_numpy(scheme.allowed_starts()), 0.0, FORBIDDEN))

    def scores(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Transition, start and end scores with the forbidden moves applied."""
        return self.transitions + self.transition_penalty, self.start + self.start_penalty, self.end

    def nll(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor,
            allowed: torch.Tensor | None = None) -> torch.Tensor:
        """Mean negative log-likelihood; ``mask`` [batch, length] is a prefix mask (no empty rows).

        With ``allowed`` [batch, length, tags] (bool) the labels are partial: the likelihood is that
        of every path through the allowed tags, so a sentence says nothing of the tags it cannot
        speak for (replayed base data and the entity types it never labelled). One-hot ``allowed``
        equals ``tags``."""
        trans, start, end = self.scores()
        mask = mask.bool()
        if allowed is not None:
            gold = self._log_partition(emissions + torch.where(allowed, 0.0, FORBIDDEN), mask, trans, start, end)
            return (self._log_partition(emissions, mask, trans, start, end) - gold).mean()
        batch, length, _ = emissions.shape
        rows = torch.arange(batch)
        gold = start[tags[:, 0]] + emissions[rows, 0, tags[:, 0]]
        for t in range(1, length):
            step = trans[tags[:, t - 1], tags[:, t]] + emissions[rows, t, tags[:, t]]
            gold = gold + step * mask[:, t]
        last = tags[rows, mask.sum(1) - 1]
        gold = gold + end[last]
        return (self._log_partition(emissions, mask, trans, start, end) - gold).mean()

    @staticmethod
    def _log_partition(emissions: torch.Tensor, mask: torch.Tensor, trans: torch.Tensor, start: torch.Tensor,
                       end: torch.Tensor) -> torch.Tensor:
        alpha = start + emissions[:, 0]
        for t in range(1, emissions.shape[1]):
            nxt = torch.logsumexp(alpha.unsqueeze(2) + trans.unsqueeze(0), dim=1) + emissions[:, t]
            alpha = torch.where(mask[:, t : t + 1], nxt, alpha)
        return torch.logsumexp(alpha + end, dim=1)

    def params(self) -> "CrfParams":
        trans, start, end = (x.detach().cpu().numpy().astype(np.float32) for x in self.scores())
        return CrfParams(trans, start, end)


@dataclass(frozen=True)
class CrfParams:
    """CRF scores as numpy arrays (forbidden moves included), for decoding beside ONNX Runtime."""

    transitions: np.ndarray  # [tags, tags], from → to
    start: np.ndarray  # [tags]
    end: np.ndarray  # [tags]

    def viterbi(self, emissions: np.ndarray) -> tuple[np.ndarray, float]:
        """Best tag path for one sequence [length, tags] and its unnormalised score."""
        length = emissions.shape[0]
        if length == 0:
            return np.zeros(0, dtype=np.int64), 0.0
        score = self.start + emissions[0]
        back = np.zeros((length, emissions.shape[1]), dtype=np.int64)
        for t in range(1, length):
            total = score[:, None] + self.transitions
            back[t] = total.argmax(axis=0)
            score = total.max(axis=0) + emissions[t]
        score = score + self.end
        path = np.zeros(length, dtype=np.int64)
        path[-1] = int(score.argmax())
        for t in range(length - 1, 0, -1):
            path[t - 1] = back[t, path[t]]
        return path, float(score.max())

    def forward_backward(self, emissions: np.ndarray) -> tuple[np.ndarray, float]:
        """Per-position tag marginals [length, tags] and the log partition function."""
        length, n = emissions.shape
        if length == 0:
            return np.zeros((0, n), dtype=np.float32), 0.0
        emissions = emissions.astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
            scaled = self._scaled_forward_backward(emissions)
        return scaled if scaled is not None else self._log_forward_backward(emissions)

    def _scaled_forward_backward(self, emissions: np.ndarray) -> tuple[np.ndarray, float] | None:
        """In probability space, each step rescaled to sum to 1: half the time of log space (one task
        waits for it), or None where a row's scores differ by so much that every allowed tag of a step
        underflows."""
        length = emissions.shape[0]
        shift = emissions.max(axis=1, keepdims=True)
        scaled = np.exp(emissions - shift)
        trans = np.exp(self.transitions.astype(np.float64))  # a forbidden move's exp(-1e4) is 0
        end = np.exp(self.end.astype(np.float64))
        alpha, beta, norm = np.empty_like(scaled), np.empty_like(scaled), np.empty(length)
        step = np.exp(self.start.astype(np.float64)) * scaled[0]
        for t in range(length):
            if t:
                step = (alpha[t - 1] @ trans) * scaled[t]
            norm[t] = step.sum()
            alpha[t] = step / norm[t]
        beta[-1] = end
        for t in range(length - 2, -1, -1):
            beta[t] = trans @ (scaled[t + 1] * beta[t + 1]) / norm[t + 1]
        last = float(alpha[-1] @ end)
        marginals = alpha * beta / last
        if not (np.all(norm > 0) and last > 0 and np.all(np.isfinite(marginals))):
            return None
        return marginals.astype(np.float32), float(np.log(norm).sum() + shift.sum() + np.log(last))

    def viterbi_batch(self, emissions: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``viterbi`` of every row of a padded batch [rows, steps, tags] whose rows hold ``lengths``
        steps (at least one), in one pass over the steps: (paths [rows, steps], scores [rows]); a
        row's path is valid up to its length. Past its length a row keeps its score and its tag."""
        rows, steps, n = emissions.shape
        score = self.start + emissions[:, 0]
        back = np.empty((rows, steps, n), dtype=np.int64)
        stay = np.arange(n)
        for t in range(1, steps):
            total = score[:, :, None] + self.transitions
            live = (t < lengths)[:, None]
            back[:, t] = np.where(live, total.argmax(axis=1), stay)
            score = np.where(live, total.max(axis=1) + emissions[:, t], score)
        score = score + self.end
        path = np.empty((rows, steps), dtype=np.int64)
        path[:, -1] = score.argmax(axis=1)
        every = np.arange(rows)
        for t in range(steps - 1, 0, -1):
            path[:, t - 1] = back[every, t, path[:, t]]
        return path, score.max(axis=1)

    def forward_backward_batch(self, emissions: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``forward_backward`` of every row of a padded batch (see ``viterbi_batch``): (marginals
        [rows, steps, tags], valid up to each row's length; log partition functions [rows]). Rows
        whose steps underflow in probability space take the log-space way alone."""
        rows, steps, n = emissions.shape
        emissions = emissions.astype(np.float64)
        live = np.arange(steps)[None, :] < lengths[:, None]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
            shift = np.where(live, emissions.max(axis=2), 0.0)
            scaled = np.exp(emissions - shift[:, :, None])
            trans = np.exp(self.transitions.astype(np.float64))
            end = np.exp(self.end.astype(np.float64))
            alpha, beta, norm = np.empty_like(scaled), np.empty_like(scaled), np.empty((rows, steps))
            step = np.exp(self.start.astype(np.float64)) * scaled[:, 0]
            for t in range(steps):
                if t:  # past its length a row carries its last alpha on, whose sum is 1
                    step = np.where(live[:, t, None], (alpha[:, t - 1] @ trans) * scaled[:, t], alpha[:, t - 1])
                norm[:, t] = step.sum(axis=1)
                alpha[:, t] = step / norm[:, t, None]
            beta[:, -1] = end
            for t in range(steps - 2, -1, -1):
                inward = (scaled[:, t + 1] * beta[:, t + 1]) @ trans.T / norm[:, t + 1, None]
                beta[:, t] = np.where(live[:, t + 1, None], inward, end)
            last = alpha[:, -1] @ end
            marginals = alpha * beta / last[:, None, None]
            log_z = np.log(norm).sum(axis=1) + shift.sum(axis=1) + np.log(last)
            ok = (np.all((norm > 0) | ~live, axis=1) & (last > 0)
                  & np.all(np.isfinite(marginals) | ~live[:, :, None], axis=(1, 2)))
        marginals = marginals.astype(np.float32)
        for row in np.flatnonzero(~ok):
            length = lengths[row]
            marginals[row, :length], log_z[row] = self._log_forward_backward(emissions[row, :length])
        return marginals, log_z

    def _log_forward_backward(self, emissions: np.ndarray) -> tuple[np.ndarray, float]:
        length, n = emissions.shape
        trans = self.transitions.astype(np.float64)
        alpha = np.zeros((length, n))
        beta = np.zeros((length, n))
        alpha[0] = self.start + emissions[0]
        for t in range(1, length):
            alpha[t] = _logsumexp(alpha[t - 1][:, None] + trans, axis=0) + emissions[t]
        beta[-1] = self.end
        for t in range(length - 2, -1, -1):
            beta[t] = _logsumexp(trans + (emissions[t + 1] + beta[t + 1])[None, :], axis=1)
        log_z = float(_logsumexp(alpha[-1] + self.end, axis=0))
        marginals = np.exp(alpha + beta - log_z)
        return marginals.astype(np.float32), log_z

    def to_dict(self) -> dict:
        return {"transitions": self.transitions.tolist(), "start": self.start.tolist(), "end": self.end.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "CrfParams":
        return cls(*(np.asarray(d[k], dtype=np.float32) for k in ("transitions", "start", "end")))


def _logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    top = x.max(axis=axis, keepdims=True)
    return (top + np.log(np.exp(x - top).sum(axis=axis, keepdims=True))).squeeze(axis)
