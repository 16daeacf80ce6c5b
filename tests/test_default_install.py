"""Installing the embedded default model into MODEL_DIR: first run, and after an upgrade of the package."""
from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch

from raner_backend import service
from raner_backend.engine.loader import HEAD_INT8, BaseRuntime
from raner_backend.model.base import resolve_base
from raner_backend.model.bundle import HeadBundle
from raner_backend.service import EMBEDDED_ORIGIN, install_default_model
from raner_backend.model.registry import MANIFEST, Registry, sha256_of, write_json_atomic


@pytest.fixture()
def packaged(tiny_model, tmp_path, monkeypatch):
    """The folder the package ships its default model in, here a copy of the tiny model."""
    root, _ = tiny_model
    folder = tmp_path / "packaged"
    folder.mkdir()
    for name in ("head.safetensors", "head_config.json"):
        shutil.copy(root / "model" / name, folder / name)
    (folder / MANIFEST).write_text(json.dumps({"engine": {"engine": "onnx-fp32"}}))
    monkeypatch.setattr(service, "default_model_folder", lambda: folder)
    return folder


@pytest.fixture()
def runtime(tiny_model):
    root, base = tiny_model
    return BaseRuntime(resolve_base(str(base), root / "cache"), root / "cache")


def _ship_a_new_default(folder):
    bundle = HeadBundle.load(folder)
    with torch.no_grad():
        bundle.crf.transitions.add_(0.5)
    bundle.save(folder)


def _served_weights(settings):
    return sha256_of(Registry(settings.model_dir).current().path / "head.safetensors")


def test_first_run_installs_the_default_and_a_second_run_changes_nothing(packaged, runtime, tmp_path, tiny_settings):
    settings = dataclasses.replace(tiny_settings, model_dir=tmp_path / "fresh")
    first = install_default_model(settings, runtime)
    assert first.manifest["origin"] == EMBEDDED_ORIGIN
    assert _served_weights(settings) == sha256_of(packaged / "head.safetensors")
    assert install_default_model(settings, runtime).name == first.name
    assert len(Registry(settings.model_dir).versions()) == 1


def test_an_upgrade_that_chose_another_engine_serves_the_same_version_with_it(packaged, runtime, tmp_path,
                                                                           tiny_settings):
    settings = dataclasses.replace(tiny_settings, model_dir=tmp_path / "upgraded")
    first = install_default_model(settings, runtime)
    (packaged / MANIFEST).write_text(json.dumps({"engine": {"engine": "onnx-int8"}, "evaluation": {"f1": {}}}))
    again = install_default_model(settings, runtime)
    assert again.name == first.name and len(Registry(settings.model_dir).versions()) == 1
    assert again.manifest["engine"] == {"engine": "onnx-int8"} and again.manifest["origin"] == EMBEDDED_ORIGIN
    assert (again.path / HEAD_INT8).exists()  # prepared at start, not on the first request


def test_an_upgrade_serves_the_new_default_and_keeps_the_old_one(packaged, runtime, tiny_settings):
    registry = Registry(tiny_settings.model_dir)
    old = registry.current()
    write_json_atomic(old.path / MANIFEST, dict(old.manifest, origin=EMBEDDED_ORIGIN))
    _ship_a_new_default(packaged)
    new = install_default_model(tiny_settings, runtime)
    assert new.name != old.name
    assert _served_weights(tiny_settings) == sha256_of(packaged / "head.safetensors")
    assert [v.name for v in registry.versions()] == [old.name, new.name]


def test_a_model_trained_from_annotations_is_never_replaced(packaged, runtime, tiny_settings):
    trained = Registry(tiny_settings.model_dir).current()
    assert trained.manifest["origin"] != EMBEDDED_ORIGIN
    _ship_a_new_default(packaged)
    assert install_default_model(tiny_settings, runtime).name == trained.name


def _package_evaluated(folder, engine: str, f1: dict) -> None:
    (folder / MANIFEST).write_text(json.dumps({"engine": {"engine": engine}, "evaluation": {"f1": f1}}))


def test_auto_serves_the_engine_timed_fastest_here_among_the_accurate_ones(packaged, runtime, tmp_path,
                                                                         tiny_settings):
    _package_evaluated(packaged, "onnx-fp32", {"torch": 0.90, "onnx-fp32": 0.90, "onnx-int8": 0.85})
    settings = dataclasses.replace(tiny_settings, model_dir=tmp_path / "timed", engine="auto")
    first = install_default_model(settings, runtime)
    timed = first.manifest["engine_here"]
    assert set(timed["one_task_p50_ms"]) == {"torch", "onnx-fp32"}  # INT8 lost 5 points: not a candidate
    assert timed["engine"] == min(timed["one_task_p50_ms"], key=timed["one_task_p50_ms"].get)
    assert service.engine_for(first, settings) == timed["engine"]
    assert not runtime._sessions  # the engines not chosen hold no memory
    assert install_default_model(settings, runtime).manifest["engine_here"] == timed  # once per MODEL_DIR


def test_an_upgrade_that_chose_another_engine_is_timed_again(packaged, runtime, tmp_path, tiny_settings):
    _package_evaluated(packaged, "onnx-fp32", {"torch": 0.90, "onnx-fp32": 0.90})
    settings = dataclasses.replace(tiny_settings, model_dir=tmp_path / "retimed", engine="auto")
    install_default_model(settings, runtime)
    _package_evaluated(packaged, "onnx-int8", {"torch": 0.90, "onnx-fp32": 0.90, "onnx-int8": 0.90})
    upgraded = install_default_model(settings, runtime)
    assert set(upgraded.manifest["engine_here"]["one_task_p50_ms"]) == {"torch", "onnx-fp32", "onnx-int8"}
    assert upgraded.manifest["engine"] == {"engine": "onnx-int8"}


def test_an_engine_the_admin_set_is_served_without_timing(packaged, runtime, tmp_path, tiny_settings):
    _package_evaluated(packaged, "onnx-fp32", {"torch": 0.90, "onnx-fp32": 0.90, "onnx-int8": 0.90})
    settings = dataclasses.replace(tiny_settings, model_dir=tmp_path / "set", engine="onnx-int8")
    info = install_default_model(settings, runtime)
    assert "engine_here" not in info.manifest and service.engine_for(info, settings) == "onnx-int8"
    assert (info.path / HEAD_INT8).exists()


def test_the_engine_timed_here_outranks_the_packaged_one(tmp_path):
    from raner_backend.model.registry import VersionInfo

    both = VersionInfo("raner-1-x", tmp_path, {"engine": {"engine": "onnx-fp32"}, "engine_here": {"engine": "onnx-int8"}})
    assert service.recorded_engine(both) == "onnx-int8"
    assert service.recorded_engine(VersionInfo("raner-2-x", tmp_path, {"engine": {"engine": "torch"}})) == "torch"
