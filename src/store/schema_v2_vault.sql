-- certroll store, schema version 2: the vault's administration (issue 4). Times are Unix seconds.
-- Only vault tables; depends on nothing but schema version 1.

-- The chain that came with an imported or merged certificate (DER certificates, one after the
-- other, issuer first), for versions whose issuer is not a vault certificate.
ALTER TABLE vault_versions ADD COLUMN chain_der BLOB;

-- Soft delete: `vault delete` moves a certificate's rows here, `vault recover` moves them back,
-- `vault purge` removes them. Rows keep their names and version ids, so sealed keys still open.
CREATE TABLE vault_deleted_certificates (
    name            TEXT PRIMARY KEY,
    policy          TEXT NOT NULL REFERENCES vault_policies(hash),
    tags            TEXT NOT NULL DEFAULT '{}',
    created         INTEGER NOT NULL,
    updated         INTEGER NOT NULL,
    deleted         INTEGER NOT NULL,
    scheduled_purge INTEGER NOT NULL,
    recovering      INTEGER NOT NULL DEFAULT 0   -- set only inside the recovering transaction
);

CREATE TABLE vault_deleted_versions (
    seq             INTEGER PRIMARY KEY,  -- creation order, kept for recovery
    name            TEXT NOT NULL REFERENCES vault_deleted_certificates(name),
    version         TEXT NOT NULL,
    cert_der        BLOB NOT NULL,
    key_sealed      BLOB NOT NULL,
    kty             TEXT NOT NULL,
    exportable      INTEGER NOT NULL,
    thumbprint      TEXT NOT NULL,
    serial          TEXT NOT NULL,
    enabled         INTEGER NOT NULL,
    nbf             INTEGER NOT NULL,
    exp             INTEGER NOT NULL,
    created         INTEGER NOT NULL,
    updated         INTEGER NOT NULL,
    tags            TEXT NOT NULL DEFAULT '{}',
    issuer_name     TEXT,
    issuer_version  TEXT,
    chain_der       BLOB,
    UNIQUE (name, version)
);

-- A deleted name stays taken until it is recovered or purged (as in Key Vault): nothing, not
-- even `issue`, creates a certificate under it meanwhile.
CREATE TRIGGER vault_deleted_name_is_taken
BEFORE INSERT ON vault_certificates
WHEN EXISTS (SELECT 1 FROM vault_deleted_certificates WHERE name = NEW.name AND recovering = 0)
BEGIN
    SELECT RAISE(ABORT, 'a vault certificate this needs is deleted (certroll vault list-deleted): recover or purge it first');
END;

-- Vault-wide settings: `contacts` (a JSON array of e-mail addresses) once they are set.
CREATE TABLE vault_settings (
    key             TEXT PRIMARY KEY,
    value           TEXT NOT NULL
);

-- Issuer objects a policy can name (besides `Self` and `Unknown`).
CREATE TABLE vault_issuers (
    name            TEXT PRIMARY KEY,
    provider        TEXT NOT NULL,
    account_id      TEXT,
    enabled         INTEGER NOT NULL DEFAULT 1,
    created         INTEGER NOT NULL,
    updated         INTEGER NOT NULL
);

-- A certificate request waiting for an outside CA (`vault create --issuer Unknown`): the key
-- (sealed), the CSR and the policy the merged version gets.
CREATE TABLE vault_pending (
    name            TEXT PRIMARY KEY,
    request_id      TEXT NOT NULL,
    key_sealed      BLOB NOT NULL,
    kty             TEXT NOT NULL,
    exportable      INTEGER NOT NULL,
    csr_der         BLOB NOT NULL,
    policy_json     TEXT NOT NULL,
    issuer          TEXT NOT NULL,
    created         INTEGER NOT NULL
);
