# shellcheck shell=bash
# Shared setup for scripts/demo and scripts/test; source it, then call:
#   remit_venv   cd to the repo root, create .venv if missing, install '.[dev]' when
#                pyproject.toml is newer than the stamp .venv/.remit-installed, put .venv/bin
#                first on PATH.
#   remit_redis  export REDIS_URL, in this order:
#                (a) REDIS_URL already set: used as is, must answer PING;
#                (b) a Redis on 127.0.0.1:6379: redis://127.0.0.1:6379/0;
#                (c) redis-server on PATH: a private throwaway server on a free port, stopped
#                    and its temp dir removed by an EXIT trap (this replaces any EXIT trap the
#                    caller set);
#                (d) otherwise: exit 1 with instructions.
#                REMIT_REDIS_FORCE_PRIVATE=1 skips (b), so (c) can be tested on a machine
#                that already runs Redis. Works without redis-cli (pings via the venv's redis
#                package), so call remit_venv first.

REMIT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

remit_venv() {
  cd "$REMIT_ROOT"
  export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
  if [ ! -x .venv/bin/python ]; then
    echo "remit: creating .venv" >&2
    python3 -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip
  fi
  if [ ! .venv/.remit-installed -nt pyproject.toml ]; then
    echo "remit: installing the project into .venv" >&2
    .venv/bin/python -m pip install -q -e '.[dev]'
    touch .venv/.remit-installed
  fi
  export PATH="$REMIT_ROOT/.venv/bin:$PATH"
}

# _remit_ping URL: succeed when the Redis at URL answers PONG (5 s at most).
_remit_ping() {
  if command -v redis-cli >/dev/null; then
    [ "$(timeout 5 redis-cli -u "$1" ping 2>/dev/null)" = PONG ]
  else
    timeout 5 "$REMIT_ROOT/.venv/bin/python" -c \
      'import sys, redis; redis.Redis.from_url(sys.argv[1], socket_timeout=2).ping()' \
      "$1" >/dev/null 2>&1
  fi
}

# _remit_shown URL: the URL with any password masked, for messages.
_remit_shown() { sed -E 's#//[^@/]*@#//***@#' <<<"$1"; }

_remit_redis_stop() {
  local pid
  pid="$(cat "$_REMIT_REDIS_DIR/redis.pid" 2>/dev/null || true)"
  if [ -n "$pid" ] && kill "$pid" 2>/dev/null; then
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -rf "$_REMIT_REDIS_DIR"
}

remit_redis() {
  if [ -n "${REDIS_URL:-}" ]; then
    if ! _remit_ping "$REDIS_URL"; then
      echo "remit: REDIS_URL=$(_remit_shown "$REDIS_URL") does not answer PING" >&2
      exit 1
    fi
    echo "remit: using Redis from REDIS_URL ($(_remit_shown "$REDIS_URL"))" >&2
    return
  fi

  if [ "${REMIT_REDIS_FORCE_PRIVATE:-0}" != 1 ] && _remit_ping redis://127.0.0.1:6379/0; then
    export REDIS_URL=redis://127.0.0.1:6379/0
    echo "remit: using the local Redis at $REDIS_URL" >&2
    return
  fi

  if ! command -v redis-server >/dev/null; then
    echo "remit: no Redis found: install redis-server (apt-get install redis-server)" \
      "or set REDIS_URL=redis://HOST:PORT/0" >&2
    exit 1
  fi

  local port
  port="$("$REMIT_ROOT/.venv/bin/python" -c \
    'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  _REMIT_REDIS_DIR="$(mktemp -d "${TMPDIR:-/tmp}/remit-redis.XXXXXX")"
  trap _remit_redis_stop EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$_REMIT_REDIS_DIR" --daemonize yes \
    --pidfile "$_REMIT_REDIS_DIR/redis.pid" --logfile "$_REMIT_REDIS_DIR/redis.log" \
    || { echo "remit: redis-server failed to start (exit $?)" >&2; exit 1; }
  export REDIS_URL="redis://127.0.0.1:$port/0"
  local try
  for try in $(seq 50); do
    _remit_ping "$REDIS_URL" && break
    if [ "$try" = 50 ]; then
      echo "remit: private redis-server on port $port did not start; its log:" >&2
      tail -n 20 "$_REMIT_REDIS_DIR/redis.log" >&2 2>/dev/null || true
      exit 1
    fi
    sleep 0.1
  done
  echo "remit: using a private redis-server at $REDIS_URL (stopped on exit)" >&2
}
