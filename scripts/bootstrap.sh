#!/usr/bin/env bash
# Idempotent set-up on a fresh Debian/Ubuntu machine: venv, torch (CPU build unless a GPU is present), this package,
# Quantum ESPRESSO from apt, then `aiida-nmcml setup` (profile, localhost, codes, pseudopotentials).
# Re-running it installs nothing twice and creates nothing twice.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${NMCML_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3

say() { printf '\033[1m[aiida-nmcml]\033[0m %s\n' "$*"; }

# 1. Quantum ESPRESSO (pw.x, neb.x, ld1.x and the pslibrary pseudopotentials) from the distribution
if ! command -v pw.x >/dev/null 2>&1 || ! command -v ld1.x >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        say "installing quantum-espresso from apt"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq && apt-get install -y -qq quantum-espresso >/dev/null
    else
        say "pw.x not found. Run: sudo apt-get install -y quantum-espresso   (then re-run this script)"
        exit 1
    fi
fi

# 1b. Debian's chromium, only for the tests (run_tests.sh sets NMCML_TEST_TOOLS=1): the report test loads the HTML
# report in headless chromium (figures present, no console errors) and takes a screenshot
if [ "${NMCML_TEST_TOOLS:-0}" = 1 ] && ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        say "installing chromium from apt (report test)"
        export DEBIAN_FRONTEND=noninteractive
        { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } || say "chromium install failed"
    else
        say "chromium not found; the report test needs it: sudo apt-get install -y chromium"
    fi
fi

# 2. Python environment; torch first so nothing pulls a multi-GB CUDA build by accident on a CPU-only machine
if [ ! -x "$VENV/bin/python" ]; then
    say "creating virtual environment $VENV"
    "$PY" -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
fi
PIP=("$VENV/bin/pip" install -q)
if ! "$VENV/bin/python" -c 'import torch' >/dev/null 2>&1; then
    if command -v nvidia-smi >/dev/null 2>&1; then
        say "GPU found: installing torch (CUDA build)"
        "${PIP[@]}" "torch>=2.2"
    else
        say "no GPU: installing the CPU build of torch ${NMCML_TORCH_VERSION:-2.13.0}"
        if [ -n "${TORCH_INDEX_URL:-}" ]; then
            "${PIP[@]}" --index-url "$TORCH_INDEX_URL" "torch==${NMCML_TORCH_VERSION:-2.13.0}"
        else
            "${PIP[@]}" "torch==${NMCML_TORCH_VERSION:-2.13.0}"
        fi
    fi
fi
if ! "$VENV/bin/python" -c 'import aiida_nmcml, pytest, myst_parser' >/dev/null 2>&1 \
   || [ "$ROOT/pyproject.toml" -nt "$VENV/.nmcml-installed" ]; then
    say "installing aiida-nmcml and its dependencies"
    "${PIP[@]}" -e "$ROOT[dev,docs]" 2>&1 | grep -v 'is ignored' || true
    "$VENV/bin/python" -c 'import aiida_nmcml' && touch "$VENV/.nmcml-installed"
fi
export PATH="$VENV/bin:$PATH"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
