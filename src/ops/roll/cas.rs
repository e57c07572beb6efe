//! The CA side of rolls: renewing a CA (a root is uploaded to the enrollment service and proven),
//! putting the new CA certificate into groups' slots, and, in a breach, taking the compromised CA
//! out of every group and the service, revoking it, and disabling what it signed below it.

use super::SlotName;
use crate::backend::Backend;
use crate::backend::types::*;
use crate::ops::{ca_cert_name, service_ca_name};
use crate::plan::{CaSpec, GroupSpec, Plan};
use anyhow::{Context as _, Result};
use time::OffsetDateTime;

/// Which CAs, groups and devices a CA-level roll covers.
pub(crate) struct Scope<'p> {
    /// The CAs to renew, parents first.
    pub cas: Vec<&'p CaSpec>,
    /// The groups whose slot gets the new CA.
    pub groups: Vec<&'p GroupSpec>,
    /// Every device below (group members and individual enrollments).
    pub device_ids: Vec<String>,
}

/// The scope of `ca:NAME`: the CA, every CA below it, the groups they sign for and every device
/// below.
pub(crate) fn ca_scope<'p>(plan: &'p Plan, top: &str) -> Scope<'p> {
    let mut names = vec![top.to_string()];
    let mut i = 0;
    while i < names.len() {
        for c in &plan.cas {
            if c.issuer.as_deref() == Some(names[i].as_str()) && !names.contains(&c.name) {
                names.push(c.name.clone());
            }
        }
        i += 1;
    }
    let cas: Vec<&CaSpec> = names
        .iter()
        .filter_map(|n| plan.cas.iter().find(|c| &c.name == n))
        .collect();
    let groups: Vec<&GroupSpec> = plan
        .groups
        .values()
        .filter(|g| names.contains(&g.signing_ca))
        .collect();
    let mut device_ids: Vec<String> = groups.iter().flat_map(|g| g.device_ids()).collect();
    device_ids.extend(
        plan.enrollments
            .values()
            .filter(|e| names.contains(&e.issuer))
            .map(|e| e.name.clone()),
    );
    Scope {
        cas,
        groups,
        device_ids,
    }
}

/// The scope of `group:NAME`: its signing CA, the group and its devices.
pub(super) fn group_scope<'p>(plan: &'p Plan, group: &'p GroupSpec) -> Scope<'p> {
    let ca = plan
        .cas
        .iter()
        .find(|c| c.name == group.signing_ca)
        .expect("validated plan");
    Scope {
        cas: vec![ca],
        groups: vec![group],
        device_ids: group.device_ids().collect(),
    }
}

/// Renews a CA: a new version with a new key, signed by its issuer's current version; a root is
/// uploaded to the enrollment service under a name of its own (so the old root stays usable)
/// and proven. Returns the new version.
pub(super) fn renew(
    plan: &Plan,
    ca: &CaSpec,
    backend: &mut dyn Backend,
    now: OffsetDateTime,
) -> Result<VaultVersion> {
    crate::ops::new_ca_version(plan, ca, backend, now)?;
    let name = ca_cert_name(&ca.name);
    let versions = backend.versions(&name)?;
    let current = versions
        .last()
        .cloned()
        .context("the vault lost the CA version it just stored")?;
    if ca.issuer.is_none() {
        let service = service_ca_name(&ca.name, versions.len());
        backend.upload_ca(&service, &current.cert_der, now)?;
        crate::ops::issue::prove_possession(backend, &service, &current, now)?;
    }
    Ok(current)
}

/// The slot a group's CA certificate goes into: an intermediate is uploaded to the group, a root
/// is referred to by its service name.
pub(super) fn slot_for(backend: &dyn Backend, ca: &CaSpec) -> Result<Slot> {
    let name = ca_cert_name(&ca.name);
    let versions = backend.versions(&name)?;
    let current = versions.last().context("the CA is missing from the vault")?;
    Ok(Slot {
        cert_der: current.cert_der.clone(),
        ca_reference: ca
            .issuer
            .is_none()
            .then(|| service_ca_name(&ca.name, versions.len())),
    })
}

/// What an expiry roll of a scope still has to do, decided from what the vault and the groups
/// hold (never from which run came last, nor from which slot holds what: a rerun, or a roll of
/// the other slot, after the work is in place does nothing).
pub(super) struct Pending<'p> {
    /// The CAs to renew, parents first.
    pub renew: Vec<&'p CaSpec>,
    /// CAs that want a renewal that could not end later than their current certificate: their
    /// issuer's notAfter caps it (issue 10 item 15). They are not renewed.
    pub capped: Vec<&'p CaSpec>,
    /// The groups whose named slot gets their CA's current certificate.
    pub place: Vec<&'p GroupSpec>,
    /// CAs renewed because their current version is not valid yet at the run's time, whose
    /// renewal ends before that version does (the run's `--now` is behind a later run's): each
    /// with its current version's notBefore and notAfter and the renewal's notAfter.
    pub ends_earlier: Vec<(&'p CaSpec, OffsetDateTime, OffsetDateTime, OffsetDateTime)>,
}

impl Pending<'_> {
    /// Nothing to renew and no slot to fill.
    pub fn is_empty(&self) -> bool {
        self.renew.is_empty() && self.place.is_empty()
    }
}

/// Decides what an expiry roll of `scope` still has to do. A CA is renewed when it has not been
/// renewed since `issue` (it has one version), its current version is not signed by its issuer's
/// current version (or its issuer is renewed by this run), or its `auto-renew` action has fired,
/// and not when its issuer's notAfter caps it (see below). A group's slot is
/// filled when its CA is renewed by this run or the group holds its CA's current certificate in
/// neither slot.
pub(super) fn pending<'p>(
    plan: &Plan,
    backend: &dyn Backend,
    scope: &Scope<'p>,
    now: OffsetDateTime,
) -> Result<Pending<'p>> {
    let mut out = Pending {
        renew: Vec::new(),
        capped: Vec::new(),
        place: Vec::new(),
        ends_earlier: Vec::new(),
    };
    // The notAfter each CA renewed by this run will have.
    let mut ends: std::collections::HashMap<&str, OffsetDateTime> = Default::default();
    for ca in &scope.cas {
        let policy = &plan.policies[&ca.policy];
        let versions = backend.versions(&ca_cert_name(&ca.name))?;
        let current = versions.last();
        let issuer_renewed = ca.issuer.as_deref().and_then(|i| ends.get(i)).copied();
        let issuer_current = match &ca.issuer {
            Some(i) => backend.current(&ca_cert_name(i))?,
            None => None,
        };
        // A current version not valid yet (made with `--now` ahead of the clock) is not done:
        // nothing signed under it is accepted until its notBefore (issue 10 item 16).
        let early = current.is_some_and(|c| c.nbf > now.saturating_add(plan.not_before_skew));
        let wanted = match current {
            None => true,
            Some(c) => {
                early
                    || versions.len() < 2
                    || issuer_renewed.is_some()
                    || (ca.issuer.is_some()
                        && issuer_current
                            .as_ref()
                            .map(|u| (u.name.clone(), u.version.clone()))
                            != c.issuer)
                    || policy
                        .lifetime_actions
                        .iter()
                        .filter(|a| a.action == crate::plan::ActionKind::AutoRenew)
                        .any(|a| crate::ops::lifetime::fires_at(a.trigger, c.nbf, c.exp) <= now)
            }
        };
        if !wanted {
            continue;
        }
        let own_end = crate::clock::add_days(now, policy.validity_days as i64);
        let issuer_end = issuer_renewed.or(issuer_current.map(|u| u.exp));
        // Capped: its issuer's notAfter would cut the new one to no later than the certificate
        // it holds, which is not its policy's length (cut short by its issuer, or made under a
        // longer validity since edited). A CA whose own validity simply ends with its issuer's
        // is not capped: renewing it rotates its key. A root has no issuer and is never capped.
        if let (Some(c), Some(up)) = (current, issuer_end)
            && !early
            && up < own_end
            && up <= c.exp
            // A day's slack: a CA made seconds after its issuer with the same validity ends with
            // it by the order they were made in, not because its issuer caps it.
            && crate::ops::not_policy_length(c.created, c.exp, policy.validity_days)
        {
            out.capped.push(ca);
            continue;
        }
        let would_end = issuer_end.map_or(own_end, |up| own_end.min(up));
        // Replaced as not valid yet (issue 10 item 16), as it must be to sign anything now; but a
        // `--now` moved back behind the store's own work makes the new one end earlier: said.
        if let Some(c) = current.filter(|c| early && would_end < c.exp) {
            out.ends_earlier.push((ca, c.nbf, c.exp, would_end));
        }
        ends.insert(ca.name.as_str(), would_end);
        out.renew.push(ca);
    }
    for g in &scope.groups {
        if ends.contains_key(g.signing_ca.as_str()) {
            out.place.push(g);
            continue;
        }
        let current = backend.current(&ca_cert_name(&g.signing_ca))?;
        let holds = match (backend.group(&g.name)?, current) {
            (Some(state), Some(c)) => [state.primary, state.secondary]
                .into_iter()
                .flatten()
                .any(|s| s.cert_der == c.cert_der),
            _ => false,
        };
        if !holds {
            out.place.push(g);
        }
    }
    Ok(out)
}

/// The slot of a group's enrollment that holds the CA certificate `der`, if either does.
pub(super) fn slot_holding(state: &EnrollmentGroup, der: &[u8]) -> Option<SlotName> {
    [
        (SlotName::Primary, &state.primary),
        (SlotName::Secondary, &state.secondary),
    ]
    .into_iter()
    .find(|(_, s)| s.as_ref().is_some_and(|s| s.cert_der == der))
    .map(|(slot, _)| slot)
}

/// The slot of `group`'s enrollment that holds its CA's current certificate, if either does.
pub(super) fn slot_holding_ca(backend: &dyn Backend, group: &GroupSpec) -> Result<Option<SlotName>> {
    let Some(current) = backend.current(&ca_cert_name(&group.signing_ca))? else {
        return Ok(None);
    };
    Ok(backend
        .group(&group.name)?
        .and_then(|state| slot_holding(&state, &current.cert_der)))
}

/// What a group's other slot keeps when an expiry roll puts a new CA certificate into `slot`.
pub(super) struct KeepOther {
    /// The SHA-1 thumbprint of the certificate the other slot keeps (None: it is left empty).
    pub keep: Option<String>,
    /// Where it comes from: the named slot (it moves) or the other slot (it stays).
    pub moves: bool,
    /// A valid certificate that leaves the group, if any.
    pub leaves: Option<String>,
    /// The group's devices holding a certificate under the one that leaves: cut off until they
    /// get their new certificate.
    pub cut_off: crate::ops::journal::CutOff,
}

/// Decides what the other slot keeps: of the valid CA certificates the two slots hold now, the one
/// more of the group's devices hold their certificates under (the newer on a tie). Devices are
/// rolled under the newest CA, but a roll after a roll of another target (a CA roll, then its
/// group's) finds them under the certificate in the named slot: that one moves, so they keep
/// working until they get their new certificate.
pub(super) fn keep_other(
    backend: &dyn Backend,
    group: &GroupSpec,
    slot: SlotName,
    now: OffsetDateTime,
) -> Result<KeepOther> {
    let mut out = KeepOther {
        keep: None,
        moves: false,
        leaves: None,
        cut_off: crate::ops::journal::CutOff::none(),
    };
    let Some(state) = backend.group(&group.name)? else {
        return Ok(out);
    };
    let (named, other) = match slot {
        SlotName::Primary => (state.primary, state.secondary),
        SlotName::Secondary => (state.secondary, state.primary),
    };
    let versions = backend.versions(&ca_cert_name(&group.signing_ca))?;
    /// A valid CA certificate a slot holds now.
    struct Candidate {
        thumbprint: String,
        from_named: bool,
        not_before: OffsetDateTime,
        devices: u64,
        first: Vec<String>,
    }
    let mut candidates: Vec<Candidate> = Vec::new();
    for (held, from_named) in [(other, false), (named, true)] {
        let Some(held) = held else { continue };
        let info = crate::pki::CertInfo::from_der(&held.cert_der)?;
        if info.not_after <= now || candidates.iter().any(|c| c.thumbprint == info.thumbprint) {
            continue;
        }
        let (devices, first) = match versions.iter().find(|v| v.cert_der == held.cert_der) {
            Some(v) => backend.devices_under(
                &[(v.name.clone(), v.version.clone())],
                Some(std::slice::from_ref(&group.name)),
                crate::ops::journal::CUT_OFF_SHOWN,
            )?,
            None => (0, Vec::new()),
        };
        candidates.push(Candidate {
            thumbprint: info.thumbprint,
            from_named,
            not_before: info.not_before,
            devices,
            first,
        });
    }
    candidates.sort_by_key(|c| (c.devices, c.not_before));
    if let Some(kept) = candidates.pop() {
        out.keep = Some(kept.thumbprint);
        out.moves = kept.from_named;
    }
    if let Some(left) = candidates.pop() {
        out.leaves = Some(left.thumbprint);
        out.cut_off = crate::ops::journal::CutOff {
            count: left.devices,
            first: left.first,
        };
    }
    Ok(out)
}

/// Puts the group's signing CA's current certificate into the named slot. `clear_other` empties
/// the other slot; otherwise it holds the certificate `keep` names (its SHA-1 thumbprint, as
/// [`keep_other`] decided when the run was planned; `None` in a run recorded before that).
///
/// `take_back` (the explicit breach of this group) replaces and removes what another client
/// put into the group; without it, the write keeps or refuses to touch such a certificate.
#[allow(clippy::too_many_arguments)]
pub(super) fn place(
    plan: &Plan,
    group: &GroupSpec,
    slot: SlotName,
    clear_other: bool,
    keep: Option<Option<&str>>,
    take_back: bool,
    backend: &mut dyn Backend,
    now: OffsetDateTime,
) -> Result<()> {
    let ca = plan
        .cas
        .iter()
        .find(|c| c.name == group.signing_ca)
        .expect("validated plan");
    let mut state = backend
        .group(&group.name)?
        .with_context(|| format!("group `{}` is missing from the enrollment service", group.name))?;
    let new = slot_for(backend, ca)?;
    // Another client's certificate a CA breach leaves in place (it does not chain to the breached
    // CA) keeps its slot: the new CA goes into the other one, beside it.
    let left = |s: SlotName| !take_back && state.foreign.iter().any(|f| f.slot == s.word());
    let slot = if left(slot) && !left(slot.other()) {
        slot.other()
    } else {
        slot
    };
    let foreign_primary = left(SlotName::Primary);
    let (named, other) = match slot {
        SlotName::Primary => (&mut state.primary, &mut state.secondary),
        SlotName::Secondary => (&mut state.secondary, &mut state.primary),
    };
    let valid = |slot: &Option<Slot>| {
        slot.as_ref()
            .is_some_and(|o| crate::pki::CertInfo::from_der(&o.cert_der).is_ok_and(|i| i.not_after > now))
    };
    if clear_other {
        *other = None;
    } else if let Some(keep) = keep {
        let held = [named.take(), other.take()];
        *other = held
            .into_iter()
            .flatten()
            .find(|s| Some(crate::pki::sha1_thumbprint(&s.cert_der).as_str()) == keep);
    } else if !valid(other) {
        // Zero downtime: devices still hold leaves under the CA the named slot held, so it
        // moves to the other slot (an expired one there leaves).
        *other = if valid(named) { named.take() } else { None };
    }
    *named = Some(new);
    state.take_back = take_back;
    // A lone certificate (the other slot emptied) is the group's primary, as DPS requires,
    // unless another client's certificate left in place is the primary.
    if !foreign_primary {
        state.primary_first();
    }
    backend.put_group(&state, now)?;
    Ok(())
}

/// Whether a group's other slot holds an expired CA certificate.
pub(super) fn other_expired(
    backend: &dyn Backend,
    group: &str,
    slot: SlotName,
    now: OffsetDateTime,
) -> Result<bool> {
    let Some(state) = backend.group(group)? else {
        return Ok(false);
    };
    let other = match slot {
        SlotName::Primary => &state.secondary,
        SlotName::Secondary => &state.primary,
    };
    Ok(other
        .as_ref()
        .is_some_and(|o| crate::pki::CertInfo::from_der(&o.cert_der).is_ok_and(|i| i.not_after < now)))
}

/// The CA versions a breach taints: the compromised ones and every version of a CA in scope
/// that they signed, directly or below.
pub(crate) fn tainted(
    backend: &dyn Backend,
    scope: &Scope<'_>,
    compromised: &[(String, String)],
) -> Result<Vec<(String, String)>> {
    let mut tainted: Vec<(String, String)> = compromised.to_vec();
    for ca in &scope.cas {
        for v in backend.versions(&ca_cert_name(&ca.name))? {
            if v.issuer.as_ref().is_some_and(|i| tainted.contains(i)) {
                tainted.push((v.name.clone(), v.version.clone()));
            }
        }
    }
    Ok(tainted)
}

/// Takes tainted CA certificates out of every group in scope and out of the service.
/// `take_back` names the group whose explicit breach takes it back from another client: the
/// certificates another client put into it leave with the compromised ones.
///
/// A compromised primary beside another client's certificate left in the secondary slot leaves
/// in the write that puts the group's new CA certificate in its place (DPS requires a primary):
/// the breach renews the CA before this step then, so the group never trusts the compromised CA
/// past this step, and a rerun, finding the new one in place, writes nothing.
pub(super) fn remove_tainted(
    plan: &Plan,
    groups: &[String],
    tainted: &[(String, String)],
    take_back: &[String],
    backend: &mut dyn Backend,
    now: OffsetDateTime,
) -> Result<serde_json::Value> {
    // First: taking the group's certificates out may delete the group, and DPS lists no
    // registration of a group that is gone.
    let shut_out = shut_out_strangers(plan, take_back, backend, now)?;
    let mut tainted_der = Vec::new();
    for (name, version) in tainted {
        if let Some(v) = backend.version(name, version)? {
            tainted_der.push(v.cert_der);
        }
    }
    let mut removed = Vec::new();
    for group in groups {
        let Some(mut state) = backend.group(group)? else {
            continue;
        };
        let mut changed = false;
        for slot in [&mut state.primary, &mut state.secondary] {
            if slot.as_ref().is_some_and(|s| tainted_der.contains(&s.cert_der)) {
                removed.push(format!("group:{group}"));
                *slot = None;
                changed = true;
            }
        }
        if take_back.contains(group) && !state.foreign.is_empty() {
            for f in &state.foreign {
                removed.push(format!(
                    "group:{group}/{} {} (another client's)",
                    f.slot, f.thumbprint
                ));
            }
            state.take_back = true;
            changed = true;
        }
        // Another client's certificate left in the secondary slot (a CA breach leaves one that
        // does not chain to the breached CA) cannot stand alone: DPS requires a primary.
        let lone_foreign = !state.take_back
            && state.primary.is_none()
            && state.secondary.is_none()
            && state.foreign.iter().any(|f| f.slot == "secondary")
            && !state.foreign.iter().any(|f| f.slot == "primary");
        if changed && lone_foreign {
            let spec = plan.groups.get(group);
            let renewed = match spec {
                Some(g) => backend
                    .current(&ca_cert_name(&g.signing_ca))?
                    .is_some_and(|c| !tainted_der.contains(&c.cert_der)),
                None => false,
            };
            match spec {
                Some(g) if renewed => place(plan, g, SlotName::Primary, true, None, false, backend, now)?,
                // A run planned before the CA was renewed first: its group-slot step replaces the
                // compromised primary.
                _ => removed.retain(|r| r != &format!("group:{group}")),
            }
        } else if changed {
            // The remaining certificate, if any, moves to the primary slot in the same write:
            // DPS holds no group with a secondary and no primary.
            state.primary_first();
            backend.put_group(&state, now)?;
        }
    }
    for ca in backend.cas()? {
        if tainted_der.contains(&ca.cert_der) {
            backend.delete_ca(&ca.name)?;
            removed.push(format!("service-ca:{}", ca.name));
        }
    }
    Ok(serde_json::json!({ "removed": removed, "shut_out": shut_out }))
}

/// Disables the hub identities of the devices the plan does not name that registered through a
/// group the breach takes back (`take_back`), as `hub/device` ids. The breach takes a group
/// back only when every certificate another client put into it chains to the breached CA, so
/// each such device presented a certificate under that CA (or the other client's certificate
/// taken back with it): no rerun of certroll replaces it, and left enabled it would keep
/// getting into the hub after the take-back. Every group is listed again on a rerun (the
/// other client's certificate may be gone from the group by then); an identity already
/// disabled is not written again.
fn shut_out_strangers(
    plan: &Plan,
    take_back: &[String],
    backend: &mut dyn Backend,
    now: OffsetDateTime,
) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for group in take_back {
        let ours: std::collections::HashSet<String> = plan
            .groups
            .get(group)
            .map(|g| g.device_ids().collect())
            .unwrap_or_default();
        let mut shut = Vec::new();
        for r in backend.group_registrations_all(group)? {
            let id = &r.registration_id;
            if ours.contains(id) || plan.enrollments.contains_key(id) {
                continue;
            }
            let Some(hub) = r.hub else { continue };
            if let Some(mut h) = backend.identity(&hub, id)? {
                if h.status != crate::backend::types::Status::Disabled {
                    h.status = crate::backend::types::Status::Disabled;
                    shut.push(h);
                }
                out.push(format!("{hub}/{id}"));
            }
        }
        if !shut.is_empty() {
            backend.update_identities(&shut, now)?;
        }
    }
    Ok(out)
}

/// Revokes the compromised CA versions on their issuers' CRLs (`ca-compromise`) and disables
/// every tainted version in the vault.
pub(super) fn revoke_tainted(
    compromised: &[(String, String)],
    tainted: &[(String, String)],
    backend: &mut dyn Backend,
    now: OffsetDateTime,
) -> Result<serde_json::Value> {
    let mut revoked = Vec::new();
    for (name, version) in tainted {
        let Some(v) = backend.version(name, version)? else {
            continue;
        };
        if v.enabled {
            backend.set_enabled(&v, false, now)?;
        }
        if compromised.contains(&(name.clone(), version.clone()))
            && let Some((issuer, issuer_version)) = &v.issuer
        {
            let serial = crate::pki::CertInfo::from_der(&v.cert_der)?.serial;
            backend.revoke((issuer, issuer_version), &serial, "ca-compromise", now)?;
            revoked.push(serial);
        }
    }
    Ok(serde_json::json!({ "revoked": revoked }))
}

/// CA certificates past their notAfter that the enrollment service still holds: in its CA
/// certificates, or in a group's slot. Nothing chains to them any more; the seed says to delete
/// them once expired, and every roll does.
#[derive(Debug, Default)]
pub(crate) struct Expired {
    /// Service CA names with the notAfter of their certificate.
    pub service_cas: Vec<(String, OffsetDateTime)>,
    /// `(group, slot, notAfter)` of slots holding an expired CA certificate.
    pub slots: Vec<(String, SlotName, OffsetDateTime)>,
}

impl Expired {
    /// Nothing expired is held.
    pub fn is_empty(&self) -> bool {
        self.service_cas.is_empty() && self.slots.is_empty()
    }
}

fn not_after(der: &[u8]) -> Option<OffsetDateTime> {
    crate::pki::CertInfo::from_der(der).ok().map(|i| i.not_after)
}

/// What the service holds that expired before `now`, leaving out the slots of `skip_groups`
/// (their roll step takes them out itself).
pub(crate) fn expired_held(
    backend: &dyn Backend,
    now: OffsetDateTime,
    skip_groups: &[&str],
) -> Result<Expired> {
    let mut out = Expired::default();
    for ca in backend.cas()? {
        if let Some(at) = not_after(&ca.cert_der).filter(|at| *at < now) {
            out.service_cas.push((ca.name, at));
        }
    }
    for g in backend.groups()? {
        // A group holding another client's certificate is not written by any roll (see
        // `refuse_foreign_groups`); `check` reports it critical.
        if skip_groups.contains(&g.name.as_str()) || !g.foreign.is_empty() {
            continue;
        }
        for (slot, held) in [
            (SlotName::Primary, &g.primary),
            (SlotName::Secondary, &g.secondary),
        ] {
            if let Some(at) = held
                .as_ref()
                .and_then(|s| not_after(&s.cert_der))
                .filter(|at| *at < now)
            {
                out.slots.push((g.name.clone(), slot, at));
            }
        }
    }
    Ok(out)
}

/// Takes out of the service every CA certificate that expired before `now` (re-read, so a
/// resumed step does only what is left): empties the slots that hold one and deletes such CA
/// certificates from the service's list. Returns what it removed.
pub(super) fn prune_expired(backend: &mut dyn Backend, now: OffsetDateTime) -> Result<serde_json::Value> {
    let found = expired_held(backend, now, &[])?;
    let mut slots = Vec::new();
    for g in backend.groups()? {
        let mut state = g.clone();
        let mut changed = false;
        for (slot, held) in [
            (SlotName::Primary, &mut state.primary),
            (SlotName::Secondary, &mut state.secondary),
        ] {
            if found.slots.iter().any(|(n, s, _)| *n == g.name && *s == slot) {
                *held = None;
                changed = true;
                slots.push(format!("{}/{}", g.name, slot.word()));
            }
        }
        if changed {
            // An expired primary leaves and the live secondary takes its place, in one write.
            state.primary_first();
            backend.put_group(&state, now)?;
        }
    }
    for (name, _) in &found.service_cas {
        backend.delete_ca(name)?;
    }
    let cas: Vec<&str> = found.service_cas.iter().map(|(n, _)| n.as_str()).collect();
    Ok(serde_json::json!({ "slots": slots, "service_cas": cas }))
}

/// Which CAs a run makes new certificates for, and which roots it uploads to the enrollment
/// service and verifies: what the service will hold once the run is done.
pub(crate) struct RunMakes<'a> {
    /// CAs this run renews (or creates): each new version is signed by its issuer's current one.
    pub renewed: &'a std::collections::BTreeSet<String>,
    /// Roots whose current version this run uploads and verifies (`issue` does, for the roots it
    /// covers).
    pub uploads_roots: &'a std::collections::BTreeSet<String>,
}

/// Why the enrollment service would accept no device under CA `ca`'s certificate in a group slot.
struct Unaccepted {
    /// The CA whose certificate breaks the chain (`ca` or one above it).
    ca: String,
    /// That certificate's subject.
    subject: String,
    /// Where its chain ends, and why the service does not accept that.
    why: String,
}

/// Whether the certificate CA `ca` will hold after this run reaches a verified CA certificate of
/// the enrollment service (as DPS requires of a group's signing certificate, issue 10 items 9
/// and 10); the first CA up the plan's chain whose certificate does not, otherwise.
fn unaccepted(
    plan: &Plan,
    backend: &dyn Backend,
    service: &[ServiceCa],
    makes: &RunMakes<'_>,
    ca: &str,
) -> Result<Option<Unaccepted>> {
    let spec = plan
        .cas
        .iter()
        .find(|c| c.name == ca)
        .context("CA not in the plan")?;
    let current = if makes.renewed.contains(ca) {
        None
    } else {
        backend.current(&ca_cert_name(ca))?
    };
    let Some(current) = current else {
        // A new certificate: a root is uploaded and verified with it, an intermediate is signed by
        // its issuer's current certificate.
        return match &spec.issuer {
            None => Ok(None),
            Some(issuer) => unaccepted(plan, backend, service, makes, issuer),
        };
    };
    if spec.issuer.is_none() && makes.uploads_roots.contains(ca) {
        return Ok(None);
    }
    // The chain above it as the vault knows it: certroll's issuer links, then the chain that came
    // with an imported or merged certificate.
    let mut above = Vec::new();
    let mut top = (current.name.clone(), current.version.clone());
    let mut next = current.issuer.clone();
    while let Some((name, version)) = next {
        let Some(v) = backend.version(&name, &version)? else {
            break;
        };
        if above.len() > 16 {
            break;
        }
        above.push(v.cert_der.clone());
        top = (v.name.clone(), v.version.clone());
        next = v.issuer.clone();
    }
    above.extend(backend.stored_chain(&top.0, &top.1)?);
    let Some(why) =
        crate::backend::registration::unverified_signing_certificate(&current.cert_der, &above, service)
    else {
        return Ok(None);
    };
    let subject = crate::pki::CertInfo::from_der(&current.cert_der)
        .map(|i| i.subject)
        .unwrap_or_default();
    Ok(Some(Unaccepted {
        ca: ca.to_string(),
        subject,
        why,
    }))
}

/// Refuses, before anything is written, to fill the slot of any of `groups` with a certificate
/// the enrollment service would accept no device under: a group's signing certificate must be a
/// verified CA certificate of the service or chain to one (DPS), which a CA imported or merged
/// from outside (`vault import`, `vault merge`) may not do. The message names the group, the CA,
/// where its chain ends and the ways on. Nothing is checked when the backend cannot list the
/// service's CA certificates.
pub(crate) fn refuse_unaccepted(
    plan: &Plan,
    backend: &dyn Backend,
    groups: &[(&GroupSpec, &RunMakes<'_>)],
) -> Result<()> {
    let mut service: Option<Vec<ServiceCa>> = None;
    for (group, makes) in groups {
        if let Some(why) = unaccepted_group(plan, backend, &mut service, group, makes)? {
            return Err(crate::error::input(format!("{why}. Nothing was changed")));
        }
    }
    Ok(())
}

/// Groups of the plan whose signing CA's certificate, as the vault holds it now, reaches no
/// verified CA certificate of the enrollment service (so it accepts none of their devices), each
/// with the message `refuse_unaccepted` gives: what `check` reports (issue 10 item 9).
pub(crate) fn unaccepted_groups(plan: &Plan, backend: &dyn Backend) -> Result<Vec<(String, String)>> {
    let nothing = std::collections::BTreeSet::new();
    let as_is = RunMakes {
        renewed: &nothing,
        uploads_roots: &nothing,
    };
    let mut service: Option<Vec<ServiceCa>> = None;
    let mut out = Vec::new();
    for group in plan.groups.values() {
        // A group not issued yet, or whose CA is not, has nothing in service to judge.
        if backend.group(&group.name)?.is_none()
            || backend.current(&ca_cert_name(&group.signing_ca))?.is_none()
        {
            continue;
        }
        if let Some(why) = unaccepted_group(plan, backend, &mut service, group, &as_is)? {
            out.push((group.name.clone(), why));
        }
    }
    Ok(out)
}

/// Why the enrollment service would accept none of `group`'s devices once the run `makes` is
/// done (None when it would, or when the backend cannot list the service's CA certificates).
fn unaccepted_group(
    plan: &Plan,
    backend: &dyn Backend,
    service: &mut Option<Vec<ServiceCa>>,
    group: &GroupSpec,
    makes: &RunMakes<'_>,
) -> Result<Option<String>> {
    {
        let signing = plan
            .cas
            .iter()
            .find(|c| c.name == group.signing_ca)
            .context("signing CA not in the plan")?;
        if signing.issuer.is_none() {
            // A root is referred to by name, and the service refuses an unverified reference.
            return Ok(None);
        }
        let service = match service {
            Some(s) => s,
            None => match backend.cas() {
                Ok(cas) => service.insert(cas),
                Err(crate::backend::BackendError::Refused(_)) => return Ok(None),
                Err(e) => return Err(e.into()),
            },
        };
        let Some(u) = unaccepted(plan, backend, service, makes, &group.signing_ca)? else {
            return Ok(None);
        };
        let spec = plan
            .cas
            .iter()
            .find(|c| c.name == u.ca)
            .context("CA not in the plan")?;
        let whose = if u.ca == group.signing_ca {
            format!("its signing CA `{}` (`{}`)", u.ca, u.subject)
        } else {
            format!(
                "its signing CA `{}` is signed by CA `{}`, whose certificate (`{}`)",
                group.signing_ca, u.ca, u.subject
            )
        };
        // The topmost disabled CA on the way up: a revoked or breached CA is never uploaded or
        // renewed under again, only replaced.
        let mut disabled = None;
        let mut walk = Some(u.ca.clone());
        // Bounded by the plan's CAs in case a chain in the plan ever loops.
        for _ in 0..=plan.cas.len() {
            let Some(name) = walk else { break };
            if backend.current(&ca_cert_name(&name))?.is_some_and(|v| !v.enabled) {
                disabled = Some(name.clone());
            }
            walk = plan
                .cas
                .iter()
                .find(|c| c.name == name)
                .and_then(|c| c.issuer.clone());
        }
        let fix = match &spec.issuer {
            _ if disabled.is_some() => format!(
                "CA `{ca}`'s current version is disabled in the vault (revoked or disabled) and is never uploaded \
                 or verified again: `certroll roll-primary --breach ca:{ca}` replaces it with a new CA",
                ca = disabled.as_deref().unwrap_or_default()
            ),
            None => format!(
                "`certroll issue ca:{ca}` uploads CA `{ca}`'s current certificate to the enrollment service and \
                 verifies it (certroll holds its key)",
                ca = u.ca
            ),
            Some(issuer) if backend.group(&group.name)?.is_some() => format!(
                "Upload the root it ends at to the enrollment service and verify it (proof of possession, with that \
                 root's key), or replace CA `{ca}`'s certificate with one issued by `{issuer}`: `certroll \
                 roll-secondary ca:{ca}`",
                ca = u.ca
            ),
            Some(issuer) => format!(
                "Upload the root it ends at to the enrollment service and verify it (proof of possession, with that \
                 root's key), or let `issue` create CA `{ca}` issued by `{issuer}`: `certroll vault delete {name} \
                 --force`, `certroll vault purge {name} --yes`, then `certroll issue` again",
                ca = u.ca,
                name = ca_cert_name(&u.ca)
            ),
        };
        Ok(Some(format!(
            "group:{}: the enrollment service would accept none of its devices: {whose} is not a verified CA \
             certificate and does not chain to one: {}. DPS accepts a group's devices only when its CA certificate \
             is verified or its chain ends at a verified CA. {fix}",
            group.name, u.why
        )))
    }
}

/// Why `group` cannot have a breach of its own (`roll-primary --breach group:NAME`, the verb
/// that takes a group back from another client), or None when it can: a breach renews the
/// group's signing CA, so a root (rolled as `ca:`) or a CA that also signs for other groups
/// is breached as `ca:` only.
pub(crate) fn no_group_breach(plan: &Plan, group: &GroupSpec) -> Option<String> {
    let root = plan
        .cas
        .iter()
        .any(|c| c.name == group.signing_ca && c.issuer.is_none());
    if root {
        return Some(format!("its signing CA `{}` is a root", group.signing_ca));
    }
    let others: Vec<String> = plan
        .groups
        .values()
        .filter(|o| o.name != group.name && o.signing_ca == group.signing_ca)
        .map(|o| format!("group:{}", o.name))
        .collect();
    (!others.is_empty()).then(|| {
        format!(
            "its signing CA `{}` also signs for {}",
            group.signing_ca,
            others.join(", ")
        )
    })
}

/// The remedy for another client's certificate in `group`, in words (see
/// [`ForeignCertificate::group_remedy`]).
pub(crate) fn foreign_remedy(plan: &Plan, group: &GroupSpec) -> String {
    ForeignCertificate::group_remedy(&group.name, no_group_breach(plan, group).as_deref())
}

/// Refuses, before anything is written (exit 1), a roll that would write a group holding a
/// certificate another client put there: every group of `groups` (those whose slots the run
/// changes) but those `foreign` takes back or leaves as they are: the group an explicit
/// `--breach group:NAME` names, a CA breach's groups whose other client's certificate chains to
/// the breached CA, and those whose certificate a CA breach leaves beside the new CA
/// ([`foreign_under`]). A group a CA breach would leave no slot in ([`ForeignUnder::blocked`]) is
/// refused with the words that say so.
///
/// Refused rather than rolled around: a roll moves a group's signing CA through its two slots
/// (the new CA beside the one its devices hold leaves under, until they have new ones). With
/// one slot taken, a roll would have to replace the other client's certificate (during a
/// migration, maybe the CA devices are moving to) or take out the CA certroll's devices use
/// now. And the CA is the group's as a whole, often several groups': rolling the rest and
/// leaving this group behind would leave its devices unable to roll under the new CA and a
/// run open across a CA change. So nothing is changed, and the message names the group, the
/// certificate and the ways on.
pub(crate) fn refuse_foreign_groups(
    plan: &Plan,
    backend: &dyn Backend,
    groups: &[&GroupSpec],
    foreign: &[ForeignUnder],
) -> Result<()> {
    let skip: Vec<String> = foreign.iter().flat_map(ForeignUnder::groups).collect();
    let blocked: Vec<&(String, String)> = foreign.iter().flat_map(|f| &f.blocked).collect();
    let mut found = Vec::new();
    let mut no_slot = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for g in groups {
        if skip.contains(&g.name) || !seen.insert(g.name.as_str()) {
            continue;
        }
        if let Some((_, why)) = blocked.iter().find(|(b, _)| *b == g.name) {
            no_slot.push(why.clone());
            continue;
        }
        let Some(state) = backend.group(&g.name)? else {
            continue;
        };
        for f in &state.foreign {
            found.push(format!(
                "group:{}: {}; {}",
                g.name,
                f.describe_in_group(&g.name),
                foreign_remedy(plan, g)
            ));
        }
    }
    let mut parts = Vec::new();
    if !no_slot.is_empty() {
        parts.push(format!(
            "nothing was changed: this breach would find no slot for the new CA certificate in a group that holds \
             CA certificates another client put there.\n{}",
            no_slot.join("\n")
        ));
    }
    if !found.is_empty() {
        parts.push(format!(
            "{}this roll would write a group that holds a CA certificate another client put \
             there. A roll moves a group's signing CA through its two slots (the new CA beside the one its devices \
             use now), so with one slot taken it would replace that certificate or cut the group's devices off; \
             certroll never does either unasked.\n{}",
            if parts.is_empty() { "nothing was changed: " } else { "And " },
            found.join("\n")
        ));
    }
    if parts.is_empty() {
        return Ok(());
    }
    anyhow::bail!("{}", parts.join("\n"))
}

/// What a breach finds of the certificates other clients put into the groups it covers.
#[derive(Debug, Default)]
pub(crate) struct ForeignUnder {
    /// Groups the breach takes back, each with the other clients' certificates it removes:
    /// the group an explicit `--breach group:NAME` names, or a group of a CA breach holding a
    /// certificate that chains to (or is) the breached CA or a CA under it.
    pub take_back: Vec<(String, Vec<ForeignCertificate>)>,
    /// Groups of a CA breach holding another client's certificate that does not chain to the
    /// breached CA, in one slot: left in place, the new CA certificate beside it.
    pub left: Vec<LeftInPlace>,
    /// Groups of a CA breach whose other clients' certificates, none under the breached CA,
    /// leave the new CA certificate no slot (both slots taken, or a group that refers to its root
    /// CA by name, which DPS never holds beside a certificate): refused before anything is
    /// written, each with the line that says why and what the operator does.
    pub blocked: Vec<(String, String)>,
}

/// Another client's certificate a CA breach leaves in its group's slot.
#[derive(Debug)]
pub(crate) struct LeftInPlace {
    /// The group.
    pub group: String,
    /// The slot the other client's certificate holds; the new CA certificate goes into the other.
    pub slot: SlotName,
    /// Its SHA-1 thumbprint.
    pub thumbprint: String,
    /// The warning that says it is left in place.
    pub warning: String,
}

impl ForeignUnder {
    /// The names of the groups the breach takes back or leaves as they are (not the blocked
    /// ones: those are refused).
    pub fn groups(&self) -> Vec<String> {
        self.take_back
            .iter()
            .map(|(g, _)| g.clone())
            .chain(self.left.iter().map(|l| l.group.clone()))
            .collect()
    }

    /// What the breach leaves in place in `group`, if anything.
    pub fn left_in(&self, group: &str) -> Option<&LeftInPlace> {
        self.left.iter().find(|l| l.group == group)
    }

    /// The groups whose compromised primary can leave only in the write that puts the new CA
    /// certificate in its place: another client's certificate is left in the secondary slot,
    /// and DPS holds no group with a secondary and no primary.
    pub fn primary_replaced_at_once(&self) -> Vec<&str> {
        self.left
            .iter()
            .filter(|l| l.slot == SlotName::Secondary)
            .map(|l| l.group.as_str())
            .collect()
    }
}

/// Sorts the certificates other clients put into the groups of the breach of CA `top` (whose
/// `scope` it is): a group is taken back when one of them chains to, or is, a version of a CA
/// of the scope (`top` and every CA below it), and left as it is otherwise. DPS gives a slot's
/// certificate info, not the certificate, so the chain is judged from its names: its issuer's
/// distinguished name against the subject of every version of those CAs, as the vault holds
/// their certificates (or, for a copy of one of them, its subject and issuer against a
/// version's), by [`crate::pki::inspect::dn_names`].
pub(crate) fn foreign_under(backend: &dyn Backend, scope: &Scope<'_>, top: &str) -> Result<ForeignUnder> {
    let mut out = ForeignUnder::default();
    let mut versions: Option<Vec<Vec<u8>>> = None;
    for g in &scope.groups {
        let Some(state) = backend.group(&g.name)? else {
            continue;
        };
        if state.foreign.is_empty() {
            continue;
        }
        let ders = match &versions {
            Some(v) => v,
            None => {
                let mut all = Vec::new();
                for ca in &scope.cas {
                    all.extend(
                        backend
                            .versions(&ca_cert_name(&ca.name))?
                            .into_iter()
                            .map(|v| v.cert_der),
                    );
                }
                versions.insert(all)
            }
        };
        let under = |f: &ForeignCertificate| {
            !f.issuer.is_empty()
                && ders.iter().any(|d| {
                    crate::pki::inspect::dn_names(&f.issuer, d, false)
                        || (crate::pki::inspect::dn_names(&f.subject, d, false)
                            && crate::pki::inspect::dn_names(&f.issuer, d, true))
                })
        };
        if state.foreign.iter().any(under) {
            out.take_back.push((g.name.clone(), state.foreign));
            continue;
        }
        let named = |f: &ForeignCertificate| {
            format!(
                "{} ({}, issuer {}) in its {} slot",
                f.thumbprint,
                if f.subject.is_empty() {
                    "no subject given"
                } else {
                    &f.subject
                },
                if f.issuer.is_empty() {
                    "not given"
                } else {
                    &f.issuer
                },
                f.slot,
            )
        };
        let listed = state.foreign.iter().map(named).collect::<Vec<_>>().join(", ");
        let again = |what: &str| {
            format!(
                "Remove {what} from the group where it was put (the Azure portal, or DPS's API), then run \
                 `certroll roll-primary --breach ca:{top}` again"
            )
        };
        // Left in place, the other client's certificate keeps its slot and the new CA goes into
        // the other one: a group with no slot to spare would have the breach stop at its write
        // with the CA already revoked, so it is refused before anything is written.
        let root = scope
            .cas
            .iter()
            .any(|c| c.name == g.signing_ca && c.issuer.is_none());
        let taken = |slot: SlotName| state.foreign.iter().any(|f| f.slot == slot.word());
        if root {
            out.blocked.push((
                g.name.clone(),
                format!(
                    "group:{}: another client's CA certificate {listed} does not chain to CA `{top}` or a CA under \
                     it, so the breach would leave it in place; but the group's signing CA `{}` is a root, which \
                     the group refers to by name, and the enrollment service holds a group's CA references or its \
                     signing certificates, never both, so the new root has no place beside it. {}",
                    g.name,
                    g.signing_ca,
                    again(if state.foreign.len() == 1 { "it" } else { "them" })
                ),
            ));
            continue;
        }
        if taken(SlotName::Primary) && taken(SlotName::Secondary) {
            out.blocked.push((
                g.name.clone(),
                format!(
                    "group:{}: both its signing slots hold CA certificates another client put there, neither under \
                     CA `{top}` or a CA under it: {listed}. The breach leaves such a certificate in place with the new \
                     CA certificate beside it, but with both slots taken there is no slot for it, and certroll never \
                     overwrites another client's certificate unasked. {} (with one of them removed, the other \
                     stays beside the new CA)",
                    g.name,
                    again("one of them (or both)")
                ),
            ));
            continue;
        }
        for f in &state.foreign {
            out.left.push(LeftInPlace {
                group: g.name.clone(),
                slot: SlotName::parse(f.slot),
                thumbprint: f.thumbprint.clone(),
                warning: format!(
                    "group:{}: another client's certificate {} ({}) in its {} slot does not chain to CA `{top}` or a CA under it (issuer {}): left in place, as the breach takes back only certificates under the breached CA (if the group should not trust it, remove it where it was put: the Azure portal, or DPS's API)",
                    g.name,
                    f.thumbprint,
                    if f.subject.is_empty() { "no subject given" } else { &f.subject },
                    f.slot,
                    if f.issuer.is_empty() { "not given" } else { &f.issuer },
                ),
            });
        }
    }
    Ok(out)
}
