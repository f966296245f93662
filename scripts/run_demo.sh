#!/usr/bin/env bash
# The main job: set everything up (idempotent), start the daemon, run the demo pipeline on this machine.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/bootstrap.sh"
aiida-nmcml setup --daemon
aiida-nmcml setup --check
exec python "$ROOT/examples/demo_pipeline.py" "$@"
