#!/usr/bin/env bash
# The one test command: install, prepare the default model, run every test (slow ones included).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export MODEL_DIR=${MODEL_DIR:-$PWD/var/test-models}
.venv/bin/raner-backend setup
.venv/bin/python -m pytest -q "$@"
