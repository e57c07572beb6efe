//! `check`: for cron and monitoring. Reads everything, changes nothing, and says what is expired
//! or missing (critical), what has a lifetime action due or expires within the warning window
//! (warning), and when the next action falls due.

use super::lifetime::{self, Scheduled};
use super::{Access, BackendSettings, Target, ca_cert_name, open_verb_backend};
use crate::backend::types::VaultVersion;
use crate::backend::{Backend, EnrollmentService as _, Journal as _, Vault as _};
use crate::plan::{ActionKind, Delivery, LifetimeAction, Plan, Policy, Trigger};
use anyhow::Result;
use serde::Serialize;
use time::OffsetDateTime;

/// Options of `check`.
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    /// Only these targets; empty (with `vault_names` empty) = everything.
    pub targets: Vec<Target>,
    /// Only these certificates made in the vault alone (`vault:NAME` targets).
    pub vault_names: Vec<String>,
    /// Warn about certificates that expire within this many days, even with no action due.
    pub warn_within_days: u32,
    /// Treat certificates that expire within this many days as critical.
    pub critical_within_days: u32,
    /// How to open the backend.
    pub backend: BackendSettings,
}

/// The monitoring level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Nothing to do.
    Ok,
    /// An action is due, or expiry is near.
    Warning,
    /// Expired, missing, or inside the critical window.
    Critical,
}

impl Level {
    /// The monitoring exit code (0 OK, 1 warning, 2 critical).
    pub fn exit_code(self) -> u8 {
        match self {
            Level::Ok => 0,
            Level::Warning => 1,
            Level::Critical => 2,
        }
    }
}

/// A lifetime action placed in time, as reported.
#[derive(Debug, Clone, Serialize)]
pub struct ActionReport {
    /// `auto-renew` or `email-contacts`.
    pub action: &'static str,
    /// `days_before_expiry = N` or `lifetime_percentage = N`.
    pub trigger: String,
    /// When it fires (or fired).
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

impl From<Scheduled> for ActionReport {
    fn from(s: Scheduled) -> Self {
        ActionReport {
            action: match s.action {
                ActionKind::AutoRenew => "auto-renew",
                ActionKind::EmailContacts => "email-contacts",
            },
            trigger: match s.trigger {
                Trigger::DaysBeforeExpiry(d) => format!("days_before_expiry = {d}"),
                Trigger::LifetimePercentage(p) => format!("lifetime_percentage = {p}"),
            },
            at: s.at,
        }
    }
}

/// Something that is not OK.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// `ca:NAME`, `device:ID`, `vault:NAME` for a certificate the plan does not own,
    /// `group:NAME` for an expired CA certificate in a group's slot, `service-ca:NAME` for
    /// one still among the enrollment service's CA certificates, `service-group:NAME` /
    /// `service-enrollment:NAME` for a group or individual enrollment of the service the plan
    /// does not declare, `run:N` for a run the journal holds unfinished, or `deliveries` for
    /// devices still owed their new certificate (a single one is named `device:ID`).
    pub target: String,
    /// warning or critical.
    pub level: Level,
    /// What is wrong, in words.
    pub reason: String,
    /// The certificate's notAfter, if there is one.
    #[serde(with = "time::serde::rfc3339::option")]
    pub not_after: Option<OffsetDateTime>,
    /// Lifetime actions that have fired.
    pub actions_due: Vec<ActionReport>,
}

/// The plan name of the CA whose version `issuer` (vault name, version id) is disabled and no
/// longer its current one, read once per version; None for any other version.
fn replaced_issuer(
    backend: &dyn Backend,
    c: &mut Checker<'_>,
    issuer: (String, String),
) -> Result<Option<String>> {
    if let Some(known) = c.replaced_issuers.get(&issuer) {
        return Ok(known.clone());
    }
    let replaced = match c.ca_current.get(&issuer.0) {
        Some((ca, current)) if *current != issuer.1 => backend
            .version(&issuer.0, &issuer.1)?
            .filter(|v| !v.enabled)
            .map(|_| ca.clone()),
        _ => None,
    };
    c.replaced_issuers.insert(issuer, replaced.clone());
    Ok(replaced)
}

/// The next action to fall due anywhere.
#[derive(Debug, Clone, Serialize)]
pub struct NextDue {
    /// Where.
    pub target: String,
    /// What and when.
    #[serde(flatten)]
    pub action: ActionReport,
}

/// Counts by level.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    /// Certificates with nothing to do.
    pub ok: u64,
    /// Certificates with a warning.
    pub warning: u64,
    /// Certificates (or devices) in a critical state.
    pub critical: u64,
    /// Devices revoked on purpose (a disabled individual enrollment): not a problem.
    pub revoked: u64,
}

/// What `check` found.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// The overall level.
    pub status: Level,
    /// The instant checked at.
    #[serde(with = "time::serde::rfc3339")]
    pub now: OffsetDateTime,
    /// Counts by level.
    pub counts: Counts,
    /// Every certificate that is not OK, CAs first, then devices in plan order.
    pub problems: Vec<Problem>,
    /// The next lifetime action to fire, if any.
    pub next_due: Option<NextDue>,
}

/// What a renewal of a certificate could reach: its issuing CA's current notAfter caps the
/// policy's validity.
#[derive(Clone, Copy)]
struct Renewal<'a> {
    /// The issuing CA's plan name.
    issuer: &'a str,
    /// The CA to renew first: the issuer, or the CA above it whose notAfter capped the issuer's.
    ca: &'a str,
    /// Its current version's notAfter.
    ca_not_after: OffsetDateTime,
    /// The certificate policy's validity, in days.
    validity_days: u32,
}

struct Checker<'a> {
    opts: &'a CheckOptions,
    now: OffsetDateTime,
    report: CheckReport,
    /// Soft-deleted certificates by vault name, with when they were deleted.
    deleted: std::collections::HashMap<String, OffsetDateTime>,
    /// Purged certificates a device (or the enrollment service, for a CA) still holds, by vault
    /// name, with what to do.
    purged: std::collections::HashMap<String, String>,
    /// The plan's notBefore skew: a certificate whose notBefore is further ahead was made with
    /// `--now` ahead of the clock, and a roll replaces it.
    skew: time::Duration,
    /// Each CA's vault name with its plan name and current version id.
    ca_current: std::collections::HashMap<String, (String, String)>,
    /// CA versions (vault name, version id) looked up: the CA's plan name where the version is
    /// disabled and another version replaced it (a breach), else None.
    replaced_issuers: std::collections::HashMap<(String, String), Option<String>>,
    /// The CA versions (vault name, version id) an open breach run declared compromised, each
    /// with the command that resumes that run: a device left on one is replaced by finishing
    /// the run (with its `--incident`), not by a new breach.
    open_breaches: std::collections::HashMap<(String, String), String>,
    /// The devices an open breach run has yet to replace, each with the command that resumes
    /// that run ([`super::held::open_breaches`]).
    breached_devices: std::collections::HashMap<String, String>,
    /// Of those, the ones a device breach has yet to replace
    /// ([`super::held::open_device_breaches`]): judged by its rerun alone.
    device_breaches: std::collections::HashMap<String, String>,
    /// The devices still owed the delivery of their new certificate
    /// ([`Backend::owed_devices`]); those a breach cut off are taken out as they are reported
    /// critical, and the rest get [`owed_deliveries`]'s warning.
    owed: std::collections::BTreeSet<String>,
    /// Issuing CA versions (vault name, version id) looked up per group: whether the group
    /// accepts certificates they signed ([`super::held::group_accepts`]), so 100k devices cost a look-up per
    /// group and CA version, not one each.
    accepted: std::collections::HashMap<(String, String, String), bool>,
    /// What the journal's finished breaches replaced, read at the first device or open device
    /// breach that needs it (one query for the fleet).
    breach_records: std::cell::OnceCell<super::held::BreachRecords>,
    /// The device already counted critical for another client's certificate in its
    /// enrollment: its other lines are listed, but the device is counted once (trial az15 N3:
    /// it was counted both `ok` and `critical`).
    counted: Option<String>,
}

/// [`Checker::ca_name`] of the CAs' current versions `ca_current`.
fn ca_name(
    ca_current: &std::collections::HashMap<String, (String, String)>,
    issuer: &(String, String),
) -> String {
    ca_current
        .get(&issuer.0)
        .map(|(ca, _)| ca.clone())
        .unwrap_or_else(|| issuer.0.clone())
}

/// [`Checker::group_accepts`] with the look-ups so far, `accepted`.
fn group_accepts_once(
    accepted: &mut std::collections::HashMap<(String, String, String), bool>,
    backend: &dyn Backend,
    group: &str,
    slots: &[String],
    issuer: &(String, String),
) -> Result<bool> {
    let key = (group.to_string(), issuer.0.clone(), issuer.1.clone());
    if let Some(a) = accepted.get(&key) {
        return Ok(*a);
    }
    let a = super::held::group_accepts(backend, slots, issuer)?;
    accepted.insert(key, a);
    Ok(a)
}

impl Checker<'_> {
    /// [`super::held::BreachRecords::finish`] for device `id` holding `issued`.
    fn breach_finish(
        &self,
        backend: &dyn Backend,
        id: &str,
        issued: &VaultVersion,
    ) -> Result<Option<String>> {
        Ok(
            super::held::BreachRecords::once(&self.breach_records, backend)?.finish(
                &self.breached_devices,
                id,
                issued,
            ),
        )
    }

    /// The plan name of the CA whose vault name `issuer` (vault name, version id) names; the
    /// vault name for one the plan does not declare.
    fn ca_name(&self, issuer: &(String, String)) -> String {
        ca_name(&self.ca_current, issuer)
    }

    /// [`super::held::group_accepts`], looked up once per group and issuing CA version.
    fn group_accepts(
        &mut self,
        backend: &dyn Backend,
        group: &str,
        slots: &[String],
        issuer: &(String, String),
    ) -> Result<bool> {
        group_accepts_once(&mut self.accepted, backend, group, slots, issuer)
    }

    /// Why `target`'s current version `cert` is disabled, and the way on (trial az15: the line
    /// named none): an open breach that declared it compromised is finished by its rerun (which
    /// renews it); one disabled otherwise (`vault update --disable`, the portal) is enabled
    /// again, or, if that was for a compromise, replaced by a breach.
    fn disabled_reason(&self, target: &str, cert: &VaultVersion) -> String {
        let key = (cert.name.clone(), cert.version.clone());
        if let Some(rerun) = self.open_breaches.get(&key) {
            return format!(
                "the certificate version is disabled: an open breach declared it compromised; \
                 `{rerun}` finishes that breach and replaces it"
            );
        }
        let (name, version) = (&cert.name, &cert.version);
        let breach = match target.split_once(':') {
            Some(("ca" | "device", _)) => format!(
                "; if it was disabled because its key is compromised, `certroll roll-primary --breach {target} \
                 --yes` replaces it"
            ),
            _ => String::new(),
        };
        format!(
            "the certificate version is disabled: `certroll vault update {name} --version {version} --enable` \
             enables it again{breach}"
        )
    }

    fn look(
        &mut self,
        target: String,
        actions: &[LifetimeAction],
        cert: Option<&VaultVersion>,
        renewal: Option<Renewal<'_>>,
    ) {
        let Some(cert) = cert else {
            let name = match target.split_once(':') {
                Some(("ca", ca)) => ca_cert_name(ca),
                Some(("device", id)) => super::device_cert_name(id),
                _ => String::new(),
            };
            // A soft-deleted certificate is still held (by the device, or as the CA's chain):
            // "no certificate" would send the reader to `issue` instead of `vault recover`.
            let reason = match (self.deleted.get(&name), self.purged.get(&name)) {
                (Some(at), _) => format!(
                    "its certificate `{name}` is deleted in the vault (deleted {}); the device or CA still holds it, \
                     but nothing can renew it: `certroll vault recover {name}` brings it back",
                    crate::clock::rfc3339(*at)
                ),
                // Purged: the device still holds it, and only a new certificate helps.
                (None, Some(note)) => format!("its certificate `{name}` is gone from the vault: {note}"),
                (None, None) => format!("no certificate: `certroll issue {target}` issues it"),
            };
            self.add(Problem {
                target,
                level: Level::Critical,
                reason,
                not_after: None,
                actions_due: vec![],
            });
            return;
        };
        let (nbf, exp, now) = (cert.nbf, cert.exp, self.now);
        let due: Vec<ActionReport> = lifetime::due(actions, nbf, exp, now)
            .into_iter()
            .map(Into::into)
            .collect();
        if let Some(next) = lifetime::next(actions, nbf, exp, now)
            && self
                .report
                .next_due
                .as_ref()
                .is_none_or(|n| next.at < n.action.at)
        {
            self.report.next_due = Some(NextDue {
                target: target.clone(),
                action: next.into(),
            });
        }
        let critical_at = crate::clock::add_days(exp, -(self.opts.critical_within_days as i64));
        let warn_at = crate::clock::add_days(exp, -(self.opts.warn_within_days as i64));
        let (level, reason) = if now > exp {
            (
                Level::Critical,
                format!("expired at {}", crate::clock::rfc3339(exp)),
            )
        } else if now < nbf {
            let mut reason = format!("not valid before {}", crate::clock::rfc3339(nbf));
            // Made with `--now` ahead of the clock: refused until then, and replaced by a roll.
            if nbf > now.saturating_add(self.skew) {
                match target.split_once(':') {
                    Some(("device", id)) => reason.push_str(&format!(
                        " (made with --now ahead of the clock), so the service refuses it until then; \
                         `certroll roll-secondary device:{id}` replaces it with one valid now (so does the cron \
                         `certroll roll-secondary --due`)"
                    )),
                    Some(("ca", ca)) => reason.push_str(&format!(
                        " (made with --now ahead of the clock), so nothing under it is accepted until then; \
                         `certroll roll-secondary ca:{ca}` replaces it with one valid now, and what it signs"
                    )),
                    _ => {}
                }
            }
            (Level::Critical, reason)
        } else if !cert.enabled {
            (Level::Critical, self.disabled_reason(&target, cert))
        } else if self.opts.critical_within_days > 0 && now >= critical_at {
            (
                Level::Critical,
                format!("expires at {}", crate::clock::rfc3339(exp)),
            )
        } else if !due.is_empty() {
            let names: Vec<&str> = due.iter().map(|a| a.action).collect();
            let mut reason = format!("{} due", names.join(", "));
            // An auto-renew that cannot move the expiry later does not happen (`roll --due`
            // reports the device `capped`): the issuing CA has to be renewed first.
            if let Some(r) = renewal
                && names.contains(&"auto-renew")
                && crate::clock::add_days(now, r.validity_days as i64).min(r.ca_not_after) <= exp
            {
                reason = if r.ca == r.issuer {
                    format!(
                        "{reason}, but a renewal would end no later than this certificate: its issuing CA `{}` expires at {}; renew the issuing CA first (`certroll roll-secondary ca:{}`)",
                        r.ca,
                        crate::clock::rfc3339(r.ca_not_after),
                        r.ca
                    )
                } else {
                    format!(
                        "{reason}, but a renewal would end no later than this certificate: its issuing CA `{}` expires at {}, capped by CA `{}`, which no renewal of `{}` can move; renew CA `{}` first (`certroll roll-secondary ca:{}`)",
                        r.issuer,
                        crate::clock::rfc3339(r.ca_not_after),
                        r.ca,
                        r.issuer,
                        r.ca,
                        r.ca
                    )
                };
            }
            (Level::Warning, reason)
        } else if self.opts.warn_within_days > 0 && now >= warn_at {
            (
                Level::Warning,
                format!("expires at {}", crate::clock::rfc3339(exp)),
            )
        } else {
            if self.counted.as_ref() != Some(&target) {
                self.report.counts.ok += 1;
            }
            return;
        };
        self.add(Problem {
            target,
            level,
            reason,
            not_after: Some(exp),
            actions_due: due,
        });
    }

    fn add(&mut self, p: Problem) {
        match p.level {
            _ if self.counted.as_ref() == Some(&p.target) => {}
            Level::Critical => self.report.counts.critical += 1,
            Level::Warning => self.report.counts.warning += 1,
            Level::Ok => self.report.counts.ok += 1,
        }
        self.report.status = self.report.status.max(p.level);
        self.report.problems.push(p);
    }
}

/// Devices looked up per round trip.
const PAGE: usize = 2048;

/// Runs `check`.
pub fn check(plan: &Plan, opts: &CheckOptions, now: OffsetDateTime) -> Result<CheckReport> {
    for t in &opts.targets {
        t.check(plan)?;
    }
    let backend = open_verb_backend(plan, "check", Access::Preview, &opts.backend)?;
    let everything = opts.targets.is_empty() && opts.vault_names.is_empty();
    let wants = |t: Target| everything || opts.targets.contains(&t);
    // The open runs, read once: the breaches they leave open and the warning for each.
    let runs = backend.open_runs()?;
    let breach_records = std::cell::OnceCell::new();
    let mut c = Checker {
        opts,
        now,
        report: CheckReport {
            status: Level::Ok,
            now,
            counts: Counts::default(),
            problems: vec![],
            next_due: None,
        },
        deleted: backend
            .deleted_certificates(None)?
            .into_iter()
            .map(|d| (d.name, d.deleted))
            .collect(),
        purged: Default::default(),
        skew: plan.not_before_skew,
        ca_current: Default::default(),
        replaced_issuers: Default::default(),
        open_breaches: super::held::open_compromised_of(&runs),
        breached_devices: super::held::open_breaches_of(&runs),
        device_breaches: super::held::open_device_breaches(&backend, &runs, &breach_records)?,
        breach_records,
        owed: backend.owed_devices()?.into_iter().collect(),
        accepted: Default::default(),
        counted: None,
    };
    let mut ca_not_after = std::collections::BTreeMap::new();
    for ca in &plan.cas {
        if let Some(v) = backend.current(&ca_cert_name(&ca.name))? {
            ca_not_after.insert(ca.name.as_str(), v.exp);
            c.ca_current
                .insert(v.name.clone(), (ca.name.clone(), v.version.clone()));
        }
    }
    let renewal = |ca: &str, policy: &Policy| -> Option<Renewal<'_>> {
        let at = *ca_not_after.get(ca)?;
        // Name the CA whose renewal would move the cap: an issuer capped by its own issuer cannot.
        let issuer = plan.cas.iter().find(|c| c.name == ca)?.name.as_str();
        let ca = super::capping_ca(plan, &ca_not_after, issuer);
        let at = &at;
        Some(Renewal {
            issuer,
            ca,
            ca_not_after: *at,
            validity_days: policy.validity_days,
        })
    };
    for ca in &plan.cas {
        if wants(Target::Ca(ca.name.clone())) {
            let cert = backend.current(&ca_cert_name(&ca.name))?;
            let name = ca_cert_name(&ca.name);
            // Purged while the enrollment service still holds it: named so, as for devices.
            if cert.is_none()
                && !c.deleted.contains_key(&name)
                && backend.name_state(&name)?.is_none()
                && let Some(note) = super::vault::purged_note(&backend, &name)
            {
                c.purged.insert(name, note);
            }
            let policy = &plan.policies[&ca.policy];
            c.look(
                format!("ca:{}", ca.name),
                &policy.lifetime_actions,
                cert.as_ref(),
                // As a roll decides (`roll::cas::pending`): a CA is capped only when its issuer
                // cut the certificate it holds short by more than a day, or it is longer than
                // its (edited) policy gives.
                ca.issuer
                    .as_deref()
                    .filter(|_| {
                        cert.as_ref()
                            .is_some_and(|c| super::not_policy_length(c.created, c.exp, policy.validity_days))
                    })
                    .and_then(|i| renewal(i, policy)),
            );
        }
    }
    // Expired CA certificates the enrollment service still holds: harmless (nothing chains to
    // them) but to be deleted, which the next roll does.
    if everything {
        let expired = super::roll::expired_held(&backend, now, &[])?;
        for (name, at) in expired.service_cas {
            c.add(Problem {
                target: format!("service-ca:{name}"),
                level: Level::Warning,
                reason: format!(
                    "an expired CA certificate (expired at {}) is still among the enrollment service's CA certificates; the next roll removes it",
                    crate::clock::rfc3339(at)
                ),
                not_after: Some(at),
                actions_due: vec![],
            });
        }
        for (group, slot, at) in expired.slots {
            c.add(Problem {
                target: format!("group:{group}"),
                level: Level::Warning,
                reason: format!(
                    "the {} slot holds a CA certificate that expired at {}; the next roll removes it",
                    slot.word(),
                    crate::clock::rfc3339(at)
                ),
                not_after: Some(at),
                actions_due: vec![],
            });
        }
    }
    // A group whose signing CA reaches no verified CA certificate of the enrollment service
    // accepts none of its devices (issue 10 item 9): critical, with the way on.
    for (group, why) in super::roll::unaccepted_groups(plan, &backend)? {
        if wants(Target::Group(group.clone())) {
            c.add(Problem {
                target: format!("group:{group}"),
                level: Level::Critical,
                reason: why
                    .strip_prefix(&format!("group:{group}: "))
                    .unwrap_or(&why)
                    .to_string(),
                not_after: None,
                actions_due: vec![],
            });
        }
    }
    // A CA certificate another client put into a group's signing slot: certroll did not issue
    // it, no roll writes the group while it is there, and devices with certificates under it
    // register through the group. Critical, naming it and the way on; other groups as usual.
    for g in plan
        .groups
        .values()
        .filter(|g| wants(Target::Group(g.name.clone())))
    {
        let Some(state) = backend.group(&g.name)? else {
            continue;
        };
        for f in &state.foreign {
            c.add(Problem {
                target: format!("group:{}", g.name),
                level: Level::Critical,
                reason: format!(
                    "{}: a device with a certificate it signed registers through the group, and rolls of \
                     the group are refused while it is there. {}",
                    f.describe_in_group(&g.name),
                    super::roll::foreign_remedy(plan, g)
                ),
                not_after: f.not_after,
                actions_due: vec![],
            });
        }
    }
    // A group of the plan the service lacks, and a group of the service the plan no longer
    // declares: together, most likely a renamed `[groups.NAME]` table (issue 10 item 21).
    let mut service = None;
    for g in plan.groups.values() {
        // Before its CA is issued, the CA's own "no certificate" says it all.
        if !wants(Target::Group(g.name.clone()))
            || !ca_not_after.contains_key(g.signing_ca.as_str())
            || backend.group(&g.name)?.is_some()
        {
            continue;
        }
        let reason = match crate::ops::issue::renamed_from(plan, &backend, &g.name, &mut service)? {
            Some((old, count)) => format!(
                "not in the enrollment service, which holds group `{old}` ({count} registered device(s)) with the \
                 same signing CA `{}` that the plan no longer declares: was `[groups.{old}]` renamed to \
                 `[groups.{}]`? A group's name cannot change: rename the table back (or give it a signing CA of its own \
                 and `certroll issue group:{}`)",
                g.signing_ca, g.name, g.name
            ),
            None => format!(
                "not in the enrollment service yet: `certroll issue group:{}` issues it",
                g.name
            ),
        };
        c.add(Problem {
            target: format!("group:{}", g.name),
            level: Level::Critical,
            reason,
            not_after: None,
            actions_due: vec![],
        });
    }
    if everything {
        let groups = match service {
            Some(groups) => groups,
            None => backend.groups()?,
        };
        for s in groups.iter().filter(|s| !plan.groups.contains_key(&s.name)) {
            c.add(Problem {
                target: format!("service-group:{}", s.name),
                level: Level::Warning,
                reason: format!(
                    "the enrollment service holds group `{}`, which the plan does not declare (renamed or removed \
                     from the plan?); its devices register through it",
                    s.name
                ),
                not_after: None,
                actions_due: vec![],
            });
        }
    }
    if everything {
        for (name, reason) in undeclared_enrollments(plan, &backend)? {
            c.add(Problem {
                target: format!("service-enrollment:{name}"),
                level: Level::Warning,
                reason,
                not_after: None,
                actions_due: vec![],
            });
        }
    }
    // A run killed or stopped part-way (a breach roll half done leaves devices on a compromised
    // CA): nothing finishes it but running the same command again.
    if everything {
        for run in &runs {
            c.add(unfinished(run));
        }
    }
    // Every group's devices and every enrollment, in plan order, read in pages of them all: the
    // enrollments share the pages of the groups' devices rather than costing a read of each
    // service apiece (on azure, a page is a few DPS and hub queries).
    let mut owners: Vec<Owner<'_>> = Vec::new();
    let mut devices: Vec<(String, usize)> = Vec::new();
    for g in plan.groups.values() {
        let whole = wants(Target::Group(g.name.clone()));
        let ids = g
            .device_ids()
            .filter(|id| whole || opts.targets.contains(&Target::Device(id.clone())));
        let policy = &plan.policies[&g.device_policy];
        let at = owners.len();
        let state = backend.group(&g.name)?;
        let group_cut_off = match &state {
            Some(state) => super::held::group_disabled_by_another(&backend, &g.name, state.status)?,
            None => None,
        };
        // Another client's certificate in a slot, or no slot filled, is reported of the group
        // itself: its devices are not judged against its slots as well.
        let signing = state
            .filter(|s| s.foreign.is_empty())
            .map(|s| {
                [s.primary, s.secondary]
                    .into_iter()
                    .flatten()
                    .map(|slot| crate::pki::sha1_thumbprint(&slot.cert_der))
                    .collect::<Vec<_>>()
            })
            .filter(|tps| !tps.is_empty())
            .map(|tps| (g.name.as_str(), tps));
        if let Some(why) = &group_cut_off
            && whole
        {
            c.add(Problem {
                target: format!("group:{}", g.name),
                level: Level::Critical,
                reason: why.replacen("its enrollment group", "enrollment group", 1),
                not_after: None,
                actions_due: vec![],
            });
        }
        owners.push(Owner {
            policy,
            delivery: plan.delivery.channel(Some(&g.name), None),
            renewal: renewal(&g.signing_ca, policy),
            enrolled: false,
            group_cut_off,
            signing,
        });
        devices.extend(ids.map(|id| (id, at)));
    }
    for e in plan.enrollments.values() {
        if wants(Target::Enrollment(e.name.clone())) || opts.targets.contains(&Target::Device(e.name.clone()))
        {
            let policy = &plan.policies[&e.policy];
            let at = owners.len();
            owners.push(Owner {
                policy,
                delivery: plan.delivery.channel(None, Some(&e.name)),
                renewal: renewal(&e.issuer, policy),
                enrolled: true,
                group_cut_off: None,
                signing: None,
            });
            devices.push((e.name.clone(), at));
        }
    }
    for page in devices.chunks(PAGE) {
        check_devices(&backend, &mut c, page, &owners)?;
    }
    owed_deliveries(&mut c, &devices);
    // Certificates made in the vault alone (`vault create`, `import`, `merge`) have lifetime
    // actions of their own in their vault policy; they are checked when nothing narrower is
    // asked, or when named (`vault:NAME`).
    if everything || !opts.vault_names.is_empty() {
        let all = super::vault::renew::vault_only(plan, &backend)?;
        for name in &opts.vault_names {
            if !all.iter().any(|v| &v.name == name) {
                return Err(crate::error::input(format!(
                    "vault:{name} is not a certificate made in the vault alone (`certroll vault list` shows the \
                     vault's certificates; the plan's are checked as ca:, group:, enrollment: or device:)"
                )));
            }
        }
        for v in all
            .iter()
            .filter(|v| everything || opts.vault_names.contains(&v.name))
        {
            c.look(format!("vault:{}", v.name), &v.actions(), Some(&v.current), None);
        }
    }
    Ok(c.report)
}

/// The warning for a run the journal holds open: which, how far it got, what it stopped
/// before, and the command that finishes it.
fn unfinished(run: &crate::backend::types::JournalRun) -> Problem {
    let done = run.steps.iter().filter(|s| s.result.is_some()).count();
    let next = run
        .steps
        .iter()
        .find(|s| s.result.is_none())
        .map(|s| format!("; next: step {} ({}) of {}", s.seq, s.kind, s.target))
        .unwrap_or_default();
    Problem {
        target: format!("run:{}", run.id),
        level: Level::Warning,
        reason: format!(
            "run {} (`{}`, started {}) is unfinished: {done} of {} step(s) done{next}; \
             `{}` resumes it and finishes it",
            run.id,
            run.command,
            crate::clock::rfc3339(run.started),
            run.steps.len(),
            super::journal::resume_command(run)
        ),
        not_after: None,
        actions_due: vec![],
    }
}

/// The individual enrollments of the enrollment service that the plan declares neither as
/// `[enrollments.NAME]` nor as a group's device (a breach gives those one), each with what to
/// say: most likely a renamed table, when a declared enrollment the service lacks has the same
/// issuing CA (issue 10 item 21's kind, as `service-group:` for groups).
fn undeclared_enrollments(plan: &Plan, backend: &dyn Backend) -> Result<Vec<(String, String)>> {
    let service = backend.individuals()?;
    let mut orphans: Vec<&crate::backend::types::IndividualEnrollment> = service
        .iter()
        .filter(|e| !plan.enrollments.contains_key(&e.registration_id))
        .collect();
    if orphans.is_empty() {
        return Ok(Vec::new());
    }
    // One pass over the groups' ids (a file-listed group's look-up by id is linear).
    let grouped: std::collections::HashSet<String> =
        plan.groups.values().flat_map(|g| g.device_ids()).collect();
    orphans.retain(|e| !grouped.contains(&e.registration_id));
    let held: std::collections::HashSet<&str> = service.iter().map(|e| e.registration_id.as_str()).collect();
    let mut out = Vec::new();
    for o in orphans {
        let old = &o.registration_id;
        // The CA that issued the certificate it holds, as the vault recorded it.
        let issuer = backend
            .current(&super::device_cert_name(old))?
            .and_then(|v| v.issuer)
            .map(|(name, _)| name);
        let renamed = plan.enrollments.values().find(|e| {
            !held.contains(e.name.as_str()) && issuer.as_deref() == Some(ca_cert_name(&e.issuer).as_str())
        });
        let reason = match renamed {
            Some(new) => format!(
                "the enrollment service holds individual enrollment `{old}`, which the plan no longer declares, \
                 with a certificate of CA `{}`, while the plan's `[enrollments.{}]` of the same CA is not in the \
                 service: was `[enrollments.{old}]` renamed to `[enrollments.{}]`? An enrollment's name is its \
                 device's registration id and cannot change: rename the table back (a new name is a new device: \
                 `certroll issue device:{}`); device `{old}` still registers through `{old}`",
                new.issuer, new.name, new.name, new.name
            ),
            None => format!(
                "the enrollment service holds individual enrollment `{old}`, which the plan does not declare \
                 (renamed or removed from the plan?); device `{old}` still registers through it"
            ),
        };
        out.push((old.clone(), reason));
    }
    Ok(out)
}

/// How many owed devices a `deliveries` warning names.
const OWED_SHOWN: usize = 5;

/// Devices among those checked that are still owed the delivery of their new certificate (a
/// hook that failed, a device a direct method did not reach, a run killed before its
/// deliveries): one warning for them all, with their count, the first few and the command that
/// delivers them. Their certificate is judged as the one they hold (`check_devices`), so without
/// this a failed delivery left `check` OK.
fn owed_deliveries(c: &mut Checker<'_>, checked: &[(String, usize)]) {
    if c.owed.is_empty() {
        return;
    }
    let checked: std::collections::HashSet<&str> = checked.iter().map(|(id, _)| id.as_str()).collect();
    let owed: Vec<String> = c
        .owed
        .iter()
        .filter(|id| checked.contains(id.as_str()))
        .cloned()
        .collect();
    let Some(first) = owed.first() else {
        return;
    };
    let shown: Vec<String> = owed
        .iter()
        .take(OWED_SHOWN)
        .map(|id| format!("device:{id}"))
        .collect();
    let more = if owed.len() > OWED_SHOWN { ", ..." } else { "" };
    c.add(Problem {
        target: if owed.len() == 1 {
            format!("device:{first}")
        } else {
            "deliveries".to_string()
        },
        level: Level::Warning,
        reason: format!(
            "{} device(s) still owed their new certificate ({}{more}): its delivery failed or did not run, so \
             the device still uses the one before; `certroll issue` delivers what is owed (so does any roll)",
            owed.len(),
            shown.join(", ")
        ),
        not_after: None,
        actions_due: vec![],
    });
}

/// What the devices of one group, or one enrollment, are judged by.
struct Owner<'a> {
    policy: &'a Policy,
    delivery: &'a Delivery,
    renewal: Option<Renewal<'a>>,
    /// Whether the plan gives each device an individual enrollment of its own (`[enrollments]`).
    enrolled: bool,
    /// Why every device of the group cannot connect: another client disabled the group.
    group_cut_off: Option<String>,
    /// The group's name and the SHA-1 thumbprints of the CA certificates in its signing slots
    /// (None: not a group, or a group judged as a whole).
    signing: Option<(&'a str, Vec<String>)>,
}

/// Judges one page of devices, each with the index of its [`Owner`].
fn check_devices(
    backend: &dyn Backend,
    c: &mut Checker<'_>,
    page: &[(String, usize)],
    owners: &[Owner<'_>],
) -> Result<()> {
    let ids: Vec<String> = page.iter().map(|(id, _)| id.clone()).collect();
    // The enrollments first: on azure their reads carry the registration states `held_many`
    // then need not ask DPS for one device at a time.
    let enrollments = backend.individual_many(&ids)?;
    let (issued, newest): (Vec<_>, Vec<_>) = super::installed_and_newest_many(backend, &ids)?
        .into_iter()
        .unzip();
    // What the services saw of each device: a backend that installs on its devices has nothing
    // else to tell.
    let (registrations, identities) = if backend.installs_on_devices() {
        (vec![None; ids.len()], vec![None; ids.len()])
    } else {
        backend.registrations_and_identities(&ids)?
    };
    let helds = super::held::held_from(backend, &ids, issued.clone(), &registrations, &identities)?;
    for ((((((id, owner), held), enrollment), (issued, identity)), newest), registration) in page
        .iter()
        .zip(helds)
        .zip(enrollments)
        .zip(issued.iter().zip(&identities))
        .zip(&newest)
        .zip(&registrations)
    {
        let Owner {
            policy,
            delivery,
            renewal,
            enrolled,
            group_cut_off,
            signing,
        } = &owners[*owner];
        let (policy, renewal) = (*policy, *renewal);
        // Its group disabled by another client: DPS refuses it whatever its certificate, and the
        // group's way back is the only one that helps (a breach's advice would fail again).
        // DPS matches a device's own individual enrollment before its group's: one that has one
        // (a group device's breach gives it one) is judged by that.
        if let Some(why) = group_cut_off.as_ref().filter(|_| enrollment.is_none()) {
            c.add(Problem {
                target: format!("device:{id}"),
                level: Level::Critical,
                reason: why.clone(),
                not_after: None,
                actions_due: vec![],
            });
            continue;
        }
        // On Azure a certificate the device has not presented is judged by what certroll
        // knows of its delivery: one handed to a hook or a direct method reached the device
        // as far as the channel said (the verb reported any failure), so it is the one the
        // device holds; one left to the operator (`none`) did not, so the device is judged
        // by what it presents, and the waiting certificate is a warning of its own.
        let installed = match (&held.pending, delivery) {
            // A breach cut off part-way has the device judged by its rerun (below), not by this.
            (Some(issued), Delivery::None) if !c.device_breaches.contains_key(id.as_str()) => {
                let presents = match &held.presented {
                    Some(p) => format!("it presents {}", crate::pki::sha1_thumbprint(&p.cert_der)),
                    None => "it has presented none yet".to_string(),
                };
                c.add(Problem {
                        target: format!("device:{id}"),
                        level: Level::Warning,
                        reason: format!(
                            "its certificate {} (issued {}) has not reached it: delivery = \"none\" leaves it to \
                             the operator (`certroll export device:{id} --with-key`); {presents}. This clears once \
                             DPS sees the device register with it (its next start, or `certroll reprovision device:{id}`)",
                            crate::pki::sha1_thumbprint(&issued.cert_der),
                            crate::clock::rfc3339(issued.created),
                        ),
                        not_after: Some(issued.exp),
                        actions_due: vec![],
                    });
                held.presented.clone().or_else(|| held.pending.clone())
            }
            (Some(issued), _) => Some(issued.clone()),
            (None, _) => held.presented.clone(),
        };
        // A revoked device is disallowed on purpose; monitoring must not page for it forever.
        // One another client cut off (a disabled enrollment or hub identity, the hub's
        // thumbprints replaced) cannot connect: critical, whatever its certificate. So is one
        // whose breach was cut off part-way: its certificates are in flux until the run
        // finishes, which delivers what it owes.
        let cut_off = match super::held::standing(
            backend,
            id,
            issued.as_ref(),
            &held,
            enrollment.as_ref(),
            *enrolled,
            identity.as_ref(),
            c.breached_devices.get(id.as_str()).map(String::as_str),
        )? {
            super::held::Standing::Revoked => {
                c.report.counts.revoked += 1;
                continue;
            }
            super::held::Standing::CutOff(reason) => Some(reason),
            super::held::Standing::Usable => c.device_breaches.get(id.as_str()).map(|rerun| {
                c.owed.remove(id.as_str());
                super::held::breach_in_flight(id, rerun)
            }),
        };
        if let Some(reason) = cut_off {
            c.add(Problem {
                target: format!("device:{id}"),
                level: Level::Critical,
                reason,
                not_after: installed.as_ref().map(|v| v.exp),
                actions_due: vec![],
            });
            continue;
        }
        // Owed a certificate and never seen by DPS: the delivery that failed (or an `issue` cut
        // off before it) was its first, so no certificate of certroll's ever reached it and it
        // has never connected. "Still uses the one before" (the owed deliveries' warning), and
        // counting it ok, hid that (trial az16 F5).
        if let Some(pending) = held
            .pending
            .as_ref()
            .filter(|_| registration.is_none() && held.presented.is_none() && c.owed.contains(id.as_str()))
        {
            c.owed.remove(id.as_str());
            c.add(Problem {
                target: format!("device:{id}"),
                level: Level::Critical,
                reason: format!(
                    "its certificate {} (issued {}) has not reached it: its delivery failed or did not run, and DPS \
                     has never seen it register, so it has not connected yet; `certroll issue device:{id}` delivers \
                     it (so does `certroll issue`)",
                    crate::pki::sha1_thumbprint(&pending.cert_der),
                    crate::clock::rfc3339(pending.created),
                ),
                not_after: Some(pending.exp),
                actions_due: vec![],
            });
            continue;
        }
        // A certificate a hook or a direct method delivered is the one the device holds, and a
        // hub identity without its thumbprint refuses the device (trial az8 F5: the device
        // registered with its previous certificate once more, and a `reset` wrote that one
        // alone). `standing` took the presented certificate for a match.
        let delivered = held
            .pending
            .as_ref()
            .filter(|_| !matches!(delivery, Delivery::None) && !c.owed.contains(id.as_str()));
        if let (Some(delivered), Some(identity)) = (delivered, identity.as_ref()) {
            let thumbprints = super::held::x509_thumbprints(identity);
            if !thumbprints.is_empty() && !super::held::admits(&thumbprints, delivered) {
                c.add(Problem {
                    target: format!("device:{id}"),
                    level: Level::Critical,
                    reason: format!(
                        "its identity in hub `{}` accepts only thumbprint(s) {}, not {} of the certificate \
                         delivered to it ({}): the hub refuses the device that holds it. It registered with an \
                         earlier certificate since, and DPS wrote that one into the identity; the hub lets it in \
                         again once it registers with DPS with the delivered one (a device the hub refuses \
                         does so when it next connects; `certroll reprovision` reaches no such device)",
                        identity.hub,
                        thumbprints.join(" / "),
                        crate::pki::sha1_thumbprint(&delivered.cert_der),
                        crate::clock::rfc3339(delivered.created),
                    ),
                    not_after: Some(delivered.exp),
                    actions_due: vec![],
                });
                continue;
            }
        }
        // Another client's certificate in its enrollment: whoever holds its key registers as
        // this device, and certroll's rolls leave the enrollment alone until an operator acts.
        // Its owed delivery waits while the other client's certificate holds the place of the
        // owed one (DPS would refuse it; `issue` and the rolls hold it back): the remedy below
        // is the way on, not `certroll issue`.
        if let (Some(e), Some(v)) = (
            enrollment.as_ref().filter(|e| !e.foreign.is_empty()),
            issued.as_ref(),
        ) && ![&e.primary, &e.secondary]
            .into_iter()
            .flatten()
            .any(|der| *der == v.cert_der)
        {
            c.owed.remove(id.as_str());
        }
        for f in enrollment.iter().flat_map(|e| &e.foreign) {
            c.add(Problem {
                target: format!("device:{id}"),
                level: Level::Critical,
                reason: format!(
                    "{}: whoever holds its key registers as `{id}`. {}",
                    f.describe(id),
                    crate::backend::types::ForeignCertificate::remedy(id)
                ),
                not_after: f.not_after,
                actions_due: vec![],
            });
            c.counted = Some(format!("device:{id}"));
        }
        // A certificate from a CA version an open breach declared compromised, on a device the
        // breach has yet to replace: stopped after its revocation (the CA not renewed yet), or
        // later, before it replaced the device (the CA renewed: the line below would say so
        // without whether DPS refuses the device). Its group may hold that CA no more: DPS then
        // refuses the device. The rerun is the way on at every step; `status` says the same.
        let issuer = installed.as_ref().and_then(|v| v.issuer.clone());
        let accepted = &mut c.accepted;
        if let Some(reason) = super::held::ca_breach_open(
            id,
            issuer.as_ref(),
            &c.open_breaches,
            &c.breached_devices,
            enrollment.is_some(),
            |issuer| match signing {
                Some((group, slots)) => group_accepts_once(accepted, backend, group, slots, issuer),
                // A group with no slot filled (its only CA taken out) admits nobody.
                None => Ok(*enrolled),
            },
            |issuer| ca_name(&c.ca_current, issuer),
        )? {
            c.owed.remove(id.as_str());
            c.add(Problem {
                target: format!("device:{id}"),
                level: Level::Critical,
                reason,
                not_after: installed.as_ref().map(|v| v.exp),
                actions_due: vec![],
            });
            continue;
        }
        // A certificate from a CA version a breach replaced (disabled, the CA renewed since):
        // the breach roll that replaces it did not finish for this device, and whoever holds
        // the compromised CA's key can make a certificate as good as this one.
        if let Some(ca) = issuer
            .clone()
            .map(|issuer| replaced_issuer(backend, c, issuer))
            .transpose()?
            .flatten()
        {
            let fix = issuer
                .and_then(|i| c.open_breaches.get(&i).cloned())
                .unwrap_or_else(|| format!("certroll roll-primary --breach ca:{ca} --yes"));
            c.add(Problem {
                target: format!("device:{id}"),
                level: Level::Critical,
                reason: format!(
                    "it holds a certificate issued by a version of CA `{ca}` that is disabled and replaced \
                     (compromised): `{fix}` replaces it"
                ),
                not_after: installed.as_ref().map(|v| v.exp),
                actions_due: vec![],
            });
            continue;
        }
        // A breach's replacement the device does not have: the certificate before it is
        // compromised and refused, so the device is cut off, and neither `issue` nor the
        // expiry's advice brings it back (trial az9 G4). One it has that is disabled: it
        // connects, but the version can be neither delivered nor renewed (trial az10 N2).
        if let Some(v) = installed.as_ref().filter(|v| !v.enabled || c.owed.contains(id))
            && let Some(finish) = c.breach_finish(backend, id, v)?
        {
            let owed = c.owed.remove(id);
            c.add(Problem {
                target: format!("device:{id}"),
                level: Level::Critical,
                reason: super::held::breach_replacement_problem(id, v, owed, &finish),
                not_after: Some(v.exp),
                actions_due: vec![],
            });
            continue;
        }
        // DPS matches a group device without an individual enrollment by the group's signing
        // slots: a certificate under neither slot's CA is refused, though it is valid itself.
        if let (Some((group, slots)), None, Some(v)) = (signing, &enrollment, &installed)
            && let Some(issuer) = &v.issuer
            && !c.group_accepts(backend, group, slots, issuer)?
        {
            let ca = c.ca_name(issuer);
            let tp = backend
                .version(&issuer.0, &issuer.1)?
                .map(|v| crate::pki::sha1_thumbprint(&v.cert_der))
                .unwrap_or_default();
            c.add(Problem {
                target: format!("device:{id}"),
                level: Level::Critical,
                reason: format!(
                    "its certificate is signed by CA `{ca}` version {} ({tp}), which enrollment group `{group}` \
                     holds in neither signing slot, nor a CA above it (the slots hold {}): DPS refuses its \
                     registrations. Put that CA certificate back into a free signing slot of the group (DPS's \
                     API or the Azure portal; `certroll export ca:{ca}` writes the current one), or give the \
                     device a certificate under a CA the group holds: `certroll roll-primary group:{group}` \
                     does that for the group's devices (a new version of the group's CA into its primary \
                     slot, and the devices rolled under it)",
                    issuer.1,
                    slots.join(" / ")
                ),
                not_after: Some(v.exp),
                actions_due: vec![],
            });
            continue;
        }
        let name = super::device_cert_name(id);
        if installed.is_none()
            && !c.deleted.contains_key(&name)
            && backend.name_state(&name)?.is_none()
            && let Some(note) = super::vault::purged_note(backend, &name)
        {
            c.purged.insert(name, note);
        }
        // An expired certificate left in a slot of its individual enrollment beside the one the
        // device holds (issue 10 item 4's kind): harmless, but to be removed, which the next
        // roll of the device does.
        // The certificate the device holds is judged by itself (expired is critical).
        let held = installed.as_ref().map(|v| v.cert_der.as_slice());
        if let Some(e) = &enrollment {
            for (slot, der) in [("primary", &e.primary), ("secondary", &e.secondary)] {
                if let Some(at) = der
                    .as_deref()
                    .filter(|d| Some(*d) != held)
                    .and_then(|d| crate::pki::CertInfo::from_der(d).ok())
                    .map(|i| i.not_after)
                    .filter(|at| *at < c.now)
                {
                    c.add(Problem {
                            target: format!("device:{id}"),
                            level: Level::Warning,
                            reason: format!(
                                "the {slot} slot of its individual enrollment holds a certificate that expired at {}; \
                                 the next roll of it (`certroll roll-secondary device:{id}`, or the cron \
                                 `certroll roll-secondary --due`) removes it",
                                crate::clock::rfc3339(at)
                            ),
                            not_after: Some(at),
                            actions_due: vec![],
                        });
                }
            }
        }
        // Issued into the vault but never installed: an `issue` cut off part-way (trial az14
        // F5). "No certificate" would hide that it exists and which command delivers it.
        if installed.is_none()
            && let Some(v) = newest
        {
            c.add(Problem {
                target: format!("device:{id}"),
                level: Level::Critical,
                reason: format!(
                    "its certificate {} (issued {}) is in the vault but has not reached the device: an `issue` \
                     stopped before delivering it; `certroll issue device:{id}` finishes it (so does `certroll issue`)",
                    crate::pki::sha1_thumbprint(&v.cert_der),
                    crate::clock::rfc3339(v.created),
                ),
                not_after: Some(v.exp),
                actions_due: vec![],
            });
            continue;
        }
        c.look(
            format!("device:{id}"),
            &policy.lifetime_actions,
            installed.as_ref(),
            renewal,
        );
    }
    Ok(())
}
