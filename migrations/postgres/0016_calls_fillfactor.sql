-- PostgreSQL only (SQLite rewrites a row in place; it has no fill factor).
-- The records sequencer (issue 15) rewrites a call's row for each of its events, and
-- most of those events change no indexed column of `calls` (times, prompt, media),
-- so PostgreSQL can write the new row version on the same page without a new entry
-- in any of the table's twelve indexes (a "HOT" update) — when the page has room.
-- At the default fill factor of 100 it never has: new rows fill every page. Half of
-- each page is left for the updates of the calls it holds (BENCHMARKS.md, "The
-- sequencer's statements"). Applies to pages written from now on.
ALTER TABLE calls SET (fillfactor = 50);
