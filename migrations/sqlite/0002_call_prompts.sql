-- Prompt playlists: every prompt a call's line played, in order, as the JSON
-- array `calls export` shows ([{"id","version","sha256","length_ms","ms_sent"}, ...]);
-- '' for calls stored before playlists existed (their events hold no list).
ALTER TABLE calls ADD COLUMN prompts TEXT NOT NULL DEFAULT '';
