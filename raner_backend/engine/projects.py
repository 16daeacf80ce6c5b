"""The one place that owns the served models: which version serves which Label Studio project,
and the versions loaded into memory.

Every project is served by a version of its own lineage (``model/registry.py``): the default
version until it trains, then its own. A loaded version is a ``Predictor`` over the shared base
encoder (one copy in memory for all of them), so each adds only its head, a few MB. At most
``max_loaded`` versions stay loaded, the least recently used leaving first; the default version
never leaves.

Loading happens off the request path: ``prepare(project)`` (called by ``/setup``, which Label
Studio sends on connect and before every "Retrieve predictions") loads in the loader thread, and
a request for a version still loading waits for that one load instead of starting its own. A
deployment builds the new ``Predictor`` before the project's pointer moves, so requests in
flight finish on the version they started with.
"""
from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable

from ..model.registry import Registry, VersionInfo
from .predictor import Predictor

log = logging.getLogger(__name__)


class ModelUnavailable(RuntimeError):
    """The version that serves a project could not be loaded (the message says why)."""


class ProjectModels:
    def __init__(self, registry: Registry, build: Callable[[VersionInfo], Predictor], max_loaded: int = 8):
        self.registry = registry
        self.build = build
        self.max_loaded = max(1, max_loaded)
        self._lock = threading.Lock()
        # One change of what serves at a time: a version left idle by one loses its exports, which
        # must not happen while another is building a predictor from them.
        self._serving = threading.Lock()
        self._loaded: OrderedDict[str, Predictor] = OrderedDict()
        self._loading: dict[str, Future] = {}
        self._default: str | None = None  # serves every project without a version of its own
        self._own: dict[int, str | None] = {}  # project -> its own version (None: it has none yet)
        self._loader = ThreadPoolExecutor(1, thread_name_prefix="model-loader")

    # -- which version serves whom ---------------------------------------------------------------
    def version(self, project: int | None = None) -> str | None:
        """The name of the version that serves ``project`` (None: the default version)."""
        own = self._own_version(project) if project is not None else None
        with self._lock:
            return own or self._default

    def _own_version(self, project: int) -> str | None:
        with self._lock:
            if project in self._own:
                return self._own[project]
        pointed = self.registry.pointed(project)  # read once; this process owns the pointers after that
        with self._lock:
            return self._own.setdefault(project, pointed.name if pointed is not None else None)

    @property
    def ready(self) -> bool:
        with self._lock:
            return self._default in self._loaded

    def projects(self) -> dict[int, str]:
        """Projects served by a version of their own, and which."""
        own = {p: self.version(p) for p in self.registry.projects()}
        with self._lock:
            own.update({p: n for p, n in self._own.items() if n is not None})
        return dict(sorted(own.items()))

    def loaded(self) -> list[str]:
        with self._lock:
            return list(self._loaded)

    # -- loading ----------------------------------------------------------------------------------
    def predictor(self, project: int | None = None) -> Predictor:
        """The loaded version that serves ``project``, waiting for its load if it is not in memory."""
        name = self.version(project)
        if name is None:
            raise RuntimeError("no model is loaded yet")
        with self._lock:
            predictor = self._loaded.get(name)
            if predictor is not None:
                self._loaded.move_to_end(name)
                return predictor
        try:
            return self._load(name).result()
        except Exception as exc:  # logged by the load; the caller gets the reason, the next request retries
            raise ModelUnavailable(f"model version {name} could not be loaded: {type(exc).__name__}: {exc}") from None

    def prepare(self, project: int | None = None) -> None:
        """Start loading the version that serves ``project`` (returns at once)."""
        name = self.version(project)
        if name is not None:
            self._load(name)

    def _load(self, name: str) -> Future:
        with self._lock:
            if name in self._loaded:
                done: Future = Future()
                done.set_result(self._loaded[name])
                return done
            future = self._loading.get(name)
            if future is None:
                future = self._loading[name] = self._loader.submit(self._build, name)
            return future

    def _build(self, name: str) -> Predictor:
        try:
            with self._serving:  # the version's exports stay while it is built from them
                predictor = self.build(self.registry.get(name))
                self._keep(predictor)
            return predictor
        except Exception as exc:
            log.error("could not load model version %s: %s: %s", name, type(exc).__name__, exc)
            raise
        finally:
            with self._lock:
                self._loading.pop(name, None)

    def _keep(self, predictor: Predictor) -> None:
        with self._lock:
            self._loaded[predictor.version] = predictor
            self._loaded.move_to_end(predictor.version)
            pinned = self._default
            for name in list(self._loaded):
                if len(self._loaded) <= self.max_loaded:
                    break
                if name != pinned and name != predictor.version:
                    del self._loaded[name]
                    log.info("unloaded model version %s (MAX_LOADED_MODELS=%d)", name, self.max_loaded)

    # -- changing what serves ---------------------------------------------------------------------
    def _drop_idle_exports(self) -> None:
        try:
            dropped = self.registry.drop_exports_of_idle_versions()
        except OSError as exc:  # disk housekeeping: never a reason to fail a deployment
            log.warning("could not remove the exports of versions that no longer serve: %s", exc)
            return
        if dropped:
            log.info("removed %d ONNX exports of versions that serve no project (%s)", len(dropped),
                     ", ".join(sorted({path.parent.name for path in dropped})))

    def serve(self, info: VersionInfo, project: int | None = None, record: bool = True) -> Predictor:
        """Load ``info``, then make it serve ``project`` (None: the default) and, with ``record``,
        write that into ``MODEL_DIR``."""
        with self._serving:
            with self._lock:
                predictor = self._loaded.get(info.name)
            predictor = predictor or self.build(info)
            self._keep(predictor)  # loaded before it serves: a request never loads it a second time
            if record:
                self.registry.set_current(info.name, project)
            with self._lock:
                if project is None:
                    self._default = info.name
                else:
                    self._own[project] = info.name
            if record:
                self._drop_idle_exports()
        log.info("project %s is served by model version %s (%s)", "default" if project is None else project,
                 info.name, predictor.backend.name)
        return predictor
