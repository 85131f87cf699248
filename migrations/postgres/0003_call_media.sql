-- Per-leg RTP/RTCP figures (CallRecord.caller_media / operator_media) as the JSON
-- object `calls export` shows ({"caller":{...},"operator":{...}}, a leg without media
-- left out); '' for calls without media and calls stored before the figures existed.
ALTER TABLE calls ADD COLUMN media TEXT NOT NULL DEFAULT '';
