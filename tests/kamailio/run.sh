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

records_check() {
  local records
  records=$("$BIN" --config "$work/records/courtline.toml" calls list --all --format json)
  python3 - "$records" "$CALLERS" "$PROXY" <<'PY'
import json, sys
records, callers, proxy = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
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
assert d["caller_source"].startswith(callers + ":") and d["proxy_source"] == "", d
assert d["node_id"] == "node-b" and d["end_reason"] == "caller_hung_up", d
# Through Kamailio: the caller's address (not what it claimed), and the proxy.
for r in before + after:
    assert r["caller_source"] == callers, r
    assert r["proxy_source"] == proxy, r
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
