#!/usr/bin/env bash
# The main job on the embedded default: set up, start an in-process server with the built-in plugins, and
# let scripted agents play episodes over real gRPC, printing the conversation, rewards and a results table.
#
#   scripts/demo.sh [ENV_ID ...]      (default: a code-repair episode, a math episode, a tool-use episode)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# The local sandbox backend isolates untrusted code with bubblewrap where it is installed.
if ! command -v bwrap >/dev/null && command -v apt-get >/dev/null; then
  SUDO=""; if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq bubblewrap >/dev/null || true
fi
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
# shellcheck disable=SC1091
. .venv/bin/activate
pip install -q -c .ci/constraints.txt -e ".[games]" 2>&1 | { grep -v "^WARNING: Location" || true; }

# Sandboxes: Docker where an engine answers (hardened containers); otherwise the local backend, chosen
# explicitly here (bubblewrap), since a server never falls back to weaker isolation by itself.
CONFIG="$(mktemp --suffix=.toml)"
trap 'rm -f "$CONFIG"' EXIT
if docker info >/dev/null 2>&1; then
  printf '[sandbox]\nbackend = "auto"\n' >"$CONFIG"
else
  echo "demo.sh: no Docker engine answers; code runs in the local sandbox backend (bubblewrap)"
  printf '[sandbox]\nbackend = "local"\n' >"$CONFIG"
fi

if [ $# -eq 0 ]; then set -- code/python-repair math/arithmetic-tools tools/shop; fi
for env_id in "$@"; do
  palaestra run "$env_id" --episodes 3 --transcript 1 --config "$CONFIG"
done
