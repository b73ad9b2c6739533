#!/usr/bin/env bash
# Stop the engine started by .ci/docker-up.sh [WORK_DIR]. Keeps its data (images) for a quick restart.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${1:-$ROOT/.ci-work}"
PIDFILE="$WORK/docker/dockerd.pid"
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

if [ ! -f "$PIDFILE" ]; then
  echo "docker-down: no engine recorded under $WORK" >&2
  exit 0
fi
pid="$(cat "$PIDFILE")"
if kill -0 "$pid" 2>/dev/null; then
  $SUDO kill -TERM "$pid"
  for _ in $(seq 1 60); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  if kill -0 "$pid" 2>/dev/null; then $SUDO kill -KILL "$pid"; fi
fi
rm -f "$WORK/docker.env"
echo "docker-down: engine stopped" >&2
