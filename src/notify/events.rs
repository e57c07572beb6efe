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

use crate::backend::Vault;
use crate::backend::types::{ListedCertificate, VersionStamp};
use crate::plan::Trigger;
use crate::store::StoreError;
use crate::store::queries_notify::{self as q, NewEvent, Unsent};
use rusqlite::Connection;
use std::collections::{HashMap, HashSet};
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
    match serde_json::from_str::<serde_json::Value>(policy_json) {
        Ok(doc) => email_triggers_of(&doc),
        Err(_) => Vec::new(),
    }
}

/// [`email_triggers`] of a parsed policy document (as [`Vault::policy`] answers it).
pub fn email_triggers_of(doc: &serde_json::Value) -> Vec<Trigger> {
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

/// Certificates read from a remote vault per round, so a large vault is scanned in bounded
/// memory (each round reads the certificates it must `concurrency` at a time).
const REMOTE_PAGE: usize = 500;

/// How much of a remote vault a [`scan_vault`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteRead {
    /// Only the names certroll touched since the last scan
    /// ([`crate::store::queries_notify::touch_remote`]): a request per touched certificate
    /// whatever the vault's size. Every other certificate is judged from what the ledger
    /// recorded of it, so a change made outside certroll (a version Key Vault made itself, a
    /// policy, a deletion) waits for the next listing. The notify step after a verb, between
    /// listings.
    Touched,
    /// The vault's whole listing (25 certificates a request on Key Vault), reading a
    /// certificate only when it is new, touched, or its newest version changed. `notify`.
    Listing,
    /// The listing, reading every certificate again. `notify --refresh`.
    Everything,
}

/// Whether the notify step after a verb reads the vault's whole listing: never read, or last
/// read `every` or longer ago (or after `now`: the clock moved back). `every` zero: always.
pub fn listing_due(
    conn: &Connection,
    now: OffsetDateTime,
    every: time::Duration,
) -> Result<bool, StoreError> {
    if !q::remote_scanned(conn)? {
        return Ok(true);
    }
    Ok(match q::remote_listed_at(conn)? {
        None => true,
        Some(at) => at > now || now - at >= every,
    })
}

/// [`scan`] for a vault outside the store (Key Vault on `kind = "azure"`), read through the
/// [`Vault`] trait; the ledger (`conn`) is the local store beside the plan. Queues the same
/// events [`scan`] queues for the same vault history, each exactly once ever, as far as `read`
/// lets it see that history.
///
/// What it reads ([`RemoteRead`]): with `Listing`, the vault's listing ([`Vault::listing`]: names
/// with the newest version's thumbprint and attributes, 25 a request on Key Vault), and the
/// newest version with its policy ([`Vault::current_with_policy_many`], a request per
/// certificate) only for a certificate that is new since the last scan, whose newest version
/// changed, or that certroll touched since (a version, its policy, its attributes: the ledger
/// keeps the policy and attributes read with each newest version); `Everything` reads every
/// certificate; `Touched` reads no listing, only the touched certificates, and takes the rest
/// from the ledger. A policy changed outside certroll is seen at the certificate's next version
/// or with `Everything`.
///
/// - `email-contacts`: read from each certificate's newest version and its policy, as [`scan`]
///   does.
/// - `renewed`: the store keeps the newest version each scan saw per certificate name. A name
///   whose newest version changed since, or that is new since the last scan, has its versions
///   listed; every version after the one last seen (for a new name: after its first) is a
///   renewal of the version before it. The very first scan of a vault reads the listing
///   (whatever `read` asks) and only records what it sees: renewals from before certroll watched
///   the vault are not replayed (as a store upgraded to notices does not replay its history).
///
/// Renewals are queued in the order the vault made them (by creation time, then name). Run it
/// inside one transaction of `conn`.
pub fn scan_vault(
    conn: &Connection,
    vault: &dyn Vault,
    now: OffsetDateTime,
    unsent: Unsent,
    read: RemoteRead,
) -> crate::backend::Result<u64> {
    let mut queued = 0u64;
    let first_scan = !q::remote_scanned(conn)?;
    let read = if first_scan && read == RemoteRead::Touched {
        RemoteRead::Listing
    } else {
        read
    };
    let seen = q::remote_seen(conn)?;
    let touched: HashSet<String> = q::touched_remote(conn)?.into_iter().collect();
    // With neither channel configured, renewals are passed over unrecorded (see `scan`): no need
    // to list any versions.
    let record_renewals = !(unsent.mail && unsent.hook);
    let mut renewals: Vec<(String, VersionStamp, String)> = Vec::new();
    let listing = match read {
        RemoteRead::Touched => ledger_listing(&seen, &touched),
        RemoteRead::Listing | RemoteRead::Everything => vault.listing()?,
    };
    for page in listing.chunks(REMOTE_PAGE) {
        // What the ledger already holds for an unchanged newest version: its id and the policy.
        let known = |l: &ListedCertificate| -> Option<(String, q::RemoteAttributes, serde_json::Value)> {
            let s = seen.get(&l.name)?;
            if read == RemoteRead::Everything
                || touched.contains(&l.name)
                || l.thumbprint.is_none()
                || s.thumbprint != l.thumbprint
            {
                return None;
            }
            let policy = serde_json::from_str(s.policy_json.as_deref()?).ok()?;
            let attributes = q::RemoteAttributes {
                enabled: l.enabled?,
                nbf: l.nbf?,
                exp: l.exp?,
            };
            Some((s.version.clone(), attributes, policy))
        };
        let stale: Vec<String> = page
            .iter()
            .filter(|l| known(l).is_none())
            .map(|l| l.name.clone())
            .collect();
        let mut fetched = stale
            .iter()
            .cloned()
            .zip(vault.current_with_policy_many(&stale)?)
            .collect::<HashMap<_, _>>();
        for listed in page {
            let name = &listed.name;
            let (version, attributes, policy, fresh) = match known(listed) {
                Some((version, attributes, policy)) => {
                    // The listing may show other attributes (enabled or disabled outside
                    // certroll): the step after a verb judges from what is recorded.
                    if seen.get(name).and_then(|s| s.attributes) != Some(attributes) {
                        q::set_remote_attributes(conn, name, Some(attributes))?;
                    }
                    (version, attributes, policy, None)
                }
                None => {
                    let Some(Some((current, policy))) = fetched.remove(name) else {
                        // Gone (deleted, purged) or only a pending request: judged no more
                        // until it is read again.
                        if touched.contains(name) {
                            q::set_remote_attributes(conn, name, None)?;
                            q::untouch_remote(conn, name)?;
                        }
                        continue;
                    };
                    let attributes = q::RemoteAttributes {
                        enabled: current.enabled,
                        nbf: current.nbf,
                        exp: current.exp,
                    };
                    let fresh = q::RemoteSeen {
                        version: current.version.clone(),
                        thumbprint: Some(crate::pki::sha1_thumbprint(&current.cert_der)),
                        policy_json: Some(policy.to_string()),
                        attributes: Some(attributes),
                    };
                    (current.version, attributes, policy, Some(fresh))
                }
            };
            if attributes.enabled {
                for t in email_triggers_of(&policy) {
                    let at = crate::ops::lifetime::fires_at(t, attributes.nbf, attributes.exp);
                    if at <= now {
                        let new = NewEvent {
                            kind: EMAIL_CONTACTS,
                            name,
                            version: &version,
                            trigger: &trigger_text(t),
                            at,
                            not_after: attributes.exp,
                            previous: None,
                        };
                        queued += u64::from(q::queue(conn, &new, now, unsent)?);
                    }
                }
            }
            // Read again: record it (and find renewals if its newest version changed).
            let Some(fresh) = fresh else {
                continue;
            };
            let last_seen = seen.get(name.as_str()).map(|s| &s.version);
            if last_seen != Some(&version) && record_renewals && !(first_scan && last_seen.is_none()) {
                let stamps = vault.version_stamps(name)?;
                // After the version last seen; for a new name (or one whose seen version is
                // gone: purged and made again), after its first.
                let from = last_seen
                    .and_then(|v| stamps.iter().position(|s| &s.version == v))
                    .unwrap_or(0);
                for pair in stamps[from..].windows(2) {
                    renewals.push((name.clone(), pair[1].clone(), pair[0].version.clone()));
                }
                if !stamps.iter().any(|s| s.version == version) {
                    // The listing lags the newest version: look again next scan (it stays
                    // touched).
                    continue;
                }
            }
            q::set_remote_seen(conn, name, &fresh, now)?;
        }
    }
    if read != RemoteRead::Touched {
        // What the listing no longer shows is gone: judged no more until it is listed again.
        let listed: HashSet<&str> = listing.iter().map(|l| l.name.as_str()).collect();
        for (name, s) in &seen {
            if !listed.contains(name.as_str()) && s.attributes.is_some() {
                q::set_remote_attributes(conn, name, None)?;
            }
        }
        for name in touched.iter().filter(|n| !listed.contains(n.as_str())) {
            q::untouch_remote(conn, name)?;
        }
        q::set_remote_listed_at(conn, now)?;
    }
    renewals.sort_by(|a, b| (a.1.created, &a.0).cmp(&(b.1.created, &b.0)));
    for (name, stamp, previous) in &renewals {
        let new = NewEvent {
            kind: RENEWED,
            name,
            version: &stamp.version,
            trigger: "",
            at: stamp.created,
            not_after: stamp.exp,
            previous: Some(previous),
        };
        queued += u64::from(q::queue(conn, &new, now, unsent)?);
    }
    if first_scan {
        q::set_remote_scanned(conn)?;
    }
    Ok(queued)
}

/// The listing a [`RemoteRead::Touched`] scan works through, from the ledger instead of the
/// vault: every certificate recorded with its attributes as recorded (unchanged, so nothing is
/// read), and every touched one without a thumbprint (so it is read), in name order.
fn ledger_listing(
    seen: &HashMap<String, q::RemoteSeen>,
    touched: &HashSet<String>,
) -> Vec<ListedCertificate> {
    let mut out: Vec<ListedCertificate> = seen
        .iter()
        .filter(|(name, _)| !touched.contains(*name))
        .filter_map(|(name, s)| {
            let a = s.attributes?;
            Some(ListedCertificate {
                name: name.clone(),
                thumbprint: s.thumbprint.clone(),
                enabled: Some(a.enabled),
                nbf: Some(a.nbf),
                exp: Some(a.exp),
            })
        })
        .collect();
    out.extend(touched.iter().map(|name| ListedCertificate {
        name: name.clone(),
        thumbprint: None,
        enabled: None,
        nbf: None,
        exp: None,
    }));
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
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

    /// What a ledger owes the contacts, as the mail lists it.
    fn owed_mail(conn: &Connection) -> Vec<(String, String, String, String, Option<String>)> {
        q::owed(conn, q::Channel::Mail)
            .unwrap()
            .into_iter()
            .map(|e| (e.kind, e.name, e.version, e.trigger, e.previous))
            .collect()
    }

    /// Adds to `vault` a version of `name` under [`POLICY`]: see [`add_with_policy`].
    fn add(vault: &mut crate::backend::local::LocalBackend, name: &str, nbf: OffsetDateTime) {
        add_with_policy(vault, name, POLICY, nbf);
    }

    /// Adds to `vault` a version of `name` under `policy_json`: a self-signed certificate valid
    /// 100 days from `nbf`.
    fn add_with_policy(
        vault: &mut crate::backend::local::LocalBackend,
        name: &str,
        policy_json: &str,
        nbf: OffsetDateTime,
    ) {
        let (der, key) = crate::store::test_support::self_signed(nbf, 100);
        let new = crate::backend::types::NewVersion {
            name,
            policy_json,
            cert_der: &der,
            key_pkcs8: key.pkcs8_der(),
            kty: "EC",
            exportable: true,
            issuer: None,
            facts: None,
            new_key: false,
        };
        vault.create_versions(&[new], nbf).unwrap();
    }

    #[test]
    fn a_remote_vault_read_through_the_trait_gives_the_same_notices_as_the_store_scan() {
        use crate::backend::local::LocalBackend;
        let t0 = datetime!(2026-01-01 0:00 UTC);
        let mut vault = LocalBackend::new(Store::open_empty().unwrap());
        let ledger = Store::open_empty().unwrap();
        // Both scans over the same history at the same instants: the store's own (the local
        // backend's notify) and the trait's into a separate ledger (the azure backend's).
        let both = |vault: &LocalBackend, now: OffsetDateTime| {
            let local = scan(vault.store().conn(), now, Unsent::default()).unwrap();
            let remote =
                scan_vault(ledger.conn(), vault, now, Unsent::default(), RemoteRead::Listing).unwrap();
            (local, remote)
        };
        add(&mut vault, "dev-a", t0);
        add(&mut vault, "dev-b", t0);
        assert_eq!(both(&vault, t0), (0, 0), "first versions are not renewals");
        assert_eq!(both(&vault, t0 + time::Duration::days(79)), (0, 0));
        assert_eq!(both(&vault, t0 + time::Duration::days(80)), (2, 2));
        assert_eq!(both(&vault, t0 + time::Duration::days(90)), (0, 0), "never twice");

        // Two renewals of `a` and a new name `c` with two versions, with no scan in between.
        let t1 = t0 + time::Duration::days(85);
        add(&mut vault, "dev-a", t1);
        add(&mut vault, "dev-c", t1);
        add(&mut vault, "dev-a", t1 + time::Duration::days(1));
        add(&mut vault, "dev-c", t1 + time::Duration::days(1));
        let now = t1 + time::Duration::days(2);
        assert_eq!(both(&vault, now), (3, 3));
        assert_eq!(both(&vault, now), (0, 0), "a rerun queues nothing");
        let local = owed_mail(vault.store().conn());
        assert_eq!(local.len(), 5, "{local:?}");
        assert_eq!(owed_mail(ledger.conn()), local);
    }

    #[test]
    fn a_remote_scan_reads_again_only_what_changed_or_what_certroll_or_refresh_asks_for() {
        use crate::backend::local::LocalBackend;
        const QUIET: &str = r#"{"lifetime_actions":[]}"#;
        let t0 = datetime!(2026-01-01 0:00 UTC);
        let mut vault = LocalBackend::new(Store::open_empty().unwrap());
        let ledger = Store::open_empty().unwrap();
        let scan = |vault: &LocalBackend, now: OffsetDateTime, refresh: bool| {
            let read = if refresh {
                RemoteRead::Everything
            } else {
                RemoteRead::Listing
            };
            scan_vault(ledger.conn(), vault, now, Unsent::default(), read).unwrap()
        };
        add_with_policy(&mut vault, "dev-a", QUIET, t0);
        add_with_policy(&mut vault, "dev-b", QUIET, t0);
        let now = t0 + time::Duration::days(90);
        assert_eq!(scan(&vault, now, false), 0, "no lifetime actions yet");

        // A policy changed behind the ledger's back (the newest versions unchanged) is not read
        // again: the scan keeps the policy it read with those versions.
        vault.set_policy("dev-a", POLICY, now).unwrap();
        vault.set_policy("dev-b", POLICY, now).unwrap();
        assert_eq!(scan(&vault, now, false), 0, "the cached policies stand");

        // certroll's own policy write clears the name's cached policy: read again, it fires.
        q::forget_remote_policy(ledger.conn(), "dev-a").unwrap();
        assert_eq!(scan(&vault, now, false), 1);
        // `refresh` reads every certificate again.
        assert_eq!(scan(&vault, now, true), 1);
        assert_eq!(scan(&vault, now, true), 0, "never twice");

        // A new version (a new thumbprint) is read again: its renewal, then its own 80%.
        let t1 = now + time::Duration::days(1);
        add_with_policy(&mut vault, "dev-a", QUIET, t1);
        assert_eq!(scan(&vault, t1, false), 1, "the renewal");
        assert_eq!(
            scan(&vault, t1 + time::Duration::days(80), false),
            0,
            "QUIET: no action"
        );
        let seen = q::remote_seen(ledger.conn()).unwrap();
        let newest = vault.current("dev-a").unwrap().unwrap();
        assert_eq!(seen["dev-a"].version, newest.version);
        assert_eq!(
            seen["dev-a"].thumbprint.as_deref(),
            Some(crate::pki::sha1_thumbprint(&newest.cert_der).as_str())
        );
        let owed: Vec<(String, String)> = owed_mail(ledger.conn())
            .into_iter()
            .map(|(kind, name, ..)| (kind, name))
            .collect();
        assert_eq!(
            owed,
            [
                (EMAIL_CONTACTS.to_string(), "dev-a".to_string()),
                (EMAIL_CONTACTS.to_string(), "dev-b".to_string()),
                (RENEWED.to_string(), "dev-a".to_string())
            ]
        );
    }

    #[test]
    fn a_touched_scan_reads_the_names_certroll_wrote_and_judges_the_rest_from_the_ledger() {
        use crate::backend::local::LocalBackend;
        let t0 = datetime!(2026-01-01 0:00 UTC);
        let mut vault = LocalBackend::new(Store::open_empty().unwrap());
        let ledger = Store::open_empty().unwrap();
        let scan = |vault: &LocalBackend, now: OffsetDateTime, read: RemoteRead| {
            scan_vault(ledger.conn(), vault, now, Unsent::default(), read).unwrap()
        };
        for name in ["dev-a", "dev-b", "dev-d"] {
            add(&mut vault, name, t0);
        }
        assert_eq!(scan(&vault, t0, RemoteRead::Listing), 0);

        // Made outside certroll (nothing touched): a renewal of `b` and a new name `c`. The
        // touched scan does not see them; it sees what certroll touched.
        let t1 = t0 + time::Duration::days(10);
        add(&mut vault, "dev-b", t1);
        add(&mut vault, "dev-c", t0);
        assert_eq!(scan(&vault, t1, RemoteRead::Touched), 0, "untouched: not read");
        q::touch_remote(ledger.conn(), "dev-b").unwrap();
        let d = vault.current("dev-d").unwrap().unwrap();
        vault.set_enabled(&d, false, t1).unwrap();
        q::touch_remote(ledger.conn(), "dev-d").unwrap();
        assert_eq!(scan(&vault, t1, RemoteRead::Touched), 1, "the renewal of b");
        assert!(
            q::touched_remote(ledger.conn()).unwrap().is_empty(),
            "read: untouched"
        );

        // Day 80: `a`'s 80% is judged from the ledger (never read again); `d` was read again
        // disabled, so it is not; `b`'s new version fires at its own 80%.
        let t80 = t0 + time::Duration::days(80);
        assert_eq!(scan(&vault, t80, RemoteRead::Touched), 1);
        assert_eq!(scan(&vault, t80, RemoteRead::Touched), 0, "never twice");
        // The listing finds what was made outside certroll: `c`, whose 80% has passed.
        assert_eq!(scan(&vault, t80, RemoteRead::Listing), 1);
        let owed: Vec<(String, String)> = owed_mail(ledger.conn())
            .into_iter()
            .map(|(kind, name, ..)| (kind, name))
            .collect();
        let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter().map(|(k, n)| (k.to_string(), n.to_string())).collect()
        };
        assert_eq!(
            owed,
            pairs(&[
                (RENEWED, "dev-b"),
                (EMAIL_CONTACTS, "dev-a"),
                (EMAIL_CONTACTS, "dev-c")
            ])
        );

        // The listing interval: due when never listed, when `every` has passed, or when the
        // clock moved back; zero: always.
        let day = time::Duration::days(1);
        assert!(!listing_due(ledger.conn(), t80 + time::Duration::hours(23), day).unwrap());
        assert!(listing_due(ledger.conn(), t80 + day, day).unwrap());
        assert!(listing_due(ledger.conn(), t80 - time::Duration::hours(1), day).unwrap());
        assert!(listing_due(ledger.conn(), t80, time::Duration::ZERO).unwrap());
        let fresh = Store::open_empty().unwrap();
        assert!(listing_due(fresh.conn(), t80, day).unwrap(), "never listed");
    }

    #[test]
    fn the_first_scan_of_a_remote_vault_does_not_replay_its_history() {
        let t0 = datetime!(2026-01-01 0:00 UTC);
        let mut store = Store::open_empty().unwrap();
        add_version(&mut store, "dev-a", t0);
        add_version(&mut store, "dev-a", t0 + time::Duration::days(1));
        let vault = crate::backend::local::LocalBackend::new(store);
        let ledger = Store::open_empty().unwrap();
        let now = t0 + time::Duration::days(2);
        assert_eq!(
            scan_vault(ledger.conn(), &vault, now, Unsent::default(), RemoteRead::Touched).unwrap(),
            0
        );
        assert!(owed_mail(ledger.conn()).is_empty());
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
