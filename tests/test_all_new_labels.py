"""A project whose labels the default model never knew (药品 / 疾病 / 症状), trained from 30
annotations with the embedded default model and the service's own budget: the new version
deploys and finds the new types in tasks it has not seen."""
from __future__ import annotations

from pathlib import Path

import pytest

from raner_backend.model.data import read_surfaces
from raner_backend.settings import Settings

from .fake_labelstudio import FakeLabelStudio

pytestmark = pytest.mark.slow

DATA = Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "medical_zh.jsonl"
CONFIG = """<View><Labels name="label" toName="text"><Label value="药品"/><Label value="疾病"/>
  <Label value="症状"/></Labels><Text name="text" value="$text"/></View>"""
ANNOTATED = 30


def test_a_project_whose_labels_are_all_new_learns_them(tmp_path, monkeypatch):
    from raner_backend.service import Backend

    examples = list(read_surfaces(DATA))
    fake = FakeLabelStudio([e.text for e in examples], label_config=CONFIG)
    for index, example in enumerate(examples[:ANNOTATED]):
        fake.annotate(index, [tuple(span) for span in example.spans])
    monkeypatch.setattr("raner_backend.training.ls_client.LabelStudioClient", lambda *a, **k: fake)
    settings = Settings.from_env(model_dir=tmp_path / "models", label_studio_api_key="token",
                                 rank_on_connect=False)
    backend = Backend(settings).start()
    project = "7.1700000000"
    backend.setup(project, CONFIG)
    unseen = examples[ANNOTATED:]
    before = backend.predict_tasks([{"data": {"text": e.text}} for e in unseen], CONFIG, project)
    assert all(p.result == [] for p in before)  # nothing of a type not learned yet

    note = backend.train_project(7, lambda progress: None)

    assert note["deployed"], note["reason"]
    after = backend.predict_tasks([{"data": {"text": e.text}} for e in unseen], CONFIG, project)
    assert {p.model_version for p in after} == {note["version"]}
    gold = {(i, s.start, s.end, s.label) for i, e in enumerate(unseen) for s in e.spans}
    found = {(i, r["value"]["start"], r["value"]["end"], r["value"]["labels"][0])
             for i, p in enumerate(after) for r in p.result}
    assert len(gold & found) >= 0.5 * len(gold), sorted(found)
