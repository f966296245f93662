#!/usr/bin/env bash
# The tests: the same set-up as the demo, then pytest (the tests make their own temporary AiiDA profiles).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export NMCML_TEST_TOOLS=1  # bootstrap also installs chromium (report test)
source "$ROOT/scripts/bootstrap.sh"
aiida-nmcml setup
cd "$ROOT"
exec python -m pytest "$@"
