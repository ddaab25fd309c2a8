#!/usr/bin/env bash
# Create .venv and install autoplat into it (idempotent; re-run after changing pyproject.toml).
# Without an NVIDIA GPU it installs the CPU build of torch first, so no CUDA build is pulled.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
stamp=.venv/.installed-$(cat pyproject.toml scripts/setup.sh examples/plugin-template/pyproject.toml | cksum | cut -d' ' -f1)
[ -f "$stamp" ] && exit 0
# WordNet (Debian's wordnet-base): the MetaCLIP metadata builder and the text-quality
# part-of-speech lexicon read /usr/share/wordnet. Best effort: without it those say so.
if [ ! -d /usr/share/wordnet ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  apt-get install -y -q wordnet-base >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q wordnet-base >/dev/null 2>&1; } \
    || echo "setup: could not install wordnet-base; WordNet features will say they need it" >&2
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    .venv/bin/pip install -q "torch>=2.2"           # CUDA build from PyPI
  else
    .venv/bin/pip install -q "torch==2.13.0"        # the CPU build (see README)
  fi
fi
.venv/bin/pip install -q -e ".[dev]"
# baal, a peer of the acquisition tests: its requirements pull in jupyter; the heuristics
# the tests use need only structlog and torchmetrics (in the dev extras).
.venv/bin/pip install -q --no-deps "baal==2.1.0"
# The plugin template, as a third-party package (make test runs its tests and a search with
# it). Its dependencies are autoplat's, so nothing more is fetched and no isolated build runs.
.venv/bin/pip install -q "setuptools>=68"
.venv/bin/pip install -q --no-deps --no-build-isolation -e examples/plugin-template
rm -f .venv/.installed-*
touch "$stamp"
