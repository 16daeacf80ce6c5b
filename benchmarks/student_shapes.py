"""Untrained students of several shapes, to time a shape before training it (speed does not depend
on the weights; F1 of these is meaningless). Each re-computes encoder layers 1-K from the
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
import copy
from pathlib import Path

from raner_backend.cli import _runtime
from raner_backend.model.bundle import HeadBundle, single_heads
from raner_backend.model.network import CharHead, HeadConfig
from raner_backend.service import default_model_folder
from raner_backend.settings import Settings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True, help="folder for the students' folders")
    parser.add_argument("shapes", nargs="+", help="LAYERS:WIDTH:DILATIONS, e.g. 4:256:1")
    args = parser.parse_args()
    encoder = _runtime(Settings.from_env()).load().encoder
    teacher = HeadBundle.load(default_model_folder())
    member = single_heads(teacher.head)[0]
    for shape in args.shapes:
        layers, width, dilations = shape.split(":")
        cfg = HeadConfig.from_dict(dict(member.cfg.to_dict(), layers=[0, int(layers)], top_layers=int(layers),
                                        lstm_hidden=0, width=int(width),
                                        dilations=[int(d) for d in dilations.split(",") if d]))
        head = CharHead(cfg)
        head.top.copy_from_bert(encoder)
        folder = Path(args.out) / f"k{layers}_w{width}_d{len(cfg.dilations)}"
        HeadBundle(teacher.scheme, teacher.vocab, head.eval(), copy.deepcopy(teacher.crf), teacher.base).save(folder)
        print(folder)


if __name__ == "__main__":
    main()
