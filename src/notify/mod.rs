//! Notices: mail to the plan's contacts and a hook command, for `email-contacts` lifetime actions
//! that fired and for renewals that happened.
//!
//! Events are recorded durably in the store's outbox ([`crate::store::queries_notify`]) before
//! anything is sent: [`events::scan`] queues each event exactly once ever (an `email-contacts`
//! action per certificate version and trigger; a renewal per new version, found past a
//! watermark), and each delivery channel marks what it delivered only after it succeeded. A run
//! whose mail or hook fails leaves the events owed, and the next run (`certroll notify`, or any
//! mutating verb) sends them.
//!
//! Per run, each contact gets one mail summarising every event owed to the mail channel, and the
//! hook gets one JSON document with every event owed to it. If one contact's mail fails, the
//! contacts that got it are recorded and only the others are mailed again. A channel the plan
//! does not configure (no `[mail]`, no `[hooks]`) settles its events unsent: they are recorded,
//! and configuring the channel later does not replay them. Mail that is configured but whose
//! settings do not resolve (a password variable missing) keeps its events owed.
//!
//! On `kind = "azure"` the vault is Key Vault: the scan reads it through the [`crate::backend::Vault`]
//! trait ([`events::scan_vault`]), and the ledger stays in the local store beside the plan, as
//! the journal does. The vault's contacts are Key Vault's. The step after a verb reads from Key
//! Vault only the certificates certroll wrote since the last scan and judges the rest from the
//! ledger, listing the whole vault at most once per the plan's `notify_listing_hours`
//! ([`events::RemoteRead`]); `certroll notify` always lists it.
//!
//! Delivery is at least once: a certroll killed after the server accepted a mail and before the
//! store recorded it mails that contact again. The store's writer lock is held for the whole
//! run, so two certroll processes never send the same notices.

pub mod events;
pub mod hook;
pub mod mail;

pub use events::RemoteRead;

use crate::backend::azure::AzureVault;
use crate::backend::local::LocalBackend;
use crate::backend::{BackendError, Vault as _};
use crate::ops::BackendSettings;
use crate::plan::{BackendConfig, HookConfig, Plan};
use crate::store::queries_notify::{self as q, Channel, StoredEvent};
use crate::store::{OpenOptions, Store};
use anyhow::{Context as _, Result};
use mail::MailSettings;
use serde::Serialize;
use std::collections::HashSet;
use std::time::Duration;
use time::OffsetDateTime;

/// Where notices go: resolved before any work is done, so a bad setting is an input error.
#[derive(Debug, Default)]
pub struct Channels {
    /// Mail, when the plan has `[mail]` and its settings resolved.
    pub mail: Option<MailSettings>,
    /// Whether the plan has `[mail]` (even if its settings did not resolve this time: then the
    /// notices stay owed).
    pub mail_planned: bool,
    /// The hook, when the plan has `[hooks]`.
    pub hook: Option<HookConfig>,
    /// Environment variables the hook must not see (passwords, the store key).
    pub secret_vars: Vec<String>,
}

impl Channels {
    /// The channels of `plan`, with the `CERTROLL_SMTP_*` overrides read through `env`.
    pub fn resolve(plan: &Plan, env: &dyn Fn(&str) -> Option<String>) -> Result<Channels> {
        Ok(Channels {
            mail: MailSettings::resolve(plan, env)?,
            ..Channels::without_mail(plan)
        })
    }

    /// The channels of `plan` with mail left out (its settings did not resolve).
    pub fn without_mail(plan: &Plan) -> Channels {
        Channels {
            mail: None,
            mail_planned: plan.mail.is_some(),
            hook: plan.hooks.clone(),
            secret_vars: Channels::secret_vars(plan),
        }
    }

    fn secret_vars(plan: &Plan) -> Vec<String> {
        let mut vars = vec![
            "CERTROLL_SMTP_PASSWORD".to_string(),
            "CERTROLL_STORE_KEY".to_string(),
        ];
        if let Some(var) = plan.mail.as_ref().and_then(|m| m.password_env.clone()) {
            vars.push(var);
        }
        vars
    }

    /// The channels of `plan` from the process environment.
    pub fn from_env(plan: &Plan) -> Result<Channels> {
        Channels::resolve(plan, &|k| std::env::var(k).ok())
    }
}

/// One event, as reported, mailed and handed to the hook.
#[derive(Debug, Clone, Serialize)]
pub struct EventReport {
    /// Queue order.
    pub id: i64,
    /// `email-contacts` (a lifetime action fired) or `renewed` (a new version replaced one).
    pub kind: String,
    /// The vault certificate name (`ca-root`, `dev-sensor-01`).
    pub certificate: String,
    /// The plan target it belongs to (`ca:root`, `device:sensor-01`), when there is one.
    pub target: Option<String>,
    /// The version the event is about.
    pub version: String,
    /// For `email-contacts`: the trigger (`lifetime_percentage = 80`).
    pub trigger: Option<String>,
    /// When the trigger fired, or when the new version was created.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// The version's notAfter.
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// For `renewed`: the version it replaced.
    pub previous_version: Option<String>,
}

impl From<&StoredEvent> for EventReport {
    fn from(e: &StoredEvent) -> Self {
        let target = if let Some(ca) = e.name.strip_prefix("ca-") {
            Some(format!("ca:{ca}"))
        } else {
            e.name.strip_prefix("dev-").map(|d| format!("device:{d}"))
        };
        EventReport {
            id: e.id,
            kind: e.kind.clone(),
            certificate: e.name.clone(),
            target,
            version: e.version.clone(),
            trigger: (!e.trigger.is_empty()).then(|| e.trigger.clone()),
            at: e.at,
            not_after: e.not_after,
            previous_version: e.previous.clone(),
        }
    }
}

/// One attempt (or, on a dry run, one intended attempt) to deliver.
#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    /// `mail` or `hook`.
    pub channel: &'static str,
    /// The contact, or the hook's program.
    pub to: String,
    /// How many events it carries.
    pub events: u64,
    /// `sent`, `failed` or `would-send`.
    pub outcome: &'static str,
    /// What went wrong (never a password).
    pub error: Option<String>,
}

/// What a notify run did.
#[derive(Debug, Clone, Serialize)]
pub struct NotifyReport {
    /// Nothing was recorded or sent.
    pub dry_run: bool,
    /// The instant the triggers were judged at.
    #[serde(with = "time::serde::rfc3339")]
    pub now: OffsetDateTime,
    /// Events this run found and queued (on a dry run: would queue). With neither `[mail]` nor
    /// `[hooks]`, renewals are not queued.
    pub queued: u64,
    /// Every event that was owed to a channel at delivery time, oldest first.
    pub events: Vec<EventReport>,
    /// Whether `[mail]` is configured.
    pub mail_configured: bool,
    /// Whether `[hooks]` is configured.
    pub hook_configured: bool,
    /// The deliveries, mail first.
    pub deliveries: Vec<Delivery>,
    /// Events still owed to the contacts after this run.
    pub owed_mail: u64,
    /// Events still owed to the hook after this run.
    pub owed_hook: u64,
}

impl NotifyReport {
    /// Whether a delivery failed (exit code 1).
    pub fn failed(&self) -> bool {
        self.deliveries.iter().any(|d| d.outcome == "failed")
    }
}

/// Opens the plan's store for notify, or `None` if there is none yet (nothing to notify). On
/// `kind = "azure"` this is the store beside the plan, which keeps the notices ledger.
fn open_store(plan: &Plan, settings: &BackendSettings, write: bool) -> Result<Option<Store>> {
    let BackendConfig::Local { path, key_file } = &plan.backend;
    if !path.exists() {
        return Ok(None);
    }
    let opts = OpenOptions {
        path: path.clone(),
        key_file: settings.key_file.clone().or_else(|| key_file.clone()),
        create: false,
        write,
        lock_timeout: settings.lock_timeout.unwrap_or(Duration::from_secs(30)),
    };
    let store =
        Store::open(&opts).with_context(|| format!("opening the store of {}", plan.path.display()))?;
    Ok(Some(store))
}

/// The vault to scan when it is not the store: Key Vault on `kind = "azure"` (None for a local
/// plan). Notify reads only names, newest versions, policies, version listings and contacts,
/// all from Key Vault, so the client's own local part is an empty scratch store.
fn remote_vault(plan: &Plan) -> Result<Option<AzureVault>> {
    let Some(config) = &plan.azure else {
        return Ok(None);
    };
    let scratch = LocalBackend::new(Store::open_empty()?);
    AzureVault::connect(config, scratch).map(Some).map_err(|e| {
        let text = e.told(&plan.path, config);
        if e.is_input() {
            crate::error::input(text)
        } else {
            anyhow::anyhow!(text)
        }
    })
}

/// The JSON document the hook reads on stdin.
#[derive(Serialize)]
struct HookInput<'a> {
    source: &'static str,
    plan: String,
    #[serde(with = "time::serde::rfc3339")]
    now: OffsetDateTime,
    events: &'a [&'a EventReport],
}

/// Scans for events, queues them, and delivers what is owed on the configured channels. On a
/// dry run the scan is rolled back and nothing is sent. `read` says how much of a remote vault
/// (Key Vault on `kind = "azure"`) the scan reads; the local store's scan is one query and
/// always reads everything. [`RemoteRead::Touched`] is the step after a verb: it reads the
/// whole listing anyway when the plan's `notify_listing_hours` have passed since the last one
/// ([`events::listing_due`]).
pub fn notify(
    plan: &Plan,
    channels: &Channels,
    settings: &BackendSettings,
    now: OffsetDateTime,
    dry_run: bool,
    read: RemoteRead,
) -> Result<NotifyReport> {
    let mut report = NotifyReport {
        dry_run,
        now,
        queued: 0,
        events: vec![],
        mail_configured: channels.mail.is_some(),
        hook_configured: channels.hook.is_some(),
        deliveries: vec![],
        owed_mail: 0,
        owed_hook: 0,
    };
    let Some(mut store) = open_store(plan, settings, !dry_run)? else {
        return Ok(report);
    };
    let err = |store: &Store, e: crate::store::StoreError| match e {
        crate::store::StoreError::Sqlite { path, source } if path.as_os_str().is_empty() => store.err(source),
        other => other,
    };

    let remote = remote_vault(plan)?;
    // The vault's contacts once they are set (`vault contacts set`), else the plan's.
    let stored_contacts = match &remote {
        Some(vault) => vault.contacts()?,
        None => crate::store::queries_vault::contacts_get(store.conn()).map_err(|e| err(&store, e))?,
    };
    // Queue, then read what is owed, in one transaction (rolled back on a dry run).
    store.begin_batch()?;
    let scanned = (|| {
        let unsent = q::Unsent {
            mail: !channels.mail_planned,
            hook: channels.hook.is_none(),
        };
        let queued = match &remote {
            Some(vault) => {
                let every = plan
                    .azure
                    .as_ref()
                    .map_or(0, |c| i64::from(c.notify_listing_hours));
                let read = match read {
                    RemoteRead::Touched
                        if events::listing_due(store.conn(), now, time::Duration::hours(every))? =>
                    {
                        RemoteRead::Listing
                    }
                    other => other,
                };
                tracing::debug!(?read, "notify: reading Key Vault");
                events::scan_vault(store.conn(), vault, now, unsent, read)?
            }
            None => events::scan(store.conn(), now, unsent)?,
        };
        if !channels.mail_planned {
            q::skip_owed(store.conn(), Channel::Mail, now)?;
        }
        if channels.hook.is_none() {
            q::skip_owed(store.conn(), Channel::Hook, now)?;
        }
        let mail = q::owed(store.conn(), Channel::Mail)?;
        let hook = q::owed(store.conn(), Channel::Hook)?;
        let partly = q::partly_mailed(store.conn())?;
        Ok::<_, BackendError>((queued, mail, hook, partly))
    })();
    let (queued, owed_mail, owed_hook, partly) = match scanned {
        Ok(v) => v,
        Err(e) => {
            store.rollback_batch();
            return Err(match e {
                BackendError::Store(e) => err(&store, e).into(),
                other => other.into(),
            });
        }
    };
    if dry_run {
        store.rollback_batch();
    } else {
        store.commit_batch()?;
    }
    report.queued = queued;
    // Every event owed on some channel, once, oldest first.
    let all: std::collections::BTreeMap<i64, EventReport> = owed_mail
        .iter()
        .chain(owed_hook.iter())
        .map(|e| (e.id, EventReport::from(e)))
        .collect();
    report.events = all.values().cloned().collect();
    report.owed_mail = owed_mail.len() as u64;
    report.owed_hook = owed_hook.len() as u64;

    if let Some(mail) = &channels.mail
        && !owed_mail.is_empty()
    {
        let partly: HashSet<(i64, &str)> = partly.iter().map(|(id, c)| (*id, c.as_str())).collect();
        let mut all_sent = true;
        let mut unreachable: Option<String> = None;
        let contacts = stored_contacts.as_ref().unwrap_or(&mail.contacts);
        for contact in contacts {
            let todo: Vec<&EventReport> = owed_mail
                .iter()
                .filter(|e| !partly.contains(&(e.id, contact.as_str())))
                .filter_map(|e| all.get(&e.id))
                .collect();
            if todo.is_empty() {
                continue;
            }
            let mut delivery = Delivery {
                channel: "mail",
                to: contact.clone(),
                events: todo.len() as u64,
                outcome: "would-send",
                error: None,
            };
            if let Some(why) = &unreachable {
                delivery.outcome = "failed";
                delivery.error = Some(format!("not tried: {why}"));
            } else if !dry_run {
                match mail.send(contact, &mail::subject(&todo), mail::body(plan, &todo)) {
                    Ok(()) => {
                        delivery.outcome = "sent";
                        let sent: Vec<i64> = todo.iter().map(|e| e.id).collect();
                        store.write(|conn, _| q::record_mailed_to(conn, &sent, contact, now))?;
                    }
                    Err(e) => {
                        all_sent = false;
                        delivery.outcome = "failed";
                        if e.unreachable {
                            unreachable = Some(format!(
                                "the connection to {} failed for the previous contact",
                                mail.describe()
                            ));
                        }
                        delivery.error = Some(e.message);
                    }
                }
            }
            report.deliveries.push(delivery);
        }
        if !dry_run && all_sent {
            let ids: Vec<i64> = owed_mail.iter().map(|e| e.id).collect();
            store.write(|conn, _| q::mark_delivered(conn, Channel::Mail, &ids, now))?;
            report.owed_mail = 0;
        }
    }

    if let Some(hook_cfg) = &channels.hook
        && !owed_hook.is_empty()
    {
        let todo: Vec<&EventReport> = owed_hook.iter().filter_map(|e| all.get(&e.id)).collect();
        let mut delivery = Delivery {
            channel: "hook",
            to: hook_cfg.command[0].clone(),
            events: todo.len() as u64,
            outcome: "would-send",
            error: None,
        };
        if !dry_run {
            let mut input = serde_json::to_vec(&HookInput {
                source: "certroll",
                plan: plan.path.display().to_string(),
                now,
                events: &todo,
            })?;
            input.push(b'\n');
            match hook::run(hook_cfg, input, &channels.secret_vars) {
                Ok(()) => {
                    delivery.outcome = "sent";
                    let ids: Vec<i64> = owed_hook.iter().map(|e| e.id).collect();
                    store.write(|conn, _| q::mark_delivered(conn, Channel::Hook, &ids, now))?;
                    report.owed_hook = 0;
                }
                Err(e) => {
                    delivery.outcome = "failed";
                    delivery.error = Some(e);
                }
            }
        }
        report.deliveries.push(delivery);
    }
    Ok(report)
}
