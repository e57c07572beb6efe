-- v16 (trial az10 G3): every version of a certificate certroll soft-deleted in a remote vault
-- (azure), read just before the delete. Key Vault shows only a deleted certificate's current
-- version, so without these certroll took its own older versions (a group's CA in the secondary
-- signing slot after a roll) for another client's while the certificate was in the recycle bin,
-- and `vault delete`/`vault recover` counted one version. Rows go when the name is recovered
-- (the vault lists its versions again) or purged.
CREATE TABLE deleted_versions (
    name       TEXT NOT NULL,     -- vault certificate name
    version    TEXT NOT NULL,
    cert_der   BLOB NOT NULL,
    created    INTEGER NOT NULL,  -- Key Vault's `created` (Unix seconds)
    issuer     TEXT,              -- `NAME/VERSION` of the CA version that signed it
    kty        TEXT NOT NULL,
    exportable INTEGER NOT NULL,
    enabled    INTEGER NOT NULL,
    nbf        INTEGER NOT NULL,
    exp        INTEGER NOT NULL,
    PRIMARY KEY (name, version)
);
