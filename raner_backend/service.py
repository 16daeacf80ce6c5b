"""The backend as one object: the served models (one lineage per Label Studio project), label
configs, predictions, training jobs and versions. The Flask routes and the CLI are thin calls
into it."""
from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Iterator, Sequence

from .active import project_queue
from .active.uncertainty import uncertainty_of
from .engine.batcher import Coalescer
from .engine.evaluation import eligible_engines, fastest_here
from .engine.predictor import DeadlinePassed, Predictor
from .engine.projects import ModelUnavailable, ProjectModels
from .engine.loader import ENGINES, BaseRuntime, build_predictor, ensure_head_onnx
from .labeling import LabelConfigError, LabelSchema, parse_label_config, to_regions
from .model.bundle import HeadBundle
from .settings import Settings
from .model.registry import MANIFEST, Registry, RegistryError, VersionInfo, sha256_of, write_json_atomic

log = logging.getLogger(__name__)

DEFAULT_ENGINE = "onnx-int8"
EMBEDDED_ORIGIN = "embedded default model"


def default_model_folder() -> Path:
    return Path(str(resources.files("raner_backend") / "default_model"))


def engine_for(info: VersionInfo, settings: Settings) -> str:
    """``ENGINE`` if set, else the version's own choice (``recorded_engine``)."""
    if settings.engine != "auto":
        if settings.engine not in ENGINES:
            raise ValueError(f"ENGINE={settings.engine!r} is not one of auto, {', '.join(ENGINES)}")
        return settings.engine
    return recorded_engine(info)


def recorded_engine(info: VersionInfo) -> str:
    """The engine timed fastest on this machine (``engine_here``), else the one the model's package
    recorded."""
    for record in (info.manifest.get("engine_here"), info.manifest.get("engine")):
        if record and record.get("engine") in ENGINES:
            return record["engine"]
    return DEFAULT_ENGINE


def install_default_model(settings: Settings, runtime: BaseRuntime) -> VersionInfo:
    """Make sure ``MODEL_DIR`` serves a complete version: the embedded default on first run, and
    the new embedded default after an upgrade if the old one is still served (earlier versions
    stay, so an admin can switch back; a version trained from annotations is never replaced)."""
    registry = Registry(settings.model_dir)
    registry.ensure()
    registry.clear_staging()
    registry.adopt_single_lineage()
    current = registry.current()
    if current is None or _serves_an_older_default(current):
        current = _install_embedded_default(registry, runtime)
    else:
        current = _with_packaged_engine(registry, current)
    if settings.engine == "auto":
        current = _with_engine_timed_here(registry, runtime, current, settings)
    engine = engine_for(current, settings)
    if engine != "torch":
        bundle, int8 = HeadBundle.load(current.path), engine == "onnx-int8"
        runtime.encoder_onnx(bundle.head.cfg.base_layers, bundle.vocab, int8=int8)
        ensure_head_onnx(runtime, bundle, current.path, int8=int8)
    return current


def _serves_an_older_default(current: VersionInfo) -> bool:
    if current.manifest.get("origin") != EMBEDDED_ORIGIN:
        return False
    packaged = default_model_folder() / "head.safetensors"
    return packaged.exists() and sha256_of(packaged) != sha256_of(current.path / "head.safetensors")


def _with_packaged_engine(registry: Registry, current: VersionInfo) -> VersionInfo:
    """``current``, or, when it is the embedded default (same weights) and the package now records
    another engine for it (an upgrade that re-measured the engines), the same version with the
    package's engine choice and figures. A version trained from annotations keeps the engine it was
    trained for."""
    if current.manifest.get("origin") != EMBEDDED_ORIGIN:
        return current
    packaged = json.loads((default_model_folder() / MANIFEST).read_text())
    if "engine" not in packaged or packaged["engine"] == current.manifest.get("engine"):
        return current
    manifest = {key: value for key, value in current.manifest.items() if key != "engine_here"}
    manifest.update(engine=packaged["engine"], evaluation=packaged.get("evaluation"))
    write_json_atomic(current.path / MANIFEST, manifest)
    log.info("%s now served with engine %s (the package's choice)", current.name, packaged["engine"].get("engine"))
    return registry.current()


def _with_engine_timed_here(registry: Registry, runtime: BaseRuntime, current: VersionInfo,
                            settings: Settings) -> VersionInfo:
    """``current``, or, when it is the embedded default and its engines have not been timed in this
    ``MODEL_DIR``, the same version with ``engine_here``: the fastest for one task on this machine
    among the engines its package found accurate enough (once; a few seconds)."""
    engines = eligible_engines(current.manifest.get("evaluation") or {})
    if current.manifest.get("origin") != EMBEDDED_ORIGIN or "engine_here" in current.manifest or len(engines) < 2:
        return current
    predictors = {engine: build_predictor(runtime, current.path, current.name, engine, cache_size=0,
                                          threads=settings.num_threads) for engine in engines}
    record = fastest_here(predictors)
    del predictors
    runtime.close_sessions()
    write_json_atomic(current.path / MANIFEST, {**current.manifest, "engine_here": record})
    log.info("%s served with engine %s, the fastest here for one task (p50 ms: %s)", current.name,
             record["engine"], record["one_task_p50_ms"])
    return registry.current()


def _install_embedded_default(registry: Registry, runtime: BaseRuntime) -> VersionInfo:
    source = default_model_folder()
    if not (source / "head.safetensors").exists():
        raise FileNotFoundError(f"the embedded default model is missing from {source}")
    staging = registry.staged_copy(source)
    manifest = json.loads((source / "manifest.json").read_text())
    manifest["origin"] = EMBEDDED_ORIGIN
    ensure_head_onnx(runtime, HeadBundle.load(staging), staging)
    installed = registry.commit(staging, manifest)
    log.info("installed the embedded default model as %s", installed.name)
    return installed


class BadRequest(ValueError):
    """A client error: the message names the problem (answered with HTTP 400)."""


class Unavailable(RuntimeError):
    """A request the backend will not serve now; the message says why and what to do (HTTP 503)."""


class RankingSuperseded(RuntimeError):
    """Another version serves the project now: a ranking with the old one stops rather than store
    its predictions and set the old version as the project's model_version."""


RANKING_STAGES = ("queued", "predict", "rank", "store")  # a ranking in these stages owns its version's predictions
PREDICT_CHUNK = 512  # texts per engine call in a large /predict, between looks at the caller's deadline
PREDICT_CHUNK_CHARS = 50_000  # ... and characters (one chunk of long texts would take minutes)
UNREADABLE_TASK_SCORE = 1.0  # "certain": a task without a text sinks to the end of the queue instead of leading it


def text_chunks(texts: Sequence[str]) -> Iterator[tuple[int, int]]:
    """``[start, end)`` index ranges of at most ``PREDICT_CHUNK`` texts and, unless one text alone
    is longer, ``PREDICT_CHUNK_CHARS`` characters."""
    start, chars = 0, 0
    for end, text in enumerate(texts):
        if end > start and (end - start >= PREDICT_CHUNK or chars + len(text) > PREDICT_CHUNK_CHARS):
            yield start, end
            start, chars = end, 0
        chars += len(text)
    if start < len(texts):
        yield start, len(texts)


def _task_text(task: Any, position: int, data_key: str) -> str | BadRequest:
    """The task's text, or the reason it has none."""
    if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
        return BadRequest(f"task #{position} has no 'data' object")
    text = task["data"].get(data_key)
    if not isinstance(text, str):
        return BadRequest(f"task #{position} (id {task.get('id')!r}): data.{data_key} is missing or not a string")
    return text


def project_id_of(value: Any) -> int | None:
    """Label Studio sends projects as ``7``, ``"7"``, ``"7.1712345678"`` or ``{"id": 7}``."""
    if isinstance(value, dict):
        value = value.get("id")
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 < value < 2**63 else None
    if isinstance(value, str):
        head = value.split(".", 1)[0].strip()
        if head.isascii() and head.isdigit() and 0 < int(head) < 2**63:
            return int(head)
    return None


@dataclass
class Prediction:
    result: list
    score: float
    model_version: str
    components: dict

    def to_ls(self) -> dict:
        return {"result": self.result, "score": round(self.score, 6), "model_version": self.model_version}


class Backend:
    def __init__(self, settings: Settings, runtime: BaseRuntime | None = None):
        from .model.base import resolve_base

        self.settings = settings
        self.registry = Registry(settings.model_dir)
        self.runtime = runtime or BaseRuntime(resolve_base(settings.base_model, settings.cache_dir),
                                              settings.cache_dir)
        self.models = ProjectModels(self.registry, self._load, settings.max_loaded_models)
        self.coalescer = Coalescer(wait_ms=settings.batch_wait_ms)
        self.project_configs: dict[int, str] = {}
        self._schemas: dict[str, LabelSchema] = {}
        self._base_data: dict[str, tuple] = {}
        self._configs_lock = threading.Lock()
        self._ranking_lock = threading.Lock()  # connect rankings, one at a time
        self._project_rankings: dict[int, threading.Lock] = {}  # every ranking of a project, one at a time
        self.started = time.time()
        self.deploy_notes: list[dict] = []
        self.rankings: dict[int, dict] = {}
        self.rollback_state: dict[str, dict] = {}  # "default" or a project id -> the latest rollback
        self.trainer = None  # set by attach_training()

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, install: bool = True, preload: bool = True) -> "Backend":
        """Serve the default version and (``preload``) start loading the projects' own versions;
        ``install=False`` only reads ``MODEL_DIR`` (for commands that run next to a serving backend,
        which owns its staging area and its pointers)."""
        current = install_default_model(self.settings, self.runtime) if install else self.registry.current()
        if current is None:
            raise FileNotFoundError(f"no model version in {self.settings.model_dir}: run `raner-backend setup`")
        self.models.serve(current, record=install)
        for project in self.registry.projects()[: self.settings.max_loaded_models - 1] if preload else ():
            self.models.prepare(project)
        return self

    def _load(self, info: VersionInfo) -> Predictor:
        predictor = build_predictor(self.runtime, info.path, info.name, engine_for(info, self.settings),
                                    cache_size=self.settings.cache_size, threads=self.settings.num_threads)
        predictor.predict(["预热"])  # first-run allocations happen here, not in a request
        return predictor

    # -- label configs -----------------------------------------------------------------------
    def schema_for(self, label_config: str) -> LabelSchema:
        """Parsed once per distinct config (Label Studio sends the config with every /predict)."""
        with self._configs_lock:
            schema = self._schemas.get(label_config)
        if schema is None:
            schema = parse_label_config(label_config, self.default_types(), self.settings.label_mapping())
            with self._configs_lock:
                if len(self._schemas) >= 64:
                    self._schemas.pop(next(iter(self._schemas)))
                self._schemas[label_config] = schema
        return schema

    def default_types(self) -> tuple[str, ...]:
        """The default model's entity types: the ones a config label can map to."""
        return tuple(self.models.predictor().scheme.entity_types)

    def setup(self, project: Any, schema_xml: Any) -> dict:
        if not isinstance(schema_xml, str) or not schema_xml.strip():
            raise BadRequest("'schema' (the project's label config XML) is missing or empty")
        try:
            self.schema_for(schema_xml)
        except LabelConfigError as exc:
            raise BadRequest(str(exc)) from None
        pid = project_id_of(project)
        if pid is not None:
            with self._configs_lock:
                self.project_configs[pid] = schema_xml
        self.models.prepare(pid)  # Label Studio sends /setup before it asks for predictions
        if pid is not None:
            self._rank_on_connect(pid)
        return {"model_version": self.models.version(pid)}

    def _rank_on_connect(self, pid: int) -> None:
        """Rank a newly connected project in the background, once per served version. Label Studio
        sets a project's model_version to the backend's title on connect and its Data Manager counts
        only predictions of that version, so without this an untrained project shows no scores and
        no queue; and a large project finds its predictions stored before "Retrieve predictions"
        (one request with every task, cut off after 100 s) would have to compute them."""
        if not (self.settings.rank_on_connect and self.settings.label_studio_api_key):
            return
        version = self.models.version(pid)
        with self._configs_lock:
            last = self.rankings.get(pid, {})
            if last.get("model_version") == version and last.get("stage") != "failed":
                return
            self.rankings[pid] = {"project": pid, "model_version": version, "stage": "queued"}
        threading.Thread(target=self._rank_in_background, args=(pid,), name=f"rank-{pid}", daemon=True).start()

    def _rank_in_background(self, pid: int) -> None:
        with self._ranking_lock:  # one connect ranking at a time: they share the CPU with serving
            try:
                self.rank_project(pid)
            except RankingSuperseded as exc:  # the new version's ranking follows
                log.info("ranking of project %s on connect stopped: %s", pid, exc)
            except Exception as exc:  # shown in /health; the next /setup tries again
                log.warning("could not rank project %s on connect: %s: %s", pid, type(exc).__name__, exc)
                with self._configs_lock:
                    if self.rankings[pid].get("stage") != "failed":
                        self.rankings[pid] = {**self.rankings[pid], "stage": "failed", "error": type(exc).__name__}

    # -- predictions -------------------------------------------------------------------------
    def predict_tasks(self, tasks: Sequence[Any], label_config: Any, project: Any) -> list[Prediction]:
        """One prediction per task, in order. A task whose text cannot be read gets an empty one (its
        reason logged), so one bad task does not cost a "Retrieve predictions" of thousands all of
        theirs; a request in which no task can be read is refused (400, the first reason)."""
        pid = project_id_of(project)
        schema = self._schema_for_request(label_config, pid)
        texts = {position: _task_text(task, position, schema.data_key) for position, task in enumerate(tasks)}
        readable = {position: text for position, text in texts.items() if not isinstance(text, BadRequest)}
        if tasks and not readable:
            raise texts[0]
        predictor = self.models.predictor(pid)
        if len(tasks) > 1:
            self._refuse_during_ranking(pid, predictor.version)
        for position, problem in texts.items():
            if position not in readable:
                log.warning("/predict: no prediction for %s (the other tasks are predicted)", problem)
        results = dict(zip(readable, self._results_in_time(predictor, list(readable.values()))))
        out = []
        for position in range(len(tasks)):
            if position not in results:
                out.append(Prediction([], UNREADABLE_TASK_SCORE, predictor.version, {"skipped": str(texts[position])}))
                continue
            u = uncertainty_of(results[position])
            regions = to_regions(schema, readable[position], results[position].entities)
            out.append(Prediction(regions, u.confidence, predictor.version, u.to_dict()))
        return out

    def _refuse_during_ranking(self, pid: int | None, version: str) -> None:
        """Many tasks at once ("Retrieve predictions") while this project's ranking computes and stores
        the same version's predictions would leave every task with two of them, and Label Studio
        averages both scores, blurring the queue; the ranking's arrive without the request. One task
        (the editor opening it) is answered."""
        running = self.rankings.get(pid) if pid is not None else None
        if running and running.get("model_version") == version and running.get("stage") in RANKING_STAGES:
            done = f"{running.get('done', 0)} of {running.get('total') or '?'}"
            raise Unavailable(f"the backend is computing and storing project {pid}'s predictions of {version} right now "
                              f"(stage {running['stage']}, {done}); they appear in Label Studio without "
                              f"'Retrieve predictions' (progress: GET /health → rankings)")

    def _results_in_time(self, predictor: Predictor, texts: Sequence[str]) -> list:
        """Results in chunks; stop once the caller has stopped waiting (Label Studio gives up at
        100 s and then drops every answer), rather than compute on for no one: between chunks, and
        between the engine's batches inside a chunk (a single long text is many batches)."""
        started, limit = time.monotonic(), self.settings.predict_timeout_s
        deadline = started + limit if limit else None

        def stopped(done: int) -> Unavailable:
            return Unavailable(
                f"stopped after {time.monotonic() - started:.0f} s with {done} of {len(texts)} tasks predicted: "
                f"the caller waits {limit:.0f} s (PREDICT_TIMEOUT_S, Label Studio's ML_TIMEOUT_PREDICT). "
                f"Predictions stored ahead by the connect ranking or `raner-backend rank` need no request; "
                f"or retrieve fewer tasks")

        results: list = []
        for start, end in text_chunks(texts):
            if deadline is not None and start and time.monotonic() > deadline:
                raise stopped(start)
            try:
                results += self.coalescer.predict(predictor, texts[start:end], deadline)
            except DeadlinePassed:
                raise stopped(start) from None
        return results

    def model_version(self, project: Any = None) -> str | None:
        """The version that serves ``project`` (any form Label Studio sends; None: the default)."""
        return self.models.version(project_id_of(project))

    def _schema_for_request(self, label_config: Any, pid: int | None) -> LabelSchema:
        if not isinstance(label_config, str) or not label_config.strip():
            with self._configs_lock:
                label_config = self.project_configs.get(pid) if pid is not None else None
        if not label_config:
            from .labeling import DEFAULT_LABEL_CONFIG

            label_config = DEFAULT_LABEL_CONFIG
        try:
            return self.schema_for(label_config)
        except LabelConfigError as exc:
            raise BadRequest(str(exc)) from None

    def ner(self, texts: Sequence[str], project: Any = None) -> dict:
        predictor = self.models.predictor(project_id_of(project))
        results = self.coalescer.predict(predictor, texts)
        return {"model_version": predictor.version,
                "results": [{"entities": [e.to_dict() for e in r.entities],
                             "uncertainty": uncertainty_of(r).to_dict()} for r in results]}

    # -- versions ----------------------------------------------------------------------------
    def versions(self, project: Any = None) -> dict:
        """The versions that may serve ``project`` (all of them without one) and the one that does."""
        pid = project_id_of(project)
        infos = self.registry.lineage(pid) if pid is not None else self.registry.versions()
        return {"versions": [v.name for v in infos], "current": self.models.version(pid),
                **({"project": pid} if pid is not None else {})}

    def rollback(self, name: str, project: Any = None, wait: bool = True) -> VersionInfo:
        """Serve an earlier version of the project's lineage (without a project: the default, for
        every project that has no version of its own). The name is checked at once
        (RegistryError); with ``wait=False`` the loading runs in the background (a request never
        loads a model) and shows in /health."""
        pid = project_id_of(project)
        info = self.registry.get(name)
        if info.project is not None and info.project != pid:
            raise RegistryError(f"{name} was trained for project {info.project}; it cannot serve "
                                + (f"project {pid}" if pid is not None else "as the default"))
        key = "default" if pid is None else str(pid)
        if wait:
            self._roll_back_to(info, pid, key)
        else:
            self.rollback_state[key] = {"version": info.name, "state": "loading"}
            threading.Thread(target=self._roll_back_to, args=(info, pid, key), name="rollback", daemon=True).start()
        return info

    def _roll_back_to(self, info: VersionInfo, pid: int | None, key: str) -> None:
        try:
            self.models.serve(info, pid)
            self.rollback_state[key] = {"version": info.name, "state": "serving"}
        except Exception as exc:  # the served model stays; the reason shows in /health
            log.error("rollback of %s to %s failed: %s", key, info.name, exc)
            self.rollback_state[key] = {"version": info.name, "state": "failed", "error": f"{type(exc).__name__}: {exc}"}

    # -- training ----------------------------------------------------------------------------
    def attach_training(self) -> "Backend":
        from .training.jobs import TrainingManager

        self.trainer = TrainingManager(self.train_project, self.settings.train_threshold,
                                       self.settings.train_debounce_s)
        return self

    def webhook(self, payload: dict) -> dict:
        action = payload.get("action")
        if not isinstance(action, str) or not action:
            raise BadRequest("'action' is missing or not a string")
        pid = project_id_of(payload.get("project"))
        if pid is None:
            annotation = payload.get("annotation")
            pid = project_id_of(annotation.get("project")) if isinstance(annotation, dict) else None
        if pid is None:
            return {"status": "ignored", "reason": "no project id in the payload"}
        if self.trainer is None:
            return {"status": "ignored", "reason": "training is not enabled"}
        return {"status": self.trainer.on_event(action, pid), "project": pid}

    def train_project(self, project_id: int, report) -> dict:
        """One training job: pull annotations from Label Studio, fine-tune, guard, deploy."""
        from .training.annotations import examples_from_export
        from .training.fine_tune import TRAINING_STATES, fine_tune, project_config
        from .training.ls_client import LabelStudioClient

        client = LabelStudioClient(self.settings.label_studio_url, self.settings.label_studio_api_key)
        report({"stage": "export"})
        label_config = client.label_config(project_id)
        schema = self.schema_for(label_config)
        pairs, skipped = examples_from_export(client.export_annotated_tasks(project_id), schema)
        if not pairs:
            raise ValueError(f"no usable annotations in project {project_id} ({len(skipped)} skipped)")
        current = self.registry.get(self.models.version(project_id))
        served = HeadBundle.load(current.path)
        tokenizer = self.runtime.load().tokenizer
        states = self.runtime.states_module(served.head.cfg.base_layers, served.vocab, TRAINING_STATES)
        cfg = project_config(self.settings.train_epochs, self.settings.train_max_steps)
        report({"stage": "training", "examples": len(pairs), "skipped": len(skipped)})
        result = fine_tune(served, tokenizer, states, [e for _, e in pairs], self.base_data("msra_train.txt", 20000),
                           self.base_data("msra_test.txt", 300), cfg, project_types=schema.entity_types,
                           replay_types=self.default_types(), progress=lambda p: report({"stage": "training", **p}),
                           task_ids=[task_id for task_id, _ in pairs])
        note = self.deploy(result, current, project_id, len(skipped))
        if note.get("version") and self.settings.rank_after_deploy:
            try:
                note["ranked_tasks"] = len(self.rank_project(project_id, client, label_config).queue)
            except RankingSuperseded as exc:
                log.info("ranking of project %s with %s stopped: %s", project_id, note["version"], exc)
            except Exception as exc:  # the model serves anyway; "Retrieve predictions" still works
                log.warning("could not rank project %s with %s: %s", project_id, note["version"], exc)
        elif note.get("version"):
            log.info("RANK_AFTER_DEPLOY is off: run `raner-backend rank --project %s` to queue the project's "
                     "tasks with %s and make it the project's model_version", project_id, note["version"])
        return note

    def deploy(self, result, current: VersionInfo, project_id: int, skipped: int) -> dict:
        """Apply the deploy guard's verdict: write the candidate as a new version of the project's
        lineage and serve it to the project, or keep serving ``current``; either way the outcome is
        noted for /health. Other projects keep what serves them."""
        note = {"project": project_id, "parent": current.name, "deployed": result.deploy, "reason": result.reason,
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        self.deploy_notes.append(note)
        if not result.deploy:
            log.warning("new model for project %s not deployed: %s", project_id, result.reason)
            return note
        staging = self.registry.new_staging()
        try:
            result.bundle.save(staging)
            ensure_head_onnx(self.runtime, result.bundle, staging,
                             int8=engine_for(current, self.settings) == "onnx-int8")
            manifest = {"engine": {**current.manifest.get("engine", {}), "engine": recorded_engine(current)},
                        "parent": current.name, "project": project_id, "training": result.figures,
                        "deploy_guard": result.reason, "skipped_annotations": skipped}
            info = self.registry.commit(staging, manifest, make_current=False)
        except BaseException as exc:
            shutil.rmtree(staging, ignore_errors=True)
            note.update(deployed=False, reason=f"writing the new version failed: {type(exc).__name__}: {exc}")
            raise
        self.models.serve(info, project_id)
        note["version"] = info.name
        log.info("deployed %s for project %s: %s", info.name, project_id, result.reason)
        return note

    def rank_project(self, project_id: int, client=None, label_config: str | None = None,
                     progress: project_queue.Progress | None = None) -> project_queue.QueueReport:
        """Rank the project's unlabelled tasks with the version that serves it and store the queue in
        Label Studio (scores, clusters, the project's model_version). While it runs, /health →
        ``rankings`` shows its stage and counts (``progress`` gets them too); then its summary.
        Rankings of one project run one at a time, and one whose version stops serving the project
        (a deployment, a rollback) stops at its next step: the last to finish is the served version's."""
        from .training.ls_client import LabelStudioClient

        with self._configs_lock:
            lock = self._project_rankings.setdefault(project_id, threading.Lock())
        with lock:
            client = client or LabelStudioClient(self.settings.label_studio_url, self.settings.label_studio_api_key)
            schema = self.schema_for(label_config or client.label_config(project_id))
            return self._rank_with(self.models.predictor(project_id), client, schema, project_id, progress)

    def _rank_with(self, predictor: Predictor, client, schema: LabelSchema, project_id: int,
                   progress: project_queue.Progress | None) -> project_queue.QueueReport:
        started = time.monotonic()

        def stage(name: str, done: int, total: int) -> None:
            served = self.models.version(project_id)
            if served == predictor.version:  # ... and on disk: `raner-backend rank` runs beside a serving backend
                on_disk = self.registry.current(project_id)
                served = on_disk.name if on_disk is not None else served
            if served != predictor.version:
                raise RankingSuperseded(f"project {project_id} is served by {served} now, not {predictor.version}")
            # a new dict each time: /health copies the map while this thread writes it
            self.rankings[project_id] = {"project": project_id, "model_version": predictor.version, "stage": name,
                                         "done": done, "total": total,
                                         "seconds": round(time.monotonic() - started, 1)}
            if progress is not None:
                progress(name, done, total)

        stage("predict", 0, 0)
        try:
            report = project_queue.rank_project(client, project_id, predictor, schema, self.settings.rank_clusters,
                                                stage)
        except Exception as exc:
            running = self.rankings[project_id]
            ended = "superseded" if isinstance(exc, RankingSuperseded) else "failed"
            self.rankings[project_id] = {**running, "stage": ended, "failed_in": running["stage"],
                                         "error": type(exc).__name__}
            raise
        self.rankings[project_id] = report.summary()
        return report

    def base_data(self, name: str, limit: int) -> tuple:
        """MSRA sentences: train ones are replayed during fine-tuning, a fixed test sample is the
        deploy guard's forgetting probe. Empty (with a warning) where the data is not installed."""
        if name not in self._base_data:
            from .model.data import msra_path, read_tagged

            try:
                self._base_data[name] = tuple(e for _, e in zip(range(limit), read_tagged(msra_path(name))))
            except FileNotFoundError:
                log.warning("MSRA data not installed: fine-tuning runs without %s", name)
                self._base_data[name] = ()
        return self._base_data[name]

    def health(self) -> dict:
        ready = self.models.ready
        return {"status": "UP" if ready else "STARTING", "model_version": self.models.version(),
                "engine": self.models.predictor().backend.name if ready else None,
                "projects": {str(p): v for p, v in self.models.projects().items()},
                "loaded_models": self.models.loaded(),
                "uptime_s": round(time.time() - self.started, 1),
                "training": self.trainer.status() if self.trainer else {},
                "deployments": [dict(note) for note in self.deploy_notes[-5:]], "rankings": dict(self.rankings),
                "rollback": dict(self.rollback_state)}


__all__ = ["Backend", "BadRequest", "ModelUnavailable", "Unavailable", "RegistryError", "install_default_model",
           "project_id_of"]
