-- Applied configurations (switchboard start-ups and reloads, kind config_applied) are
-- few among the chain's events: `records config-history` reads them newest first
-- through this partial index, like the access log through events_access.
CREATE INDEX events_config_applied ON events (seq) WHERE kind = 'config_applied';
