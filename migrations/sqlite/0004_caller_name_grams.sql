-- An index for "caller name contains": every character and every pair of adjacent
-- characters of each call's caller_display_name, with the call's sort key. A search
-- walks the calls holding the pattern's rarest pair, newest (or oldest) first, and
-- checks the whole pattern on those rows only, instead of reading every call: one or
-- two characters, because Chinese names and words are that short. The columns are
-- named apart from the calls columns so that queries joining both need no qualifiers.
CREATE TABLE caller_name_grams (
    gram         TEXT    NOT NULL,
    -- calls.received_at_ms and calls.call_id of the call whose name holds the gram.
    call_time_ms INTEGER NOT NULL,
    call_key     TEXT    NOT NULL,
    PRIMARY KEY (gram, call_time_ms, call_key)
) WITHOUT ROWID;

-- Calls stored before this index existed.
WITH RECURSIVE positions (call_key, call_time_ms, name, i) AS (
    SELECT call_id, received_at_ms, caller_display_name, 1 FROM calls
    WHERE caller_display_name <> ''
    UNION ALL
    SELECT call_key, call_time_ms, name, i + 1 FROM positions WHERE i < length(name)
)
INSERT OR IGNORE INTO caller_name_grams (gram, call_time_ms, call_key)
SELECT substr(name, i, size), call_time_ms, call_key
FROM positions, (SELECT 1 AS size UNION ALL SELECT 2) AS sizes
WHERE i + size - 1 <= length(name);
