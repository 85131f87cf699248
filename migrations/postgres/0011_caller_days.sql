-- PostgreSQL twin of migrations/sqlite/0011_caller_days.sql.
-- Patterns across calls (src/records/patterns.rs): what each caller did per UTC day,
-- court and line, kept as calls finish so the pattern queries read these rows, never a
-- scan of the calls. The store adds a call's final row (state ended or interrupted;
-- a replaced final row is taken out first) in the transaction that stores it, a flag
-- and a report's first version to the call's row, and takes purged calls out again:
-- the table names callers, so it keeps nothing of a call past retention.
-- Calls without a caller number (anonymous) are not counted: they are nobody's pattern.
CREATE TABLE caller_days (
    caller_number      TEXT COLLATE "C" NOT NULL,
    -- UTC day of the call's received_at_ms (days since 1970-01-01).
    day                BIGINT  NOT NULL,
    court_name         TEXT COLLATE "C" NOT NULL,
    line_number        TEXT COLLATE "C" NOT NULL,
    -- Finished calls; of those, hung up while the warning played (end reason 1) and
    -- outside office hours (end reason 13, after_hours).
    calls              BIGINT  NOT NULL,
    hung_up_in_warning BIGINT  NOT NULL,
    after_hours        BIGINT  NOT NULL,
    -- Flags set and reports opened on those calls.
    flags              BIGINT  NOT NULL,
    reports            BIGINT  NOT NULL,
    PRIMARY KEY (caller_number, day, court_name, line_number)
);
-- A range of days across all callers, covering what the queries group by and sum.
CREATE INDEX caller_days_by_day ON caller_days (day, caller_number, court_name, line_number,
    calls, hung_up_in_warning, after_hours);
-- Callers with a flag or report: few, and where "reported and called again" starts.
CREATE INDEX caller_days_reported ON caller_days (caller_number) WHERE flags > 0 OR reports > 0;

-- Pattern alerts: one row per PatternMatched event (the chain has the event), and at
-- most one per rule, caller and UTC day: a rule that matches a caller again the same
-- day adds nothing.
CREATE TABLE pattern_matches (
    seq           BIGINT  NOT NULL PRIMARY KEY,
    rule          TEXT    NOT NULL,
    caller_number TEXT    NOT NULL,
    day           BIGINT  NOT NULL,
    at_ms         BIGINT  NOT NULL,
    -- The PatternMatched body (protobuf), for the review queue.
    body          BYTEA   NOT NULL,
    UNIQUE (rule, caller_number, day)
);
CREATE INDEX pattern_matches_by_time ON pattern_matches (at_ms);

INSERT INTO caller_days
SELECT caller_number, received_at_ms / 86400000, court_name, line_number, COUNT(*),
       SUM(CASE WHEN end_reason = 1 THEN 1 ELSE 0 END),
       SUM(CASE WHEN end_reason = 13 THEN 1 ELSE 0 END), 0, 0
FROM calls WHERE state IN (2, 3) AND caller_number <> ''
GROUP BY caller_number, received_at_ms / 86400000, court_name, line_number;

UPDATE caller_days SET flags = (
    SELECT COUNT(*) FROM events JOIN calls ON calls.call_id = events.call_id
    WHERE events.kind = 'flagged' AND calls.state IN (2, 3)
      AND calls.caller_number = caller_days.caller_number
      AND calls.received_at_ms / 86400000 = caller_days.day
      AND calls.court_name = caller_days.court_name
      AND calls.line_number = caller_days.line_number)
WHERE caller_number IN (SELECT caller_number FROM calls WHERE flagged = 1);

UPDATE caller_days SET reports = (
    SELECT COUNT(*) FROM reports JOIN calls ON calls.call_id = reports.call_id
    WHERE calls.state IN (2, 3)
      AND calls.caller_number = caller_days.caller_number
      AND calls.received_at_ms / 86400000 = caller_days.day
      AND calls.court_name = caller_days.court_name
      AND calls.line_number = caller_days.line_number)
WHERE caller_number IN (SELECT caller_number FROM calls WHERE has_report = 1);
