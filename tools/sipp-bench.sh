#!/usr/bin/env bash
# The issue-16 loads placed by SIPp instead of courtline-loadgen, so the two
# load generators can be compared on the same courtline build (BENCHMARKS.md).
#
#   tools/sipp-bench.sh --courtline /abs/path/to/courtline --rate 600 --calls 18000 \
#       --hold-ms 8000 --prompt-ms 5800 [--record-audio never] [--linger-s 60] [--keep-files]
#       [--max-setup-wait-ms N]   ([sip] max_setup_wait_ms; courtline's default when not given)
#       [--exports]   (while the calls run, compliance exports every call so far, one after another)
#
# One SIPp caller (tests/sipp/caller.xml: INVITE, ACK, hang up --hold-ms after
# the 200 OK) and one SIPp operator (tests/sipp/operator.xml: rings 1 s, then
# answers) on 127.0.0.4; courtline on 127.0.0.4:5060 with its shield lifted as
# for a trunk (every call comes from SIPp's one address). Prints what SIPp saw
# (calls, failures, retransmissions, INVITE -> 200 percentiles) and what
# courtline cost (CPU seconds, peak RSS, RSS --linger-s after the last call),
# after the raw loopback limit (courtline-loadgen --raw-only, found next to
# the courtline binary).
# SIPp does not read the RTP it is sent, so packet timing is not measured
# here: courtline-loadgen measures that.
set -euo pipefail

courtline="" rate=600 calls=18000 hold_ms=8000 prompt_ms=5800 record=never linger_s=60 keep=no max_wait="" exports=no
while [ $# -gt 0 ]; do
  case "$1" in
    --courtline) courtline=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --calls) calls=$2; shift 2 ;;
    --hold-ms) hold_ms=$2; shift 2 ;;
    --prompt-ms) prompt_ms=$2; shift 2 ;;
    --record-audio) record=$2; shift 2 ;;
    --linger-s) linger_s=$2; shift 2 ;;
    --keep-files) keep=yes; shift ;;
    --max-setup-wait-ms) max_wait="max_setup_wait_ms = $2"; shift 2 ;;
    --exports) exports=yes; shift ;;
    *) echo "sipp-bench: unknown option $1 (see the comment at the top of $0)" >&2; exit 2 ;;
  esac
done
case "$courtline" in
  /*) [ -x "$courtline" ] || { echo "sipp-bench: $courtline is not an executable" >&2; exit 2; } ;;
  *) echo "sipp-bench: --courtline needs an absolute path to a courtline binary" >&2; exit 2 ;;
esac
for tool in sipp sox; do
  command -v $tool >/dev/null || { echo "sipp-bench: $tool is not installed (apt install sip-tester sox)" >&2; exit 2; }
done

here=$(cd "$(dirname "$0")/.." && pwd)
ip=127.0.0.4
# Scraped every second during the run (the records delivery lag); 127.0.0.4 is this script's own.
admin_port=9461
dir=$(mktemp -d /tmp/courtline-sipp-bench.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "$keep" = yes ]; then echo "files (logs, SIPp statistics): $dir"; else rm -rf "$dir"; fi
}
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)"

sox -n -r 16000 -c 1 -b 16 "$dir/prompt.wav" synth "$(awk "BEGIN{print $prompt_ms/1000}")" sine 300-1800 vol 0.35
cat > "$dir/courtline.toml" <<EOF
[sip]
listen = "$ip:5060"
max_calls = 20000
# The SIPp operator's scenario takes INVITEs only: an OPTIONS probe would fail
# there and mark the operator down.
qualify_interval_s = 0
$max_wait

# Every caller is SIPp's one address, like calls from one trunk.
[sip.shield]
rate_per_s = 1000000.0
burst = 1000000

[media]
rtp_ports = "20000-59999"

[records.service]
listen = "$ip:50151"
database = "$dir/records.db"

[records.web]
listen = ""

[admin]
listen = "$ip:$admin_port"

[prompts.load]
file = "$dir/prompt.wav"

[[lines]]
number = "02112368"
court = "sipp bench"
prompt = "load"
operator = "sip:operator@$ip:5070"
ring_timeout_s = 30
record_audio = "$record"
EOF

# SIPp's sockets get the 4 MiB courtline's SIP socket asks for (the kernel caps
# both at net.core.rmem_max): with its default 64 KiB a SIPp descheduled for a
# few milliseconds on these two busy cores drops 100s and 200s in its own
# receive queue and retransmits the INVITE; the drops are printed below.
sipp_buffer=4194304
(cd "$dir" && exec sipp -sf "$here/tests/sipp/operator.xml" -i $ip -p 5070 -nostdin -buff_size $sipp_buffer \
   -trace_stat -stf "$dir/operator-stat.csv" -fd 1 -trace_err -error_file "$dir/operator-errors.log" >"$dir/operator.out" 2>&1) &
pids+=($!)
(cd "$dir" && RUST_LOG=${RUST_LOG:-info,rsipstack=warn} exec "$courtline" --config "$dir/courtline.toml" serve \
   >"$dir/courtline.log" 2>&1) &
cpid=$!
pids+=($cpid)
for _ in $(seq 100); do
  grep -q 'courtline is up' "$dir/courtline.log" 2>/dev/null && break
  sleep 0.1
done
grep -q 'courtline is up' "$dir/courtline.log" || { echo "sipp-bench: courtline did not start:" >&2; tail -n 20 "$dir/courtline.log" >&2; exit 1; }
sleep 1

cpu_s() { awk '{print ($14 + $15) / 100}' "/proc/$cpid/stat"; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$cpid/status"; }
idle_rss=$(rss_kib)
cpu0=$(cpu_s)
echo "load average before: $(cat /proc/loadavg)"
# The machine's own limit in the same sitting, as courtline-loadgen measures it.
loadgen=$(dirname "$courtline")/courtline-loadgen
if [ -x "$loadgen" ]; then
  "$loadgen" --raw-only --raw-s 2 || echo "raw loopback limit: not measured ($loadgen failed; it needs --raw-only, added with this script)"
else
  echo "raw loopback limit: not measured ($loadgen is not there; build it with cargo build -p courtline-loadgen)"
fi

# Every second while SIPp runs: recordings dropped so far (the writer's
# queue was full), how long call events have waited for the
# records service (with record_audio = "on_report" a recording's pages stay
# dirty until the service decides its fate), the kernel's dirty page cache,
# and sectors written to the disks: the run's cost beyond CPU.
# CPU seconds so far of courtline's threads whose names start with $1.
threads_cpu() {
  for comm in /proc/$cpid/task/*/comm; do
    if grep -q "^$1" "$comm" 2>/dev/null; then cat "${comm%comm}stat" 2>/dev/null || true; fi
  done | sed 's/.*) //' | awk '{ s += $12 + $13 } END { printf "%.2f", s / 100 }'
}
# Datagrams the kernel dropped so far because a receive queue was full, for
# courtline's SIP socket and SIPp's two (/proc/net/udp: local address in hex,
# the last column counts drops).
udp_drops() {
  awk -v a="$(printf '%02X%02X%02X%02X' ${ip##*.} 0 0 127)" \
    'BEGIN { want[sprintf("%s:%04X", a, 5060)] = 1; want[sprintf("%s:%04X", a, 5080)] = 2; want[sprintf("%s:%04X", a, 5070)] = 3 }
     $2 in want { d[want[$2]] = $NF } END { printf "%d %d %d", d[1], d[2], d[3] }' /proc/net/udp
}
disk_sectors() { awk '$3 !~ /^(loop|ram|sr)/ { s += $10 } END { printf "%d", s }' /proc/diskstats; }
sectors0=$(disk_sectors)
# CPU seconds every process on the machine spent (user, nice, system, irq,
# softirq; /proc/stat counts in 1/100 s): with courtline's own, what the calls
# left of the two cores.
machine_busy() { awk '$1 == "cpu" { printf "%.1f", ($2 + $3 + $4 + $7 + $8) / 100 }' /proc/stat; }
busy0=$(machine_busy)
(while kill -0 "$cpid" 2>/dev/null; do
   metrics=$(curl -s --max-time 1 "http://$ip:$admin_port/metrics")
   lag=$(echo "$metrics" | awk '$1 == "courtline_records_delivery_lag_seconds" { print $2 }')
   dropped=$(echo "$metrics" | awk '$1 == "courtline_recordings_dropped_total" { print $2 }')
   dirty=$(awk '/^Dirty:/ { print $2 }' /proc/meminfo)
   echo "${lag:-n/a} $dirty ${dropped:-n/a} $(threads_cpu recording-) $(threads_cpu media-) $(udp_drops)"
   sleep 1
 done > "$dir/samples.txt") &
sampler=$!
pids+=($sampler)

# With --exports, from 5 s into the calls until they are over, one export of
# every call stored so far after another, as compliance staff might run from
# the console: the records service's heaviest work, beside the calls. The CLI
# itself runs at the lowest priority, as if on another machine.
if [ "$exports" = yes ]; then
  (sleep 5
   while [ ! -e "$dir/calls-over" ]; do
     start=$(date +%s.%N)
     if nice -n 19 "$courtline" --config "$dir/courtline.toml" calls export --format jsonl \
          -o "$dir/export.jsonl" >>"$dir/exports.log" 2>&1; then
       echo "$start $(date +%s.%N) $(wc -l < "$dir/export.jsonl")" >> "$dir/exports.txt"
     else
       sleep 1
     fi
   done) &
  pids+=($!)
fi

# -timeout bounds the run: the calls' own time plus a minute.
bound=$(( calls / rate + hold_ms / 1000 + prompt_ms / 1000 + 60 ))
(cd "$dir" && sipp $ip:5060 -sf "$here/tests/sipp/caller.xml" -s 02112368 -i $ip -p 5080 \
   -r "$rate" -m "$calls" -l 20000 -d "$hold_ms" -nostdin -timeout "${bound}s" -buff_size $sipp_buffer \
   -trace_stat -stf "$dir/stat.csv" -fd 1 -trace_rtt -rtt_freq 1 -trace_screen \
   -trace_err -error_file "$dir/caller-errors.log" >"$dir/caller.out" 2>&1) || true

cpu1=$(cpu_s)
busy1=$(machine_busy)
touch "$dir/calls-over"
records_cpu=$(threads_cpu records)
sectors1=$(disk_sectors)
kill "$sampler" 2>/dev/null || true
end_rss=$(rss_kib)
peak_rss=$(awk '/^VmHWM/ {print $2}' "/proc/$cpid/status")
sleep "$linger_s"
linger_rss=$(rss_kib)
# The operator counts a call once its 2 s timewait is over, and writes its
# statistics every second.
[ "$linger_s" -ge 4 ] || sleep $((4 - linger_s))

# The last line of a SIPp statistics file ($2, default the caller's), by column name.
stat() {
  awk -F';' -v name="$1" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == name) c = i; next }
    { last = $c } END { print last }' "${2:-$dir/stat.csv}"
}
rtt_file=$(ls "$dir"/*_rtt.csv 2>/dev/null | head -1)
percentiles="n/a"
if [ -n "$rtt_file" ]; then
  percentiles=$(awk -F';' 'NR > 1 && $2 != "" { print $2 }' "$rtt_file" | sort -g |
    awk 'function at(q,  i) { i = int(NR * q) + 1; return v[i > NR ? NR : i] }
      { v[NR] = $1 } END { if (NR) printf "p50 %.2f ms, p99 %.2f ms, max %.2f ms (%d calls)",
      at(0.5), at(0.99), v[NR], NR }')
fi

echo "offered: $calls calls at $rate/s, hang up ${hold_ms} ms after the 200 OK, warning ${prompt_ms} ms, record_audio $record"
echo "SIPp caller: $(stat 'SuccessfulCall(C)') succeeded, $(stat 'FailedCall(C)') failed, $(stat 'Retransmissions(C)') retransmissions"
# Why calls failed (a shed call's 503 is an unexpected message to caller.xml).
echo "SIPp caller failures: $(awk -F';' 'NR == 1 { for (i = 1; i <= NF; i++) name[i] = $i; next }
  { for (i in name) last[i] = $i }
  END { for (i in name) if (name[i] ~ /^Failed.*\(C\)$/ && name[i] != "FailedCall(C)" && last[i] > 0)
    printf "%s %s; ", name[i], last[i] }' "$dir/stat.csv")"
echo "SIPp operator: $(stat 'SuccessfulCall(C)' "$dir/operator-stat.csv") bridged and ended, $(stat 'FailedCall(C)' "$dir/operator-stat.csv") not (a caller that hung up while it rang: its scenario counts the CANCEL as failed)"
echo "INVITE -> 200 OK: $percentiles"
echo "machine: $(awk "BEGIN{print $busy1 - $busy0}") CPU s busy during the calls (all processes, both cores)"
echo "courtline: $(awk "BEGIN{print $cpu1 - $cpu0}") CPU s, peak RSS $((peak_rss / 1024)) MB, at the last call $((end_rss / 1024)) MB, ${linger_s} s later $((linger_rss / 1024)) MB (idle $((idle_rss / 1024)) MB)"
# The median and the largest of the seconds on standard input, one a line;
# $1 when there are none.
seconds_p50_max() {
  sort -g | awk -v none="$1" '{ v[NR] = $1 } END { if (NR) printf "p50 %.1f s, max %.1f s", v[int(NR / 2) + 1], v[NR]; else printf "%s", none }'
}
echo "records delivery lag (each second of the run): $(awk '$1 != "n/a" { print $1 }' "$dir/samples.txt" | seconds_p50_max "not scraped")"
echo "dirty page cache: max $(awk '$2 > m { m = $2 } END { printf "%d", m / 1024 }' "$dir/samples.txt") MiB; disk writes during the calls: $(( (sectors1 - sectors0) / 2048 )) MiB"
echo "recordings dropped (writer behind): $(awk '$3 != "n/a" { last = $3 } END { print last + 0 }' "$dir/samples.txt") of $calls calls; recording threads: $(awk '{ last = $4 } END { print last + 0 }' "$dir/samples.txt") CPU s; media threads: $(awk '{ last = $5 } END { print last + 0 }' "$dir/samples.txt") CPU s"
echo "embedded records service's threads: $records_cpu CPU s"
if [ "$exports" = yes ]; then
  if [ -s "$dir/exports.txt" ]; then
    echo "compliance exports during the calls: $(wc -l < "$dir/exports.txt") finished, the last of $(awk '{ rows = $3 } END { print rows }' "$dir/exports.txt") calls; each took $(awk '{ printf "%.3f\n", $2 - $1 }' "$dir/exports.txt" | seconds_p50_max "n/a")"
  else
    echo "compliance exports during the calls: none finished (exports.log with --keep-files)"
  fi
fi
echo "UDP datagrams dropped in full receive queues: courtline's SIP socket $(awk '{ if ($6 > m) m = $6 } END { print m + 0 }' "$dir/samples.txt"), SIPp caller's $(awk '{ if ($7 > m) m = $7 } END { print m + 0 }' "$dir/samples.txt"), SIPp operator's $(awk '{ if ($8 > m) m = $8 } END { print m + 0 }' "$dir/samples.txt")"
