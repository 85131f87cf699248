#!/usr/bin/env bash
# SIPp interop: SIPp plays callers, operators and a PBX registrar against a
# real courtline (real SIP and RTP on loopback, embedded records service in
# SQLite); records are read back with `courtline calls list`.
#
#   tests/sipp/run.sh            # every case
#   tests/sipp/run.sh tcp        # one case: udp | ipv6 | tcp | delayed_offer | missing_ack | retransmission | cancel_race | inbound_auth | hold | flood | operator_auth | registration | early_media | dtmf
#
# Loopback only; every process it starts is stopped by PID when it ends.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v sipp >/dev/null || { echo "sipp not found: apt-get install -y sip-tester" >&2; exit 2; }

cargo build --quiet
BIN=${CARGO_TARGET_DIR:-target}/debug/courtline
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

SIP_PORT=25060
# The loopback address of SIP and RTP (the ipv6 case sets ::1).
HOST=127.0.0.1
# "$HOST:$1" as SIP and SIPp write it: [::1]:port for IPv6.
hostport() { case $HOST in *:*) echo "[$HOST]:$1" ;; *) echo "$HOST:$1" ;; esac; }
OPERATOR_PORT=25090
RECORDS_PORT=25051
# The Mandarin warning is 18.4 s; callers stay on for the warning, ringback and a few seconds with the operator.
HOLD_MS=22000

# Writes a config for one case: $1 = case dir, $2 = operator URI, $3 = extra TOML.
write_config() {
  mkdir -p "$1"
  cat > "$1/courtline.toml" <<TOML
[sip]
listen = "$(hostport "$SIP_PORT")"
qualify_interval_s = 0
$3
[media]
rtp_ports = "26000-26999"
[records]
endpoint = "http://127.0.0.1:$RECORDS_PORT"
[records.service]
listen = "127.0.0.1:$RECORDS_PORT"
database = "$1/records.db"
[prompts.three_rules_zh]
file = "audio/three_rules_zh.wav"
[[lines]]
number = "02112368"
court = "上海市第一中级人民法院"
prompt = "three_rules_zh"
operator = "$2"
ring_timeout_s = 10
$4
TOML
  "$BIN" --config "$1/courtline.toml" check >/dev/null
}

# Starts courtline for a case dir; waits until it listens.
start_courtline() {
  RUST_LOG=info,rsipstack=warn "$BIN" --config "$1/courtline.toml" serve >"$1/courtline.log" 2>&1 &
  courtline_pid=$!
  pids+=("$courtline_pid")
  for _ in $(seq 100); do
    grep -q "courtline is up" "$1/courtline.log" && return 0
    sleep 0.1
  done
  echo "courtline did not start:"; cat "$1/courtline.log"; exit 1
}

stop_courtline() {
  kill -INT "$courtline_pid" 2>/dev/null || true
  wait "$courtline_pid" 2>/dev/null || true
}

fail() {
  local dir=$1; shift
  echo "FAILED: $*"
  for f in "$dir"/*.out "$dir"/*errors.log; do [ -f "$f" ] && { echo "--- $f"; tail -n 30 "$f"; }; done
  echo "--- courtline.log"; tail -n 40 "$dir/courtline.log"
  exit 1
}

# Starts one SIPp operator (operator.xml) for $2 calls of case dir $1; sets operator_pid.
start_operator() {
  sipp -nostdin -sf tests/sipp/operator.xml -i 127.0.0.1 -p "$OPERATOR_PORT" -mp 27000 -rtp_echo \
    -m "$2" -timeout 120s -timeout_error -trace_err -error_file "$1/operator_errors.log" \
    >"$1/operator.out" 2>&1 &
  operator_pid=$!
  pids+=("$operator_pid")
}

# Prints a case's records, oldest first, once $2 of them have arrived (a
# record reaches the records service a moment after its call ends).
records_of() {
  local records
  for _ in $(seq 50); do
    records=$("$BIN" --config "$1/courtline.toml" calls list --oldest-first --format json)
    [ "$(python3 -c 'import json, sys; print(len(json.loads(sys.argv[1])))' "$records")" -ge "$2" ] && break
    sleep 0.1
  done
  echo "$records"
}

# Runs SIPp callers against courtline while a SIPp operator answers; checks the records.
# $1 case dir, $2 calls, $3 operator scenario, $4 transport flag (u1 / t1),
# $5 caller scenario (default caller.xml), $6 codec the records must show (default PCMU).
calls_case() {
  local dir=$1 calls=$2 operator=$3 transport=$4 caller=${5:-caller.xml} codec=${6:-PCMU}
  sipp -nostdin -t "$transport" -sf "tests/sipp/$operator" -i "$HOST" -p "$OPERATOR_PORT" -mp 27000 -rtp_echo \
    -m "$calls" -timeout 120s -timeout_error -trace_err -error_file "$dir/operator_errors.log" \
    >"$dir/operator.out" 2>&1 &
  local operator_pid=$!
  pids+=("$operator_pid")
  start_courtline "$dir"
  local status=0
  sipp -nostdin -t "$transport" -sf "tests/sipp/$caller" -s 02112368 -i "$HOST" -p 25070 -mp 27100 \
    -d "$HOLD_MS" -m "$calls" -r 1 -l "$calls" -timeout 120s -timeout_error \
    -trace_err -error_file "$dir/caller_errors.log" \
    "$(hostport "$SIP_PORT")" >"$dir/caller.out" 2>&1 || status=$?
  [ "$status" -eq 0 ] || fail "$dir" "SIPp caller exited $status"
  wait "$operator_pid" || fail "$dir" "SIPp operator exited $?"
  local records
  records=$(records_of "$dir" "$calls")
  python3 - "$calls" "$records" "$codec" "$(hostport 25070)" <<'PY' || fail "$dir" "records check"
import json, sys
calls, records, codec, caller = int(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]
assert len(records) == calls, f"expected {calls} records, got {len(records)}"
for r in records:
    assert r["caller_source"] == caller, r
    assert r["end_reason"] == "caller_hung_up", r
    assert r["prompt_completed"] is True, r
    assert r["operator_answered_at_ms"] > 0, r
    assert r["codec"] == codec, r
    assert r["prompt_sha256"] and r["caller_display_name"] == "SIPp 来电", r
PY
  stop_courtline
}

case_udp() {
  write_config "$work/udp" "sip:operator@127.0.0.1:$OPERATOR_PORT" "" ""
  calls_case "$work/udp" 3 operator.xml u1
}

# SIP (UDP, then TCP) and RTP over IPv6 on both legs: courtline on [::1], SIPp callers and
# operator at ::1 (c=IN IP6), the operator configured as sip:operator@[::1]:port.
case_ipv6() {
  HOST=::1
  write_config "$work/ipv6" "sip:operator@[::1]:$OPERATOR_PORT" "" ""
  calls_case "$work/ipv6" 2 operator.xml u1
  write_config "$work/ipv6_tcp" "sip:operator@[::1]:$OPERATOR_PORT;transport=tcp" "" ""
  calls_case "$work/ipv6_tcp" 1 operator.xml t1
  HOST=127.0.0.1
}

case_tcp() {
  write_config "$work/tcp" "sip:operator@127.0.0.1:$OPERATOR_PORT;transport=tcp" "" ""
  calls_case "$work/tcp" 1 operator.xml t1
}

case_operator_auth() {
  write_config "$work/auth" "sip:operator@127.0.0.1:$OPERATOR_PORT" "" "
[[operator_accounts]]
uri = \"sip:operator@127.0.0.1:$OPERATOR_PORT\"
username = \"courtline\"
password = \"s3cret\""
  calls_case "$work/auth" 1 operator_auth.xml u1
}

case_delayed_offer() {
  write_config "$work/delayed" "sip:operator@127.0.0.1:$OPERATOR_PORT" "" ""
  calls_case "$work/delayed" 1 operator.xml u1 caller_delayed_offer.xml PCMA
}

case_missing_ack() {
  local dir=$work/no_ack
  # T1 = 50 ms: courtline gives up on the ACK after 64*T1 = 3.2 s.
  write_config "$dir" "sip:operator@127.0.0.1:$OPERATOR_PORT" "t1_ms = 50" ""
  start_courtline "$dir"
  sipp -nostdin -sf tests/sipp/caller_no_ack.xml -s 02112368 -i 127.0.0.1 -p 25070 -mp 27100 \
    -m 1 -timeout 30s -timeout_error -trace_err -error_file "$dir/caller_errors.log" \
    "127.0.0.1:$SIP_PORT" >"$dir/caller.out" 2>&1 || fail "$dir" "SIPp caller exited $?"
  local records
  records=$(records_of "$dir" 1)
  python3 - "$records" <<'PY' || fail "$dir" "records check"
import json, sys
records = json.loads(sys.argv[1])
assert len(records) == 1 and records[0]["end_reason"] == "no_ack", records
PY
  stop_courtline
}

case_retransmission() {
  write_config "$work/retransmit" "sip:operator@127.0.0.1:$OPERATOR_PORT" "" ""
  # calls_case checks there is exactly one record for the one call.
  calls_case "$work/retransmit" 1 operator.xml u1 caller_retransmit.xml
}

# CANCEL racing the 200 OK both ways and late CANCELs, one SIPp caller after
# the other against one courtline: it rings 1 s before answering (the first
# caller's CANCEL leaves 100 ms before the 200 would), and T1 = 50 ms puts the
# end of the INVITE transaction (64*T1) within the last caller's call.
case_cancel_race() {
  local dir=$work/cancel_race
  write_config "$dir" "sip:operator@127.0.0.1:$OPERATOR_PORT" "answer_delay_ms = 1000
t1_ms = 50" ""
  start_courtline "$dir"
  local scenario
  for scenario in before_answer crossing_answer late; do
    sipp -nostdin -sf "tests/sipp/caller_cancel_$scenario.xml" -s 02112368 -i 127.0.0.1 -p 25070 -mp 27100 \
      -d 2000 -m 1 -timeout 30s -timeout_error -trace_err -error_file "$dir/${scenario}_errors.log" \
      "127.0.0.1:$SIP_PORT" >"$dir/$scenario.out" 2>&1 || fail "$dir" "SIPp caller (CANCEL $scenario) exited $?"
  done
  local records
  records=$(records_of "$dir" 3)
  python3 - "$records" <<'PY' || fail "$dir" "records check"
import json, sys
before, crossing, late = json.loads(sys.argv[1])
# Cancelled before the answer: 487, never answered, no prompt.
assert before["end_reason"] == "cancelled_before_answer", before
assert before["sip_final_status"] == 487 and before["answered_at_ms"] == 0, before
assert before["prompt_started_at_ms"] == 0, before
# CANCELs after the 200 OK changed nothing: answered, the prompt played until the caller's BYE.
for r in (crossing, late):
    assert r["end_reason"] == "caller_hung_up_during_prompt", r
    assert r["answered_at_ms"] > 0 and r["prompt_started_at_ms"] > 0, r
    assert r["sip_final_status"] == 200, r
# The late caller stayed on past both CANCELs (1 s and 5 s after its ACK).
assert late["ended_at_ms"] - late["answered_at_ms"] >= 6000, late
PY
  stop_courtline
}

# Inbound digest authentication: a caller from an exempt trunk (127.0.0.5)
# gets straight in; an untrusted caller answers the 401 with the right password
# and gets in; one with a wrong password gets 403 and is recorded as refused.
case_inbound_auth() {
  local dir=$work/inbound_auth
  write_config "$dir" "sip:operator@127.0.0.1:$OPERATOR_PORT" "[sip.inbound_auth]
realm = \"courtline.test\"
users = [{ username = \"caller\", password = \"s3cret\" }]
exempt = [\"127.0.0.5/32\"]" ""
  start_courtline "$dir"
  local run=(sipp -nostdin -s 02112368 -p 25070 -mp 27100 -d 2000 -m 1 -timeout 30s -timeout_error)
  "${run[@]}" -sf tests/sipp/caller.xml -i 127.0.0.5 -trace_err -error_file "$dir/exempt_errors.log" \
    "127.0.0.1:$SIP_PORT" >"$dir/exempt.out" 2>&1 || fail "$dir" "exempt SIPp caller exited $?"
  "${run[@]}" -sf tests/sipp/caller_auth.xml -i 127.0.0.1 -au caller -ap s3cret -trace_err \
    -error_file "$dir/auth_errors.log" "127.0.0.1:$SIP_PORT" >"$dir/auth.out" 2>&1 \
    || fail "$dir" "authenticating SIPp caller exited $?"
  "${run[@]}" -sf tests/sipp/caller_auth_wrong.xml -i 127.0.0.1 -au caller -ap guess -trace_err \
    -error_file "$dir/wrong_errors.log" "127.0.0.1:$SIP_PORT" >"$dir/wrong.out" 2>&1 \
    || fail "$dir" "SIPp caller with a wrong password exited $?"
  local records
  records=$(records_of "$dir" 3)
  python3 - "$records" <<'PY' || fail "$dir" "records check"
import json, sys
# 401 challenges are not calls: exactly one record per caller.
exempt, authenticated, wrong = json.loads(sys.argv[1])
assert exempt["caller_source"].startswith("127.0.0.5:"), exempt
for r in (exempt, authenticated):
    assert r["end_reason"] == "caller_hung_up_during_prompt" and r["answered_at_ms"] > 0, r
assert wrong["end_reason"] == "rejected" and wrong["sip_final_status"] == 403, wrong
PY
  grep -q "caller authenticated" "$dir/courtline.log" || fail "$dir" "no authentication logged"
  stop_courtline
}

case_hold() {
  write_config "$work/hold" "sip:operator@127.0.0.1:$OPERATOR_PORT" "" ""
  calls_case "$work/hold" 1 operator_hold.xml u1 caller_hold.xml
}

# An early-media line: one caller hears the warning and the ringback after 183
# and is answered (with the 183's SDP) when the operator answers; a second one
# cancels during the warning.
case_early_media() {
  local dir=$work/early_media
  write_config "$dir" "sip:operator@127.0.0.1:$OPERATOR_PORT" "" 'answer_mode = "early_media"'
  start_operator "$dir" 1
  start_courtline "$dir"
  sipp -nostdin -sf tests/sipp/caller_early_media.xml -s 02112368 -i 127.0.0.1 -p 25070 -mp 27100 -rtp_echo \
    -m 1 -timeout 120s -timeout_error -trace_err -error_file "$dir/caller_errors.log" \
    -trace_logs -log_file "$dir/caller_logs.log" \
    "127.0.0.1:$SIP_PORT" >"$dir/caller.out" 2>&1 || fail "$dir" "SIPp early-media caller exited $?"
  wait "$operator_pid" || fail "$dir" "SIPp operator exited $?"
  sipp -nostdin -sf tests/sipp/caller_early_cancel.xml -s 02112368 -i 127.0.0.1 -p 25070 -mp 27100 \
    -m 1 -timeout 60s -timeout_error -trace_err -error_file "$dir/cancel_errors.log" \
    "127.0.0.1:$SIP_PORT" >"$dir/cancel.out" 2>&1 || fail "$dir" "SIPp cancelling caller exited $?"
  local records
  records=$(records_of "$dir" 2)
  python3 - "$records" "$dir/caller_logs.log" <<'PY' || fail "$dir" "records check"
import json, sys
records = json.loads(sys.argv[1])
assert len(records) == 2, records
answered, cancelled = records
assert answered["end_reason"] == "caller_hung_up", answered
assert answered["prompt_completed"] is True and answered["sip_final_status"] == 200, answered
# Answered only after the warning, when the operator answered.
assert answered["answered_at_ms"] >= answered["prompt_ended_at_ms"] > 0, answered
assert answered["answered_at_ms"] >= answered["operator_answered_at_ms"] > 0, answered
# SIPp echoed the early media back: courtline heard the caller before answering.
assert answered["media"]["caller"]["packets_received"] > 500, answered
assert cancelled["end_reason"] == "caller_hung_up_during_prompt", cancelled
assert cancelled["sip_final_status"] == 487 and cancelled["answered_at_ms"] == 0, cancelled
assert cancelled["prompt_completed"] is False and cancelled["prompt_ms_sent"] >= 2000, cancelled
# The 183 and the 200 carried the same SDP origin, connection and media lines.
lines = [l.strip() for l in open(sys.argv[2], encoding="utf-8") if l.startswith(("183 ", "200 "))]
assert len(lines) == 2 and lines[0][4:] == lines[1][4:] and "m=audio" in lines[0], lines
PY
  stop_courtline
}

# Keys pressed during the warning, from a pcap of RFC 4733 packets (SIPp sends
# it through a raw socket: run as root). The pcap is regenerated and compared
# with the committed one first, so it is known to come from make_dtmf_pcap.py.
case_dtmf() {
  local dir=$work/dtmf
  write_config "$dir" "sip:operator@127.0.0.1:$OPERATOR_PORT" "" ""
  python3 tests/sipp/make_dtmf_pcap.py "$dir/dtmf_keys.pcap"
  cmp -s "$dir/dtmf_keys.pcap" tests/sipp/dtmf_keys.pcap \
    || fail "$dir" "tests/sipp/dtmf_keys.pcap differs from what make_dtmf_pcap.py writes"
  start_courtline "$dir"
  sipp -nostdin -sf tests/sipp/caller_dtmf.xml -s 02112368 -i 127.0.0.1 -p 25070 -mp 27100 \
    -m 1 -timeout 60s -timeout_error -trace_err -error_file "$dir/caller_errors.log" \
    "127.0.0.1:$SIP_PORT" >"$dir/caller.out" 2>&1 || fail "$dir" "SIPp DTMF caller exited $?"
  local records
  records=$(records_of "$dir" 1)
  python3 - "$records" <<'PY' || fail "$dir" "records check"
import json, sys
records = json.loads(sys.argv[1])
assert len(records) == 1, records
r = records[0]
# 1, 1 again (a new timestamp), # — each once despite its three end packets.
assert r["dtmf_during_prompt"] == "11#", r
assert r["end_reason"] == "caller_hung_up_during_prompt" and r["prompt_ms_sent"] >= 2500, r
PY
  stop_courtline
}

# A flood of OPTIONS from 127.0.0.3 while a caller from 127.0.0.1 completes a call.
case_flood() {
  local dir=$work/flood
  write_config "$dir" "sip:operator@127.0.0.1:$OPERATOR_PORT" "" "
[sip.shield]
rate_per_s = 50.0
burst = 50"
  start_operator "$dir" 1
  start_courtline "$dir"
  sipp -nostdin -sf tests/sipp/flood_options.xml -s 02112368 -i 127.0.0.3 -p 25075 \
    -r 2000 -m 20000 -l 20000 -timeout 60s "127.0.0.1:$SIP_PORT" >"$dir/flood.out" 2>&1 &
  local flood_pid=$!
  pids+=("$flood_pid")
  local status=0
  sipp -nostdin -sf tests/sipp/caller.xml -s 02112368 -i 127.0.0.1 -p 25070 -mp 27100 \
    -d "$HOLD_MS" -m 1 -timeout 120s -timeout_error -trace_err -error_file "$dir/caller_errors.log" \
    "127.0.0.1:$SIP_PORT" >"$dir/caller.out" 2>&1 || status=$?
  [ "$status" -eq 0 ] || fail "$dir" "SIPp caller exited $status during the flood"
  wait "$operator_pid" || fail "$dir" "SIPp operator exited $?"
  kill "$flood_pid" 2>/dev/null || true
  grep -q "SIP flood: source banned" "$dir/courtline.log" || fail "$dir" "the flood was not cut off"
  stop_courtline
}

case_registration() {
  local dir=$work/registration
  write_config "$dir" "sip:operator@127.0.0.1:$OPERATOR_PORT" "" "
[registration]
registrar = \"sip:127.0.0.1:25080\"
username = \"courtline\"
password = \"s3cret\"
expires_s = 600
line = \"02112368\""
  sipp -nostdin -sf tests/sipp/registrar.xml -i 127.0.0.1 -p 25080 -m 1 -timeout 30s -timeout_error \
    -trace_err -error_file "$dir/registrar_errors.log" >"$dir/registrar.out" 2>&1 &
  local registrar_pid=$!
  pids+=("$registrar_pid")
  start_courtline "$dir"
  wait "$registrar_pid" || fail "$dir" "SIPp registrar exited $?"
  for _ in $(seq 50); do
    grep -q "registered with the PBX" "$dir/courtline.log" && break
    sleep 0.1
  done
  grep -q "registered with the PBX" "$dir/courtline.log" || fail "$dir" "courtline did not log its registration"
  stop_courtline
}

# tools/sipp-bench.sh, the benchmark BENCHMARKS.md runs with SIPp, on ten calls:
# it starts, places them through warning and operator, and reads SIPp's figures.
case_bench_tool() {
  local dir=$work/bench_tool
  mkdir -p "$dir"
  tools/sipp-bench.sh --courtline "$(realpath "$BIN")" --rate 10 --calls 10 --hold-ms 1500 \
    --prompt-ms 500 --linger-s 0 >"$dir/bench.out" 2>&1 || fail "$dir" "sipp-bench.sh exited $?"
  grep -q 'SIPp caller: 10 succeeded, 0 failed' "$dir/bench.out" || fail "$dir" "sipp-bench.sh did not report 10 calls succeeded"
  grep -q 'INVITE -> 200 OK: p50' "$dir/bench.out" || fail "$dir" "sipp-bench.sh printed no INVITE -> 200 percentiles"
}

cases=("${@:-udp ipv6 tcp delayed_offer missing_ack retransmission cancel_race inbound_auth hold flood operator_auth registration early_media dtmf bench_tool}")
passed=0
for name in ${cases[*]}; do
  "case_$name"
  echo "sipp interop: $name passed"
  passed=$((passed + 1))
done
echo "$passed passed, 0 failed"
