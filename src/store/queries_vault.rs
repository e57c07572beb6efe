//! Reads and writes of the vault's administration tables (schema version 2): tags, soft delete,
//! backup and restore of whole certificates, contacts, issuers and pending requests. Writers take
//! a connection inside a transaction, as in [`super::queries`].

use super::StoreError;
use super::queries::key_identity;
use super::queries::{from_ts, sql, ts, version_row};
use super::seal::StoreKey;
use crate::backend::types::*;
use rusqlite::{Connection, OptionalExtension, Row, params};
use time::OffsetDateTime;

type Result<T> = std::result::Result<T, StoreError>;

fn corrupt(message: String) -> StoreError {
    StoreError::Corrupt {
        path: Default::default(),
        message,
    }
}

fn tags_from(text: &str) -> Result<Tags> {
    serde_json::from_str(text).map_err(|e| corrupt(format!("tags {text:?}: {e}")))
}

fn tags_text(tags: &Tags) -> String {
    serde_json::to_string(tags).unwrap_or_else(|_| "{}".into())
}

// ---------------------------------------------------------------- policy

/// When a certificate name was made and when its policy last changed (the certificate row
/// changes with its policy only), as Key Vault's policy attributes `created` and `updated`;
/// None for a name the store does not hold.
pub fn policy_times(conn: &Connection, name: &str) -> Result<Option<(OffsetDateTime, OffsetDateTime)>> {
    conn.prepare_cached("SELECT created, updated FROM vault_certificates WHERE name = ?1")
        .and_then(|mut s| {
            s.query_row([name], |r| Ok((from_ts(r.get(0)?), from_ts(r.get(1)?))))
                .optional()
        })
        .map_err(sql)
}

/// Replaces the policy of a live certificate (Key Vault's policy update); false if the name is
/// not live. Its versions keep the policies they were made with.
pub fn policy_set(conn: &Connection, name: &str, json: &str, now: OffsetDateTime) -> Result<bool> {
    let hash = super::queries::policy_put(conn, json)?;
    let changed = conn
        .prepare_cached("UPDATE vault_certificates SET policy = ?2, updated = ?3 WHERE name = ?1")
        .and_then(|mut s| s.execute(params![name, hash, ts(now)]))
        .map_err(sql)?;
    Ok(changed > 0)
}

// ---------------------------------------------------------------- tags

/// The tags of a live certificate (`version` None: its newest version's, as Key Vault shows a
/// certificate's tags) or of one of its versions; None if absent.
pub fn tags_get(conn: &Connection, name: &str, version: Option<&str>) -> Result<Option<Tags>> {
    let text: Option<String> = match version {
        None => conn
            .prepare_cached(
                "SELECT coalesce((SELECT v.tags FROM vault_versions v WHERE v.name = c.name
                                  ORDER BY v.seq DESC LIMIT 1), c.tags)
                 FROM vault_certificates c WHERE c.name = ?1",
            )
            .and_then(|mut s| s.query_row([name], |r| r.get(0)).optional()),
        Some(v) => conn
            .prepare_cached("SELECT tags FROM vault_versions WHERE name = ?1 AND version = ?2")
            .and_then(|mut s| s.query_row([name, v], |r| r.get(0)).optional()),
    }
    .map_err(sql)?;
    text.map(|t| tags_from(&t)).transpose()
}

/// Replaces the tags of a live certificate (`version` None: its newest version's, as Key
/// Vault's versionless update does) or of one of its versions.
pub fn tags_set(
    conn: &Connection,
    name: &str,
    version: Option<&str>,
    tags: &Tags,
    now: OffsetDateTime,
) -> Result<()> {
    let text = tags_text(tags);
    match version {
        None => conn.execute(
            "UPDATE vault_versions SET tags = ?2, updated = ?3
             WHERE seq = (SELECT MAX(seq) FROM vault_versions WHERE name = ?1)",
            params![name, text, ts(now)],
        ),
        Some(v) => conn.execute(
            "UPDATE vault_versions SET tags = ?3, updated = ?4 WHERE name = ?1 AND version = ?2",
            params![name, v, text, ts(now)],
        ),
    }
    .map_err(sql)?;
    Ok(())
}

// ---------------------------------------------------------------- soft delete

const VERSION_COLS: &str = "name, version, cert_der, key_sealed, kty, exportable, thumbprint, serial, enabled, nbf, \
     exp, created, updated, tags, issuer_name, issuer_version, chain_der";

/// What relies on a live certificate: devices holding one of its versions, and other
/// certificates with versions it signed.
pub fn users(conn: &Connection, name: &str) -> Result<CertificateUsers> {
    let collect = |query: &str| -> Result<Vec<String>> {
        let mut stmt = conn.prepare(query).map_err(sql)?;
        let rows = stmt.query_map([name], |r| r.get(0)).map_err(sql)?;
        rows.collect::<rusqlite::Result<_>>().map_err(sql)
    };
    Ok(CertificateUsers {
        devices: collect(
            "SELECT id FROM devices WHERE cert_name = ?1 AND installed_version IS NOT NULL ORDER BY id",
        )?,
        signed: collect(
            "SELECT DISTINCT name FROM vault_versions WHERE issuer_name = ?1 AND name <> ?1 ORDER BY name",
        )?,
    })
}

/// Moves a live certificate with all its versions to the deleted ones. False if it is not live.
pub fn delete(conn: &Connection, name: &str, now: OffsetDateTime, purge_at: OffsetDateTime) -> Result<bool> {
    let moved = conn
        .execute(
            "INSERT INTO vault_deleted_certificates (name, policy, tags, created, updated, deleted, scheduled_purge)
             SELECT name, policy, tags, created, updated, ?2, ?3 FROM vault_certificates WHERE name = ?1",
            params![name, ts(now), ts(purge_at)],
        )
        .map_err(sql)?;
    if moved == 0 {
        return Ok(false);
    }
    conn.execute(
        &format!(
            "INSERT INTO vault_deleted_versions (seq, {VERSION_COLS})
             SELECT seq, {VERSION_COLS} FROM vault_versions WHERE name = ?1 ORDER BY seq"
        ),
        [name],
    )
    .map_err(sql)?;
    conn.execute("DELETE FROM vault_versions WHERE name = ?1", [name])
        .map_err(sql)?;
    conn.execute("DELETE FROM vault_certificates WHERE name = ?1", [name])
        .map_err(sql)?;
    Ok(true)
}

/// Moves a deleted certificate back, exactly as it was (versions keep their order). False if
/// it is not deleted. The caller makes sure the name is not live meanwhile.
pub fn recover(conn: &Connection, name: &str) -> Result<bool> {
    let found = conn
        .execute(
            "UPDATE vault_deleted_certificates SET recovering = 1 WHERE name = ?1",
            [name],
        )
        .map_err(sql)?;
    if found == 0 {
        return Ok(false);
    }
    conn.execute(
        "INSERT INTO vault_certificates (name, policy, tags, created, updated)
         SELECT name, policy, tags, created, updated FROM vault_deleted_certificates WHERE name = ?1",
        [name],
    )
    .map_err(sql)?;
    // The old sequence numbers: they are never handed out again (AUTOINCREMENT), so the
    // versions come back exactly where they were, and are not news to the renewal watermark.
    conn.execute(
        &format!(
            "INSERT INTO vault_versions (seq, {VERSION_COLS})
             SELECT seq, {VERSION_COLS} FROM vault_deleted_versions WHERE name = ?1 ORDER BY seq"
        ),
        [name],
    )
    .map_err(sql)?;
    purge(conn, name)
}

/// Removes a deleted certificate for good. False if it is not deleted.
pub fn purge(conn: &Connection, name: &str) -> Result<bool> {
    conn.execute("DELETE FROM vault_deleted_versions WHERE name = ?1", [name])
        .map_err(sql)?;
    let n = conn
        .execute("DELETE FROM vault_deleted_certificates WHERE name = ?1", [name])
        .map_err(sql)?;
    Ok(n > 0)
}

/// Deleted certificates in name order (one, when `only` names it).
pub fn deleted(conn: &Connection, only: Option<&str>) -> Result<Vec<DeletedCertificate>> {
    let mut stmt = conn
        .prepare(
            "SELECT d.name, d.deleted, d.scheduled_purge,
                    coalesce((SELECT v.tags FROM vault_deleted_versions v WHERE v.name = d.name
                              ORDER BY v.seq DESC LIMIT 1), d.tags)
             FROM vault_deleted_certificates d
             WHERE ?1 IS NULL OR d.name = ?1 ORDER BY d.name",
        )
        .map_err(sql)?;
    let heads = stmt
        .query_map([only], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, String>(3)?,
            ))
        })
        .map_err(sql)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(sql)?;
    let mut versions = conn
        .prepare(
            "SELECT name, version, cert_der, kty, exportable, enabled, nbf, exp, created, issuer_name, issuer_version
             FROM vault_deleted_versions WHERE name = ?1 ORDER BY seq",
        )
        .map_err(sql)?;
    heads
        .into_iter()
        .map(|(name, deleted, purge, tags)| {
            let vs = versions
                .query_map([&name], version_row)
                .map_err(sql)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(sql)?;
            Ok(DeletedCertificate {
                tags: tags_from(&tags)?,
                name,
                deleted: from_ts(deleted),
                scheduled_purge: from_ts(purge),
                versions: vs,
            })
        })
        .collect()
}

// ---------------------------------------------------------------- backup / restore

/// Everything about a live certificate, for a backup. Exportable keys are opened with the
/// store key; non-exportable ones stay sealed. None if the name is not live.
pub fn backup(conn: &Connection, key: &StoreKey, name: &str) -> Result<Option<CertificateBackup>> {
    let head = conn
        .query_row(
            "SELECT p.json,
                    coalesce((SELECT v.tags FROM vault_versions v WHERE v.name = c.name
                              ORDER BY v.seq DESC LIMIT 1), c.tags),
                    c.created, c.updated
             FROM vault_certificates c
             JOIN vault_policies p ON p.hash = c.policy WHERE c.name = ?1",
            [name],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            },
        )
        .optional()
        .map_err(sql)?;
    let Some((policy_json, tags, created, updated)) = head else {
        return Ok(None);
    };
    let mut stmt = conn
        .prepare(
            "SELECT name, version, cert_der, kty, exportable, enabled, nbf, exp, created, issuer_name, issuer_version,
                    key_sealed, updated, tags, chain_der
             FROM vault_versions WHERE name = ?1 ORDER BY seq",
        )
        .map_err(sql)?;
    let rows = stmt
        .query_map([name], |r| {
            Ok((
                version_row(r)?,
                r.get::<_, Vec<u8>>(11)?,
                r.get::<_, i64>(12)?,
                r.get::<_, String>(13)?,
                r.get::<_, Option<Vec<u8>>>(14)?,
            ))
        })
        .map_err(sql)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(sql)?;
    let versions = rows
        .into_iter()
        .map(|(version, sealed, updated, tags, chain)| {
            let key = if version.exportable {
                BackupKey::Plain(key.open(&key_identity(name, &version.version), &sealed)?)
            } else {
                BackupKey::Sealed(sealed)
            };
            Ok(VersionBackup {
                version,
                key,
                updated: from_ts(updated),
                tags: tags_from(&tags)?,
                chain: split_chain(chain.as_deref())?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(CertificateBackup {
        name: name.to_string(),
        policy_json,
        tags: tags_from(&tags)?,
        created: from_ts(created),
        updated: from_ts(updated),
        versions,
    }))
}

/// Whether a certificate name is live, deleted or pending.
pub fn name_in_use(conn: &Connection, name: &str) -> Result<Option<&'static str>> {
    for (table, what) in [
        ("vault_certificates", "live"),
        ("vault_deleted_certificates", "deleted"),
        ("vault_pending", "pending"),
    ] {
        let found: bool = conn
            .query_row(
                &format!("SELECT EXISTS (SELECT 1 FROM {table} WHERE name = ?1)"),
                [name],
                |r| r.get(0),
            )
            .map_err(sql)?;
        if found {
            return Ok(Some(what));
        }
    }
    Ok(None)
}

/// Restores a backed-up certificate under its own name, byte for byte. A sealed key must open
/// under this store's key. The caller makes sure the name is free.
pub fn restore(conn: &Connection, key: &StoreKey, b: &CertificateBackup) -> Result<()> {
    let policy_hash = crate::pki::sha256_thumbprint(b.policy_json.as_bytes());
    conn.execute(
        "INSERT OR IGNORE INTO vault_policies (hash, json) VALUES (?1, ?2)",
        params![policy_hash, b.policy_json],
    )
    .map_err(sql)?;
    conn.execute(
        "INSERT INTO vault_certificates (name, policy, tags, created, updated) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            b.name,
            policy_hash,
            tags_text(&b.tags),
            ts(b.created),
            ts(b.updated)
        ],
    )
    .map_err(sql)?;
    for v in &b.versions {
        let version = &v.version;
        if version.name != b.name {
            return Err(corrupt(format!(
                "backup of `{}` holds a version of `{}`",
                b.name, version.name
            )));
        }
        let identity = key_identity(&b.name, &version.version);
        let sealed = match &v.key {
            BackupKey::Plain(der) => key.seal(&identity, der)?,
            BackupKey::Sealed(sealed) => {
                // Proves it belongs to this store's key; the clear key is dropped at once.
                key.open(&identity, sealed)?;
                sealed.clone()
            }
        };
        let info = crate::pki::CertInfo::from_der(&version.cert_der)
            .map_err(|e| corrupt(format!("backup of `{}`: {e}", b.name)))?;
        conn.execute(
            "INSERT INTO vault_versions
               (name, version, cert_der, key_sealed, kty, exportable, thumbprint, serial, enabled, nbf, exp,
                created, updated, tags, issuer_name, issuer_version, chain_der)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
            params![
                b.name,
                version.version,
                version.cert_der,
                sealed,
                version.kty,
                version.exportable,
                info.thumbprint,
                info.serial,
                version.enabled,
                ts(version.nbf),
                ts(version.exp),
                ts(version.created),
                ts(v.updated),
                tags_text(&v.tags),
                version.issuer.as_ref().map(|i| i.0.as_str()),
                version.issuer.as_ref().map(|i| i.1.as_str()),
                join_chain(&v.chain),
            ],
        )
        .map_err(sql)?;
    }
    Ok(())
}

// ---------------------------------------------------------------- chains

fn join_chain(chain: &[Vec<u8>]) -> Option<Vec<u8>> {
    (!chain.is_empty()).then(|| chain.concat())
}

fn split_chain(joined: Option<&[u8]>) -> Result<Vec<Vec<u8>>> {
    let mut rest = joined.unwrap_or_default();
    let mut out = Vec::new();
    while !rest.is_empty() {
        let (after, _) =
            x509_parser::parse_x509_certificate(rest).map_err(|e| corrupt(format!("stored chain: {e}")))?;
        out.push(rest[..rest.len() - after.len()].to_vec());
        rest = after;
    }
    Ok(out)
}

/// The chain stored with a version (issuer first; empty when none was stored).
pub fn chain_get(conn: &Connection, name: &str, version: &str) -> Result<Vec<Vec<u8>>> {
    let joined: Option<Option<Vec<u8>>> = conn
        .query_row(
            "SELECT chain_der FROM vault_versions WHERE name = ?1 AND version = ?2",
            [name, version],
            |r| r.get(0),
        )
        .optional()
        .map_err(sql)?;
    split_chain(joined.flatten().as_deref())
}

/// Stores the chain that came with a version.
pub fn chain_set(conn: &Connection, name: &str, version: &str, chain: &[Vec<u8>]) -> Result<()> {
    conn.execute(
        "UPDATE vault_versions SET chain_der = ?3 WHERE name = ?1 AND version = ?2",
        params![name, version, join_chain(chain)],
    )
    .map_err(sql)?;
    Ok(())
}

// ---------------------------------------------------------------- contacts

/// The vault's contacts, if they were ever set (an empty list is a set value).
pub fn contacts_get(conn: &Connection) -> Result<Option<Vec<String>>> {
    let text: Option<String> = conn
        .query_row(
            "SELECT value FROM vault_settings WHERE key = 'contacts'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(sql)?;
    text.map(|t| serde_json::from_str(&t).map_err(|e| corrupt(format!("contacts {t:?}: {e}"))))
        .transpose()
}

/// Sets the vault's contacts, or (None) removes them.
pub fn contacts_set(conn: &Connection, emails: Option<&[String]>) -> Result<()> {
    match emails {
        Some(list) => conn.execute(
            "INSERT INTO vault_settings (key, value) VALUES ('contacts', ?1)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [serde_json::to_string(list).unwrap_or_else(|_| "[]".into())],
        ),
        None => conn.execute("DELETE FROM vault_settings WHERE key = 'contacts'", []),
    }
    .map_err(sql)?;
    Ok(())
}

// ---------------------------------------------------------------- issuers

/// Every issuer object, in name order.
pub fn issuers(conn: &Connection) -> Result<Vec<IssuerConfig>> {
    let mut stmt = conn
        .prepare(
            "SELECT name, provider, account_id, enabled, created, updated FROM vault_issuers ORDER BY name",
        )
        .map_err(sql)?;
    stmt.query_map([], |r| {
        Ok(IssuerConfig {
            name: r.get(0)?,
            provider: r.get(1)?,
            account_id: r.get(2)?,
            enabled: r.get(3)?,
            created: from_ts(r.get(4)?),
            updated: from_ts(r.get(5)?),
        })
    })
    .map_err(sql)?
    .collect::<rusqlite::Result<_>>()
    .map_err(sql)
}

/// Creates or replaces an issuer object (keeping its creation time).
pub fn issuer_put(conn: &Connection, i: &IssuerConfig, now: OffsetDateTime) -> Result<()> {
    conn.execute(
        "INSERT INTO vault_issuers (name, provider, account_id, enabled, created, updated) VALUES (?1, ?2, ?3, ?4, ?5, ?5)
         ON CONFLICT(name) DO UPDATE SET provider = excluded.provider, account_id = excluded.account_id,
           enabled = excluded.enabled, updated = excluded.updated",
        params![i.name, i.provider, i.account_id, i.enabled, ts(now)],
    )
    .map_err(sql)?;
    Ok(())
}

/// Removes an issuer object; false if there was none.
pub fn issuer_delete(conn: &Connection, name: &str) -> Result<bool> {
    Ok(conn
        .execute("DELETE FROM vault_issuers WHERE name = ?1", [name])
        .map_err(sql)?
        > 0)
}

/// Live, deleted and pending certificates whose policy names an issuer.
pub fn issuer_users(conn: &Connection, issuer: &str) -> Result<Vec<String>> {
    let mut stmt = conn
        .prepare(
            "SELECT c.name FROM vault_certificates c JOIN vault_policies p ON p.hash = c.policy
               WHERE json_extract(p.json, '$.issuer.name') = ?1
             UNION SELECT d.name FROM vault_deleted_certificates d JOIN vault_policies p ON p.hash = d.policy
               WHERE json_extract(p.json, '$.issuer.name') = ?1
             UNION SELECT name FROM vault_pending WHERE issuer = ?1
             ORDER BY 1",
        )
        .map_err(sql)?;
    stmt.query_map([issuer], |r| r.get(0))
        .map_err(sql)?
        .collect::<rusqlite::Result<_>>()
        .map_err(sql)
}

// ---------------------------------------------------------------- pending requests

pub(super) fn pending_identity(name: &str, request_id: &str) -> String {
    format!("certroll/vault-pending/{name}/{request_id}")
}

const PENDING_COLS: &str = "name, request_id, csr_der, kty, exportable, policy_json, issuer, created";

fn pending_row(r: &Row<'_>) -> rusqlite::Result<PendingCertificate> {
    Ok(PendingCertificate {
        name: r.get(0)?,
        request_id: r.get(1)?,
        csr_der: r.get(2)?,
        kty: r.get(3)?,
        exportable: r.get(4)?,
        policy_json: r.get(5)?,
        issuer: r.get(6)?,
        // 0: a request whose time was not known (none the store makes).
        created: Some(r.get::<_, i64>(7)?).filter(|s| *s != 0).map(from_ts),
    })
}

/// The pending request of a certificate name.
pub fn pending_get(conn: &Connection, name: &str) -> Result<Option<PendingCertificate>> {
    conn.query_row(
        &format!("SELECT {PENDING_COLS} FROM vault_pending WHERE name = ?1"),
        [name],
        pending_row,
    )
    .optional()
    .map_err(sql)
}

/// Every pending request, in name order.
pub fn pending_all(conn: &Connection) -> Result<Vec<PendingCertificate>> {
    let mut stmt = conn
        .prepare(&format!("SELECT {PENDING_COLS} FROM vault_pending ORDER BY name"))
        .map_err(sql)?;
    stmt.query_map([], pending_row)
        .map_err(sql)?
        .collect::<rusqlite::Result<_>>()
        .map_err(sql)
}

/// Records a pending request with its key (sealed under the store key).
pub fn pending_put(
    conn: &Connection,
    key: &StoreKey,
    p: &PendingCertificate,
    key_pkcs8: &[u8],
) -> Result<()> {
    let sealed = key.seal(&pending_identity(&p.name, &p.request_id), key_pkcs8)?;
    conn.execute(
        "INSERT INTO vault_pending (name, request_id, key_sealed, kty, exportable, csr_der, policy_json, issuer, created)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            p.name,
            p.request_id,
            sealed,
            p.kty,
            p.exportable,
            p.csr_der,
            p.policy_json,
            p.issuer,
            p.created.map_or(0, ts)
        ],
    )
    .map_err(sql)?;
    // A new request replaces a cancelled operation, whichever path (CLI or serve) made it.
    cancelled_operation_set(conn, &p.name, None)?;
    Ok(())
}

/// The key of a pending request (PKCS#8 DER).
pub fn pending_key(conn: &Connection, key: &StoreKey, name: &str) -> Result<zeroize::Zeroizing<Vec<u8>>> {
    let (request_id, sealed): (String, Vec<u8>) = conn
        .query_row(
            "SELECT request_id, key_sealed FROM vault_pending WHERE name = ?1",
            [name],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(sql)?;
    Ok(key.open(&pending_identity(name, &request_id), &sealed)?)
}

/// Removes a pending request; false if there was none.
pub fn pending_delete(conn: &Connection, name: &str) -> Result<bool> {
    Ok(conn
        .execute("DELETE FROM vault_pending WHERE name = ?1", [name])
        .map_err(sql)?
        > 0)
}

/// The `vault_settings` key of the record of a cancelled request of `name`.
fn cancelled_key(name: &str) -> String {
    format!("cancelled_operation:{name}")
}

/// The record (JSON text, the shape its writer chose) of a request of `name` that was
/// cancelled and whose operation was not yet deleted: Key Vault keeps a cancelled operation
/// until it is deleted, while its key and the pending row are gone at the cancel.
pub fn cancelled_operation_get(conn: &Connection, name: &str) -> Result<Option<String>> {
    conn.query_row(
        "SELECT value FROM vault_settings WHERE key = ?1",
        [cancelled_key(name)],
        |r| r.get(0),
    )
    .optional()
    .map_err(sql)
}

/// Records (Some) or forgets (None) the cancelled request of `name`; true when a record was
/// there before.
pub fn cancelled_operation_set(conn: &Connection, name: &str, record: Option<&str>) -> Result<bool> {
    let had = conn
        .execute("DELETE FROM vault_settings WHERE key = ?1", [cancelled_key(name)])
        .map_err(sql)?
        > 0;
    if let Some(record) = record {
        conn.execute(
            "INSERT INTO vault_settings (key, value) VALUES (?1, ?2)",
            [cancelled_key(name).as_str(), record],
        )
        .map_err(sql)?;
    }
    Ok(had)
}

// ---------------------------------------------------------------- key protection

/// The protection a new version of `name` certifying `cert_der`'s key must keep: `Some(kty)`
/// with the key type to record (its `-HSM` suffix kept) when an earlier version of the same name
/// holds the same key non-exportable or in an HSM; `None` when the key is new to the name or was
/// always exportable.
///
/// Exportability belongs to the key for its whole life: a renewal that reuses the key after the
/// policy was edited to `exportable = true`, or an import of the same key, may not open it.
pub fn inherited_key_protection(
    conn: &Connection,
    name: &str,
    cert_der: &[u8],
    exportable: bool,
    kty: &str,
) -> Result<Option<String>> {
    // Nothing is stronger than an HSM key; a non-exportable one can only gain the HSM mark.
    let query = match (exportable, kty.ends_with("-HSM")) {
        (false, true) => return Ok(None),
        (false, false) => "SELECT kty, cert_der FROM vault_versions WHERE name = ?1 AND kty LIKE '%-HSM'",
        (true, _) => {
            "SELECT kty, cert_der FROM vault_versions WHERE name = ?1 AND (exportable = 0 OR kty LIKE '%-HSM')"
        }
    };
    let mut stmt = conn.prepare_cached(query).map_err(sql)?;
    let rows = stmt
        .query_map([name], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?)))
        .map_err(sql)?;
    let mut spki: Option<Vec<u8>> = None;
    for row in rows {
        let (kty, old_der) = row.map_err(sql)?;
        let new_spki = match &spki {
            Some(s) => s,
            None => spki
                .insert(spki_raw(cert_der).map_err(|e| corrupt(format!("refusing to store `{name}`: {e}")))?),
        };
        // An unreadable old row cannot match; the new key is compared only with what parses.
        if spki_raw(&old_der).is_ok_and(|old| &old == new_spki) {
            return Ok(Some(kty));
        }
    }
    Ok(None)
}

fn spki_raw(cert_der: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).map_err(|e| e.to_string())?;
    Ok(cert.tbs_certificate.subject_pki.raw.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Store, queries as q};

    fn insert(store: &mut Store, name: &str, now: OffsetDateTime) -> Result<String> {
        crate::store::test_support::insert_version(store, name, "{}", now, 1)
    }

    #[test]
    fn tags_set_before_schema_9_move_onto_the_newest_version_of_live_and_deleted_names() {
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let mut store = Store::open_empty().unwrap();
        let old = insert(&mut store, "a", now).unwrap();
        let newest = insert(&mut store, "a", now).unwrap();
        insert(&mut store, "gone", now).unwrap();
        let conn = store.conn();
        // As a schema 8 store held them: on the certificate, and one version of its own.
        conn.execute_batch(
            r#"UPDATE vault_certificates SET tags = '{"owner":"ops"}';
               UPDATE vault_versions SET tags = '{"batch":"7"}' WHERE name = 'a' AND seq = (SELECT MIN(seq) FROM vault_versions WHERE name = 'a');"#,
        )
        .unwrap();
        store.write(|tx, _| delete(tx, "gone", now, now)).unwrap();
        store
            .conn()
            .execute_batch(include_str!("schema_v9_version_tags.sql"))
            .unwrap();
        let conn = store.conn();
        let owner: Tags = [("owner".to_string(), "ops".to_string())].into();
        assert_eq!(tags_get(conn, "a", Some(&newest)).unwrap(), Some(owner.clone()));
        assert_eq!(tags_get(conn, "a", None).unwrap(), Some(owner.clone()));
        let batch: Tags = [("batch".to_string(), "7".to_string())].into();
        assert_eq!(
            tags_get(conn, "a", Some(&old)).unwrap(),
            Some(batch),
            "its own kept"
        );
        assert_eq!(deleted(conn, Some("gone")).unwrap()[0].tags, owner);
    }

    #[test]
    fn a_deleted_name_stays_taken_until_recovered_or_purged_and_recovers_exactly() {
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let mut store = Store::open_empty().unwrap();
        let v1 = insert(&mut store, "a", now).unwrap();
        let v2 = insert(&mut store, "a", now).unwrap();
        insert(&mut store, "b", now).unwrap();
        let before = q::vault_versions(store.conn(), "a").unwrap();
        let key_before = q::vault_private_key(store.conn(), store.key(), "a", &v1).unwrap();
        let self_signed = || crate::store::test_support::self_signed(now, 1).0;
        let chain = vec![self_signed(), self_signed()];
        store.write(|tx, _| chain_set(tx, "a", &v1, &chain)).unwrap();

        assert!(store.write(|tx, _| delete(tx, "a", now, now)).unwrap());
        assert!(q::vault_versions(store.conn(), "a").unwrap().is_empty());
        assert_eq!(q::vault_names_page(store.conn(), "", 10).unwrap(), ["b"]);
        // Not even another writer (issue, roll) can take the name meanwhile.
        let err = insert(&mut store, "a", now).unwrap_err();
        assert!(err.to_string().contains("deleted"), "{err}");
        // Another certificate takes new rows; recovery still keeps a's order.
        insert(&mut store, "b", now).unwrap();

        assert!(store.write(|tx, _| recover(tx, "a")).unwrap());
        let after = q::vault_versions(store.conn(), "a").unwrap();
        assert_eq!(
            after
                .iter()
                .map(|v| (&v.version, &v.cert_der))
                .collect::<Vec<_>>(),
            before
                .iter()
                .map(|v| (&v.version, &v.cert_der))
                .collect::<Vec<_>>()
        );
        assert_eq!(q::vault_current(store.conn(), "a").unwrap().unwrap().version, v2);
        assert_eq!(
            q::vault_private_key(store.conn(), store.key(), "a", &v1).unwrap(),
            key_before
        );
        assert!(deleted(store.conn(), None).unwrap().is_empty());
        assert_eq!(chain_get(store.conn(), "a", &v1).unwrap(), chain);
        assert!(chain_get(store.conn(), "a", &v2).unwrap().is_empty());

        assert!(store.write(|tx, _| delete(tx, "a", now, now)).unwrap());
        assert!(store.write(|tx, _| purge(tx, "a")).unwrap());
        assert!(!store.write(|tx, _| recover(tx, "a")).unwrap());
        insert(&mut store, "a", now).unwrap();
    }
}
