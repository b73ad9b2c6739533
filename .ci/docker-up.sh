#!/usr/bin/env bash
# Start a private Docker engine for the sandbox tests and build the sandbox images.
#
# Usage: .ci/docker-up.sh [WORK_DIR]        (default: .ci-work in the repository root)
# Writes WORK_DIR/docker.env (`export DOCKER_HOST=unix://...`) for the caller to `source`, and prints it.
# The engine runs with the bridge network off (only `host` and `none` exist), its own data/exec roots and
# socket, so it never touches a system engine. Stop it with .ci/docker-down.sh [WORK_DIR].
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="$(mkdir -p "${1:-$ROOT/.ci-work}" && cd "${1:-$ROOT/.ci-work}" && pwd)"
ENGINE="$WORK/docker"
SOCK="$ENGINE/docker.sock"
PIDFILE="$ENGINE/dockerd.pid"
mkdir -p "$ENGINE"

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v bwrap >/dev/null || missing+=(bubblewrap)
if [ ${#missing[@]} -gt 0 ]; then
  echo "docker-up: installing ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
  echo "docker-up: dockerd already running (pid $(cat "$PIDFILE"))" >&2
else
  # setsid: the engine must outlive this script's process group (CI steps, test runners).
  $SUDO setsid dockerd --bridge=none --iptables=false --ip-masq=false \
    --data-root "$ENGINE/data" --exec-root "$ENGINE/exec" \
    -H "unix://$SOCK" --pidfile "$PIDFILE" >"$ENGINE/dockerd.log" 2>&1 </dev/null &
fi

export DOCKER_HOST="unix://$SOCK"
for _ in $(seq 1 120); do
  if docker info >/dev/null 2>&1; then break; fi
  sleep 0.5
done
if ! docker info >/dev/null 2>&1; then
  echo "docker-up: dockerd did not answer; last log lines:" >&2
  tail -n 30 "$ENGINE/dockerd.log" >&2 || true
  exit 1
fi

echo "export DOCKER_HOST=$DOCKER_HOST" >"$WORK/docker.env"
echo "docker-up: engine ready; source $WORK/docker.env" >&2

PYTHON="${PYTHON:-python}"
if [ -x "$ROOT/.venv/bin/python" ] && [ -z "${VIRTUAL_ENV:-}" ]; then PYTHON="$ROOT/.venv/bin/python"; fi
"$PYTHON" -m palaestra.sandbox.images build --cache-dir "$WORK/rootfs-cache"

echo "export DOCKER_HOST=$DOCKER_HOST"
