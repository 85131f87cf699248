-- An index for "caller name contains": every character and every pair of adjacent
-- characters of each call's caller_display_name, with the call's sort key. A search
-- walks the calls holding the pattern's rarest gram, newest (or oldest) first, and
-- checks the whole pattern on those rows only, instead of reading every call: one or
-- two characters, because Chinese names and words are that short. The columns are
-- named apart from the calls columns so that queries joining both need no qualifiers.
--
-- Grams are written in bulk, sorted, once enough events have arrived (see
-- caller_name_index): written with each call, they dirtied a page per gram per
-- commit and cost a fifth of the ingest rate. Calls not indexed yet (first_seq past
-- through_seq) are searched directly.
CREATE TABLE caller_name_grams (
    gram         TEXT COLLATE "C" NOT NULL,
    -- calls.received_at_ms and calls.call_id of the call whose name holds the gram.
    call_time_ms BIGINT           NOT NULL,
    call_key     TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (gram, call_time_ms, call_key)
);

-- Chain position of the event that created the call's row (set once; 0 for calls
-- stored before this column, all of which the statements below index).
ALTER TABLE calls ADD COLUMN first_seq BIGINT NOT NULL DEFAULT 0;
CREATE INDEX calls_by_first_seq ON calls (first_seq);

-- Calls with first_seq <= through_seq have their grams in caller_name_grams.
CREATE TABLE caller_name_index (
    through_seq BIGINT NOT NULL
);
INSERT INTO caller_name_index (through_seq) SELECT COALESCE(MAX(seq), 0) FROM events;

-- Calls stored before this index existed.
INSERT INTO caller_name_grams (gram, call_time_ms, call_key)
SELECT substr(caller_display_name, i, size), received_at_ms, call_id
FROM calls, generate_series(1, char_length(caller_display_name)) AS i, (VALUES (1), (2)) AS sizes (size)
WHERE i + size - 1 <= char_length(caller_display_name)
ON CONFLICT DO NOTHING;
