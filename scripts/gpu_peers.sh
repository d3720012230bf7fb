#!/usr/bin/env bash
# The peers benchmark on CUDA (issue 17 §3): benchmarks/peers.py --device cuda on cases 1 and 2,
# ours against pyDVL, Captum and Kronfluence, in one run of at most 9 minutes (45 + 30 + 3 x 20
# + 140 + 260 s).
#
# A second script, not a step of scripts/gpu_check.sh: that one's steps already take its 8-minute
# total (45 + 30 + 180 + 120 + 90 s), and the peers' children (one process per system and solver,
# each importing torch and warming up) do not fit beside them. Run it as a second call of the
# device tool (in this workplace: command scripts/gpu_peers.sh, carry [".gpu-wheels"], timeout_s
# 580); the two together need more than one session's 15 minutes of device time, so a session
# runs one of them. First, here, with network: scripts/gpu_wheels.sh (Captum and Kronfluence with
# the widget stack into .gpu-wheels/; pyDVL is not among them, see there, and runs only where it
# already imports). (DEVICE=cpu runs the same steps on a machine without a GPU: a dry run.)
# Every case runs each (system, solver) once (--repeats 1), each child killed after 60 s
# (--time-limit: its row then says so, never a number); case 2 leaves out the iterative solvers
# that took minutes per child on the CPU (LiSSA, and Captum's naive without projection) so that
# it fits better (a child past 60 s, or the step's own timeout, still leaves a row). Each JSON is rewritten after every row, so a step cut off by its timeout keeps the rows
# it measured. Outputs under $OUT (default ./gpu-peers-out): env.txt, peers_<device>_case1.json,
# peers_<device>_case2.json, their logs and summary.txt (at most 8 files, what the tool returns).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-peers-out}
source scripts/gpu_setup.sh  # PY, SITE, DEVICE, step(), env.txt, wheels, imports

# The peers that import here (pyDVL usually not: see scripts/gpu_wheels.sh); the rest are named.
SYSTEMS=ours
for pair in pydvl:pydvl.influence.torch captum:captum.influence kronfluence:kronfluence.analyzer; do
  if timeout 20 "$PY" -W ignore -c "import ${pair#*:}" >/dev/null 2>&1; then
    SYSTEMS="$SYSTEMS,${pair%%:*}"
  else
    echo "${pair%%:*}: does not import here, left out" | tee -a "$OUT/summary.txt"
  fi
done
echo "systems: $SYSTEMS" | tee -a "$OUT/summary.txt"

step peers_case1 140 "$OUT/peers_case1.log" "$PY" benchmarks/peers.py --device "$DEVICE" \
  --cases 1 --systems "$SYSTEMS" --repeats 1 --time-limit 60 \
  --json "$OUT/peers_${DEVICE}_case1.json"
tail -n 25 "$OUT/peers_case1.log"
step peers_case2 260 "$OUT/peers_case2.log" "$PY" benchmarks/peers.py --device "$DEVICE" \
  --cases 2 --systems "$SYSTEMS" --solvers direct,cg,naive,ekfac --repeats 1 --time-limit 60 \
  --json "$OUT/peers_${DEVICE}_case2.json"
tail -n 25 "$OUT/peers_case2.log"

cat "$OUT/summary.txt"
exit "$status"
