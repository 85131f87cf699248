-- courtline records, PostgreSQL. Same tables and columns as migrations/sqlite;
-- text columns that are sorted or range-scanned use the "C" collation so that ordering
-- (and so page cursors and prefix ranges) is bytewise, as in SQLite.
-- Integers are BIGINT throughout: the store reads every integer as i64 on both backends.

-- The hash chain: every event the service stores, in order. Append-only; only a purge
-- past retention clears `body` (never the hashes), so the chain stays verifiable.
CREATE TABLE events (
    -- Chain position, 1, 2, 3 ...
    seq          BIGINT  NOT NULL PRIMARY KEY,
    -- What the body holds (chain_started, milestone, ended, node_started, interrupted,
    -- flagged, access, checkpoint, purged, token); mirrors the body, for indexes.
    kind         TEXT    NOT NULL,
    -- Reporting switchboard and its sequence number (switchboard events only).
    node_id      TEXT COLLATE "C",
    node_seq     BIGINT ,
    -- The call the event belongs to, if any.
    call_id      TEXT COLLATE "C",
    -- When it happened (switchboard clock for switchboard events).
    at_ms        BIGINT  NOT NULL,
    -- When the service stored it.
    stored_at_ms BIGINT  NOT NULL,
    -- Protobuf `EventBody`; NULL once purged.
    body         BYTEA,
    -- Hash of `body`; kept after a purge.
    body_digest  BYTEA    NOT NULL,
    -- Hash of the previous event (zeros for the first) and of this one.
    prev_hash    BYTEA    NOT NULL,
    hash         BYTEA    NOT NULL,
    UNIQUE (node_id, node_seq)
);
CREATE INDEX events_by_call ON events (call_id, seq) WHERE call_id IS NOT NULL;
CREATE INDEX events_access ON events (seq) WHERE kind = 'access';
CREATE INDEX events_checkpoints ON events (seq) WHERE kind = 'checkpoint';

-- One row per call, derived from its chained events (verify recomputes it):
-- what compliance queries filter on, one column per CallRecord field.
CREATE TABLE calls (
    call_id                 TEXT COLLATE "C"    NOT NULL PRIMARY KEY,
    sip_call_id             TEXT    NOT NULL,
    line_number             TEXT COLLATE "C"    NOT NULL,
    court_name              TEXT COLLATE "C"    NOT NULL,
    caller_number           TEXT COLLATE "C"    NOT NULL,
    caller_display_name     TEXT    NOT NULL,
    caller_source           TEXT    NOT NULL,
    user_agent              TEXT    NOT NULL,
    codec                   TEXT    NOT NULL,
    received_at_ms          BIGINT  NOT NULL,
    answered_at_ms          BIGINT  NOT NULL,
    prompt_started_at_ms    BIGINT  NOT NULL,
    prompt_ended_at_ms      BIGINT  NOT NULL,
    operator_answered_at_ms BIGINT  NOT NULL,
    ended_at_ms             BIGINT  NOT NULL,
    prompt_id               TEXT    NOT NULL,
    prompt_sha256           TEXT    NOT NULL,
    prompt_length_ms        BIGINT  NOT NULL,
    prompt_ms_sent          BIGINT  NOT NULL,
    prompt_completed        BIGINT  NOT NULL,
    dtmf_during_prompt      TEXT    NOT NULL,
    operator_uri            TEXT    NOT NULL,
    -- EndReason / CallState enum numbers; the proto promises they never change.
    end_reason              BIGINT  NOT NULL,
    sip_final_status        BIGINT  NOT NULL,
    -- u64 counters stored bit-for-bit as i64.
    rtp_packets_sent        BIGINT  NOT NULL,
    rtp_packets_received    BIGINT  NOT NULL,
    state                   BIGINT  NOT NULL,
    flagged                 BIGINT  NOT NULL,
    node_id                 TEXT    NOT NULL,
    -- Chain position of the last event applied to this row.
    last_seq                BIGINT  NOT NULL
);
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
    role          BIGINT  NOT NULL,
    token_hash    BYTEA    NOT NULL UNIQUE,
    created_at_ms BIGINT  NOT NULL,
    created_by    TEXT    NOT NULL,
    revoked_at_ms BIGINT  NOT NULL
);
