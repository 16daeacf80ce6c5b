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


def test_long_text_is_cut_between_sentences_without_overlap(predictor):
    sentences = [e.text.rstrip("。") + "。" for e in tiny_examples()[:6]] * 20
    text = "".join(sentences)
    ends = {sum(len(s) for s in sentences[: k + 1]) for k in range(len(sentences))}
    predictor.window_chars = 4 * max(len(s) for s in sentences)
    windows = predictor._windows(0, text)
    assert len(windows) > 3
    assert [w.start for w in windows[1:]] == [w.end for w in windows[:-1]]  # no overlap
    assert all(w.end in ends for w in windows)
    assert predictor.predict([text])[0].length == len(text)


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
    ("Beyonce\u0301在北京", 0, 7, (0, 8)),  # a combining accent belongs to its letter
])
def test_entities_snap_to_words(text, start, end, expected):
    from raner_backend.engine.predictor import snap_to_words

    assert snap_to_words(text, start, end) == expected


class _Recording:
    """Answers each text with its own length and records the thread that computed it."""
    version = "recording"

    def __init__(self, fail_on: str = ""):
        self.threads: list[str] = []
        self.fail_on = fail_on

    def predict(self, texts, deadline=None):
        self.threads.append(threading.current_thread().name)
        if self.fail_on in texts:
            raise RuntimeError("the engine failed")
        return [len(t) for t in texts]


def _at_home(coalescer):
    """The coalescer served by a (daemon) home thread named ``home``, left at the end."""
    from contextlib import contextmanager

    @contextmanager
    def serving():
        home = threading.Thread(target=coalescer.serve_here, name="home", daemon=True)
        home.start()
        deadline = time.monotonic() + 5
        while not coalescer.has_home and time.monotonic() < deadline:
            time.sleep(0.01)
        try:
            yield home
        finally:
            coalescer.leave_home()
            home.join(5)
    return serving()


def _in_threads(call, args_list, timeout: float = 30) -> dict:
    """``call(*args)`` for each args in threads at once; answers (or the exception raised) by index.
    A request that never comes back fails the test instead of blocking it."""
    answers: dict = {}

    def answer(i, args):
        try:
            answers[i] = call(*args)
        except Exception as exc:
            answers[i] = exc

    threads = [threading.Thread(target=answer, args=(i, a), daemon=True) for i, a in enumerate(args_list)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    assert not any(t.is_alive() for t in threads), "a request never came back"
    return answers


def test_a_home_thread_computes_the_small_requests_and_a_lone_one_waits_for_no_company():
    from raner_backend.engine.batcher import Coalescer

    coalescer = Coalescer(wait_ms=2000, max_texts=4, max_chars=20)
    predictor = _Recording()
    with _at_home(coalescer) as home:
        started = time.perf_counter()
        assert _in_threads(coalescer.predict, [(predictor, ["马云在杭州"])]) == {0: [5]}
        assert time.perf_counter() - started < 1.0 and predictor.threads == ["home"]
        assert coalescer.predict(predictor, ["长" * 30]) == [30]  # a large request runs in its caller's thread
        assert predictor.threads[-1] == threading.current_thread().name
        answers = _in_threads(coalescer.predict, [(predictor, ["字" * i]) for i in range(1, 5)])
        assert answers == {i: [i + 1] for i in range(4)} and set(predictor.threads[2:]) == {"home"}
    assert not home.is_alive() and not coalescer.has_home
    coalescer.predict(predictor, ["马云"])  # back to the caller's thread
    assert predictor.threads[-1] == threading.current_thread().name


def test_an_engine_error_at_home_reaches_its_caller_and_the_home_serves_on():
    from raner_backend.engine.batcher import Coalescer

    coalescer = Coalescer(wait_ms=20)
    predictor = _Recording(fail_on="坏")
    with _at_home(coalescer) as home:
        (failed,) = _in_threads(coalescer.predict, [(predictor, ["坏"])]).values()
        assert isinstance(failed, RuntimeError) and "the engine failed" in str(failed)
        assert _in_threads(coalescer.predict, [(predictor, ["马云"])]) == {0: [2]}
        assert predictor.threads == ["home", "home"] and home.is_alive()


def test_without_batching_a_home_computes_one_request_at_a_time_and_hands_back_on_leaving():
    from raner_backend.engine.batcher import Coalescer

    coalescer = Coalescer(wait_ms=0)
    predictor = _Recording()
    with _at_home(coalescer):
        answers = _in_threads(coalescer.predict, [(predictor, ["字" * i]) for i in range(1, 6)])
        assert answers == {i: [i + 1] for i in range(5)} and predictor.threads == ["home"] * 5
        assert coalescer.batches == 5
    assert coalescer.predict(predictor, ["马云"]) == [2] and predictor.threads[-1] == threading.current_thread().name


def test_texts_decoded_together_decode_as_each_alone():
    import numpy as np

    from raner_backend.engine.predictor import DECODE_ALONE, decode_emissions, decode_many
    from raner_backend.model.crf import CRF
    from raner_backend.model.tags import DEFAULT_SCHEME

    params = CRF(DEFAULT_SCHEME).params()
    rng = np.random.default_rng(5)
    lengths = [0, 3, 45, DECODE_ALONE + 40, 1, 45, 200]
    emissions = [rng.normal(0, 4, (n, DEFAULT_SCHEME.num_tags)).astype(np.float32) for n in lengths]
    for together, e in zip(decode_many(params, emissions), emissions):
        alone = decode_emissions(params, e)
        assert together.path.tolist() == alone.path.tolist()
        np.testing.assert_allclose(together.marginals, alone.marginals, atol=1e-6)
        np.testing.assert_allclose(together.entropy, alone.entropy, atol=1e-5)
        assert together.best_path_prob == pytest.approx(alone.best_path_prob, rel=1e-6, abs=1e-9)
