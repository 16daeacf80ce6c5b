"""The engine around the network: long texts in windows, batching, the cache."""
from __future__ import annotations

import threading
import time

import pytest

from raner_backend.engine.loader import BaseRuntime, build_predictor
from raner_backend.model.base import resolve_base

from .tiny_bert import tiny_examples


@pytest.fixture(scope="module")
def runtime(tiny_model):
    root, base = tiny_model
    return BaseRuntime(resolve_base(str(base), root / "cache"), root / "cache")


@pytest.fixture()
def predictor(runtime, tiny_model):
    root, _ = tiny_model
    return build_predictor(runtime, root / "model", "tiny-1", "onnx-fp32", cache_size=8)


def _spans(result):
    return [(e.start, e.end, e.label) for e in result.entities]


def test_long_text_windows_keep_offsets_and_never_cut_or_double_entities(predictor):
    examples = tiny_examples()
    text, gold = "", set()
    for i in range(40):
        ex = examples[i % len(examples)]
        gold |= {(s.start + len(text), s.end + len(text), s.label) for s in ex.spans}
        text += ex.text
    recall = {}
    for width, overlap in ((100, 32), (24, 8)):  # the small windows put many edges inside entities
        predictor.cache = type(predictor.cache)(0)
        predictor.window_chars, predictor.window_overlap = width, overlap
        result = predictor.predict([text])[0]
        spans = _spans(result)
        assert result.length == len(text) and len(result.char_entropy) == len(text)
        assert len(set(spans)) == len(spans)
        for (s1, e1, _), (s2, _, _) in zip(spans, spans[1:]):
            assert e1 <= s2, "overlapping entities"
        for e in result.entities:
            assert text[e.start : e.end] == e.text
        recall[width] = len(gold & set(spans)) / len(gold)
    assert recall[24] >= recall[100] - 0.1, recall


def test_windowing_changes_nothing_for_a_text_that_fits(predictor):
    text = tiny_examples()[0].text
    whole = _spans(predictor.predict([text])[0])
    predictor.cache = type(predictor.cache)(0)
    predictor.window_chars = 1000
    assert _spans(predictor.predict([text])[0]) == whole


def test_batched_and_single_predictions_agree(predictor):
    texts = [e.text for e in tiny_examples()] + ["", "  ", "x" * 90]
    batched = [_spans(r) for r in predictor.predict(texts)]
    predictor.cache = type(predictor.cache)(0)
    single = [_spans(predictor.predict([t])[0]) for t in texts]
    assert batched == single


def test_emissions_are_what_the_crf_decodes(predictor):
    texts = [e.text for e in tiny_examples()[:4]] + ["", "x" * 90]
    predictor.window_chars, predictor.window_overlap = 24, 8  # stitched from windows, too
    for text, emissions, result in zip(texts, predictor.emissions(texts), predictor.predict(texts)):
        assert emissions.shape == (len(text), predictor.scheme.num_tags)
        assert predictor.crf.viterbi(emissions)[0].tolist() == result.tags.tolist()


def test_results_are_cached_per_text_and_bounded(predictor):
    text = tiny_examples()[1].text
    first = predictor.predict([text])[0]
    assert predictor.predict([text])[0] is first
    for i in range(20):
        predictor.predict([f"{i}号文本"])
    assert len(predictor.cache) == 8
    assert predictor.predict([text])[0] is not first


def test_concurrent_small_requests_are_coalesced_into_batches(runtime, tiny_model):
    from raner_backend.engine.batcher import Coalescer

    root, _ = tiny_model
    predictor = build_predictor(runtime, root / "model", "v1", "onnx-fp32", cache_size=0)
    coalescer = Coalescer(wait_ms=50)
    texts = [e.text for e in tiny_examples()] * 4
    expected = [_spans(r) for r in predictor.predict(texts)]
    got: dict[int, list] = {}

    def client(i):
        (result,) = coalescer.predict(predictor, [texts[i]])
        got[i] = _spans(result)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [got[i] for i in range(len(texts))] == expected
    assert coalescer.batches < len(texts)


def test_a_lone_request_runs_at_once_without_waiting_for_company(runtime, tiny_model):
    from raner_backend.engine.batcher import Coalescer

    root, _ = tiny_model
    predictor = build_predictor(runtime, root / "model", "v1", "onnx-fp32", cache_size=0)
    coalescer = Coalescer(wait_ms=2000)
    started = time.perf_counter()
    coalescer.predict(predictor, ["马云在杭州"])
    assert time.perf_counter() - started < 1.0 and coalescer.batches == 0


class _Failing:
    version = "broken"

    def predict(self, texts, deadline=None):
        raise RuntimeError("the engine failed")


def test_a_failing_batch_reaches_its_callers_and_the_coalescer_survives(runtime, tiny_model):
    from raner_backend.engine.batcher import Coalescer

    root, _ = tiny_model
    good = build_predictor(runtime, root / "model", "v2", "onnx-fp32")
    coalescer = Coalescer(wait_ms=20)
    errors, results = [], []

    def call(predictor):
        try:
            results.append(coalescer.predict(predictor, ["马云在杭州"]))
        except RuntimeError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(p,)) for p in [_Failing()] * 4 + [good] * 4]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors) == 4 and all("the engine failed" in str(e) for e in errors)
    assert len(results) == 4 and coalescer.predict(good, ["马云在杭州"])[0].length == 5


@pytest.mark.parametrize("text, start, end, expected", [
    ("Elon Musk在上海", 4, 9, (5, 9)),  # leading space trimmed
    ("Elon Musk在上海", 5, 8, (5, 9)),  # cut inside a Latin word: widened
    ("华为Mate60发布", 0, 4, (0, 8)),
    ("华为Mate60发布", 0, 2, (0, 2)),  # a Han/Latin boundary is a word boundary
    ("在北京 ", 1, 4, (1, 3)),
    ("  ", 0, 2, None),
    ("Москва的天气", 1, 4, (0, 6)),
    ("@Jay_Chou 新歌", 1, 4, (1, 9)),  # a handle is one word
])
def test_entities_snap_to_words(text, start, end, expected):
    from raner_backend.engine.predictor import snap_to_words

    assert snap_to_words(text, start, end) == expected


class _Recording:
    """Answers each text with its own length and records the thread that computed it."""
    version = "recording"

    def __init__(self):
        self.threads: list[str] = []

    def predict(self, texts, deadline=None):
        self.threads.append(threading.current_thread().name)
        return [len(t) for t in texts]


def test_a_home_thread_computes_the_small_requests_and_a_lone_one_waits_for_no_company():
    from raner_backend.engine.batcher import Coalescer

    coalescer = Coalescer(wait_ms=2000, max_chars=20)
    predictor = _Recording()
    home = threading.Thread(target=coalescer.serve_here, name="home")
    home.start()
    deadline = time.monotonic() + 5
    while not coalescer.has_home and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.perf_counter()
    assert coalescer.predict(predictor, ["马云在杭州"]) == [5]
    assert time.perf_counter() - started < 1.0 and predictor.threads == ["home"]
    assert coalescer.predict(predictor, ["长" * 30]) == [30]  # a large request runs in its caller's thread
    assert predictor.threads[-1] == threading.current_thread().name
    answers = {}
    clients = [threading.Thread(target=lambda i=i: answers.update({i: coalescer.predict(predictor, ["字" * i])}))
               for i in range(1, 5)]
    for t in clients:
        t.start()
    for t in clients:
        t.join()
    assert answers == {i: [i] for i in range(1, 5)} and set(predictor.threads[2:]) == {"home"}
    coalescer.leave_home()
    home.join(5)
    assert not home.is_alive() and not coalescer.has_home
    coalescer.predict(predictor, ["马云"])  # back to the caller's thread
    assert predictor.threads[-1] == threading.current_thread().name
