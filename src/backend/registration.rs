//! The enrollment service's registration decision (PRODUCT.md flow 7), independent of storage:
//! disabled enrollments reject first, then the device's individual enrollment's two slots, then
//! the groups whose signing certificate the presented chain validates to.

use super::types::{EnrollmentGroup, IndividualEnrollment, RegistrationRequest, Slot, Status};
use rustls_pki_types::{CertificateDer, UnixTime};
use std::time::Duration;
use time::OffsetDateTime;

/// Where a registration was accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Accepted by an individual enrollment.
    Individual {
        /// Registration id.
        name: String,
        /// Hub to assign to.
        hub: String,
        /// migrate / reset / never.
        reprovision: String,
    },
    /// Accepted by an enrollment group.
    Group {
        /// Group name.
        name: String,
        /// Hub to assign to.
        hub: String,
        /// migrate / reset / never.
        reprovision: String,
    },
    /// Rejected, with the reason.
    Rejected(String),
}

/// What the service knows when deciding one registration.
pub struct Context<'a> {
    /// Disabled individual enrollments that hold the presented leaf.
    pub disabled_holding_leaf: &'a [String],
    /// The device's own individual enrollment, if any.
    pub individual: Option<&'a IndividualEnrollment>,
    /// All groups.
    pub groups: &'a [EnrollmentGroup],
    /// Now.
    pub now: OffsetDateTime,
}

fn unix_time(t: OffsetDateTime) -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(t.unix_timestamp().max(0) as u64))
}

/// Whether `chain` (leaf first) validates up to `anchor_der` at `now` for client authentication.
pub fn chains_to(chain: &[Vec<u8>], anchor_der: &[u8], now: OffsetDateTime) -> Result<(), String> {
    let leaf = chain.first().ok_or("no certificate presented")?;
    let anchor_cert = CertificateDer::from(anchor_der);
    let anchor = webpki::anchor_from_trusted_cert(&anchor_cert).map_err(|e| format!("{e:?}"))?;
    let leaf_der = CertificateDer::from(leaf.as_slice());
    let ee = webpki::EndEntityCert::try_from(&leaf_der).map_err(|e| format!("{e:?}"))?;
    let intermediates: Vec<CertificateDer<'_>> = chain[1..]
        .iter()
        .map(|c| CertificateDer::from(c.as_slice()))
        .collect();
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &[anchor],
        &intermediates,
        unix_time(now),
        webpki::KeyUsage::client_auth(),
        None,
        None,
    )
    .map(|_| ())
    .map_err(|e| format!("{e:?}"))
}

fn slot_accepts(slot: &Option<Slot>, chain: &[Vec<u8>], now: OffsetDateTime) -> bool {
    slot.as_ref()
        .is_some_and(|s| chains_to(chain, &s.cert_der, now).is_ok())
}

/// Decides one registration.
pub fn decide(req: &RegistrationRequest, ctx: &Context<'_>) -> Decision {
    let Some(leaf) = req.chain.first() else {
        return Decision::Rejected("no certificate presented".into());
    };
    match crate::pki::inspect::common_name(leaf) {
        Ok(Some(cn)) if cn == req.registration_id => {}
        Ok(cn) => {
            return Decision::Rejected(format!(
                "certificate CN {cn:?} does not match registration id `{}`",
                req.registration_id
            ));
        }
        Err(e) => return Decision::Rejected(e.to_string()),
    }
    if let Some(name) = ctx.disabled_holding_leaf.first() {
        return Decision::Rejected(format!(
            "certificate is disallowed by disabled enrollment `{name}`"
        ));
    }
    if let Some(ind) = ctx.individual {
        let in_slot = [&ind.primary, &ind.secondary]
            .into_iter()
            .flatten()
            .any(|der| der == leaf);
        if ind.status == Status::Disabled {
            return Decision::Rejected(format!(
                "individual enrollment `{}` is disabled",
                ind.registration_id
            ));
        }
        if in_slot {
            let info = crate::pki::CertInfo::from_der(leaf);
            return match info {
                Ok(info) if info.valid_at(ctx.now) => Decision::Individual {
                    name: ind.registration_id.clone(),
                    hub: ind.hub.clone(),
                    reprovision: ind.reprovision.clone(),
                },
                Ok(_) => Decision::Rejected("certificate is outside its validity period".into()),
                Err(e) => Decision::Rejected(e.to_string()),
            };
        }
        return Decision::Rejected(format!(
            "certificate is in neither slot of individual enrollment `{}`",
            ind.registration_id
        ));
    }
    for group in ctx.groups.iter().filter(|g| g.status == Status::Enabled) {
        if slot_accepts(&group.primary, &req.chain, ctx.now)
            || slot_accepts(&group.secondary, &req.chain, ctx.now)
        {
            return Decision::Group {
                name: group.name.clone(),
                hub: group.hub.clone(),
                reprovision: group.reprovision.clone(),
            };
        }
    }
    Decision::Rejected("no enrollment accepts this certificate".into())
}
