"""Model versions on disk under ``MODEL_DIR``.

    MODEL_DIR/versions/<version>/   head weights, head.onnx, manifest.json — complete or absent
    MODEL_DIR/staging/<tmp>/        being written; never loaded, cleared at start-up
    MODEL_DIR/CURRENT               the served version's name (replaced atomically)

A version is built in ``staging`` and renamed into ``versions`` in one step, so a crash (even
``kill -9``) leaves either the whole folder or nothing. Names are ``raner-<n>-<hash>``: ``n``
counts deployments, ``hash`` is the head weights' sha256 prefix.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

MANIFEST = "manifest.json"
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


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_json_atomic(path: Path, data: dict) -> None:
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", dir=path.parent)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=2, ensure_ascii=False)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(tmp, 0o644)  # mkstemp makes it private; manifests are meant to be read
    os.replace(tmp, path)


class Registry:
    def __init__(self, model_dir: Path):
        self.root = Path(model_dir)
        self.versions_dir = self.root / "versions"
        self.staging_dir = self.root / "staging"

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

    def current(self) -> VersionInfo | None:
        pointer = self.root / "CURRENT"
        if pointer.is_file():
            try:
                return self.get(pointer.read_text().strip())
            except RegistryError:
                pass
        versions = self.versions()
        return versions[-1] if versions else None

    def set_current(self, name: str) -> VersionInfo:
        info = self.get(name)
        self.ensure()
        fd, tmp = tempfile.mkstemp(prefix="CURRENT.", dir=self.root)
        with os.fdopen(fd, "w") as handle:
            handle.write(name + "\n")
        os.replace(tmp, self.root / "CURRENT")
        return info

    def commit(self, staging: Path, manifest: dict, weights_file: str = "head.safetensors",
               make_current: bool = True) -> VersionInfo:
        """Give ``staging`` a version name, write its manifest, and move it into ``versions``."""
        existing = self.versions()
        number = existing[-1].number + 1 if existing else 1
        name = f"raner-{number}-{sha256_of(staging / weights_file)[:8]}"
        manifest = dict(manifest, version=name, created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        write_json_atomic(staging / MANIFEST, manifest)
        os.chmod(staging, 0o755)
        os.rename(staging, self.versions_dir / name)
        if make_current:
            self.set_current(name)
        return self.get(name)
