-- The trusted SIP proxy (e.g. Kamailio) a call's INVITE came through, ip:port
-- (CallRecord.proxy_source); empty for calls that reached the switchboard
-- directly, as every call before this column did.
ALTER TABLE calls ADD COLUMN proxy_source TEXT NOT NULL DEFAULT '';
