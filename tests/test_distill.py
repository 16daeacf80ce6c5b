"""Distilling a model into a one-head student: the student learns the teacher's emissions from the
states of the engine it will serve with, and serves through the normal predictor."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from raner_backend.engine.loader import BaseRuntime, build_predictor
from raner_backend.model.base import resolve_base
from raner_backend.model.bundle import HeadBundle
from raner_backend.training.trainer import Item, collate, distillation_loss

from .tiny_bert import make_tiny_bert, tiny_examples, write_tagged

TINY_HEAD = {"layers": [1, 2], "width": 48, "char_dim": 16, "lstm_hidden": 16, "top_layers": 1}


@pytest.fixture(scope="module")
def teacher_and_student(tmp_path_factory):
    from raner_backend.cli import main

    root = tmp_path_factory.mktemp("distill")
    base = make_tiny_bert(root / "bert")
    data = write_tagged(root / "tiny.txt", tiny_examples() * 4)
    common = ["--data", str(data), "--dev-size", "2", "--batch-chars", "256", "--head-lr", "5e-3", "--top-lr", "1e-3"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BASE_MODEL", str(base))
        mp.setenv("CACHE_DIR", str(root / "cache"))
        assert main(["train", *common, "--out", str(root / "teacher"), "--epochs", "30", "--patience", "30",
                     "--head-config", json.dumps(TINY_HEAD)]) == 0
        assert main(["distill", *common, "--teacher", str(root / "teacher"), "--out", str(root / "student"),
                     "--epochs", "30", "--patience", "30", "--states", "onnx-int8"]) == 0
    runtime = BaseRuntime(resolve_base(str(base), root / "cache"), root / "cache").load()
    return root / "teacher", root / "student", runtime


def test_the_student_drops_the_lstm_and_keeps_the_rest_of_the_teachers_shape(teacher_and_student):
    teacher, student, _ = teacher_and_student
    t, s = HeadBundle.load(teacher).head.cfg, HeadBundle.load(student).head.cfg
    assert t.lstm_hidden == 16 and s.lstm_hidden == 0
    assert (s.layers, s.top_layers, s.width) == (t.layers, t.top_layers, t.width)
    summary = json.loads((student / "training.json").read_text())
    assert summary["states"] == "onnx-int8" and summary["distill"] == 1.0
    assert summary["best_dev_f1"] > 0


def test_the_student_answers_as_the_teacher_does(teacher_and_student):
    teacher, student, runtime = teacher_and_student
    texts = [e.text for e in tiny_examples()]
    answers = []
    for folder, engine in ((teacher, "torch"), (student, "onnx-int8")):
        predictor = build_predictor(runtime, folder, folder.name, engine, cache_size=0)
        answers.append([[(e.start, e.end, e.label) for e in r.entities] for r in predictor.predict(texts)])
    teacher_spans = {s for row in answers[0] for s in row}
    student_spans = {s for row in answers[1] for s in row}
    assert teacher_spans, "the tiny teacher should find entities"
    assert len(teacher_spans & student_spans) >= 0.8 * len(teacher_spans)


def test_distillation_loss_is_zero_at_the_teachers_emissions_and_ignores_padding():
    teacher = torch.randn(2, 5, 7)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]).bool()
    assert distillation_loss(teacher.clone(), teacher, mask).item() == 0.0
    off_in_padding = teacher.clone()
    off_in_padding[0, 4] += 10
    assert distillation_loss(off_in_padding, teacher, mask).item() == 0.0
    off = teacher.clone()
    off[1, 0, 0] += 2.0
    assert distillation_loss(off, teacher, mask).item() == pytest.approx(4.0 / 8)


def test_collate_marks_the_items_that_carry_a_teacher():
    def item(n, teacher):
        zeros = np.zeros(n, dtype=np.int64)
        return Item(np.zeros((n + 2, 1, 4), np.float16), zeros, zeros, zeros + 1, zeros + 1, zeros, (), (), teacher)

    with_teacher = [item(3, np.ones((3, 7), np.float16)), item(5, np.full((5, 7), 2.0, np.float16))]
    _, f = collate(with_teacher)
    teacher, taught = f["teacher"]
    assert teacher.shape == (2, 5, 7) and taught.tolist() == [True, True]
    assert teacher[0, 3:].abs().sum() == 0 and teacher[1, 4, 0] == 2.0
    _, f = collate([with_teacher[0], item(2, None)])
    assert f["teacher"][1].tolist() == [True, False]
    _, f = collate([item(2, None)])
    assert f["teacher"] is None


def test_distillation_matches_only_the_tags_the_teacher_knows():
    teacher = torch.randn(1, 4, 3)
    student = torch.cat([teacher.clone(), torch.randn(1, 4, 2) * 10], dim=-1)  # two tags grown since
    mask = torch.ones(1, 4, dtype=torch.bool)
    assert distillation_loss(student, teacher, mask).item() == 0.0
    student[0, 0, 0] += 1.0
    assert distillation_loss(student, teacher, mask).item() == pytest.approx(1.0 / 4)
    assert distillation_loss(student, teacher, torch.zeros(1, 4, dtype=torch.bool)).item() == 0.0

@pytest.fixture(scope="module")
def layer_student(teacher_and_student, tmp_path_factory):
    """A student that re-computes every layer of the (two-layer) tiny encoder from its embeddings."""
    from raner_backend.cli import main

    teacher, _, runtime = teacher_and_student
    root = teacher.parent
    data = write_tagged(tmp_path_factory.mktemp("layers") / "tiny.txt", tiny_examples() * 4)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BASE_MODEL", runtime.base.path)
        mp.setenv("CACHE_DIR", str(root / "cache"))
        assert main(["distill", "--data", str(data), "--dev-size", "2", "--batch-chars", "256", "--head-lr", "5e-3",
                     "--top-lr", "1e-3", "--teacher", str(teacher), "--out", str(root / "layers"), "--epochs", "30",
                     "--patience", "30", "--states", "torch",
                     "--head-config", json.dumps({"layers": [0, 2], "top_layers": 2, "lstm_hidden": 0})]) == 0
    return root / "layers"


def test_a_student_of_the_lower_layers_starts_as_the_base_encoder(teacher_and_student):
    from raner_backend.model.network import EncoderStates
    from raner_backend.training.distill import student_of

    teacher, _, runtime = teacher_and_student
    student = student_of(HeadBundle.load(teacher), {"layers": [0, 2], "top_layers": 2, "lstm_hidden": 0},
                         runtime.encoder).head.eval()
    batch = runtime.tokenizer([e.text for e in tiny_examples()], padding=True, return_tensors="pt")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.inference_mode():
        embeddings = EncoderStates(runtime.encoder, (0,))(ids, mask)
        recomputed = student.top(embeddings, mask)[:, :, -1]
        layer_2 = EncoderStates(runtime.encoder, (2,))(ids, mask)[:, :, 0]
    real = mask.bool()
    assert torch.allclose(recomputed[real], layer_2[real], atol=1e-5)


def test_a_student_of_the_lower_layers_serves_from_the_embeddings_alone(teacher_and_student, layer_student):
    from .emissions import emission_gap

    teacher, _, runtime = teacher_and_student
    assert HeadBundle.load(layer_student).head.cfg.base_layers == (0,)
    texts = [e.text for e in tiny_examples()]
    torch_predictor = build_predictor(runtime, layer_student, "layers", "torch", cache_size=0)
    for engine in ("onnx-fp32", "onnx-int8"):
        # The encoder's export reads no attention mask: the embeddings do not need one.
        onnx_predictor = build_predictor(runtime, layer_student, "layers", engine, cache_size=0)
        assert "attention_mask" not in onnx_predictor.backend.encoder_inputs
        gap, scale = emission_gap(torch_predictor, onnx_predictor, texts)
        assert gap < (1e-3 if engine == "onnx-fp32" else 0.1) * scale
    summary = json.loads((layer_student / "training.json").read_text())
    assert summary["teacher_engine"] == "onnx-int8" and summary["best_dev_f1"] > 0
    teacher_spans = {(k, e.start, e.end, e.label) for k, r in enumerate(
        build_predictor(runtime, teacher, "t", "torch", cache_size=0).predict(texts)) for e in r.entities}
    student_spans = {(k, e.start, e.end, e.label) for k, r in enumerate(torch_predictor.predict(texts))
                     for e in r.entities}
    assert len(teacher_spans & student_spans) >= 0.8 * len(teacher_spans)
