//! Rolling device certificates, a chunk at a time: read what the services hold for the chunk in
//! a few batched look-ups, decide per device, make the keys and certificates on every core, and
//! write the chunk as one unit of work. While one chunk is written the next one's keys are made.

use super::{Breach, DeviceRoll, SlotName, foreign_left_alone};
use crate::backend::Backend;
use crate::backend::types::*;
use crate::ops::lifetime::fires_at;
use crate::ops::{
    DeviceOwner, LoadedIssuer, device_cert_name, device_owner, effective_key_usage, exportable, load_issuer,
    policy_json,
};
use crate::pki::cert::{CertProfile, sign_public_key_with_facts};
use crate::pki::spec::Subject;
use crate::pki::{PrivateKey, SubjectKey, sha1_thumbprint};
use crate::plan::{ActionKind, Plan, Policy};
use crate::store::queries_issued::issuer_text;
use anyhow::{Context as _, Result};
use rayon::prelude::*;
use std::collections::HashMap;
use time::OffsetDateTime;

/// How a chunk of devices is rolled.
#[derive(Debug, Clone, Copy)]
pub(super) enum Mode<'a> {
    /// An expiry roll into `slot` (with `due`: only what auto-renew says, into the older slot).
    Expiry {
        /// The named slot.
        slot: SlotName,
        /// Only devices whose auto-renew action has fired.
        due: bool,
    },
    /// The device's own key is compromised: its certificate is refused everywhere at once and a
    /// new one (always a new key) replaces it.
    Breach {
        /// The named slot.
        slot: SlotName,
        /// The options of the breach.
        breach: &'a Breach,
    },
    /// A CA above the device is compromised: the device gets a new certificate under the new
    /// CA and its enrollment and hub identity hold only that one.
    Replace {
        /// The named slot.
        slot: SlotName,
        /// `--remove-hub-identity`: delete the device from its hub before it provisions afresh.
        remove_identity: bool,
        /// The CA versions the breach disabled (the compromised ones and the CA versions they
        /// signed): the device's certificates signed by one are disabled once it is replaced.
        tainted: &'a [(String, String)],
        /// A resumed breach whose target a later breach has replaced since: the incident label
        /// of that breach. Its devices are not replaced again; only what the tainted versions
        /// signed and is still enabled goes out of use.
        superseded: Option<&'a str>,
    },
}

impl Mode<'_> {
    fn slot(&self) -> SlotName {
        match *self {
            Mode::Expiry { slot, .. } | Mode::Breach { slot, .. } | Mode::Replace { slot, .. } => slot,
        }
    }
}

/// What one device needs, decided from what the services hold.
struct Work<'p> {
    id: String,
    policy: &'p Policy,
    issuer_ca: &'p str,
    slot: SlotName,
    reuse: Option<PrivateKey>,
    record: DeviceRecord,
    /// The enrollment to write (with the new certificate put into `slot` when it is known).
    individual: Option<IndividualEnrollment>,
    /// The identity to update (the new thumbprint goes into `slot`).
    identity: Option<HubIdentity>,
    /// Clear the other slot (an expired certificate there, or a breach).
    clear_other: bool,
    /// What the enrollment's other slot is to hold instead (an expiry roll keeps a valid
    /// certificate there: the one it holds, or else the one the named slot held).
    other_individual: Option<Option<Vec<u8>>>,
    /// What the hub identity's other thumbprint is to be (an expiry roll: the certificate the
    /// device holds now, while it is valid).
    other_hub: Option<Option<String>>,
    /// Versions whose keys are compromised: disabled and put on their issuer's CRL.
    compromised: Vec<VaultVersion>,
    /// Versions a compromised CA signed (a CA breach): disabled once the replacement is in
    /// place, so no verb hands out a certificate whose chain is revoked.
    retire: Vec<(String, String)>,
    /// Re-provision through the enrollment service, so the hub holds only the new thumbprint.
    reprovision: bool,
    /// The device's enrollment has `reprovision = "never"`: DPS leaves its hub identity alone
    /// when it registers again, so certroll writes the new thumbprint there itself.
    hub_kept: bool,
    /// Delete the hub identity first (`--remove-hub-identity`).
    remove_identity: bool,
    /// Only prune the other slot; no new certificate.
    prune_only: bool,
    /// The new version a cut-off attempt of this step made (found by its mark): taken as the
    /// new certificate, none is made.
    adopt: Option<VaultVersion>,
    report: usize,
}

/// The incidents of the breach runs left open (killed or failed) other than this one, by device:
/// a later breach of a device replaces what such a run set out to replace, so its command run
/// again afterwards finds it handled (trial az10 N1), as for a finished one (`earlier_incidents`).
pub(crate) use crate::ops::held::incidents_of;

pub(super) type OpenIncidents = HashMap<String, Vec<String>>;

/// [`OpenIncidents`], read from the journal once per run (`this_run` is the run's own number).
pub(super) fn open_incidents(backend: &dyn Backend, this_run: Option<i64>) -> Result<OpenIncidents> {
    let mut open: OpenIncidents = HashMap::new();
    for step in open_steps(backend, this_run, "breach-device")? {
        let Some(incident) = step.detail["incident"].as_str() else {
            continue;
        };
        for id in step.detail["ids"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i.as_str())
        {
            open.entry(id.to_string()).or_default().push(incident.to_string());
        }
    }
    Ok(open)
}

/// The steps of `kind` of the runs left open (killed or failed) other than `this_run`, in one
/// read of the journal.
fn open_steps(backend: &dyn Backend, this_run: Option<i64>, kind: &str) -> Result<Vec<JournalStep>> {
    Ok(backend
        .open_runs()?
        .into_iter()
        .filter(|r| Some(r.id) != this_run)
        .flat_map(|r| r.steps)
        .filter(|s| s.kind == kind)
        .collect())
}

/// The incidents of the `ca:`/`group:` breach runs of `target` left open: a later breach of the
/// target replaces what they set out to replace, so it counts them as handled, and their
/// commands run again afterwards find the target replaced (trial az12 F1, F2), as
/// [`open_incidents`] does for a device.
pub(super) fn open_target_incidents(backend: &dyn Backend, target: &str) -> Result<Vec<String>> {
    Ok(open_steps(backend, None, "remove-compromised")?
        .iter()
        .filter(|s| s.target == target)
        .flat_map(|s| incidents_of(&s.detail))
        .collect())
}

/// The CA versions the `revoke-ca` steps of the breach runs left open (other than `this_run`)
/// have revoked and disabled: a device replaced since under a later breach no longer uses what
/// they signed for it, which goes out of use with its replacement as this run's own tainted
/// versions do (trial az12 F2: the versions a cut-off CA breach left enabled).
pub(super) fn open_tainted(backend: &dyn Backend, this_run: Option<i64>) -> Result<Vec<(String, String)>> {
    Ok(open_steps(backend, this_run, "revoke-ca")?
        .iter()
        .filter(|s| s.result.is_some())
        .flat_map(|s| super::pairs(&s.detail["tainted"]))
        .collect())
}

/// A decided chunk: the per-device reports and the work to do.
pub(super) struct Assessed<'p> {
    pub reports: Vec<DeviceRoll>,
    work: Vec<Work<'p>>,
    /// A breach step that finds its device already replaced records the replacement in force
    /// again (with the incident it was made for), so a later rerun still finds it.
    in_force: Option<serde_json::Value>,
    /// The incident labels of the device's breaches before the last one, carried into each new
    /// breach step's record (the journal keeps only a target's newest step of a kind): a rerun of
    /// an older incident's command finds it handled (trial az9 G2).
    earlier_incidents: Vec<String>,
    /// Versions cut-off attempts of the steps made that later runs superseded before any device
    /// used them: disabled, so a key nobody uses cannot be exported or used (trial az10 N1).
    unused: Vec<VaultVersion>,
}

impl Assessed<'_> {
    /// Whether anything is to be written.
    pub fn any(&self) -> bool {
        !self.work.is_empty()
    }
}

/// The policy and issuing CA of a device.
fn owner_of<'p>(
    plan: &'p Plan,
    id: &str,
) -> Result<(&'p Policy, &'p str, Option<&'p crate::plan::GroupSpec>)> {
    Ok(match device_owner(plan, id).context("device not in the plan")? {
        DeviceOwner::Group(g) => (&plan.policies[&g.device_policy], g.signing_ca.as_str(), Some(g)),
        DeviceOwner::Enrollment(e) => (&plan.policies[&e.policy], e.issuer.as_str(), None),
    })
}

fn word(slot: SlotName) -> &'static str {
    slot.word()
}

/// Adds a step's description to a device's report when the run lists them (a large run's
/// devices share their chunk's steps: describing each would cost more than deciding).
macro_rules! say {
    ($describe:expr, $steps:expr, $($arg:tt)*) => {
        if $describe {
            $steps.push(format!($($arg)*));
        }
    };
}

/// The step that disables a device's vault version the compromised CA signed, its issuer written
/// as the store's `issuer` column holds it; `tail` says when, if not at once.
fn disable_compromised(b: &VersionBrief, tail: &str) -> String {
    format!(
        "disable vault version {}/{}, signed by the compromised CA version {}{tail}",
        b.name,
        b.version,
        issuer_text(b.issuer.as_ref()).unwrap_or_default()
    )
}

/// The CA version a roll signs its devices' certificates with: its vault name, version id and
/// notAfter.
#[derive(Debug, Clone)]
pub(super) struct CaTarget {
    cert_name: String,
    version: String,
    not_after: OffsetDateTime,
}

/// The CA versions a roll's device steps target, by plan CA name. `None` for a CA the run renews
/// before its device steps (in a dry run that version does not exist yet, so no device holds a
/// certificate under it).
#[derive(Debug, Clone, Default)]
pub(super) struct CaTargets(HashMap<String, Option<CaTarget>>, Vec<String>);

impl CaTargets {
    /// Reads the current versions of these CAs; those in `renewed` map to `None`.
    pub fn load(backend: &dyn Backend, cas: &[&str], renewed: &[&str]) -> Result<CaTargets> {
        let mut out = HashMap::new();
        for ca in cas {
            let target = if renewed.contains(ca) {
                None
            } else {
                backend.current(&crate::ops::ca_cert_name(ca))?.map(|v| CaTarget {
                    cert_name: v.name,
                    version: v.version,
                    not_after: v.exp,
                })
            };
            out.insert(ca.to_string(), target);
        }
        Ok(CaTargets(out, Vec::new()))
    }

    /// Marks `ca` as one whose renewal its issuer caps in this run: it keeps its current
    /// version, so a device's lone first certificate under that version counts as rolled.
    pub fn mark_capped(&mut self, ca: &str) {
        if !self.1.iter().any(|c| c == ca) {
            self.1.push(ca.to_string());
        }
    }

    /// Whether [`CaTargets::mark_capped`] marked `ca`.
    fn capped(&self, ca: &str) -> bool {
        self.1.iter().any(|c| c == ca)
    }

    fn get(&self, ca: &str) -> Option<&CaTarget> {
        self.0.get(ca).and_then(Option::as_ref)
    }

    /// Whether a device certificate was signed by the version of `ca` the roll targets.
    fn signed(&self, ca: &str, cert: &VersionBrief) -> bool {
        self.get(ca).is_some_and(|t| {
            cert.issuer
                .as_ref()
                .is_some_and(|(name, version)| *name == t.cert_name && *version == t.version)
        })
    }
}

/// Whether a device's certificate is due for renewal: an `auto-renew` action has fired and a new
/// certificate would end later (one capped by its CA's notAfter cannot, and renewing it again
/// would loop).
fn renewal_due(policy: &Policy, cert: &VersionBrief, ca: Option<&CaTarget>, now: OffsetDateTime) -> bool {
    let fired = policy
        .lifetime_actions
        .iter()
        .filter(|a| a.action == ActionKind::AutoRenew)
        .any(|a| fires_at(a.trigger, cert.nbf, cert.exp) <= now);
    fired && renewal_extends(policy, cert, ca, now)
}

/// Whether a certificate made now would end later than `cert`: one capped by its CA's notAfter
/// may not, and then a renewal only trades the key for nothing (and would repeat every run).
fn renewal_extends(policy: &Policy, cert: &VersionBrief, ca: Option<&CaTarget>, now: OffsetDateTime) -> bool {
    // Far dates saturate: no input may panic.
    let mut would_end = now.saturating_add(time::Duration::days(policy.validity_days as i64));
    if let Some(ca) = ca {
        would_end = would_end.min(ca.not_after);
    }
    would_end > cert.exp
}

/// Whether a certificate is not valid yet at `now`, beyond the plan's notBefore skew (a run with
/// `--now` ahead of the clock made it): the service refuses it until then (401002), so it counts
/// as not done, and a roll replaces it with one valid now (issue 10 item 16).
pub(super) fn not_yet_valid(plan: &Plan, cert: &VersionBrief, now: OffsetDateTime) -> bool {
    cert.nbf > now.saturating_add(plan.not_before_skew)
}

/// A certificate's `auto-renew` action has fired, or it is not valid yet (see [`not_yet_valid`]).
fn wants_renewal(plan: &Plan, policy: &Policy, cert: &VersionBrief, now: OffsetDateTime) -> bool {
    not_yet_valid(plan, cert, now)
        || policy
            .lifetime_actions
            .iter()
            .filter(|a| a.action == ActionKind::AutoRenew)
            .any(|a| fires_at(a.trigger, cert.nbf, cert.exp) <= now)
}

/// The slot of an individual enrollment that holds an expired certificate of the device (known
/// to the vault by its thumbprint) other than the `installed` one, if any: a roll of the device,
/// `--due` included, removes it.
fn expired_slot(
    individual: Option<&IndividualEnrollment>,
    versions: &[VersionBrief],
    installed: &VersionBrief,
    now: OffsetDateTime,
) -> Option<SlotName> {
    let ind = individual?;
    [
        (SlotName::Primary, &ind.primary),
        (SlotName::Secondary, &ind.secondary),
    ]
    .into_iter()
    .find(|(_, der)| {
        der.as_deref().is_some_and(|d| {
            let tp = sha1_thumbprint(d);
            tp != installed.thumbprint && versions.iter().any(|v| v.thumbprint == tp && v.exp < now)
        })
    })
    .map(|(slot, _)| slot)
}

/// What `--due` can tell of a device before a run is planned (see [`not_due`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Due {
    /// Its `auto-renew` action has not fired and nothing expired waits in its slots.
    Not,
    /// Due, but its CA's notAfter caps a new certificate at or before the one it holds, and
    /// nothing expired waits in its slots: reported `capped`, never written.
    Capped,
    /// Revoked (a disabled individual enrollment): reported `revoked`, never written, so no
    /// step counts it among the devices it rolls and a cron run records nothing for it.
    Revoked,
    /// Cut off by another client of the enrollment service, as [`assess`] reports it: its
    /// individual enrollment disabled though certroll did not revoke it (`disabled`), or gone
    /// where the plan gives it one (`deleted`); the outcome and the way back, never written,
    /// and the run exits 1.
    CutOff(&'static str, String),
    /// Anything else: decided by [`assess`] within the run.
    Maybe,
}

/// For `--due`: which devices certainly need no step, read before a run is planned so a cron run
/// with nothing to do records nothing (issue 13 item 3) and one whose due devices are all capped
/// records no step that rolls none of them. A device is [`Due::Revoked`] when its individual
/// enrollment is disabled and certroll revoked it, [`Due::CutOff`] when another client disabled
/// or deleted that enrollment; it is [`Due::Not`] or [`Due::Capped`] exactly
/// when [`assess`] would report it `not-due` or `capped` with nothing to write: it holds an
/// issued certificate, it is not revoked (a disabled individual enrollment), and no slot of its
/// individual enrollment holds an expired certificate. Anything else (not issued, say) is
/// left to `assess`.
pub(super) fn not_due(
    plan: &Plan,
    backend: &dyn Backend,
    ids: &[String],
    now: OffsetDateTime,
) -> Result<Vec<Due>> {
    let names: Vec<String> = ids.iter().map(|id| device_cert_name(id)).collect();
    let versions = backend.briefs_many(&names)?;
    let records = backend.device_many(ids)?;
    let individuals = backend.individual_many(ids)?;
    let mut issuers: Vec<&str> = Vec::new();
    for id in ids {
        let (_, issuer, _) = owner_of(plan, id)?;
        if !issuers.contains(&issuer) {
            issuers.push(issuer);
        }
    }
    let cas = CaTargets::load(backend, &issuers, &[])?;
    let mut out = Vec::with_capacity(ids.len());
    for (((id, versions), record), individual) in ids.iter().zip(versions).zip(records).zip(individuals) {
        let (policy, issuer, group) = owner_of(plan, id)?;
        let installed = record
            .and_then(|r| r.installed_version)
            .and_then(|v| versions.iter().find(|b| b.version == v).cloned());
        // As `assess` judges it; the CRL is read only for a disabled enrollment.
        if individual.as_ref().is_some_and(|e| e.status == Status::Disabled) {
            let full = match &installed {
                Some(b) => backend.version(&b.name, &b.version)?,
                None => None,
            };
            out.push(
                if crate::ops::held::revoked_by_certroll(backend, full.as_ref())? {
                    Due::Revoked
                } else {
                    Due::CutOff(
                        "disabled",
                        crate::ops::held::disabled_by_another(id, full.as_ref()),
                    )
                },
            );
            continue;
        }
        if group.is_none() && individual.is_none() && installed.is_some() {
            out.push(Due::CutOff("deleted", crate::ops::held::deleted_by_another(id)));
            continue;
        }
        let Some(installed) = installed else {
            out.push(Due::Maybe);
            continue;
        };
        if expired_slot(individual.as_ref(), &versions, &installed, now).is_some() {
            out.push(Due::Maybe);
        } else if !wants_renewal(plan, policy, &installed, now) {
            out.push(Due::Not);
        } else if !not_yet_valid(plan, &installed, now)
            && !renewal_extends(policy, &installed, cas.get(issuer), now)
        {
            out.push(Due::Capped);
        } else {
            out.push(Due::Maybe);
        }
    }
    Ok(out)
}

/// Why no roll writes anything for the devices of group `name` (without an individual
/// enrollment of their own, which DPS matches first): its enrollment group is disabled, by
/// certroll's revoke (`revoked`) or by another client of DPS (`disabled`, with the way back,
/// and the run exits 1). DPS refuses every registration under a disabled group, so a
/// certificate issued now would only be refused (az8 F4). Read once per chunk.
fn group_cut_off(
    backend: &dyn Backend,
    seen: &mut HashMap<String, Option<(&'static str, Option<String>)>>,
    name: &str,
) -> Result<Option<(&'static str, Option<String>)>> {
    if let Some(off) = seen.get(name) {
        return Ok(off.clone());
    }
    let off = match backend.group(name)? {
        Some(state) if state.status == Status::Disabled => Some(
            match crate::ops::held::group_disabled_by_another(backend, name, state.status)? {
                Some(why) => ("disabled", Some(why)),
                None => ("revoked", None),
            },
        ),
        _ => None,
    };
    seen.insert(name.to_string(), off.clone());
    Ok(off)
}

/// Reads what the services hold for a chunk and decides what each device needs; with
/// `describe`, each device's report lists its steps.
#[allow(clippy::too_many_arguments)]
pub(super) fn assess<'p>(
    plan: &'p Plan,
    backend: &mut dyn Backend,
    cas: &CaTargets,
    ids: &[String],
    mode: Mode<'_>,
    dry_run: bool,
    describe: bool,
    own_mark: Option<&str>,
    open_incidents: &OpenIncidents,
    now: OffsetDateTime,
) -> Result<Assessed<'p>> {
    let names: Vec<String> = ids.iter().map(|id| device_cert_name(id)).collect();
    let crate::backend::ChunkReads {
        versions,
        records,
        individuals,
        identities,
    } = backend.chunk_reads(&names, ids)?;
    // A step cut off after its remote writes (a kill before its commit, or a registration DPS
    // refused) left its new versions in Key Vault (and DPS and the hub), carrying the step's
    // mark, while the fleet record still names the certificate before. Such a version is this
    // step's own: its rerun adopts it rather than making another (and a breach never takes it
    // for compromised, which left the device with no working certificate), unless a later run
    // has superseded it. Decided here, so a dry run lists what its rerun does (trial az10 N3).
    let mut own: HashMap<&str, VaultVersion> = HashMap::new();
    if let Some(mark) = own_mark {
        backend.mark_new_versions(Some(mark));
        let found = backend.versions_marked(&names);
        backend.mark_new_versions(None);
        for (id, v) in ids.iter().zip(found?) {
            if let Some(v) = v {
                own.insert(id.as_str(), v);
            }
        }
    }
    let backend = &*backend;
    let mut out = Assessed {
        reports: Vec::with_capacity(ids.len()),
        work: Vec::new(),
        in_force: None,
        earlier_incidents: Vec::new(),
        unused: Vec::new(),
    };
    // The slot of its group holding the CA version that signed a device's certificate, by group
    // and CA version: read once per chunk, and only for a device already rolled.
    let mut group_slots: HashMap<(String, String, String), Option<SlotName>> = HashMap::new();
    // Each group's cut-off, read once per chunk: a group disabled while a run goes on is seen
    // by its next chunk.
    let mut groups_off: HashMap<String, Option<(&'static str, Option<String>)>> = HashMap::new();
    for ((((id, versions), record), individual), identity) in ids
        .iter()
        .zip(versions)
        .zip(records)
        .zip(individuals)
        .zip(identities)
    {
        let (policy, issuer_ca, group) = owner_of(plan, id)?;
        let not_issued = || crate::error::input(format!("device:{id} has not been issued yet"));
        let record = record.ok_or_else(not_issued)?;
        let installed_id = record.installed_version.clone().ok_or_else(not_issued)?;
        let installed = versions
            .iter()
            .find(|v| v.version == installed_id)
            .cloned()
            .ok_or_else(not_issued)?;
        let newest = versions.last().cloned().ok_or_else(not_issued)?;
        let target = format!("device:{id}");
        // A disabled individual enrollment is a revoked device: no roll issues it anything.
        // Disabled by another client (certroll did not revoke it), it is `disabled`, with the
        // way back; on local no other client writes the store, so it is always `revoked`. The
        // same holds for the disabled group of a device without an enrollment of its own.
        // No enrollment where the plan gives the device one: another client deleted it, and
        // no roll creates an enrollment it did not find (`issue` does). A breach leaves either
        // open (its rerun replaces the device once the operator has acted), and its way back
        // says so: enabling or issuing alone would admit the compromised certificate again.
        let breach = matches!(mode, Mode::Breach { .. } | Mode::Replace { .. });
        let rerun = "this breach again (the same command)";
        let cut_off = if individual.as_ref().is_some_and(|e| e.status == Status::Disabled) {
            let installed = backend.version(&installed.name, &installed.version)?;
            let installed = installed.as_ref();
            Some(if crate::ops::held::revoked_by_certroll(backend, installed)? {
                ("revoked", None)
            } else if breach {
                (
                    "disabled",
                    Some(crate::ops::held::cut_off_under_breach(id, false, rerun)),
                )
            } else {
                (
                    "disabled",
                    Some(crate::ops::held::disabled_by_another(id, installed)),
                )
            })
        } else if let (None, Some(g)) = (&individual, group)
            && let Some(off) = group_cut_off(backend, &mut groups_off, &g.name)?
        {
            Some(off)
        } else if group.is_none() && individual.is_none() {
            Some((
                "deleted",
                Some(if breach {
                    crate::ops::held::cut_off_under_breach(id, true, rerun)
                } else {
                    crate::ops::held::deleted_by_another(id)
                }),
            ))
        } else {
            None
        };
        if let Some((outcome, why)) = cut_off {
            out.reports.push(DeviceRoll {
                delivery: None,
                target,
                outcome,
                slot: mode.slot(),
                steps: why.into_iter().collect(),
                new_thumbprint: None,
                pruned_thumbprint: None,
                compromised: vec![],
            });
            continue;
        }
        // Another client's certificate in its enrollment: only an explicit breach of the device
        // takes the enrollment back; any other roll leaves it alone, and the run stays open
        // (exit 1) so a rerun finishes the device once the operator has acted.
        if let Some(ind) = individual.as_ref().filter(|e| !e.foreign.is_empty())
            && !matches!(mode, Mode::Breach { .. })
        {
            out.reports.push(foreign_left_alone(id, ind, mode.slot()));
            continue;
        }
        let thumbprints: Vec<String> = versions.iter().map(|v| v.thumbprint.clone()).collect();
        let by_tp = |tp: &str| thumbprints.iter().position(|t| t == tp);
        let slot_tp = |slot: SlotName| -> Option<String> {
            match (&individual, &identity) {
                (Some(ind), _) => match slot {
                    SlotName::Primary => ind.primary.as_deref().map(sha1_thumbprint),
                    SlotName::Secondary => ind.secondary.as_deref().map(sha1_thumbprint),
                },
                (None, Some(h)) => match slot {
                    SlotName::Primary => h.primary_thumbprint.clone(),
                    SlotName::Secondary => h.secondary_thumbprint.clone(),
                },
                (None, None) => None,
            }
        };
        let mut report = DeviceRoll {
            delivery: None,
            target: target.clone(),
            outcome: "rolled",
            slot: mode.slot(),
            steps: Vec::new(),
            new_thumbprint: None,
            pruned_thumbprint: None,
            compromised: Vec::new(),
        };
        // The enrollment DPS matches decides: the device's own individual enrollment, else its
        // group's.
        let hub_kept = match (&individual, group) {
            (Some(ind), _) => ind.reprovision == crate::plan::ReprovisionPolicy::Never.as_str(),
            (None, Some(g)) => g.reprovision == crate::plan::ReprovisionPolicy::Never,
            (None, None) => false,
        };
        let mut work = Work {
            hub_kept,
            id: id.clone(),
            policy,
            issuer_ca,
            slot: mode.slot(),
            reuse: None,
            record,
            individual: individual.clone(),
            identity: identity.clone(),
            clear_other: false,
            other_individual: None,
            other_hub: None,
            compromised: Vec::new(),
            retire: Vec::new(),
            reprovision: false,
            remove_identity: false,
            prune_only: false,
            adopt: None,
            report: 0,
        };
        // This step's own version from a cut-off attempt (see `own`) that a later run (the
        // device's own breach, a revoke, a roll) has since replaced or disabled: that run's work
        // stands, the device is done, and what it disabled is never handed out again.
        let mine = own.remove(id.as_str());
        if let Some(v) = &mine
            && let Some(why) = superseded(v, &newest)
        {
            report.outcome = "already-replaced";
            // Never used (no enrollment slot, hub identity or fleet record names it) and still
            // enabled, its key could still be exported and used: it goes out of use as a
            // compromised one does (trial az10 N1), so nothing is left that nobody uses.
            let tp = sha1_thumbprint(&v.cert_der);
            let named = [SlotName::Primary, SlotName::Secondary]
                .into_iter()
                .filter_map(slot_tp)
                .chain(identity.iter().flat_map(|h| {
                    [h.primary_thumbprint.clone(), h.secondary_thumbprint.clone()]
                        .into_iter()
                        .flatten()
                }))
                .any(|t| t == tp)
                || installed.thumbprint == tp;
            report.steps = vec![if v.enabled && !named {
                if !dry_run {
                    out.unused.push(v.clone());
                }
                format!(
                    "{why}; {tp} was never used: its vault version {}/{} {}, so its key is never handed out; nothing else left to do",
                    v.name,
                    v.version,
                    if dry_run {
                        "would be disabled"
                    } else {
                        "is disabled"
                    }
                )
            } else if !v.enabled && v.version != newest.version {
                format!("{why}, and {tp} is disabled: nothing left to do")
            } else {
                format!("{why}: nothing left to do")
            }];
            if let Mode::Breach { breach, .. } = mode {
                let left_open = open_incidents
                    .get(id.as_str())
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                let (earlier, in_force) =
                    standing(backend, &target, breach, &versions, &installed, false, left_open)?;
                out.earlier_incidents = earlier;
                // The replacement in force is recorded for this incident too: its command run
                // again finds it handled, rather than taking that replacement for compromised.
                out.in_force = in_force.or_else(|| {
                    (newest.enabled && v.version != newest.version).then(|| {
                        serde_json::json!({ "replacement": newest.thumbprint, "incident": breach.incident })
                    })
                });
            }
            out.reports.push(report);
            continue;
        }
        work.adopt = mine;
        // The words of the new certificate: made, or the one a cut-off attempt made taken.
        let adopted = work.adopt.as_ref().map(|v| {
            format!(
                "take certificate {} (vault version {}/{}), which this step issued before it was stopped, as the new one; none is issued",
                sha1_thumbprint(&v.cert_der),
                v.name,
                v.version
            )
        });
        let issue = |fresh: String| adopted.clone().unwrap_or(fresh);
        match mode {
            Mode::Expiry { slot, due } => {
                let mut slot = slot;
                // With `--due` and nothing to renew: only an expired certificate in a slot of
                // its individual enrollment goes (the slot beside the one named below).
                let mut prune_only = false;
                let mut capped = false;
                if due {
                    let fired = wants_renewal(plan, policy, &installed, now);
                    // Due, but its CA's expiry caps a new certificate at or before the current
                    // one's: the CA must be renewed first (the run says so once per CA). A
                    // certificate not valid yet is replaced whatever its CA's expiry.
                    capped = fired
                        && !not_yet_valid(plan, &installed, now)
                        && !renewal_extends(policy, &installed, cas.get(issuer_ca), now);
                    if !fired || capped {
                        match expired_slot(individual.as_ref(), &versions, &installed, now) {
                            Some(expired) => {
                                prune_only = true;
                                slot = expired.other();
                                report.slot = slot;
                                work.slot = slot;
                            }
                            None => {
                                report.outcome = if capped { "capped" } else { "not-due" };
                                out.reports.push(report);
                                continue;
                            }
                        }
                    }
                }
                if due && !prune_only {
                    // The slot with the older certificate; an empty slot, or one holding a
                    // certificate the vault does not know, counts as oldest.
                    let age = |s| slot_tp(s).and_then(|tp| by_tp(&tp)).map_or(-1, |i| i as i64);
                    slot = if age(SlotName::Secondary) < age(SlotName::Primary) {
                        SlotName::Secondary
                    } else {
                        SlotName::Primary
                    };
                    report.slot = slot;
                    work.slot = slot;
                }
                let newest_tp = thumbprints.last().cloned().unwrap_or_default();
                // Rolled already, decided from what the device and its enrollment hold (never
                // from which run came last, nor from the hub, whose thumbprints re-provisioning
                // rewrites, nor from which slot holds it): the device holds the newest version,
                // which came from a roll (a lone first version is what `issue` made; under a CA
                // whose renewal is capped it is done too: the CA keeps its version), was signed
                // by the CA version this roll targets, sits in either slot of its individual
                // enrollment (a group member has no slot of its own), and is not yet due for
                // renewal.
                let held_in = [slot, slot.other()]
                    .into_iter()
                    .find(|s| slot_tp(*s).as_deref() == Some(newest_tp.as_str()));
                // A newest certificate that is not valid yet is not done: the service refuses it.
                let already = prune_only
                    || (!due
                        && (versions.len() > 1
                            || (cas.capped(issuer_ca) && !wants_renewal(plan, policy, &newest, now)))
                        && installed.version == newest.version
                        && cas.signed(issuer_ca, &newest)
                        && (individual.is_none() || held_in.is_some())
                        && !not_yet_valid(plan, &newest, now)
                        && !renewal_due(policy, &newest, cas.get(issuer_ca), now));
                if already
                    && !prune_only
                    && let Some(held) = held_in
                {
                    // Only an expired certificate beside it may still go.
                    slot = held;
                    report.slot = slot;
                    work.slot = slot;
                }
                // Its CA ends no later than the certificate it holds: a new one could not end
                // later, so none is made until the CA is renewed (issue 10 item 15).
                if !already
                    && !due
                    && installed.version == newest.version
                    && !not_yet_valid(plan, &newest, now)
                    && cas.get(issuer_ca).is_some_and(|ca| ca.not_after <= newest.exp)
                {
                    report.outcome = "capped";
                    out.reports.push(report);
                    continue;
                }
                let pruned =
                    slot_tp(slot.other()).filter(|tp| by_tp(tp).is_some_and(|i| versions[i].exp < now));
                if already && pruned.is_none() {
                    // A device of a group has no slot of its own: its certificate is accepted
                    // through the group's slot holding the CA certificate that signed it. (The
                    // hub's thumbprints would say where the roll put it only until the device
                    // registers again with it, which makes it the primary.)
                    if let (None, Some(g), Some((ca_name, ca_version))) =
                        (&individual, group, newest.issuer.as_ref())
                    {
                        let key = (g.name.clone(), ca_name.clone(), ca_version.clone());
                        let held = match group_slots.get(&key) {
                            Some(held) => *held,
                            None => {
                                let held =
                                    match (backend.version(ca_name, ca_version)?, backend.group(&g.name)?) {
                                        (Some(ca), Some(state)) => {
                                            super::cas::slot_holding(&state, &ca.cert_der)
                                        }
                                        _ => None,
                                    };
                                group_slots.insert(key, held);
                                held
                            }
                        };
                        if let Some(held) = held {
                            report.slot = held;
                        }
                    }
                    report.outcome = "already-rolled";
                    out.reports.push(report);
                    continue;
                }
                if !already {
                    say!(
                        describe,
                        report.steps,
                        "{}",
                        issue(format!(
                            "issue a new certificate for `{id}` from policy `{}` ({}) signed by CA `{issuer_ca}`",
                            policy.name,
                            if policy.reuse_key { "same key" } else { "new key" }
                        ))
                    );
                    if individual.is_some() {
                        say!(
                            describe,
                            report.steps,
                            "put it into the {} slot of individual enrollment `{id}`",
                            word(slot)
                        );
                    }
                }
                if let Some(tp) = &pruned {
                    say!(
                        describe,
                        report.steps,
                        "remove the expired certificate {tp} from the {} slot",
                        word(slot.other())
                    );
                }
                if !already {
                    if let Some(h) = &identity {
                        say!(
                            describe,
                            report.steps,
                            "set the {} thumbprint of `{id}` in hub `{}`",
                            word(slot),
                            h.hub
                        );
                    }
                    say!(describe, report.steps, "{}", super::install_step(id));
                }
                // Zero downtime: the other slot keeps a valid certificate. If it has none, the
                // certificate the named slot held moves there (the device may still hold it).
                let valid = |tp: &str| {
                    by_tp(tp)
                        .is_some_and(|i| versions[i].exp > now && !not_yet_valid(plan, &versions[i], now))
                };
                if !already && let Some(ind) = &individual {
                    let (named_der, other_der) = match slot {
                        SlotName::Primary => (&ind.primary, &ind.secondary),
                        SlotName::Secondary => (&ind.secondary, &ind.primary),
                    };
                    let other_ok = other_der.as_deref().is_some_and(|d| valid(&sha1_thumbprint(d)));
                    let named_ok = named_der.as_deref().is_some_and(|d| valid(&sha1_thumbprint(d)));
                    if !other_ok && named_ok {
                        if describe {
                            report.steps.insert(
                                1,
                                format!(
                                    "move the certificate in the {} slot to the {} slot, so it keeps working",
                                    word(slot),
                                    word(slot.other())
                                ),
                            );
                        }
                        work.other_individual = Some(named_der.clone());
                    }
                }
                if !already {
                    let installed_tp = installed.thumbprint.clone();
                    work.other_hub = Some(valid(&installed_tp).then_some(installed_tp));
                }
                report.pruned_thumbprint = pruned.clone();
                work.clear_other = pruned.is_some();
                work.prune_only = already;
                if already {
                    report.outcome = if capped { "capped" } else { "pruned" };
                }
                if policy.reuse_key && !already && !dry_run && work.adopt.is_none() {
                    let full = backend
                        .version(&newest.name, &newest.version)?
                        .context("the vault lost the version it just listed")?;
                    work.reuse = Some(backend.private_key(&full)?);
                }
            }
            Mode::Breach { slot, breach } => {
                // Already replaced by an earlier breach of this device (and, with --incident, of
                // the same incident): a rerun does nothing. The journal's record of the
                // replacement counts while the device holds it, or a newer certificate made since.
                // Another client's certificate in its enrollment since is not that replacement:
                // taking the enrollment back is work whatever the incident label.
                let installed_tp = installed.thumbprint.clone();
                let taken = individual.as_ref().is_some_and(|e| !e.foreign.is_empty());
                let left_open = open_incidents
                    .get(id.as_str())
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                let (earlier, in_force) =
                    standing(backend, &target, breach, &versions, &installed, taken, left_open)?;
                out.earlier_incidents = earlier;
                if in_force.is_some() {
                    report.outcome = "already-replaced";
                    out.in_force = in_force;
                    out.reports.push(report);
                    continue;
                }
                // The compromised certificates: the one in the named slot (for a device of a
                // group, the one it holds), and with --both the other slot's too.
                let mut tps: Vec<String> = Vec::new();
                match &individual {
                    // The certificate in the named slot, and always the one the device holds:
                    // its key is the one that leaked.
                    Some(_) => {
                        tps.extend(slot_tp(slot));
                        tps.push(installed_tp.clone());
                    }
                    None => tps.push(installed_tp.clone()),
                }
                if breach.both {
                    tps.extend(slot_tp(slot.other()));
                }
                tps.sort();
                tps.dedup();
                if let Some(mine) = &work.adopt {
                    let mine = sha1_thumbprint(&mine.cert_der);
                    tps.retain(|tp| *tp != mine);
                }
                let compromised: Vec<VaultVersion> = tps
                    .iter()
                    .filter_map(|tp| by_tp(tp).map(|i| &versions[i]))
                    .map(|b| {
                        backend
                            .version(&b.name, &b.version)?
                            .context("the vault lost the version it just listed")
                    })
                    .collect::<Result<Vec<_>>>()?
                    .into_iter()
                    .collect();
                report.compromised = tps.clone();
                match &individual {
                    Some(ind) => {
                        // Named explicitly, the breach takes the enrollment back from another
                        // client: its certificates leave with the compromised ones.
                        for f in &ind.foreign {
                            report.steps.push(format!(
                                "take individual enrollment `{id}` back: remove certificate {} ({}) that another client put into its {} slot",
                                f.thumbprint,
                                if f.subject.is_empty() { "no subject given" } else { &f.subject },
                                f.slot
                            ));
                        }
                        if let Some(w) = work.individual.as_mut() {
                            w.take_back = !w.foreign.is_empty();
                        }
                        // A cut-off attempt of this step may have taken them out already.
                        let held = [slot_tp(SlotName::Primary), slot_tp(SlotName::Secondary)];
                        for tp in tps
                            .iter()
                            .filter(|tp| held.iter().any(|h| h.as_ref() == Some(*tp)))
                        {
                            say!(
                                describe,
                                report.steps,
                                "delete the compromised certificate {tp} from individual enrollment `{id}`"
                            );
                        }
                    }
                    None => {
                        let g = group.context("a device without an individual enrollment is in a group")?;
                        say!(
                            describe,
                            report.steps,
                            "create individual enrollment `{id}` (taking precedence over group `{}`) holding only the new certificate, so the compromised {} is refused",
                            g.name,
                            tps.join(", ")
                        );
                        work.individual = Some(IndividualEnrollment {
                            registration_id: id.clone(),
                            primary: None,
                            secondary: None,
                            status: Status::Enabled,
                            reprovision: g.reprovision.as_str().into(),
                            hub: g.hub.clone(),
                            foreign: Vec::new(),
                            take_back: false,
                        });
                    }
                }
                for v in &compromised {
                    let ca = v.issuer.as_ref().map(|i| i.0.as_str()).unwrap_or("?");
                    if v.enabled {
                        say!(
                            describe,
                            report.steps,
                            "disable vault version {}/{} and add its serial to the CRL of `{ca}` (key-compromise)",
                            v.name,
                            v.version
                        );
                        continue;
                    }
                    // Disabled by a cut-off attempt of this step: only what it did not get to.
                    let listed = match &v.issuer {
                        Some((n, ver)) if describe => backend
                            .is_revoked((n, ver), &crate::pki::CertInfo::from_der(&v.cert_der)?.serial)?,
                        _ => true,
                    };
                    if !listed {
                        report.steps.push(format!(
                            "add the serial of vault version {}/{} (disabled already) to the CRL of `{ca}` (key-compromise)",
                            v.name, v.version
                        ));
                    }
                }
                say!(
                    describe,
                    report.steps,
                    "{}",
                    issue(format!(
                        "issue a new certificate for `{id}` (new key) signed by CA `{issuer_ca}` into the {} slot",
                        word(slot)
                    ))
                );
                if let Some(h) = &identity
                    && breach.remove_hub_identity
                {
                    say!(
                        describe,
                        report.steps,
                        "delete device `{id}` from hub `{}`",
                        h.hub
                    );
                }
                say!(
                    describe,
                    report.steps,
                    "{} and re-provision it, so the hub holds only the new thumbprint",
                    super::install_step(id)
                );
                report.outcome = "replaced";
                work.clear_other = breach.both;
                work.compromised = compromised;
                work.reprovision = true;
                work.remove_identity = breach.remove_hub_identity && identity.is_some();
                if let Some(ind) = work.individual.as_mut() {
                    for s in [SlotName::Primary, SlotName::Secondary] {
                        let held = match s {
                            SlotName::Primary => &mut ind.primary,
                            SlotName::Secondary => &mut ind.secondary,
                        };
                        if held.as_deref().is_some_and(|d| tps.contains(&sha1_thumbprint(d))) {
                            *held = None;
                        }
                    }
                }
            }
            Mode::Replace {
                slot,
                remove_identity,
                tainted,
                superseded,
            } => {
                let signed_by_tainted =
                    |b: &VersionBrief| b.issuer.as_ref().is_some_and(|i| tainted.contains(i));
                // The later breach replaced the CA and this device: its work stands (replacing
                // the device again would leave that breach's certificate enabled and unused).
                // Only what this run's compromised CA signed and nobody disabled yet is left.
                // So also when a later breach of the device itself (the take-back of its
                // enrollment) gave it a certificate under the CA version this run renewed, and
                // left nothing the compromised version signed in its enrollment or identity (an
                // expiry roll since leaves one in the other slot: that one is replaced here).
                // Read only for a device that holds a certificate under the renewed CA: most
                // devices of a breach do not, and this hashes each enrollment slot.
                let holds_tainted = || {
                    let tainted: Vec<&str> = versions
                        .iter()
                        .filter(|b| signed_by_tainted(b))
                        .map(|b| b.thumbprint.as_str())
                        .collect();
                    individual
                        .iter()
                        .flat_map(|e| [&e.primary, &e.secondary])
                        .flatten()
                        .any(|der| tainted.contains(&sha1_thumbprint(der).as_str()))
                        || identity
                            .iter()
                            .flat_map(|i| [&i.primary_thumbprint, &i.secondary_thumbprint])
                            .flatten()
                            .any(|t| tainted.iter().any(|x| x.eq_ignore_ascii_case(t)))
                };
                let replaced_since = superseded.is_none()
                    && cas.signed(issuer_ca, &installed)
                    && !signed_by_tainted(&installed)
                    && !holds_tainted();
                if (superseded.is_some() && !signed_by_tainted(&installed)) || replaced_since {
                    report.outcome = "already-replaced";
                    for b in versions.iter().filter(|b| b.enabled && signed_by_tainted(b)) {
                        say!(describe, report.steps, "{}", disable_compromised(b, ""));
                        if !dry_run {
                            out.unused.push(by_name(b.name.clone(), b.version.clone()));
                        }
                    }
                    report.steps.push(match superseded {
                        Some(later) => format!("a later breach (incident `{later}`) replaced it: nothing else left to do"),
                        None => format!(
                            "it holds {} under the new CA `{issuer_ca}` already (a later breach of the device \
                             replaced it): nothing else left to do",
                            installed.thumbprint
                        ),
                    });
                    out.reports.push(report);
                    continue;
                }
                say!(
                    describe,
                    report.steps,
                    "{}",
                    issue(format!(
                        "issue a new certificate for `{id}` (new key) signed by the new CA `{issuer_ca}`; its enrollment and hub identity keep only it"
                    ))
                );
                // What the compromised CA signed for the device goes out of use with it: left
                // enabled, `export` and `vault export` would still hand out a certificate whose
                // chain is revoked. Disabled only once the replacement stands (see `store`).
                for b in versions.iter().filter(|b| b.enabled && signed_by_tainted(b)) {
                    say!(
                        describe,
                        report.steps,
                        "{}",
                        disable_compromised(b, ", once the new certificate is in place")
                    );
                    if !dry_run {
                        work.retire.push((b.name.clone(), b.version.clone()));
                    }
                }
                // As for a device's own breach: the identity goes, and the device provisions afresh.
                if let Some(h) = &identity
                    && remove_identity
                {
                    say!(
                        describe,
                        report.steps,
                        "delete device `{id}` from hub `{}`",
                        h.hub
                    );
                }
                report.outcome = "replaced";
                work.clear_other = true;
                work.reprovision = true;
                work.remove_identity = remove_identity && identity.is_some();
                work.slot = slot;
            }
        }
        if dry_run {
            report.outcome = match report.outcome {
                "rolled" => "would-roll",
                "replaced" => "would-replace",
                "pruned" => "would-prune",
                other => other,
            };
            out.reports.push(report);
            continue;
        }
        work.report = out.reports.len();
        out.reports.push(report);
        out.work.push(work);
    }
    Ok(out)
}

/// New keys and certificates: `(index in work, key, cert DER)`.
pub(super) type Fresh = Vec<(usize, SubjectKey, Vec<u8>, crate::pki::CertFacts)>;

/// The issuing CA of a device.
pub(super) fn issuer_of<'p>(plan: &'p Plan, id: &str) -> Result<&'p str> {
    Ok(owner_of(plan, id)?.1)
}

/// The issuers device steps sign with, loaded once (a CA that cannot sign is remembered with
/// the reason, which only matters if a device actually needs a new certificate from it).
#[derive(Default)]
pub(super) struct Issuers(HashMap<String, std::result::Result<LoadedIssuer, String>>);

impl Issuers {
    /// Loads these CAs' current versions.
    pub fn load_all(&mut self, backend: &dyn Backend, cas: &[&str], now: OffsetDateTime) {
        for ca in cas {
            let loaded = load_issuer(backend, ca)
                .map_err(|e| format!("{e:#}"))
                .and_then(|issuer| {
                    if issuer.not_after <= now {
                        Err(format!(
                            "CA `{ca}` expired at {}; roll the CA first",
                            crate::clock::rfc3339(issuer.not_after)
                        ))
                    } else {
                        Ok(issuer)
                    }
                });
            self.0.insert(ca.to_string(), loaded);
        }
    }

    fn get(&self, ca: &str) -> Result<&LoadedIssuer> {
        match self.0.get(ca) {
            Some(Ok(issuer)) => Ok(issuer),
            Some(Err(reason)) => Err(anyhow::anyhow!("{reason}")),
            None => Err(anyhow::anyhow!("CA `{ca}` was not loaded")),
        }
    }

    /// Runs `work` where a vault that signs for one of these CAs wants its signatures made
    /// ([`crate::pki::IssuerKey::install`]); on the current pool when every key is held here.
    fn install<R: Send>(&self, work: impl FnOnce() -> R + Send) -> R {
        match self.0.values().flatten().find(|i| i.key.is_remote()) {
            Some(remote) => remote.key.install(work),
            None => work(),
        }
    }

    /// Drops every loaded issuer (after a CA roll, so the new version is used).
    pub fn forget(&mut self) {
        self.0.clear();
    }
}

/// Keys and signatures, on every core (or, for a CA whose vault signs, on as many threads as
/// the vault takes requests at once); touches no backend but that vault.
pub(super) fn generate(
    assessed: &Assessed<'_>,
    issuers: &Issuers,
    now: OffsetDateTime,
    skew: time::Duration,
) -> Result<Fresh> {
    issuers.install(|| generate_here(assessed, issuers, now, skew))
}

fn generate_here(
    assessed: &Assessed<'_>,
    issuers: &Issuers,
    now: OffsetDateTime,
    skew: time::Duration,
) -> Result<Fresh> {
    assessed
        .work
        .par_iter()
        // Small pieces: the core that comes free from the store's writes finds some left to take.
        .with_max_len(crate::ops::SIGNING_PIECE)
        .enumerate()
        .filter(|(_, w)| !w.prune_only && w.adopt.is_none())
        .map(|(i, w)| {
            let issuer = issuers.get(w.issuer_ca)?;
            let key = match &w.reuse {
                Some(k) => SubjectKey::reuse(k)?,
                None => SubjectKey::generate(&w.policy.key)?,
            };
            let profile = CertProfile {
                subject: Subject::common_name(&w.id),
                dns_names: w.policy.dns_names.clone(),
                key_usage: effective_key_usage(w.policy, false),
                extended_key_usage: w.policy.extended_key_usage.clone(),
                // Backdated by the plan's skew, for devices whose clock is a little slow.
                not_before: now.saturating_sub(skew),
                not_after: crate::clock::add_days(now, w.policy.validity_days as i64).min(issuer.not_after),
                ca: None,
            };
            // What the vault indexes it by comes with it, worked out on the signing cores.
            let (der, facts) = sign_public_key_with_facts(&profile, key.public_key(), &issuer.key)?;
            if w.reprovision {
                // The registration's path validation, here beside the store's writes.
                crate::backend::registration::prevalidate(&der, &issuer.chain, issuer.key.cert_der(), now);
            }
            Ok((i, key, der, facts))
        })
        .collect()
}

/// A version known only by its name and id: all that disabling it reads (on both backends),
/// so a CA breach does not fetch each device's old certificate just to disable it.
fn by_name(name: String, version: String) -> VaultVersion {
    VaultVersion {
        name,
        version,
        cert_der: Vec::new(),
        kty: String::new(),
        exportable: false,
        enabled: true,
        nbf: OffsetDateTime::UNIX_EPOCH,
        exp: OffsetDateTime::UNIX_EPOCH,
        created: OffsetDateTime::UNIX_EPOCH,
        issuer: None,
    }
}

fn slot_mut<'a, T>(primary: &'a mut T, secondary: &'a mut T, slot: SlotName) -> (&'a mut T, &'a mut T) {
    match slot {
        SlotName::Primary => (primary, secondary),
        SlotName::Secondary => (secondary, primary),
    }
}

/// Writes a chunk (call inside one unit of work). Returns the result recorded in the journal.
pub(super) fn store(
    assessed: &mut Assessed<'_>,
    fresh: Fresh,
    issuers: &Issuers,
    backend: &mut dyn Backend,
    mode: Mode<'_>,
    now: OffsetDateTime,
) -> Result<serde_json::Value> {
    for v in std::mem::take(&mut assessed.unused) {
        backend.set_enabled(&v, false, now)?;
    }
    let names: Vec<String> = fresh
        .iter()
        .map(|(i, _, _, _)| device_cert_name(&assessed.work[*i].id))
        .collect();
    // One policy document per (policy, issuer): a chunk shares a handful.
    let mut docs: HashMap<(&str, &str), String> = HashMap::new();
    for (i, _, _, _) in &fresh {
        let w = &assessed.work[*i];
        docs.entry((w.policy.name.as_str(), w.issuer_ca))
            .or_insert_with(|| policy_json(w.policy, "CN=<device id>", Some(w.issuer_ca)));
    }
    let batch: Vec<NewVersion<'_>> = fresh
        .iter()
        .zip(&names)
        .map(|((i, key, der, facts), name)| {
            let w = &assessed.work[*i];
            let doc = &docs[&(w.policy.name.as_str(), w.issuer_ca)];
            let issuer = issuers.get(w.issuer_ca).expect("the chunk was generated with it");
            NewVersion {
                name,
                policy_json: doc,
                cert_der: der,
                key_pkcs8: key.pkcs8_der(),
                kty: w.policy.key.kty(),
                exportable: exportable(w.policy),
                issuer: Some((issuer.cert_name.as_str(), issuer.version.as_str())),
                facts: Some(facts),
                new_key: w.reuse.is_none(),
            }
        })
        .collect();
    let created = backend.create_versions(&batch, now)?;
    drop(batch);
    let mut new_cert: Vec<Option<(String, Vec<u8>, String)>> = vec![None; assessed.work.len()];
    for ((i, _, der, facts), version) in fresh.into_iter().zip(created) {
        new_cert[i] = Some((version, der, facts.thumbprint));
    }
    // What a cut-off attempt of the step made is taken as made (see `assess`).
    for (w, new) in assessed.work.iter_mut().zip(&mut new_cert) {
        if let Some(v) = w.adopt.take().filter(|_| !w.prune_only) {
            let tp = sha1_thumbprint(&v.cert_der);
            *new = Some((v.version, v.cert_der, tp));
        }
    }

    let mut individuals = Vec::new();
    let mut identities = Vec::new();
    // The identity of a device that re-provisions below, with the request it goes with: written
    // only when the registration assigns another hub (in its own hub the registration, or the
    // fix-up after it, leaves it holding only the new thumbprint; writing it before as well would
    // write every row twice).
    let mut after_register: Vec<(usize, HubIdentity)> = Vec::new();
    let mut installs = Vec::new();
    let mut requests = Vec::new();
    let mut replaced = serde_json::Map::new();
    let mut retire: Vec<(String, String)> = Vec::new();
    for (w, new) in assessed.work.iter_mut().zip(&new_cert) {
        let report = &mut assessed.reports[w.report];
        if let Some(mut ind) = w.individual.take() {
            let (named, other) = slot_mut(&mut ind.primary, &mut ind.secondary, w.slot);
            if let Some((_, der, _)) = new {
                *named = Some(der.clone());
            }
            if w.clear_other {
                *other = None;
            }
            if let Some(keep) = w.other_individual.take() {
                *other = keep;
            }
            // A lone certificate is the enrollment's primary, as DPS requires.
            ind.primary_first();
            individuals.push(ind);
        }
        if let Some(mut h) = w.identity.take() {
            if w.remove_identity {
                backend.delete_identity(&h.hub, &w.id)?;
            } else {
                let (named, other) = slot_mut(&mut h.primary_thumbprint, &mut h.secondary_thumbprint, w.slot);
                if let Some((_, _, tp)) = new {
                    *named = Some(tp.clone());
                }
                if w.clear_other {
                    *other = None;
                }
                if let Some(keep) = w.other_hub.take() {
                    *other = keep;
                }
                // A breach (the device's own, or a CA's above it) ends with the hub holding only
                // the new thumbprint (what the re-provisioning below checks): written so at once
                // (after the unit's deliveries), the leaked key, or every certificate the
                // compromised CA signed, is shut out even where the enrollment keeps an older
                // certificate or the device never registers again, and a remote hub's identity
                // names the certificate the device registers with. Left to DPS, a CA breach's
                // device kept its compromised thumbprint in the hub until it registered with
                // the new certificate, and when asked to, it registered with the compromised one.
                let own_breach =
                    (!w.compromised.is_empty() || matches!(mode, Mode::Replace { .. })) && new.is_some();
                // Under `reprovision = "never"` DPS does not rewrite the hub identity when the
                // device registers with its new certificate: left to DPS, the hub would keep only
                // the compromised thumbprint and refuse the new one.
                let hub_kept = w.hub_kept && w.reprovision && new.is_some();
                if (own_breach || hub_kept)
                    && let Some((_, _, tp)) = new
                {
                    h.primary_thumbprint = Some(tp.clone());
                    h.secondary_thumbprint = None;
                }
                // A lone thumbprint is the primary, as for the enrollment.
                crate::backend::types::primary_first(&mut h.primary_thumbprint, &mut h.secondary_thumbprint);
                if w.reprovision && new.is_some() && !own_breach && !hub_kept {
                    after_register.push((requests.len(), h));
                } else {
                    identities.push(h);
                }
            }
        }
        for v in &w.compromised {
            if v.enabled {
                backend.set_enabled(v, false, now)?;
            }
            if let Some((issuer, issuer_version)) = &v.issuer {
                let serial = crate::pki::CertInfo::from_der(&v.cert_der)?.serial;
                backend.revoke((issuer, issuer_version), &serial, "key-compromise", now)?;
            }
        }
        if let Some((version, der, tp)) = new {
            installs.push(DeviceRecord {
                installed_version: Some(version.clone()),
                ..w.record.clone()
            });
            report.new_thumbprint = Some(tp.clone());
            if w.reprovision {
                let mut chain = vec![der.clone()];
                chain.extend(issuers.get(w.issuer_ca)?.chain.iter().cloned());
                requests.push(RegistrationRequest {
                    registration_id: w.id.clone(),
                    chain,
                });
            }
            // Breach steps record each replacement: what their rerun checks read back.
            if !matches!(mode, Mode::Expiry { .. }) {
                replaced.insert(w.id.clone(), serde_json::Value::String(tp.clone()));
            }
            retire.append(&mut w.retire);
        }
    }
    backend.put_individuals_and_identities(&individuals, &identities, now)?;
    if !installs.is_empty() {
        backend.install(&installs)?;
    }
    if !requests.is_empty() {
        let states = backend.register(&requests, now)?;
        let asked: Vec<String> = requests.iter().map(|r| r.registration_id.clone()).collect();
        let kept_disabled = backend.individuals_kept_disabled(&asked);
        for ((req, state), kept_disabled) in requests.iter().zip(&states).zip(kept_disabled) {
            // `waiting`: the delivery or the request to register did not get through (a hook,
            // an IoT Hub direct method), so DPS refused nothing; its words name what failed.
            if state.status == "waiting" {
                // A delivery that failed does not undo a device's breach: the leaked certificate
                // is already refused, and the replacement is owed with its fleet record. Failing
                // the step here rolled that record back while the vault, DPS and the hub kept the
                // replacement, so the rerun found it in the enrollment's slot, took it for
                // compromised and disabled it. Committed, the step records its replacement, the
                // run exits 1 for the owed delivery, and the next run delivers it first. The same
                // holds for a replacement left to the operator (`delivery = "none"`, the default)
                // or a device that did not register when asked: DPS refused nothing either. A CA
                // breach's replacement is the same: failing its unit held up the breach of the
                // rest of the fleet behind one device that was offline, every rerun stopping
                // there again.
                if matches!(mode, Mode::Breach { .. }) || matches!(mode, Mode::Replace { .. }) {
                    continue;
                }
                anyhow::bail!(
                    "device:{} has not registered with its new certificate: {}",
                    req.registration_id,
                    state.error.as_deref().unwrap_or("no reason recorded")
                );
            }
            // Another client disabled its enrollment while this step wrote it (the write kept
            // that): DPS refuses the new certificate until it is enabled again. The step's work
            // stands, and the run reports the device `disabled` with the way back.
            if state.status != "assigned" && kept_disabled {
                continue;
            }
            if state.status != "assigned" {
                anyhow::bail!(
                    "device:{} was refused by the enrollment service with its new certificate: {}",
                    req.registration_id,
                    state.error.as_deref().unwrap_or("refused")
                );
            }
        }
        // Re-provisioning leaves the hub alone under the `never` policy; a compromised
        // thumbprint must go all the same. The assigned identities are read in one batch.
        let wanted: Vec<(String, String)> = requests
            .iter()
            .zip(&states)
            .filter_map(|(req, state)| Some((state.hub.clone()?, req.registration_id.clone())))
            .collect();
        let mut assigned = backend.identity_many(&wanted)?.into_iter();
        let mut only_new = Vec::new();
        for (req, state) in requests.iter().zip(&states) {
            if state.hub.is_none() {
                continue;
            }
            let tp = sha1_thumbprint(&req.chain[0]);
            if let Some(Some(mut h)) = assigned.next()
                && (h.primary_thumbprint.as_deref() != Some(tp.as_str()) || h.secondary_thumbprint.is_some())
            {
                h.primary_thumbprint = Some(tp);
                h.secondary_thumbprint = None;
                only_new.push(h);
            }
        }
        // An identity in a hub other than the one assigned gets the new thumbprint as decided.
        only_new.extend(
            after_register
                .into_iter()
                .filter(|(at, h)| states[*at].hub.as_deref() != Some(h.hub.as_str()))
                .map(|(_, h)| h),
        );
        if !only_new.is_empty() {
            backend.update_identities(&only_new, now)?;
        }
    }
    // Only now, with each replacement written and registered, do the certificates the
    // compromised CA signed go out of use; a step cut off before this point leaves them enabled
    // and its rerun disables them, as no device depends on them any more by then.
    for (name, version) in retire {
        backend.set_enabled(&by_name(name, version), false, now)?;
    }
    let mut result = serde_json::json!({ "replaced": replaced });
    if let Mode::Breach { breach, .. } = mode {
        // One device per breach step: what the rerun check reads back. A step that replaced
        // nothing records the replacement in force, so a run with nothing to do never erases
        // the record.
        if let Some((_, tp)) = replaced.iter().next() {
            result["replacement"] = tp.clone();
            result["incident"] = serde_json::json!(breach.incident);
        } else if let Some(in_force) = assessed.in_force.take() {
            result["replacement"] = in_force["replacement"].clone();
            result["incident"] = in_force["incident"].clone();
        } else {
            result["incident"] = serde_json::json!(breach.incident);
        }
        let mut earlier = std::mem::take(&mut assessed.earlier_incidents);
        earlier.retain(|i| result["incident"].as_str() != Some(i.as_str()));
        result["earlier_incidents"] = serde_json::json!(earlier);
    }
    for w in &assessed.work {
        let report = &mut assessed.reports[w.report];
        if report.outcome == "rolled" && w.prune_only {
            report.outcome = "pruned";
        }
    }
    Ok(result)
}

/// For each of `ids`, the replacement in force (with its incident) when an earlier breach
/// already replaced it for this breach's incident (see [`standing`]): its step is planned as
/// nothing to do and cuts nobody off, so a dry run says so. Only a device with an earlier breach
/// step is read further.
pub(super) fn replaced_already(
    backend: &dyn Backend,
    ids: &[String],
    breach: &Breach,
    open: &OpenIncidents,
) -> Result<Vec<Option<serde_json::Value>>> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let target = format!("device:{id}");
        if backend.last_done_step(&target, "breach-device")?.is_none() {
            out.push(None);
            continue;
        }
        let versions = backend
            .briefs_many(&[device_cert_name(id)])?
            .pop()
            .unwrap_or_default();
        let installed = backend
            .device(id)?
            .and_then(|r| r.installed_version)
            .and_then(|v| versions.iter().find(|b| b.version == v).cloned());
        let Some(installed) = installed else {
            out.push(None);
            continue;
        };
        let taken = backend.individual(id)?.is_some_and(|e| !e.foreign.is_empty());
        let left_open = open.get(id.as_str()).map(Vec::as_slice).unwrap_or_default();
        out.push(standing(backend, &target, breach, &versions, &installed, taken, left_open)?.1);
    }
    Ok(out)
}

/// What the earlier breaches of a device leave standing, from the journal's record of its last
/// breach step (a step with nothing to do records the replacement in force again, so a no-op run
/// never erases it): the incidents handled so far (with those of other open breach runs of it,
/// `left_open`), and, when this breach is one of them (or names no incident) and the device
/// holds that replacement or a certificate made since, the replacement in force with the
/// incident it was made for: a rerun has nothing to do. Another client's certificate in its
/// enrollment since (`taken`) is not that replacement: taking the enrollment back is work
/// whatever the incident label.
fn standing(
    backend: &dyn Backend,
    target: &str,
    breach: &Breach,
    versions: &[VersionBrief],
    installed: &VersionBrief,
    taken: bool,
    left_open: &[String],
) -> Result<(Vec<String>, Option<serde_json::Value>)> {
    let mut earlier = left_open.to_vec();
    let Some(step) = backend.last_done_step(target, "breach-device")? else {
        return Ok((earlier, None));
    };
    let result = step.result.unwrap_or_default();
    let mut handled = incidents_of(&result);
    for i in earlier {
        if !handled.contains(&i) {
            handled.push(i);
        }
    }
    earlier = handled;
    // Read before this return: the take-back's step carries the incidents handled before it,
    // or an older incident's command run after it would replace the device again (trial
    // az15 N2).
    if taken {
        return Ok((earlier, None));
    }
    // An incident handled before the last one counts as handled too: its command run again
    // from the shell history must not replace the later incident's certificate (trial az9 G2).
    let same_incident = breach.incident.is_none()
        || earlier
            .iter()
            .any(|i| Some(i.as_str()) == breach.incident.as_deref());
    let at = |tp: &str| versions.iter().position(|v| v.thumbprint == tp);
    let replacement = result["replacement"].as_str().and_then(at);
    let holds = replacement.is_some_and(|r| at(&installed.thumbprint).is_some_and(|i| i >= r));
    let in_force = (same_incident && holds).then(|| {
        serde_json::json!({
            "replacement": result["replacement"],
            "incident": result["incident"],
        })
    });
    Ok((earlier, in_force))
}

/// Why a version a cut-off attempt of a step made (`own`, found by its mark) is superseded by a
/// later run, given the device's newest version: another one is newer, or it was disabled since.
fn superseded(own: &VaultVersion, newest: &VersionBrief) -> Option<String> {
    let tp = sha1_thumbprint(&own.cert_der);
    if own.version != newest.version {
        return Some(format!(
            "this run issued it certificate {tp} before it was stopped, and a later run replaced it (with {})",
            newest.thumbprint
        ));
    }
    own.never_delivered().map(|why| {
        format!(
            "this run issued it certificate {tp} before it was stopped, and a later run disabled it ({why})"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::spec::{Curve, KeySpec};
    use crate::plan::{ContentType, LifetimeAction, Trigger};
    use time::Duration;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-23 0:00 UTC);

    fn policy(actions: Vec<LifetimeAction>) -> Policy {
        Policy {
            name: "device".into(),
            key: KeySpec::Ec {
                curve: Curve::P256,
                hsm: false,
            },
            exportable: true,
            reuse_key: false,
            validity_days: 365,
            key_usage: vec![],
            extended_key_usage: vec![],
            dns_names: vec![],
            content_type: ContentType::Pem,
            lifetime_actions: actions,
        }
    }

    fn cert(nbf: OffsetDateTime, exp: OffsetDateTime) -> VersionBrief {
        VersionBrief {
            name: "dev-a".into(),
            version: "v".into(),
            thumbprint: "T".into(),
            enabled: true,
            nbf,
            exp,
            issuer: Some(("ca-f".into(), "c1".into())),
        }
    }

    fn ca(not_after: OffsetDateTime) -> CaTarget {
        CaTarget {
            cert_name: "ca-f".into(),
            version: "c1".into(),
            not_after,
        }
    }

    #[test]
    fn a_certificate_is_due_once_auto_renew_fires_unless_a_new_one_would_not_end_later() {
        let renew = policy(vec![LifetimeAction {
            trigger: Trigger::DaysBeforeExpiry(30),
            action: ActionKind::AutoRenew,
        }]);
        let c = cert(NOW, NOW + Duration::days(365));
        let far = ca(NOW + Duration::days(3650));
        assert!(!renewal_due(&renew, &c, Some(&far), NOW + Duration::days(334)));
        assert!(renewal_due(&renew, &c, Some(&far), NOW + Duration::days(335)));
        // Capped by its CA's notAfter: a renewal would end no later, so a rerun must not loop.
        let capped = cert(NOW, NOW + Duration::days(20));
        let ending = ca(NOW + Duration::days(20));
        assert!(!renewal_due(
            &renew,
            &capped,
            Some(&ending),
            NOW + Duration::days(1)
        ));
        // Only auto-renew renews; an email action never makes a roll due.
        let mail = policy(vec![LifetimeAction {
            trigger: Trigger::DaysBeforeExpiry(30),
            action: ActionKind::EmailContacts,
        }]);
        assert!(!renewal_due(&mail, &c, Some(&far), NOW + Duration::days(360)));
    }

    #[test]
    fn only_a_certificate_signed_by_the_targeted_ca_version_counts() {
        let mut targets = CaTargets::default();
        targets.0.insert("f".into(), Some(ca(NOW + Duration::days(3650))));
        targets.0.insert("renewed".into(), None);
        let c = cert(NOW, NOW + Duration::days(365));
        assert!(targets.signed("f", &c));
        let older = VersionBrief {
            issuer: Some(("ca-f".into(), "c0".into())),
            ..c.clone()
        };
        assert!(!targets.signed("f", &older));
        assert!(
            !targets.signed("renewed", &c),
            "a CA the run renews has no version yet"
        );
        assert!(!targets.signed("unknown", &c));
    }
}
