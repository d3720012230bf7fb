#!/usr/bin/env bash
# The GPU check: the device tests and core_speed on CUDA, in one run of at most 8 minutes (each
# step has its own timeout; at most 8 files are written under $OUT, what the device tool returns).
#
# Meant for a lent GPU machine with no network (Python 3.12 with a CUDA torch, numpy, scipy,
# matplotlib, scikit-learn, tqdm and pytest, but no widget stack). First, here, with network:
#     scripts/gpu_wheels.sh            # the missing pure-Python wheels into .gpu-wheels/
# then, on the GPU machine, from the repository root (.gpu-wheels/ carried along):
#     OUT=/some/dir scripts/gpu_check.sh
# (in this workplace: the device tool's run with command scripts/gpu_check.sh, carry
# [".gpu-wheels"] and timeout_s 540; $OUT is set there and its 8 files come back).
# (DEVICE=cpu runs the same steps on a machine without a GPU: a dry run of this script.)
# Outputs under $OUT (default ./gpu-check-out): env.txt, pytest.log, pytest.xml,
# core_speed_cuda.json (digits_lr and naive), core_speed_cuda_cnn.json (cnn), their logs and
# summary.txt. Fashion-MNIST is not there, so core_speed's paper-scale case is left out, and
# core_speed runs with --quick's 20 s query budget (rows past it are extrapolated, as on the CPU);
# its JSON is rewritten after every row, so a step cut off by its timeout keeps the rows it measured.
# The peers benchmark on CUDA is not a step here (these steps take the 8 minutes): it is
# scripts/gpu_peers.sh, a second call.
# The machine's own torch is kept: the wheels go to a separate folder on PYTHONPATH with --no-deps,
# and this repository is imported from its working tree (no pip install of it, so no torch pin).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-check-out}
PY=${PY:-python3}
SITE=${SITE:-/tmp/iw-gpu-site}
DEVICE=${DEVICE:-cuda}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
status=0
step() {  # step NAME SECONDS LOG CMD...: CMD under a timeout, its output to LOG (- : here)
  local name=$1 limit=$2 log=$3 rc
  shift 3
  echo "== $name (limit ${limit} s): $*"
  if [ "$log" = - ]; then
    timeout "$limit" "$@"
  else
    timeout "$limit" "$@" >"$log" 2>&1
  fi
  rc=$?
  echo "$name: exit $rc" | tee -a "$OUT/summary.txt"
  [ "$rc" -eq 0 ] || status=1
  return "$rc"
}

: >"$OUT/summary.txt"
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  "$PY" -c "import sys, torch; print(sys.version); print('torch', torch.__version__, \
'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

WHEELS_DIR=${WHEELS_DIR:-.gpu-wheels}
if [ -d "$WHEELS_DIR" ]; then
  step wheels 45 - "$PY" -m pip install --quiet --no-index --no-deps --no-compile \
    --no-cache-dir --upgrade --target "$SITE" "$WHEELS_DIR"/*.whl || exit 1
  export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}"
else
  echo "no $WHEELS_DIR/: using the packages installed here" | tee -a "$OUT/summary.txt"
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
step imports 30 - "$PY" -c "import torch, influence_widgets as iw; \
assert '$DEVICE' == 'cpu' or torch.cuda.is_available(), 'no CUDA GPU visible'; \
print(iw.__name__, torch.__version__)" || exit 1

step pytest 180 "$OUT/pytest.log" "$PY" -m pytest tests/test_devices.py tests/test_core_exact.py \
  -q -rs -p no:cacheprovider --junitxml="$OUT/pytest.xml"
tail -n 40 "$OUT/pytest.log"

step core_speed 120 "$OUT/core_speed.log" "$PY" benchmarks/core_speed.py --device "$DEVICE" \
  --quick --cases digits_lr,naive --json "$OUT/core_speed_$DEVICE.json"
tail -n 30 "$OUT/core_speed.log"
step core_speed_cnn 90 "$OUT/core_speed_cnn.log" "$PY" benchmarks/core_speed.py \
  --device "$DEVICE" --quick --cases cnn --json "$OUT/core_speed_${DEVICE}_cnn.json"
tail -n 20 "$OUT/core_speed_cnn.log"

cat "$OUT/summary.txt"
exit "$status"
