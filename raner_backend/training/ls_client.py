"""The only place that talks to Label Studio (through label-studio-sdk). The URL and API key
come from settings, never from a request."""
from __future__ import annotations

import json
import logging
from urllib.parse import urlsplit, urlunsplit

log = logging.getLogger(__name__)


TASK_PAGE_FIELDS = "id,data,is_labeled,total_annotations,predictions_model_versions"
DELETE_SECONDS_PER_PREDICTION = 0.05  # five times what Label Studio 1.23 took on SQLite, 2 cores


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

    @property
    def shown_url(self) -> str:
        """The URL without a user or password in it, for messages and logs."""
        parts = urlsplit(self.url)
        return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))

    def __repr__(self) -> str:
        return f"LabelStudioClient({self.shown_url!r})"

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
            raise LabelStudioError(f"Label Studio {what} failed ({detail}) at {self.shown_url}") from None

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

    def task_page(self, project_id: int, page: int, page_size: int) -> tuple[list[dict], int]:
        """One page of the project's tasks (in id order) as ``{"id", "data", "labelled", "versions"}``
        (``versions``: the model versions of its predictions), and the project's task count. Only
        those fields travel: ``fields="all"`` is what makes Label Studio compute
        ``predictions_model_versions``, ``include`` keeps the predictions themselves out."""
        def listing():
            try:
                pager = self.client.tasks.list(project=project_id, page=page, page_size=page_size, fields="all",
                                               include=TASK_PAGE_FIELDS)
            except Exception as exc:
                if page > 1 and getattr(exc, "status_code", None) == 404:  # tasks deleted while we read
                    return [], 0
                raise
            return [task_ref(t) for t in pager.items or []], int(pager.response.total or 0)

        return self._call("task list", listing)

    def create_prediction(self, task_id: int, result: list, score: float, version: str,
                          cluster: int | None = None) -> None:
        extra = {} if cluster is None else {"cluster": cluster}
        self._call("prediction upload", lambda: self.client.predictions.create(
            task=task_id, result=result, score=score, model_version=version, **extra))

    def import_predictions(self, project_id: int, predictions: list[dict]) -> None:
        """Many ``{"task", "result", "score", "model_version"}`` in one request. Label Studio 1.23
        drops any ``cluster`` here, and drops a prediction it finds invalid (a score above 1, a label
        not in the config) without an error: only its count of those created tells."""
        answer = self._call("prediction import", lambda: self.client.projects.import_predictions(
            id=project_id, request=predictions))
        created = getattr(answer, "created", None)
        if created is not None and created < len(predictions):
            log.warning("Label Studio stored %d of %d predictions in project %s: it dropped invalid ones",
                        created, len(predictions), project_id)

    def delete_predictions_of_version(self, project_id: int, version: str, expected: int = 0) -> int:
        """Every prediction of ``version`` in the project, in one request; returns how many. The SDK has
        no method for ``DELETE /api/projects/{id}/model-versions/`` (its HTTP client carries the auth).
        Label Studio also clears the project's ``model_version`` when it was that version.

        Label Studio updates the task's counters for each deleted prediction (about 9 ms each on
        SQLite: 10,000 took longer than the usual timeout), so the wait grows with the ``expected``
        number of predictions."""
        timeout = self._timeout + DELETE_SECONDS_PER_PREDICTION * max(expected, 0)

        def delete():
            response = self.client._client_wrapper.httpx_client.request(
                f"api/projects/{project_id}/model-versions/", method="DELETE", json={"model_version": version},
                request_options={"timeout": timeout})
            response.raise_for_status()
            return int(response.json().get("deleted_predictions", 0))

        return self._call("prediction delete", delete)

    def set_model_version(self, project_id: int, version: str) -> None:
        self._call("model_version update", lambda: self.client.projects.update(id=project_id, model_version=version))


def task_ref(task) -> dict:
    """What ranking reads of a listed task (an SDK object). Label Studio joins the versions with ","
    on SQLite and ", " on PostgreSQL."""
    versions = getattr(task, "predictions_model_versions", None) or ""
    return {"id": task.id, "data": task.data,
            "labelled": bool(getattr(task, "is_labeled", False) or (getattr(task, "total_annotations", 0) or 0) > 0),
            "versions": [v.strip() for v in versions.split(",") if v.strip()]}
