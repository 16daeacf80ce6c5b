"""Training ideas of the accuracy issue, each against the same baseline: a fresh head (the default
model's shape, no top layers) on the first 12,000 MSRA training sentences for 3 epochs, seed 1,
with one idea switched on; dev F1 (1,200 held-out training sentences), msra_test F1 and modern F1
(benchmarks/data/modern_zh.jsonl, with its bootstrap 95 % interval), all in PyTorch; per seed (the
seed draws the dev split, the head's start and the data order) and their mean. A reduced budget
so that every idea fits in a session on 2 cores: compare the rows with each other, not with the
shipped model.

    .venv/bin/python benchmarks/ablation.py [--work var/ablation] [--only baseline fgm1] [--seeds 1 2]

Each run is a ``raner-backend train`` and two ``raner-backend evaluate`` in their own processes;
finished runs in ``--work`` are kept and only collected again. Writes
benchmarks/results/ablation.json.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "ablation.json"
CLI = str(Path(sys.executable).parent / "raner-backend")
HEAD = '{"layer_mix": "concat", "lstm_hidden": 128, "dilations": [1, 2, 1]}'
BASE = ["--max-sentences", "12000", "--epochs", "3", "--patience", "3", "--head-config", HEAD]
IDEAS = {
    "baseline": ([], "fresh head, no extra loss"),
    "fgm1": (["--fgm", "1"], "FGM, each sentence's encoder states pushed by epsilon 1 along their loss gradient"),
    "fgm4": (["--fgm", "4"], "FGM, epsilon 4"),
    "seg1": (["--segmentation", "1"], "multi-task: auxiliary word segmentation (jieba silver tags), weight 1"),
}
DATA = {"msra_test": "msra_test.txt", "modern": str(REPO / "benchmarks" / "data" / "modern_zh.jsonl")}


def run(args: list[str], log: Path) -> None:
    with open(log, "w") as out:
        subprocess.run([CLI, *args], stdout=out, stderr=subprocess.STDOUT, check=True, cwd=REPO)


def trained(work: Path, idea: str, seed: int) -> Path:
    model = work / f"{idea}-s{seed}"
    if not (model / "training.json").exists():
        started = time.time()
        run(["train", "--out", str(model), *BASE, "--seed", str(seed), *IDEAS[idea][0]], work / f"{model.name}.log")
        print(f"{model.name}: trained in {time.time() - started:.0f} s", flush=True)
    return model


def evaluated(work: Path, model: Path, data: str) -> dict:
    out = work / f"{model.name}.eval_{data}.json"
    if not out.exists():
        run(["evaluate", "--engine", "torch", "--model", str(model), "--data", DATA[data], "--out", str(out)],
            work / f"{model.name}.eval_{data}.log")
    return json.loads(out.read_text())["engines"]["torch"]


def seed_run(work: Path, idea: str, seed: int) -> dict:
    model = trained(work, idea, seed)
    training = json.loads((model / "training.json").read_text())
    result = {"command": training["command"], "dev_f1": training["best_dev_f1"], "train_seconds": training["seconds"]}
    for data in DATA:
        scores = evaluated(work, model, data)
        result[f"{data}_f1"] = scores["scores"]["overall"]["f1"]
        result[f"{data}_f1_ci95"] = scores.get("f1_ci95")
        result[f"{data}_per_type"] = {k: v["f1"] for k, v in scores["scores"]["per_type"].items()}
    return result


def summary(idea: str, seeds: dict) -> dict:
    """The idea's mean F1s over its seeds."""
    return {"idea": IDEAS[idea][1], "seeds": sorted(seeds, key=int),
            **{f"{k}_f1": round(sum(r[f"{k}_f1"] for r in seeds.values()) / len(seeds), 4)
               for k in ("dev", "msra_test", "modern")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default=str(REPO / "var" / "ablation"))
    parser.add_argument("--only", nargs="*", default=list(IDEAS), choices=list(IDEAS))
    parser.add_argument("--seeds", nargs="*", type=int, default=[1])
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    report = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"runs": {}}
    report["setup"] = __doc__.split("\n\n")[0].replace("\n", " ")
    for idea in args.only:
        for seed in args.seeds:
            report["runs"].setdefault(idea, {"per_seed": {}})["per_seed"][str(seed)] = seed_run(work, idea, seed)
            report["runs"][idea].update(summary(idea, report["runs"][idea]["per_seed"]))
            RESULTS.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
            print(json.dumps({idea: {k: v for k, v in report["runs"][idea].items() if k.endswith("f1")}}), flush=True)


if __name__ == "__main__":
    main()
