"""An in-memory stand-in for the part of Label Studio the backend calls (``LabelStudioClient``)."""
from __future__ import annotations

import itertools
import json

from raner_backend.labeling import DEFAULT_LABEL_CONFIG


class FakeLabelStudio:
    def __init__(self, texts, labelled=(), broken=(), label_config=DEFAULT_LABEL_CONFIG):
        self.config = label_config
        self.ids = itertools.count(1000)
        self.tasks_ = [{"id": 10 + i, "data": {"text": t} if i not in broken else {"other": 1},
                        "labelled": i in labelled, "predictions": []} for i, t in enumerate(texts)]
        self.model_version = None
        self.deleted: list[int] = []

    def label_config(self, project_id):
        return self.config

    def export_annotated_tasks(self, project_id):
        return [{"id": t["id"], "data": t["data"], "annotations": t.get("annotations", [])}
                for t in self.tasks_ if t["labelled"]]

    def annotate(self, index: int, spans: list[tuple[int, int, str]]) -> None:
        task = self.tasks_[index]
        text = task["data"]["text"]
        task["labelled"] = True
        task["annotations"] = [{"id": next(self.ids), "was_cancelled": False, "result": [
            {"id": f"r{k}", "from_name": "label", "to_name": "text", "type": "labels",
             "value": {"start": s, "end": e, "text": text[s:e], "labels": [label]}}
            for k, (s, e, label) in enumerate(spans)]}]

    def tasks(self, project_id):
        return json.loads(json.dumps(self.tasks_))

    def delete_prediction(self, prediction_id):
        self.deleted.append(prediction_id)
        for t in self.tasks_:
            t["predictions"] = [p for p in t["predictions"] if p["id"] != prediction_id]

    def create_prediction(self, task_id, result, score, version, cluster=None):
        task = next(t for t in self.tasks_ if t["id"] == task_id)
        task["predictions"].append({"id": next(self.ids), "model_version": version, "score": score,
                                    "cluster": cluster, "result": result})

    def set_model_version(self, project_id, version):
        assert any(p["model_version"] == version for t in self.tasks_ for p in t["predictions"])
        self.model_version = version
