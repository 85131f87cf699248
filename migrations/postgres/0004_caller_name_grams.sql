-- An index for "caller name contains": every character and every pair of adjacent
-- characters of each call's caller_display_name, with the call's sort key. A search
-- walks the calls holding the pattern's rarest pair, newest (or oldest) first, and
-- checks the whole pattern on those rows only, instead of reading every call: one or
-- two characters, because Chinese names and words are that short. The columns are
-- named apart from the calls columns so that queries joining both need no qualifiers.
CREATE TABLE caller_name_grams (
    gram         TEXT COLLATE "C" NOT NULL,
    -- calls.received_at_ms and calls.call_id of the call whose name holds the gram.
    call_time_ms BIGINT           NOT NULL,
    call_key     TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (gram, call_time_ms, call_key)
);

-- Calls stored before this index existed.
INSERT INTO caller_name_grams (gram, call_time_ms, call_key)
SELECT substr(caller_display_name, i, size), received_at_ms, call_id
FROM calls, generate_series(1, char_length(caller_display_name)) AS i, (VALUES (1), (2)) AS sizes (size)
WHERE i + size - 1 <= char_length(caller_display_name)
ON CONFLICT DO NOTHING;
