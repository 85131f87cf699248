#!/usr/bin/env bash
# What Kamailio costs per call in front of two courtline nodes (BENCHMARKS.md):
# the same SIPp callers (INVITE, 200, ACK, BYE after HOLD_MS) first through
# Kamailio, then straight to node B; prints Kamailio's CPU seconds per call
# (all its processes, OPTIONS probing included); every call must succeed both ways.
#
#   tests/kamailio/bench.sh [calls] [calls per second]    # default 1000 at 50/s
#
# Loopback only, bounded, every process stopped by PID (tests/kamailio/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
CALLS=${1:-1000}
RATE=${2:-50}
HOLD_MS=${HOLD_MS:-1000}
WATCHDOG_S=${WATCHDOG_S:-900}
source tests/kamailio/setup.sh

# CPU seconds (user + system) of Kamailio's main process and its children.
kamailio_cpu() {
  python3 - "$kamailio_pid" <<'PY'
import os, sys
main, tick, total = sys.argv[1], os.sysconf("SC_CLK_TCK"), 0
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        continue
    if pid == main or fields[1] == main:
        total += int(fields[11]) + int(fields[12])
print(total / tick)
PY
}

idle_from=$(kamailio_cpu)
sleep 10
idle=$(python3 -c "import sys; print(f'{(float(sys.argv[2]) - float(sys.argv[1])) / 10 * 1000:.2f}')" "$idle_from" "$(kamailio_cpu)")
echo "Kamailio idle (probing two nodes every second): $idle ms CPU per second"

from=$(kamailio_cpu)
started=$(date +%s.%N)
callers proxied "$CALLS" "$RATE" "$PROXY" 25173 || fail "calls through Kamailio failed"
elapsed=$(python3 -c "import sys, time; print(time.time() - float(sys.argv[1]))" "$started")
used=$(python3 -c "import sys; print(float(sys.argv[2]) - float(sys.argv[1]))" "$from" "$(kamailio_cpu)")
python3 - "$CALLS" "$used" "$elapsed" <<'PY'
import sys
calls, used, elapsed = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
print(f"through Kamailio: {calls} calls in {elapsed:.1f} s; Kamailio used {used:.2f} s CPU "
      f"= {used / calls * 1000:.3f} ms per call ({used / elapsed * 100:.1f} % of one core)")
PY
callers direct "$CALLS" "$RATE" "$NODE_B" 25174 || fail "calls straight to node B failed"
grep -E "Successful call|Failed call" "$work/proxied.out" "$work/direct.out"
