"""The only place that talks to Label Studio (through label-studio-sdk). The URL and API key
come from settings, never from a request."""
from __future__ import annotations

import json
import logging

log = logging.getLogger(__name__)


class LabelStudioError(RuntimeError):
    pass


class LabelStudioClient:
    def __init__(self, url: str, api_key: str, timeout: float = 60.0):
        if not url or not api_key:
            raise LabelStudioError("LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY must be set to train from annotations")
        self.url = url.rstrip("/")
        self._api_key = api_key
        self._timeout = timeout
        self._client = None

    def __repr__(self) -> str:
        return f"LabelStudioClient({self.url!r})"

    @property
    def client(self):
        if self._client is None:
            from label_studio_sdk import LabelStudio

            self._client = LabelStudio(base_url=self.url, api_key=self._api_key, timeout=self._timeout)
        return self._client

    def _call(self, what: str, fn):
        try:
            return fn()
        except Exception as exc:  # the SDK raises many kinds; report them as one, without secrets
            status = getattr(exc, "status_code", None)
            detail = f"HTTP {status}" if status else type(exc).__name__
            raise LabelStudioError(f"Label Studio {what} failed ({detail}) at {self.url}") from None

    def label_config(self, project_id: int) -> str:
        return self._call("project lookup", lambda: self.client.projects.get(id=project_id).label_config)

    def export_annotated_tasks(self, project_id: int) -> list:
        def export():
            chunks = self.client.projects.exports.download_sync(id=project_id, export_type="JSON")
            raw = chunks if isinstance(chunks, (bytes, bytearray)) else b"".join(chunks)
            return json.loads(raw or b"[]")

        tasks = self._call("export", export)
        if not isinstance(tasks, list):
            raise LabelStudioError("Label Studio export is not a list of tasks")
        return tasks

    def tasks(self, project_id: int) -> list[dict]:
        """Every task of the project as ``{"id", "data", "labelled", "predictions": [{"id", "model_version"}]}``."""
        def listing():
            return [{"id": t.id, "data": t.data, "labelled": bool(t.is_labeled or (t.total_annotations or 0) > 0),
                     "predictions": [prediction_ref(p) for p in (getattr(t, "predictions", None) or [])]}
                    for t in self.client.tasks.list(project=project_id, fields="all")]

        return self._call("task list", listing)

    def create_prediction(self, task_id: int, result: list, score: float, version: str,
                          cluster: int | None = None) -> None:
        extra = {} if cluster is None else {"cluster": cluster}
        self._call("prediction upload", lambda: self.client.predictions.create(
            task=task_id, result=result, score=score, model_version=version, **extra))

    def delete_prediction(self, prediction_id: int) -> None:
        self._call("prediction delete", lambda: self.client.predictions.delete(id=prediction_id))

    def set_model_version(self, project_id: int, version: str) -> None:
        self._call("model_version update", lambda: self.client.projects.update(id=project_id, model_version=version))


def prediction_ref(prediction) -> dict:
    """``{"id", "model_version"}`` of a prediction listed with a task (a dict or an SDK object)."""
    get = prediction.get if isinstance(prediction, dict) else lambda key: getattr(prediction, key, None)
    return {"id": get("id"), "model_version": get("model_version")}
