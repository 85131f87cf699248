#!/usr/bin/env bash
# SIPp interop: SIPp as callers and SIPp as the operator complete calls through
# a real courtline (UDP SIP, real RTP, embedded records service in SQLite),
# then the records are read back with `courtline calls list`.
#
#   tests/sipp/run.sh            # 3 calls
#   CALLS=10 tests/sipp/run.sh
#
# Loopback only; every process it starts is stopped by PID when it ends.
set -euo pipefail
cd "$(dirname "$0")/../.."

CALLS=${CALLS:-3}
SIP_PORT=25060
OPERATOR_PORT=25090
RECORDS_PORT=25051
command -v sipp >/dev/null || { echo "sipp not found: apt-get install -y sip-tester" >&2; exit 2; }

cargo build --quiet
BIN=target/debug/courtline
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

cat > "$work/courtline.toml" <<TOML
[sip]
listen = "127.0.0.1:$SIP_PORT"
[media]
rtp_ports = "26000-26999"
[records]
endpoint = "http://127.0.0.1:$RECORDS_PORT"
[records.service]
listen = "127.0.0.1:$RECORDS_PORT"
database = "$work/records.db"
[prompts.three_rules_zh]
file = "audio/three_rules_zh.wav"
[[lines]]
number = "02112368"
court = "上海市第一中级人民法院"
prompt = "three_rules_zh"
operator = "sip:operator@127.0.0.1:$OPERATOR_PORT"
ring_timeout_s = 10
TOML

"$BIN" --config "$work/courtline.toml" check

sipp -nostdin -sf tests/sipp/operator.xml -i 127.0.0.1 -p "$OPERATOR_PORT" -mp 27000 -rtp_echo \
  -m "$CALLS" -timeout 90s -timeout_error -trace_err -error_file "$work/operator_errors.log" \
  >"$work/operator.out" 2>&1 &
operator_pid=$!
pids+=("$operator_pid")

RUST_LOG=info,rsipstack=warn "$BIN" --config "$work/courtline.toml" serve >"$work/courtline.log" 2>&1 &
pids+=("$!")
for _ in $(seq 50); do
  grep -q "courtline is up" "$work/courtline.log" && break
  sleep 0.1
done

status=0
sipp -nostdin -sf tests/sipp/caller.xml -s 02112368 -i 127.0.0.1 -p 25070 -mp 27100 \
  -m "$CALLS" -r 1 -l "$CALLS" -timeout 90s -timeout_error -trace_err -error_file "$work/caller_errors.log" \
  "127.0.0.1:$SIP_PORT" >"$work/caller.out" 2>&1 || status=$?
if [ "$status" -ne 0 ]; then
  echo "SIPp caller failed (exit $status)"; tail -n 40 "$work/caller.out"; cat "$work/caller_errors.log" 2>/dev/null || true
  tail -n 40 "$work/courtline.log"; exit 1
fi
operator_status=0
wait "$operator_pid" || operator_status=$?
if [ "$operator_status" -ne 0 ]; then
  echo "SIPp operator failed (exit $operator_status)"; tail -n 40 "$work/operator.out"; cat "$work/operator_errors.log" 2>/dev/null || true
  tail -n 40 "$work/courtline.log"; exit 1
fi

# Records: one per call, warning completed, connected, ended by the caller.
records=$("$BIN" --config "$work/courtline.toml" calls list --format json)
python3 - "$CALLS" <<PY
import json, sys
calls = int(sys.argv[1])
records = json.loads('''$records''')
assert len(records) == calls, f"expected {calls} records, got {len(records)}"
for r in records:
    assert r["end_reason"] == "caller_hung_up", r
    assert r["prompt_completed"] is True, r
    assert r["operator_answered_at_ms"] > 0, r
    assert r["prompt_sha256"] and r["caller_display_name"] == "SIPp 来电", r
print(f"sipp interop: {calls} calls completed and recorded")
PY
echo "1 passed, 0 failed"
