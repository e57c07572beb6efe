-- certroll store: vault version sequence numbers are never handed out twice. Soft delete moves
-- versions out of vault_versions; without AUTOINCREMENT SQLite would reuse their numbers, and
-- the numbers order versions, key the deleted versions and drive the renewal watermark.
CREATE TABLE vault_versions_v6 (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT NOT NULL REFERENCES vault_certificates(name),
    version     TEXT NOT NULL,
    cert_der    BLOB NOT NULL,
    key_sealed  BLOB NOT NULL,
    kty         TEXT NOT NULL,
    exportable  INTEGER NOT NULL,
    thumbprint  TEXT NOT NULL,
    serial      TEXT NOT NULL,
    enabled     INTEGER NOT NULL DEFAULT 1,
    nbf         INTEGER NOT NULL,
    exp         INTEGER NOT NULL,
    created     INTEGER NOT NULL,
    updated     INTEGER NOT NULL,
    tags        TEXT NOT NULL DEFAULT '{}',
    issuer_name TEXT,
    issuer_version TEXT,
    chain_der   BLOB,
    UNIQUE (name, version)
);
INSERT INTO vault_versions_v6 (seq, name, version, cert_der, key_sealed, kty, exportable, thumbprint,
    serial, enabled, nbf, exp, created, updated, tags, issuer_name, issuer_version, chain_der)
SELECT seq, name, version, cert_der, key_sealed, kty, exportable, thumbprint,
    serial, enabled, nbf, exp, created, updated, tags, issuer_name, issuer_version, chain_der
FROM vault_versions;
DROP TABLE vault_versions;
ALTER TABLE vault_versions_v6 RENAME TO vault_versions;
CREATE INDEX vault_versions_by_name ON vault_versions(name, seq);
-- Numbers held by deleted versions are taken too (the rename carried the new table's
-- sqlite_sequence row over, if it has one).
UPDATE sqlite_sequence
SET seq = max(seq, coalesce((SELECT max(seq) FROM vault_deleted_versions), 0))
WHERE name = 'vault_versions';
INSERT INTO sqlite_sequence (name, seq)
SELECT 'vault_versions', coalesce((SELECT max(seq) FROM vault_deleted_versions), 0)
WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'vault_versions');
