#!/usr/bin/env bash
# Build the Palaestra server image for Ray clusters (docs/deployment.md).
#
#   scripts/build_server_image.sh [--tag palaestra-ray:dev] [--base rayproject/ray:2.60.0-py311-cpu]
#                                 [--context-only DIR]
#
# Makes a build context (the palaestra wheel in dist/, deploy/server.Dockerfile) and runs `docker build`
# on it. --context-only DIR: make the context in DIR and stop (offline check, or to build elsewhere).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TAG="palaestra-ray:dev"
BASE="rayproject/ray:2.60.0-py311-cpu"
CONTEXT=""
ONLY_CONTEXT=0
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) TAG="$2"; shift 2 ;;
    --base) BASE="$2"; shift 2 ;;
    --context-only) CONTEXT="$2"; ONLY_CONTEXT=1; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python3
if [ -z "$CONTEXT" ]; then
  CONTEXT="$(mktemp -d)"
  trap 'rm -rf "$CONTEXT"' EXIT
fi
mkdir -p "$CONTEXT/dist"
"$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$CONTEXT/dist" "$ROOT"
cp "$ROOT/deploy/server.Dockerfile" "$CONTEXT/Dockerfile"
if [ "$ONLY_CONTEXT" = 1 ]; then
  echo "build context in $CONTEXT: $(ls "$CONTEXT/dist")"
  exit 0
fi
docker build --build-arg "BASE=$BASE" --tag "$TAG" "$CONTEXT"
echo "built $TAG"
