#!/bin/bash
# The GPU measurements of the project in one command, for a GPU machine without AiiDA, mace-torch or internet
# (the lent test machine: python3 with torch + CUDA; everything else travels as wheels in .whl/).
#
#   bash benchmarks/device_check.sh JOBS RESULTS
#
# JOBS    job folders made here by `python benchmarks/gpu_paths.py prepare JOBS` (copied before running, so the
#         prepared folders stay clean);
# RESULTS folder for gpu_paths.json, monitor_cost.json and the logs ($OUT on the lent machine).
#
# Steps: install .whl/*.whl into $SITE (mace-torch and the dependencies the image lacks, e3nn 0.4.4 over the image's
# own), write the two executables the submit scripts call by absolute path ($BIN/mace_run_train and
# $BIN/aiida-nmcml-engine: small Python scripts with this python3 in the shebang, the engine imported from this
# checkout), then under its own `timeout` each:
#   1. `gpu_paths.py run` on the job folders (training MACE 64x0e on cuda and cpu, MD 960 atoms single model and
#      committee of 4 on cuda, single model on cpu);
#   2. `monitor_cost.py` (committee monitoring cost, members vs shared_descriptor, on $DEVICE).
#
# Environment: DEVICE (cuda; `cpu` rewrites the copied jobs to cpu, for a dry test of this script on a machine
# without GPU), QUICK=1 (tiny epochs/steps, for that dry test), THREADS (torch/OMP threads of the CPU baselines,
# default: all cores), CPU_EPOCHS (epochs of the cpu training baseline; default: as prepared), BIN (default
# /usr/local/bin; another folder makes the copied submit scripts call it), SITE (default /tmp/site), SKIP_INSTALL=1,
# PY (default python3), T_JOBS / T_MONITOR (timeouts in s), MONITOR_ARGS (extra arguments of monitor_cost.py).
#
# As run on the lent H100 (2026-11-27; results in docs/hpc.md and docs/md.md), with .whl, the prepared JOBS and the
# four committee models (.gpujobs/committee, copies of benchmarks/.cache/finetuned4/*/nmcml.model) carried:
#   T_JOBS=290 T_MONITOR=190 CPU_EPOCHS=2 MONITOR_ARGS="--models .gpujobs/committee" \
#       bash benchmarks/device_check.sh .gpujobs/jobs $OUT
# Dry test without a GPU (here, .venv has everything): DEVICE=cpu QUICK=1 SKIP_INSTALL=1 BIN=/tmp/bin THREADS=2 \
#   PY=$PWD/.venv/bin/python MONITOR_ARGS="--models .gpujobs/committee --sizes 128" bash benchmarks/device_check.sh ...
set -u
JOBS=$(readlink -f "${1:?JOBS folder}")
RESULTS=$(readlink -f "${2:?RESULTS folder}")
REPO=$(cd "$(dirname "$0")/.." && pwd)
DEVICE=${DEVICE:-cuda}
SITE=${SITE:-/tmp/site}
BIN=${BIN:-/usr/local/bin}
PY=$(command -v "${PY:-python3}")
THREADS=${THREADS:-$(nproc)}
WORK=${WORK:-/tmp/gpujobs}
mkdir -p "$RESULTS" "$BIN"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
echo "== $(date -u +%FT%TZ) device=$DEVICE threads=$THREADS python=$PY"

if [ -z "${SKIP_INSTALL:-}" ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
        "$REPO"/.whl/*.whl || { echo "wheel install failed"; exit 3; }
fi
export PYTHONPATH=$SITE:$REPO

for pair in "mace_run_train:from mace.cli.run_train import main" \
            "aiida-nmcml-engine:from aiida_nmcml.engine.cli import main"; do
    name=${pair%%:*}
    printf '#!%s\nimport sys\nsys.path[:0] = [%s, %s]\n%s\nsys.exit(main())\n' \
        "$PY" "'$SITE'" "'$REPO'" "${pair#*:}" > "$BIN/$name"
    chmod +x "$BIN/$name"
done

command -v nvidia-smi >/dev/null && nvidia-smi -L
"$PY" - <<'EOF' 2>&1 | tee "$RESULTS/versions.txt"
import importlib.metadata as md, os, torch
names = ('torch', 'e3nn', 'mace-torch', 'ase', 'matscipy', 'numpy', 'scipy')
print({n: md.version(n) for n in names}, 'threads', torch.get_num_threads(), 'cpus', os.cpu_count())
print('cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '-')
EOF

rm -rf "$WORK" && cp -r "$JOBS" "$WORK"
if [ "$BIN" != /usr/local/bin ]; then sed -i "s#/usr/local/bin/#$BIN/#g" "$WORK"/*/_aiidasubmit.sh; fi
if [ "$DEVICE" != cuda ]; then
    sed -i "s/^device: cuda/device: $DEVICE/" "$WORK"/*/config.yaml
    sed -i "s/\"device\": \"cuda\"/\"device\": \"$DEVICE\"/" "$WORK"/*/input.json
fi
if [ -n "${CPU_EPOCHS:-}" ]; then  # the cpu training baseline shortened (seconds per epoch are reported)
    sed -i "s/^max_num_epochs: .*/max_num_epochs: $CPU_EPOCHS/" "$WORK"/train_cpu/config.yaml
fi
if [ -n "${QUICK:-}" ]; then
    sed -i 's/^max_num_epochs: .*/max_num_epochs: 1/' "$WORK"/*/config.yaml
    sed -i 's/"steps": [0-9]*/"steps": 4/' "$WORK"/*/input.json
fi

echo "== gpu_paths.py run $(date -u +%T)"
timeout "${T_JOBS:-330}" "$PY" "$REPO/benchmarks/gpu_paths.py" run "$WORK" > "$RESULTS/gpu_paths.json" 2> "$RESULTS/gpu_paths.log"
echo "gpu_paths rc=$? $(date -u +%T)"
cat "$RESULTS/gpu_paths.log"
for f in "$WORK"/train_*/mace_train.err "$WORK"/md_*/md.log; do
    [ -f "$f" ] && { echo "--- $f"; tail -c 1500 "$f"; } >> "$RESULTS/job_logs.txt"
done

echo "== monitor_cost.py $(date -u +%T)"
MONITOR_ARGS=${MONITOR_ARGS:-}
[ -n "${QUICK:-}" ] && MONITOR_ARGS="--steps 6 --calls 3 --repeats 1 $MONITOR_ARGS"
timeout "${T_MONITOR:-170}" "$PY" "$REPO/benchmarks/monitor_cost.py" --device "$DEVICE" $MONITOR_ARGS \
    > "$RESULTS/monitor_cost.json" 2> "$RESULTS/monitor_cost.log"
echo "monitor_cost rc=$? $(date -u +%T)"
tail -n 5 "$RESULTS/monitor_cost.log"
cat "$RESULTS/monitor_cost.json"
