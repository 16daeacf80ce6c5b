"""Time from "Start Training" to a new served version, with 50 annotations, on this machine.

A real Label Studio (scripts/labelstudio.sh) and the backend with its default fine-tuning budget
(TRAIN_EPOCHS=10, early stopping); 60 MSRA test sentences imported, 50 annotated with their gold entities.

    MODEL_DIR=<set up> .venv/bin/python benchmarks/training_time.py [--annotations 50]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.e2e.labelstudio import BackendServer, LabelStudioServer, install_label_studio  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "training_time.json"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--annotations", type=int, default=50)
    parser.add_argument("--epochs", default="10")
    args = parser.parse_args()
    from raner_backend.model.data import msra_path, read_tagged

    ok, why, _ = install_label_studio()
    if not ok:
        print(why, file=sys.stderr)
        return 1
    examples = [e for _, e in zip(range(args.annotations + 10), read_tagged(msra_path("msra_test.txt")))]
    with tempfile.TemporaryDirectory() as work, LabelStudioServer() as ls:
        api = ls.api()
        pid = api.create_project("raner training time")
        tasks = api.import_tasks(pid, [e.text for e in examples])
        env = {"TRAIN_EPOCHS": args.epochs, "TRAIN_MAX_STEPS": "0", "TRAIN_THRESHOLD": "100000"}
        with BackendServer(os.environ["MODEL_DIR"], work, ls.base_url, ls.token, extra_env=env) as backend:
            ml_id = api.connect_backend(pid, backend.url)
            v0 = backend.health()["model_version"]
            for task, ex in zip(tasks[: args.annotations], examples):
                api.submit_annotation(task["id"], [
                    {"id": f"g{i}", "from_name": "label", "to_name": "text", "type": "labels",
                     "value": {"start": s.start, "end": s.end, "text": ex.text[s.start:s.end], "labels": [s.label]}}
                    for i, s in enumerate(ex.spans)])
            started = time.monotonic()
            api.train(ml_id)
            while True:
                health = backend.health()
                if health["model_version"] != v0:
                    break
                state = health["training"].get(str(pid), {})
                if state.get("state") == "idle" and (state.get("last_error") or health.get("deployments")):
                    break
                if time.monotonic() - started > 1800:
                    break
                time.sleep(0.5)
            seconds = time.monotonic() - started
            report = {"annotations": args.annotations, "train_epochs": int(args.epochs), "cpus": os.cpu_count(),
                      "start_training_to_new_version_s": round(seconds, 1), "version_before": v0,
                      "version_after": health["model_version"], "deployments": health.get("deployments"),
                      "training": health["training"].get(str(pid))}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps(report, indent=2, ensure_ascii=False))
    return 0 if report["version_after"] != v0 else 1


if __name__ == "__main__":
    sys.exit(main())
