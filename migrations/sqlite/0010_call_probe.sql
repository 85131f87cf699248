-- CallRecord.probe: the call was a synthetic probe the switchboard verified by its
-- signed header. Listed and exported like any call, left out of the dashboard's
-- figures; a partial index like calls_flagged, since probes are few and the calls
-- search filters on them.
ALTER TABLE calls ADD COLUMN probe INTEGER NOT NULL DEFAULT 0;
CREATE INDEX calls_probes ON calls (received_at_ms, call_id) WHERE probe = 1;
