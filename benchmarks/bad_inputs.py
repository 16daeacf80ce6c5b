"""The bad-inputs catalogue (``tests/test_bad_inputs.py``), its outcomes written to
benchmarks/results/bad_inputs.json.

    .venv/bin/python benchmarks/bad_inputs.py [pytest options]

The test suite writes the same file into a temporary folder (so running the tests leaves the
committed results alone); this runs those tests with ``RANER_RESULTS_DIR=benchmarks/results``.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def main(argv: list[str]) -> int:
    env = dict(os.environ, RANER_RESULTS_DIR=str(RESULTS))
    code = subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            "tests/test_bad_inputs.py", *argv], cwd=REPO, env=env)
    if code == 0:
        print("written", (RESULTS / "bad_inputs.json").relative_to(REPO))
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
