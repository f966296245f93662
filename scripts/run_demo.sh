#!/usr/bin/env bash
# The main job: set everything up (idempotent), start the daemon, run the demo pipeline on this machine.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/bootstrap.sh"
aiida-nmcml setup --daemon
aiida-nmcml setup --check
# The offline foundation model: distilled from CHGNet once per machine (<= 15 min on 2 cores), reused afterwards.
# Skipped when the demo is given --foundation (e.g. a downloaded mace-mp-0 file).
case " $* " in
    *" --foundation "*|*" --foundation="*) ;;
    *) aiida-nmcml foundation distill --protocol demo ;;
esac
exec python "$ROOT/examples/demo_pipeline.py" "$@"
