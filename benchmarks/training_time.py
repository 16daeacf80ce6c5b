"""Time from "Start Training" to the training's outcome (a new served version, or the deploy
guard's refusal), with 50 annotations, on this machine.

A real Label Studio (scripts/labelstudio.sh) and the backend with its default fine-tuning budget
(TRAIN_EPOCHS=10, early stopping). ``--data msra``: 60 MSRA test sentences imported, 50 annotated
with their gold entities (PER/LOC/ORG). ``--data products``: 60 sentences of
benchmarks/data/products_zh.jsonl in a project labelled 人物/地点/机构/产品, 50 annotated: the
first training grows the tag set by 产品.

    MODEL_DIR=<set up> .venv/bin/python benchmarks/training_time.py [--data products] [--annotations 50]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.e2e.labelstudio import (PRODUCT_CONFIG, TO_CONFIG_LABEL, BackendServer, LabelStudioServer,  # noqa: E402
                                   install_label_studio, product_sentences)

RESULTS = {"msra": ROOT / "benchmarks" / "results" / "training_time.json",
           "products": ROOT / "benchmarks" / "results" / "training_time_products.json"}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--annotations", type=int, default=50)
    parser.add_argument("--epochs", default="10")
    parser.add_argument("--data", choices=sorted(RESULTS), default="msra")
    args = parser.parse_args()
    ok, why, _ = install_label_studio()
    if not ok:
        print(why, file=sys.stderr)
        return 1
    examples, config, label = project_data(args.data, args.annotations + 10)
    with tempfile.TemporaryDirectory() as work, LabelStudioServer() as ls:
        api = ls.api()
        pid = api.create_project("raner training time", config=config)
        tasks = api.import_tasks(pid, [e.text for e in examples])
        env = {"TRAIN_EPOCHS": args.epochs, "TRAIN_MAX_STEPS": "0", "TRAIN_THRESHOLD": "100000"}
        with BackendServer(os.environ["MODEL_DIR"], work, ls.base_url, ls.token, extra_env=env) as backend:
            ml_id = api.connect_backend(pid, backend.url)
            v0 = backend.model_version(pid)
            for task, ex in zip(tasks[: args.annotations], examples):
                api.submit_annotation(task["id"], [
                    {"id": f"g{i}", "from_name": "label", "to_name": "text", "type": "labels",
                     "value": {"start": s.start, "end": s.end, "text": ex.text[s.start:s.end],
                               "labels": [label(s.label)]}}
                    for i, s in enumerate(ex.spans)])
            started = time.monotonic()
            api.train(ml_id)
            while True:
                health = backend.health()
                if backend.model_version(pid) != v0:
                    break
                state = health["training"].get(str(pid), {})
                if state.get("state") == "idle" and (state.get("last_error") or health.get("deployments")):
                    break
                if time.monotonic() - started > 1800:
                    break
                time.sleep(0.5)
            seconds = time.monotonic() - started
            after = backend.model_version(pid)
            report = {"data": args.data, "annotations": args.annotations, "train_epochs": int(args.epochs),
                      "cpus": os.cpu_count(), "deployed": after != v0,
                      "start_training_to_outcome_s": round(seconds, 1), "version_before": v0,
                      "version_after": after, "deployments": health.get("deployments"),
                      "training": health["training"].get(str(pid))}
    RESULTS[args.data].write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps(report, indent=2, ensure_ascii=False))
    return 0 if report["deployed"] else 1


def project_data(data: str, n: int) -> tuple[list, str | None, Callable[[str], str]]:
    """The sentences to import, the project's label config (None: label_config.xml) and the
    config label of each of the data's entity types."""
    if data == "products":
        return product_sentences(n), PRODUCT_CONFIG, TO_CONFIG_LABEL.__getitem__
    from raner_backend.model.data import msra_path, read_tagged

    return [e for _, e in zip(range(n), read_tagged(msra_path("msra_test.txt")))], None, str


if __name__ == "__main__":
    sys.exit(main())
