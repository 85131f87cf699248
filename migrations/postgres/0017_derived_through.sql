-- PostgreSQL only (several records services share only a PostgreSQL database).
-- The tables derived from chained events (calls, the dashboard figures, caller_days,
-- the caller-name grams, the search marks) are written, in a shared database, by the
-- sequencer's follower on a connection of its own, after the chain (issue 15,
-- BENCHMARKS.md "Derived tables off the chain"). `through_seq` is the last chain
-- position whose effects they hold; it moves in the transaction that writes them, so
-- a crash or a takeover resumes exactly there. A lone service keeps it at its head.
-- Until now every append wrote them with its events: they hold the whole chain.
CREATE TABLE derived_through (
    one SMALLINT PRIMARY KEY CHECK (one = 1),
    through_seq BIGINT NOT NULL
);
INSERT INTO derived_through (one, through_seq) SELECT 1, COALESCE(MAX(seq), 0) FROM events;
