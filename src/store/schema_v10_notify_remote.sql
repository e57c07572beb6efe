-- certroll store: the notices ledger for a remote vault (issue 12). On `kind = "azure"` the
-- vault is Key Vault, whose versions have no sequence number in this store, so renewals are
-- found per certificate: the newest version the last scan saw of each name. Notices themselves
-- stay in notify_events, queued exactly once as on the local backend.
--
-- Beside it, the name's policy as read with that version, so a scan reads Key Vault's listing
-- (25 certificates a request) and asks for a certificate only when its newest version (the
-- listing's x5t) changed, or certroll changed its policy (which clears policy_json).
CREATE TABLE notify_remote_seen (
    name        TEXT PRIMARY KEY,        -- the vault certificate name
    version     TEXT NOT NULL,           -- its newest version at the last scan
    seen_at     INTEGER NOT NULL,        -- when that scan ran (Unix seconds, UTC)
    thumbprint  TEXT,                    -- that version's SHA-1 thumbprint (uppercase hex)
    policy_json TEXT                     -- the name's policy read with it; NULL: read it again
);
