"""Fixtures for the end-to-end tests: a real Label Studio (``.venv-ls``) and the served model dir.

``RANER_SKIP_E2E=1`` skips them all; so does a Label Studio that cannot be installed, or a
``MODEL_DIR`` that was not prepared with ``raner-backend setup``."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from .labelstudio import HarnessError, LabelStudioServer, install_label_studio


def _skip_requested() -> bool:
    return os.environ.get("RANER_SKIP_E2E", "").strip().lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def label_studio_install() -> dict:
    """Installs (once) Label Studio into ``.venv-ls``; skips when that is not possible."""
    if _skip_requested():
        pytest.skip("RANER_SKIP_E2E=1")
    ok, output, seconds = install_label_studio()
    if not ok:
        pytest.skip(f"Label Studio could not be installed into .venv-ls:\n{output}")
    return {"seconds": round(seconds, 1)}


@pytest.fixture(scope="session")
def source_model_dir() -> Path:
    """``MODEL_DIR`` as prepared by the test runner (``raner-backend setup``); never written to."""
    if _skip_requested():
        pytest.skip("RANER_SKIP_E2E=1")
    raw = os.environ.get("MODEL_DIR", "")
    if not raw:
        pytest.skip("MODEL_DIR is not set (run `raner-backend setup` with MODEL_DIR first, as scripts/test.sh does)")
    path = Path(raw).expanduser().resolve()
    if not (path / "CURRENT").is_file():
        pytest.skip(f"MODEL_DIR={path} holds no model (run `raner-backend setup` first)")
    return path


@pytest.fixture(scope="module")
def label_studio(label_studio_install, tmp_path_factory):
    """A running Label Studio on a free port and a fresh data dir."""
    server = LabelStudioServer(tmp_path_factory.mktemp("label-studio"))
    try:
        server.start()
    except HarnessError as exc:
        pytest.fail(str(exc))
    try:
        yield server
    finally:
        server.stop()
