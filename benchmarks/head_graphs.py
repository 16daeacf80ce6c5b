"""Two or more ONNX graphs of one head timed on the same batches, taking turns round by round, so
the machine's drift (CPU steal here) falls on all alike; the figure is the median over rounds of each
graph's time against the first's. The batches are those a predictor of ``--model`` hands its head
for msra_test sentences.

    .venv/bin/python benchmarks/head_graphs.py --model DIR --graph fused=DIR/head.int8.v3.onnx \
        --graph unfused=OTHER/head.int8.v3.onnx --label student6
    # writes benchmarks/results/head_graphs_<label>.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from profile_predictor import HEAD_INPUTS, RESULTS, Timed
from raner_backend.cli import _runtime
from raner_backend.engine.loader import build_predictor
from raner_backend.engine.runtime import input_names, onnx_session
from raner_backend.model.data import msra_path, read_tagged
from raner_backend.settings import Settings


def head_batches(model: Path, sentences: int, threads: int) -> list[dict]:
    """The head's inputs, batch by batch, as the model's INT8 predictor makes them."""
    runtime = _runtime(Settings.from_env()).load()
    predictor = build_predictor(runtime, model, "batches", "onnx-int8", cache_size=0, threads=threads)
    texts = [e.text for e in read_tagged(msra_path("msra_test.txt")) if e.text][:sentences]
    emissions = predictor.backend.emissions = Timed(predictor.backend.emissions, keep=True)
    predictor.predict(texts)
    return [dict(zip(HEAD_INPUTS, args), token_states=args[0].astype(np.float32)) for args in emissions.calls]


def timed_rounds(graphs: dict[str, Path], batches: list[dict], rounds: int, threads: int) -> dict[str, list[float]]:
    sessions = {name: onnx_session(path, threads) for name, path in graphs.items()}
    # Each graph's feeds, cut to the inputs it reads, made before any timing.
    reads = {name: input_names(s) for name, s in sessions.items()}
    feeds = {name: [{k: v for k, v in b.items() if k in reads[name]} for b in batches] for name in sessions}
    seconds: dict[str, list[float]] = {name: [] for name in graphs}
    for round_ in range(rounds):
        order = list(sessions.items())
        for name, session in order if round_ % 2 == 0 else reversed(order):
            started = time.perf_counter()
            for batch in feeds[name]:
                session.run(None, batch)
            seconds[name].append(time.perf_counter() - started)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="the model folder whose predictor makes the batches")
    parser.add_argument("--graph", action="append", required=True, help="NAME=PATH of a head graph (2 or more)")
    parser.add_argument("--label", required=True, help="names the results file")
    parser.add_argument("--sentences", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    graphs = dict(g.split("=", 1) for g in args.graph)
    batches = head_batches(Path(args.model), args.sentences, args.threads)
    seconds = timed_rounds({k: Path(v) for k, v in graphs.items()}, batches, args.rounds, args.threads)
    first = next(iter(seconds))
    report = {"model": args.model, "graphs": graphs, "batches": len(batches), "sentences": args.sentences,
              "threads": args.threads, "seconds_per_round": {k: [round(s, 3) for s in v] for k, v in seconds.items()},
              f"median_time_against_{first}": {k: round(statistics.median(a / b for a, b in zip(v, seconds[first])), 3)
                                               for k, v in seconds.items()},
              "command": "benchmarks/head_graphs.py " + " ".join(f"--graph {k}={v}" for k, v in graphs.items())
                         + f" --model {args.model} --label {args.label} --rounds {args.rounds}"}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"head_graphs_{args.label}.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
