-- "Three rules" reports: the latest version of each report, derived from its chained
-- `report` events (verify replays them), with the columns ListReports filters on.
CREATE TABLE reports (
    report_id     TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    call_id       TEXT COLLATE "C" NOT NULL,
    version       BIGINT NOT NULL,
    -- ReportStatus / ReportKind enum numbers; the proto promises they never change.
    status        BIGINT NOT NULL,
    kind          BIGINT NOT NULL,
    opened_by     TEXT   NOT NULL,
    opened_at_ms  BIGINT NOT NULL,
    court_name    TEXT   NOT NULL,
    line_number   TEXT   NOT NULL,
    staff_name    TEXT   NOT NULL,
    staff_id      TEXT   NOT NULL,
    -- Who owns it (workflow::owners), each between newlines: an operator's own reports.
    owners        TEXT   NOT NULL,
    -- The case numbers, one per line, for "case number contains".
    case_numbers  TEXT   NOT NULL,
    -- The whole latest version: protobuf `Report`.
    report        BYTEA  NOT NULL,
    -- Chain position of the event of the latest version.
    last_seq      BIGINT NOT NULL
);
CREATE INDEX reports_by_opened ON reports (opened_at_ms, report_id);
CREATE INDEX reports_by_call ON reports (call_id);

-- Every version of every report: where in the chain it is.
CREATE TABLE report_versions (
    report_id TEXT COLLATE "C" NOT NULL,
    version   BIGINT NOT NULL,
    seq       BIGINT NOT NULL,
    PRIMARY KEY (report_id, version)
);
