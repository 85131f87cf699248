#!/usr/bin/env bash
# Switchboards behind Kamailio (deploy/kamailio/): one records service, two
# courtline nodes on 127.0.0.2 and 127.0.0.3, Kamailio on 127.0.0.1:5080,
# SIPp callers on 127.0.0.4 and a SIPp operator, all on loopback (the
# variables at the top of tests/kamailio/setup.sh move them).
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
source tests/kamailio/setup.sh

# 1. X-Orig-IP straight from a caller, not through the proxy: ignored.
callers direct 1 1 "$NODE_B" 25172 || fail "the direct call failed"

# 2. Calls through Kamailio, all up when node A is killed; 3. from then on
#    every call succeeds: the first ones fail over from A to B, then Kamailio
#    sends them to B only.
kill_node_a_mid_run
wait "$after" || fail "a call placed after node A died failed"
# The calls that were up on node A end in errors for their callers: expected.
wait "$before" || true

# 4. Node A comes back with its spool: the calls it had up become `interrupted`.
start node-a "$work/a/courtline.toml" "courtline is up" serve

check_call_records "$work/records/courtline.toml" --direct
grep -q "not in \[sip\] trusted_proxies" "$work/node-b.log" ||
  fail "node B did not log the X-Orig-IP it ignored"
grep -q "fails over to the next records service" "$work/node-b.log" ||
  fail "node B never failed over from the dead records endpoint"
echo "PASSED: switchboards behind Kamailio"
