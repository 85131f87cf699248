-- The caller's history when the call arrived, as the switchboard learnt it for the
-- operator's whisper on `whisper_history` lines (CallRecord.prior_reports and
-- prior_flags): earlier reported and flagged calls from the number. 0 when none,
-- when the line does not whisper, or when the lookup did not answer in time, as for
-- every call before these columns.
ALTER TABLE calls ADD COLUMN prior_reports BIGINT NOT NULL DEFAULT 0;
ALTER TABLE calls ADD COLUMN prior_flags BIGINT NOT NULL DEFAULT 0;
