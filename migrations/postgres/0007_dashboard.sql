-- PostgreSQL twin of migrations/sqlite/0007_dashboard.sql.
-- The dashboard's figures, kept as they change so a view reads a few hundred rows
-- instead of every call: one row per UTC day (days since 1970-01-01, `at_ms / 86400000`)
-- and court. The store adds to them in the transaction that stores a call's final record
-- (state ended or interrupted; a call whose final record is replaced is taken out
-- first), a flag (the flag's day, the call's court) or a report's first version (the day
-- it was opened, its court). A purge past retention leaves them: they name nobody.
-- src/records/dashboard.rs says what each column counts (`CallTally`).
CREATE TABLE daily_court_figures (
    day                BIGINT  NOT NULL,
    court_name         TEXT COLLATE "C" NOT NULL,
    -- Finished calls received that day.
    calls              BIGINT  NOT NULL,
    -- Of those: heard the whole warning; hung up during it; connected to an operator.
    warning_completed  BIGINT  NOT NULL,
    hung_up_in_warning BIGINT  NOT NULL,
    connected          BIGINT  NOT NULL,
    -- Operator answer time (end of the warning to the operator's answer) of connected
    -- calls that have both times: sum, count, and how many within 5/10/20/30 s.
    answer_ms_sum      BIGINT  NOT NULL,
    answered           BIGINT  NOT NULL,
    answered_5s        BIGINT  NOT NULL,
    answered_10s       BIGINT  NOT NULL,
    answered_20s       BIGINT  NOT NULL,
    answered_30s       BIGINT  NOT NULL,
    -- Flags set that day on the court's calls; reports opened that day.
    flags              BIGINT  NOT NULL,
    reports            BIGINT  NOT NULL,
    PRIMARY KEY (day, court_name)
);

INSERT INTO daily_court_figures
SELECT received_at_ms / 86400000, court_name, COUNT(*), SUM(prompt_completed),
       SUM(CASE WHEN end_reason = 1 THEN 1 ELSE 0 END),
       SUM(CASE WHEN operator_answered_at_ms <> 0 THEN 1 ELSE 0 END),
       COALESCE(SUM(wait), 0), COUNT(wait),
       SUM(CASE WHEN wait <= 5000 THEN 1 ELSE 0 END),
       SUM(CASE WHEN wait <= 10000 THEN 1 ELSE 0 END),
       SUM(CASE WHEN wait <= 20000 THEN 1 ELSE 0 END),
       SUM(CASE WHEN wait <= 30000 THEN 1 ELSE 0 END),
       0, 0
FROM (SELECT received_at_ms, court_name, prompt_completed, end_reason, operator_answered_at_ms,
             CASE WHEN operator_answered_at_ms <> 0 AND prompt_ended_at_ms <> 0
                       AND operator_answered_at_ms >= prompt_ended_at_ms
                  THEN operator_answered_at_ms - prompt_ended_at_ms END AS wait
      FROM calls WHERE state IN (2, 3)) AS finished
GROUP BY received_at_ms / 86400000, court_name;

INSERT INTO daily_court_figures
SELECT events.at_ms / 86400000, calls.court_name, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, COUNT(*), 0
FROM events JOIN calls ON calls.call_id = events.call_id
WHERE events.kind = 'flagged'
GROUP BY events.at_ms / 86400000, calls.court_name
ON CONFLICT (day, court_name) DO UPDATE SET flags = excluded.flags;

INSERT INTO daily_court_figures
SELECT opened_at_ms / 86400000, court_name, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, COUNT(*)
FROM reports WHERE true
GROUP BY opened_at_ms / 86400000, court_name
ON CONFLICT (day, court_name) DO UPDATE SET reports = excluded.reports;

-- The last chain verification the service ran (Verify over gRPC or the console), for
-- the dashboard: its access event is on the chain too, this row only saves finding it.
CREATE TABLE last_verification (
    -- Always 1: the table holds one row.
    id                  BIGINT  NOT NULL PRIMARY KEY CHECK (id = 1),
    finished_at_ms      BIGINT  NOT NULL,
    -- Who ran it (the access log's actor).
    actor               TEXT    NOT NULL,
    events_checked      BIGINT  NOT NULL,
    checkpoints_checked BIGINT  NOT NULL,
    calls_checked       BIGINT  NOT NULL,
    -- Findings (0: intact), and events after the last checkpoint.
    findings            BIGINT  NOT NULL,
    unsigned_tail       BIGINT  NOT NULL
);
