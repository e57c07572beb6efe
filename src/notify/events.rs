//! Finding events in the store and queueing them, exactly once each.
//!
//! Two kinds of event:
//!
//! - `email-contacts`: the current version of a vault certificate has an `EmailContacts`
//!   lifetime action in its (vault) policy whose trigger time ([`crate::ops::lifetime::fires_at`])
//!   is at or before `now`. Keyed by (certificate, version, trigger), so it is queued once ever,
//!   however often the scan runs. A disabled current version is skipped.
//! - `renewed`: a version created after the renewal watermark for a certificate that already had
//!   a version (a roll, an auto-renew). The watermark moves in the same transaction as the
//!   queueing, so a crash between a roll and the scan loses nothing: the next scan finds it.
//!   With neither mail nor a hook configured, renewals are passed over unrecorded.

use crate::plan::Trigger;
use crate::store::StoreError;
use crate::store::queries_notify::{self as q, NewEvent, Unsent};
use rusqlite::Connection;
use std::collections::HashMap;
use time::OffsetDateTime;

/// `kind` of an email-contacts event.
pub const EMAIL_CONTACTS: &str = "email-contacts";
/// `kind` of a renewal event.
pub const RENEWED: &str = "renewed";

/// The trigger as stored and shown (`lifetime_percentage = 80`), like `check` shows it.
pub fn trigger_text(t: Trigger) -> String {
    match t {
        Trigger::DaysBeforeExpiry(d) => format!("days_before_expiry = {d}"),
        Trigger::LifetimePercentage(p) => format!("lifetime_percentage = {p}"),
    }
}

/// The `EmailContacts` triggers of a vault policy (Key Vault-shaped JSON, as
/// [`crate::ops::policy_json`] writes it). Anything unreadable contributes nothing.
pub fn email_triggers(policy_json: &str) -> Vec<Trigger> {
    let Ok(doc) = serde_json::from_str::<serde_json::Value>(policy_json) else {
        return Vec::new();
    };
    let Some(actions) = doc["lifetime_actions"].as_array() else {
        return Vec::new();
    };
    actions
        .iter()
        .filter(|a| a["action"]["action_type"].as_str() == Some("EmailContacts"))
        .filter_map(|a| {
            let t = &a["trigger"];
            if let Some(d) = t["days_before_expiry"].as_u64() {
                u32::try_from(d).ok().map(Trigger::DaysBeforeExpiry)
            } else if let Some(p) = t["lifetime_percentage"].as_u64() {
                u8::try_from(p).ok().map(Trigger::LifetimePercentage)
            } else {
                None
            }
        })
        .collect()
}

/// Queues every event that has happened by `now` and was never queued (settled at once on the
/// `unsent` channels); returns how many were new. Run it inside one transaction.
pub fn scan(conn: &Connection, now: OffsetDateTime, unsent: Unsent) -> Result<u64, StoreError> {
    let mut queued = 0u64;

    let triggers: HashMap<String, Vec<Trigger>> = q::policies(conn)?
        .into_iter()
        .filter_map(|(hash, json)| {
            let t = email_triggers(&json);
            (!t.is_empty()).then_some((hash, t))
        })
        .collect();
    if !triggers.is_empty() {
        let mut fired = Vec::new();
        q::for_each_current(conn, |v| {
            if let Some(ts) = triggers.get(&v.policy).filter(|_| v.enabled) {
                for &t in ts {
                    let at = crate::ops::lifetime::fires_at(t, v.nbf, v.exp);
                    if at <= now {
                        fired.push((v.name.clone(), v.version.clone(), trigger_text(t), at, v.exp));
                    }
                }
            }
            Ok(())
        })?;
        for (name, version, trigger, at, exp) in &fired {
            let new = NewEvent {
                kind: EMAIL_CONTACTS,
                name,
                version,
                trigger,
                at: *at,
                not_after: *exp,
                previous: None,
            };
            queued += u64::from(q::queue(conn, &new, now, unsent)?);
        }
    }

    let mark = q::renewal_watermark(conn)?;
    let seen = q::max_version_seq(conn)?.max(mark);
    // With neither channel configured nothing would ever send a renewal notice, and configuring
    // one later must not replay them: the watermark moves past them unrecorded (a roll of a
    // large fleet would otherwise write a settled row per device).
    if !(unsent.mail && unsent.hook) {
        queued += q::queue_renewals(conn, mark, seen, now, unsent)?;
    }
    if seen != mark {
        q::set_renewal_watermark(conn, seen)?;
    }
    Ok(queued)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use time::macros::datetime;

    const POLICY: &str = r#"{"lifetime_actions":[
        {"trigger":{"lifetime_percentage":80},"action":{"action_type":"EmailContacts"}}]}"#;

    /// Stores a new version of `name` valid for 100 days from `nbf`.
    fn add_version(store: &mut Store, name: &str, nbf: OffsetDateTime) {
        crate::store::test_support::insert_version(store, name, POLICY, nbf, 100).unwrap();
    }

    fn scan_now(store: &mut Store, now: OffsetDateTime) -> u64 {
        store.write(|conn, _| scan(conn, now, Unsent::default())).unwrap()
    }

    #[test]
    fn each_event_is_queued_once_and_renewals_are_found_whenever_the_scan_runs() {
        let mut store = Store::open_empty().unwrap();
        let t0 = datetime!(2026-01-01 0:00 UTC);
        add_version(&mut store, "dev-a", t0);
        add_version(&mut store, "dev-b", t0);
        assert_eq!(scan_now(&mut store, t0), 0, "first versions are not renewals");
        // 80% of 100 days = day 80.
        assert_eq!(scan_now(&mut store, t0 + time::Duration::days(79)), 0);
        assert_eq!(scan_now(&mut store, t0 + time::Duration::days(80)), 2);
        assert_eq!(
            scan_now(&mut store, t0 + time::Duration::days(90)),
            0,
            "never twice"
        );

        // Two renewals of `a` happen with no scan in between (as if certroll died after the
        // roll): the next scan finds both, once.
        let t1 = t0 + time::Duration::days(85);
        add_version(&mut store, "dev-a", t1);
        add_version(&mut store, "dev-a", t1 + time::Duration::days(1));
        let now = t1 + time::Duration::days(2);
        assert_eq!(scan_now(&mut store, now), 2);
        assert_eq!(scan_now(&mut store, now), 0);
        let owed = q::owed(store.conn(), q::Channel::Mail).unwrap();
        let kinds: Vec<(&str, &str)> = owed.iter().map(|e| (e.kind.as_str(), e.name.as_str())).collect();
        assert_eq!(
            kinds,
            [
                (EMAIL_CONTACTS, "dev-a"),
                (EMAIL_CONTACTS, "dev-b"),
                (RENEWED, "dev-a"),
                (RENEWED, "dev-a")
            ]
        );
        assert_eq!(owed[3].previous.as_deref(), Some(owed[2].version.as_str()));
        // The newest version of `a` fires again at its own 80%: a new event for a new version.
        assert_eq!(scan_now(&mut store, now + time::Duration::days(80)), 1);
    }

    #[test]
    fn events_are_settled_at_once_on_channels_the_plan_lacks() {
        let mut store = Store::open_empty().unwrap();
        let t0 = datetime!(2026-01-01 0:00 UTC);
        add_version(&mut store, "dev-a", t0);
        add_version(&mut store, "dev-a", t0 + time::Duration::days(1));
        let only_hook = Unsent {
            mail: true,
            hook: false,
        };
        let now = t0 + time::Duration::days(2);
        assert_eq!(store.write(|c, _| scan(c, now, only_hook)).unwrap(), 1);
        assert!(q::owed(store.conn(), q::Channel::Mail).unwrap().is_empty());
        let hook = q::owed(store.conn(), q::Channel::Hook).unwrap();
        assert_eq!((hook.len(), hook[0].kind.as_str()), (1, RENEWED));

        // Neither channel: the renewal is passed over, and a channel configured later does not
        // get it either.
        add_version(&mut store, "dev-a", now);
        let neither = Unsent {
            mail: true,
            hook: true,
        };
        assert_eq!(store.write(|c, _| scan(c, now, neither)).unwrap(), 0);
        assert_eq!(scan_now(&mut store, now), 0);
        assert_eq!(q::owed(store.conn(), q::Channel::Hook).unwrap().len(), 1);
    }

    #[test]
    fn email_triggers_are_read_from_the_vault_policy() {
        let json = r#"{"lifetime_actions":[
            {"trigger":{"days_before_expiry":30},"action":{"action_type":"AutoRenew"}},
            {"trigger":{"lifetime_percentage":80},"action":{"action_type":"EmailContacts"}},
            {"trigger":{"days_before_expiry":7},"action":{"action_type":"EmailContacts"}}]}"#;
        assert_eq!(
            email_triggers(json),
            [Trigger::LifetimePercentage(80), Trigger::DaysBeforeExpiry(7)]
        );
        assert!(email_triggers("not json").is_empty());
        assert!(email_triggers("{}").is_empty());
    }
}
