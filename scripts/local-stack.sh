#!/usr/bin/env bash
# The local AWS endpoint: moto server on 127.0.0.1:${MOTO_PORT:-4566}.
#   scripts/local-stack.sh start   start moto (installing it if missing) or reuse one that answers
#   scripts/local-stack.sh stop    stop moto, but only if this script started it
#   scripts/local-stack.sh status
set -euo pipefail
cd "$(dirname "$0")/.."
PORT="${MOTO_PORT:-4566}"
STATE_DIR=".local"
PID_FILE="$STATE_DIR/moto-$PORT.pid"
LOG_FILE="$STATE_DIR/moto-$PORT.log"
URL="http://127.0.0.1:$PORT"

answers() { curl -fsS -m 2 "$URL/moto-api/" >/dev/null 2>&1; }

start() {
  mkdir -p "$STATE_DIR"
  if answers; then
    echo "local stack: reusing moto already answering on $URL"
    return 0
  fi
  if ! python3 -c "import moto.server, flask" >/dev/null 2>&1; then
    echo "local stack: installing moto[server]"
    python3 -m pip install --quiet 'moto[server]>=5.1'
  fi
  echo "local stack: starting moto on $URL (log: $LOG_FILE)"
  # Our launcher: moto with O(1) DynamoDB transactions, as strict as AWS (see the script's docstring).
  nohup python3 scripts/moto_server.py -H 127.0.0.1 -p "$PORT" >"$LOG_FILE" 2>&1 &
  echo $! >"$PID_FILE"
  for _ in $(seq 1 150); do
    if answers; then echo "local stack: ready"; return 0; fi
    if ! kill -0 "$(cat "$PID_FILE")" 2>/dev/null; then
      echo "local stack: moto exited during start-up:" >&2; tail -20 "$LOG_FILE" >&2; rm -f "$PID_FILE"; return 1
    fi
    sleep 0.2
  done
  echo "local stack: moto did not answer on $URL within 30 s" >&2
  return 1
}

stop() {
  if [[ -f "$PID_FILE" ]]; then
    local pid; pid="$(cat "$PID_FILE")"
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid"
      # Wait for it to exit: it saves its state (MOTO_STATE_FILE) on the way out.
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      echo "local stack: stopped moto ($pid)"
    fi
    rm -f "$PID_FILE"
  else
    echo "local stack: nothing to stop (moto on $URL was not started by this script)"
  fi
}

case "${1:-status}" in
  start) start ;;
  stop) stop ;;
  status) if answers; then echo "moto answering on $URL"; else echo "moto not answering on $URL"; exit 1; fi ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
