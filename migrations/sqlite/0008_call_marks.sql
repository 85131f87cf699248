-- "Has a report" and "has a recording" as columns of calls, each with a partial index
-- like calls_flagged, so the calls search filters on them as cheaply as on flagged
-- (reports and kept recordings are few). Both follow from other tables, which the
-- store sets them from in the same transaction: has_report once a report on the call
-- is stored (reports are never deleted), has_recording once the call's recording is
-- stored in the evidence store (call_recordings.state = 'stored'). verify checks that
-- they agree with those tables.
ALTER TABLE calls ADD COLUMN has_report INTEGER NOT NULL DEFAULT 0;
ALTER TABLE calls ADD COLUMN has_recording INTEGER NOT NULL DEFAULT 0;
UPDATE calls SET has_report = 1 WHERE call_id IN (SELECT call_id FROM reports);
UPDATE calls SET has_recording = 1
    WHERE call_id IN (SELECT call_id FROM call_recordings WHERE state = 'stored');
CREATE INDEX calls_reported ON calls (received_at_ms, call_id) WHERE has_report = 1;
CREATE INDEX calls_recorded ON calls (received_at_ms, call_id) WHERE has_recording = 1;
