-- certroll store: the notices ledger for a remote vault (issue 12). On `kind = "azure"` the
-- vault is Key Vault, whose versions have no sequence number in this store, so renewals are
-- found per certificate: the newest version the last scan saw of each name. Notices themselves
-- stay in notify_events, queued exactly once as on the local backend.
CREATE TABLE notify_remote_seen (
    name        TEXT PRIMARY KEY,        -- the vault certificate name
    version     TEXT NOT NULL,           -- its newest version at the last scan
    seen_at     INTEGER NOT NULL         -- when that scan ran (Unix seconds, UTC)
);
