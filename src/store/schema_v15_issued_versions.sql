-- v15 (issue 12): what certroll issued, recorded beside the fleet record where the vault is
-- remote (azure). Under each device certificate name, the facts of one version (the one the
-- fleet record names when a unit commits, or the newest a run read): a run that finds Key
-- Vault's listing of certificates showing that version as the name's newest (same thumbprint,
-- same creation time) takes it from here instead of reading it from the vault, one request a
-- device saved. What the listing shows afresh (enabled, notBefore, notAfter) is not kept. A
-- name certroll writes to loses its row until the version it ends with is recorded again; a
-- name without a row (a store of v14) is read from the vault, and recorded by the next run that
-- holds the writer lock.
CREATE TABLE issued_versions (
    name       TEXT PRIMARY KEY,  -- vault certificate name (`dev-ID`)
    version    TEXT NOT NULL,
    cert_der   BLOB NOT NULL,
    created    INTEGER NOT NULL,  -- Key Vault's `created` (Unix seconds)
    issuer     TEXT,              -- `NAME/VERSION` of the CA version that signed it
    kty        TEXT NOT NULL,
    exportable INTEGER NOT NULL
);
