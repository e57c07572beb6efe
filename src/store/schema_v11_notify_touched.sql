-- certroll store: the notify step after a verb on a remote vault (issue 12). Listing all of Key
-- Vault (25 certificates a request) after every verb does not scale to a large fleet, so the step
-- reads only what changed and judges the rest from what the last scan recorded:
--
-- - notify_remote_seen keeps, beside the newest version and its policy, that version's validity
--   and whether it is enabled (the listing's attributes), so lifetime-action times are judged
--   without asking Key Vault. NULL: not known (never recorded, or the certificate is gone).
-- - notify_remote_touched lists the names certroll wrote to since the last scan (a new version, a
--   policy, enabled or not, deleted, recovered, purged, restored): the step reads each again.
--   A name is added before the remote write, so a stop right after it leaves nothing unseen.
ALTER TABLE notify_remote_seen ADD COLUMN not_before INTEGER;  -- Unix seconds, UTC
ALTER TABLE notify_remote_seen ADD COLUMN not_after INTEGER;   -- Unix seconds, UTC
ALTER TABLE notify_remote_seen ADD COLUMN enabled INTEGER;     -- 0 or 1

CREATE TABLE notify_remote_touched (
    name        TEXT PRIMARY KEY         -- the vault certificate name
);
