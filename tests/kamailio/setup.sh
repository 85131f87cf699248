# Shared by tests/kamailio/run.sh, cluster.sh and bench.sh (sourced, from the
# repository root): checks the tools, then starts one records service, nodes A
# (127.0.0.2) and B (127.0.0.3), a SIPp operator and Kamailio on
# 127.0.0.1:5080, and waits until Kamailio sees both nodes active. The
# addresses are the variables below; a script sets them before sourcing to
# use others. With SHARED_RECORDS=1 it starts instead two records services on
# one fresh PostgreSQL database ([records.service] shared_database), both in
# every node's [records] endpoints: the server in $COURTLINE_TEST_POSTGRES_URL,
# or else its own (.ci/postgres.sh, in $COURTLINE_PG_DIR on $COURTLINE_PG_PORT). Every
# process started is in `pids` and stopped by PID on exit; `$work` holds
# configs and logs. Defines `callers` (SIPp callers through a target) and
# `node_states` (Kamailio's view of the nodes). PROFILE=release builds and
# runs the release binary. KAMAILIO_SHM_MB sets Kamailio's shared memory
# (default 64, as in the tests; its transactions live there, so rates above
# ~300 calls/s need more).

tools=(kamailio kamcmd sipp python3)
if [ -n "${SHARED_RECORDS:-}" ]; then
  tools+=(psql)
  [ -z "${COURTLINE_TEST_POSTGRES_URL:-}" ] &&
    tools+=("$(ls /usr/lib/postgresql/*/bin/pg_ctl 2>/dev/null | sort -V | tail -1 || true)")
fi
for tool in "${tools[@]}"; do
  if [ -z "$tool" ] || ! command -v "$tool" >/dev/null 2>&1; then
    tool=${tool:-postgresql}
    if [ "${CI:-}" = "true" ]; then
      echo "FAILED: $tool not found (apt-get install -y kamailio sip-tester postgresql)" >&2
      exit 1
    fi
    echo "skipped: $tool not found (apt-get install -y kamailio sip-tester postgresql)"
    exit 0
  fi
done

cargo build --quiet ${PROFILE:+--profile "$PROFILE"}
BIN=${CARGO_TARGET_DIR:-target}/${PROFILE:-debug}/courtline
work=$(mktemp -d)
pids=()
cleanup() {
  local status=$?
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ -n "${database_url:-}" ]; then
    psql -q "$server_url" -c "DROP DATABASE IF EXISTS $database WITH (FORCE)" >/dev/null 2>&1 || true
  fi
  [ -n "${own_postgres:-}" ] && bash .ci/postgres.sh stop 2>/dev/null
  if [ "$status" -ne 0 ] || [ -n "${KEEP_WORK:-}" ]; then
    echo "work directory kept: $work"
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT
# Bounded whatever happens: the watchdog ends the run (and so every child).
( sleep "${WATCHDOG_S:-240}"; echo "FAILED: the run took over ${WATCHDOG_S:-240} s" >&2; kill -TERM $$ ) &
pids+=($!)

PROXY=${PROXY:-127.0.0.1:5080}
NODE_A=${NODE_A:-127.0.0.2:25160}
NODE_B=${NODE_B:-127.0.0.3:25160}
RTP_A=${RTP_A:-26000-26499}
RTP_B=${RTP_B:-26500-26999}
CALLERS=${CALLERS:-127.0.0.4}
OPERATOR=${OPERATOR:-127.0.0.1:25190}
RECORDS=${RECORDS:-127.0.0.1:25151}
# Without SHARED_RECORDS, a records endpoint nothing listens on (the nodes fail
# over from it); with it, the second records service.
RECORDS_2=${RECORDS_2:-127.0.0.1:25152}
# Each call: answered at once, a 2 s warning, the operator answers after 1 s of
# ringing, the caller hangs up 6 s after the answer.
HOLD_MS=${HOLD_MS:-6000}

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

if [ -n "${SHARED_RECORDS:-}" ]; then
  if [ -z "${COURTLINE_TEST_POSTGRES_URL:-}" ]; then
    own_postgres=1
    eval "$(bash .ci/postgres.sh start)"
  fi
  server_url=$COURTLINE_TEST_POSTGRES_URL
  database=courtline_cluster_$$
  psql -q "$server_url" -c "CREATE DATABASE $database" >/dev/null || fail "cannot create database $database on $server_url"
  database_url=${server_url%/*}/$database
fi

# $1 name, $2 listen address, then the rest of [records.service].
records_config() {
  mkdir -p "$work/$1"
  local name=$1 listen=$2; shift 2
  cat > "$work/$name/courtline.toml" <<TOML
[records]
endpoint = "http://$listen"
[records.service]
embedded = false
listen = "$listen"
$(printf '%s\n' "$@")
$(common)
TOML
}
if [ -n "${SHARED_RECORDS:-}" ]; then
  # One deployment signing key, shared by both services (the first creates it);
  # frequent checkpoints, so that the run signs several.
  for name in records records-2; do
    records_config "$name" "$([ "$name" = records ] && echo "$RECORDS" || echo "$RECORDS_2")" \
      "database = \"$database_url\"" "shared_database = true" \
      "signing_key_file = \"$work/deployment-signing.key\"" "checkpoint_every_events = 25"
  done
else
  records_config records "$RECORDS" "database = \"$work/records/records.db\""
fi
mkdir -p "$work/a" "$work/b"

# The nodes try the first records endpoint first: without SHARED_RECORDS the dead
# one (they fail over from it), with it the service started first (the sequencer).
if [ -n "${SHARED_RECORDS:-}" ]; then
  endpoints="\"http://$RECORDS\", \"http://$RECORDS_2\""
else
  endpoints="\"http://$RECORDS_2\", \"http://$RECORDS\""
fi
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
endpoints = [$endpoints]
spool_dir = "$work/$1/spool"
node_id = "node-$1"
[records.service]
embedded = false
$(common)
TOML
  "$BIN" --config "$work/$1/courtline.toml" check >/dev/null || fail "node $1's config"
}
node_config a "$NODE_A" "$RTP_A"
node_config b "$NODE_B" "$RTP_B"

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
records_pid=$started
if [ -n "${SHARED_RECORDS:-}" ]; then
  start records-2 "$work/records-2/courtline.toml" "records service listening" records serve
  records_2_pid=$started
fi
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
  -Y "$work/kamailio" -P "$work/kamailio/kamailio.pid" -m "${KAMAILIO_SHM_MB:-64}" -M 8 \
  >"$work/kamailio.log" 2>&1 &
kamailio_pid=$!
pids+=("$kamailio_pid")

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

# Places 16 calls through Kamailio, kills node A (-9) while they are up, then
# places 20 more and checks that Kamailio takes A out of rotation within 3 s.
# The two SIPp runs' PIDs are left in $before (its calls on A fail: expected)
# and $after (every one of its calls must succeed) for the caller to wait on.
kill_node_a_mid_run() {
  callers before 16 4 "$PROXY" 25170 &
  before=$!
  pids+=("$before")
  sleep 4.5
  kill -9 "$node_a"
  local killed_at taken_out=""
  killed_at=$(date +%s.%N)
  { wait "$node_a"; } 2>/dev/null || true
  callers after 20 4 "$PROXY" 25171 &
  after=$!
  pids+=("$after")
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
}

# Checks the calls' records as the records service configured in $1 lists them
# (tests/kamailio/check_records.py, given the other arguments), retrying for up
# to 20 s while the last events arrive.
check_call_records() {
  local config=$1 ok=""
  shift
  for _ in $(seq 100); do
    if python3 tests/kamailio/check_records.py \
      "$("$BIN" --config "$config" calls list --all --format json)" "$CALLERS" "$PROXY" "$@" \
      >"$work/records_check.out" 2>&1; then
      ok=1
      break
    fi
    sleep 0.2
  done
  [ -n "$ok" ] || { cat "$work/records_check.out"; fail "records check"; }
  cat "$work/records_check.out"
}
