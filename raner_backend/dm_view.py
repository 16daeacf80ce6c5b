"""A Label Studio Data Manager tab that lists the least certain tasks first.

Label Studio hides the "Prediction score" column by default (``visibility_defaults`` false), and a
new project opens on a Data Manager without it. :func:`create_score_view` adds a tab with that
column shown and sorted ascending (``tasks:predictions_score``): the backend's task ``score`` is
its confidence, so the lowest scores, the tasks worth labelling first, come on top. By hand, in any
project: Data Manager → Columns → tick "Prediction score", then click its header to sort.

The tab's ``data`` is what the Data Manager itself saves (Label Studio 1.23): ``hiddenColumns``
lists the hidden columns per mode (``explore``: the table, ``labeling``: the list beside the
editor) as ``tasks:<column>`` / ``tasks:data.<key>``; a tab saved without it would fall back to the
defaults and hide the score again, so the defaults are taken from ``/api/dm/columns`` as the Data
Manager computes them, less the score column.
"""
from __future__ import annotations

from typing import Any

SCORE_COLUMN = "tasks:predictions_score"
DEFAULT_TITLE = "Least certain first"


def default_hidden_columns(columns: list[dict]) -> dict[str, list[str]]:
    """The Data Manager's default ``hiddenColumns`` for these columns (``/api/dm/columns``), per mode."""
    hidden: dict[str, list[str]] = {"explore": [], "labeling": []}
    for column in columns:
        target = column.get("target", "tasks")
        path = f"{column['parent']}.{column['id']}" if column.get("parent") else column["id"]
        for mode, visible in (column.get("visibility_defaults") or {}).items():
            if mode in hidden and not visible:
                hidden[mode].append(f"{target}:{path}")
    return hidden


def score_view_data(columns: list[dict], title: str = DEFAULT_TITLE) -> dict[str, Any]:
    """The tab: default columns plus the prediction score, ordered by it, lowest first."""
    hidden = {mode: [c for c in names if c != SCORE_COLUMN]
              for mode, names in default_hidden_columns(columns).items()}
    return {"title": title, "type": "list", "target": "tasks", "ordering": [SCORE_COLUMN],
            "filters": {"conjunction": "and", "items": []}, "hiddenColumns": hidden,
            "columnsWidth": {}, "columnsDisplayType": {}, "gridWidth": 4}


def data_manager_columns(client, project_id: int) -> list[dict]:
    """``GET /api/dm/columns?project=`` (the SDK has no method for it; its HTTP client carries the auth)."""
    response = client._client_wrapper.httpx_client.request("api/dm/columns/", method="GET",
                                                           params={"project": project_id})
    response.raise_for_status()
    return response.json()["columns"]


def create_score_view(client, project_id: int, title: str = DEFAULT_TITLE) -> int:
    """Adds the tab to the project through ``client`` (a ``label_studio_sdk.LabelStudio``); returns its id.
    On a project without tabs it is the one the Data Manager opens on."""
    view = client.views.create(project=project_id, data=score_view_data(data_manager_columns(client, project_id),
                                                                        title))
    return view.id
