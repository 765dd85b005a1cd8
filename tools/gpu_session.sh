#!/usr/bin/env bash
# Everything this project measures on a GPU, in one device call of under 10 minutes.
#
# Here (once per session; the wheels stay out of git through .git/info/exclude):
#   echo /.whl/ >> .git/info/exclude
#   for w in array-api-compat array-api-extra array-api-strict; do
#     python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux2014_x86_64 --platform any -d .whl "$w"; done
# Then one device call: run(command="bash tools/gpu_session.sh", carry=[".whl"]).
# It writes to $OUT (or the folder given as $1): device.txt, goals.txt/.md/.json, muon.txt,
# profile.txt, tests.txt, shampoo.txt (8 files: the most a device call brings back). Record the figures in docs/performance-gpu.md with the
# device named.
#
# DEVICE (default cuda), MUON_ARGS (default "768 12 20": GPT-2 small, 20 steps) and
# SHAMPOO_SET (default "layer"), GOALS_SCALE (default 1: every size divided by it) can be
# overridden; DEVICE=cpu GOALS_SCALE=8 MUON_ARGS="128 2 3" checks the script here.
set -uo pipefail
out=${1:-${OUT:-gpu-out}}
mkdir -p "$out"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
# JAX (imported by some tests even when not selected) must not take 75 % of the GPU per worker.
export XLA_PYTHON_CLIENT_PREALLOCATE=false JAX_PLATFORMS=${JAX_PLATFORMS:-cpu}
device=${DEVICE:-cuda}
py=${PYTHON:-python3}

step() { echo "== $1 ($(date +%T))"; }

step "device"
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || true
  $py -m xpmat info; } > "$out/device.txt" 2>&1

step "the suite's GPU cases"
if [ "$device" = cuda ]; then sel="cuda or cupy"; backends="torch:cuda,cupy"; else sel="torch"; backends="torch"; fi
par=(); $py -c "import xdist" 2>/dev/null && par=(-n "${WORKERS:-8}")
tmo=(); $py -c "import pytest_timeout" 2>/dev/null && tmo=(--timeout 90)
XPMAT_TEST_BACKENDS=$backends timeout "${TESTS_TIMEOUT:-200}" $py -m pytest -q -p no:cacheprovider \
  -rfE "${par[@]}" "${tmo[@]}" tests -k "$sel" > "$out/tests.txt" 2>&1
tail -25 "$out/tests.txt"

step "the GPU goals, each against its anchor (tools/gpu_goals.py)"
timeout "${GOALS_TIMEOUT:-220}" $py tools/gpu_goals.py "$out" "$device" "${GOALS_SCALE:-1}" \
  > "$out/goals.txt" 2>&1
cat "$out/goals.md" 2>/dev/null || tail -5 "$out/goals.txt"

step "Muon step: ours vs torch.optim.Muon"
# shellcheck disable=SC2086
timeout 90 $py docs/scripts/muon_step_timing.py ${MUON_ARGS:-768 12 20} "$device" > "$out/muon.txt" 2>&1
step "AdamW step: xpmat's eager paths vs torch.optim.AdamW foreach / fused (into muon.txt)"
adamw_args="20"; [ "$device" = cuda ] || adamw_args="5 64 2 256"  # a small model for the CPU check
# shellcheck disable=SC2086
timeout 40 $py docs/scripts/adamw_step_timing.py "$device" $adamw_args >> "$out/muon.txt" 2>&1
tail -6 "$out/muon.txt"
step "where the time goes: GPU busy vs wall, launches (tools/gpu_profile.py)"
if [ "$device" = cuda ]; then
  timeout 60 $py tools/gpu_profile.py cuda 2>&1 | grep -E "^(==| )" > "$out/profile.txt"
  cat "$out/profile.txt"
fi

step "Gram Newton–Schulz vs the plain loop (docs/scripts/gram_ns_timing.py; into shampoo.txt)"
timeout 60 $py docs/scripts/gram_ns_timing.py --device "$device" --repeat 5 > "$out/gram.tmp" 2>&1
cat "$out/gram.tmp"

step "Shampoo step: coupled Newton vs eigh vs tracked eigenbasis"
timeout 45 $py docs/scripts/shampoo_step_timing.py "torch:$device" "${SHAMPOO_SET:-layer}" 5 \
  > "$out/shampoo.txt" 2>&1
cat "$out/gram.tmp" >> "$out/shampoo.txt" && rm -f "$out/gram.tmp"
cat "$out/shampoo.txt"
step "Muon step under torch.compile (CUDA graphs on a GPU)"
# shellcheck disable=SC2086
cmode=compile; [ "$device" = cuda ] && cmode=cudagraphs  # mode="reduce-overhead": the 5 ms goal's
timeout "${COMPILE_TIMEOUT:-150}" $py docs/scripts/muon_step_timing.py ${MUON_ARGS:-768 12 20} "$device" \
  $cmode 2>&1 | grep -E "^(d=|  (compile |torch\.optim|xpmat|plain))" >> "$out/muon.txt"
cat "$out/muon.txt"

step "done"
