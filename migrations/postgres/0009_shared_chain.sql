-- Several records services on one database (issue 15).

-- The schema itself refuses a fork, even if the locking had a bug: one event per chain
-- position (`seq` is the primary key already) and one event per previous hash, so no
-- two events can follow the same one.
CREATE UNIQUE INDEX events_one_successor ON events (prev_hash);

-- Switchboard events accepted by any service and not chained yet. A service acknowledges
-- LogEvents once its rows are committed here; the one sequencer (the service holding
-- the sequencer's advisory lock) chains them and deletes them. Keyed like the chain's
-- own (node_id, node_seq), so a retried or duplicated delivery lands once.
CREATE TABLE staged_events (
    node_id      TEXT COLLATE "C" NOT NULL,
    node_seq     BIGINT NOT NULL,
    -- Protobuf `EventBody` holding the NodeEvent, as it will be chained.
    body         BYTEA  NOT NULL,
    -- Hash of `body` with the chain's algorithm: a redelivery must match it.
    body_digest  BYTEA  NOT NULL,
    -- Arrival order, so the sequencer takes the oldest first.
    arrival      BIGSERIAL NOT NULL,
    PRIMARY KEY (node_id, node_seq)
);
CREATE INDEX staged_events_by_arrival ON staged_events (arrival);
