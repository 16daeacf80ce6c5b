"""Model versions on disk under ``MODEL_DIR``.

    MODEL_DIR/versions/<version>/         head weights, manifest.json — complete or absent — and, while
                                          the version serves, its ONNX exports (remade when it serves again)
    MODEL_DIR/staging/<tmp>/              being written; never loaded, cleared at start-up
    MODEL_DIR/CURRENT                     the default version: serves every project that has not
                                          trained a version of its own (replaced atomically)
    MODEL_DIR/projects/<id>/CURRENT       the version that serves Label Studio project <id>

A version is built in ``staging`` and renamed into ``versions`` in one step, so a crash (even
``kill -9``) leaves either the whole folder or nothing. Names are ``raner-<n>-<hash>``: ``n``
counts deployments over all projects, ``hash`` is the head weights' sha256 prefix. A version
trained from a project's annotations names that project and its parent in its manifest; a
project's lineage is the default versions plus its own.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

MANIFEST = "manifest.json"
log = logging.getLogger(__name__)

VERSION_RE = re.compile(r"^raner-(\d+)-[0-9a-f]{8}$")


class RegistryError(ValueError):
    pass


@dataclass(frozen=True)
class VersionInfo:
    name: str
    path: Path
    manifest: dict

    @property
    def number(self) -> int:
        return int(VERSION_RE.match(self.name).group(1))

    @property
    def project(self) -> int | None:
        """The project whose annotations trained this version (None: a default version)."""
        project = self.manifest.get("project")
        return project if isinstance(project, int) else None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_text_atomic(path: Path, text: str) -> None:
    """``path`` holds ``text`` whole, flushed to the disk, or keeps what it held."""
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", dir=path.parent)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(tmp, 0o644)  # mkstemp makes it private; manifests and pointers are meant to be read
    os.replace(tmp, path)


def write_json_atomic(path: Path, data: dict) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False))


def fsync_path(path: Path) -> None:
    """Flush a file's bytes, or a folder's entries (a rename inside it), to the disk: a version or
    pointer written just before a power cut is then there, whole, after it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Registry:
    def __init__(self, model_dir: Path):
        self.root = Path(model_dir)
        self.versions_dir = self.root / "versions"
        self.staging_dir = self.root / "staging"
        self.projects_dir = self.root / "projects"
        self._stale_reported: set[tuple[Path, str]] = set()

    def ensure(self) -> None:
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        self.staging_dir.mkdir(parents=True, exist_ok=True)

    def clear_staging(self) -> None:
        """Remove what a crashed deployment left half-written."""
        if self.staging_dir.exists():
            for leftover in self.staging_dir.iterdir():
                shutil.rmtree(leftover, ignore_errors=True)

    def new_staging(self) -> Path:
        self.ensure()
        return Path(tempfile.mkdtemp(prefix="build-", dir=self.staging_dir))

    def staged_copy(self, source: Path, names: tuple[str, ...] = ("head.safetensors", "head_config.json")) -> Path:
        """A new staging folder holding copies of the files of ``names`` that ``source`` has."""
        staging = self.new_staging()
        for name in names:
            if (source / name).exists():
                shutil.copy(source / name, staging / name)
        return staging

    def versions(self) -> list[VersionInfo]:
        if not self.versions_dir.exists():
            return []
        found = []
        for folder in self.versions_dir.iterdir():
            if not VERSION_RE.match(folder.name) or not (folder / MANIFEST).is_file():
                continue
            try:
                manifest = json.loads((folder / MANIFEST).read_text())
            except (OSError, ValueError):
                continue
            found.append(VersionInfo(folder.name, folder, manifest))
        return sorted(found, key=lambda v: v.number)

    def get(self, name: str) -> VersionInfo:
        """A version by exact name; names are checked so no path can leave ``versions``."""
        if not isinstance(name, str) or not VERSION_RE.match(name):
            raise RegistryError(f"{name!r} is not a model version name (raner-<n>-<hash>)")
        for info in self.versions():
            if info.name == name:
                return info
        raise RegistryError(f"no model version {name!r} in {self.versions_dir}")

    def _pointer(self, project: int | None) -> Path:
        return self.root / "CURRENT" if project is None else self.projects_dir / str(project) / "CURRENT"

    def current(self, project: int | None = None) -> VersionInfo | None:
        """The version that serves ``project`` (its own pointer, else the default's), or the
        default version for ``project=None``."""
        pointed = self.pointed(project)
        if pointed is not None:
            return pointed
        if project is not None:
            return self.current()
        defaults = [v for v in self.versions() if v.project is None]
        return defaults[-1] if defaults else None

    def pointed(self, project: int | None = None) -> VersionInfo | None:
        """The version ``project``'s own pointer names (None: no pointer, or a stale one)."""
        pointer = self._pointer(project)
        if pointer.is_file():
            name = pointer.read_text().strip()
            try:
                return self.get(name)
            except RegistryError as exc:
                self._report_stale(pointer, name, exc)
        return None

    def _report_stale(self, pointer: Path, name: str, problem: RegistryError) -> None:
        """Once per pointer and name: a project served by the default because the version its
        pointer names is gone (a deleted or damaged folder) must not go unnoticed."""
        if (pointer, name) not in self._stale_reported:
            self._stale_reported.add((pointer, name))
            log.warning("%s is ignored (%s); the default version serves instead", pointer, problem)

    def set_current(self, name: str, project: int | None = None) -> VersionInfo:
        """Serve ``name`` to ``project`` (None: to every project without a version of its own).
        Only a version of the project's lineage can serve it."""
        info = self.get(name)
        if info.project is not None and info.project != project:
            owner = f"project {info.project}"
            raise RegistryError(f"{name} was trained for {owner}; it can serve only {owner}")
        pointer = self._pointer(project)
        pointer.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(pointer, name + "\n")
        fsync_path(pointer.parent)
        return info

    def serving(self) -> set[str]:
        """The versions that serve: the default and each project's own."""
        infos = [self.current()] + [self.pointed(project) for project in self.projects()]
        return {info.name for info in infos if info is not None}

    def drop_exports_of_idle_versions(self) -> list[Path]:
        """Delete the ONNX exports of versions that serve no project (what remains, weights and
        manifest, is what a rollback needs: serving a version exports it again, in seconds). A
        version of a 0.2 head is then 24 MB on disk instead of ~96 MB with its fp32 and INT8
        exports, so a backend that trains often for many projects does not fill its disk."""
        serving = self.serving()
        dropped = []
        for info in self.versions():
            if info.name not in serving:
                for export in info.path.glob("*.onnx"):
                    export.unlink(missing_ok=True)
                    dropped.append(export)
        return dropped

    def lineage(self, project: int | None = None) -> list[VersionInfo]:
        """The versions that may serve ``project``: the default ones and those trained for it."""
        return [v for v in self.versions() if v.project is None or v.project == project]

    def projects(self) -> list[int]:
        """Projects with a version of their own, in id order."""
        if not self.projects_dir.exists():
            return []
        return sorted(int(p.name) for p in self.projects_dir.iterdir()
                      if p.name.isdigit() and (p / "CURRENT").is_file())

    def adopt_single_lineage(self) -> None:
        """Upgrade a ``MODEL_DIR`` written before versions belonged to projects, once: each project
        that trained versions is served by its newest one (or by the old ``CURRENT`` if that was
        one of its versions), and the default is again a default version. Nothing is removed."""
        if self.projects_dir.exists():
            return
        versions = self.versions()
        pointer = self.root / "CURRENT"
        served = pointer.read_text().strip() if pointer.is_file() else ""
        newest: dict[int, str] = {}
        for v in versions:
            if v.project is not None:
                newest[v.project] = v.name
        by_name = {v.name: v for v in versions}
        for project, name in newest.items():
            owns_served = served in by_name and by_name[served].project == project
            self.set_current(served if owns_served else name, project)
        self.projects_dir.mkdir(parents=True, exist_ok=True)
        if served in by_name and by_name[served].project is not None:
            pointer.unlink()  # the default is then the newest default version

    def commit(self, staging: Path, manifest: dict, weights_file: str = "head.safetensors",
               make_current: bool = True) -> VersionInfo:
        """Give ``staging`` a version name, write its manifest, and move it into ``versions``;
        ``make_current`` serves it as the default (a default version) or to its project."""
        existing = self.versions()
        number = existing[-1].number + 1 if existing else 1
        name = f"raner-{number}-{sha256_of(staging / weights_file)[:8]}"
        manifest = dict(manifest, version=name, created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        write_json_atomic(staging / MANIFEST, manifest)
        for path in staging.iterdir():
            if path.is_file():
                fsync_path(path)
        os.chmod(staging, 0o755)
        os.rename(staging, self.versions_dir / name)
        fsync_path(self.versions_dir)
        info = self.get(name)
        if make_current:
            self.set_current(name, info.project)
        return info
