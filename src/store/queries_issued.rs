//! Reads and writes of `issued_versions` (schema v15): the facts of the version certroll issued
//! under each device certificate name, kept beside the fleet record where the vault is remote
//! (azure), so that a run which finds that version still the newest in the vault's listing
//! needs not read it from the vault again; and of `deleted_versions` (schema v16): every version
//! of a certificate certroll soft-deleted there, which Key Vault no longer shows; and of
//! `purged_versions` (schema v20): the certificates of the versions certroll purged there.

use super::StoreError;
use super::queries::{all, from_ts, json_list, one, sql, ts};
use crate::backend::types::VaultVersion;
use rusqlite::{Connection, OptionalExtension, params};

type Result<T> = std::result::Result<T, StoreError>;

/// One version's facts as recorded: everything a [`VaultVersion`] holds but what the vault's
/// listing of certificates shows afresh (enabled, notBefore, notAfter), which can change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedVersion {
    /// Vault certificate name.
    pub name: String,
    /// Version id.
    pub version: String,
    /// The certificate (DER).
    pub cert_der: Vec<u8>,
    /// When the vault made the version (whole seconds, as Key Vault keeps it).
    pub created: time::OffsetDateTime,
    /// The CA version that signed it: (vault name, version).
    pub issuer: Option<(String, String)>,
    /// Key type (`EC`, `RSA`, `EC-HSM`, ...).
    pub kty: String,
    /// Whether the key may leave the vault.
    pub exportable: bool,
}

impl IssuedVersion {
    /// The recorded facts of `v`.
    pub fn of(v: &VaultVersion) -> IssuedVersion {
        IssuedVersion {
            name: v.name.clone(),
            version: v.version.clone(),
            cert_der: v.cert_der.clone(),
            created: v.created,
            issuer: v.issuer.clone(),
            kty: v.kty.clone(),
            exportable: v.exportable,
        }
    }

    /// The version, with what the vault shows of it now: `enabled` and its validity dates.
    pub fn with(self, enabled: bool, nbf: time::OffsetDateTime, exp: time::OffsetDateTime) -> VaultVersion {
        VaultVersion {
            name: self.name,
            version: self.version,
            kty: self.kty,
            exportable: self.exportable,
            enabled,
            nbf,
            exp,
            created: self.created,
            issuer: self.issuer,
            cert_der: self.cert_der,
        }
    }
}

/// Records `issued` (replacing what each name held before).
pub fn issued_put(conn: &Connection, issued: &[IssuedVersion]) -> Result<()> {
    let mut stmt = conn
        .prepare_cached(
            "INSERT INTO issued_versions (name, version, cert_der, created, issuer, kty, exportable)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT(name) DO UPDATE SET version = excluded.version, cert_der = excluded.cert_der,
                 created = excluded.created, issuer = excluded.issuer, kty = excluded.kty,
                 exportable = excluded.exportable",
        )
        .map_err(sql)?;
    for i in issued {
        let issuer = issuer_text(i.issuer.as_ref());
        stmt.execute(params![
            i.name,
            i.version,
            i.cert_der,
            ts(i.created),
            issuer,
            i.kty,
            i.exportable
        ])
        .map_err(sql)?;
    }
    Ok(())
}

/// As [`issued_put`], in a transaction of its own when `conn` is in none (one for the batch,
/// not one per row).
pub fn issued_fill(conn: &Connection, issued: &[IssuedVersion]) -> Result<()> {
    if issued.is_empty() {
        return Ok(());
    }
    if !conn.is_autocommit() {
        return issued_put(conn, issued);
    }
    conn.execute_batch("BEGIN IMMEDIATE").map_err(sql)?;
    match issued_put(conn, issued) {
        Ok(()) => conn.execute_batch("COMMIT").map_err(sql),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// Forgets what was recorded under `name` (certroll is about to write to it).
pub fn issued_forget(conn: &Connection, name: &str) -> Result<()> {
    conn.prepare_cached("DELETE FROM issued_versions WHERE name = ?1")
        .and_then(|mut s| s.execute([name]))
        .map(|_| ())
        .map_err(sql)
}

/// What is recorded under each of `names`, in the order asked.
pub fn issued_many(conn: &Connection, names: &[String]) -> Result<Vec<Option<IssuedVersion>>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT version, cert_der, created, issuer, kty, exportable FROM issued_versions WHERE name = ?1",
        )
        .map_err(sql)?;
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let row = stmt
            .query_row([name], |r| {
                let issuer: Option<String> = r.get(3)?;
                Ok(IssuedVersion {
                    name: name.clone(),
                    version: r.get(0)?,
                    cert_der: r.get(1)?,
                    created: from_ts(r.get(2)?),
                    issuer: issuer_of(issuer.as_deref()),
                    kty: r.get(4)?,
                    exportable: r.get(5)?,
                })
            })
            .optional()
            .map_err(sql)?;
        out.push(row);
    }
    Ok(out)
}

/// Records every version of `versions` (one name's, read just before certroll soft-deletes it
/// in a remote vault), replacing what was recorded of them before.
pub fn deleted_put(conn: &Connection, versions: &[VaultVersion]) -> Result<()> {
    let mut stmt = conn
        .prepare_cached(
            "INSERT OR REPLACE INTO deleted_versions
                 (name, version, cert_der, created, issuer, kty, exportable, enabled, nbf, exp)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )
        .map_err(sql)?;
    for v in versions {
        let issuer = issuer_text(v.issuer.as_ref());
        stmt.execute(params![
            v.name,
            v.version,
            v.cert_der,
            ts(v.created),
            issuer,
            v.kty,
            v.exportable,
            v.enabled,
            ts(v.nbf),
            ts(v.exp)
        ])
        .map_err(sql)?;
    }
    Ok(())
}

/// The versions recorded of deleted certificate `name` ([`deleted_put`]), oldest first.
pub fn deleted_of(conn: &Connection, name: &str) -> Result<Vec<VaultVersion>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT version, cert_der, created, issuer, kty, exportable, enabled, nbf, exp
             FROM deleted_versions WHERE name = ?1 ORDER BY created, version",
        )
        .map_err(sql)?;
    stmt.query_map([name], |r| {
        let issuer: Option<String> = r.get(3)?;
        Ok(VaultVersion {
            name: name.to_string(),
            version: r.get(0)?,
            cert_der: r.get(1)?,
            created: from_ts(r.get(2)?),
            issuer: issuer_of(issuer.as_deref()),
            kty: r.get(4)?,
            exportable: r.get(5)?,
            enabled: r.get(6)?,
            nbf: from_ts(r.get(7)?),
            exp: from_ts(r.get(8)?),
        })
    })
    .and_then(|rows| rows.collect())
    .map_err(sql)
}

/// Forgets the versions recorded of deleted certificate `name` (it was recovered or purged).
pub fn deleted_forget(conn: &Connection, name: &str) -> Result<()> {
    conn.prepare_cached("DELETE FROM deleted_versions WHERE name = ?1")
        .and_then(|mut s| s.execute([name]))
        .map(|_| ())
        .map_err(sql)
}

/// Records the certificates of `versions` (one name's, read just before certroll purges it in
/// a remote vault): DPS still names them by thumbprint in the enrollment slots, and the device
/// still holds one, after the vault has forgotten them.
pub fn purged_put(conn: &Connection, versions: &[VaultVersion]) -> Result<()> {
    let mut stmt = conn
        .prepare_cached(
            "INSERT OR REPLACE INTO purged_versions (name, version, cert_der) VALUES (?1, ?2, ?3)",
        )
        .map_err(sql)?;
    for v in versions {
        stmt.execute(params![v.name, v.version, v.cert_der])
            .map_err(sql)?;
    }
    Ok(())
}

/// Forgets the purged versions of `name` that are also recorded as deleted ([`deleted_put`]):
/// the purge recorded them did not happen, or the name was recovered, so they are in the vault
/// again. Versions an earlier purge took stay.
pub fn purged_unmark(conn: &Connection, name: &str) -> Result<()> {
    conn.prepare_cached(
        "DELETE FROM purged_versions WHERE name = ?1
             AND version IN (SELECT version FROM deleted_versions WHERE name = ?1)",
    )
    .and_then(|mut s| s.execute([name]))
    .map(|_| ())
    .map_err(sql)
}

/// The certificates (DER) recorded as purged under any of `names` ([`purged_put`]).
pub fn purged_of(conn: &Connection, names: &[String]) -> Result<Vec<Vec<u8>>> {
    all(
        conn,
        "SELECT p.cert_der FROM json_each(?1) j JOIN purged_versions p ON p.name = j.value",
        [json_list(names)],
        |r| r.get(0),
    )
}

/// The first of these devices (in the order given) whose installed version certroll purged
/// from the remote vault ([`purged_put`]), if any: the fleet record still names it, the vault
/// no longer has it.
pub fn purged_first_device(conn: &Connection, ids: &[String]) -> Result<Option<String>> {
    one(
        conn,
        "SELECT j.value FROM json_each(?1) j JOIN devices d ON d.id = j.value
         WHERE EXISTS (SELECT 1 FROM purged_versions p
                       WHERE p.name = d.cert_name AND p.version = d.installed_version)
         ORDER BY j.key LIMIT 1",
        [json_list(ids)],
        |r| r.get(0),
    )
}

/// The `issuer` column's text of a signing CA version: `NAME/VERSION` (vault names and Key Vault
/// versions hold no `/`).
pub(crate) fn issuer_text(issuer: Option<&(String, String)>) -> Option<String> {
    issuer.map(|(name, version)| format!("{name}/{version}"))
}

/// The signing CA version an `issuer` column holds ([`issuer_text`]); None for none.
fn issuer_of(text: Option<&str>) -> Option<(String, String)> {
    text.and_then(|i| i.split_once('/'))
        .map(|(name, version)| (name.to_string(), version.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issued(name: &str, version: &str) -> IssuedVersion {
        IssuedVersion {
            name: name.into(),
            version: version.into(),
            cert_der: vec![1, 2, 3],
            created: from_ts(1_700_000_000),
            issuer: Some(("ca-factory".into(), "abc".into())),
            kty: "EC".into(),
            exportable: true,
        }
    }

    #[test]
    fn the_recorded_version_of_a_name_is_replaced_read_back_and_forgotten() {
        let store = crate::store::Store::open_empty().unwrap();
        let conn = store.conn();
        issued_put(conn, &[issued("dev-a", "v1"), issued("dev-b", "v1")]).unwrap();
        issued_put(conn, &[issued("dev-a", "v2")]).unwrap();
        let names = ["dev-a", "dev-b", "dev-c"].map(String::from);
        let got = issued_many(conn, &names).unwrap();
        assert_eq!(got[0], Some(issued("dev-a", "v2")));
        assert_eq!(got[1], Some(issued("dev-b", "v1")));
        assert_eq!(got[2], None);
        issued_forget(conn, "dev-a").unwrap();
        assert_eq!(issued_many(conn, &names[..1]).unwrap(), vec![None]);
    }

    #[test]
    fn purged_versions_name_the_devices_still_holding_them_until_recovered() {
        let store = crate::store::Store::open_empty().unwrap();
        let conn = store.conn();
        let device = |id: &str, version: &str| crate::backend::types::DeviceRecord {
            id: id.into(),
            group: None,
            enrollment: Some(id.into()),
            cert_name: format!("dev-{id}"),
            installed_version: Some(version.into()),
        };
        for d in [device("a", "v2"), device("b", "v1")] {
            crate::store::queries::device_put(conn, &d).unwrap();
        }
        let version = |name: &str, v: &str| issued(name, v).with(true, from_ts(0), from_ts(1));
        let ids = ["b", "a"].map(String::from);
        // An earlier purge of dev-a took v1; the device holds v2, deleted, then purged.
        purged_put(conn, &[version("dev-a", "v1")]).unwrap();
        assert_eq!(purged_first_device(conn, &ids).unwrap(), None);
        deleted_put(conn, &[version("dev-a", "v2")]).unwrap();
        purged_put(conn, &[version("dev-a", "v2")]).unwrap();
        assert_eq!(purged_first_device(conn, &ids).unwrap(), Some("a".into()));
        let names = ["dev-a", "dev-b"].map(String::from);
        assert_eq!(purged_of(conn, &names).unwrap().len(), 2);
        // The purge did not happen after all: v2 is back, v1 stays purged.
        purged_unmark(conn, "dev-a").unwrap();
        assert_eq!(purged_first_device(conn, &ids).unwrap(), None);
        assert_eq!(purged_of(conn, &names).unwrap().len(), 1);
    }
}
