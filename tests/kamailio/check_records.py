"""Checks the records of the calls tests/kamailio/run.sh and cluster.sh place:

    check_records.py RECORDS_JSON CALLERS PROXY [--direct]

16 calls through Kamailio spread over both nodes while node A is killed (those on
A interrupted once it restarts), then 20 more, all on node B, all connected; every
call recorded once, with the caller's own address and the proxy's. With --direct,
a first call straight to node B whose X-Orig-IP was ignored: its own address and
no proxy. Exits non-zero with the offending record otherwise.
"""
import json
import sys

records, callers, proxy = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
with_direct = "--direct" in sys.argv[4:]
ids = [r["sip_call_id"] for r in records]
assert len(ids) == len(set(ids)), "a call has two records"
# SIPp Call-IDs are number-pid@address: one pid per SIPp run.
by_run = {}
for r in records:
    by_run.setdefault(r["sip_call_id"].split("-")[1].split("@")[0], []).append(r)
runs = sorted(by_run.values(), key=lambda rs: min(r["received_at_ms"] for r in rs))
expected = [1, 16, 20] if with_direct else [16, 20]
assert [len(r) for r in runs] == expected, f"expected runs of {expected} calls: {[len(r) for r in runs]}"
if with_direct:
    direct, before, after = runs
    # The direct caller's X-Orig-IP is ignored: its own address, no proxy.
    d = direct[0]
    assert d["caller_source"].startswith(callers + ":") and d["proxy_source"] == "", d
    assert d["node_id"] == "node-b" and d["end_reason"] == "caller_hung_up", d
else:
    before, after = runs
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
on_a = sum(r["node_id"] == "node-a" for r in before)
print(f"{len(records)} records: {on_a} of the first {len(before)} calls on node A "
      f"(interrupted), the other {len(records) - on_a} on node B")
