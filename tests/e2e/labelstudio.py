"""Harness for end-to-end tests against a real Label Studio (1.23.2, in ``.venv-ls``).

- :class:`LabelStudioServer`: a Label Studio on a free port and a temporary data dir, started and
  stopped through ``scripts/labelstudio.sh``;
- :class:`BackendServer`: our backend (``raner-backend serve``) as a subprocess on a copy of a
  model dir, pointed at that Label Studio;
- :class:`LabelStudioApi`: the few SDK calls the flow needs (signatures as in label-studio-sdk
  2.1.2), plus raw HTTP where the SDK is awkward (Data Manager views, task listing).
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable

import requests

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "labelstudio.sh"
LS_VENV = REPO / ".venv-ls"
BACKEND_BIN = REPO / ".venv" / "bin" / "raner-backend"
LABEL_CONFIG_FILE = REPO / "label_config.xml"
DEFAULT_LABEL_CONFIG = (
    '<View><Labels name="label" toName="text"><Label value="PER"/><Label value="LOC"/>'
    '<Label value="ORG"/></Labels><Text name="text" value="$text"/></View>'
)


class HarnessError(RuntimeError):
    pass


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def label_config() -> str:
    """The project's label config (``label_config.xml``), or the minimal PER/LOC/ORG one."""
    if LABEL_CONFIG_FILE.is_file():
        return LABEL_CONFIG_FILE.read_text(encoding="utf-8")
    return DEFAULT_LABEL_CONFIG


def _tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


def install_label_studio(timeout: float = 1800) -> tuple[bool, str, float]:
    """``scripts/labelstudio.sh install``: (ok, output tail, seconds). Idempotent and fast when installed."""
    started = time.monotonic()
    try:
        proc = subprocess.run(["bash", str(SCRIPT), "install"], cwd=REPO, capture_output=True, text=True,
                              timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"{type(exc).__name__}: {exc}", time.monotonic() - started
    out = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
    return proc.returncode == 0, out, time.monotonic() - started


def wait_http(url: str, timeout: float, *, ok=lambda r: r.status_code == 200, proc: subprocess.Popen | None = None,
              interval: float = 0.5) -> requests.Response:
    """GET ``url`` until ``ok(response)``; raises HarnessError on timeout or when ``proc`` exits."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise HarnessError(f"process exited with code {proc.returncode} while waiting for {url}")
        try:
            resp = requests.get(url, timeout=5)
            if ok(resp):
                return resp
            last = f"HTTP {resp.status_code}: {resp.text[:200]}"
        except requests.RequestException as exc:
            last = exc
        time.sleep(interval)
    raise HarnessError(f"{url} not ready after {timeout:.0f} s (last: {last})")


class LabelStudioServer:
    """``with LabelStudioServer() as ls: ls.base_url, ls.token`` (also unpacks as ``url, token``).

    Starts Label Studio through ``scripts/labelstudio.sh start`` on a free port with a temporary
    data dir (removed on exit unless ``data_dir`` was given or ``keep=True``)."""

    def __init__(self, data_dir: Path | str | None = None, port: int | None = None, *,
                 start_timeout: float = 240, keep: bool = False):
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir) if data_dir is not None else Path(tempfile.mkdtemp(prefix="ls-e2e-"))
        self.port = port or free_port()
        self.start_timeout = start_timeout
        self.keep = keep
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.token = ""
        self.start_seconds: float | None = None
        self.from_template: bool | None = None

    @property
    def log_path(self) -> Path:
        return self.data_dir / "ls.log"

    def __iter__(self):
        return iter((self.base_url, self.token))

    def start(self) -> "LabelStudioServer":
        started = time.monotonic()
        env = dict(os.environ, LS_START_TIMEOUT=str(int(self.start_timeout)))
        proc = subprocess.run(["bash", str(SCRIPT), "start", str(self.data_dir), str(self.port)], cwd=REPO,
                              capture_output=True, text=True, env=env, timeout=self.start_timeout + 120)
        self.start_seconds = time.monotonic() - started
        self.script_output = proc.stdout + proc.stderr
        if proc.returncode != 0:
            self.stop()
            raise HarnessError(f"Label Studio did not start (exit {proc.returncode}):\n{self.script_output[-4000:]}")
        self.from_template = "started from the template" in self.script_output
        self.token = (self.data_dir / "token").read_text().strip()
        return self

    def stop(self) -> None:
        subprocess.run(["bash", str(SCRIPT), "stop", str(self.data_dir)], cwd=REPO, capture_output=True,
                       text=True, timeout=60)

    def __enter__(self) -> "LabelStudioServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        if self._own_dir and not self.keep:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def api(self, timeout: float = 300) -> "LabelStudioApi":
        return LabelStudioApi(self.base_url, self.token, timeout=timeout)


class BackendServer:
    """Our backend, ``.venv/bin/raner-backend serve``, on a copy of ``model_dir`` under ``work_dir``.

    ``with BackendServer(model_dir, work_dir, ls.base_url, ls.token) as be: be.url, be.health()``.
    Its output goes to ``work_dir/backend.log``; on exit it gets SIGTERM, then SIGKILL."""

    def __init__(self, model_dir: Path | str, work_dir: Path | str, ls_url: str, ls_token: str, *,
                 port: int | None = None, extra_env: dict[str, str] | None = None, health_timeout: float = 120,
                 command: Iterable[str] | None = None):
        self.source_model_dir = Path(model_dir)
        self.work_dir = Path(work_dir)
        self.model_dir = self.work_dir / "models"
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ls_url, self.ls_token = ls_url, ls_token
        self.extra_env = dict(extra_env or {})
        self.health_timeout = health_timeout
        self.command = list(command) if command else [str(BACKEND_BIN), "serve"]
        self.log_path = self.work_dir / "backend.log"
        self.proc: subprocess.Popen | None = None
        self.start_seconds: float | None = None

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "PORT": str(self.port),
            "HOST": "127.0.0.1",
            "MODEL_DIR": str(self.model_dir),
            "LABEL_STUDIO_URL": self.ls_url,
            "LABEL_STUDIO_API_KEY": self.ls_token,
            "TRAIN_EPOCHS": "1",
            "TRAIN_MAX_STEPS": "60",
            "PYTHONUNBUFFERED": "1",
        })
        env.update(self.extra_env)
        return env

    def start(self, fresh: bool = True) -> "BackendServer":
        """``fresh``: a new copy of the source models; otherwise the models as the last run left them."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if fresh or not self.model_dir.exists():
            if self.model_dir.exists():
                shutil.rmtree(self.model_dir)
            shutil.copytree(self.source_model_dir, self.model_dir, symlinks=True)
        started = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command, cwd=REPO, env=self.env(), stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        try:
            wait_http(f"{self.url}/health", self.health_timeout, proc=self.proc,
                      ok=lambda r: r.status_code == 200 and r.json().get("status", "UP") == "UP")
        except HarnessError as exc:
            self.stop()
            raise HarnessError(f"backend did not come up: {exc}\n--- {self.log_path} ---\n{self.log_tail()}") from None
        self.start_seconds = time.monotonic() - started
        return self

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def kill9(self) -> None:
        """``kill -9`` of the backend's whole process group: no handler, no clean-up runs."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def webhook(self, payload: dict) -> dict:
        resp = requests.post(f"{self.url}/webhook", json=payload, timeout=10)
        resp.raise_for_status()
        return resp.json()

    def __enter__(self) -> "BackendServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def log_tail(self, lines: int = 80) -> str:
        return _tail(self.log_path, lines)

    def health(self) -> dict:
        resp = requests.get(f"{self.url}/health", timeout=10)
        resp.raise_for_status()
        return resp.json()

    def versions(self, project: int | None = None) -> dict:
        resp = requests.get(f"{self.url}/versions", params={"project": project} if project else None, timeout=10)
        resp.raise_for_status()
        return resp.json()

    def predict(self, tasks: list[dict], project: int) -> list[dict]:
        """``/predict`` as Label Studio calls it, for ``project`` (its config from ``/setup``)."""
        resp = requests.post(f"{self.url}/predict", json={"tasks": tasks, "project": f"{project}.0"}, timeout=100)
        resp.raise_for_status()
        return resp.json()["results"]

    def model_version(self, project: int) -> str:
        """The version that serves ``project``."""
        return self.versions(project)["current"]


class LabelStudioApi:
    """The SDK calls of the flow, and raw HTTP (``Authorization: Token``) where the SDK is awkward."""

    def __init__(self, base_url: str, token: str, timeout: float = 300):
        from label_studio_sdk import LabelStudio

        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.sdk = LabelStudio(base_url=self.base_url, api_key=token, timeout=timeout)
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Token {token}"

    # -- raw HTTP ---------------------------------------------------------------------------
    def request(self, method: str, path: str, **kwargs) -> Any:
        resp = self.http.request(method, f"{self.base_url}{path}", timeout=self.timeout, **kwargs)
        if resp.status_code >= 400:
            raise HarnessError(f"{method} {path}: HTTP {resp.status_code}: {resp.text[:1000]}")
        return resp.json() if resp.content else None

    # -- projects and tasks -----------------------------------------------------------------
    def create_project(self, title: str, config: str | None = None) -> int:
        project = self.sdk.projects.create(title=title, label_config=config or label_config())
        return project.id

    def get_project(self, project_id: int) -> dict:
        """Raw JSON (the SDK model drops nothing, but a dict is easier to assert on)."""
        return self.request("GET", f"/api/projects/{project_id}")

    def import_tasks(self, project_id: int, texts: list[str]) -> list[dict]:
        """Imports ``{"text": t}`` tasks; returns the project's tasks (id, data) in import order."""
        self.sdk.projects.import_tasks(id=project_id, request=[{"text": t} for t in texts])
        tasks = sorted(self.list_tasks(project_id), key=lambda t: t["id"])
        if len(tasks) != len(texts):
            raise HarnessError(f"imported {len(texts)} tasks, project has {len(tasks)}")
        return tasks

    def list_tasks(self, project_id: int, view_id: int | None = None, fields: str = "all") -> list[dict]:
        """``GET /api/tasks`` (the Data Manager's list: order of the view, ``predictions_score`` per task)."""
        out: list[dict] = []
        page = 1
        while True:
            params: dict[str, Any] = {"project": project_id, "page": page, "page_size": 100, "fields": fields}
            if view_id is not None:
                params["view"] = view_id
            try:
                body = self.request("GET", "/api/tasks", params=params)
            except HarnessError as exc:  # past the last page
                if page > 1 and "404" in str(exc):
                    break
                raise
            items = body.get("tasks", []) if isinstance(body, dict) else body
            out.extend(items)
            total = body.get("total") if isinstance(body, dict) else None
            if not items or total is None or len(out) >= total:
                break
            page += 1
        return out

    # -- ML backend ---------------------------------------------------------------------------
    def connect_backend(self, project_id: int, url: str, title: str = "raner-backend") -> int:
        ml = self.sdk.ml.create(url=url, project=project_id, title=title)
        return ml.id

    def ml_backend(self, ml_id: int) -> dict:
        return self.request("GET", f"/api/ml/{ml_id}")

    def retrieve_predictions(self, project_id: int) -> None:
        """Data Manager action "Retrieve predictions" on all tasks (synchronous without Redis)."""
        self.sdk.actions.create(id="retrieve_tasks_predictions", project=project_id,
                                selected_items={"all": True, "excluded": []})

    def train(self, ml_id: int) -> None:
        """"Start Training": Label Studio sends ``START_TRAINING`` to the backend's ``/webhook``."""
        self.sdk.ml.train(id=ml_id)

    def model_versions(self, ml_id: int) -> Any:
        return self.sdk.ml.list_model_versions(id=ml_id)

    # -- predictions and annotations ------------------------------------------------------------
    def predictions(self, task_id: int) -> list[dict]:
        return [p.dict() if hasattr(p, "dict") else dict(p) for p in self.sdk.predictions.list(task=task_id)]

    def project_predictions(self, project_id: int) -> list[dict]:
        return [p.dict() if hasattr(p, "dict") else dict(p) for p in self.sdk.predictions.list(project=project_id)]

    def submit_annotation(self, task_id: int, result: list[dict]) -> int:
        annotation = self.sdk.annotations.create(id=task_id, result=result)
        return annotation.id

    # -- Data Manager --------------------------------------------------------------------------
    def create_view(self, project_id: int, ordering: list[str], title: str | None = None) -> int:
        data: dict[str, Any] = {"ordering": ordering}
        if title:
            data["title"] = title
        view = self.request("POST", "/api/dm/views", json={"project": project_id, "data": data})
        return view["id"]

    def tasks_by_prediction_score(self, project_id: int) -> list[dict]:
        """Tasks in the order of a new view sorted by ``tasks:predictions_score`` (ascending)."""
        view_id = self.create_view(project_id, ["tasks:predictions_score"], title="by score")
        return self.list_tasks(project_id, view_id=view_id)


def region_id() -> str:
    """A region id in the style of the Label Studio editor (10 url-safe characters)."""
    return secrets.token_urlsafe(8)[:10]


# A project whose labels are the default model's types under other names, and one type it never
# learned (产品): the two-project test and benchmarks/training_time.py --data products.
PRODUCT_CONFIG = """<View>
  <Labels name="label" toName="text">
    <Label value="人物"/><Label value="地点"/><Label value="机构"/><Label value="产品"/>
  </Labels>
  <Text name="text" value="$text"/>
</View>"""
TO_CONFIG_LABEL = {"PER": "人物", "LOC": "地点", "ORG": "机构", "PRODUCT": "产品"}


def product_sentences(n: int) -> list:
    """The first ``n`` sentences of ``benchmarks/data/products_zh.jsonl`` that name a product."""
    from raner_backend.model.data import read_surfaces

    found = [e for e in read_surfaces(REPO / "benchmarks" / "data" / "products_zh.jsonl")
             if any(s.label == "PRODUCT" for s in e.spans)]
    return found[:n]
