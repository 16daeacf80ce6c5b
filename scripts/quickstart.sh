#!/usr/bin/env bash
# One command from a fresh clone: install the backend and its default model, start a local
# Label Studio (its own venv) and the backend, create a demo project of Chinese sentences
# connected to the backend and pre-annotated, and print where to log in.
#   LS_PORT (8080), PORT (9090), LS_DATA_DIR (./var/label-studio), MODEL_DIR (./var/models)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
LS_PORT=${LS_PORT:-8080}
PORT=${PORT:-9090}
LS_DATA_DIR=${LS_DATA_DIR:-$ROOT/var/label-studio}
export MODEL_DIR=${MODEL_DIR:-$ROOT/var/models}

bash scripts/install.sh
.venv/bin/raner-backend setup
bash scripts/labelstudio.sh install
mkdir -p "$LS_DATA_DIR"
bash scripts/labelstudio.sh start "$LS_DATA_DIR" "$LS_PORT"
TOKEN=$(cat "$LS_DATA_DIR/token")

LABEL_STUDIO_URL="http://127.0.0.1:$LS_PORT" LABEL_STUDIO_API_KEY="$TOKEN" HOST=127.0.0.1 PORT=$PORT \
    nohup .venv/bin/raner-backend serve > "$ROOT/var/backend.log" 2>&1 &
echo $! > "$ROOT/var/backend.pid"
for _ in $(seq 1 120); do
    curl -sf "http://127.0.0.1:$PORT/health" > /dev/null && break
    sleep 1
done
curl -sf "http://127.0.0.1:$PORT/health" > /dev/null || { tail -n 30 "$ROOT/var/backend.log"; exit 1; }

.venv/bin/python scripts/demo_project.py "http://127.0.0.1:$LS_PORT" "$TOKEN" "http://127.0.0.1:$PORT"
cat <<MSG

Label Studio:  http://127.0.0.1:$LS_PORT   login $(cat "$LS_DATA_DIR/username") / $(cat "$LS_DATA_DIR/password")
Backend:       http://127.0.0.1:$PORT/health   (log: var/backend.log)
Data Manager:  the demo opens on "Least certain first" (prediction score shown, sorted ascending);
               in any project: Columns → tick "Prediction score", then click its header to sort.
Stop:          kill \$(cat var/backend.pid); bash scripts/labelstudio.sh stop "$LS_DATA_DIR"
MSG
