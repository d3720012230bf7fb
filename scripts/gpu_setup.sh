# Shared by scripts/gpu_check.sh and scripts/gpu_peers.sh (sourced after they set OUT and cd to the
# repository root): the step runner, env.txt, the carried wheels on PYTHONPATH, the import check.
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
