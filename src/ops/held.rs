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
use crate::backend::types::{HubIdentity, RegistrationState, VaultVersion};
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
    for (i, issued) in installed.into_iter().enumerate() {
        let seen = Seen::of(registrations[i].as_ref(), identities[i].as_ref());
        match (&issued, &seen) {
            (Some(v), Some(seen)) if seen.presented(v) => out.push(Held {
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
        out[i].presented = seen
            .thumbprints
            .iter()
            .find_map(|tp| versions.iter().find(|v| seen.presented_as(v, tp)))
            .or_else(|| versions.iter().rev().find(|v| v.created <= seen.at))
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
}

impl Seen {
    /// None when the device is not assigned (never registered, or refused since).
    fn of(registration: Option<&RegistrationState>, identity: Option<&HubIdentity>) -> Option<Seen> {
        let r = registration.filter(|r| r.status == "assigned")?;
        Some(Seen {
            at: r.updated?,
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

    /// Whether the device presented `v` (the hub identity holds its thumbprint, and it existed
    /// when DPS assigned the device).
    fn presented(&self, v: &VaultVersion) -> bool {
        self.thumbprints.iter().any(|tp| self.presented_as(v, tp))
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
