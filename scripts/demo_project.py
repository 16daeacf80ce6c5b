"""Create a demo project in a running Label Studio, connect the backend, pre-annotate it, and open
its Data Manager on a tab with the prediction score shown, least certain tasks first.

    python scripts/demo_project.py LS_URL TOKEN BACKEND_URL
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import requests
from label_studio_sdk import LabelStudio

from raner_backend.dm_view import create_score_view

HERE = Path(__file__).resolve().parent


def main(ls_url: str, token: str, backend_url: str) -> int:
    ls = LabelStudio(base_url=ls_url, api_key=token)
    config = (HERE.parent / "label_config.xml").read_text(encoding="utf-8")
    project = ls.projects.create(title="中文命名实体识别 demo", label_config=config,
                                 description="Chinese NER pre-annotated by raner-backend")
    sentences = [s for s in (HERE / "demo_sentences.txt").read_text(encoding="utf-8").splitlines() if s.strip()]
    ls.projects.import_tasks(id=project.id, request=[{"text": s} for s in sentences])
    ls.ml.create(url=backend_url, project=project.id, title="raner-backend", is_interactive=False)
    version = requests.get(f"{backend_url}/health", timeout=10).json()["model_version"]
    ls.projects.update(id=project.id, sampling="Uncertainty sampling")
    ls.actions.create(id="retrieve_tasks_predictions", project=project.id,
                      selected_items={"all": True, "excluded": []})
    deadline = time.time() + 120
    while time.time() < deadline:
        tasks = list(ls.tasks.list(project=project.id, fields="all"))
        done = sum(1 for t in tasks if getattr(t, "total_predictions", 0))
        if done >= len(sentences):
            break
        time.sleep(1)
    # On connect Label Studio sets the project's model_version to the backend's title; the score
    # column and uncertainty sampling count only predictions of the project's model_version, and
    # Label Studio accepts a version only once predictions of it exist.
    ls.projects.update(id=project.id, model_version=version)
    view = create_score_view(ls, project.id)
    print(f"project {project.id}: {len(sentences)} tasks, {done} pre-annotated by {version}")
    print(f"open {ls_url}/projects/{project.id}/data?tab={view}   (prediction score shown, lowest first)")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
