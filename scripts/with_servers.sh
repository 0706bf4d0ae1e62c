#!/usr/bin/env bash
# Start the servers the tests need on free loopback ports, run "$@", stop them by PID.
#   - Google's Firestore emulator (from the machine image; missing jar = hard failure)
#   - our Realtime Database stand-in (tests/servers/rtdb_standin.py)
# Exports FIRESTORE_EMULATOR_HOST and RTDB_STANDIN_URL (and FIREBASE_DATABASE_EMULATOR_HOST).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
FIRESTORE_JAR=${FIRESTORE_JAR:-/usr/lib/google-cloud-sdk/platform/cloud-firestore-emulator/cloud-firestore-emulator.jar}
LOGS=$(mktemp -d)
pids=()

stop() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap stop EXIT

free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

wait_http() { # url, name, log
  for _ in $(seq 1 300); do
    if curl -fsS -o /dev/null "$1" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "error: $2 did not start; its log:" >&2; cat "$3" >&2; exit 1
}

if [ ! -f "$FIRESTORE_JAR" ]; then
  echo "error: Firestore emulator jar not found at $FIRESTORE_JAR; the Firestore tests cannot run." >&2
  exit 1
fi
fs_port=$(free_port)
java -cp "$FIRESTORE_JAR" com.google.cloud.datastore.emulator.firestore.CloudFirestore \
  start --host=127.0.0.1 --port="$fs_port" >"$LOGS/firestore.log" 2>&1 &
pids+=($!)

rtdb_port=$(free_port)
$PY -m tests.servers.rtdb_standin --host 127.0.0.1 --port "$rtdb_port" --keepalive 5 >"$LOGS/rtdb.log" 2>&1 &
pids+=($!)

wait_http "http://127.0.0.1:$fs_port/" "Firestore emulator" "$LOGS/firestore.log"
wait_http "http://127.0.0.1:$rtdb_port/.json" "RTDB stand-in" "$LOGS/rtdb.log"

export FIRESTORE_EMULATOR_HOST="127.0.0.1:$fs_port"
export FIREBASE_DATABASE_EMULATOR_HOST="127.0.0.1:$rtdb_port"
export RTDB_STANDIN_URL="http://127.0.0.1:$rtdb_port"
echo "servers: Firestore emulator on $FIRESTORE_EMULATOR_HOST, RTDB stand-in on $RTDB_STANDIN_URL"
"$@"
