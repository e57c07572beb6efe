//! What a registration decision was made from, as one fingerprint (issue 13 item 1): the
//! enrollment service records it with the registration state, and a later registration of the
//! same device whose inputs hash the same, at a time inside the presented chain's validity
//! window, gets the recorded decision back instead of a fresh path validation.
//!
//! The inputs are everything [`super::registration::decide`] reads: the presented chain, the
//! disabled enrollments holding the leaf, the device's individual enrollment (slots, status, hub,
//! reprovision policy), and every enrollment group and service CA (slots, CA references, status,
//! hub, policy; each CA's certificate and verified state). Time enters only through the validity
//! periods of the presented certificates (trust anchors carry none for webpki), so the decision
//! holds for any time inside [`validity_window`].

use super::types::{EnrollmentGroup, IndividualEnrollment, RegistrationRequest, ServiceCa, Status};
use aws_lc_rs::digest::{Context, SHA256};
use time::OffsetDateTime;

/// Bytes of the SHA-256 kept: the fingerprint is compared with the same device's previous one,
/// never searched for, so 128 bits rule out an accidental match.
pub const LEN: usize = 16;

/// A decision's fingerprint.
pub type Fingerprint = [u8; LEN];

fn put(ctx: &mut Context, bytes: &[u8]) {
    ctx.update(&(bytes.len() as u64).to_be_bytes());
    ctx.update(bytes);
}

fn put_opt(ctx: &mut Context, bytes: Option<&[u8]>) {
    match bytes {
        Some(b) => {
            ctx.update(&[1]);
            put(ctx, b);
        }
        None => ctx.update(&[0]),
    }
}

fn status_byte(s: Status) -> u8 {
    match s {
        Status::Enabled => 1,
        Status::Disabled => 0,
    }
}

/// The digest of the service-wide inputs (all groups and service CAs, in the order listed);
/// computed once per batch of registrations.
pub fn service_digest(groups: &[EnrollmentGroup], cas: &[ServiceCa]) -> [u8; 32] {
    let mut ctx = Context::new(&SHA256);
    put(&mut ctx, b"certroll decision inputs v1");
    ctx.update(&(groups.len() as u64).to_be_bytes());
    for g in groups {
        put(&mut ctx, g.name.as_bytes());
        for slot in [&g.primary, &g.secondary] {
            put_opt(&mut ctx, slot.as_ref().map(|s| s.cert_der.as_slice()));
            put_opt(
                &mut ctx,
                slot.as_ref()
                    .and_then(|s| s.ca_reference.as_deref())
                    .map(str::as_bytes),
            );
        }
        ctx.update(&[status_byte(g.status)]);
        put(&mut ctx, g.reprovision.as_bytes());
        put(&mut ctx, g.hub.as_bytes());
    }
    ctx.update(&(cas.len() as u64).to_be_bytes());
    for ca in cas {
        put(&mut ctx, ca.name.as_bytes());
        put(&mut ctx, &ca.cert_der);
        put(&mut ctx, ca.thumbprint.as_bytes());
        ctx.update(&[ca.verified as u8]);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// The fingerprint of one registration's inputs. `disabled` are the disabled enrollments holding
/// the leaf (as the decision sees them), `service` the batch's [`service_digest`].
pub fn fingerprint(
    req: &RegistrationRequest,
    individual: Option<&IndividualEnrollment>,
    disabled: &[String],
    service: &[u8; 32],
) -> Fingerprint {
    fingerprint_of(
        &req.registration_id,
        &req.chain,
        &[],
        individual,
        disabled,
        service,
    )
}

/// [`fingerprint`] of the chain `head` followed by `tail` (a leaf and the chain above it kept
/// apart, so a batch sharing one chain above need not copy it per device).
pub fn fingerprint_of(
    registration_id: &str,
    head: &[Vec<u8>],
    tail: &[Vec<u8>],
    individual: Option<&IndividualEnrollment>,
    disabled: &[String],
    service: &[u8; 32],
) -> Fingerprint {
    let mut ctx = Context::new(&SHA256);
    ctx.update(service);
    put(&mut ctx, registration_id.as_bytes());
    ctx.update(&((head.len() + tail.len()) as u64).to_be_bytes());
    for cert in head.iter().chain(tail) {
        put(&mut ctx, cert);
    }
    ctx.update(&(disabled.len() as u64).to_be_bytes());
    for name in disabled {
        put(&mut ctx, name.as_bytes());
    }
    match individual {
        Some(ind) => {
            ctx.update(&[1]);
            put(&mut ctx, ind.registration_id.as_bytes());
            put_opt(&mut ctx, ind.primary.as_deref());
            put_opt(&mut ctx, ind.secondary.as_deref());
            ctx.update(&[status_byte(ind.status)]);
            put(&mut ctx, ind.reprovision.as_bytes());
            put(&mut ctx, ind.hub.as_bytes());
        }
        None => ctx.update(&[0]),
    }
    let mut out = [0u8; LEN];
    out.copy_from_slice(&ctx.finish().as_ref()[..LEN]);
    out
}

/// [`validity_window`] of a chain whose first certificate's validity period is already known
/// (`leaf`, notBefore and notAfter) and whose rest is `above`, read once per batch by the caller
/// with [`above_window`].
pub fn validity_window_with(
    leaf: (OffsetDateTime, OffsetDateTime),
    above: Option<(OffsetDateTime, Option<OffsetDateTime>)>,
) -> Option<(OffsetDateTime, OffsetDateTime)> {
    let (above_from, above_until) = above?;
    let from = OffsetDateTime::UNIX_EPOCH.max(leaf.0).max(above_from);
    let until = above_until.map_or(leaf.1, |u| u.min(leaf.1));
    (from <= until).then_some((from, until))
}

/// The latest notBefore and the earliest notAfter of the certificates above a leaf (None for
/// the end when there are none); None when one does not parse.
pub fn above_window(above: &[Vec<u8>]) -> Option<(OffsetDateTime, Option<OffsetDateTime>)> {
    let mut from = OffsetDateTime::UNIX_EPOCH;
    let mut until: Option<OffsetDateTime> = None;
    for der in above {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let v = cert.validity();
        from = from.max(v.not_before.to_datetime());
        let naf = v.not_after.to_datetime();
        until = Some(until.map_or(naf, |u| u.min(naf)));
    }
    Some((from, until))
}

/// The times at which every presented certificate is inside its validity period (both ends
/// included, as webpki and [`crate::pki::CertInfo::valid_at`] check): the latest notBefore and
/// the earliest notAfter. None when a certificate does not parse or the window is empty.
pub fn validity_window(chain: &[Vec<u8>]) -> Option<(OffsetDateTime, OffsetDateTime)> {
    let mut from = OffsetDateTime::UNIX_EPOCH;
    let mut until: Option<OffsetDateTime> = None;
    for der in chain {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let v = cert.validity();
        from = from.max(v.not_before.to_datetime());
        let naf = v.not_after.to_datetime();
        until = Some(until.map_or(naf, |u| u.min(naf)));
    }
    let until = until?;
    (from <= until).then_some((from, until))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::types::Slot;

    fn group(der: &[u8]) -> EnrollmentGroup {
        EnrollmentGroup {
            name: "g".into(),
            primary: Some(Slot {
                cert_der: der.to_vec(),
                ca_reference: None,
            }),
            secondary: None,
            status: Status::Enabled,
            reprovision: "migrate".into(),
            hub: "h".into(),
            foreign: Vec::new(),
            take_back: false,
        }
    }

    fn ca(verified: bool) -> ServiceCa {
        ServiceCa {
            name: "root".into(),
            cert_der: vec![1, 2, 3],
            thumbprint: "AA".into(),
            verified,
        }
    }

    /// Every input the decision reads moves the fingerprint; equal inputs give equal ones.
    #[test]
    fn every_input_counts() {
        let req = RegistrationRequest {
            registration_id: "d1".into(),
            chain: vec![vec![9; 40], vec![8; 40]],
        };
        let ind = IndividualEnrollment {
            registration_id: "d1".into(),
            primary: Some(vec![9; 40]),
            secondary: None,
            status: Status::Enabled,
            reprovision: "migrate".into(),
            hub: "h".into(),
            foreign: Vec::new(),
            take_back: false,
        };
        let svc = service_digest(&[group(&[7; 10])], &[ca(true)]);
        let base = fingerprint(&req, Some(&ind), &[], &svc);
        assert_eq!(base, fingerprint(&req, Some(&ind), &[], &svc));
        let mut other = req.clone();
        other.chain[0][3] = 0;
        assert_ne!(base, fingerprint(&other, Some(&ind), &[], &svc));
        assert_ne!(base, fingerprint(&req, None, &[], &svc));
        assert_ne!(base, fingerprint(&req, Some(&ind), &["x".into()], &svc));
        let disabled = IndividualEnrollment {
            status: Status::Disabled,
            ..ind.clone()
        };
        assert_ne!(base, fingerprint(&req, Some(&disabled), &[], &svc));
        for changed in [
            service_digest(&[group(&[7; 11])], &[ca(true)]),
            service_digest(&[group(&[7; 10])], &[ca(false)]),
            service_digest(&[group(&[7; 10])], &[]),
            service_digest(&[], &[ca(true)]),
            service_digest(
                &[EnrollmentGroup {
                    status: Status::Disabled,
                    ..group(&[7; 10])
                }],
                &[ca(true)],
            ),
        ] {
            assert_ne!(base, fingerprint(&req, Some(&ind), &[], &changed));
        }
    }
}
