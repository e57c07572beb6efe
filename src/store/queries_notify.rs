//! The outbox of notices (`notify_events`): what is queued, what is owed to the contacts and to
//! the hook, and the renewal watermark. See `schema_v3_notify.sql`.

use super::StoreError;
use super::queries::{from_ts, sql};
use rusqlite::{Connection, OptionalExtension, Row, params};
use time::OffsetDateTime;

type Result<T> = std::result::Result<T, StoreError>;

/// The newest version of a vault certificate, with what decides its lifetime actions.
#[derive(Debug, Clone)]
pub struct CurrentVersion {
    /// Certificate name.
    pub name: String,
    /// Version id.
    pub version: String,
    /// Version attribute `enabled`.
    pub enabled: bool,
    /// notBefore.
    pub nbf: OffsetDateTime,
    /// notAfter.
    pub exp: OffsetDateTime,
    /// The hash of the certificate's policy (a key of [`policies`]).
    pub policy: String,
}

/// Calls `f` with the newest version of every vault certificate, in name order.
pub fn for_each_current(conn: &Connection, mut f: impl FnMut(CurrentVersion) -> Result<()>) -> Result<()> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT v.name, v.version, v.enabled, v.nbf, v.exp, c.policy
             FROM vault_versions v JOIN vault_certificates c ON c.name = v.name
             WHERE v.seq IN (SELECT MAX(seq) FROM vault_versions GROUP BY name)
             ORDER BY v.name",
        )
        .map_err(sql)?;
    let mut rows = stmt.query([]).map_err(sql)?;
    while let Some(r) = rows.next().map_err(sql)? {
        f(CurrentVersion {
            name: r.get(0).map_err(sql)?,
            version: r.get(1).map_err(sql)?,
            enabled: r.get(2).map_err(sql)?,
            nbf: from_ts(r.get(3).map_err(sql)?),
            exp: from_ts(r.get(4).map_err(sql)?),
            policy: r.get(5).map_err(sql)?,
        })?;
    }
    Ok(())
}

/// Every stored policy: (hash, JSON).
pub fn policies(conn: &Connection) -> Result<Vec<(String, String)>> {
    let mut stmt = conn
        .prepare_cached("SELECT hash, json FROM vault_policies")
        .map_err(sql)?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).map_err(sql)?;
    rows.collect::<rusqlite::Result<_>>().map_err(sql)
}

/// Channels on which a newly queued event is settled at once, unsent, because the plan does not
/// configure them (see [`skip_owed`]). Settling on insert spares a second pass over a large queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Unsent {
    /// No `[mail]`.
    pub mail: bool,
    /// No `[hooks]`.
    pub hook: bool,
}

/// The highest `vault_versions.seq` handed out so far (0 for an empty vault).
pub fn max_version_seq(conn: &Connection) -> Result<i64> {
    conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM vault_versions", [], |r| {
        r.get(0)
    })
    .map_err(sql)
}

/// Queues a `renewed` event for every version with `after < seq <= upto` that has a version
/// before it, in creation order, unless it was ever queued. One statement, however many versions
/// a roll made. Returns how many were queued.
pub fn queue_renewals(
    conn: &Connection,
    after: i64,
    upto: i64,
    now: OffsetDateTime,
    unsent: Unsent,
) -> Result<u64> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO notify_events
           (kind, name, version, trigger, at, not_after, previous, queued_at,
            mailed_at, hooked_at, mail_skipped, hook_skipped)
         SELECT 'renewed', name, version, '', created, exp, previous, ?3,
                CASE WHEN ?4 THEN ?3 END, CASE WHEN ?5 THEN ?3 END, ?4, ?5
         FROM (SELECT v.seq, v.name, v.version, v.created, v.exp,
                      (SELECT p.version FROM vault_versions p
                        WHERE p.name = v.name AND p.seq < v.seq
                        ORDER BY p.seq DESC LIMIT 1) AS previous
               FROM vault_versions v WHERE v.seq > ?1 AND v.seq <= ?2)
         WHERE previous IS NOT NULL
         ORDER BY seq",
    )
    .and_then(|mut s| {
        s.execute(params![
            after,
            upto,
            now.unix_timestamp(),
            unsent.mail,
            unsent.hook
        ])
    })
    .map(|n| n as u64)
    .map_err(sql)
}

/// The renewal watermark: the highest `vault_versions.seq` already looked at.
pub fn renewal_watermark(conn: &Connection) -> Result<i64> {
    conn.query_row(
        "SELECT value FROM notify_state WHERE key = 'renewal_seq'",
        [],
        |r| r.get(0),
    )
    .optional()
    .map(|v| v.unwrap_or(0))
    .map_err(sql)
}

/// Moves the renewal watermark.
pub fn set_renewal_watermark(conn: &Connection, seq: i64) -> Result<()> {
    conn.execute(
        "INSERT INTO notify_state (key, value) VALUES ('renewal_seq', ?1)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [seq],
    )
    .map(|_| ())
    .map_err(sql)
}

/// An event to queue.
#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    /// `email-contacts` or `renewed`.
    pub kind: &'a str,
    /// Certificate name.
    pub name: &'a str,
    /// Version.
    pub version: &'a str,
    /// The trigger (`lifetime_percentage=80`), or empty for a renewal.
    pub trigger: &'a str,
    /// When the trigger fired, or when the version was created.
    pub at: OffsetDateTime,
    /// The version's notAfter.
    pub not_after: OffsetDateTime,
    /// For a renewal: the version before.
    pub previous: Option<&'a str>,
}

/// Queues an event unless the same (kind, name, version, trigger) was ever queued; returns
/// whether it is new.
pub fn queue(conn: &Connection, e: &NewEvent<'_>, now: OffsetDateTime, unsent: Unsent) -> Result<bool> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO notify_events
           (kind, name, version, trigger, at, not_after, previous, queued_at,
            mailed_at, hooked_at, mail_skipped, hook_skipped)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, CASE WHEN ?9 THEN ?8 END, CASE WHEN ?10 THEN ?8 END, ?9, ?10)",
    )
    .and_then(|mut s| {
        s.execute(params![
            e.kind,
            e.name,
            e.version,
            e.trigger,
            e.at.unix_timestamp(),
            e.not_after.unix_timestamp(),
            e.previous,
            now.unix_timestamp(),
            unsent.mail,
            unsent.hook
        ])
    })
    .map(|n| n > 0)
    .map_err(sql)
}

/// A queued event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Row id (queue order).
    pub id: i64,
    /// `email-contacts` or `renewed`.
    pub kind: String,
    /// Certificate name.
    pub name: String,
    /// Version.
    pub version: String,
    /// The trigger, or empty.
    pub trigger: String,
    /// When the trigger fired, or when the version was created.
    pub at: OffsetDateTime,
    /// The version's notAfter.
    pub not_after: OffsetDateTime,
    /// For a renewal: the version before.
    pub previous: Option<String>,
    /// When it was queued.
    pub queued_at: OffsetDateTime,
}

fn event_row(r: &Row<'_>) -> rusqlite::Result<StoredEvent> {
    Ok(StoredEvent {
        id: r.get(0)?,
        kind: r.get(1)?,
        name: r.get(2)?,
        version: r.get(3)?,
        trigger: r.get(4)?,
        at: from_ts(r.get(5)?),
        not_after: from_ts(r.get(6)?),
        previous: r.get(7)?,
        queued_at: from_ts(r.get(8)?),
    })
}

/// Which channel an event is owed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// The contacts, by mail.
    Mail,
    /// The hook command.
    Hook,
}

/// The events not yet delivered on `channel`, oldest first.
pub fn owed(conn: &Connection, channel: Channel) -> Result<Vec<StoredEvent>> {
    let query = match channel {
        Channel::Mail => {
            "SELECT id, kind, name, version, trigger, at, not_after, previous, queued_at
             FROM notify_events WHERE mailed_at IS NULL ORDER BY id"
        }
        Channel::Hook => {
            "SELECT id, kind, name, version, trigger, at, not_after, previous, queued_at
             FROM notify_events WHERE hooked_at IS NULL ORDER BY id"
        }
    };
    let mut stmt = conn.prepare_cached(query).map_err(sql)?;
    let rows = stmt.query_map([], event_row).map_err(sql)?;
    rows.collect::<rusqlite::Result<_>>().map_err(sql)
}

/// The (event, contact) pairs already mailed for events whose mail is not complete.
pub fn partly_mailed(conn: &Connection) -> Result<Vec<(i64, String)>> {
    let mut stmt = conn
        .prepare_cached("SELECT event, contact FROM notify_mailed_to")
        .map_err(sql)?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).map_err(sql)?;
    rows.collect::<rusqlite::Result<_>>().map_err(sql)
}

/// Records that `contact` was mailed `events`.
pub fn record_mailed_to(conn: &Connection, events: &[i64], contact: &str, now: OffsetDateTime) -> Result<()> {
    let mut stmt = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO notify_mailed_to (event, contact, sent_at) VALUES (?1, ?2, ?3)",
        )
        .map_err(sql)?;
    for id in events {
        stmt.execute(params![id, contact, now.unix_timestamp()])
            .map_err(sql)?;
    }
    Ok(())
}

/// Marks `events` delivered on `channel`.
pub fn mark_delivered(
    conn: &Connection,
    channel: Channel,
    events: &[i64],
    now: OffsetDateTime,
) -> Result<()> {
    let update = match channel {
        Channel::Mail => "UPDATE notify_events SET mailed_at = ?2 WHERE id = ?1 AND mailed_at IS NULL",
        Channel::Hook => "UPDATE notify_events SET hooked_at = ?2 WHERE id = ?1 AND hooked_at IS NULL",
    };
    let mut stmt = conn.prepare_cached(update).map_err(sql)?;
    for id in events {
        stmt.execute(params![id, now.unix_timestamp()]).map_err(sql)?;
    }
    if channel == Channel::Mail {
        let mut del = conn
            .prepare_cached("DELETE FROM notify_mailed_to WHERE event = ?1")
            .map_err(sql)?;
        for id in events {
            del.execute([id]).map_err(sql)?;
        }
    }
    Ok(())
}

/// Settles, unsent, every event owed on `channel`: the plan does not configure it, and notices
/// recorded meanwhile are not sent when it is configured later.
pub fn skip_owed(conn: &Connection, channel: Channel, now: OffsetDateTime) -> Result<u64> {
    let update = match channel {
        Channel::Mail => "UPDATE notify_events SET mailed_at = ?1, mail_skipped = 1 WHERE mailed_at IS NULL",
        Channel::Hook => "UPDATE notify_events SET hooked_at = ?1, hook_skipped = 1 WHERE hooked_at IS NULL",
    };
    conn.execute(update, [now.unix_timestamp()])
        .map(|n| n as u64)
        .map_err(sql)
}

/// Whether a remote vault was ever scanned for notices (see [`remote_seen`]).
pub fn remote_scanned(conn: &Connection) -> Result<bool> {
    conn.query_row(
        "SELECT value FROM notify_state WHERE key = 'remote_scanned'",
        [],
        |r| r.get::<_, i64>(0),
    )
    .optional()
    .map(|v| v.is_some_and(|v| v != 0))
    .map_err(sql)
}

/// Records that a remote vault was scanned.
pub fn set_remote_scanned(conn: &Connection) -> Result<()> {
    conn.execute(
        "INSERT INTO notify_state (key, value) VALUES ('remote_scanned', 1)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [],
    )
    .map(|_| ())
    .map_err(sql)
}

/// What the last scan of a remote vault recorded of one certificate name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSeen {
    /// The newest version the scan saw (renewals after it are still to find).
    pub version: String,
    /// That version's SHA-1 thumbprint (uppercase hex), None when not recorded.
    pub thumbprint: Option<String>,
    /// The name's policy (Key Vault-shaped JSON) read with that version; None when it must be
    /// read again (never read, or certroll changed it since: [`touch_remote`]).
    pub policy_json: Option<String>,
    /// That version's validity and `enabled` attribute, as the vault last showed them; None
    /// when not known (recorded before the store kept them, or the certificate is gone).
    pub attributes: Option<RemoteAttributes>,
}

/// The attributes of a remote vault certificate's newest version that decide its lifetime
/// actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteAttributes {
    /// Version attribute `enabled`.
    pub enabled: bool,
    /// notBefore.
    pub nbf: OffsetDateTime,
    /// notAfter.
    pub exp: OffsetDateTime,
}

/// What the last scan of a remote vault recorded, by certificate name.
pub fn remote_seen(conn: &Connection) -> Result<std::collections::HashMap<String, RemoteSeen>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT name, version, thumbprint, policy_json, enabled, not_before, not_after
             FROM notify_remote_seen",
        )
        .map_err(sql)?;
    let rows = stmt
        .query_map([], |r| {
            let attributes = match (r.get::<_, Option<bool>>(4)?, r.get(5)?, r.get(6)?) {
                (Some(enabled), Some(nbf), Some(exp)) => Some(RemoteAttributes {
                    enabled,
                    nbf: from_ts(nbf),
                    exp: from_ts(exp),
                }),
                _ => None,
            };
            Ok((
                r.get(0)?,
                RemoteSeen {
                    version: r.get(1)?,
                    thumbprint: r.get(2)?,
                    policy_json: r.get(3)?,
                    attributes,
                },
            ))
        })
        .map_err(sql)?;
    rows.collect::<rusqlite::Result<_>>().map_err(sql)
}

/// Records what a scan read of a remote vault certificate: its newest version, with that
/// version's thumbprint and attributes and the name's policy. The name is no longer touched
/// ([`touch_remote`]).
pub fn set_remote_seen(conn: &Connection, name: &str, seen: &RemoteSeen, now: OffsetDateTime) -> Result<()> {
    let a = seen.attributes;
    conn.prepare_cached(
        "INSERT INTO notify_remote_seen
             (name, version, seen_at, thumbprint, policy_json, enabled, not_before, not_after)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT(name) DO UPDATE SET version = excluded.version, seen_at = excluded.seen_at,
             thumbprint = excluded.thumbprint, policy_json = excluded.policy_json,
             enabled = excluded.enabled, not_before = excluded.not_before,
             not_after = excluded.not_after",
    )
    .and_then(|mut s| {
        s.execute(params![
            name,
            seen.version,
            now.unix_timestamp(),
            seen.thumbprint,
            seen.policy_json,
            a.map(|a| a.enabled),
            a.map(|a| a.nbf.unix_timestamp()),
            a.map(|a| a.exp.unix_timestamp()),
        ])
    })
    .map_err(sql)?;
    untouch_remote(conn, name)
}

/// Records the attributes a vault listing shows for a certificate whose newest version is the
/// one recorded (enabled or disabled outside certroll, say); None: the certificate is gone (not
/// listed, or not found), so its lifetime actions are not judged until it is read again.
pub fn set_remote_attributes(
    conn: &Connection,
    name: &str,
    attributes: Option<RemoteAttributes>,
) -> Result<()> {
    conn.prepare_cached(
        "UPDATE notify_remote_seen SET enabled = ?2, not_before = ?3, not_after = ?4 WHERE name = ?1",
    )
    .and_then(|mut s| {
        s.execute(params![
            name,
            attributes.map(|a| a.enabled),
            attributes.map(|a| a.nbf.unix_timestamp()),
            attributes.map(|a| a.exp.unix_timestamp()),
        ])
    })
    .map(|_| ())
    .map_err(sql)
}

/// Forgets the policy a scan read of a remote vault certificate, so the next scan reads the
/// certificate again (certroll changed the policy; the newest version may be unchanged). The
/// newest version seen is kept: renewals are still found from it.
pub fn forget_remote_policy(conn: &Connection, name: &str) -> Result<()> {
    conn.prepare_cached("UPDATE notify_remote_seen SET policy_json = NULL WHERE name = ?1")
        .and_then(|mut s| s.execute(params![name]))
        .map(|_| ())
        .map_err(sql)
}

/// Records that certroll is about to write to remote vault certificate `name` (a version, its
/// policy, its attributes, its deletion): every scan reads it again, also the notify step after
/// a verb, which otherwise judges from what the last scan recorded. Forgets its policy too
/// ([`forget_remote_policy`]).
pub fn touch_remote(conn: &Connection, name: &str) -> Result<()> {
    forget_remote_policy(conn, name)?;
    conn.prepare_cached("INSERT OR IGNORE INTO notify_remote_touched (name) VALUES (?1)")
        .and_then(|mut s| s.execute(params![name]))
        .map(|_| ())
        .map_err(sql)
}

/// The names touched ([`touch_remote`]) since a scan last read them, in name order.
pub fn touched_remote(conn: &Connection) -> Result<Vec<String>> {
    let mut stmt = conn
        .prepare_cached("SELECT name FROM notify_remote_touched ORDER BY name")
        .map_err(sql)?;
    let rows = stmt.query_map([], |r| r.get(0)).map_err(sql)?;
    rows.collect::<rusqlite::Result<_>>().map_err(sql)
}

/// A scan has read `name` again: it is no longer touched.
pub fn untouch_remote(conn: &Connection, name: &str) -> Result<()> {
    conn.prepare_cached("DELETE FROM notify_remote_touched WHERE name = ?1")
        .and_then(|mut s| s.execute(params![name]))
        .map(|_| ())
        .map_err(sql)
}

/// When a scan last read a remote vault's whole listing; None if never (or before the store
/// recorded it).
pub fn remote_listed_at(conn: &Connection) -> Result<Option<OffsetDateTime>> {
    conn.query_row(
        "SELECT value FROM notify_state WHERE key = 'remote_listed_at'",
        [],
        |r| r.get::<_, i64>(0),
    )
    .optional()
    .map(|v| v.map(from_ts))
    .map_err(sql)
}

/// Records that a scan read a remote vault's whole listing at `now`.
pub fn set_remote_listed_at(conn: &Connection, now: OffsetDateTime) -> Result<()> {
    conn.execute(
        "INSERT INTO notify_state (key, value) VALUES ('remote_listed_at', ?1)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [now.unix_timestamp()],
    )
    .map(|_| ())
    .map_err(sql)
}
