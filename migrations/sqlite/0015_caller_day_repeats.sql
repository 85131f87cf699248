-- Patterns across calls over long ranges (issue 17; src/records/patterns.rs,
-- repeat_gap_days). A pattern with a threshold of 2 or more within D days needs a
-- caller with two calls within D days, and most callers call once: so each row
-- keeps how many days lie between it and the caller's previous row (in key order:
-- day, court, line; 0 for a second row of one day; NULL for a caller's first), and
-- the rows within 90 days of the previous one or with 2 calls of their own — the
-- "repeats" — have an index of their own. A query with a window of up to 91 days
-- finds its candidates among the repeat rows of its range, not all of its rows.
-- The store keeps the column as it adds and deletes rows (the new row and the one
-- after it change); here the rows already stored get it.
ALTER TABLE caller_days ADD COLUMN since_previous_days INTEGER;

UPDATE caller_days SET since_previous_days = ordered.gap
FROM (SELECT caller_number, day, court_name, line_number,
             day - LAG(day) OVER (PARTITION BY caller_number
                                  ORDER BY day, court_name, line_number) AS gap
      FROM caller_days) AS ordered
WHERE ordered.gap IS NOT NULL
  AND ordered.caller_number = caller_days.caller_number
  AND ordered.day = caller_days.day
  AND ordered.court_name = caller_days.court_name
  AND ordered.line_number = caller_days.line_number;

-- Covers what the candidate step groups by, filters and sums. The condition is the
-- store's REPEATS, word for word (SQLite uses a partial index only then).
CREATE INDEX caller_days_repeats ON caller_days (day, caller_number, court_name, line_number,
    since_previous_days, calls, hung_up_in_warning, after_hours)
    WHERE since_previous_days <= 90 OR calls >= 2;
