-- certroll store, schema version 1. Times are Unix seconds (UTC).

-- Policies are stored once per distinct content: a fleet shares a handful of them.
CREATE TABLE vault_policies (
    hash        TEXT PRIMARY KEY,         -- SHA-256 of the JSON
    json        TEXT NOT NULL
);

CREATE TABLE vault_certificates (
    name        TEXT PRIMARY KEY,
    policy      TEXT NOT NULL REFERENCES vault_policies(hash),
    tags        TEXT NOT NULL DEFAULT '{}',
    created     INTEGER NOT NULL,
    updated     INTEGER NOT NULL
);

CREATE TABLE vault_versions (
    seq         INTEGER PRIMARY KEY,      -- creation order
    name        TEXT NOT NULL REFERENCES vault_certificates(name),
    version     TEXT NOT NULL,
    cert_der    BLOB NOT NULL,
    key_sealed  BLOB NOT NULL,            -- AES-256-GCM under the store key, AAD = key identity
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
    issuer_name TEXT,                     -- the vault certificate (and version) that signed it
    issuer_version TEXT,
    UNIQUE (name, version)
);
CREATE INDEX vault_versions_by_name ON vault_versions(name, seq);

CREATE TABLE service_cas (
    name        TEXT PRIMARY KEY,
    cert_der    BLOB NOT NULL,
    thumbprint  TEXT NOT NULL,
    verified    INTEGER NOT NULL DEFAULT 0,
    nonce       TEXT,
    created     INTEGER NOT NULL,
    updated     INTEGER NOT NULL
);

CREATE TABLE enrollment_groups (
    name                TEXT PRIMARY KEY,
    primary_der         BLOB,
    primary_ca_ref      TEXT,
    secondary_der       BLOB,
    secondary_ca_ref    TEXT,
    status              TEXT NOT NULL,
    reprovision         TEXT NOT NULL,
    hub                 TEXT NOT NULL,
    created             INTEGER NOT NULL,
    updated             INTEGER NOT NULL
);

CREATE TABLE individual_enrollments (
    registration_id     TEXT PRIMARY KEY,
    primary_der         BLOB,
    primary_thumbprint  TEXT,
    secondary_der       BLOB,
    secondary_thumbprint TEXT,
    status              TEXT NOT NULL,
    reprovision         TEXT NOT NULL,
    hub                 TEXT NOT NULL,
    created             INTEGER NOT NULL,
    updated             INTEGER NOT NULL
);
CREATE INDEX individual_by_primary ON individual_enrollments(primary_thumbprint);
CREATE INDEX individual_by_secondary ON individual_enrollments(secondary_thumbprint);

CREATE TABLE registrations (
    registration_id     TEXT PRIMARY KEY,
    enrollment_kind     TEXT,             -- group | individual
    enrollment_name     TEXT,
    status              TEXT NOT NULL,    -- assigned | failed
    substatus           TEXT,
    hub                 TEXT,
    cert_thumbprint     TEXT,
    error               TEXT,
    updated             INTEGER NOT NULL
);

CREATE TABLE hub_devices (
    hub                 TEXT NOT NULL,
    device_id           TEXT NOT NULL,
    auth_type           TEXT NOT NULL,
    primary_thumbprint  TEXT,
    secondary_thumbprint TEXT,
    status              TEXT NOT NULL,
    twin                TEXT NOT NULL DEFAULT '{}',
    created             INTEGER NOT NULL,
    updated             INTEGER NOT NULL,
    PRIMARY KEY (device_id, hub)            -- device first: look-ups by device across hubs
);

CREATE TABLE devices (
    id                  TEXT PRIMARY KEY,
    group_name          TEXT,
    enrollment          TEXT,
    cert_name           TEXT NOT NULL,
    installed_version   TEXT
);
CREATE INDEX devices_by_group ON devices(group_name, id);

-- Revocation: what each CA has revoked, and the number of its latest CRL.
CREATE TABLE crl_entries (
    issuer_name TEXT NOT NULL,            -- the vault name of the issuing CA
    serial      TEXT NOT NULL,            -- uppercase hex
    reason      TEXT NOT NULL,
    revoked_at  INTEGER NOT NULL,
    PRIMARY KEY (issuer_name, serial)
);

CREATE TABLE crl_numbers (
    issuer_name TEXT PRIMARY KEY,
    number      INTEGER NOT NULL
);

-- A value sealed under the store key when the store was made: opening with any other key fails
-- at once instead of sealing new keys under the wrong one.
CREATE TABLE store_meta (
    key         TEXT PRIMARY KEY,
    value       BLOB NOT NULL
);
