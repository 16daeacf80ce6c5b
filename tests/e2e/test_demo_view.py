"""The demo project's Data Manager tab (``raner_backend.dm_view.create_score_view``) against a real
Label Studio 1.23.2: saved with the prediction score column shown and ordered ascending, so the
least certain tasks come first; the project opens on it. Predictions are uploaded through the API
(no backend needed). ``RANER_SKIP_E2E=1`` skips it."""
from __future__ import annotations

import pytest

from raner_backend.dm_view import DEFAULT_TITLE, SCORE_COLUMN, create_score_view

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

TEXTS = ["华为在深圳发布Mate60手机", "国务院总理李强在北京会见了来访的德国总理朔尔茨。", "梅西在迈阿密国际的首秀中打进制胜球⚽️",
         "周杰伦台北演唱会门票秒光了😭😭 #周杰伦#", "长江三峡水利枢纽今年发电量创历史新高。"]
SCORES = [0.91, 0.42, 0.77, 0.13, 0.65]


def test_score_view_shows_the_score_column_lowest_first(label_studio):
    api = label_studio.api()
    pid = api.create_project("raner demo view")
    tasks = api.import_tasks(pid, TEXTS)
    for task, score in zip(tasks, SCORES):
        api.sdk.predictions.create(task=task["id"], result=[], score=score, model_version="raner-test")
    # the score column averages the predictions of the project's model_version (as the demo sets it)
    api.sdk.projects.update(id=pid, model_version="raner-test")

    view_id = create_score_view(api.sdk, pid)

    # read back through the API, as the Data Manager loads its tabs
    (tab,) = api.request("GET", "/api/dm/views/", params={"project": pid})
    assert tab["id"] == view_id, "the project opens on the score tab (its only tab)"
    data = api.request("GET", f"/api/dm/views/{view_id}/")["data"]
    assert data["title"] == DEFAULT_TITLE
    assert data["ordering"] == [SCORE_COLUMN]  # ascending: no leading "-"
    hidden = data["hiddenColumns"]
    assert SCORE_COLUMN not in hidden["explore"] and SCORE_COLUMN not in hidden["labeling"]
    # the other defaults hold: a column Label Studio hides by default stays hidden, a shown one shown
    columns = {c["id"]: c for c in api.request("GET", "/api/dm/columns/", params={"project": pid})["columns"]}
    assert columns["predictions_score"]["visibility_defaults"]["explore"] is False  # why the tab is needed
    assert "tasks:annotations_results" in hidden["explore"]
    assert "tasks:id" not in hidden["explore"] and "tasks:data.text" not in hidden["explore"]
    sdk_view = api.sdk.views.get(id=str(view_id))
    assert sdk_view.project == pid and sdk_view.data["hiddenColumns"] == hidden

    # the tab's task list: lowest score first, the score filled in
    listed = api.list_tasks(pid, view_id=view_id)
    assert [t["predictions_score"] for t in listed] == pytest.approx(sorted(SCORES))
    assert [t["data"]["text"] for t in listed] == [TEXTS[i] for i in sorted(range(len(TEXTS)), key=SCORES.__getitem__)]
