//! Typed reads and writes of the store's tables. Writers take a transaction (or any connection
//! inside one) so callers batch many rows per commit.

use super::StoreError;
use super::seal::StoreKey;
use crate::backend::types::*;
use rusqlite::{Connection, OptionalExtension, Row, params};
use time::OffsetDateTime;
use zeroize::Zeroizing;

type Result<T> = std::result::Result<T, StoreError>;

/// A SQLite error as a store error (the store adds its path).
pub(super) fn sql(source: rusqlite::Error) -> StoreError {
    StoreError::Sqlite {
        path: Default::default(),
        source,
    }
}

/// Runs a query and collects every row.
pub(super) fn all<T, P: rusqlite::Params>(
    conn: &Connection,
    query: &str,
    params: P,
    row: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>> {
    let mut stmt = conn.prepare_cached(query).map_err(sql)?;
    let rows = stmt.query_map(params, row).map_err(sql)?;
    rows.collect::<rusqlite::Result<_>>().map_err(sql)
}

/// Runs a query and reads its first row, if any.
pub(super) fn one<T, P: rusqlite::Params>(
    conn: &Connection,
    query: &str,
    params: P,
    row: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<Option<T>> {
    conn.prepare_cached(query)
        .and_then(|mut s| s.query_row(params, row).optional())
        .map_err(sql)
}

/// A time as stored: Unix seconds.
pub(super) fn ts(t: OffsetDateTime) -> i64 {
    t.unix_timestamp()
}

/// A stored time.
pub(crate) fn from_ts(secs: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(secs).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// The identity a vault key is sealed under.
pub(super) fn key_identity(name: &str, version: &str) -> String {
    format!("certroll/vault/{name}/{version}")
}

/// A fresh Key Vault-style version id: 32 lowercase hex characters.
pub fn new_version_id() -> Result<String> {
    let mut bytes = [0u8; 16];
    crate::pki::random_bytes(&mut bytes).map_err(|e| StoreError::Corrupt {
        path: Default::default(),
        message: e.to_string(),
    })?;
    Ok(crate::pki::hex_upper(&bytes).to_ascii_lowercase())
}

// ---------------------------------------------------------------- vault

const VERSION_COLS: &str =
    "name, version, cert_der, kty, exportable, enabled, nbf, exp, created, issuer_name, issuer_version";

/// A version read with the columns of [`VERSION_COLS`], in that order.
pub(super) fn version_row(r: &Row<'_>) -> rusqlite::Result<VaultVersion> {
    Ok(VaultVersion {
        name: r.get(0)?,
        version: r.get(1)?,
        cert_der: r.get(2)?,
        kty: r.get(3)?,
        exportable: r.get(4)?,
        enabled: r.get(5)?,
        nbf: from_ts(r.get(6)?),
        exp: from_ts(r.get(7)?),
        created: from_ts(r.get(8)?),
        issuer: issuer_at(r, 9)?,
    })
}

/// The signing CA's vault name and version from the columns at `at` and `at + 1`
/// (`issuer_name, issuer_version`); None unless both are set.
fn issuer_at(r: &Row<'_>, at: usize) -> rusqlite::Result<Option<(String, String)>> {
    Ok(
        match (
            r.get::<_, Option<String>>(at)?,
            r.get::<_, Option<String>>(at + 1)?,
        ) {
            (Some(name), Some(version)) => Some((name, version)),
            _ => None,
        },
    )
}

/// The newest version of a vault certificate.
pub fn vault_current(conn: &Connection, name: &str) -> Result<Option<VaultVersion>> {
    one(
        conn,
        &format!("SELECT {VERSION_COLS} FROM vault_versions WHERE name = ?1 ORDER BY seq DESC LIMIT 1"),
        [name],
        version_row,
    )
}

/// One version of a vault certificate.
pub fn vault_version(conn: &Connection, name: &str, version: &str) -> Result<Option<VaultVersion>> {
    one(
        conn,
        &format!("SELECT {VERSION_COLS} FROM vault_versions WHERE name = ?1 AND version = ?2"),
        [name, version],
        version_row,
    )
}

/// All versions of a vault certificate, oldest first.
pub fn vault_versions(conn: &Connection, name: &str) -> Result<Vec<VaultVersion>> {
    all(
        conn,
        &format!("SELECT {VERSION_COLS} FROM vault_versions WHERE name = ?1 ORDER BY seq"),
        [name],
        version_row,
    )
}

/// The newest version of each of several certificates (absent names are left out).
pub fn vault_current_many(conn: &Connection, names: &[String]) -> Result<Vec<Option<VaultVersion>>> {
    one_at_positions(
        conn,
        &format!(
            "SELECT {}, j.key FROM json_each(?1) j JOIN vault_versions v
               ON v.seq = (SELECT MAX(seq) FROM vault_versions WHERE name = j.value)",
            qualified("v", VERSION_COLS)
        ),
        json_list(names),
        names.len(),
        version_row,
    )
}

/// A JSON array of strings, for `json_each` look-ups of many keys in one statement.
pub(super) fn json_list(items: &[String]) -> String {
    serde_json::to_string(items).unwrap_or_else(|_| "[]".into())
}

/// `cols` (`a, b, c`) qualified with a table alias (`t.a, t.b, t.c`): look-ups driven by
/// `json_each` join a table whose column names (`id`, `key`, `value`) may clash with its own.
fn qualified(alias: &str, cols: &str) -> String {
    cols.split(", ")
        .map(|c| format!("{alias}.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs a look-up of every item of a list at once: `query` walks the JSON array bound as ?1 with
/// `json_each(?1) j` and ends its columns with `j.key`, the item's position. Each row found
/// lands at its item's position (`len` items), so the caller's order comes back without a hash
/// map; `row` reads the columns before the key. Several rows for one item are kept in the order
/// the query yields them.
fn at_positions<T>(
    conn: &Connection,
    query: &str,
    list: String,
    len: usize,
    mut row: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<Vec<T>>> {
    let mut stmt = conn.prepare_cached(query).map_err(sql)?;
    let key = stmt.column_count() - 1;
    let mut out: Vec<Vec<T>> = (0..len).map(|_| Vec::new()).collect();
    let mut rows = stmt.query([list]).map_err(sql)?;
    while let Some(r) = rows.next().map_err(sql)? {
        let at = usize::try_from(r.get::<_, i64>(key).map_err(sql)?).unwrap_or(usize::MAX);
        let item = row(r).map_err(sql)?;
        if let Some(slot) = out.get_mut(at) {
            slot.push(item);
        }
    }
    Ok(out)
}

/// [`at_positions`] for look-ups that find at most one row per item.
fn one_at_positions<T>(
    conn: &Connection,
    query: &str,
    list: String,
    len: usize,
    row: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<Option<T>>> {
    Ok(at_positions(conn, query, list, len, row)?
        .into_iter()
        .map(|mut found| found.pop())
        .collect())
}

/// Stores a new version (creating the certificate name if new); returns its version id.
pub fn vault_insert(
    conn: &Connection,
    key: &StoreKey,
    now: OffsetDateTime,
    new: &NewVersion<'_>,
) -> Result<String> {
    let policy_hash = policy_put(conn, new.policy_json)?;
    vault_insert_with_policy(conn, key, now, new, &policy_hash)
}

/// Stores a policy document once; returns its hash.
pub fn policy_put(conn: &Connection, json: &str) -> Result<String> {
    let policy_hash = crate::pki::sha256_thumbprint(json.as_bytes());
    conn.prepare_cached("INSERT OR IGNORE INTO vault_policies (hash, json) VALUES (?1, ?2)")
        .and_then(|mut s| s.execute(params![policy_hash, json]))
        .map_err(sql)?;
    Ok(policy_hash)
}

/// [`vault_insert`] for a policy already stored with [`policy_put`] (a batch stores each
/// distinct policy once).
pub fn vault_insert_with_policy(
    conn: &Connection,
    key: &StoreKey,
    now: OffsetDateTime,
    new: &NewVersion<'_>,
    policy_hash: &str,
) -> Result<String> {
    let parsed;
    let info = match new.facts {
        Some(facts) => facts,
        None => {
            parsed = crate::pki::CertFacts::from_der(new.cert_der).map_err(|e| StoreError::Corrupt {
                path: Default::default(),
                message: format!("refusing to store `{}`: {e}", new.name),
            })?;
            &parsed
        }
    };
    // A key once non-exportable (or HSM) stays so in every later version that reuses it; a
    // key made for this version was in none (a fleet's roll skips a look-up per device).
    let inherited = if new.new_key {
        None
    } else {
        super::queries_vault::inherited_key_protection(conn, new.name, new.cert_der, new.exportable, new.kty)?
    };
    let (kty, exportable) = match &inherited {
        Some(old_kty) if old_kty.ends_with("-HSM") && !new.kty.ends_with("-HSM") => {
            (format!("{}-HSM", new.kty), false)
        }
        Some(_) => (new.kty.to_string(), false),
        None => (new.kty.to_string(), new.exportable),
    };
    let version = new_version_id()?;
    let sealed = key.seal(&key_identity(new.name, &version), new.key_pkcs8)?;
    // The certificate row changes only with its policy: a roll of a fleet leaves it alone.
    conn.prepare_cached(
        "INSERT INTO vault_certificates (name, policy, created, updated) VALUES (?1, ?2, ?3, ?3)
         ON CONFLICT(name) DO UPDATE SET policy = excluded.policy, updated = excluded.updated
         WHERE policy IS NOT excluded.policy",
    )
    .and_then(|mut s| s.execute(params![new.name, policy_hash, ts(now)]))
    .map_err(sql)?;
    conn.prepare_cached(
        "INSERT INTO vault_versions
           (name, version, cert_der, key_sealed, kty, exportable, thumbprint, serial, enabled, nbf, exp, created, updated,
            issuer_name, issuer_version)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 1, ?9, ?10, ?11, ?11, ?12, ?13)",
    )
    .and_then(|mut s| {
        s.execute(params![
            new.name,
            version,
            new.cert_der,
            sealed,
            kty,
            exportable,
            info.thumbprint,
            info.serial,
            ts(info.not_before),
            ts(info.not_after),
            ts(now),
            new.issuer.map(|i| i.0),
            new.issuer.map(|i| i.1)
        ])
    })
    .map_err(sql)?;
    Ok(version)
}

/// The private key of a version (PKCS#8 DER). Callers enforce exportability.
pub fn vault_private_key(
    conn: &Connection,
    key: &StoreKey,
    name: &str,
    version: &str,
) -> Result<Zeroizing<Vec<u8>>> {
    let sealed: Vec<u8> = conn
        .prepare_cached("SELECT key_sealed FROM vault_versions WHERE name = ?1 AND version = ?2")
        .and_then(|mut s| s.query_row([name, version], |r| r.get(0)))
        .map_err(sql)?;
    Ok(key.open(&key_identity(name, version), &sealed)?)
}

/// The policy JSON recorded for a certificate name.
pub fn vault_policy(conn: &Connection, name: &str) -> Result<Option<String>> {
    one(
        conn,
        "SELECT p.json FROM vault_certificates c JOIN vault_policies p ON p.hash = c.policy WHERE c.name = ?1",
        [name],
        |r| r.get(0),
    )
}

// ---------------------------------------------------------------- enrollment service: CAs

fn ca_row(r: &Row<'_>) -> rusqlite::Result<ServiceCa> {
    Ok(ServiceCa {
        name: r.get(0)?,
        cert_der: r.get(1)?,
        thumbprint: r.get(2)?,
        verified: r.get(3)?,
    })
}

/// A CA certificate of the enrollment service.
pub fn ca_get(conn: &Connection, name: &str) -> Result<Option<ServiceCa>> {
    one(
        conn,
        "SELECT name, cert_der, thumbprint, verified FROM service_cas WHERE name = ?1",
        [name],
        ca_row,
    )
}

/// All CA certificates of the enrollment service.
pub fn ca_list(conn: &Connection) -> Result<Vec<ServiceCa>> {
    all(
        conn,
        "SELECT name, cert_der, thumbprint, verified FROM service_cas ORDER BY name",
        [],
        ca_row,
    )
}

/// Uploads (or replaces) a CA certificate; a replaced certificate must be verified again.
pub fn ca_put(conn: &Connection, name: &str, der: &[u8], now: OffsetDateTime) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO service_cas (name, cert_der, thumbprint, verified, created, updated)
         VALUES (?1, ?2, ?3, 0, ?4, ?4)
         ON CONFLICT(name) DO UPDATE SET cert_der = excluded.cert_der, thumbprint = excluded.thumbprint,
           verified = 0, nonce = NULL, updated = excluded.updated",
    )
    .and_then(|mut s| s.execute(params![name, der, crate::pki::sha1_thumbprint(der), ts(now)]))
    .map_err(sql)?;
    Ok(())
}

/// Records the proof-of-possession nonce handed out for a CA.
pub fn ca_set_nonce(conn: &Connection, name: &str, nonce: &str, now: OffsetDateTime) -> Result<()> {
    conn.execute(
        "UPDATE service_cas SET nonce = ?2, updated = ?3 WHERE name = ?1",
        params![name, nonce, ts(now)],
    )
    .map_err(sql)?;
    Ok(())
}

/// The nonce handed out for a CA, if any.
pub fn ca_nonce(conn: &Connection, name: &str) -> Result<Option<String>> {
    conn.query_row("SELECT nonce FROM service_cas WHERE name = ?1", [name], |r| {
        r.get(0)
    })
    .optional()
    .map(Option::flatten)
    .map_err(sql)
}

/// Marks a CA verified and spends its nonce.
pub fn ca_set_verified(conn: &Connection, name: &str, now: OffsetDateTime) -> Result<()> {
    conn.execute(
        "UPDATE service_cas SET verified = 1, nonce = NULL, updated = ?2 WHERE name = ?1",
        params![name, ts(now)],
    )
    .map_err(sql)?;
    Ok(())
}

// ---------------------------------------------------------------- enrollment groups

fn slot(der: Option<Vec<u8>>, reference: Option<String>) -> Option<Slot> {
    der.map(|cert_der| Slot {
        cert_der,
        ca_reference: reference,
    })
}

fn group_row(r: &Row<'_>) -> rusqlite::Result<EnrollmentGroup> {
    Ok(EnrollmentGroup {
        name: r.get(0)?,
        primary: slot(r.get(1)?, r.get(2)?),
        secondary: slot(r.get(3)?, r.get(4)?),
        status: Status::parse(&r.get::<_, String>(5)?),
        reprovision: r.get(6)?,
        hub: r.get(7)?,
        foreign: Vec::new(),
        take_back: false,
    })
}

const GROUP_COLS: &str =
    "name, primary_der, primary_ca_ref, secondary_der, secondary_ca_ref, status, reprovision, hub";

/// One enrollment group.
pub fn group_get(conn: &Connection, name: &str) -> Result<Option<EnrollmentGroup>> {
    one(
        conn,
        &format!("SELECT {GROUP_COLS} FROM enrollment_groups WHERE name = ?1"),
        [name],
        group_row,
    )
}

/// All enrollment groups.
pub fn group_list(conn: &Connection) -> Result<Vec<EnrollmentGroup>> {
    all(
        conn,
        &format!("SELECT {GROUP_COLS} FROM enrollment_groups ORDER BY name"),
        [],
        group_row,
    )
}

/// Creates or replaces an enrollment group.
pub fn group_put(conn: &Connection, g: &EnrollmentGroup, now: OffsetDateTime) -> Result<()> {
    let (pd, pr) = g
        .primary
        .as_ref()
        .map(|s| (Some(&s.cert_der), s.ca_reference.as_ref()))
        .unwrap_or_default();
    let (sd, sr) = g
        .secondary
        .as_ref()
        .map(|s| (Some(&s.cert_der), s.ca_reference.as_ref()))
        .unwrap_or_default();
    conn.prepare_cached(
        "INSERT INTO enrollment_groups
           (name, primary_der, primary_ca_ref, secondary_der, secondary_ca_ref, status, reprovision, hub, created, updated)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)
         ON CONFLICT(name) DO UPDATE SET primary_der = excluded.primary_der, primary_ca_ref = excluded.primary_ca_ref,
           secondary_der = excluded.secondary_der, secondary_ca_ref = excluded.secondary_ca_ref,
           status = excluded.status, reprovision = excluded.reprovision, hub = excluded.hub, updated = excluded.updated",
    )
    .and_then(|mut s| {
        s.execute(params![g.name, pd, pr, sd, sr, g.status.as_str(), g.reprovision, g.hub, ts(now)])
    })
    .map_err(sql)?;
    Ok(())
}

// ---------------------------------------------------------------- individual enrollments

fn individual_row(r: &Row<'_>) -> rusqlite::Result<IndividualEnrollment> {
    Ok(IndividualEnrollment {
        registration_id: r.get(0)?,
        primary: r.get(1)?,
        secondary: r.get(2)?,
        status: Status::parse(&r.get::<_, String>(3)?),
        reprovision: r.get(4)?,
        hub: r.get(5)?,
        foreign: Vec::new(),
        take_back: false,
    })
}

const INDIVIDUAL_COLS: &str = "registration_id, primary_der, secondary_der, status, reprovision, hub";

/// One individual enrollment.
pub fn individual_get(conn: &Connection, id: &str) -> Result<Option<IndividualEnrollment>> {
    one(
        conn,
        &format!("SELECT {INDIVIDUAL_COLS} FROM individual_enrollments WHERE registration_id = ?1"),
        [id],
        individual_row,
    )
}

/// All individual enrollments.
pub fn individual_list(conn: &Connection) -> Result<Vec<IndividualEnrollment>> {
    all(
        conn,
        &format!("SELECT {INDIVIDUAL_COLS} FROM individual_enrollments ORDER BY registration_id"),
        [],
        individual_row,
    )
}

/// Several individual enrollments (absent ids are left out).
pub fn individual_get_many(conn: &Connection, ids: &[String]) -> Result<Vec<Option<IndividualEnrollment>>> {
    one_at_positions(
        conn,
        &format!(
            "SELECT {}, j.key FROM json_each(?1) j
             JOIN individual_enrollments e ON e.registration_id = j.value",
            qualified("e", INDIVIDUAL_COLS)
        ),
        json_list(ids),
        ids.len(),
        individual_row,
    )
}

/// Whether any individual enrollment is disabled (most stores have none, which spares a
/// look-up per registration).
pub fn any_disabled_enrollment(conn: &Connection) -> Result<bool> {
    conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM individual_enrollments WHERE status = 'disabled')")
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .map_err(sql)
}

/// Disabled individual enrollments holding a certificate with this thumbprint in either slot.
pub fn disabled_enrollments_with(conn: &Connection, thumbprint: &str) -> Result<Vec<String>> {
    all(
        conn,
        // One search of each slot's partial index (schema v17); with OR, SQLite scanned one of
        // them whole.
        "SELECT registration_id FROM individual_enrollments WHERE status = 'disabled' AND primary_thumbprint = ?1
         UNION
         SELECT registration_id FROM individual_enrollments WHERE status = 'disabled' AND secondary_thumbprint = ?1",
        [thumbprint],
        |r| r.get(0),
    )
}

/// Creates or replaces an individual enrollment with a fresh etag, keeping the DPS fields a
/// write through serve's DPS API gave it ([`super::queries_dps::individual_put_wire`]).
pub fn individual_put(conn: &Connection, e: &IndividualEnrollment, now: OffsetDateTime) -> Result<()> {
    super::queries_dps::individual_upsert(conn, e, None, now)
}

// ---------------------------------------------------------------- registrations

/// The columns [`registration_row`] reads.
pub(super) const REGISTRATION_COLS: &str = "registration_id, status, substatus, hub, error, cert_thumbprint, \
     error_code, enrollment_kind, enrollment_name, created, updated, etag, device_id";

/// The registration state of a device.
pub fn registration_get(conn: &Connection, id: &str) -> Result<Option<RegistrationState>> {
    one(
        conn,
        &format!("SELECT {REGISTRATION_COLS} FROM registrations WHERE registration_id = ?1"),
        [id],
        registration_row,
    )
}

/// The registration states of several devices (absent ids are left out).
pub fn registration_get_many(conn: &Connection, ids: &[String]) -> Result<Vec<Option<RegistrationState>>> {
    one_at_positions(
        conn,
        &format!(
            "SELECT {}, j.key FROM json_each(?1) j JOIN registrations r ON r.registration_id = j.value",
            qualified("r", REGISTRATION_COLS)
        ),
        json_list(ids),
        ids.len(),
        registration_row,
    )
}

/// Reads a row of [`REGISTRATION_COLS`].
pub(super) fn registration_row(r: &Row<'_>) -> rusqlite::Result<RegistrationState> {
    Ok(RegistrationState {
        registration_id: r.get(0)?,
        status: r.get(1)?,
        substatus: r.get(2)?,
        hub: r.get(3)?,
        error: r.get(4)?,
        cert_thumbprint: r.get(5)?,
        error_code: r.get(6)?,
        enrollment_kind: r.get(7)?,
        enrollment_name: r.get(8)?,
        created: r.get::<_, Option<i64>>(9)?.map(from_ts),
        updated: Some(from_ts(r.get(10)?)),
        etag: r.get(11)?,
        device_id: r.get(12)?,
    })
}

/// Records a registration attempt. The enrollment is kept from the previous record when the
/// attempt names none (a refused attempt leaves the last assignment visible); `created` is kept.
/// The recorded decision inputs are cleared: see [`registration_put_decided`].
pub fn registration_put(
    conn: &Connection,
    state: &RegistrationState,
    enrollment_kind: Option<&str>,
    enrollment_name: Option<&str>,
    cert_thumbprint: &str,
    now: OffsetDateTime,
) -> Result<()> {
    registration_put_decided(
        conn,
        state,
        enrollment_kind,
        enrollment_name,
        cert_thumbprint,
        now,
        None,
    )
}

/// [`registration_put`], also recording the fingerprint of the decision's inputs and the times
/// between which it holds (Unix seconds, both included); None clears them, so only an
/// assignment made from known inputs is ever reused.
pub fn registration_put_decided(
    conn: &Connection,
    state: &RegistrationState,
    enrollment_kind: Option<&str>,
    enrollment_name: Option<&str>,
    cert_thumbprint: &str,
    now: OffsetDateTime,
    decided: Option<(&[u8], i64, i64)>,
) -> Result<()> {
    let p = params![
        state.registration_id,
        enrollment_kind,
        enrollment_name,
        state.status,
        state.substatus,
        state.hub,
        cert_thumbprint,
        state.error,
        state.error_code,
        ts(now),
        decided.map(|d| d.0),
        decided.map(|d| d.1),
        decided.map(|d| d.2),
        state.device_id,
    ];
    // A registration that stays with its enrollment (every one a roll re-provisions) is updated
    // in place, leaving the by-enrollment index alone; the etag is set here, so its trigger does
    // not write the row again.
    let updated = conn
        .prepare_cached(
            "UPDATE registrations SET
               status = ?4, substatus = ?5, hub = ?6, cert_thumbprint = ?7, error = ?8, error_code = ?9,
               updated = ?10, decision_inputs = ?11, decision_from = ?12, decision_until = ?13,
               device_id = ?14, etag = lower(hex(randomblob(8)))
             WHERE registration_id = ?1 AND enrollment_kind IS coalesce(?2, enrollment_kind)
               AND enrollment_name IS coalesce(?3, enrollment_name)",
        )
        .and_then(|mut s| s.execute(p))
        .map_err(sql)?;
    if updated > 0 {
        return Ok(());
    }
    conn.prepare_cached(
        "INSERT INTO registrations
           (registration_id, enrollment_kind, enrollment_name, status, substatus, hub, cert_thumbprint, error,
            error_code, updated, created, decision_inputs, decision_from, decision_until, device_id, etag)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10, ?11, ?12, ?13, ?14, lower(hex(randomblob(8))))
         ON CONFLICT(registration_id) DO UPDATE SET
           enrollment_kind = coalesce(excluded.enrollment_kind, enrollment_kind),
           enrollment_name = coalesce(excluded.enrollment_name, enrollment_name),
           status = excluded.status, substatus = excluded.substatus, hub = excluded.hub,
           cert_thumbprint = excluded.cert_thumbprint, error = excluded.error,
           error_code = excluded.error_code, updated = excluded.updated,
           decision_inputs = excluded.decision_inputs, decision_from = excluded.decision_from,
           decision_until = excluded.decision_until, device_id = excluded.device_id, etag = excluded.etag",
    )
    .and_then(|mut s| s.execute(p))
    .map_err(sql)?;
    Ok(())
}

/// A registration's recorded assignment with the fingerprint of the inputs it was decided from.
#[derive(Debug, Clone)]
pub struct RecordedDecision {
    /// The fingerprint ([`crate::backend::decision_inputs::fingerprint`]).
    pub inputs: Vec<u8>,
    /// From when it holds (Unix seconds).
    pub from: i64,
    /// Until when it holds (Unix seconds, included).
    pub until: i64,
    /// `group` or `individual`.
    pub enrollment_kind: String,
    /// The enrollment's name.
    pub enrollment_name: String,
    /// The hub assigned.
    pub hub: String,
}

/// The recorded decisions of several devices, in the order asked: None where the device has no
/// registration, its last attempt was refused, or it was decided before inputs were recorded.
pub fn registration_decisions_many(
    conn: &Connection,
    ids: &[String],
) -> Result<Vec<Option<RecordedDecision>>> {
    let found = one_at_positions(
        conn,
        "SELECT r.decision_inputs, r.decision_from, r.decision_until, r.enrollment_kind,
                r.enrollment_name, r.hub, j.key
         FROM json_each(?1) j JOIN registrations r ON r.registration_id = j.value
         WHERE r.status = 'assigned' AND r.decision_inputs IS NOT NULL",
        json_list(ids),
        ids.len(),
        |r| {
            Ok(RecordedDecision {
                inputs: r.get(0)?,
                from: r.get(1)?,
                until: r.get(2)?,
                enrollment_kind: r.get::<_, Option<String>>(3)?.unwrap_or_default(),
                enrollment_name: r.get::<_, Option<String>>(4)?.unwrap_or_default(),
                hub: r.get::<_, Option<String>>(5)?.unwrap_or_default(),
            })
        },
    )?;
    Ok(found)
}

/// What a no-op `reprovision` compares for one device, read with every other device of the
/// batch in one statement: the certificate the device holds, its recorded assignment, its
/// identity in the hub of that assignment and its individual enrollment.
#[derive(Debug, Clone)]
pub struct SettleRow {
    /// The installed certificate (DER).
    pub cert_der: Vec<u8>,
    /// Its notBefore and notAfter, as the vault recorded them (Unix seconds).
    pub nbf: i64,
    /// See `nbf`.
    pub exp: i64,
    /// The vault name and version that signed it.
    pub issuer: Option<(String, String)>,
    /// The registration's substatus.
    pub substatus: Option<String>,
    /// The registration's certificate thumbprint (SHA-1, uppercase hex).
    pub cert_thumbprint: Option<String>,
    /// The recorded assignment (its `hub` is the registration's).
    pub decision: RecordedDecision,
    /// The identity in that hub: status and the two thumbprints (None when it has none).
    pub identity: Option<(Status, Option<String>, Option<String>)>,
    /// The device's individual enrollment.
    pub individual: Option<IndividualEnrollment>,
}

/// [`SettleRow`]s of several devices, in the order asked: None where the device holds no
/// certificate the vault knows, or has no assignment decided with recorded inputs.
pub fn settle_rows_many(conn: &Connection, ids: &[String]) -> Result<Vec<Option<SettleRow>>> {
    one_at_positions(
        conn,
        "SELECT v.cert_der, v.nbf, v.exp, v.issuer_name, v.issuer_version,
                r.substatus, r.cert_thumbprint, r.decision_inputs, r.decision_from,
                r.decision_until, r.enrollment_kind, r.enrollment_name, r.hub,
                h.status, h.primary_thumbprint, h.secondary_thumbprint,
                e.registration_id, e.primary_der, e.secondary_der, e.status, e.reprovision, e.hub,
                j.key
         FROM json_each(?1) j
         JOIN devices d ON d.id = j.value
         JOIN vault_versions v ON v.name = d.cert_name AND v.version = d.installed_version
         JOIN registrations r ON r.registration_id = j.value
         LEFT JOIN hub_devices h ON h.device_id = j.value AND h.hub = r.hub
         LEFT JOIN individual_enrollments e ON e.registration_id = j.value
         WHERE r.status = 'assigned' AND r.decision_inputs IS NOT NULL AND r.hub IS NOT NULL",
        json_list(ids),
        ids.len(),
        |r| {
            Ok(SettleRow {
                cert_der: r.get(0)?,
                nbf: r.get(1)?,
                exp: r.get(2)?,
                issuer: issuer_at(r, 3)?,
                substatus: r.get(5)?,
                cert_thumbprint: r.get(6)?,
                decision: RecordedDecision {
                    inputs: r.get(7)?,
                    from: r.get(8)?,
                    until: r.get(9)?,
                    enrollment_kind: r.get::<_, Option<String>>(10)?.unwrap_or_default(),
                    enrollment_name: r.get::<_, Option<String>>(11)?.unwrap_or_default(),
                    hub: r.get(12)?,
                },
                identity: match r.get::<_, Option<String>>(13)? {
                    Some(status) => Some((Status::parse(&status), r.get(14)?, r.get(15)?)),
                    None => None,
                },
                individual: match r.get::<_, Option<String>>(16)? {
                    Some(registration_id) => Some(IndividualEnrollment {
                        registration_id,
                        primary: r.get(17)?,
                        secondary: r.get(18)?,
                        status: Status::parse(&r.get::<_, String>(19)?),
                        reprovision: r.get(20)?,
                        hub: r.get(21)?,
                        foreign: Vec::new(),
                        take_back: false,
                    }),
                    None => None,
                },
            })
        },
    )
}

// ---------------------------------------------------------------- hub registry

fn hub_row(r: &Row<'_>) -> rusqlite::Result<HubIdentity> {
    Ok(HubIdentity {
        hub: r.get(0)?,
        device_id: r.get(1)?,
        auth_type: r.get(2)?,
        primary_thumbprint: r.get(3)?,
        secondary_thumbprint: r.get(4)?,
        status: Status::parse(&r.get::<_, String>(5)?),
    })
}

/// A device identity in a hub.
pub fn hub_get(conn: &Connection, hub: &str, device_id: &str) -> Result<Option<HubIdentity>> {
    one(
        conn,
        "SELECT hub, device_id, auth_type, primary_thumbprint, secondary_thumbprint, status
         FROM hub_devices WHERE hub = ?1 AND device_id = ?2",
        [hub, device_id],
        hub_row,
    )
}

/// The identities of several devices, in any hub (absent ids are left out).
pub fn hub_get_many(conn: &Connection, device_ids: &[String]) -> Result<Vec<HubIdentity>> {
    all(
        conn,
        "SELECT hub, device_id, auth_type, primary_thumbprint, secondary_thumbprint, status
             FROM hub_devices WHERE device_id IN (SELECT value FROM json_each(?1))",
        [json_list(device_ids)],
        hub_row,
    )
}

/// The identities of several devices, each in the hub given with it (`(hub, device id)`), in
/// the order asked.
pub fn hub_get_pairs(conn: &Connection, wanted: &[(String, String)]) -> Result<Vec<Option<HubIdentity>>> {
    one_at_positions(
        conn,
        "SELECT h.hub, h.device_id, h.auth_type, h.primary_thumbprint, h.secondary_thumbprint, h.status, j.key
         FROM json_each(?1) j JOIN hub_devices h ON h.device_id = j.value ->> 1 AND h.hub = j.value ->> 0",
        serde_json::to_string(wanted).unwrap_or_else(|_| "[]".into()),
        wanted.len(),
        hub_row,
    )
}

/// The identity of each device in the hub its last successful registration assigned it to (a
/// later refused attempt keeps that hub), in the order asked.
pub fn hub_get_assigned(conn: &Connection, ids: &[String]) -> Result<Vec<Option<HubIdentity>>> {
    one_at_positions(
        conn,
        "SELECT h.hub, h.device_id, h.auth_type, h.primary_thumbprint, h.secondary_thumbprint, h.status, j.key
         FROM json_each(?1) j
         JOIN registrations r ON r.registration_id = j.value
         JOIN hub_devices h ON h.device_id = j.value AND h.hub = r.hub",
        json_list(ids),
        ids.len(),
        hub_row,
    )
}

/// Creates or updates a device identity; `reset_twin` puts the twin back to its initial state.
/// The IoT Hub members certroll does not model (schema v18) are left as they are.
pub fn hub_put(conn: &Connection, d: &HubIdentity, reset_twin: bool, now: OffsetDateTime) -> Result<()> {
    hub_upsert(conn, d, reset_twin, None, now)
}

/// The one write of a device identity, for [`hub_put`] and serve's
/// [`hub_put_wire`](super::queries_dps::hub_put_wire): `extra` None keeps the IoT Hub members the
/// row holds (a write that knows none of them), `Some` sets them (JSON text; `Some(None)`: IoT
/// Hub's defaults).
pub(super) fn hub_upsert(
    conn: &Connection,
    d: &HubIdentity,
    reset_twin: bool,
    extra: Option<Option<&str>>,
    now: OffsetDateTime,
) -> Result<()> {
    let p = params![
        d.hub,
        d.device_id,
        d.auth_type,
        d.primary_thumbprint,
        d.secondary_thumbprint,
        d.status.as_str(),
        ts(now),
        extra.flatten(),
        reset_twin,
        extra.is_some(),
    ];
    // An identity that exists (every one a roll touches) is updated in place: one look-up
    // instead of an insert attempt that conflicts and then updates.
    let updated = conn
        .prepare_cached(
            "UPDATE hub_devices SET auth_type = ?3, primary_thumbprint = ?4, secondary_thumbprint = ?5,
               status = ?6, updated = ?7, twin = CASE WHEN ?9 THEN '{}' ELSE twin END,
               hub_extra = CASE WHEN ?10 THEN ?8 ELSE hub_extra END,
               etag = lower(hex(randomblob(8)))
             WHERE device_id = ?2 AND hub = ?1",
        )
        .and_then(|mut s| s.execute(p))
        .map_err(sql)?;
    if updated == 0 {
        // A new identity starts with the initial twin whatever `reset_twin` says.
        conn.prepare_cached(
            "INSERT INTO hub_devices (hub, device_id, auth_type, primary_thumbprint, secondary_thumbprint, status,
               created, updated, hub_extra, etag)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8, lower(hex(randomblob(8))))",
        )
        .and_then(|mut s| s.execute(&p[..8]))
        .map_err(sql)?;
    }
    Ok(())
}

// ---------------------------------------------------------------- devices

fn device_row(r: &Row<'_>) -> rusqlite::Result<DeviceRecord> {
    Ok(DeviceRecord {
        id: r.get(0)?,
        group: r.get(1)?,
        enrollment: r.get(2)?,
        cert_name: r.get(3)?,
        installed_version: r.get(4)?,
    })
}

/// One device.
pub fn device_get(conn: &Connection, id: &str) -> Result<Option<DeviceRecord>> {
    one(
        conn,
        "SELECT id, group_name, enrollment, cert_name, installed_version FROM devices WHERE id = ?1",
        [id],
        device_row,
    )
}

/// Several devices (absent ids are left out).
pub fn device_get_many(conn: &Connection, ids: &[String]) -> Result<Vec<Option<DeviceRecord>>> {
    one_at_positions(
        conn,
        "SELECT d.id, d.group_name, d.enrollment, d.cert_name, d.installed_version, j.key
         FROM json_each(?1) j JOIN devices d ON d.id = j.value",
        json_list(ids),
        ids.len(),
        device_row,
    )
}

/// The first of these devices (in the order given) with no installed version, if any.
pub fn device_first_unissued(conn: &Connection, ids: &[String]) -> Result<Option<String>> {
    one(
        conn,
        "SELECT j.value FROM json_each(?1) j LEFT JOIN devices d ON d.id = j.value
         WHERE d.installed_version IS NULL ORDER BY j.key LIMIT 1",
        [json_list(ids)],
        |r| r.get(0),
    )
}

/// The first of these devices (in the order given) that has a version installed while the vault
/// holds no version of its certificate (purged), if any. A soft-deleted certificate's versions
/// are not in `vault_versions` either: callers name those first.
pub fn device_first_purged(conn: &Connection, ids: &[String]) -> Result<Option<String>> {
    one(
        conn,
        "SELECT j.value FROM json_each(?1) j JOIN devices d ON d.id = j.value
         WHERE d.installed_version IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM vault_versions v WHERE v.name = d.cert_name)
         ORDER BY j.key LIMIT 1",
        [json_list(ids)],
        |r| r.get(0),
    )
}

/// Devices in id order, optionally of one group, in pages (`after` = last id of the previous page).
pub fn device_page(
    conn: &Connection,
    group: Option<&str>,
    after: &str,
    limit: usize,
) -> Result<Vec<DeviceRecord>> {
    all(
        conn,
        "SELECT id, group_name, enrollment, cert_name, installed_version FROM devices
             WHERE (?1 IS NULL OR group_name = ?1) AND id > ?2 ORDER BY id LIMIT ?3",
        params![group, after, limit as i64],
        device_row,
    )
}

/// Creates or updates a device and the version installed on it.
pub fn device_put(conn: &Connection, d: &DeviceRecord) -> Result<()> {
    // A roll changes only the installed version: set it in place, leaving the group index alone.
    let updated = conn
        .prepare_cached(
            "UPDATE devices SET installed_version = ?5
             WHERE id = ?1 AND group_name IS ?2 AND enrollment IS ?3 AND cert_name = ?4",
        )
        .and_then(|mut s| {
            s.execute(params![
                d.id,
                d.group,
                d.enrollment,
                d.cert_name,
                d.installed_version
            ])
        })
        .map_err(sql)?;
    if updated == 0 {
        conn.prepare_cached(
            "INSERT INTO devices (id, group_name, enrollment, cert_name, installed_version) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(id) DO UPDATE SET group_name = excluded.group_name, enrollment = excluded.enrollment,
               cert_name = excluded.cert_name, installed_version = excluded.installed_version",
        )
        .and_then(|mut s| s.execute(params![d.id, d.group, d.enrollment, d.cert_name, d.installed_version]))
        .map_err(sql)?;
    }
    Ok(())
}

// ---------------------------------------------------------------- vault attributes, hub, CRL

/// Enables or disables a vault version.
pub fn vault_set_enabled(
    conn: &Connection,
    name: &str,
    version: &str,
    enabled: bool,
    now: OffsetDateTime,
) -> Result<()> {
    conn.execute(
        "UPDATE vault_versions SET enabled = ?3, updated = ?4 WHERE name = ?1 AND version = ?2",
        params![name, version, enabled, ts(now)],
    )
    .map_err(sql)?;
    Ok(())
}

/// Removes a device identity from a hub.
pub fn hub_delete(conn: &Connection, hub: &str, device_id: &str) -> Result<()> {
    conn.execute(
        "DELETE FROM hub_devices WHERE hub = ?1 AND device_id = ?2",
        [hub, device_id],
    )
    .map_err(sql)?;
    Ok(())
}

/// Lists a serial on the CRL of the CA version that signed it; false if it was already there.
pub fn crl_add(
    conn: &Connection,
    issuer: &str,
    issuer_version: &str,
    serial: &str,
    reason: &str,
    now: OffsetDateTime,
) -> Result<bool> {
    let added = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO crl_entries (issuer_name, issuer_version, serial, reason, revoked_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .and_then(|mut s| s.execute(params![issuer, issuer_version, serial, reason, ts(now)]))
        .map_err(sql)?
        > 0;
    Ok(added)
}

/// The number of an issuer's last CRL (0 = none issued yet) and the certificates revoked by
/// one of its versions.
pub fn crl_get(conn: &Connection, issuer: &str, version: &str) -> Result<(u64, Vec<Revocation>)> {
    let number: i64 = conn
        .query_row(
            "SELECT number FROM crl_numbers WHERE issuer_name = ?1",
            [issuer],
            |r| r.get(0),
        )
        .optional()
        .map_err(sql)?
        .unwrap_or(0);
    let entries = all(
        conn,
        "SELECT serial, reason, revoked_at FROM crl_entries
         WHERE issuer_name = ?1 AND (issuer_version = ?2 OR issuer_version IS NULL)
         ORDER BY revoked_at, serial",
        [issuer, version],
        |r| {
            Ok(Revocation {
                serial: r.get(0)?,
                reason: r.get(1)?,
                revoked_at: from_ts(r.get(2)?),
            })
        },
    )?;
    Ok((number as u64, entries))
}

/// Whether a serial is listed for a CA version (or, from before versions were kept, for the CA).
pub fn crl_contains(conn: &Connection, issuer: &str, version: &str, serial: &str) -> Result<bool> {
    conn.prepare_cached(
        "SELECT 1 FROM crl_entries WHERE issuer_name = ?1 AND serial = ?3
           AND (issuer_version = ?2 OR issuer_version IS NULL)",
    )
    .and_then(|mut s| s.exists([issuer, version, serial]))
    .map_err(sql)
}

/// Takes the next CRL number of an issuer.
pub fn crl_next_number(conn: &Connection, issuer: &str) -> Result<u64> {
    conn.query_row(
        "INSERT INTO crl_numbers (issuer_name, number) VALUES (?1, 1)
         ON CONFLICT(issuer_name) DO UPDATE SET number = number + 1 RETURNING number",
        [issuer],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n as u64)
    .map_err(sql)
}

/// Vault certificate names in order, after `after`, at most `limit`.
pub fn vault_names_page(conn: &Connection, after: &str, limit: usize) -> Result<Vec<String>> {
    all(
        conn,
        "SELECT name FROM vault_certificates WHERE name > ?1 ORDER BY name LIMIT ?2",
        params![after, limit as i64],
        |r| r.get(0),
    )
}

/// Every version of several certificates, oldest first within a name.
pub fn vault_versions_many(conn: &Connection, names: &[String]) -> Result<Vec<Vec<VaultVersion>>> {
    let found = at_positions(
        conn,
        &format!(
            "SELECT {}, v.seq, j.key FROM json_each(?1) j JOIN vault_versions v ON v.name = j.value",
            qualified("v", VERSION_COLS)
        ),
        json_list(names),
        names.len(),
        |r| {
            Ok((
                r.get::<_, i64>(VERSION_COLS.split(", ").count())?,
                version_row(r)?,
            ))
        },
    )?;
    Ok(oldest_first(found))
}

/// Each name's versions in creation order (a name has a handful: sorting them here spares the
/// statement a sort of the whole batch).
fn oldest_first<T>(found: Vec<Vec<(i64, T)>>) -> Vec<Vec<T>> {
    found
        .into_iter()
        .map(|mut versions| {
            versions.sort_by_key(|(seq, _)| *seq);
            versions.into_iter().map(|(_, v)| v).collect()
        })
        .collect()
}

/// Every version of several certificates, without certificates and keys, oldest first within a
/// name, in the order asked.
pub fn vault_briefs_many(conn: &Connection, names: &[String]) -> Result<Vec<Vec<VersionBrief>>> {
    let found = at_positions(
        conn,
        "SELECT v.name, v.version, v.thumbprint, v.enabled, v.nbf, v.exp, v.seq,
                v.issuer_name, v.issuer_version, j.key
         FROM json_each(?1) j JOIN vault_versions v ON v.name = j.value",
        json_list(names),
        names.len(),
        |r| {
            Ok((
                r.get::<_, i64>(6)?,
                VersionBrief {
                    name: r.get(0)?,
                    version: r.get(1)?,
                    thumbprint: r.get(2)?,
                    enabled: r.get(3)?,
                    nbf: from_ts(r.get(4)?),
                    exp: from_ts(r.get(5)?),
                    issuer: issuer_at(r, 7)?,
                },
            ))
        },
    )?;
    Ok(oldest_first(found))
}

/// Removes a CA certificate from the enrollment service.
pub fn ca_delete(conn: &Connection, name: &str) -> Result<()> {
    conn.execute("DELETE FROM service_cas WHERE name = ?1", [name])
        .map_err(sql)?;
    Ok(())
}

/// The issuer versions of [`devices_under`], from its JSON parameter `?1` (`[[name, version], ...]`).
const TAINTED: &str = "WITH tainted(name, version) AS MATERIALIZED (
    SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?1))";

/// The devices whose installed certificate was signed by any of these CA versions
/// (`[name, version]` pairs), only of these groups if given: how many, and the first `limit` ids.
/// Revoked devices (a disabled individual enrollment) are left out: they connect with nothing.
pub fn devices_under(
    conn: &Connection,
    issuers: &[(String, String)],
    groups: Option<&[String]>,
    limit: usize,
) -> Result<(u64, Vec<String>)> {
    let pairs = serde_json::to_string(issuers).unwrap_or_else(|_| "[]".into());
    let groups = groups.map(json_list);
    // The few issuer versions are unpacked from JSON once, not once per device of the fleet.
    let query =
        "FROM devices d JOIN vault_versions v ON v.name = d.cert_name AND v.version = d.installed_version
         WHERE EXISTS (SELECT 1 FROM tainted t
                       WHERE t.name = v.issuer_name AND t.version = v.issuer_version)
           AND (?2 IS NULL OR d.group_name IN (SELECT value FROM json_each(?2)))
           AND NOT EXISTS (SELECT 1 FROM individual_enrollments e
                           WHERE e.registration_id = d.id AND e.status = 'disabled')";
    let count: i64 = conn
        .query_row(
            &format!("{TAINTED} SELECT COUNT(*) {query}"),
            params![pairs, groups],
            |r| r.get(0),
        )
        .map_err(sql)?;
    let first = all(
        conn,
        &format!("{TAINTED} SELECT d.id {query} ORDER BY d.id LIMIT ?3"),
        params![pairs, groups, limit as i64],
        |r| r.get(0),
    )?;
    Ok((count as u64, first))
}
