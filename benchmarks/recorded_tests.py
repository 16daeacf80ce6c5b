"""Tests whose outcomes are figures: the bad-inputs catalogue (``bad_inputs.json``) and the runs
against a real Label Studio (``e2e_labelstudio.json``: timings, two projects, faults), written to
benchmarks/results/.

    .venv/bin/python benchmarks/recorded_tests.py [test files] [pytest options]

The test suite writes the same files into a temporary folder (so running the tests leaves the
committed results alone); this runs the tests with ``RANER_RESULTS_DIR=benchmarks/results``
(the end-to-end ones need ``MODEL_DIR`` prepared by ``raner-backend setup``, as for the tests).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
RECORDED = ["tests/test_bad_inputs.py", "tests/e2e/test_labelstudio_e2e.py"]


def main(argv: list[str]) -> int:
    tests = [a for a in argv if a.startswith("tests/")] or RECORDED
    options = [a for a in argv if not a.startswith("tests/")]
    env = dict(os.environ, RANER_RESULTS_DIR=str(RESULTS))
    code = subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests, *options],
                           cwd=REPO, env=env)
    if code == 0:
        print("written to", RESULTS.relative_to(REPO))
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
