-- One row per call whose audio the switchboard recorded (issue 12), derived from the
-- call's chained recording event and the flags chained before it (verify recomputes it):
-- what was recorded, and what became of the file.
CREATE TABLE call_recordings (
    call_id      TEXT NOT NULL PRIMARY KEY,
    -- SHA-256 (hex) and length of the WAV file as the switchboard closed it.
    sha256       TEXT    NOT NULL,
    bytes        INTEGER  NOT NULL,
    sample_rate  INTEGER  NOT NULL,
    channels     INTEGER  NOT NULL,
    duration_ms  INTEGER  NOT NULL,
    -- 'stored' (in the evidence store as <call_id>.wav), 'deleted' (on_report, no flag
    -- or report), 'failed' (detail: why) or 'not_transferred' (detail: why).
    state        TEXT    NOT NULL,
    detail       TEXT    NOT NULL,
    -- The recording event.
    last_seq     INTEGER  NOT NULL
);
