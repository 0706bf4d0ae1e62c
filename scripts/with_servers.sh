#!/usr/bin/env bash
# Start the servers the tests need on free loopback ports, run "$@", stop them by PID.
#   - Google's Firestore emulator (from the machine image; missing jar = hard failure)
#   - our Realtime Database stand-in (tests/servers/rtdb_standin.py)
#   - Debian's redis-server (`make test` installs it; missing = hard failure), with a
#     config of its own: loopback, a free port, a throwaway directory, AOF on
#   - Debian's PostgreSQL on a throwaway data directory (missing binaries = hard failure)
# Exports FIRESTORE_EMULATOR_HOST, RTDB_STANDIN_URL (and FIREBASE_DATABASE_EMULATOR_HOST),
# REDIS_URL and POSTGRES_DSN.
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

# --- PostgreSQL ------------------------------------------------------------------------
# A fresh cluster per run in its own directory (data, unix socket, log), loopback only.
# initdb and the server refuse to run as root: as root they run as the postgres user.
# Stopped at exit by its postmaster PID (SIGINT: a fast shutdown), then deleted.
PG_BIN=${POSTGRES_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
if [ -z "$PG_BIN" ] || [ ! -x "$PG_BIN/pg_ctl" ]; then
  echo "error: PostgreSQL server binaries not found under /usr/lib/postgresql (apt-get install postgresql); the Postgres tests cannot run." >&2
  exit 1
fi
PG_DIR=$(mktemp -d /tmp/sg-postgres-XXXXXX)  # not $TMPDIR: the postgres user must reach it
as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$PG_DIR"; fi
stop_postgres() {
  local pg_pid
  pg_pid=$(head -n 1 "$PG_DIR/data/postmaster.pid" 2>/dev/null || true)
  if [ -n "$pg_pid" ] && kill -INT "$pg_pid" 2>/dev/null; then
    for _ in $(seq 1 300); do kill -0 "$pg_pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -rf "$PG_DIR"
}
trap 'stop_postgres; stop' EXIT
if ! as_postgres "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres --auth=trust --encoding=UTF8 \
    --locale=C >"$LOGS/postgres-initdb.log" 2>&1; then
  echo "error: initdb failed; its log:" >&2; cat "$LOGS/postgres-initdb.log" >&2; exit 1
fi
# Settings for a disposable server: nothing in it must survive a power loss.
pg_settings="-c listen_addresses=127.0.0.1 -c unix_socket_directories=$PG_DIR -c fsync=off"
pg_settings+=" -c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
for attempt in 1 2 3; do
  pg_port=$(free_port)
  if as_postgres "$PG_BIN/pg_ctl" start -w -t 60 -D "$PG_DIR/data" -l "$PG_DIR/server.log" \
      -o "-p $pg_port $pg_settings" >/dev/null 2>&1; then
    break
  fi
  if ! grep -q "in use" "$PG_DIR/server.log" 2>/dev/null || [ "$attempt" = 3 ]; then
    echo "error: PostgreSQL did not start; its log:" >&2; cat "$PG_DIR/server.log" >&2; exit 1
  fi
done
# No TLS on this server: sslmode=disable spares each connect the TLS negotiation.
export POSTGRES_DSN="postgresql://postgres@127.0.0.1:$pg_port/postgres?sslmode=disable"
# --- end PostgreSQL --------------------------------------------------------------------

export FIRESTORE_EMULATOR_HOST="127.0.0.1:$fs_port"
export FIREBASE_DATABASE_EMULATOR_HOST="127.0.0.1:$rtdb_port"
export RTDB_STANDIN_URL="http://127.0.0.1:$rtdb_port"
export REDIS_URL="redis://127.0.0.1:$redis_port/0"
echo "servers: Firestore emulator on $FIRESTORE_EMULATOR_HOST, RTDB stand-in on $RTDB_STANDIN_URL, Redis on $REDIS_URL"
echo "servers: PostgreSQL on $POSTGRES_DSN"
"$@"
