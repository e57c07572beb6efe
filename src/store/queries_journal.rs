//! Reads and writes of the journal: runs of mutating commands and their steps.

use super::StoreError;
use super::queries::{from_ts, sql};
use crate::backend::types::{JournalRun, JournalStep};
use rusqlite::{Connection, OptionalExtension, Row, params};
use time::OffsetDateTime;

type Result<T> = std::result::Result<T, StoreError>;

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or(serde_json::Value::Null)
}

fn step_row(r: &Row<'_>) -> rusqlite::Result<JournalStep> {
    Ok(JournalStep {
        seq: r.get(0)?,
        target: r.get(1)?,
        kind: r.get(2)?,
        description: r.get(3)?,
        detail: json(&r.get::<_, String>(4)?),
        result: r.get::<_, Option<String>>(5)?.as_deref().map(json),
    })
}

fn steps_of(conn: &Connection, run: i64) -> Result<Vec<JournalStep>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT seq, target, kind, description, detail, result FROM journal_steps
             WHERE run_id = ?1 ORDER BY seq",
        )
        .map_err(sql)?;
    let rows = stmt.query_map([run], step_row).map_err(sql)?;
    rows.collect::<rusqlite::Result<_>>().map_err(sql)
}

fn run_with_steps(
    conn: &Connection,
    row: Option<(i64, String, i64, Option<i64>)>,
) -> Result<Option<JournalRun>> {
    let Some((id, command, started, finished)) = row else {
        return Ok(None);
    };
    Ok(Some(JournalRun {
        id,
        command,
        started: from_ts(started),
        finished: finished.map(from_ts),
        steps: steps_of(conn, id)?,
    }))
}

/// The newest run of a command: open (`finished` = false) or finished.
pub fn last_run(conn: &Connection, command: &str, finished: bool) -> Result<Option<JournalRun>> {
    let row = conn
        .prepare_cached(
            "SELECT id, command, started, finished FROM journal_runs
             WHERE command = ?1 AND (finished IS NOT NULL) = ?2 ORDER BY id DESC LIMIT 1",
        )
        .and_then(|mut s| {
            s.query_row(params![command, finished], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()
        })
        .map_err(sql)?;
    run_with_steps(conn, row)
}

/// Every open run, oldest first, with its steps.
pub fn open_runs(conn: &Connection) -> Result<Vec<JournalRun>> {
    let rows: Vec<(i64, String, i64, Option<i64>)> = conn
        .prepare_cached(
            "SELECT id, command, started, finished FROM journal_runs WHERE finished IS NULL ORDER BY id",
        )
        .and_then(|mut s| {
            s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(sql)?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        out.extend(run_with_steps(conn, Some(row))?);
    }
    Ok(out)
}

/// Records a run and its planned steps; returns the run's number.
pub fn start(conn: &Connection, command: &str, steps: &[JournalStep], now: OffsetDateTime) -> Result<i64> {
    conn.execute(
        "INSERT INTO journal_runs (command, started) VALUES (?1, ?2)",
        params![command, now.unix_timestamp()],
    )
    .map_err(sql)?;
    let run = conn.last_insert_rowid();
    let mut stmt = conn
        .prepare_cached(
            "INSERT INTO journal_steps (run_id, seq, target, kind, description, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .map_err(sql)?;
    for s in steps {
        stmt.execute(params![
            run,
            s.seq,
            s.target,
            s.kind,
            s.description,
            s.detail.to_string()
        ])
        .map_err(sql)?;
    }
    Ok(run)
}

/// Marks a step done with what it did.
pub fn step_done(
    conn: &Connection,
    run: i64,
    seq: u32,
    result: &serde_json::Value,
    now: OffsetDateTime,
) -> Result<()> {
    conn.prepare_cached("UPDATE journal_steps SET result = ?3, done = ?4 WHERE run_id = ?1 AND seq = ?2")
        .and_then(|mut s| s.execute(params![run, seq, result.to_string(), now.unix_timestamp()]))
        .map_err(sql)?;
    Ok(())
}

/// Closes a run, and prunes what no reader of the journal needs any more (see [`prune`]).
pub fn finish(conn: &Connection, run: i64, now: OffsetDateTime) -> Result<()> {
    conn.execute(
        "UPDATE journal_runs SET finished = ?2 WHERE id = ?1",
        params![run, now.unix_timestamp()],
    )
    .map_err(sql)?;
    prune(conn)
}

/// Deletes finished runs' steps and runs that nothing reads any more (issue 13 item 3), so a
/// journal stays as large as the fleet, not as long as its history. Kept: every open run whole
/// (resume reads it), the newest done step of every target and kind in finished runs (what
/// [`last_done_step`] answers, which rolls use to recognise a breach already handled), and the
/// newest finished run of every command (what [`last_run`] answers).
pub fn prune(conn: &Connection) -> Result<()> {
    conn.execute_batch(
        "DELETE FROM journal_steps WHERE rowid IN (
             SELECT s.rowid FROM journal_steps s JOIN journal_runs r ON r.id = s.run_id
             WHERE r.finished IS NOT NULL AND EXISTS (
                 SELECT 1 FROM journal_steps n JOIN journal_runs nr ON nr.id = n.run_id
                 WHERE n.target = s.target AND n.kind = s.kind AND n.run_id > s.run_id
                   AND n.done IS NOT NULL AND nr.finished IS NOT NULL));
         DELETE FROM journal_runs WHERE finished IS NOT NULL
             AND NOT EXISTS (SELECT 1 FROM journal_steps s WHERE s.run_id = journal_runs.id)
             AND id < (SELECT max(n.id) FROM journal_runs n
                       WHERE n.command = journal_runs.command AND n.finished IS NOT NULL);",
    )
    .map_err(sql)
}

/// The newest done step of a kind for a target, in a finished run.
pub fn last_done_step(conn: &Connection, target: &str, kind: &str) -> Result<Option<JournalStep>> {
    conn.prepare_cached(
        "SELECT s.seq, s.target, s.kind, s.description, s.detail, s.result FROM journal_steps s
         JOIN journal_runs r ON r.id = s.run_id
         WHERE s.target = ?1 AND s.kind = ?2 AND s.done IS NOT NULL AND r.finished IS NOT NULL
         ORDER BY s.run_id DESC LIMIT 1",
    )
    .and_then(|mut s| s.query_row([target, kind], step_row).optional())
    .map_err(sql)
}

/// Every done step of `kinds` in a finished run, oldest run first (a step of a later run
/// stands over one of an earlier): one query, where asking [`last_done_step`] per target would
/// cost one each.
pub fn done_steps(conn: &Connection, kinds: &[&str]) -> Result<Vec<JournalStep>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT s.seq, s.target, s.kind, s.description, s.detail, s.result FROM journal_steps s
             JOIN journal_runs r ON r.id = s.run_id
             WHERE s.kind IN (SELECT value FROM json_each(?1)) AND s.done IS NOT NULL
                 AND r.finished IS NOT NULL
             ORDER BY s.run_id, s.seq",
        )
        .map_err(sql)?;
    let kinds = serde_json::json!(kinds).to_string();
    let rows = stmt.query_map([kinds], step_row).map_err(sql)?;
    rows.collect::<rusqlite::Result<_>>().map_err(sql)
}

/// A delivery a device is owed: the vault version its fleet record names, not yet taken by the
/// delivery channel. `(device id, vault certificate name, version)`.
pub type OwedDelivery = (String, String, String);

/// Records `owed` (replacing what each device was owed before: the newer version is the one it
/// needs).
pub fn owed_put(conn: &Connection, owed: &[OwedDelivery]) -> Result<()> {
    let mut stmt = conn
        .prepare_cached(
            "INSERT INTO owed_deliveries (device_id, cert_name, version) VALUES (?1, ?2, ?3)
             ON CONFLICT(device_id) DO UPDATE SET cert_name = excluded.cert_name, version = excluded.version",
        )
        .map_err(sql)?;
    for (id, name, version) in owed {
        stmt.execute(params![id, name, version]).map_err(sql)?;
    }
    Ok(())
}

/// Settles what each `(device id, version)` was owed; a device owed another version (a newer
/// one, recorded since) stays owed that one. `version` None settles whatever it was owed.
pub fn owed_settle(conn: &Connection, settled: &[(String, Option<String>)]) -> Result<()> {
    let mut stmt = conn
        .prepare_cached("DELETE FROM owed_deliveries WHERE device_id = ?1 AND (?2 IS NULL OR version = ?2)")
        .map_err(sql)?;
    for (id, version) in settled {
        stmt.execute(params![id, version]).map_err(sql)?;
    }
    Ok(())
}

/// Whether device `id` is owed the delivery of `version`.
pub fn owed_has(conn: &Connection, id: &str, version: &str) -> Result<bool> {
    conn.prepare_cached("SELECT 1 FROM owed_deliveries WHERE device_id = ?1 AND version = ?2")
        .and_then(|mut s| s.exists(params![id, version]))
        .map_err(sql)
}

/// Up to `limit` owed deliveries after device id `after`, in id order.
pub fn owed_page(conn: &Connection, after: &str, limit: usize) -> Result<Vec<OwedDelivery>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT device_id, cert_name, version FROM owed_deliveries WHERE device_id > ?1
             ORDER BY device_id LIMIT ?2",
        )
        .map_err(sql)?;
    let rows = stmt
        .query_map(params![after, limit as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .map_err(sql)?;
    rows.collect::<rusqlite::Result<_>>().map_err(sql)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owed(id: &str, version: &str) -> OwedDelivery {
        (id.into(), format!("dev-{id}"), version.into())
    }

    /// A device is owed one delivery, the newest version recorded; settling an older version
    /// leaves the newer one owed; settling without a version (`delivery = "none"`) clears it;
    /// pages come in id order after the cursor.
    #[test]
    fn a_device_is_owed_its_newest_version_until_that_version_is_settled() {
        let store = crate::store::Store::open_empty().unwrap();
        let conn = store.conn();
        owed_put(conn, &[owed("a", "v1"), owed("b", "v1"), owed("c", "v1")]).unwrap();
        owed_put(conn, &[owed("a", "v2")]).unwrap();
        assert_eq!(
            owed_page(conn, "", 10).unwrap(),
            vec![owed("a", "v2"), owed("b", "v1"), owed("c", "v1")]
        );
        // The delivery of v1 to `a` ran late: `a` still needs v2.
        owed_settle(
            conn,
            &[("a".into(), Some("v1".into())), ("b".into(), Some("v1".into()))],
        )
        .unwrap();
        assert_eq!(
            owed_page(conn, "", 10).unwrap(),
            vec![owed("a", "v2"), owed("c", "v1")]
        );
        assert_eq!(owed_page(conn, "a", 1).unwrap(), vec![owed("c", "v1")]);
        assert!(owed_has(conn, "a", "v2").unwrap() && !owed_has(conn, "a", "v1").unwrap());
        owed_settle(conn, &[("a".into(), None)]).unwrap();
        assert_eq!(owed_page(conn, "", 10).unwrap(), vec![owed("c", "v1")]);
    }

    fn step(seq: u32, target: &str, kind: &str) -> JournalStep {
        JournalStep {
            seq,
            target: target.into(),
            kind: kind.into(),
            description: String::new(),
            detail: serde_json::json!({}),
            result: None,
        }
    }

    /// The done steps of the kinds asked, of finished runs only, oldest run first; a step not
    /// done, or of another kind, is left out.
    #[test]
    fn done_steps_are_those_of_finished_runs_oldest_first() {
        let store = crate::store::Store::open_empty().unwrap();
        let conn = store.conn();
        let now = crate::store::queries::from_ts(1_700_000_000);
        let mut runs = Vec::new();
        for target in ["device:a", "ca:root", "device:b"] {
            let steps = [
                step(1, target, "breach-device"),
                step(2, target, "replace-devices"),
                step(3, target, "revoke"),
            ];
            let run = start(conn, &format!("roll {target}"), &steps, now).unwrap();
            step_done(conn, run, 1, &serde_json::json!({ "run": run }), now).unwrap();
            step_done(conn, run, 3, &serde_json::json!({}), now).unwrap();
            runs.push(run);
        }
        finish(conn, runs[1], now).unwrap();
        finish(conn, runs[0], now).unwrap();
        let got: Vec<(String, String)> = done_steps(conn, &["breach-device", "replace-devices"])
            .unwrap()
            .into_iter()
            .map(|s| (s.target, s.kind))
            .collect();
        let want = [("device:a", "breach-device"), ("ca:root", "breach-device")];
        assert_eq!(got, want.map(|(t, k)| (t.to_string(), k.to_string())));
    }
}
