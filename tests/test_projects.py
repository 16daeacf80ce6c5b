"""One backend, many projects: a lineage of versions per project, any label set, a tag set that
grows with a project's new entity types (partial labels where a text cannot speak for a type)."""
from __future__ import annotations

import json
import shutil
import threading
import time

import numpy as np
import pytest
import torch

from raner_backend.engine.projects import ProjectModels
from raner_backend.model.bundle import HeadBundle
from raner_backend.model.crf import CRF
from raner_backend.model.registry import Registry, RegistryError
from raner_backend.model.tags import TagScheme

from .fake_labelstudio import FakeLabelStudio
from .tiny_bert import tiny_examples

PRODUCT_CONFIG = """<View><Labels name="label" toName="text"><Label value="人物"/><Label value="地点"/>
  <Label value="机构"/><Label value="产品"/></Labels><Text name="text" value="$text"/></View>"""


def _version(registry: Registry, weights: bytes, **manifest) -> str:
    staging = registry.new_staging()
    (staging / "head.safetensors").write_bytes(weights)
    return registry.commit(staging, manifest, make_current=False).name


# --- the registry: lineages and pointers ---------------------------------------------------------


def test_each_project_has_its_own_pointer_and_lineage(tmp_path):
    registry = Registry(tmp_path)
    default = _version(registry, b"d", origin="embedded default model")
    registry.set_current(default)
    own = _version(registry, b"p3", project=3, parent=default)
    other = _version(registry, b"p4", project=4, parent=default)
    registry.set_current(own, 3)
    assert registry.current().name == default and registry.current(4).name == default
    assert registry.current(3).name == own and registry.pointed(4) is None
    assert [v.name for v in registry.lineage(3)] == [default, own]
    assert registry.projects() == [3]
    with pytest.raises(RegistryError, match="trained for project 4"):
        registry.set_current(other, 3)
    with pytest.raises(RegistryError, match="trained for project 3"):
        registry.set_current(own)


def test_a_pointer_to_a_missing_version_falls_back_to_the_default_with_one_warning(tmp_path, caplog):
    registry = Registry(tmp_path)
    default = _version(registry, b"d", origin="embedded default model")
    registry.set_current(default)
    own = _version(registry, b"p3", project=3, parent=default)
    registry.set_current(own, 3)
    shutil.rmtree(registry.versions_dir / own)
    with caplog.at_level("WARNING", logger="raner_backend.model.registry"):
        assert registry.current(3).name == default and registry.current(3).name == default
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and own in warnings[0] and "default version serves" in warnings[0]


def test_a_model_dir_of_one_lineage_is_adopted_without_losing_a_version(tmp_path):
    registry = Registry(tmp_path)
    default = _version(registry, b"d", origin="embedded default model")
    first = _version(registry, b"a", project=7, parent=default)
    second = _version(registry, b"b", project=7, parent=first)
    other = _version(registry, b"c", project=9, parent=second)
    (tmp_path / "CURRENT").write_text(second + "\n")  # the old layout: one global pointer
    registry.adopt_single_lineage()
    assert registry.current(7).name == second and registry.current(9).name == other
    assert registry.current().name == default and registry.current(1).name == default
    assert len(registry.versions()) == 4
    registry.set_current(first, 7)
    registry.adopt_single_lineage()  # once only
    assert registry.current(7).name == first


# --- which version serves whom, and what stays loaded ---------------------------------------------


class _Loaded:
    def __init__(self, info):
        self.version = info.name
        self.backend = type("B", (), {"name": "fake"})()


def test_project_models_serve_projects_apart_and_keep_a_bounded_number_loaded(tmp_path):
    registry = Registry(tmp_path)
    default = _version(registry, b"d")
    registry.set_current(default)
    builds = []
    models = ProjectModels(registry, lambda info: builds.append(info.name) or _Loaded(info), max_loaded=3)
    models.serve(registry.get(default))
    owns = {p: _version(registry, f"p{p}".encode(), project=p) for p in (1, 2, 3, 4)}
    for p, name in owns.items():
        models.serve(registry.get(name), p)
    assert {p: models.version(p) for p in (1, 2, 3, 4, 5)} == {**owns, 5: default}
    assert len(models.loaded()) == 3 and default in models.loaded(), "the default is never unloaded"
    assert models.predictor(1).version == owns[1], "an unloaded version loads again on demand"
    assert registry.current(2).name == owns[2], "a project's version is written to MODEL_DIR"
    assert models.projects() == owns


def test_versions_that_serve_no_project_keep_their_weights_and_lose_their_exports(tmp_path):
    registry = Registry(tmp_path)
    default = _version(registry, b"d")
    first, second = _version(registry, b"a", project=5), _version(registry, b"b", project=5)
    for name in (default, first, second):
        (registry.get(name).path / "head.onnx").write_bytes(b"export")
    models = ProjectModels(registry, _Loaded)
    models.serve(registry.get(default))
    models.serve(registry.get(first), 5)
    assert not (registry.get(second).path / "head.onnx").exists(), "never served"
    models.serve(registry.get(second), 5)
    assert not (registry.get(first).path / "head.onnx").exists()
    assert (registry.get(first).path / "head.safetensors").exists(), "a rollback needs the weights"
    assert (registry.get(default).path / "head.onnx").exists(), "the default still serves other projects"
    assert registry.serving() == {default, second}


def test_a_request_waits_for_the_load_that_setup_started(tmp_path):
    registry = Registry(tmp_path)
    default = _version(registry, b"d")
    own = _version(registry, b"p", project=8)
    registry.set_current(default)
    registry.set_current(own, 8)
    release = threading.Event()
    builds = []

    def slow_build(info):
        builds.append(info.name)
        if info.name == own:
            release.wait(5)
        return _Loaded(info)

    models = ProjectModels(registry, slow_build)
    models.serve(registry.get(default), record=False)
    models.prepare(8)
    got = []
    waiter = threading.Thread(target=lambda: got.append(models.predictor(8).version))
    waiter.start()
    time.sleep(0.1)
    assert not got
    release.set()
    waiter.join(5)
    assert got == [own] and builds.count(own) == 1


def test_a_version_that_cannot_load_is_logged_and_refused_with_its_reason(tmp_path, caplog):
    from raner_backend.engine.projects import ModelUnavailable

    registry = Registry(tmp_path)
    default, broken = _version(registry, b"d"), _version(registry, b"p", project=9)
    registry.set_current(default)
    registry.set_current(broken, 9)

    def build(info):
        if info.name == broken:
            raise OSError("head.onnx: no such file")
        return _Loaded(info)

    models = ProjectModels(registry, build)
    models.serve(registry.get(default), record=False)
    models.prepare(9)  # as /setup does: in the background
    with pytest.raises(ModelUnavailable, match=f"{broken} could not be loaded: OSError: head.onnx"):
        models.predictor(9)
    assert f"could not load model version {broken}" in caplog.text
    assert models.predictor(10).version == default, "other projects are served as before"


def test_a_deployed_version_is_loaded_before_it_serves(tmp_path):
    registry = Registry(tmp_path)
    default, new = _version(registry, b"d"), _version(registry, b"n", project=4)
    builds = []
    models = ProjectModels(registry, lambda info: builds.append(info.name) or _Loaded(info))
    models.serve(registry.get(default))
    seen = []
    original = registry.set_current

    def pointer_moves(name, project=None):  # a request arriving the moment the pointer moves
        original(name, project)
        seen.append(name in models.loaded())

    registry.set_current = pointer_moves
    models.serve(registry.get(new), 4)
    assert seen == [True] and builds.count(new) == 1


# --- the tag set grows ---------------------------------------------------------------------------


def test_a_grown_model_keeps_every_known_tag_and_predicts_nothing_new_until_trained(tiny_model):
    from raner_backend.training.fine_tune import items_for
    from raner_backend.training.trainer import item_emissions, predict_spans

    from .test_fine_tune import _runtime

    root, _ = tiny_model
    runtime = _runtime(tiny_model)
    served = HeadBundle.load(root / "model")
    grown = served.with_entity_types(["PER", "产品", "疾病"])
    assert grown.scheme.entity_types == served.scheme.entity_types + ("产品", "疾病")
    assert grown.head.cfg.num_tags == grown.scheme.num_tags == served.scheme.num_tags + 4
    items = items_for(runtime.tokenizer, _states(runtime, grown), grown, tiny_examples())
    old = dict(item_emissions(served.head, items))
    for i, emissions in item_emissions(grown.head, items):
        assert torch.allclose(torch.from_numpy(emissions[:, : served.scheme.num_tags]), torch.from_numpy(old[i]))
    assert predict_spans(grown.head, grown.crf, grown.scheme, items) == predict_spans(
        served.head, served.crf, served.scheme, items)
    assert grown.crf.transitions[: served.scheme.num_tags, : served.scheme.num_tags].equal(served.crf.transitions)


def test_grown_types_are_young_until_learned_from_enough_mentions(tiny_model, tmp_path):
    from raner_backend.model.bundle import YOUNG_TYPE_MENTIONS

    root, _ = tiny_model
    served = HeadBundle.load(root / "model")
    assert served.young_types() == ()
    grown = served.with_entity_types(["PER", "产品", "疾病"])
    assert grown.learned_from == {"产品": 0, "疾病": 0} and grown.young_types() == ("产品", "疾病")
    grown.learned_from["疾病"] = YOUNG_TYPE_MENTIONS
    grown.save(tmp_path)
    assert HeadBundle.load(tmp_path).young_types() == ("产品",)


def test_partial_labels_sum_over_the_tags_a_text_cannot_speak_for():
    scheme = TagScheme(("PER", "产品"))
    crf = CRF(scheme)
    torch.manual_seed(0)
    with torch.no_grad():
        crf.transitions.normal_()
    emissions = torch.randn(2, 5, scheme.num_tags)
    tags = torch.tensor([[1, 2, 0, 0, 0], [0, 0, 0, 1, 0]])
    mask = torch.ones(2, 5, dtype=torch.bool)
    one_hot = torch.nn.functional.one_hot(tags, scheme.num_tags).bool()
    assert crf.nll(emissions, tags, mask, one_hot).item() == pytest.approx(crf.nll(emissions, tags, mask).item(), abs=1e-4)
    partial = one_hot.clone()
    partial[..., 3:] |= (tags == 0).unsqueeze(-1)  # an O may also be B- or I-产品
    assert crf.nll(emissions, tags, mask, partial) < crf.nll(emissions, tags, mask)


def test_unsure_ranges_allow_every_tag_where_the_labels_say_o():
    from raner_backend.training.trainer import Item, partial_labels

    tags = torch.tensor([[1, 2, 0, 0, 0]])
    item = Item(None, None, None, np.zeros(5), None, tags[0].numpy(), (), unsure=((1, 4),))
    allowed = partial_labels([item], tags, 5)
    assert allowed[0, 0].tolist() == [False, True, False, False, False]
    assert allowed[0, 1].tolist() == [False, False, True, False, False]  # inside a kept span: its tag only
    assert allowed[0, 2].tolist() == [True, True, False, True, True]  # anything but I-PER: 0-2 stays a span
    assert allowed[0, 3].all()
    assert allowed[0, 4].tolist() == [True, False, False, False, False]


# --- learning a type the model never saw --------------------------------------------------------


PRODUCT_TEXTS = ["华为在深圳发布Mate60手机。", "李明买了Mate60。", "王芳在上海用Mate60拍照。", "今天天气很好。"]
PRODUCT_SPANS = [[(0, 2, "机构"), (3, 5, "地点"), (7, 13, "产品")], [(0, 2, "人物"), (4, 10, "产品")],
                 [(0, 2, "人物"), (3, 5, "地点"), (6, 12, "产品")], []]


def test_a_project_learns_its_own_label_and_other_projects_keep_their_model(tiny_backend, client, monkeypatch):
    from .test_reliability import _train_and_wait

    fake = FakeLabelStudio(PRODUCT_TEXTS * 3 + ["张伟用Mate60看新闻。"], label_config=PRODUCT_CONFIG)
    for i in range(12):
        fake.annotate(i, PRODUCT_SPANS[i % 4])
    monkeypatch.setattr("raner_backend.training.ls_client.LabelStudioClient", lambda *a, **k: fake)
    before = client.post("/predict", json={"tasks": [{"id": 1, "data": {"text": PRODUCT_TEXTS[0]}}],
                                           "project": "2"}).json
    status = _train_and_wait(client, tiny_backend, 12)
    assert status["last_error"] is None, status
    note = tiny_backend.deploy_notes[-1]
    info = tiny_backend.registry.get(tiny_backend.models.version(12))
    assert info.project == 12 and info.manifest["parent"] == tiny_backend.models.version()
    assert info.manifest["training"]["new_types"] == ["产品"], note
    assert tiny_backend.models.version(2) == tiny_backend.models.version() != info.name
    after = client.post("/predict", json={"tasks": [{"id": 1, "data": {"text": PRODUCT_TEXTS[0]}}],
                                          "project": "2"}).json
    assert after == before, "project 2 is served exactly as before"
    health = client.get("/health").json
    assert health["projects"] == {"12": info.name} and info.name in health["loaded_models"]


def test_a_connecting_project_is_ranked_once_per_version_so_label_studio_can_sort_it(tiny_settings, monkeypatch):
    import dataclasses

    from raner_backend.labeling import DEFAULT_LABEL_CONFIG
    from raner_backend.server.app import create_app
    from raner_backend.service import Backend

    fake = FakeLabelStudio(["张伟在北京工作。", "李娜去了上海。", "今天天气很好。"])
    monkeypatch.setattr("raner_backend.training.ls_client.LabelStudioClient", lambda *a, **k: fake)
    backend = Backend(dataclasses.replace(tiny_settings, rank_on_connect=True)).start()
    client = create_app(backend).test_client()
    for _ in range(3):  # Label Studio sends /setup two or three times on connect
        assert client.post("/setup", json={"project": "6.17", "schema": DEFAULT_LABEL_CONFIG}).status_code == 200
    deadline = time.time() + 60
    while backend.rankings.get(6, {}).get("stage") not in ("done", "failed") and time.time() < deadline:
        time.sleep(0.1)
    assert backend.rankings[6]["stage"] == "done", backend.rankings
    assert fake.model_version == backend.models.version(6)
    assert all(len(t["predictions"]) == 1 for t in fake.tasks_), "every task has one prediction of the version"
    imports = json.dumps(fake.calls)
    client.post("/setup", json={"project": "6.17", "schema": DEFAULT_LABEL_CONFIG})
    time.sleep(0.5)
    assert json.dumps(fake.calls) == imports, "the same version is not ranked again"


def _states(runtime, bundle):
    return runtime.states_module(bundle.head.cfg.base_layers, bundle.vocab, "torch")


def test_a_ranking_whose_version_stops_serving_stops_and_never_sets_the_old_version(tiny_backend, monkeypatch):
    from raner_backend.service import RankingSuperseded

    fake = FakeLabelStudio(["张伟在北京工作。", "李娜去了上海。", "今天天气很好。"])
    monkeypatch.setattr("raner_backend.training.ls_client.LabelStudioClient", lambda *a, **k: fake)
    old = tiny_backend.registry.get(tiny_backend.models.version(7))
    staging = tiny_backend.registry.staged_copy(old.path, ("head.safetensors", "head_config.json", "head.onnx"))
    new = tiny_backend.registry.commit(staging, {**old.manifest, "project": 7, "parent": old.name}, make_current=False)

    def deploy_meanwhile(stage, done, total):
        if stage == "predict" and done == 0:  # a training deploys while the ranking predicts
            tiny_backend.models.serve(new, 7)

    with pytest.raises(RankingSuperseded):
        tiny_backend.rank_project(7, progress=deploy_meanwhile)
    assert tiny_backend.rankings[7]["stage"] == "superseded" and fake.model_version != old.name
    assert tiny_backend.rank_project(7).model_version == new.name == fake.model_version


def test_a_ranking_beside_a_serving_backend_stops_when_that_backend_deploys(tiny_backend, monkeypatch):
    from raner_backend.service import Backend, RankingSuperseded

    fake = FakeLabelStudio(["张伟在北京工作。", "李娜去了上海。"])
    monkeypatch.setattr("raner_backend.training.ls_client.LabelStudioClient", lambda *a, **k: fake)
    command = Backend(tiny_backend.settings).start(install=False, preload=False)  # `raner-backend rank`
    old = tiny_backend.registry.get(tiny_backend.models.version(3))
    staging = tiny_backend.registry.staged_copy(old.path, ("head.safetensors", "head_config.json", "head.onnx"))
    new = tiny_backend.registry.commit(staging, {**old.manifest, "project": 3, "parent": old.name}, make_current=False)

    def server_deploys(stage, done, total):
        if stage == "predict" and done == 0:
            tiny_backend.models.serve(new, 3)  # the serving process, not the command's

    with pytest.raises(RankingSuperseded):
        command.rank_project(3, progress=server_deploys)
    assert fake.model_version != old.name
