#!/usr/bin/env bash
# Start the servers the tests need on free loopback ports, run "$@", stop them by PID.
#   - Google's Firestore emulator (from the machine image; missing jar = hard failure)
#   - our Realtime Database stand-in (tests/servers/rtdb_standin.py)
#   - Debian's redis-server (`make test` installs it; missing = hard failure), with a
#     config of its own: loopback, a free port, a throwaway directory, AOF on
# Exports FIRESTORE_EMULATOR_HOST, RTDB_STANDIN_URL (and FIREBASE_DATABASE_EMULATOR_HOST)
# and REDIS_URL.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
FIRESTORE_JAR=${FIRESTORE_JAR:-/usr/lib/google-cloud-sdk/platform/cloud-firestore-emulator/cloud-firestore-emulator.jar}
REDIS_SERVER=${REDIS_SERVER:-$(command -v redis-server || true)}
LOGS=$(mktemp -d)
REDIS_DIR=$(mktemp -d)
pids=()

stop() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$REDIS_DIR"
}
trap stop EXIT

free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

redis_ping() { # port
  $PY -c 'import socket, sys
c = socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1)
c.sendall(b"PING\r\n")
sys.exit(0 if c.recv(16).startswith(b"+PONG") else 1)' "$1" 2>/dev/null
}

wait_http() { # url, name, log
  for _ in $(seq 1 300); do
    if curl -fsS -o /dev/null "$1" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "error: $2 did not start; its log:" >&2; cat "$3" >&2; exit 1
}

if [ -z "$REDIS_SERVER" ] || [ ! -x "$REDIS_SERVER" ]; then
  echo "error: redis-server not found; the Redis tests cannot run (make test installs Debian's redis-server)." >&2
  exit 1
fi
if [ ! -f "$FIRESTORE_JAR" ]; then
  echo "error: Firestore emulator jar not found at $FIRESTORE_JAR; the Firestore tests cannot run." >&2
  exit 1
fi
# The stand-in binds port 0 itself and prints the port it got: no race.
$PY -m tests.servers.rtdb_standin --host 127.0.0.1 --port 0 --keepalive 5 >"$LOGS/rtdb.log" 2>&1 &
pids+=($!)

# The emulator needs a port named up front; another socket may take it before Java
# binds it, so a start that dies of BindException tries a fresh port (three times).
for attempt in 1 2 3; do
  fs_port=$(free_port)
  java -cp "$FIRESTORE_JAR" com.google.cloud.datastore.emulator.firestore.CloudFirestore \
    start --host=127.0.0.1 --port="$fs_port" >"$LOGS/firestore.log" 2>&1 &
  fs_pid=$!
  for _ in $(seq 1 300); do
    curl -fsS -o /dev/null "http://127.0.0.1:$fs_port/" 2>/dev/null && break
    kill -0 "$fs_pid" 2>/dev/null || break
    sleep 0.1
  done
  if curl -fsS -o /dev/null "http://127.0.0.1:$fs_port/" 2>/dev/null; then
    pids+=("$fs_pid"); break
  fi
  kill "$fs_pid" 2>/dev/null || true; wait "$fs_pid" 2>/dev/null || true
  if ! grep -q BindException "$LOGS/firestore.log" || [ "$attempt" = 3 ]; then
    echo "error: Firestore emulator did not start; its log:" >&2; cat "$LOGS/firestore.log" >&2; exit 1
  fi
done

# redis-server too takes its port from its config: a start whose bind fails (the port
# was taken meanwhile) tries a fresh one. Stopped by PID with the others (SIGTERM: it
# syncs its AOF and exits); its directory goes with it.
for attempt in 1 2 3; do
  redis_port=$(free_port)
  printf '%s\n' "bind 127.0.0.1" "protected-mode yes" "port $redis_port" "dir $REDIS_DIR" \
    "logfile $REDIS_DIR/redis.log" "daemonize no" 'save ""' "appendonly yes" \
    "appendfsync everysec" "maxmemory-policy noeviction" >"$REDIS_DIR/redis.conf"
  : >"$REDIS_DIR/redis.log"
  "$REDIS_SERVER" "$REDIS_DIR/redis.conf" >/dev/null 2>&1 &
  redis_pid=$!
  redis_up=
  for _ in $(seq 1 300); do
    if redis_ping "$redis_port"; then redis_up=1; break; fi
    kill -0 "$redis_pid" 2>/dev/null || break
    sleep 0.1
  done
  if [ -n "$redis_up" ]; then pids+=("$redis_pid"); break; fi
  kill "$redis_pid" 2>/dev/null || true; wait "$redis_pid" 2>/dev/null || true
  if ! grep -q "Address already in use" "$REDIS_DIR/redis.log" || [ "$attempt" = 3 ]; then
    echo "error: redis-server did not start; its log:" >&2; cat "$REDIS_DIR/redis.log" >&2; exit 1
  fi
done

for _ in $(seq 1 300); do
  rtdb_port=$(sed -n 's|^rtdb-standin listening on http://127.0.0.1:\([0-9]*\).*|\1|p' "$LOGS/rtdb.log")
  [ -n "$rtdb_port" ] && break
  sleep 0.1
done
[ -n "$rtdb_port" ] || { echo "error: RTDB stand-in did not start; its log:" >&2; cat "$LOGS/rtdb.log" >&2; exit 1; }
wait_http "http://127.0.0.1:$rtdb_port/.json" "RTDB stand-in" "$LOGS/rtdb.log"

export FIRESTORE_EMULATOR_HOST="127.0.0.1:$fs_port"
export FIREBASE_DATABASE_EMULATOR_HOST="127.0.0.1:$rtdb_port"
export RTDB_STANDIN_URL="http://127.0.0.1:$rtdb_port"
export REDIS_URL="redis://127.0.0.1:$redis_port/0"
echo "servers: Firestore emulator on $FIRESTORE_EMULATOR_HOST, RTDB stand-in on $RTDB_STANDIN_URL, Redis on $REDIS_URL"
"$@"
