#!/usr/bin/env bash
# Serve samples/chat on HOST:PORT. STREAM_BACKEND picks the stream manager:
#   sqlite (default, embedded, file .data/streams.db), memory,
#   firestore, rtdb, redis or postgres (the emulator / stand-in / redis-server / a throwaway
#   PostgreSQL are started for you).
set -euo pipefail
cd "$(dirname "$0")/.."
host=${1:-127.0.0.1}
port=${2:-8000}
backend=${STREAM_BACKEND:-sqlite}
serve=(.venv/bin/uvicorn --factory samples.chat.app:demo_app --host "$host" --port "$port"
       --log-config samples/logging.json --timeout-graceful-shutdown 15)
echo "samples/chat on http://$host:$port with the $backend stream manager"
echo "operator dashboard on http://$host:$port/operator/ (its login token is printed below)"
case "$backend" in
  sqlite|memory) STREAM_BACKEND=$backend exec "${serve[@]}" ;;
  firestore|rtdb|redis|postgres) STREAM_BACKEND=$backend exec scripts/with_servers.sh "${serve[@]}" ;;
  *) echo "error: STREAM_BACKEND must be sqlite, memory, firestore, rtdb, redis or postgres" >&2; exit 2 ;;
esac
