#!/usr/bin/env bash
# What one RTP packet costs the sending thread on this machine, for issue 16's
# CPU target (BENCHMARKS.md, "What a packet costs the sender").
#
#   tools/send-cost.sh --courtline /abs/path/to/courtline [--callers 5000] [--perf-s 4]
#
# 1. The raw loopback measurement (courtline-loadgen --raw-only, found next to
#    the courtline binary): one thread sends 172-byte datagrams to one socket
#    with sendmmsg as fast as it can, another receives them. Printed: each
#    thread's CPU per packet, from /proc, over the measurement's last 4 s.
# 2. courtline-loadgen with --callers callers in a 60 s warning, recording off;
#    perf samples courtline's media-0 thread in the steady window and the
#    script prints which share of its samples is the kernel delivering the
#    packet into the receiver's socket (net_rx_action under the send: on
#    loopback the sender pays for the receiver's half; on a network card the
#    other machine does) and which the route lookup.
# Needs perf (linux-perf) and root or perf_event_paranoid <= 1 for the thread.
set -euo pipefail

courtline="" callers=5000 perf_s=4
while [ $# -gt 0 ]; do
  case "$1" in
    --courtline) courtline=$2; shift 2 ;;
    --callers) callers=$2; shift 2 ;;
    --perf-s) perf_s=$2; shift 2 ;;
    *) echo "send-cost: unknown option $1 (see the comment at the top of $0)" >&2; exit 2 ;;
  esac
done
case "$courtline" in
  /*) [ -x "$courtline" ] || { echo "send-cost: $courtline is not an executable" >&2; exit 2; } ;;
  *) echo "send-cost: --courtline needs an absolute path to a courtline binary" >&2; exit 2 ;;
esac
loadgen=$(dirname "$courtline")/courtline-loadgen
[ -x "$loadgen" ] || { echo "send-cost: $loadgen is not there (cargo build --release -p courtline-loadgen)" >&2; exit 2; }
command -v perf >/dev/null || { echo "send-cost: perf is not installed (apt install linux-perf)" >&2; exit 2; }

dir=$(mktemp -d /tmp/courtline-send-cost.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

# CPU ticks (user + system) of the thread of process $1 named $2.
ticks() {
  for task in /proc/"$1"/task/*; do
    if [ "$(cat "$task/comm")" = "$2" ]; then awk '{print $14 + $15}' "$task/stat"; return; fi
  done
  echo 0
}

echo "load average before: $(cat /proc/loadavg)"
"$loadgen" --raw-only --raw-s 6 >"$dir/raw.out" 2>&1 &
raw=$!
pids+=($raw)
sleep 1.5
send0=$(ticks $raw raw-send) recv0=$(ticks $raw raw-recv)
sleep 4
send1=$(ticks $raw raw-send) recv1=$(ticks $raw raw-recv)
wait $raw
cat "$dir/raw.out"
rate=$(awk '/raw loopback limit/ {print $7}' "$dir/raw.out")
hz=$(getconf CLK_TCK)
awk -v s=$((send1 - send0)) -v r=$((recv1 - recv0)) -v hz="$hz" -v rate="$rate" 'BEGIN {
  printf "raw sender: %.2f cores = %.2f us a packet; raw receiver: %.2f cores = %.2f us a packet\n",
    s / hz / 4, s / hz / 4 / rate * 1e6, r / hz / 4, r / hz / 4 / rate * 1e6 }'

"$loadgen" --courtline "$courtline" --calls "$callers" --concurrency "$callers" --rate 500 \
  --prompt-ms 60000 --hold-s 15 --max-duration-s 120 --record-audio never >"$dir/calls.out" 2>&1 &
lg=$!
pids+=($lg)
cpid=""
for _ in $(seq 200); do
  cpid=$(pgrep -P $lg -x courtline | head -1 || true)
  [ -n "$cpid" ] && break
  sleep 0.1
done
[ -n "$cpid" ] || { echo "send-cost: courtline did not start" >&2; exit 1; }
# The load generator measures its own raw limit (2 s) first, then places the
# calls at 500/s: all are up from about callers/500 s after that.
sleep $(( 3 + callers / 500 + 1 ))
media=""
for task in /proc/"$cpid"/task/*; do
  [ "$(cat "$task/comm")" = media-0 ] && media=$(basename "$task")
done
[ -n "$media" ] || { echo "send-cost: no media-0 thread in courtline $cpid" >&2; exit 1; }
perf record -q -g -F 1999 -t "$media" -o "$dir/perf.data" -- sleep "$perf_s" 2>/dev/null
wait $lg || true
grep -E 'raw loopback|^RTP|steady window|inter-arrival deviation from 20 ms, to callers' "$dir/calls.out"
perf script -i "$dir/perf.data" -F ip,sym 2>/dev/null | awk '
  /^$/ { if (n) { total++; if (rx) delivery++; if (route) routed++ } n = 0; rx = 0; route = 0; next }
  { n++ }
  /net_rx_action/ { rx = 1 }
  /ip_route_output/ { route = 1 }
  END { if (n) { total++; if (rx) delivery++; if (route) routed++ }
    if (total) printf "media-0: %d samples; delivering into the receiver'"'"'s sockets %.1f %%, route lookup %.1f %%\n",
      total, 100 * delivery / total, 100 * routed / total }'
