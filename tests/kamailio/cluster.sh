#!/usr/bin/env bash
# Issue 15's whole deployment on loopback: PostgreSQL, two records services on
# one database ([records.service] shared_database), two courtline nodes whose
# [records] endpoints list both services, Kamailio (deploy/kamailio/), SIPp
# callers and a SIPp operator, all started here and stopped by PID
# (tests/kamailio/setup.sh).
#
#   tests/kamailio/cluster.sh
#
# Checks: calls spread over both nodes (records by node_id); after `kill -9` of
# node A, Kamailio takes it out within 3 s and every call placed from then on
# succeeds; once A restarts with its spool, the calls it had up are recorded
# `interrupted`; `kill -9` of the records service holding the sequencer's lock
# (its log says so; the nodes' first endpoint) while calls go on: the nodes fail
# over to the other service, which becomes the sequencer, and nothing is lost or
# duplicated. At the end every call placed has exactly one
# record, nothing is left staged, `records gaps` finds none and each node's
# event count is its highest sequence number, and `records verify` on the
# database, trusting the deployment's public key, passes on the one chain from
# its first event with every checkpoint's signature.
#
# Its addresses default to ones tests/kamailio/run.sh does not use (Kamailio on
# 127.0.0.5:5080, nodes on 127.0.0.6 and 127.0.0.7, SIPp on 127.0.0.8); set
# PROXY, NODE_A, NODE_B, CALLERS, OPERATOR, RECORDS, RECORDS_2 to move them.
# PostgreSQL: a fresh database on the server in COURTLINE_TEST_POSTGRES_URL (as
# .ci/run exports it), else its own server (COURTLINE_PG_DIR, COURTLINE_PG_PORT).
# Without kamailio, sipp or PostgreSQL it skips (exit 0), except under CI=true,
# where it fails. Bounded: a watchdog ends it after 240 s.
set -euo pipefail
cd "$(dirname "$0")/../.."
PROXY=${PROXY:-127.0.0.5:5080}
NODE_A=${NODE_A:-127.0.0.6:25160}
NODE_B=${NODE_B:-127.0.0.7:25160}
RTP_A=${RTP_A:-30000-30499}
RTP_B=${RTP_B:-30500-30999}
CALLERS=${CALLERS:-127.0.0.8}
OPERATOR=${OPERATOR:-127.0.0.8:25190}
RECORDS=${RECORDS:-127.0.0.5:25151}
RECORDS_2=${RECORDS_2:-127.0.0.5:25152}
export COURTLINE_PG_DIR=${COURTLINE_PG_DIR:-/tmp/courtline-cluster-pg}
export COURTLINE_PG_PORT=${COURTLINE_PG_PORT:-55721}
SHARED_RECORDS=1
source tests/kamailio/setup.sh

# The records service, other than $1, whose log says it became the sequencer.
sequencer() {
  for name in records records-2; do
    [ "$name" != "${1:-}" ] && grep -q "this records service is now the sequencer" "$work/$name.log" &&
      { echo "$name"; return; }
  done
  true
}
holder=""
for _ in $(seq 100); do
  holder=$(sequencer)
  [ -n "$holder" ] && break
  sleep 0.1
done
[ -n "$holder" ] || fail "neither records service became the sequencer"
# Exactly one session holds the sequencer's lock (not counting the appends' short
# transaction locks).
one_sequencer() {
  [ "$(psql -tA "$database_url" -c "SELECT count(*) FROM pg_locks JOIN pg_stat_activity USING (pid)
      WHERE locktype = 'advisory' AND granted AND application_name = 'courtline records sequencer'")" = 1 ] ||
    fail "not exactly one session holds the sequencer's lock"
}
one_sequencer
echo "$holder holds the sequencer's lock"

# 1. Calls through Kamailio, all up when node A is killed; 2. from then on
#    every call succeeds, on node B.
kill_node_a_mid_run

# 3. While those calls go on, kill -9 the sequencer: the other service takes over.
sleep 2
if [ "$holder" = records ]; then victim=$records_pid; else victim=$records_2_pid; fi
kill -9 "$victim"
{ wait "$victim"; } 2>/dev/null || true
successor=""
for _ in $(seq 150); do
  successor=$(sequencer "$holder")
  [ -n "$successor" ] && break
  sleep 0.1
done
[ -n "$successor" ] || fail "no records service took the sequencer over from $holder"
one_sequencer
echo "$successor took the sequencer over after kill -9 of $holder"

wait "$after" || fail "a call placed after node A died failed"
# The calls that were up on node A end in errors for their callers: expected.
wait "$before" || true

# 4. Node A comes back with its spool: the calls it had up become `interrupted`.
start node-a "$work/a/courtline.toml" "courtline is up" serve

survivor="$work/$successor/courtline.toml"
check_call_records "$survivor"

# 5. Nothing lost or duplicated: staging drained, no gaps, per node as many
#    events as its highest sequence number ((node_id, node_seq) is unique).
for _ in $(seq 100); do
  [ "$(psql -tA "$database_url" -c "SELECT count(*) FROM staged_events")" = 0 ] && break
  sleep 0.1
done
[ "$(psql -tA "$database_url" -c "SELECT count(*) FROM staged_events")" = 0 ] ||
  fail "events are still staged, never chained"
"$BIN" --config "$survivor" records gaps >"$work/gaps.out" || { cat "$work/gaps.out"; fail "records gaps"; }
cat "$work/gaps.out"
python3 - "$work/gaps.out" <<'PY' || fail "an event was lost or duplicated"
import re, sys
nodes = re.findall(r"node (\S+): (\d+) events, highest sequence number (\d+)", open(sys.argv[1]).read())
assert {n for n, _, _ in nodes} == {"node-a", "node-b"}, nodes
for node, events, highest in nodes:
    assert events == highest, f"node {node}: {events} events, highest sequence number {highest}"
PY

# 6. The one chain, from its first event, and every checkpoint's signature,
#    trusting only the deployment's public key.
[ "$(psql -tA "$database_url" -c "SELECT min(seq) FROM events")" = 1 ] || fail "the chain does not start at 1"
public_key=$("$BIN" --config "$survivor" records public-key | grep -oE '\b[0-9a-f]{64}\b' | head -1)
[ -n "$public_key" ] || fail "no public key"
"$BIN" --config "$survivor" records verify --database "$database_url" --public-key "$public_key" \
  >"$work/verify.out" || { cat "$work/verify.out"; fail "records verify"; }
cat "$work/verify.out"
grep -qE "checked [0-9]+ events, [1-9][0-9]* checkpoints" "$work/verify.out" || fail "no checkpoint was checked"
grep -q "fails over to the next records service" "$work/node-b.log" ||
  fail "node B never failed over from the records service killed"
echo "PASSED: two nodes and two records services on one PostgreSQL behind Kamailio"
