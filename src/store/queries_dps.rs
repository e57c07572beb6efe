//! Reads and writes of what the DPS and IoT Hub wire APIs (`certroll serve`) expose beyond
//! certroll's own model (schema v7): etags, created/updated times, the DPS fields certroll keeps
//! but does not act on, deletes, and paging of enrollments, registrations and hub devices.
//!
//! The records themselves (slots, statuses, thumbprints) are read and written through
//! [`super::queries`] as the CLI does; this module never decides anything.

use super::StoreError;
use super::queries::{REGISTRATION_COLS, all, from_ts, registration_row, sql, ts};
use crate::backend::types::{HubIdentity, IndividualEnrollment, RegistrationState, Status};
use rusqlite::{Connection, OptionalExtension, params};
use time::OffsetDateTime;

type Result<T> = std::result::Result<T, StoreError>;

/// The bookkeeping of one DPS or hub record.
#[derive(Debug, Clone, PartialEq)]
pub struct Meta {
    /// Opaque etag (hex), changed on every write of the row.
    pub etag: String,
    /// When the record was created.
    pub created: OffsetDateTime,
    /// When it was last written.
    pub updated: OffsetDateTime,
    /// The DPS fields certroll keeps as sent (a JSON object), if any.
    pub extra: Option<serde_json::Value>,
    /// Of a hub identity read by [`hub_wire`]: the IoT Hub members certroll does not model
    /// (`capabilities`, `statusReason`) as sent, the JSON text of an object (schema v18); None
    /// for IoT Hub's defaults and for every other record.
    pub hub_extra: Option<String>,
}

/// A [`Meta`] from the row's columns `at..at + 3` (etag, created, updated) and the stored JSON
/// of its DPS fields (unreadable JSON reads as none, as it always did).
fn meta_at(r: &rusqlite::Row<'_>, at: usize, extra: Option<String>) -> rusqlite::Result<Meta> {
    Ok(Meta {
        etag: r.get::<_, Option<String>>(at)?.unwrap_or_default(),
        created: from_ts(r.get(at + 1)?),
        updated: from_ts(r.get(at + 2)?),
        extra: extra.and_then(|t| serde_json::from_str(&t).ok()),
        hub_extra: None,
    })
}

fn meta(conn: &Connection, query: &str, key: &[&str]) -> Result<Option<Meta>> {
    conn.prepare_cached(query)
        .and_then(|mut s| {
            s.query_row(rusqlite::params_from_iter(key), |r| meta_at(r, 0, r.get(3)?))
                .optional()
        })
        .map_err(sql)
}

/// Etag, times and DPS fields of an individual enrollment.
pub fn individual_meta(conn: &Connection, registration_id: &str) -> Result<Option<Meta>> {
    meta(
        conn,
        "SELECT etag, created, updated, dps_extra FROM individual_enrollments WHERE registration_id = ?1",
        &[registration_id],
    )
}

/// Etag, times and DPS fields of an enrollment group.
pub fn group_meta(conn: &Connection, name: &str) -> Result<Option<Meta>> {
    meta(
        conn,
        "SELECT etag, created, updated, dps_extra FROM enrollment_groups WHERE name = ?1",
        &[name],
    )
}

/// Etag and times of a CA certificate of the enrollment service.
pub fn ca_meta(conn: &Connection, name: &str) -> Result<Option<Meta>> {
    meta(
        conn,
        "SELECT etag, created, updated, NULL FROM service_cas WHERE name = ?1",
        &[name],
    )
}

/// Etag and times of a hub device identity; `extra` is its twin.
pub fn hub_meta(conn: &Connection, hub: &str, device_id: &str) -> Result<Option<Meta>> {
    meta(
        conn,
        "SELECT etag, created, updated, twin FROM hub_devices WHERE hub = ?1 AND device_id = ?2",
        &[hub, device_id],
    )
}

/// A hub device identity with its etag, times, twin (`extra`) and IoT Hub members
/// (`hub_extra`), in one statement.
pub fn hub_wire(conn: &Connection, hub: &str, device_id: &str) -> Result<Option<(HubIdentity, Meta)>> {
    conn.prepare_cached(
        "SELECT hub, device_id, auth_type, primary_thumbprint, secondary_thumbprint, status,
                etag, created, updated, twin, hub_extra
         FROM hub_devices WHERE hub = ?1 AND device_id = ?2",
    )
    .and_then(|mut s| {
        s.query_row([hub, device_id], |r| {
            let twin: Option<String> = r.get(9)?;
            let mut meta = meta_at(r, 6, twin)?;
            meta.hub_extra = r.get(10)?;
            Ok((
                HubIdentity {
                    hub: r.get(0)?,
                    device_id: r.get(1)?,
                    auth_type: r.get(2)?,
                    primary_thumbprint: r.get(3)?,
                    secondary_thumbprint: r.get(4)?,
                    status: Status::parse(&r.get::<_, String>(5)?),
                },
                meta,
            ))
        })
        .optional()
    })
    .map_err(sql)
}

/// Creates or updates a device identity as IoT Hub's registry API writes it: with the members
/// certroll does not model (`extra`, JSON text; None: IoT Hub's defaults), the twin kept.
pub fn hub_put_wire(
    conn: &Connection,
    d: &HubIdentity,
    extra: Option<&str>,
    now: OffsetDateTime,
) -> Result<()> {
    super::queries::hub_upsert(conn, d, false, Some(extra), now)
}

/// Keeps the DPS fields of an individual enrollment (None clears them).
pub fn set_individual_extra(conn: &Connection, registration_id: &str, extra: Option<&str>) -> Result<()> {
    conn.prepare_cached("UPDATE individual_enrollments SET dps_extra = ?2 WHERE registration_id = ?1")
        .and_then(|mut s| s.execute(params![registration_id, extra]))
        .map_err(sql)?;
    Ok(())
}

/// Keeps the DPS fields of an enrollment group (None clears them).
pub fn set_group_extra(conn: &Connection, name: &str, extra: Option<&str>) -> Result<()> {
    conn.prepare_cached("UPDATE enrollment_groups SET dps_extra = ?2 WHERE name = ?1")
        .and_then(|mut s| s.execute(params![name, extra]))
        .map_err(sql)?;
    Ok(())
}

/// Removes an individual enrollment; false if there was none.
pub fn individual_delete(conn: &Connection, registration_id: &str) -> Result<bool> {
    conn.execute(
        "DELETE FROM individual_enrollments WHERE registration_id = ?1",
        [registration_id],
    )
    .map(|n| n > 0)
    .map_err(sql)
}

/// Removes an enrollment group; false if there was none.
pub fn group_delete(conn: &Connection, name: &str) -> Result<bool> {
    conn.execute("DELETE FROM enrollment_groups WHERE name = ?1", [name])
        .map(|n| n > 0)
        .map_err(sql)
}

/// Removes a registration state (the enrollment and the hub identity stay; the device's next
/// registration is a first assignment); false if there was none.
pub fn registration_delete(conn: &Connection, registration_id: &str) -> Result<bool> {
    conn.execute(
        "DELETE FROM registrations WHERE registration_id = ?1",
        [registration_id],
    )
    .map(|n| n > 0)
    .map_err(sql)
}

/// An individual enrollment as DPS's wire API shows it: the record, its certificates' SHA-1
/// thumbprints (upper-case hex, as stored beside them) and its bookkeeping, `extra` left as the
/// JSON text it is kept as.
#[derive(Debug, Clone)]
pub struct IndividualWireRow {
    /// The record.
    pub enrollment: IndividualEnrollment,
    /// SHA-1 thumbprint of the primary certificate.
    pub primary_thumbprint: Option<String>,
    /// SHA-1 thumbprint of the secondary certificate.
    pub secondary_thumbprint: Option<String>,
    /// Etag, times; `extra` is always None here (see `extra_text`).
    pub meta: Meta,
    /// The DPS fields certroll keeps as sent (a JSON object's text), if any.
    pub extra_text: Option<String>,
}

/// The columns [`wire_row`] reads: a macro, so that the statements naming them are constant
/// text rather than formatted again for every call (a bulk write reads each record once).
macro_rules! wire_cols {
    () => {
        "registration_id, primary_der, secondary_der, status, reprovision, hub, \
         primary_thumbprint, secondary_thumbprint, etag, created, updated, dps_extra"
    };
}

fn wire_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<IndividualWireRow> {
    let der = |i: usize| r.get::<_, Option<Vec<u8>>>(i);
    let primary = der(1)?;
    let secondary = der(2)?;
    // A row written before thumbprints were stored beside the certificates has none.
    let tp = |stored: Option<String>, der: &Option<Vec<u8>>| {
        stored.or_else(|| der.as_deref().map(crate::pki::sha1_thumbprint))
    };
    let primary_thumbprint = tp(r.get(6)?, &primary);
    let secondary_thumbprint = tp(r.get(7)?, &secondary);
    Ok(IndividualWireRow {
        enrollment: IndividualEnrollment {
            registration_id: r.get(0)?,
            primary,
            secondary,
            status: Status::parse(&r.get::<_, String>(3)?),
            reprovision: r.get(4)?,
            hub: r.get(5)?,
            foreign: Vec::new(),
            take_back: false,
        },
        primary_thumbprint,
        secondary_thumbprint,
        meta: meta_at(r, 8, None)?,
        extra_text: r.get(11)?,
    })
}

/// One individual enrollment with its bookkeeping (one statement: what a DPS write checks and
/// what a read renders).
pub fn individual_wire(conn: &Connection, registration_id: &str) -> Result<Option<IndividualWireRow>> {
    conn.prepare_cached(concat!(
        "SELECT ",
        wire_cols!(),
        " FROM individual_enrollments WHERE registration_id = ?1"
    ))
    .and_then(|mut s| s.query_row([registration_id], wire_row).optional())
    .map_err(sql)
}

/// Individual enrollments with their bookkeeping in id order after `after`, at most `limit`.
pub fn individuals_wire_page(conn: &Connection, after: &str, limit: usize) -> Result<Vec<IndividualWireRow>> {
    all(
        conn,
        concat!(
            "SELECT ",
            wire_cols!(),
            " FROM individual_enrollments WHERE registration_id > ?1 ORDER BY registration_id LIMIT ?2"
        ),
        params![after, limit as i64],
        wire_row,
    )
}

/// Creates or replaces an individual enrollment with its DPS fields (`extra`, JSON text) and a
/// fresh etag, in one statement: the row is written once (schema v13's triggers leave a row
/// whose writer set its etag alone).
///
/// Serve runs it with the store's triggers off (`serve::state`): SQLite then writes the row
/// without copying the pages it touches into a statement journal first.
pub fn individual_put_wire(
    conn: &Connection,
    e: &IndividualEnrollment,
    extra: Option<&str>,
    now: OffsetDateTime,
) -> Result<()> {
    individual_upsert(conn, e, Some(extra), now)
}

/// The one write of an individual enrollment, for [`individual_put_wire`] and the local
/// backend's [`individual_put`](super::queries::individual_put): `extra` None keeps the DPS fields the row holds (a write
/// that knows none of them), `Some` sets them.
pub(super) fn individual_upsert(
    conn: &Connection,
    e: &IndividualEnrollment,
    extra: Option<Option<&str>>,
    now: OffsetDateTime,
) -> Result<()> {
    let tp = |d: &Option<Vec<u8>>| d.as_deref().map(crate::pki::sha1_thumbprint);
    let p = params![
        e.registration_id,
        e.primary,
        tp(&e.primary),
        e.secondary,
        tp(&e.secondary),
        e.status.as_str(),
        e.reprovision,
        e.hub,
        ts(now),
        extra.flatten(),
        extra.is_some(),
    ];
    // An enrollment that exists (every one a roll touches) is updated in place: one look-up.
    // The thumbprint indexes hold disabled enrollments only (schema v17), so rewriting an
    // enabled one's thumbprints touches no index page.
    let updated = conn
        .prepare_cached(
            "UPDATE individual_enrollments SET primary_der = ?2, primary_thumbprint = ?3,
               secondary_der = ?4, secondary_thumbprint = ?5, status = ?6, reprovision = ?7, hub = ?8,
               updated = ?9, dps_extra = CASE WHEN ?11 THEN ?10 ELSE dps_extra END,
               etag = lower(hex(randomblob(8)))
             WHERE registration_id = ?1",
        )
        .and_then(|mut s| s.execute(p))
        .map_err(sql)?;
    if updated == 0 {
        conn.prepare_cached(
            "INSERT INTO individual_enrollments
               (registration_id, primary_der, primary_thumbprint, secondary_der, secondary_thumbprint, status,
                reprovision, hub, created, updated, dps_extra, etag)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?10, lower(hex(randomblob(8))))",
        )
        .and_then(|mut s| s.execute(&p[..10]))
        .map_err(sql)?;
    }
    Ok(())
}

/// Individual enrollment ids in order after `after`, at most `limit`.
pub fn individual_ids_page(conn: &Connection, after: &str, limit: usize) -> Result<Vec<String>> {
    all(
        conn,
        "SELECT registration_id FROM individual_enrollments WHERE registration_id > ?1
         ORDER BY registration_id LIMIT ?2",
        params![after, limit as i64],
        |r| r.get(0),
    )
}

/// Enrollment group ids in order after `after`, at most `limit`.
pub fn group_names_page(conn: &Connection, after: &str, limit: usize) -> Result<Vec<String>> {
    all(
        conn,
        "SELECT name FROM enrollment_groups WHERE name > ?1 ORDER BY name LIMIT ?2",
        params![after, limit as i64],
        |r| r.get(0),
    )
}

/// Registration states whose last assignment was by `group`, in id order after `after`, at
/// most `limit`.
pub fn group_registrations_page(
    conn: &Connection,
    group: &str,
    after: &str,
    limit: usize,
) -> Result<Vec<RegistrationState>> {
    all(
        conn,
        &format!(
            "SELECT {REGISTRATION_COLS} FROM registrations
             WHERE enrollment_kind = 'group' AND enrollment_name = ?1 AND registration_id > ?2
             ORDER BY registration_id LIMIT ?3"
        ),
        params![group, after, limit as i64],
        registration_row,
    )
}

/// The device identities of one hub in id order, at most `limit`.
pub fn hub_devices_page(conn: &Connection, hub: &str, after: &str, limit: usize) -> Result<Vec<HubIdentity>> {
    all(
        conn,
        "SELECT hub, device_id, auth_type, primary_thumbprint, secondary_thumbprint, status
         FROM hub_devices WHERE hub = ?1 AND device_id > ?2 ORDER BY device_id LIMIT ?3",
        params![hub, after, limit as i64],
        |r| {
            Ok(HubIdentity {
                hub: r.get(0)?,
                device_id: r.get(1)?,
                auth_type: r.get(2)?,
                primary_thumbprint: r.get(3)?,
                secondary_thumbprint: r.get(4)?,
                status: Status::parse(&r.get::<_, String>(5)?),
            })
        },
    )
}

/// The `initialTwin` an enrollment was given through the DPS API (JSON text), if any; `kind` is
/// `group` or `individual`.
pub fn initial_twin(conn: &Connection, kind: &str, name: &str) -> Result<Option<String>> {
    let query = if kind == "group" {
        "SELECT json_extract(dps_extra, '$.initialTwin') FROM enrollment_groups WHERE name = ?1"
    } else {
        "SELECT json_extract(dps_extra, '$.initialTwin') FROM individual_enrollments WHERE registration_id = ?1"
    };
    conn.prepare_cached(query)
        .and_then(|mut s| s.query_row([name], |r| r.get::<_, Option<String>>(0)).optional())
        .map(Option::flatten)
        .map_err(sql)
}

/// The `deviceId` an individual enrollment was given through the DPS API, if any: the hub
/// device id DPS assigns its device.
pub fn individual_device_id(conn: &Connection, registration_id: &str) -> Result<Option<String>> {
    conn.prepare_cached(
        "SELECT dps_extra ->> '$.deviceId' FROM individual_enrollments
         WHERE registration_id = ?1 AND dps_extra IS NOT NULL",
    )
    .and_then(|mut s| {
        s.query_row([registration_id], |r| r.get::<_, Option<String>>(0))
            .optional()
    })
    .map(Option::flatten)
    .map_err(sql)
}

/// Sets a device identity's twin (JSON text: `tags` and `properties.desired`).
pub fn set_twin(conn: &Connection, hub: &str, device_id: &str, twin: &str) -> Result<()> {
    conn.prepare_cached("UPDATE hub_devices SET twin = ?3 WHERE hub = ?1 AND device_id = ?2")
        .and_then(|mut s| s.execute(params![hub, device_id, twin]))
        .map_err(sql)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Store, queries as q};
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-23 0:00 UTC);

    /// Individual enrollment `id` on hub `h` (reprovision `migrate`) with these slots.
    fn enrollment(
        id: &str,
        primary: Option<&[u8]>,
        secondary: Option<&[u8]>,
        status: Status,
    ) -> IndividualEnrollment {
        IndividualEnrollment {
            registration_id: id.into(),
            primary: primary.map(<[u8]>::to_vec),
            secondary: secondary.map(<[u8]>::to_vec),
            status,
            reprovision: "migrate".into(),
            hub: "h".into(),
            foreign: Vec::new(),
            take_back: false,
        }
    }

    #[test]
    fn a_dps_write_sets_its_own_etag_in_one_row_write_and_a_cli_write_still_gets_a_fresh_one() {
        let mut store = Store::open_empty().unwrap();
        let e = enrollment("d", None, None, Status::Enabled);
        let mut etags = Vec::new();
        let mut row_writes = Vec::new();
        for extra in [Some(r#"{"iotHubs":["h.azure-devices.net"]}"#), Some("{}"), None] {
            let before = store.conn().total_changes();
            store
                .write(|c, _| individual_put_wire(c, &e, extra, NOW))
                .unwrap();
            row_writes.push(store.conn().total_changes() - before);
            let row = individual_wire(store.conn(), "d").unwrap().unwrap();
            assert_eq!(row.extra_text.as_deref(), extra);
            assert_eq!(row.meta.etag.len(), 16);
            etags.push(row.meta.etag);
        }
        assert_eq!(row_writes, [1, 1, 1], "no trigger wrote the row a second time");
        // The CLI's write is the same statement: a fresh etag in one row write, and the DPS
        // fields a write through serve gave the row stay.
        let twin = r#"{"initialTwin":{"tags":{"a":1}}}"#;
        store
            .write(|c, _| individual_put_wire(c, &e, Some(twin), NOW))
            .unwrap();
        etags.push(individual_wire(store.conn(), "d").unwrap().unwrap().meta.etag);
        let before = store.conn().total_changes();
        store.write(|c, _| q::individual_put(c, &e, NOW)).unwrap();
        assert_eq!(store.conn().total_changes() - before, 1);
        let row = individual_wire(store.conn(), "d").unwrap().unwrap();
        assert_eq!(row.extra_text.as_deref(), Some(twin));
        etags.push(row.meta.etag);
        let distinct: std::collections::HashSet<_> = etags.iter().collect();
        assert_eq!(
            distinct.len(),
            etags.len(),
            "every write changed the etag: {etags:?}"
        );
        assert_eq!(
            individual_meta(store.conn(), "d").unwrap().unwrap().etag,
            etags[4]
        );
    }

    #[test]
    fn a_roll_that_keeps_the_primary_and_a_write_that_replaces_it_both_store_what_was_written() {
        let mut store = Store::open_empty().unwrap();
        let mut e = enrollment("d", Some(&b"first"[..]), None, Status::Enabled);
        // Which registration ids the thumbprint indexes find for `der`, in each slot.
        let found = |store: &Store, der: &[u8]| {
            let tp = crate::pki::sha1_thumbprint(der);
            let by = |column: &str| -> Vec<String> {
                let sql = format!("SELECT registration_id FROM individual_enrollments WHERE {column} = ?1");
                let mut s = store.conn().prepare(&sql).unwrap();
                s.query_map([&tp], |r| r.get(0))
                    .unwrap()
                    .map(|row| row.unwrap())
                    .collect()
            };
            (by("primary_thumbprint"), by("secondary_thumbprint"))
        };
        let d = || vec!["d".to_string()];
        store.write(|c, _| individual_put_wire(c, &e, None, NOW)).unwrap();
        // A roll: the primary as it is, a new secondary.
        e.secondary = Some(b"second".to_vec());
        store.write(|c, _| individual_put_wire(c, &e, None, NOW)).unwrap();
        let row = individual_wire(store.conn(), "d").unwrap().unwrap();
        assert_eq!(row.enrollment.primary.as_deref(), Some(&b"first"[..]));
        assert_eq!(row.enrollment.secondary.as_deref(), Some(&b"second"[..]));
        assert_eq!(found(&store, b"first"), (d(), vec![]));
        assert_eq!(found(&store, b"second"), (vec![], d()));
        // A promotion: both slots change.
        e.primary = Some(b"second".to_vec());
        e.secondary = None;
        store.write(|c, _| q::individual_put(c, &e, NOW)).unwrap();
        let row = individual_wire(store.conn(), "d").unwrap().unwrap();
        assert_eq!(row.enrollment.primary.as_deref(), Some(&b"second"[..]));
        assert_eq!(
            row.primary_thumbprint,
            Some(crate::pki::sha1_thumbprint(b"second"))
        );
        assert_eq!(row.enrollment.secondary, None);
        assert_eq!(found(&store, b"first"), (vec![], vec![]));
        assert_eq!(found(&store, b"second"), (d(), vec![]));
    }

    #[test]
    fn disabled_enrollments_are_found_by_either_slot_s_thumbprint_through_the_partial_indexes() {
        let mut store = Store::open_empty().unwrap();
        let put = |store: &mut Store, id: &str, primary: &[u8], secondary: &[u8], status| {
            let e = enrollment(id, Some(primary), Some(secondary), status);
            store.write(|c, _| q::individual_put(c, &e, NOW)).unwrap();
        };
        put(&mut store, "a", b"x", b"y", Status::Enabled);
        assert!(!q::any_disabled_enrollment(store.conn()).unwrap());
        put(&mut store, "b", b"x", b"y", Status::Disabled);
        put(&mut store, "c", b"z", b"x", Status::Disabled);
        let with = |store: &Store, der: &[u8]| {
            q::disabled_enrollments_with(store.conn(), &crate::pki::sha1_thumbprint(der)).unwrap()
        };
        assert!(q::any_disabled_enrollment(store.conn()).unwrap());
        assert_eq!(with(&store, b"x"), ["b", "c"], "the enabled `a` holds it too");
        assert_eq!(with(&store, b"y"), ["b"]);
        assert_eq!(with(&store, b"w"), Vec::<String>::new());
        // Each slot is one index search, not a scan: a registration asks this per device.
        let plan: Vec<String> = {
            let mut s = store
                .conn()
                .prepare(
                    "EXPLAIN QUERY PLAN SELECT registration_id FROM individual_enrollments
                       WHERE status = 'disabled' AND primary_thumbprint = ?1
                     UNION
                     SELECT registration_id FROM individual_enrollments
                       WHERE status = 'disabled' AND secondary_thumbprint = ?1",
                )
                .unwrap();
            s.query_map(["t"], |r| r.get::<_, String>(3))
                .unwrap()
                .map(|row| row.unwrap())
                .collect()
        };
        for index in [
            "individual_disabled_by_primary",
            "individual_disabled_by_secondary",
        ] {
            assert!(
                plan.iter()
                    .any(|step| step.starts_with("SEARCH") && step.contains(index)),
                "{index} not searched: {plan:?}"
            );
        }
        // Enabling `c` takes it out of the indexes.
        put(&mut store, "c", b"z", b"x", Status::Enabled);
        assert_eq!(with(&store, b"x"), ["b"]);
    }

    #[test]
    fn every_write_of_a_record_changes_its_etag_and_created_stays() {
        let mut store = Store::open_empty().unwrap();
        let group = crate::backend::types::EnrollmentGroup {
            name: "g".into(),
            primary: None,
            secondary: None,
            status: Status::Enabled,
            reprovision: "migrate".into(),
            hub: "h".into(),
            foreign: Vec::new(),
            take_back: false,
        };
        store.write(|c, _| q::group_put(c, &group, NOW)).unwrap();
        let first = group_meta(store.conn(), "g").unwrap().unwrap();
        assert_eq!(first.etag.len(), 16);
        let later = NOW + time::Duration::hours(1);
        store.write(|c, _| q::group_put(c, &group, later)).unwrap();
        let second = group_meta(store.conn(), "g").unwrap().unwrap();
        assert_ne!(first.etag, second.etag, "an unchanged rewrite is still a write");
        assert_eq!((second.created, second.updated), (NOW, later));
        store
            .write(|c, _| set_group_extra(c, "g", Some(r#"{"iotHubs":["h"]}"#)))
            .unwrap();
        let third = group_meta(store.conn(), "g").unwrap().unwrap();
        assert_ne!(third.etag, second.etag);
        assert_eq!(third.extra, Some(serde_json::json!({"iotHubs": ["h"]})));
        assert!(store.write(|c, _| group_delete(c, "g")).unwrap());
        assert_eq!(group_meta(store.conn(), "g").unwrap(), None);
        assert!(!store.write(|c, _| group_delete(c, "g")).unwrap());
    }

    #[test]
    fn a_refused_attempt_keeps_the_enrollment_and_created_of_the_last_success() {
        let mut store = Store::open_empty().unwrap();
        let ok = RegistrationState {
            registration_id: "d".into(),
            status: "assigned".into(),
            hub: Some("h".into()),
            ..Default::default()
        };
        store
            .write(|c, _| q::registration_put(c, &ok, Some("group"), Some("g"), "AA", NOW))
            .unwrap();
        let first = q::registration_get(store.conn(), "d").unwrap().unwrap();
        let later = NOW + time::Duration::hours(1);
        let failed = RegistrationState {
            registration_id: "d".into(),
            status: "failed".into(),
            hub: Some("h".into()),
            error: Some("no".into()),
            error_code: Some(401_002),
            ..Default::default()
        };
        store
            .write(|c, _| q::registration_put(c, &failed, None, None, "BB", later))
            .unwrap();
        let now = q::registration_get(store.conn(), "d").unwrap().unwrap();
        assert_eq!(now.status, "failed");
        assert_eq!(now.error_code, Some(401_002));
        assert_eq!(now.enrollment_name.as_deref(), Some("g"));
        assert_eq!((now.created, now.updated), (Some(NOW), Some(later)));
        assert_ne!(now.etag, first.etag);
        let page = group_registrations_page(store.conn(), "g", "", 10).unwrap();
        assert_eq!(page.len(), 1);
    }
    #[test]
    fn hub_identities_and_registrations_get_one_new_etag_per_write_whoever_writes() {
        // Since schema v12 hub_put and registration_put set the etag themselves (the triggers
        // leave those rows alone); a writer that does not still gets a fresh one.
        let mut store = Store::open_empty().unwrap();
        let mut identity = HubIdentity {
            hub: "h".into(),
            device_id: "d".into(),
            status: Status::Enabled,
            auth_type: "selfSigned".into(),
            primary_thumbprint: Some("AA".into()),
            secondary_thumbprint: None,
        };
        store.write(|c, _| q::hub_put(c, &identity, false, NOW)).unwrap();
        let created = hub_meta(store.conn(), "h", "d").unwrap().unwrap();
        assert_eq!(created.etag.len(), 16);
        identity.primary_thumbprint = Some("BB".into());
        let later = NOW + time::Duration::hours(1);
        store
            .write(|c, _| q::hub_put(c, &identity, false, later))
            .unwrap();
        let updated = hub_meta(store.conn(), "h", "d").unwrap().unwrap();
        assert_ne!(updated.etag, created.etag);
        assert_eq!(updated.etag.len(), 16);
        assert_eq!((updated.created, updated.updated), (NOW, later));
        assert_eq!(
            q::hub_get(store.conn(), "h", "d")
                .unwrap()
                .unwrap()
                .primary_thumbprint
                .as_deref(),
            Some("BB")
        );
        store
            .write(|c, _| set_twin(c, "h", "d", r#"{"tags":{}}"#))
            .unwrap();
        let twin_set = hub_meta(store.conn(), "h", "d").unwrap().unwrap();
        assert_ne!(
            twin_set.etag, updated.etag,
            "a writer that sets no etag still changes it"
        );

        let ok = RegistrationState {
            registration_id: "d".into(),
            status: "assigned".into(),
            hub: Some("h".into()),
            ..Default::default()
        };
        store
            .write(|c, _| q::registration_put(c, &ok, Some("group"), Some("g"), "AA", NOW))
            .unwrap();
        let first = q::registration_get(store.conn(), "d").unwrap().unwrap();
        assert_eq!(first.etag.as_deref().map(str::len), Some(16));
        assert_eq!(first.created, Some(NOW));
        // The same enrollment again: updated in place, a new etag, created kept.
        store
            .write(|c, _| q::registration_put(c, &ok, Some("group"), Some("g"), "BB", later))
            .unwrap();
        let second = q::registration_get(store.conn(), "d").unwrap().unwrap();
        assert_ne!(second.etag, first.etag);
        assert_eq!(second.cert_thumbprint.as_deref(), Some("BB"));
        assert_eq!((second.created, second.updated), (Some(NOW), Some(later)));
        // Another enrollment: the by-enrollment index follows the move.
        store
            .write(|c, _| q::registration_put(c, &ok, Some("group"), Some("g2"), "CC", later))
            .unwrap();
        let third = q::registration_get(store.conn(), "d").unwrap().unwrap();
        assert_ne!(third.etag, second.etag);
        assert_eq!(third.enrollment_name.as_deref(), Some("g2"));
        assert_eq!(third.created, Some(NOW));
        assert!(
            group_registrations_page(store.conn(), "g", "", 10)
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            group_registrations_page(store.conn(), "g2", "", 10)
                .unwrap()
                .len(),
            1
        );
        store
            .write(|c, _| {
                c.execute(
                    "UPDATE registrations SET substatus = 'x' WHERE registration_id = 'd'",
                    [],
                )
                .map_err(sql)
            })
            .unwrap();
        let fourth = q::registration_get(store.conn(), "d").unwrap().unwrap();
        assert_ne!(
            fourth.etag, third.etag,
            "a writer that sets no etag still changes it"
        );
    }
}
