-- courtline records, SQLite. PostgreSQL's schema (migrations/postgres) has the same
-- tables and columns; the code in src/records/store.rs runs on both.
-- STRICT: a value of the wrong type is an error, never silently coerced (records are evidence).

-- The hash chain: every event the service stores, in order. Append-only; only a purge
-- past retention clears `body` (never the hashes), so the chain stays verifiable.
CREATE TABLE events (
    -- Chain position, 1, 2, 3 ...
    seq          INTEGER NOT NULL PRIMARY KEY,
    -- What the body holds (chain_started, milestone, ended, node_started, interrupted,
    -- flagged, access, checkpoint, purged, token); mirrors the body, for indexes.
    kind         TEXT    NOT NULL,
    -- Reporting switchboard and its sequence number (switchboard events only).
    node_id      TEXT,
    node_seq     INTEGER,
    -- The call the event belongs to, if any.
    call_id      TEXT,
    -- When it happened (switchboard clock for switchboard events).
    at_ms        INTEGER NOT NULL,
    -- When the service stored it.
    stored_at_ms INTEGER NOT NULL,
    -- Protobuf `EventBody`; NULL once purged.
    body         BLOB,
    -- Hash of `body`; kept after a purge.
    body_digest  BLOB    NOT NULL,
    -- Hash of the previous event (zeros for the first) and of this one.
    prev_hash    BLOB    NOT NULL,
    hash         BLOB    NOT NULL,
    UNIQUE (node_id, node_seq)
) STRICT;
CREATE INDEX events_by_call ON events (call_id, seq) WHERE call_id IS NOT NULL;
CREATE INDEX events_access ON events (seq) WHERE kind = 'access';
CREATE INDEX events_checkpoints ON events (seq) WHERE kind = 'checkpoint';

-- One row per call, derived from its chained events (verify recomputes it):
-- what compliance queries filter on, one column per CallRecord field.
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
    prompt_completed        INTEGER NOT NULL,
    dtmf_during_prompt      TEXT    NOT NULL,
    operator_uri            TEXT    NOT NULL,
    -- EndReason / CallState enum numbers; the proto promises they never change.
    end_reason              INTEGER NOT NULL,
    sip_final_status        INTEGER NOT NULL,
    -- u64 counters stored bit-for-bit as i64.
    rtp_packets_sent        INTEGER NOT NULL,
    rtp_packets_received    INTEGER NOT NULL,
    state                   INTEGER NOT NULL,
    flagged                 INTEGER NOT NULL,
    node_id                 TEXT    NOT NULL,
    -- Chain position of the last event applied to this row.
    last_seq                INTEGER NOT NULL
) STRICT;
CREATE INDEX calls_by_received ON calls (received_at_ms, call_id);
CREATE INDEX calls_by_line ON calls (line_number, received_at_ms, call_id);
CREATE INDEX calls_by_court ON calls (court_name, received_at_ms, call_id);
CREATE INDEX calls_by_caller ON calls (caller_number, received_at_ms);
CREATE INDEX calls_by_end_reason ON calls (end_reason, received_at_ms, call_id);
CREATE INDEX calls_flagged ON calls (received_at_ms, call_id) WHERE flagged = 1;
CREATE INDEX calls_open ON calls (node_id) WHERE state = 1;

-- Bearer tokens. Only a SHA-256 of each secret is kept; changes are also chained events.
CREATE TABLE tokens (
    name          TEXT    NOT NULL PRIMARY KEY,
    role          INTEGER NOT NULL,
    token_hash    BLOB    NOT NULL UNIQUE,
    created_at_ms INTEGER NOT NULL,
    created_by    TEXT    NOT NULL,
    revoked_at_ms INTEGER NOT NULL
) STRICT;
