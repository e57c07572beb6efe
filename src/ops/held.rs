//! What a device holds, for `status` and `check`.
//!
//! The local backend installs each certificate on its simulated device itself, so the fleet
//! record's version is what the device holds. On Azure certroll does not hold the devices: the
//! fleet record says which version certroll *issued* a device (and handed to its delivery
//! channel, if the plan names one), and what the device holds is read back from what the
//! services saw it present. DPS's registration state does not carry the certificate; the hub
//! identity DPS writes when it assigns the device does (the presented leaf's thumbprint). certroll
//! writes hub thumbprints too (a roll adds the new one before any device has it), so a thumbprint
//! counts only for a version the vault made no later than DPS's last assignment of the device:
//! a device cannot have presented a certificate that did not exist yet. When no thumbprint of
//! the hub identity is such a version (a roll took the presented one out of the hub), the
//! device presented the newest version that existed at its last assignment.

use crate::backend::Backend;
use crate::backend::types::{
    HubIdentity, IndividualEnrollment, JournalRun, RegistrationState, Status, VaultVersion,
};
use anyhow::Result;

/// What one device holds, beside what certroll issued it.
#[derive(Debug, Clone, Default)]
pub struct Held {
    /// The version the device holds: on a backend that installs on its devices, the fleet
    /// record's; on Azure, the version the services saw it present at its last assignment
    /// (None: it never registered, or with a certificate certroll cannot place).
    pub presented: Option<VaultVersion>,
    /// The version certroll issued the device (the fleet record's) when the device has not
    /// presented it (yet): handed to the delivery channel, or waiting for the operator.
    pub pending: Option<VaultVersion>,
}

impl Held {
    /// The version to judge the device by when certroll cannot know more: the presented one,
    /// else the issued one.
    pub fn presented_or_issued(&self) -> Option<&VaultVersion> {
        self.presented.as_ref().or(self.pending.as_ref())
    }
}

/// What the devices hold on a backend that installs on them: the fleet record's versions.
fn as_installed(installed: Vec<Option<VaultVersion>>) -> Vec<Held> {
    installed
        .into_iter()
        .map(|presented| Held {
            presented,
            pending: None,
        })
        .collect()
}

/// What each device of `ids` holds, in the order asked, reading DPS and the hubs where the
/// backend does not install on its devices (one batch each).
pub fn held_many(backend: &dyn Backend, ids: &[String]) -> Result<Vec<Held>> {
    let installed = super::installed_many(backend, ids)?;
    if backend.installs_on_devices() {
        return Ok(as_installed(installed));
    }
    let (registrations, identities) = backend.registrations_and_identities(ids)?;
    held_from(backend, ids, installed, &registrations, &identities)
}

/// As [`held_many`], from what the caller already read: the fleet record's versions
/// ([`super::installed_many`]), the registration states and the hub identities in the hubs
/// those name.
pub fn held_from(
    backend: &dyn Backend,
    ids: &[String],
    installed: Vec<Option<VaultVersion>>,
    registrations: &[Option<RegistrationState>],
    identities: &[Option<HubIdentity>],
) -> Result<Vec<Held>> {
    if backend.installs_on_devices() {
        return Ok(as_installed(installed));
    }
    let mut out: Vec<Held> = Vec::with_capacity(ids.len());
    // Devices whose presented certificate is another version than the issued one: their
    // versions are read in one batch.
    let mut others: Vec<usize> = Vec::new();
    let mut owed_versions: Vec<Option<String>> = vec![None; ids.len()];
    for (i, issued) in installed.into_iter().enumerate() {
        let seen = Seen::of(registrations[i].as_ref(), identities[i].as_ref());
        // A version its channel has not taken yet cannot have reached the device, whatever the
        // times say: DPS's times are whole seconds, so a roll right after an assignment would
        // otherwise pass for presented.
        let owed = match &issued {
            Some(v) if seen.is_some() => backend.owes_delivery(&ids[i], &v.version)?,
            _ => false,
        };
        if owed {
            owed_versions[i] = issued.as_ref().map(|v| v.version.clone());
        }
        match (&issued, &seen) {
            (Some(v), Some(seen)) if !owed && seen.plainly_presented(v) => out.push(Held {
                presented: issued,
                pending: None,
            }),
            (_, Some(_)) => {
                others.push(i);
                out.push(Held {
                    presented: None,
                    pending: issued,
                });
            }
            (_, None) => out.push(Held {
                presented: None,
                pending: issued,
            }),
        }
    }
    let names: Vec<String> = others.iter().map(|&i| super::device_cert_name(&ids[i])).collect();
    for (i, versions) in others.into_iter().zip(backend.versions_many(&names)?) {
        let Some(seen) = Seen::of(registrations[i].as_ref(), identities[i].as_ref()) else {
            continue;
        };
        // The hub's primary thumbprint first: the one DPS writes. When certroll has since taken
        // the presented thumbprint out of the hub (a roll that replaced it), the device presented
        // a version that existed then: the newest one.
        let could = |v: &&VaultVersion| owed_versions[i].as_deref() != Some(v.version.as_str());
        out[i].presented = seen
            .thumbprints
            .iter()
            .find_map(|tp| versions.iter().filter(could).find(|v| seen.presented_as(v, tp)))
            .or_else(|| {
                // A refused attempt names no certificate: only the hub's thumbprints place it.
                (!seen.refused)
                    .then(|| versions.iter().filter(could).rev().find(|v| v.created <= seen.at))
                    .flatten()
            })
            .cloned();
    }
    Ok(out)
}

/// What the services saw of a device at its last assignment.
struct Seen {
    /// When DPS last assigned it.
    at: time::OffsetDateTime,
    /// Its hub identity's thumbprints, primary first (SHA-1 or SHA-256 hex).
    thumbprints: Vec<String>,
    /// The hub identity has a primary thumbprint (the first of `thumbprints`).
    has_primary: bool,
    /// DPS refused its last attempt (`failed`): the hub identity of its last assignment still
    /// names what it holds, as the local backend's device keeps the certificate it was refused
    /// with (trial az5 F-STATUS-REFUSED).
    refused: bool,
}

impl Seen {
    /// None when the device is not assigned (never registered, or disabled since) and was not
    /// refused with a hub identity left from an earlier assignment.
    fn of(registration: Option<&RegistrationState>, identity: Option<&HubIdentity>) -> Option<Seen> {
        let r = registration
            .filter(|r| r.status == "assigned" || (r.status == "failed" && identity.is_some()))?;
        Some(Seen {
            refused: r.status == "failed",
            at: r.updated?,
            has_primary: identity.is_some_and(|i| i.primary_thumbprint.is_some()),
            thumbprints: identity
                .map(|i| {
                    [&i.primary_thumbprint, &i.secondary_thumbprint]
                        .into_iter()
                        .flatten()
                        .cloned()
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    /// Whether the device presented `v` without weighing the device's other versions: the hub
    /// identity's primary thumbprint (the one DPS writes) is `v`'s, or another slot's is and `v`
    /// existed before DPS's last assignment. A version made in the very second of the assignment
    /// (DPS's and Key Vault's times are whole seconds) that only certroll's slot holds is left to
    /// the versions read, where a primary thumbprint naming an older version wins: a roll right
    /// after a registration otherwise passed for presented, one run in six (CI run 27).
    fn plainly_presented(&self, v: &VaultVersion) -> bool {
        // Compared in whole seconds: Key Vault's `created` is one.
        let before = v.created.unix_timestamp() < self.at.unix_timestamp();
        self.thumbprints
            .iter()
            .enumerate()
            .any(|(slot, tp)| self.presented_as(v, tp) && ((slot == 0 && self.has_primary) || before))
    }

    fn presented_as(&self, v: &VaultVersion, tp: &str) -> bool {
        if v.created > self.at {
            return false;
        }
        let of = if tp.len() == 64 {
            crate::pki::sha256_thumbprint(&v.cert_der)
        } else {
            crate::pki::sha1_thumbprint(&v.cert_der)
        };
        of.eq_ignore_ascii_case(tp)
    }
}

/// Where a device stands beside its certificate: revoked by certroll, cut off by a change
/// certroll did not make (another client of DPS or the hub), or neither.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// Its individual enrollment is disabled and certroll revoked it (its vault version is
    /// disabled, or its serial is on its issuer's CRL): disallowed on purpose.
    Revoked,
    /// It cannot connect because of a change certroll did not make: why, in words, with the
    /// way back.
    CutOff(String),
    /// Nothing of the kind.
    Usable,
}

/// Judges device `id` by what the services hold for it: its individual enrollment (None: it has
/// none) and, where the backend does not install on its devices, its hub identity; `issued` is
/// the version certroll issued it (the fleet record's), `held` what [`held_many`] found;
/// `breach` the command that finishes an open breach that has yet to replace the device's
/// certificate (see [`open_breaches`]).
///
/// A disabled enrollment is certroll's revoke when the issued version is disabled or on its
/// issuer's CRL (revoke does both); otherwise someone else disabled it, and DPS refuses the
/// device. A hub identity someone else disabled, or whose thumbprints are neither the issued
/// certificate's nor the presented one's, refuses the device's connections (issue 12, az4
/// F-CHECK-BLIND).
#[allow(clippy::too_many_arguments)]
pub fn standing(
    backend: &dyn Backend,
    id: &str,
    issued: Option<&VaultVersion>,
    held: &Held,
    enrollment: Option<&IndividualEnrollment>,
    enrolled: bool,
    identity: Option<&HubIdentity>,
    breach: Option<&str>,
) -> Result<Standing> {
    // Read only for a disabled enrollment or identity: the CRL is not read per device.
    let revoked = || revoked_by_certroll(backend, issued);
    if enrollment.is_some_and(|e| e.status == Status::Disabled) {
        if revoked()? {
            return Ok(Standing::Revoked);
        }
        return Ok(Standing::CutOff(match breach {
            Some(rerun) => cut_off_under_breach(id, false, &format!("`{rerun}`")),
            None => disabled_by_another(id, issued),
        }));
    }
    if enrolled && enrollment.is_none() && issued.is_some() {
        return Ok(Standing::CutOff(match breach {
            Some(rerun) => cut_off_under_breach(id, true, &format!("`{rerun}`")),
            None => deleted_by_another(id),
        }));
    }
    if backend.installs_on_devices() {
        return Ok(Standing::Usable);
    }
    let Some(identity) = identity else {
        return Ok(Standing::Usable);
    };
    if identity.status == Status::Disabled && !revoked()? {
        return Ok(Standing::CutOff(identity_disabled_by_another(id, &identity.hub)));
    }
    let thumbprints = x509_thumbprints(identity);
    if thumbprints.is_empty() {
        return Ok(Standing::Usable);
    }
    let known: Vec<&VaultVersion> = issued
        .into_iter()
        .chain(held.presented.as_ref())
        .chain(held.pending.as_ref())
        .collect();
    if known.is_empty() {
        return Ok(Standing::Usable);
    }
    if known.iter().any(|v| admits(&thumbprints, v)) {
        return Ok(Standing::Usable);
    }
    let mut certroll: Vec<String> = Vec::new();
    for v in &known {
        let tp = crate::pki::sha1_thumbprint(&v.cert_der);
        if !certroll.contains(&tp) {
            certroll.push(tp);
        }
    }
    Ok(Standing::CutOff(format!(
        "its identity in hub `{}` accepts only thumbprint(s) {}, and not the certificate certroll issued it \
         or the one it presented ({}): the hub refuses its connections. Another client of the hub changed \
         them. No direct method reaches a device the hub refuses (`certroll reprovision` cannot): its next \
         registration through DPS writes its own back (its next start), or `certroll roll-primary --breach \
         device:{id} --yes` writes the identity anew with a new certificate, which reaches the device through a \
         hook or the operator (`certroll export device:{id} --with-key`)",
        identity.hub,
        thumbprints.join(" / "),
        certroll.join(" / ")
    )))
}

/// The thumbprints a hub identity admits a device's certificate by; none for one that
/// authenticates by CA (or not by X.509), which has nothing to match.
pub(crate) fn x509_thumbprints(identity: &HubIdentity) -> Vec<&str> {
    if identity.auth_type.eq_ignore_ascii_case("certificateAuthority") {
        return Vec::new();
    }
    [&identity.primary_thumbprint, &identity.secondary_thumbprint]
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect()
}

/// Whether one of `thumbprints` (SHA-1, or SHA-256 by its length) is version `v`'s.
pub(crate) fn admits(thumbprints: &[&str], v: &VaultVersion) -> bool {
    thumbprints.iter().any(|tp| {
        let of = if tp.len() == 64 {
            crate::pki::sha256_thumbprint(&v.cert_der)
        } else {
            crate::pki::sha1_thumbprint(&v.cert_der)
        };
        of.eq_ignore_ascii_case(tp)
    })
}

/// Whether certroll revoked the device that holds `issued` (its version disabled, or its
/// serial on its issuer's CRL: revoke does both); with nothing to tell by (None), taken as
/// certroll's doing. Reads the CRL: asked only of a device whose enrollment is disabled.
pub(crate) fn revoked_by_certroll(backend: &dyn Backend, issued: Option<&VaultVersion>) -> Result<bool> {
    Ok(match issued {
        None => true,
        Some(v) => !v.enabled || on_crl(backend, v)?,
    })
}

/// Why device `id` cannot connect when its individual enrollment is disabled though certroll
/// did not revoke it (`issued`: the version certroll issued it), with the way back.
pub(crate) fn disabled_by_another(id: &str, issued: Option<&VaultVersion>) -> String {
    let thumbprint = issued
        .map(|v| crate::pki::sha1_thumbprint(&v.cert_der))
        .unwrap_or_default();
    enrollment_disabled_by_another(id, &thumbprint)
}

/// As [`disabled_by_another`], for the certificate whose SHA-1 thumbprint is `thumbprint`.
pub(crate) fn enrollment_disabled_by_another(id: &str, thumbprint: &str) -> String {
    format!(
        "its individual enrollment `{id}` is disabled, but certroll did not revoke it (its certificate {thumbprint} \
         is neither disabled nor on a CRL): DPS refuses its registrations. Another client of DPS disabled \
         it: enable it again in DPS (provisioningStatus `enabled`), or revoke the device \
         (`certroll revoke device:{id}`)"
    )
}

/// Why device `id` cannot connect when its identity in `hub` is disabled though certroll did
/// not revoke it, with the way back.
pub(crate) fn identity_disabled_by_another(id: &str, hub: &str) -> String {
    format!(
        "its identity in hub `{hub}` is disabled, but certroll did not revoke it: the hub refuses its \
         connections. Another client of the hub disabled it: enable it again in the hub (status `enabled`), \
         or revoke the device (`certroll revoke device:{id}`)"
    )
}

pub(crate) use crate::backend::types::deleted_by_another;

/// Why device `id` is left for later by a breach whose replacement of its compromised
/// certificate is still owed, when another client disabled (or, `deleted`, deleted) its
/// individual enrollment, with the way back: `rerun` names the breach that finishes it. The
/// ways back of [`disabled_by_another`] and [`deleted_by_another`] would admit the compromised
/// certificate again (enabling keeps it in the enrollment; `issue` enrolls it), so they are
/// not given alone: the rerun right after replaces it, and a revoke lets the breach finish
/// without it.
pub(crate) fn cut_off_under_breach(id: &str, deleted: bool, rerun: &str) -> String {
    let (what, back) = if deleted {
        (
            "is not in DPS: another client of DPS deleted it",
            "create the enrollment again in DPS",
        )
    } else {
        (
            "is disabled, but certroll did not revoke it: another client of DPS disabled it",
            "enable it again in DPS (provisioningStatus `enabled`)",
        )
    };
    format!(
        "its individual enrollment `{id}` {what}, and the breach that replaces its compromised certificate has \
         not replaced it yet: the breach left it, and its run, open. To bring the device back, {back} and run \
         {rerun} right after: the enrollment still holds the compromised certificate, which DPS admits until the \
         breach replaces it (`certroll issue enrollment:{id}` refuses while the breach is open). If the device is \
         gone, revoke it (`certroll revoke device:{id}`) and run {rerun} to finish the breach"
    )
}

/// What `check` and `status` say of device `id` while an open breach run has yet to replace
/// its certificate (cut off part-way; `rerun` finishes it), when nothing else cuts it off. What
/// the device holds and what DPS and the hub admit are then somewhere between the compromised
/// certificate and its replacement, depending on the step the run stopped at: judged as
/// settled, the compromised certificate, disabled by the run, read as a disabled replacement,
/// and the advice to enable it or to reprovision was wrong (trial az12 F4). The rerun is the
/// one way on that holds at every step.
pub(crate) fn breach_in_flight(id: &str, rerun: &str) -> String {
    format!(
        "a breach of its certificate was cut off part-way and has not replaced it yet: until `{rerun}` \
         finishes it, the device may still hold the compromised certificate, or one DPS and the hub no longer \
         admit, so it may be unable to connect. Run that command (it replaces nothing twice and delivers the \
         replacement); do not enable the disabled versions of `{}` by hand",
        super::device_cert_name(id)
    )
}

/// What `check`'s critical line and `status`'s `breach_open` say of device `id` whose
/// certificate `issuer` (CA vault name, version id) signed, while an open CA or group breach
/// run that declared that version compromised (`compromised`, [`open_compromised_of`]) has yet
/// to replace the device (`breached`, [`open_breaches_of`]): at any step it was cut off at,
/// after its revocation or after renewing the CA (trial az16 2a: `check` worded the latter
/// otherwise). None otherwise. DPS refuses the device already unless it has an individual
/// enrollment of its own (`own_enrollment`, which DPS matches first) or its group's signing
/// slots still admit `issuer` (`group_admits`, asked only then). `ca_name`: the plan's name of
/// the CA of a vault name. One judgement for both, so the two cannot drift.
#[allow(clippy::too_many_arguments)]
pub(crate) fn ca_breach_open(
    id: &str,
    issuer: Option<&(String, String)>,
    compromised: &std::collections::HashMap<(String, String), String>,
    breached: &std::collections::HashMap<String, String>,
    own_enrollment: bool,
    group_admits: impl FnOnce(&(String, String)) -> Result<bool>,
    ca_name: impl FnOnce(&(String, String)) -> String,
) -> Result<Option<String>> {
    let Some((issuer, rerun)) = issuer
        .filter(|i| compromised.contains_key(*i))
        .zip(breached.get(id))
    else {
        return Ok(None);
    };
    let refused = !own_enrollment && !group_admits(issuer)?;
    Ok(Some(ca_breach_in_flight(
        id,
        &ca_name(issuer),
        &issuer.1,
        refused,
        rerun,
    )))
}

/// [`ca_breach_open`]'s words for device `id` whose certificate version `version` of CA `ca`
/// signed (`refused`: DPS refuses the device already; `rerun` finishes the breach).
fn ca_breach_in_flight(id: &str, ca: &str, version: &str, refused: bool, rerun: &str) -> String {
    let now = if refused {
        "its enrollment group no longer holds that CA, so DPS refuses the device: it cannot connect until"
    } else {
        "DPS still admits it, but whoever holds the compromised CA's key can make a certificate as good as \
         this one, until"
    };
    format!(
        "its certificate is signed by CA `{ca}` version {version}, which a breach declared compromised; the \
         breach was cut off part-way and has not replaced the certificate of `{id}` yet: {now} `{rerun}` \
         finishes it (it replaces nothing twice and delivers the replacement)"
    )
}

/// The devices an open breach run has yet to replace (those of its `breach-device` and
/// `replace-devices` steps not done), each with the command that finishes the run.
pub(crate) fn open_breaches(backend: &dyn Backend) -> Result<std::collections::HashMap<String, String>> {
    Ok(open_breaches_of(&backend.open_runs()?))
}

/// [`open_breaches`] of the open runs `runs` (read by the caller, who needs them for more).
pub(crate) fn open_breaches_of(runs: &[JournalRun]) -> std::collections::HashMap<String, String> {
    open_steps(runs, &["breach-device", "replace-devices"])
}

/// The CA versions (vault name, version id) an open breach run declared compromised (its
/// `remove-compromised` steps), each with the command that resumes that run: a device left on
/// one is replaced by finishing the run (with its `--incident`), not by a new breach. Of the
/// open runs `runs`; `check` and `status` read them alike.
pub(crate) fn open_compromised_of(
    runs: &[JournalRun],
) -> std::collections::HashMap<(String, String), String> {
    runs.iter()
        .flat_map(|run| {
            run.steps
                .iter()
                .filter(|s| s.kind == "remove-compromised")
                .flat_map(|s| {
                    serde_json::from_value::<Vec<(String, String)>>(s.detail["compromised"].clone())
                        .unwrap_or_default()
                })
                .map(|v| (v, super::journal::resume_command(run)))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Whether a group whose signing slots hold `slots` (SHA-1 thumbprints) accepts a certificate
/// signed by CA version `issuer` (vault name, version id): the slot holds it, or a CA above it.
/// A version certroll cannot read counts as accepted: nothing to judge by.
pub(crate) fn group_accepts(
    backend: &dyn Backend,
    slots: &[String],
    issuer: &(String, String),
) -> Result<bool> {
    let mut at = Some(issuer.clone());
    // Bounded: a chain never loops, but a record could.
    for _ in 0..16 {
        let Some((name, version)) = at else {
            return Ok(false);
        };
        let Some(v) = backend.version(&name, &version)? else {
            return Ok(true);
        };
        if slots.contains(&crate::pki::sha1_thumbprint(&v.cert_der)) {
            return Ok(true);
        }
        at = v.issuer;
    }
    Ok(true)
}

/// [`open_breaches`] of device breaches alone (`breach-device` steps): the devices whose own
/// certificate a cut-off breach has yet to replace ([`breach_in_flight`]). A CA or group
/// breach's devices are judged by their issuing CA version instead. A device a later breach
/// replaced since is left out (trial az13 N1): that breach's finished step counts the open
/// one's incident among those it handled (`earlier_incidents`), and the device is settled;
/// `check`'s warning about the open run still names it. Of the open runs `runs`; the finished
/// breaches are read into `records` only when an open breach has an incident to look up there.
pub(crate) fn open_device_breaches(
    backend: &dyn Backend,
    runs: &[JournalRun],
    records: &std::cell::OnceCell<BreachRecords>,
) -> Result<std::collections::HashMap<String, String>> {
    let mut open = std::collections::HashMap::new();
    for run in runs {
        let rerun = super::journal::resume_command(run);
        for step in run
            .steps
            .iter()
            .filter(|s| s.result.is_none() && s.kind == "breach-device")
        {
            let incident = step.detail["incident"].as_str();
            for id in step.detail["ids"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| i.as_str())
            {
                if let Some(incident) = incident
                    && BreachRecords::once(records, backend)?
                        .handled
                        .get(id)
                        .is_some_and(|all| all.iter().any(|i| i == incident))
                {
                    continue;
                }
                open.insert(id.to_string(), rerun.clone());
            }
        }
    }
    Ok(open)
}

/// Every incident label a breach step records (a device's in its result, a `ca:`/`group:`
/// target's in its `remove-compromised` detail): its own and those of the breaches before it
/// (`earlier_incidents`), oldest first. A breach without `--incident` has no label.
pub(crate) fn incidents_of(result: &serde_json::Value) -> Vec<String> {
    let mut all: Vec<String> = result["earlier_incidents"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i.as_str().map(str::to_string))
        .collect();
    all.extend(result["incident"].as_str().map(str::to_string));
    all.dedup();
    all
}

/// The device ids of the open runs' unfinished steps of `kinds`, each with its run's resume
/// command.
fn open_steps(runs: &[JournalRun], kinds: &[&str]) -> std::collections::HashMap<String, String> {
    let mut out = std::collections::HashMap::new();
    for run in runs {
        let rerun = super::journal::resume_command(run);
        for step in run
            .steps
            .iter()
            .filter(|s| s.result.is_none() && kinds.contains(&s.kind.as_str()))
        {
            for id in step.detail["ids"].as_array().into_iter().flatten() {
                if let Some(id) = id.as_str() {
                    out.insert(id.to_string(), rerun.clone());
                }
            }
        }
    }
    out
}

/// How a finished breach's replacement reaches its device, as the journal records it.
#[derive(Debug, Clone)]
enum Finish {
    /// A device breach (`breach-device`), with its incident label: its own command run again
    /// delivers what is owed and replaces nothing twice.
    Device(Option<String>),
    /// A CA or group breach (`replace-devices`): rerunning it would replace the CA again, so
    /// the delivery is left to `certroll issue`, which delivers what is owed.
    Delivery,
}

/// What the finished breaches in the journal replaced each device's certificate with: the
/// replacement's SHA-1 thumbprint and how it is finished. Read in one query for the whole
/// fleet ([`BreachRecords::read`]), not one per device asked about.
#[derive(Debug, Default)]
pub(crate) struct BreachRecords {
    by_device: std::collections::HashMap<String, (String, Finish)>,
    /// The incidents each device's last finished device breach handled ([`incidents_of`] its
    /// `breach-device` result), replacement or none: [`open_device_breaches`] leaves out a
    /// device a later breach replaced since.
    handled: std::collections::HashMap<String, Vec<String>>,
}

impl BreachRecords {
    /// Every device's last finished breach step (`breach-device`, or a CA or group breach's
    /// `replace-devices`), from the journal.
    pub(crate) fn read(backend: &dyn Backend) -> Result<BreachRecords> {
        let mut by_device = std::collections::HashMap::new();
        let mut handled = std::collections::HashMap::new();
        for step in backend.done_steps(&["breach-device", "replace-devices"])? {
            let Some(result) = step.result else { continue };
            if step.kind == "breach-device" {
                let Some(id) = step.target.strip_prefix("device:") else {
                    continue;
                };
                // Oldest run first: a later breach's record stands over an earlier one's.
                handled.insert(id.to_string(), incidents_of(&result));
                // The device's last breach step is the word on it, replacement or none.
                match result["replacement"].as_str() {
                    Some(tp) => {
                        let incident = result["incident"].as_str().map(str::to_string);
                        by_device.insert(id.to_string(), (tp.to_string(), Finish::Device(incident)));
                    }
                    None => {
                        by_device.remove(id);
                    }
                }
            } else {
                for (id, tp) in result["replaced"].as_object().into_iter().flatten() {
                    if let Some(tp) = tp.as_str() {
                        by_device.insert(id.clone(), (tp.to_string(), Finish::Delivery));
                    }
                }
            }
        }
        Ok(BreachRecords { by_device, handled })
    }

    /// The records in `cell`, read from the journal the first time they are asked for: one
    /// read serves every device and every caller that shares the cell.
    pub(crate) fn once<'a>(
        cell: &'a std::cell::OnceCell<BreachRecords>,
        backend: &dyn Backend,
    ) -> Result<&'a BreachRecords> {
        if let Some(read) = cell.get() {
            return Ok(read);
        }
        let read = BreachRecords::read(backend)?;
        Ok(cell.get_or_init(|| read))
    }

    /// The command that finishes the breach whose replacement device `id` was issued
    /// (`issued`): the resume command of an open breach run that has yet to replace it
    /// (`breached_devices`, [`open_breaches`]); else, when the device's last finished breach
    /// made `issued`, that device breach's own command (incident and all: the one in the
    /// operator's shell history), or `certroll issue` after a CA or group breach. None when
    /// `issued` is no breach's replacement. `check` and `status` judge by it alike.
    pub(crate) fn finish(
        &self,
        breached_devices: &std::collections::HashMap<String, String>,
        id: &str,
        issued: &VaultVersion,
    ) -> Option<String> {
        if let Some(rerun) = breached_devices.get(id) {
            return Some(rerun.clone());
        }
        let (tp, finish) = self.by_device.get(id)?;
        if *tp != crate::pki::sha1_thumbprint(&issued.cert_der) {
            return None;
        }
        Some(match finish {
            Finish::Device(incident) => {
                let incident = incident
                    .as_deref()
                    .map(|i| format!(" --incident {i}"))
                    .unwrap_or_default();
                format!("certroll roll-primary --breach device:{id}{incident} --yes")
            }
            Finish::Delivery => "certroll issue".to_string(),
        })
    }
}

/// What is wrong with device `id` after a breach replaced its compromised certificate with
/// `replacement`, with the way on (`finish` is [`BreachRecords::finish`]'s command). Delivered (`owed`
/// false) but disabled in the vault (by hand, or by a later breach cut off part-way): the
/// device still connects with it, as DPS and the hub accept it and certroll revoked nothing
/// (trial az10 N2), but a disabled version is never delivered nor exported again. Not delivered
/// (`owed`): the device still holds the compromised certificate, which DPS and the hub refuse,
/// so it is cut off.
pub(crate) fn breach_replacement_problem(
    id: &str,
    replacement: &VaultVersion,
    owed: bool,
    finish: &str,
) -> String {
    let tp = crate::pki::sha1_thumbprint(&replacement.cert_der);
    let enable = format!(
        "certroll vault update {} --version {} --enable",
        replacement.name, replacement.version
    );
    if !owed {
        return format!(
            "the breach replacement of its compromised certificate, {tp} (vault version {}/{}), is disabled in \
             the vault, not revoked: certroll did not revoke it, and DPS and the hub still accept it, so the \
             device still connects with it. But a disabled version can be neither delivered nor exported \
             again, so a device that loses it (a reset, a replaced board) has no certificate to be given \
             back. If it was disabled by mistake, `{enable}` enables it again; `{finish}` finishes the breach if one is open; if its key is compromised too, \
             `certroll roll-primary --breach device:{id} --incident NEW-LABEL --yes` (a label of its own) \
             replaces it",
            replacement.name, replacement.version
        );
    }
    let disabled = if replacement.enabled {
        String::new()
    } else {
        format!(" It is also disabled in the vault, so it cannot be delivered until `{enable}` enables it.")
    };
    format!(
        "the breach replacement of its compromised certificate, {tp} (issued {}), has not reached it: its \
         delivery failed or did not run, and DPS and the hub refuse the compromised certificate it still \
         holds, so the device is cut off until it has the new one. `{finish}` delivers it (and finishes \
         the breach if it is open).{disabled}",
        crate::clock::rfc3339(replacement.created)
    )
}

/// Why the devices of group `name` cannot connect when the enrollment service holds the group
/// disabled (`status`) though certroll did not revoke it (no finished `revoke group:NAME`
/// step in the journal), with the way back; None otherwise. A breach of the group cannot help
/// while it is disabled: DPS refuses every certificate under it.
pub(crate) fn group_disabled_by_another(
    backend: &dyn Backend,
    name: &str,
    status: Status,
) -> Result<Option<String>> {
    if status != Status::Disabled
        || backend
            .last_done_step(&format!("group:{name}"), "revoke")?
            .is_some()
    {
        return Ok(None);
    }
    Ok(Some(format!(
        "its enrollment group `{name}` is disabled, but certroll did not revoke it: DPS refuses the \
         registrations of every device of the group, whatever its certificate (a roll or breach of the group \
         cannot help). Another client of DPS disabled it: enable it again in DPS (provisioningStatus \
         `enabled`), then rerun the interrupted roll if `check` names one; or revoke the group \
         (`certroll revoke group:{name}`)"
    )))
}

/// Whether a version's serial is on its issuer's CRL.
fn on_crl(backend: &dyn Backend, v: &VaultVersion) -> Result<bool> {
    let Some((issuer, issuer_version)) = &v.issuer else {
        return Ok(false);
    };
    let serial = crate::pki::CertInfo::from_der(&v.cert_der)?.serial;
    Ok(backend.is_revoked((issuer, issuer_version), &serial)?)
}
