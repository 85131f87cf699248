#!/usr/bin/env bash
# Switchboards behind Kamailio (deploy/kamailio/): one records service, two
# courtline nodes on 127.0.0.2 and 127.0.0.3, Kamailio on 127.0.0.1:5080,
# SIPp callers on 127.0.0.4 and a SIPp operator, all on loopback.
#
#   tests/kamailio/run.sh
#
# Checks: calls spread over both nodes (records by node_id); after `kill -9` of
# node A, Kamailio takes it out within 3 s and every call placed from then on
# succeeds (on node B); once A restarts with its spool, the calls it had up are
# recorded `interrupted`; records carry the caller's own address (X-Orig-IP)
# and the proxy's; an X-Orig-IP sent straight to a node is ignored. The nodes
# deliver to a dead records endpoint first and fail over to the live one.
#
# Without kamailio or sipp it skips (exit 0), except under CI=true, where it
# fails. Every process it starts is stopped by PID when it ends; the whole run
# is bounded (a watchdog ends it after 240 s).
set -euo pipefail
cd "$(dirname "$0")/../.."

for tool in kamailio kamcmd sipp python3; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    if [ "${CI:-}" = "true" ]; then
      echo "FAILED: $tool not found (apt-get install -y kamailio sip-tester)" >&2
      exit 1
    fi
    echo "skipped: $tool not found (apt-get install -y kamailio sip-tester)"
    exit 0
  fi
done

cargo build --quiet
BIN=${CARGO_TARGET_DIR:-target}/debug/courtline
work=$(mktemp -d)
pids=()
cleanup() {
  local status=$?
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "$status" -ne 0 ] || [ -n "${KEEP_WORK:-}" ]; then
    echo "work directory kept: $work"
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT
# Bounded whatever happens: the watchdog ends the run (and so every child).
( sleep 240; echo "FAILED: the run took over 240 s" >&2; kill -TERM $$ ) &
pids+=($!)

PROXY=127.0.0.1:5080
NODE_A=127.0.0.2:25160
NODE_B=127.0.0.3:25160
CALLERS=127.0.0.4
OPERATOR=127.0.0.1:25190
RECORDS=127.0.0.1:25151
DEAD_RECORDS=127.0.0.1:25152
# Each call: answered at once, a 2 s warning, the operator answers after 1 s of
# ringing, the caller hangs up 6 s after the answer.
HOLD_MS=6000

fail() {
  echo "FAILED: $*"
  for f in "$work"/*.log "$work"/*/*.log "$work"/*.out; do
    [ -f "$f" ] && { echo "--- $f"; tail -n 25 "$f"; }
  done
  exit 1
}

python3 - "$work/prompt.wav" <<'PY'
import math, struct, sys, wave
# A 2 s rising sweep at 16 kHz: the line's warning.
with wave.open(sys.argv[1], "wb") as w:
    w.setnchannels(1); w.setsampwidth(2); w.setframerate(16000)
    w.writeframes(b"".join(
        struct.pack("<h", int(12000 * math.sin(2 * math.pi * (300 + 1500 * t / 16000) * t / 16000)))
        for t in range(32000)))
PY

# The parts every config shares: the line, and no admin or web endpoint.
common() {
  cat <<TOML
[admin]
listen = ""
[records.web]
listen = ""
[prompts.warning]
file = "$work/prompt.wav"
[[lines]]
number = "02112368"
court = "上海市第一中级人民法院"
prompt = "warning"
operator = "sip:operator@$OPERATOR"
ring_timeout_s = 10
record_audio = "never"
TOML
}

mkdir -p "$work/records" "$work/a" "$work/b"
cat > "$work/records/courtline.toml" <<TOML
[records]
endpoint = "http://$RECORDS"
[records.service]
embedded = false
listen = "$RECORDS"
database = "$work/records/records.db"
$(common)
TOML

# $1 name, $2 SIP address, $3 RTP ports.
node_config() {
  cat > "$work/$1/courtline.toml" <<TOML
[sip]
listen = "$2"
tcp = false
qualify_interval_s = 0
drain_timeout_s = 2
trusted_proxies = ["${PROXY%:*}"]
[media]
rtp_ports = "$3"
[records]
endpoints = ["http://$DEAD_RECORDS", "http://$RECORDS"]
spool_dir = "$work/$1/spool"
node_id = "node-$1"
[records.service]
embedded = false
$(common)
TOML
  "$BIN" --config "$work/$1/courtline.toml" check >/dev/null || fail "node $1's config"
}
node_config a "$NODE_A" 26000-26499
node_config b "$NODE_B" 26500-26999

# $1 name (log file), $2 config, $3 what the log says once ready, then the command.
start() {
  local name=$1 config=$2 ready=$3; shift 3
  RUST_LOG=info,rsipstack=warn "$BIN" --config "$config" "$@" >>"$work/$name.log" 2>&1 &
  started=$!
  pids+=("$started")
  for _ in $(seq 100); do
    grep -q "$ready" "$work/$name.log" && return 0
    kill -0 "$started" 2>/dev/null || break
    sleep 0.1
  done
  fail "$name did not start"
}

start records "$work/records/courtline.toml" "records service listening" records serve
start node-a "$work/a/courtline.toml" "courtline is up" serve
node_a=$started
start node-b "$work/b/courtline.toml" "courtline is up" serve

sipp -nostdin -sf tests/sipp/operator.xml -i "${OPERATOR%:*}" -p "${OPERATOR#*:}" -mp 27000 -rtp_echo \
  -trace_err -error_file "$work/operator_errors.log" >"$work/operator.out" 2>&1 &
pids+=($!)

cat > "$work/dispatcher.list" <<LIST
1 sip:$NODE_A 8 0 duid=node-a
1 sip:$NODE_B 8 0 duid=node-b
LIST
mkdir -p "$work/kamailio"
kamailio -DD -E -f deploy/kamailio/kamailio.cfg \
  -A "LISTEN=udp:$PROXY" \
  -A "DISPATCHER_LIST=\"$work/dispatcher.list\"" \
  -A "CTL_SOCKET=\"unix:$work/kamailio/ctl\"" \
  -Y "$work/kamailio" -P "$work/kamailio/kamailio.pid" -m 64 -M 8 \
  >"$work/kamailio.log" 2>&1 &
pids+=($!)

# Each node's dispatcher state, "URI FLAGS" per line (AP active, IP inactive).
node_states() {
  kamcmd -s "unix:$work/kamailio/ctl" dispatcher.list 2>/dev/null |
    awk '/URI:/ {uri=$2} /FLAGS:/ {print uri, $2}'
}
for _ in $(seq 100); do
  [ "$(node_states | grep -c ' AP$' || true)" -eq 2 ] && break
  sleep 0.1
done
[ "$(node_states | grep -c ' AP$' || true)" -eq 2 ] || fail "Kamailio does not see both nodes active: $(node_states)"

# $1 name, $2 calls, $3 rate per second, $4 target, $5 local port.
callers() {
  sipp -nostdin -sf tests/sipp/caller_via_proxy.xml -s 02112368 -i "$CALLERS" -p "$5" -mp $((28000 + $5 % 100 * 100)) \
    -d "$HOLD_MS" -m "$2" -r "$3" -l "$2" -timeout 60s -timeout_error \
    -trace_err -error_file "$work/$1_errors.log" "$4" >"$work/$1.out" 2>&1
}

# 1. X-Orig-IP straight from a caller, not through the proxy: ignored.
callers direct 1 1 "$NODE_B" 25172 || fail "the direct call failed"

# 2. Calls through Kamailio, all up when node A is killed.
callers before 16 4 "$PROXY" 25170 &
before=$!
pids+=("$before")
sleep 4.5
kill -9 "$node_a"
killed_at=$(date +%s.%N)
wait "$node_a" 2>/dev/null || true

# 3. From now on every call succeeds: the first ones fail over from A to B,
#    then Kamailio sends them to B only.
callers after 20 4 "$PROXY" 25171 &
after=$!
pids+=("$after")
taken_out=""
for _ in $(seq 100); do
  if node_states | grep -q "^sip:$NODE_A I"; then
    taken_out=$(python3 -c "import sys, time; print(f'{time.time() - float(sys.argv[1]):.1f}')" "$killed_at")
    break
  fi
  sleep 0.05
done
[ -n "$taken_out" ] || fail "Kamailio never took node A out: $(node_states)"
python3 -c "import sys; assert float(sys.argv[1]) <= 3.0" "$taken_out" ||
  fail "Kamailio took node A out only after $taken_out s (want within 3 s)"
echo "node A taken out of rotation $taken_out s after kill -9"
wait "$after" || fail "a call placed after node A died failed"
# The calls that were up on node A end in errors for their callers: expected.
wait "$before" || true

# 4. Node A comes back with its spool: the calls it had up become `interrupted`.
start node-a "$work/a/courtline.toml" "courtline is up" serve

records_check() {
  local records
  records=$("$BIN" --config "$work/records/courtline.toml" calls list --all --format json)
  python3 - "$records" <<'PY'
import json, sys
records = json.loads(sys.argv[1])
# SIPp Call-IDs are number-pid@address: one pid per SIPp run.
by_run = {}
for r in records:
    by_run.setdefault(r["sip_call_id"].split("-")[1].split("@")[0], []).append(r)
runs = sorted(by_run.values(), key=lambda rs: min(r["received_at_ms"] for r in rs))
assert len(runs) == 3, f"expected the direct, before and after runs, got {len(runs)}: {records}"
direct, before, after = runs
assert len(direct) == 1 and len(before) == 16 and len(after) == 20, [len(r) for r in runs]
# The direct caller's X-Orig-IP is ignored: its own address, no proxy.
d = direct[0]
assert d["caller_source"].startswith("127.0.0.4:") and d["proxy_source"] == "", d
assert d["node_id"] == "node-b" and d["end_reason"] == "caller_hung_up", d
# Through Kamailio: the caller's address (not what it claimed), and the proxy.
for r in before + after:
    assert r["caller_source"] == "127.0.0.4", r
    assert r["proxy_source"] == "127.0.0.1:5080", r
nodes = {r["node_id"] for r in before}
assert nodes == {"node-a", "node-b"}, f"calls did not spread over both nodes: {nodes}"
for r in after:
    assert r["node_id"] == "node-b" and r["state"] == "ended", r
    assert r["end_reason"] == "caller_hung_up" and r["operator_answered_at_ms"] > 0, r
for r in before:
    if r["node_id"] == "node-b":
        assert r["state"] == "ended" and r["end_reason"] == "caller_hung_up", r
    else:
        assert r["state"] == "interrupted", r
print(f"{len(records)} records: {sum(r['node_id'] == 'node-a' for r in before)} of the first "
      f"{len(before)} calls on node A (interrupted), the other {len(after) + 1 + sum(r['node_id'] == 'node-b' for r in before)} on node B")
PY
}
ok=""
for _ in $(seq 100); do
  if records_check >"$work/records_check.out" 2>&1; then ok=1; break; fi
  sleep 0.2
done
[ -n "$ok" ] || { cat "$work/records_check.out"; fail "records check"; }
cat "$work/records_check.out"
grep -q "not in \[sip\] trusted_proxies" "$work/node-b.log" ||
  fail "node B did not log the X-Orig-IP it ignored"
grep -q "fails over to the next records service" "$work/node-b.log" ||
  fail "node B never failed over from the dead records endpoint"
echo "PASSED: switchboards behind Kamailio"
