-- certroll store: notices to contacts and hooks (the outbox). Times are Unix seconds (UTC).
-- Depends only on schema version 1.

-- One row per event, queued exactly once: an `email-contacts` lifetime action that fired for a
-- version (kind 'email-contacts', trigger e.g. 'lifetime_percentage=80'), or a renewal: a new
-- version of a certificate that already had one (kind 'renewed', trigger '').
CREATE TABLE notify_events (
    id          INTEGER PRIMARY KEY,
    kind        TEXT NOT NULL,
    name        TEXT NOT NULL,            -- the vault certificate name
    version     TEXT NOT NULL,
    trigger     TEXT NOT NULL,
    at          INTEGER NOT NULL,         -- when the trigger fired / the version was created
    not_after   INTEGER NOT NULL,
    previous    TEXT,                     -- renewals: the version before
    queued_at   INTEGER NOT NULL,
    mailed_at   INTEGER,                  -- NULL: owed to the contacts; else when settled
    hooked_at   INTEGER,                  -- NULL: owed to the hook; else when settled
    mail_skipped INTEGER NOT NULL DEFAULT 0, -- 1: settled unsent, the plan had no [mail]
    hook_skipped INTEGER NOT NULL DEFAULT 0, -- 1: settled unsent, the plan had no [hooks]
    UNIQUE (kind, name, version, trigger)
);
CREATE INDEX notify_owed_mail ON notify_events(id) WHERE mailed_at IS NULL;
CREATE INDEX notify_owed_hook ON notify_events(id) WHERE hooked_at IS NULL;

-- Contacts that already got an event whose mail is not yet complete (some contact failed), so a
-- retry mails only the contacts that did not get it. Cleared when the event is mailed.
CREATE TABLE notify_mailed_to (
    event       INTEGER NOT NULL REFERENCES notify_events(id),
    contact     TEXT NOT NULL,
    sent_at     INTEGER NOT NULL,
    PRIMARY KEY (event, contact)
);

-- Watermarks. 'renewal_seq': the highest vault_versions.seq already looked at for renewals;
-- starts at the store's current history so that upgrading does not replay old renewals.
CREATE TABLE notify_state (
    key         TEXT PRIMARY KEY,
    value       INTEGER NOT NULL
);
INSERT INTO notify_state (key, value)
    SELECT 'renewal_seq', COALESCE(MAX(seq), 0) FROM vault_versions;
