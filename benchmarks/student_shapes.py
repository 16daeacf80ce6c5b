"""Students of several shapes before any training, to time a shape before training it (speed does
not depend on the weights; F1 of these is meaningless). Built as ``raner-backend distill`` starts
one (``training.distill.student_of``); each re-computes encoder layers 1-K from the
embeddings with its own copy of them (started from the base encoder's), then a head without a
BiLSTM; written as model folders that ``benchmarks/engines.py --model`` times:

    .venv/bin/python benchmarks/student_shapes.py --out /tmp/shapes 3:256: 4:256:1 6:256:1
    .venv/bin/python benchmarks/engines.py --limit 1000 --engines torch,onnx-int8 --no-lac \\
        --model default=raner_backend/default_model --model k4=/tmp/shapes/k4_w256_d1 ...

A shape is ``LAYERS:WIDTH:DILATIONS`` (comma-separated dilations of the head's convolutions, empty
for none).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from raner_backend.cli import _runtime
from raner_backend.model.bundle import HeadBundle
from raner_backend.service import default_model_folder
from raner_backend.settings import Settings
from raner_backend.training.distill import student_of


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True, help="folder for the students' folders")
    parser.add_argument("shapes", nargs="+", help="LAYERS:WIDTH:DILATIONS, e.g. 4:256:1")
    args = parser.parse_args()
    encoder = _runtime(Settings.from_env()).load().encoder
    teacher = HeadBundle.load(default_model_folder())
    for shape in args.shapes:
        layers, width, dilations = shape.split(":")
        overrides = {"layers": [0, int(layers)], "top_layers": int(layers), "lstm_hidden": 0, "width": int(width),
                     "dilations": [int(d) for d in dilations.split(",") if d]}
        student = student_of(teacher, overrides, encoder)
        folder = Path(args.out) / f"k{layers}_w{width}_d{len(overrides['dilations'])}"
        student.save(folder)
        print(folder)


if __name__ == "__main__":
    main()
