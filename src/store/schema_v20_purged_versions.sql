-- v20 (trial az12 F3): the certificates of every version certroll purged from a remote vault
-- (azure), recorded just before the purge. DPS names what an enrollment's slot holds by
-- thumbprint only, so without these certroll took its own certificates, still in the slots (and
-- on the device) after `vault purge`, for another client's: `issue` refused to replace them, and
-- `roll-secondary --due` could not tell the device's certificate was purged. Rows stay after a
-- new certificate is issued under the name (a slot may hold a purged one until a roll prunes
-- it); a version that comes back (`vault recover` after a purge that failed) loses its row.
CREATE TABLE purged_versions (
    name     TEXT NOT NULL,  -- vault certificate name
    version  TEXT NOT NULL,
    cert_der BLOB NOT NULL,
    PRIMARY KEY (name, version)
);
