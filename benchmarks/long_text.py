"""A 1 MB task text labelled whole: time, peak memory, and that offsets stay exact.

    .venv/bin/python benchmarks/long_text.py [--mb 1.0] [--out benchmarks/results/long_text.json]
    .venv/bin/python benchmarks/long_text.py --mb 0.58 --out benchmarks/results/long_text_200k.json

Builds the text from MSRA test sentences and modern lines joined with newlines (1 MB of UTF-8,
about 340,000 characters), runs the served model on it in one call, then (the reference in the
same run) again with overlapping windows only, as before windows were cut at sentence ends, and
writes benchmarks/results/long_text.json.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
MODERN = ["@雷军 小米SU7在北京亦庄工厂下线🚗 #小米汽车#", "OpenAI的Sam Altman访问了东京。",
          "梅西随阿根廷队在卡塔尔赢得世界杯🏆", "华为在深圳发布了Mate60手机，余承东称销量超出预期。"]


def build_text(megabytes: float) -> tuple[str, list[tuple[int, int, str]]]:
    from raner_backend.model.data import msra_path, read_tagged

    target = int(megabytes * 1_000_000)
    parts, gold, length, size = [], [], 0, 0
    sentences = [e for e in read_tagged(msra_path("msra_test.txt")) if e.text]
    i = 0
    while size < target:
        ex = sentences[i % len(sentences)]
        text = ex.text + "\n" + (MODERN[i % len(MODERN)] + "\n" if i % 10 == 0 else "")
        gold += [(s.start + length, s.end + length, s.label) for s in ex.spans]
        parts.append(text)
        length += len(text)
        size += len(text.encode("utf-8"))
        i += 1
    return "".join(parts), gold


def label_whole(predictor, text: str, gold: list) -> dict:
    """One call on the whole text: time, memory growth, exact offsets, recall of the MSRA entities."""
    predictor.cache = type(predictor.cache)(0)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    result = predictor.predict([text])[0]
    seconds = time.perf_counter() - started
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    spans = {(e.start, e.end, e.label) for e in result.entities}
    return {"seconds": round(seconds, 1), "characters_per_s": round(len(text) / seconds),
            "peak_rss_mb": round(rss_after, 1), "rss_growth_mb": round(rss_after - rss_before, 1),
            "entities": len(result.entities), "offsets_exact": all(text[e.start : e.end] == e.text for e in result.entities),
            "recall_of_msra_entities": round(len(spans & set(gold)) / len(gold), 4)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=float, default=1.0)
    parser.add_argument("--out", type=Path, default=RESULTS / "long_text.json")
    parser.add_argument("--no-reference", action="store_true",
                        help="skip the same text in overlapping windows only (no sentence cuts)")
    args = parser.parse_args()
    from raner_backend.service import Backend
    from raner_backend.settings import Settings

    backend = Backend(Settings.from_env()).start()
    text, gold = build_text(args.mb)
    predictor = backend.models.predictor()
    served = label_whole(predictor, text, gold)
    report = {"bytes": len(text.encode("utf-8")), "characters": len(text), **served,
              "windows": f"{predictor.window_chars} characters, cut at a sentence end in their second half, "
                         f"else overlapping by {predictor.window_overlap}",
              "engine": predictor.backend.name, "model_version": backend.models.version()}
    if not args.no_reference:
        predictor.sentence_cuts = False
        reference = label_whole(predictor, text, gold)
        # The process's peak is the served run's: memory is that run's figure alone.
        report["overlapping_windows_only"] = {k: v for k, v in reference.items() if "rss" not in k}
        report["speedup_over_overlapping_windows"] = round(
            report["overlapping_windows_only"]["seconds"] / served["seconds"], 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0 if served["offsets_exact"] else 1


if __name__ == "__main__":
    sys.exit(main())
