"""Where a model's serving time goes: the encoder, the head, and the CRF decoding, and inside the
head which ONNX operators, for msra_test sentences through ``Predictor.predict`` (cache off).

    .venv/bin/python benchmarks/profile_predictor.py --model DIR --engine onnx-int8 --label student
    # writes benchmarks/results/profile_<label>.json
"""
from __future__ import annotations

import argparse
import collections
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from raner_backend.cli import _runtime
from raner_backend.engine.loader import build_predictor
from raner_backend.model.data import msra_path, read_tagged
from raner_backend.settings import Settings

RESULTS = Path(__file__).resolve().parent / "results"
HEAD_INPUTS = ["token_states", "token_mask", "char_token", "char_piece", "char_ids", "char_class"]


class Timed:
    """Wraps a method, adding its wall time to ``seconds`` and keeping its arguments."""

    def __init__(self, method, keep: bool = False):
        self.method, self.keep, self.seconds, self.calls = method, keep, 0.0, []

    def __call__(self, *args):
        started = time.perf_counter()
        try:
            return self.method(*args)
        finally:
            self.seconds += time.perf_counter() - started
            if self.keep:
                self.calls.append(args)


def head_operators(head_path: Path, calls: list, threads: int) -> dict:
    """Share of the head's time per ONNX operator type, from ONNX Runtime's profiler."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.enable_profiling, options.intra_op_num_threads = True, threads
    profile_dir = tempfile.mkdtemp()  # ONNX Runtime writes its profile into the working folder otherwise
    options.profile_file_prefix = str(Path(profile_dir) / "head")
    session = ort.InferenceSession(str(head_path), options, providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    for args in calls:
        feeds = dict(zip(HEAD_INPUTS, args), token_states=args[0].astype(np.float32))
        session.run(None, {k: v for k, v in feeds.items() if k in names})
    events = json.loads(Path(session.end_profiling()).read_text())
    shutil.rmtree(profile_dir)
    per_op = collections.Counter()
    for event in events:
        if event.get("cat") == "Node":
            per_op[event["args"].get("op_name", "?")] += event["dur"]
    total = sum(per_op.values()) or 1
    return {op: round(us / total, 3) for op, us in per_op.most_common(10)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a model folder")
    parser.add_argument("--engine", default="onnx-int8", choices=("torch", "onnx-fp32", "onnx-int8"))
    parser.add_argument("--label", required=True, help="names the results file")
    parser.add_argument("--sentences", type=int, default=600)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    runtime = _runtime(Settings.from_env()).load()
    predictor = build_predictor(runtime, Path(args.model), args.label, args.engine, cache_size=0,
                                threads=args.threads)
    texts = [e.text for e in read_tagged(msra_path("msra_test.txt")) if e.text][: args.sentences]
    predictor.predict(texts[:50])  # warm-up
    states = predictor.backend.states = Timed(predictor.backend.states)
    emissions = predictor.backend.emissions = Timed(predictor.backend.emissions, keep=args.engine != "torch")
    started = time.perf_counter()
    predictor.predict(texts[50:])
    total = time.perf_counter() - started
    report = {"model": args.model, "engine": args.engine, "sentences": len(texts) - 50, "threads": args.threads,
              "sentences_per_s": round((len(texts) - 50) / total, 1), "total_s": round(total, 2),
              "encoder_states_s": round(states.seconds, 2), "head_emissions_s": round(emissions.seconds, 2),
              "rest_s": round(total - states.seconds - emissions.seconds, 2),
              "command": f"benchmarks/profile_predictor.py --model {args.model} --engine {args.engine} "
                         f"--label {args.label}"}
    if emissions.calls:
        report["head_operator_share"] = head_operators(Path(args.model) / "head.onnx", emissions.calls, args.threads)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"profile_{args.label}.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
