-- One row per finished call, one column per CallRecord field, so that compliance
-- queries can filter on any of them without decoding blobs.
-- STRICT: a value of the wrong type is an error, never silently coerced (records are evidence).
CREATE TABLE calls (
    call_id                 TEXT    NOT NULL PRIMARY KEY,
    sip_call_id             TEXT    NOT NULL,
    line_number             TEXT    NOT NULL,
    court_name              TEXT    NOT NULL,
    caller_number           TEXT    NOT NULL,
    caller_display_name     TEXT    NOT NULL,
    caller_source           TEXT    NOT NULL,
    user_agent              TEXT    NOT NULL,
    codec                   TEXT    NOT NULL,
    received_at_ms          INTEGER NOT NULL,
    answered_at_ms          INTEGER NOT NULL,
    prompt_started_at_ms    INTEGER NOT NULL,
    prompt_ended_at_ms      INTEGER NOT NULL,
    operator_answered_at_ms INTEGER NOT NULL,
    ended_at_ms             INTEGER NOT NULL,
    prompt_id               TEXT    NOT NULL,
    prompt_sha256           TEXT    NOT NULL,
    prompt_length_ms        INTEGER NOT NULL,
    prompt_ms_sent          INTEGER NOT NULL,
    prompt_completed        INTEGER NOT NULL CHECK (prompt_completed IN (0, 1)),
    dtmf_during_prompt      TEXT    NOT NULL,
    operator_uri            TEXT    NOT NULL,
    -- EndReason enum number; the proto promises these numbers never change.
    end_reason              INTEGER NOT NULL,
    sip_final_status        INTEGER NOT NULL,
    -- u64 counters stored bit-for-bit as i64 (SQLite has no unsigned type).
    rtp_packets_sent        INTEGER NOT NULL,
    rtp_packets_received    INTEGER NOT NULL,
    -- When the records service stored the row (not part of CallRecord): shows late deliveries.
    stored_at_ms            INTEGER NOT NULL
) STRICT;

-- Listing is newest first with a (received_at_ms, call_id) cursor.
CREATE INDEX calls_by_received ON calls (received_at_ms DESC, call_id DESC);
CREATE INDEX calls_by_line ON calls (line_number, received_at_ms DESC, call_id DESC);
CREATE INDEX calls_by_caller ON calls (caller_number, received_at_ms DESC);
CREATE INDEX calls_by_end_reason ON calls (end_reason, received_at_ms DESC, call_id DESC);
