"""An in-memory stand-in for the part of Label Studio the backend calls (``LabelStudioClient``)."""
from __future__ import annotations

import itertools
import json
from collections import Counter

from raner_backend.labeling import DEFAULT_LABEL_CONFIG


class FakeLabelStudio:
    def __init__(self, texts, labelled=(), broken=(), label_config=DEFAULT_LABEL_CONFIG):
        self.config = label_config
        self.ids = itertools.count(1000)
        self.tasks_ = [{"id": 10 + i, "data": {"text": t} if i not in broken else {"other": 1},
                        "labelled": i in labelled, "predictions": []} for i, t in enumerate(texts)]
        self.model_version = None
        self.deleted: list[int] = []
        self.calls: Counter = Counter()  # the paged and bulk calls below, by name
        self.expected_deletes: list[int] = []  # what the caller expected each version delete to remove

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

    # -- the paged and bulk calls that ranking makes, answered as Label Studio 1.23 does ------------
    def task_page(self, project_id, page, page_size):
        self.calls["task_page"] += 1
        chunk = self.tasks_[(page - 1) * page_size : page * page_size]
        return [{"id": t["id"], "data": json.loads(json.dumps(t["data"])), "labelled": t["labelled"],
                 "versions": sorted({p["model_version"] for p in t["predictions"]})} for t in chunk], len(self.tasks_)

    def delete_predictions_of_version(self, project_id, version, expected=0):
        self.calls["delete_predictions_of_version"] += 1
        self.expected_deletes.append(expected)
        before = sum(len(t["predictions"]) for t in self.tasks_)
        for t in self.tasks_:
            t["predictions"] = [p for p in t["predictions"] if p["model_version"] != version]
        return before - sum(len(t["predictions"]) for t in self.tasks_)

    def import_predictions(self, project_id, predictions):
        """Label Studio 1.23 stores ``result``, ``score`` and ``model_version`` only: no ``cluster``."""
        self.calls["import_predictions"] += 1
        by_id = {t["id"]: t for t in self.tasks_}
        for p in predictions:
            by_id[p["task"]]["predictions"].append({"id": next(self.ids), "model_version": p["model_version"],
                                                    "score": p["score"], "cluster": None, "result": p["result"]})
