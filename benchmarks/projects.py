"""Many projects on one backend: memory and load time with 20 projects' own versions loaded, and
with fewer kept (MAX_LOADED_MODELS) while requests cycle through all of them.

Each project's version is the default model grown by a label of its own and nudged (as a
fine-tuned version is: every weight of the head differs, the shared base encoder does not). The
backend is started as ``serve`` starts it, in a temporary MODEL_DIR.

    .venv/bin/python benchmarks/projects.py      # writes benchmarks/results/projects.json
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from process_memory import rss_mb
from raner_backend.engine.loader import BaseRuntime, ensure_head_onnx
from raner_backend.model.base import resolve_base
from raner_backend.model.bundle import HeadBundle
from raner_backend.model.registry import Registry
from raner_backend.service import Backend, default_model_folder, engine_for, install_default_model
from raner_backend.settings import Settings

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "projects.json"
TEXT = "华为在深圳发布了新款手机，余承东表示销量超过预期。"


def add_project_versions(model_dir: Path, projects: int, runtime: BaseRuntime) -> list[int]:
    """Each project's version written as a deployment writes it: weights, and the head's ONNX
    export (INT8 too when the default is served in INT8), all from this one process."""
    registry = Registry(model_dir)
    default = registry.current()
    int8 = engine_for(default, Settings.from_env(model_dir=model_dir)) == "onnx-int8"
    base = HeadBundle.load(default_model_folder())
    torch.manual_seed(0)
    for project in range(1, projects + 1):
        bundle = base.with_entity_types(base.scheme.entity_types + (f"标签{project}",))
        with torch.no_grad():
            for p in bundle.head.parameters():
                p.add_(torch.randn_like(p) * 1e-3)
        staging = registry.new_staging()
        bundle.save(staging)
        ensure_head_onnx(runtime, bundle, staging, int8=int8)
        registry.commit(staging, {"engine": default.manifest.get("engine", {}), "project": project,
                                  "parent": default.name})
    return list(range(1, projects + 1))


def cycle(backend: Backend, projects: list[int], text: str) -> dict:
    loads, answers = [], []
    for project in projects:
        started = time.perf_counter()
        backend.models.predictor(project)
        loads.append(time.perf_counter() - started)
        started = time.perf_counter()
        backend.ner([text], project)
        answers.append(time.perf_counter() - started)
    return {"load_s_mean": round(sum(loads) / len(loads), 3), "load_s_max": round(max(loads), 3),
            "first_answer_ms_mean": round(1000 * sum(answers) / len(answers), 1)}


def measure(projects: int, max_loaded: int, model_dir: Path) -> dict:
    settings = Settings.from_env(model_dir=model_dir, max_loaded_models=max_loaded)
    before = rss_mb()
    backend = Backend(settings).start()
    time.sleep(2)  # start() preloads projects in the background; let it settle before measuring
    started = rss_mb()
    first = cycle(backend, list(range(1, projects + 1)), TEXT)
    after_one_pass = rss_mb()
    second = cycle(backend, list(range(1, projects + 1)), TEXT + "（转发）")  # not in the results cache
    return {"max_loaded_models": max_loaded, "projects": projects, "loaded_after": len(backend.models.loaded()),
            "rss_mb_process_before_backend": round(before), "rss_mb_default_only": round(started),
            "rss_mb_after_every_project": round(after_one_pass), "rss_mb_after_second_pass": round(rss_mb()),
            "mb_per_loaded_project": round((after_one_pass - started) / max(1, min(projects, max_loaded - 1)), 1),
            "engine": backend.models.predictor().backend.name, "first_pass": first, "second_pass": second}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--projects", type=int, default=20)
    parser.add_argument("--max-loaded", type=int, default=0, help="MAX_LOADED_MODELS (default: projects + 1)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "models"
        settings = Settings.from_env(model_dir=model_dir)
        runtime = BaseRuntime(resolve_base(settings.base_model, settings.cache_dir), settings.cache_dir)
        install_default_model(settings, runtime)
        add_project_versions(model_dir, args.projects, runtime)
        report = measure(args.projects, args.max_loaded or args.projects + 1, model_dir)
    report["command"] = "benchmarks/projects.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items())
    print(json.dumps(report, indent=1))
    out = RESULTS if not args.max_loaded else RESULTS.with_name(f"projects_max{args.max_loaded}.json")
    out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
