#!/usr/bin/env bash
# A real Label Studio 1.23.2 for end-to-end tests, in its own venv (.venv-ls), never the project's.
#
#   scripts/labelstudio.sh install               create .venv-ls with label-studio==1.23.2 (idempotent)
#   scripts/labelstudio.sh start DATA_DIR PORT   start it in the background on 127.0.0.1:PORT; waits for /health
#   scripts/labelstudio.sh stop DATA_DIR         stop the one started with that DATA_DIR
#
# start writes DATA_DIR/ls.pid, DATA_DIR/ls.log, DATA_DIR/token (the admin's legacy API token),
# DATA_DIR/username and DATA_DIR/password. The token is $LS_TOKEN when set (40 hex chars), else
# generated. Label Studio runs with a clean, explicit environment (env -i): a stray USERNAME,
# PASSWORD or PORT in CI would otherwise leak into its settings.
#
# A fresh database takes 30-40 s to migrate. After the first successful start the migrated
# sqlite database (with its admin user and token) is saved under .cache/ls-template/; later
# starts copy it into the new DATA_DIR and take a few seconds. The template's own admin token is
# then used (a $LS_TOKEN that differs from it forces a fresh database). A template that does not
# answer with its token is thrown away and the start is redone on a fresh database.
# LS_NO_TEMPLATE=1 disables the template; LS_START_TIMEOUT (180) bounds the wait for /health.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
LS_VERSION=1.23.2
VENV=${LS_VENV:-$ROOT/.venv-ls}
TEMPLATE=${LS_TEMPLATE_DIR:-$ROOT/.cache/ls-template}
TIMEOUT=${LS_START_TIMEOUT:-180}
USERNAME_=admin@example.com

die() { echo "labelstudio.sh: $*" >&2; exit 1; }
log() { echo "labelstudio.sh: $*" >&2; }

installed() {
    [ -x "$VENV/bin/label-studio" ] || return 1
    # Not `label-studio --version`: in 1.23.2 it starts a server on 0.0.0.0:8080 (default data
    # dir in ~/.local/share) and never returns. Ask the installed distribution instead.
    [ "$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("label-studio"))' 2>/dev/null)" \
        = "$LS_VERSION" ]
}

cmd_install() {
    if installed; then
        log "label-studio $LS_VERSION already in $VENV"
        return 0
    fi
    local started=$SECONDS
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
    "$VENV/bin/pip" install -q "label-studio==$LS_VERSION"
    installed || die "label-studio $LS_VERSION not usable in $VENV after install"
    log "installed label-studio $LS_VERSION in $VENV in $((SECONDS - started)) s"
}

random_hex() { "$VENV/bin/python" -c "import secrets; print(secrets.token_hex($1))"; }

find_db() { find "$1" -maxdepth 3 -name '*.sqlite3' -type f 2>/dev/null | head -n 1; }

# Copy a live sqlite database consistently (online backup API, not cp).
sqlite_backup() {
    "$VENV/bin/python" - "$1" "$2" <<'EOF'
import sqlite3, sys
src, dst = sqlite3.connect(sys.argv[1]), sqlite3.connect(sys.argv[2])
with dst:
    src.backup(dst)
dst.close(); src.close()
EOF
}

is_running() { [ -f "$1/ls.pid" ] && kill -0 "$(cat "$1/ls.pid")" 2>/dev/null; }

# Launch Label Studio on DATA_DIR/PORT with the credentials already in DATA_DIR; wait for /health.
# Returns 1 (after printing the log tail) when it dies or does not answer in time.
launch() {
    local data=$1 port=$2
    local token password
    token=$(cat "$data/token")
    password=$(cat "$data/password")
    : >"$data/ls.log"
    # setsid: its own process group, so `stop` can end it with everything it spawned.
    setsid env -i \
        PATH="$VENV/bin:/usr/local/bin:/usr/bin:/bin" \
        HOME="${HOME:-/tmp}" \
        LANG=C.UTF-8 LC_ALL=C.UTF-8 \
        LABEL_STUDIO_BASE_DATA_DIR="$data" \
        LABEL_STUDIO_USERNAME="$USERNAME_" \
        LABEL_STUDIO_PASSWORD="$password" \
        LABEL_STUDIO_USER_TOKEN="$token" \
        LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true \
        LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK=true \
        ML_BLOCK_LOCAL_IP=false \
        SSRF_PROTECTION_ENABLED=false \
        COLLECT_ANALYTICS=false \
        LATEST_VERSION_CHECK=false \
        SENTRY_DSN= \
        FRONTEND_SENTRY_DSN= \
        "$VENV/bin/label-studio" start --no-browser --internal-host 127.0.0.1 -p "$port" \
        --data-dir "$data" >>"$data/ls.log" 2>&1 </dev/null &
    echo $! >"$data/ls.pid"
    local started=$SECONDS
    until curl -sf -o /dev/null "http://127.0.0.1:$port/health"; do
        if ! kill -0 "$(cat "$data/ls.pid")" 2>/dev/null; then
            log "Label Studio exited before answering /health; log tail:"
            tail -n 40 "$data/ls.log" >&2
            return 1
        fi
        if [ $((SECONDS - started)) -ge "$TIMEOUT" ]; then
            log "Label Studio did not answer /health within $TIMEOUT s; log tail:"
            tail -n 40 "$data/ls.log" >&2
            return 1
        fi
        sleep 0.5
    done
    log "Label Studio up on http://127.0.0.1:$port in $((SECONDS - started)) s (pid $(cat "$data/ls.pid"))"
}

token_works() {
    curl -sf -o /dev/null -H "Authorization: Token $(cat "$1/token")" "http://127.0.0.1:$2/api/projects?page_size=1"
}

cmd_start() {
    [ $# -eq 2 ] || die "usage: start DATA_DIR PORT"
    local data=$1 port=$2
    mkdir -p "$data"
    data=$(cd "$data" && pwd)
    installed || die "label-studio $LS_VERSION is not installed in $VENV (run: $0 install)"
    is_running "$data" && die "already running for $data (pid $(cat "$data/ls.pid"))"
    if [ -n "$(find_db "$data")" ]; then
        log "$data already has a database; starting on it"
    fi

    local use_template=0
    if [ "${LS_NO_TEMPLATE:-0}" != 1 ] && [ -z "$(find_db "$data")" ] && [ -f "$TEMPLATE/db.sqlite3" ] \
        && [ -f "$TEMPLATE/token" ] && [ -f "$TEMPLATE/dbname" ] \
        && [ "$(cat "$TEMPLATE/version" 2>/dev/null)" = "$LS_VERSION" ]; then
        if [ -n "${LS_TOKEN:-}" ] && [ "$LS_TOKEN" != "$(cat "$TEMPLATE/token")" ]; then
            log "LS_TOKEN differs from the template's token: fresh database"
        else
            use_template=1
        fi
    fi

    if [ "$use_template" = 1 ]; then
        cp "$TEMPLATE/db.sqlite3" "$data/$(cat "$TEMPLATE/dbname")"
        cp "$TEMPLATE/token" "$data/token"
        cp "$TEMPLATE/password" "$data/password"
        if launch "$data" "$port" && token_works "$data" "$port"; then
            echo "$USERNAME_" >"$data/username"
            chmod 600 "$data/token" "$data/password"
            log "started from the template database"
            return 0
        fi
        log "the template database did not work; discarding it and starting fresh"
        cmd_stop "$data" || true
        rm -rf "$TEMPLATE"
        find "$data" -mindepth 1 -maxdepth 1 ! -name ls.log -exec rm -rf {} +
        mv "$data/ls.log" "$data/ls.template-attempt.log" 2>/dev/null || true
    fi

    local token=${LS_TOKEN:-}
    if [ -z "$token" ] && [ -f "$data/token" ]; then token=$(cat "$data/token"); fi
    [ -n "$token" ] || token=$(random_hex 20)
    [[ "$token" =~ ^[0-9a-f]{40}$ ]] || die "the token must be 40 lowercase hex characters"
    local password=${LS_PASSWORD:-}
    if [ -z "$password" ] && [ -f "$data/password" ]; then password=$(cat "$data/password"); fi
    [ -n "$password" ] || password=$(random_hex 12)
    (umask 077; echo "$token" >"$data/token"; echo "$password" >"$data/password")
    echo "$USERNAME_" >"$data/username"

    local fresh=0
    [ -z "$(find_db "$data")" ] && fresh=1
    launch "$data" "$port" || { cmd_stop "$data" || true; die "Label Studio failed to start"; }
    token_works "$data" "$port" || { cmd_stop "$data" || true; die "Label Studio is up but rejects its admin token"; }

    if [ "$fresh" = 1 ] && [ "${LS_NO_TEMPLATE:-0}" != 1 ] && [ ! -f "$TEMPLATE/db.sqlite3" ]; then
        save_template "$data" || log "could not save the template (ignored)"
    fi
}

save_template() {
    local data=$1 db tmp
    db=$(find_db "$data")
    [ -n "$db" ] || { log "no sqlite database found under $data"; return 1; }
    mkdir -p "$(dirname "$TEMPLATE")"
    tmp=$(mktemp -d "$(dirname "$TEMPLATE")/ls-template.XXXXXX")
    sqlite_backup "$db" "$tmp/db.sqlite3"
    realpath --relative-to="$data" "$db" >"$tmp/dbname"
    cp "$data/token" "$data/password" "$tmp/"
    echo "$LS_VERSION" >"$tmp/version"
    chmod 600 "$tmp/token" "$tmp/password"
    rm -rf "$TEMPLATE"
    mv "$tmp" "$TEMPLATE"
    log "saved the migrated database as a template in $TEMPLATE"
}

cmd_stop() {
    [ $# -eq 1 ] || die "usage: stop DATA_DIR"
    local data=$1 pid
    [ -f "$data/ls.pid" ] || { log "no $data/ls.pid"; return 0; }
    pid=$(cat "$data/ls.pid")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 40); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.25
        done
        if kill -0 "$pid" 2>/dev/null; then
            kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
        fi
        log "stopped Label Studio (pid $pid)"
    fi
    rm -f "$data/ls.pid"
}

case "${1:-}" in
    install) shift; cmd_install "$@" ;;
    start) shift; cmd_start "$@" ;;
    stop) shift; cmd_stop "$@" ;;
    *) echo "usage: $0 install | start DATA_DIR PORT | stop DATA_DIR" >&2; exit 2 ;;
esac
