//! The enrollment service's registration decision (PRODUCT.md flow 7), independent of storage:
//! disabled enrollments reject first, then the device's individual enrollment's two slots, then
//! the groups whose signing certificate the presented chain validates to. As in DPS, a group's
//! signing certificate counts only when it is a verified CA certificate of the service or its
//! chain ends at one (issue 10 item 10): an intermediate under an unverified root accepts nobody.

use super::types::{EnrollmentGroup, IndividualEnrollment, RegistrationRequest, ServiceCa, Slot, Status};
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
    /// Rejected, with the reason: no enrollment accepts the certificate (DPS status `failed`).
    /// The certificate did not authenticate the device (attestation failed): DPS answers such a
    /// device 401 and records nothing, which `certroll serve` follows; the CLI's `reprovision`
    /// records it, so that an operator sees why a device of the fleet would be refused.
    Rejected(String),
    /// Refused by a disabled enrollment, with the reason (DPS status `disabled`). The device
    /// authenticated: the enrollment holds (or its group validates) the certificate.
    Disabled(String),
}

impl Decision {
    /// The registration status DPS records for this decision.
    pub fn status(&self) -> &'static str {
        match self {
            Decision::Individual { .. } | Decision::Group { .. } => "assigned",
            Decision::Rejected(_) => "failed",
            Decision::Disabled(_) => "disabled",
        }
    }
}

/// DPS's `errorCode` for a refused registration with this status (`failed` or `disabled`).
/// DPS writes error codes as HTTP status x 1000 + a sub-code and publishes only the HTTP part;
/// the sub-codes are certroll's: 401002 no enrollment accepts the certificate, 401003 an
/// enrollment holding it is disabled.
pub fn error_code(status: &str) -> Option<i64> {
    match status {
        "failed" => Some(401_002),
        "disabled" => Some(401_003),
        _ => None,
    }
}

/// What the service knows when deciding one registration.
pub struct Context<'a> {
    /// Disabled individual enrollments that hold the presented leaf.
    pub disabled_holding_leaf: &'a [String],
    /// The device's own individual enrollment, if any.
    pub individual: Option<&'a IndividualEnrollment>,
    /// All groups.
    pub groups: &'a [ServiceGroup],
    /// Now.
    pub now: OffsetDateTime,
}

/// An enrollment group as registration sees it, with the subject names of its slot certificates
/// (read once per batch, to find the group nearest a device in its chain) and whether each slot's
/// certificate reaches a verified CA of the service.
#[derive(Debug, Clone)]
pub struct ServiceGroup {
    /// The group.
    pub group: EnrollmentGroup,
    /// The raw subject names of the certificates in its slots.
    subjects: Vec<Vec<u8>>,
    /// For the primary and the secondary slot: how its certificate reaches a verified CA.
    anchors: [Anchor; 2],
    /// For the primary and the secondary slot: its certificate's subject key identifier.
    key_ids: [Option<Vec<u8>>; 2],
}

/// How a group slot's certificate reaches a verified CA certificate of the service.
#[derive(Debug, Clone)]
enum Anchor {
    /// It is one, or is signed by one (or the caller could not list the service's CAs and the
    /// service itself will judge).
    Verified,
    /// Only a device's presented chain can tell: these are the verified CAs it may end at.
    ThroughChain(std::sync::Arc<Vec<Vec<u8>>>),
}

impl ServiceGroup {
    fn new(group: EnrollmentGroup, verified: Option<&std::sync::Arc<Vec<Vec<u8>>>>) -> ServiceGroup {
        let subjects = [&group.primary, &group.secondary]
            .into_iter()
            .flatten()
            .filter_map(|s| crate::pki::inspect::chain_names(&s.cert_der).ok())
            .map(|n| n.subject)
            .collect();
        let anchor = |slot: &Option<Slot>| match (slot, verified) {
            (Some(s), Some(verified)) if s.ca_reference.is_none() => {
                let direct = verified
                    .iter()
                    .any(|ca| *ca == s.cert_der || signed_by(&s.cert_der, ca));
                if direct {
                    Anchor::Verified
                } else {
                    Anchor::ThroughChain(verified.clone())
                }
            }
            // A CA reference is checked against the service's verified CAs by
            // `without_dangling_slots`.
            _ => Anchor::Verified,
        };
        let anchors = [anchor(&group.primary), anchor(&group.secondary)];
        let key_id = |slot: &Option<Slot>| slot.as_ref().and_then(|s| subject_key_id(&s.cert_der));
        let key_ids = [key_id(&group.primary), key_id(&group.secondary)];
        ServiceGroup {
            group,
            subjects,
            anchors,
            key_ids,
        }
    }
}

/// The subject key identifier of a certificate, when it has one and parses.
fn subject_key_id(der: &[u8]) -> Option<Vec<u8>> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    cert.extensions().iter().find_map(|e| match e.parsed_extension() {
        x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
        _ => None,
    })
}

/// Whether `cert_der` names `issuer_der`'s subject as its issuer and carries its signature.
fn signed_by(cert_der: &[u8], issuer_der: &[u8]) -> bool {
    let (Ok((_, cert)), Ok((_, issuer))) = (
        x509_parser::parse_x509_certificate(cert_der),
        x509_parser::parse_x509_certificate(issuer_der),
    ) else {
        return false;
    };
    cert.issuer().as_raw() == issuer.subject().as_raw()
        && cert.verify_signature(Some(issuer.public_key())).is_ok()
}

fn unix_time(t: OffsetDateTime) -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(t.unix_timestamp().max(0) as u64))
}

/// Whether `chain` (leaf first) validates up to `anchor_der` at `now` for client authentication.
/// A validation [`prevalidate`] already made of exactly these inputs is taken, once, instead of
/// made again: the function is pure (no revocation, the same algorithms and usage every time).
pub fn chains_to(chain: &[Vec<u8>], anchor_der: &[u8], now: OffsetDateTime) -> Result<(), String> {
    let leaf = chain.first().ok_or("no certificate presented")?;
    if take_prevalidated(leaf, &chain[1..], anchor_der, now) {
        return Ok(());
    }
    validate(leaf, &chain[1..], anchor_der, now)
}

/// Validates `leaf` presented with `above` up to `anchor_der` at `now`, as [`chains_to`] does,
/// and when it validates remembers that for the one [`chains_to`] of the same inputs that comes
/// next. The verbs call it on the signing cores right after making a leaf they will register
/// under the CA that signed it, so the path validation runs beside the store's sequential
/// writes instead of inside them.
pub fn prevalidate(leaf: &[u8], above: &[Vec<u8>], anchor_der: &[u8], now: OffsetDateTime) {
    if validate(leaf, above, anchor_der, now).is_ok() {
        let key = validation_key(leaf, above, anchor_der, now);
        PREVALIDATED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key);
    }
}

/// Validations made by [`prevalidate`] and not yet taken by [`chains_to`] (keys from
/// [`validation_key`]); an entry is taken once, so the set holds at most the leaves of the
/// chunks in flight.
static PREVALIDATED: std::sync::LazyLock<std::sync::Mutex<std::collections::HashSet<[u8; 32]>>> =
    std::sync::LazyLock::new(Default::default);

fn take_prevalidated(leaf: &[u8], above: &[Vec<u8>], anchor_der: &[u8], now: OffsetDateTime) -> bool {
    let mut set = PREVALIDATED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    !set.is_empty() && set.remove(&validation_key(leaf, above, anchor_der, now))
}

/// SHA-256 over every input of a validation (each certificate length-prefixed, then the time in
/// the whole seconds webpki sees).
fn validation_key(leaf: &[u8], above: &[Vec<u8>], anchor_der: &[u8], now: OffsetDateTime) -> [u8; 32] {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(&(above.len() as u64).to_be_bytes());
    for cert in std::iter::once(leaf)
        .chain(above.iter().map(Vec::as_slice))
        .chain([anchor_der])
    {
        ctx.update(&(cert.len() as u64).to_be_bytes());
        ctx.update(cert);
    }
    ctx.update(&unix_time(now).as_secs().to_be_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

fn validate(leaf: &[u8], above: &[Vec<u8>], anchor_der: &[u8], now: OffsetDateTime) -> Result<(), String> {
    let anchor_cert = CertificateDer::from(anchor_der);
    let anchor = webpki::anchor_from_trusted_cert(&anchor_cert).map_err(|e| format!("{e:?}"))?;
    let leaf_der = CertificateDer::from(leaf);
    let ee = webpki::EndEntityCert::try_from(&leaf_der).map_err(|e| format!("{e:?}"))?;
    let intermediates: Vec<CertificateDer<'_>> =
        above.iter().map(|c| CertificateDer::from(c.as_slice())).collect();
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

/// The groups that could validate `chain`, nearest the leaf first: a group whose slot
/// certificate's subject is the leaf's issuer, then the issuer of the next certificate up, and so
/// on (plan order among equals). With one group there is nothing to order.
fn nearest_first<'g>(
    groups: &'g [ServiceGroup],
    leaf: &crate::pki::inspect::ChainNames,
    chain: &[Vec<u8>],
) -> Vec<&'g ServiceGroup> {
    if groups.len() < 2 {
        return groups.iter().collect();
    }
    let mut path = vec![leaf.issuer.clone()];
    path.extend(
        chain[1..]
            .iter()
            .map_while(|ca| crate::pki::inspect::chain_names(ca).ok())
            .map(|n| n.issuer),
    );
    let mut ranked: Vec<(usize, &ServiceGroup)> = groups
        .iter()
        .filter_map(|g| {
            g.subjects
                .iter()
                .filter_map(|s| path.iter().position(|n| n == s))
                .min()
                .map(|rank| (rank, g))
        })
        .collect();
    ranked.sort_by_key(|(rank, _)| *rank);
    ranked.into_iter().map(|(_, g)| g).collect()
}

/// What a slot makes of a presented chain.
enum SlotVerdict {
    /// The chain validates to the slot's certificate, which reaches a verified CA.
    Accepts,
    /// The chain validates to the slot's certificate, but that reaches no verified CA.
    Unverified,
    /// The chain does not validate to the slot's certificate.
    No,
}

fn slot_verdict(slot: &Option<Slot>, anchor: &Anchor, chain: &[Vec<u8>], now: OffsetDateTime) -> SlotVerdict {
    let Some(s) = slot.as_ref() else {
        return SlotVerdict::No;
    };
    if chains_to(chain, &s.cert_der, now).is_err() {
        return SlotVerdict::No;
    }
    match anchor {
        Anchor::Verified => SlotVerdict::Accepts,
        Anchor::ThroughChain(verified) => {
            // The presented intermediates and the slot's certificate must lead to a verified CA.
            let mut full = chain.to_vec();
            full.push(s.cert_der.clone());
            if verified.iter().any(|ca| chains_to(&full, ca, now).is_ok()) {
                SlotVerdict::Accepts
            } else {
                SlotVerdict::Unverified
            }
        }
    }
}

/// The groups as registration sees them: a slot that refers to a service CA accepts only while
/// that CA is in the service, verified, and the same certificate; a slot that holds a signing
/// certificate accepts only when that certificate is a verified CA of the service or its chain
/// ends at one, as DPS requires.
pub fn usable_groups(groups: Vec<EnrollmentGroup>, cas: &[ServiceCa]) -> Vec<ServiceGroup> {
    let verified = std::sync::Arc::new(
        cas.iter()
            .filter(|c| c.verified)
            .map(|c| c.cert_der.clone())
            .collect::<Vec<_>>(),
    );
    without_dangling_slots(groups, cas)
        .into_iter()
        .map(|g| ServiceGroup::new(g, Some(&verified)))
        .collect()
}

/// The groups as registration sees them when the caller cannot list the service's CA
/// certificates (Azure without a resource id): signing certificates are taken as they are, and
/// the service itself judges each registration.
pub fn groups_without_ca_list(groups: Vec<EnrollmentGroup>) -> Vec<ServiceGroup> {
    groups.into_iter().map(|g| ServiceGroup::new(g, None)).collect()
}

/// Why the enrollment service would refuse devices under a group slot holding `cert_der` (a
/// signing certificate, not a CA reference), given the chain above it (`above`, nearest first,
/// as far as the caller knows it) and the service's CA certificates; `None` when it reaches a
/// verified CA. For the verbs, to refuse before writing what the service would not accept.
pub fn unverified_signing_certificate(
    cert_der: &[u8],
    above: &[Vec<u8>],
    cas: &[ServiceCa],
) -> Option<String> {
    let verified: Vec<&ServiceCa> = cas.iter().filter(|c| c.verified).collect();
    let mut path = vec![cert_der];
    path.extend(above.iter().map(Vec::as_slice));
    for (i, cert) in path.iter().enumerate() {
        if verified.iter().any(|ca| ca.cert_der == *cert) {
            return None;
        }
        if verified.iter().any(|ca| signed_by(cert, &ca.cert_der)) {
            return None;
        }
        // Stop at the first certificate the next one did not sign: the chain ends there.
        if path.get(i + 1).is_some_and(|up| !signed_by(cert, up)) {
            break;
        }
    }
    let top = path.last().copied().unwrap_or(cert_der);
    let top_info = crate::pki::CertInfo::from_der(top).ok();
    let in_service = cas
        .iter()
        .find(|c| top_info.as_ref().is_some_and(|t| t.thumbprint == c.thumbprint));
    Some(match (top_info, in_service) {
        (Some(t), Some(ca)) => format!(
            "its chain ends at `{}`, which the enrollment service holds as CA certificate `{}` but has not verified",
            t.subject, ca.name
        ),
        (Some(t), None) if t.subject == t.issuer => format!(
            "its chain ends at `{}`, which is not among the enrollment service's CA certificates",
            t.subject
        ),
        (Some(t), None) => format!(
            "its chain ends at `{}`, whose issuer `{}` is not among the enrollment service's CA certificates",
            t.subject, t.issuer
        ),
        (None, _) => "its chain cannot be read".to_string(),
    })
}

fn without_dangling_slots(mut groups: Vec<EnrollmentGroup>, cas: &[ServiceCa]) -> Vec<EnrollmentGroup> {
    for g in &mut groups {
        for slot in [&mut g.primary, &mut g.secondary] {
            let dangling = slot.as_ref().is_some_and(|s| {
                s.ca_reference.as_ref().is_some_and(|name| {
                    !cas.iter().any(|c| {
                        &c.name == name
                            && c.verified
                            && c.thumbprint == crate::pki::sha1_thumbprint(&s.cert_der)
                    })
                })
            });
            if dangling {
                *slot = None;
            }
        }
    }
    groups
}

/// Decides one registration.
pub fn decide(req: &RegistrationRequest, ctx: &Context<'_>) -> Decision {
    decide_with_validity(req, ctx).0
}

/// The presented leaf, parsed once for everything a decision reads of it.
struct Leaf {
    names: crate::pki::inspect::ChainNames,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    /// Bytes after the certificate's DER (refused where a certificate is read in full).
    trailing: bool,
    /// The key identifier of its authority key identifier extension, if any.
    authority_key_id: Option<Vec<u8>>,
}

impl Leaf {
    fn parse(der: &[u8]) -> Result<Leaf, crate::pki::Error> {
        let (rest, cert) = crate::pki::inspect::parse(der)?;
        Ok(Leaf {
            names: crate::pki::inspect::ChainNames::of(&cert),
            not_before: cert.validity().not_before.to_datetime(),
            not_after: cert.validity().not_after.to_datetime(),
            trailing: !rest.is_empty(),
            authority_key_id: cert.extensions().iter().find_map(|e| match e.parsed_extension() {
                x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(a) => {
                    a.key_identifier.as_ref().map(|k| k.0.to_vec())
                }
                _ => None,
            }),
        })
    }

    /// Why the leaf is refused for its validity at `now`, as
    /// [`crate::pki::CertInfo::validity_problem`] words it (and a certificate with trailing
    /// bytes as [`crate::pki::CertInfo::from_der`] does).
    fn validity_problem(&self, now: OffsetDateTime) -> Option<String> {
        if self.trailing {
            return Some(
                crate::pki::Error::BadCertificate("trailing bytes after the certificate".into()).to_string(),
            );
        }
        crate::pki::inspect::validity_problem(self.not_before, self.not_after, now)
    }
}

/// [`decide`], with the presented leaf's validity period (notBefore, notAfter) when the leaf
/// parsed: a caller recording the decision needs it, and the leaf is parsed once.
pub fn decide_with_validity(
    req: &RegistrationRequest,
    ctx: &Context<'_>,
) -> (Decision, Option<(OffsetDateTime, OffsetDateTime)>) {
    let Some(leaf) = req.chain.first() else {
        return (Decision::Rejected("no certificate presented".into()), None);
    };
    let parsed = match Leaf::parse(leaf) {
        Ok(parsed) => parsed,
        Err(e) => return (Decision::Rejected(e.to_string()), None),
    };
    let validity = Some((parsed.not_before, parsed.not_after));
    (decide_parsed(req, leaf, &parsed, ctx), validity)
}

fn decide_parsed(req: &RegistrationRequest, leaf: &[u8], parsed: &Leaf, ctx: &Context<'_>) -> Decision {
    let leaf_names = &parsed.names;
    if leaf_names.common_name.as_deref() != Some(req.registration_id.as_str()) {
        return Decision::Rejected(format!(
            "the certificate's CN {} does not match registration id `{}`",
            leaf_names
                .common_name
                .as_deref()
                .map_or("(none)".to_string(), |cn| format!(
                    "`{}`",
                    crate::error::snippet(cn)
                )),
            crate::error::snippet(&req.registration_id)
        ));
    }
    if let Some(name) = ctx.disabled_holding_leaf.first() {
        return Decision::Disabled(format!(
            "certificate is disallowed by disabled enrollment `{name}`"
        ));
    }
    if let Some(ind) = ctx.individual {
        let in_slot = [&ind.primary, &ind.secondary]
            .into_iter()
            .flatten()
            .any(|der| der.as_slice() == leaf);
        // A certificate the enrollment does not hold does not authenticate the device, whatever
        // the enrollment's status: it fails attestation, as in DPS.
        if !in_slot {
            return Decision::Rejected(format!(
                "certificate is in neither slot of individual enrollment `{}`",
                ind.registration_id
            ));
        }
        if ind.status == Status::Disabled {
            return Decision::Disabled(format!(
                "individual enrollment `{}` is disabled",
                ind.registration_id
            ));
        }
        return match parsed.validity_problem(ctx.now) {
            None => Decision::Individual {
                name: ind.registration_id.clone(),
                hub: ind.hub.clone(),
                reprovision: ind.reprovision.clone(),
            },
            Some(problem) => Decision::Rejected(problem),
        };
    }
    // A leaf outside its validity is refused for that reason, by whichever enrollment: "no
    // enrollment accepts" would send the operator to the enrollments instead of the clock.
    if let Some(problem) = parsed.validity_problem(ctx.now) {
        return Decision::Rejected(problem);
    }
    // The most specific group applies, as in DPS: the group of the leaf's issuer, else of the CA
    // above it, up to the root; a disabled one refuses the device. Groups are placed by name along
    // the issuer path (a renewed CA with the same name and key still validates), and a group whose
    // slot does not validate the chain is passed over.
    let mut unverified: Option<String> = None;
    for group in nearest_first(ctx.groups, leaf_names, &req.chain) {
        // During a roll both slots hold a CA with the leaf's issuer name, and asking a slot is a
        // path validation (a failed one often two signature checks). The slot whose key the
        // leaf names as its signer is asked first, and the other only when it does not accept:
        // its verdict would only word a refusal.
        let slots = [&group.group.primary, &group.group.secondary];
        let first = match &parsed.authority_key_id {
            Some(aki) if group.key_ids[0].as_ref() != Some(aki) && group.key_ids[1].as_ref() == Some(aki) => {
                1
            }
            _ => 0,
        };
        let ask = |i: usize| slot_verdict(slots[i], &group.anchors[i], &req.chain, ctx.now);
        let verdicts = match ask(first) {
            SlotVerdict::Accepts => [SlotVerdict::Accepts, SlotVerdict::No],
            other => [other, ask(1 - first)],
        };
        if !verdicts.iter().any(|v| matches!(v, SlotVerdict::Accepts)) {
            if unverified.is_none() && verdicts.iter().any(|v| matches!(v, SlotVerdict::Unverified)) {
                unverified = Some(format!(
                    "enrollment group `{}` holds this certificate's signing CA, but that CA is not verified and \
                     its chain ends at no verified CA certificate of the service",
                    group.group.name
                ));
            }
            continue;
        }
        let g = &group.group;
        if g.status != Status::Enabled {
            return Decision::Disabled(format!("enrollment group `{}` is disabled", g.name));
        }
        return Decision::Group {
            name: g.name.clone(),
            hub: g.hub.clone(),
            reprovision: g.reprovision.clone(),
        };
    }
    Decision::Rejected(unverified.unwrap_or_else(|| "no enrollment accepts this certificate".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::cert::{CertProfile, IssuerKey, sign_public_key, sign_self};
    use crate::pki::spec::{Curve, ExtendedKeyUsage, KeySpec, Subject};
    use crate::pki::{PrivateKey, SubjectKey};
    use time::Duration;

    const P256: KeySpec = KeySpec::Ec {
        curve: Curve::P256,
        hsm: false,
    };

    fn profile(cn: &str, ca: bool, now: OffsetDateTime) -> CertProfile {
        CertProfile {
            subject: Subject::common_name(cn),
            dns_names: vec![],
            key_usage: vec![],
            extended_key_usage: if ca {
                vec![]
            } else {
                vec![ExtendedKeyUsage::ClientAuth]
            },
            not_before: now - Duration::days(1),
            not_after: now + Duration::days(30),
            ca: ca.then_some(None),
        }
    }

    fn ca(cn: &str, now: OffsetDateTime) -> IssuerKey {
        let key = PrivateKey::generate(&P256).unwrap();
        let der = sign_self(&profile(cn, true, now), &key).unwrap();
        IssuerKey::new(der, key).unwrap()
    }

    fn leaf(cn: &str, issuer: &IssuerKey, now: OffsetDateTime) -> Vec<u8> {
        let key = SubjectKey::generate(&P256).unwrap();
        sign_public_key(&profile(cn, false, now), key.public_key(), issuer).unwrap()
    }

    /// As the service sees `g` when each slot's certificate is itself a verified CA certificate.
    fn verified_slots(g: EnrollmentGroup) -> ServiceGroup {
        let cas: Vec<ServiceCa> = [&g.primary, &g.secondary]
            .into_iter()
            .flatten()
            .enumerate()
            .map(|(i, s)| ServiceCa {
                name: format!("{}-{i}", g.name),
                cert_der: s.cert_der.clone(),
                thumbprint: crate::pki::sha1_thumbprint(&s.cert_der),
                verified: true,
            })
            .collect();
        usable_groups(vec![g], &cas).remove(0)
    }

    /// An enabled group (hub `NAME-hub`) whose primary slot holds this CA certificate.
    fn enrollment_group(name: &str, cert_der: Vec<u8>) -> EnrollmentGroup {
        EnrollmentGroup {
            name: name.into(),
            primary: Some(Slot {
                cert_der,
                ca_reference: None,
            }),
            secondary: None,
            status: Status::Enabled,
            reprovision: "migrate".into(),
            hub: format!("{name}-hub"),
            foreign: Vec::new(),
            take_back: false,
        }
    }

    fn group(name: &str, ca: &IssuerKey) -> ServiceGroup {
        slot_of(name, ca.cert_der().to_vec())
    }

    /// A group whose primary slot holds this CA certificate.
    fn slot_of(name: &str, cert_der: Vec<u8>) -> ServiceGroup {
        verified_slots(enrollment_group(name, cert_der))
    }

    /// What a device is decided against when it has no individual enrollment and is not disallowed.
    fn by_groups(groups: &[ServiceGroup], now: OffsetDateTime) -> Context<'_> {
        Context {
            disabled_holding_leaf: &[],
            individual: None,
            groups,
            now,
        }
    }

    fn request(id: &str, chain: Vec<Vec<u8>>) -> RegistrationRequest {
        RegistrationRequest {
            registration_id: id.into(),
            chain,
        }
    }

    /// The window a recorded decision holds for, from the leaf parsed once and the chain above
    /// it parsed once per batch, is the window of the whole chain parsed again.
    #[test]
    fn the_recorded_window_is_the_whole_chains() {
        let now = OffsetDateTime::now_utc();
        let root = ca("Root", now);
        // An intermediate ending before the leaf does, so the window's end comes from above.
        let mut p = profile("Mid", true, now);
        p.not_after = now + Duration::days(10);
        let mid_key = PrivateKey::generate(&P256).unwrap();
        let mid_der = crate::pki::cert::sign_leaf(&p, &mid_key, &root).unwrap();
        let mid = IssuerKey::new(mid_der.clone(), mid_key).unwrap();
        let groups = [group("g", &root)];
        let ctx = by_groups(&groups, now);
        for chain in [
            vec![leaf("d", &root, now)],
            vec![leaf("d", &mid, now), mid_der.clone()],
        ] {
            let (decision, validity) = decide_with_validity(&request("d", chain.clone()), &ctx);
            assert!(matches!(decision, Decision::Group { .. }), "{decision:?}");
            let above = super::super::decision_inputs::above_window(&chain[1..]);
            assert_eq!(
                super::super::decision_inputs::validity_window_with(validity.unwrap(), above),
                super::super::decision_inputs::validity_window(&chain),
            );
        }
    }

    #[test]
    fn a_group_accepts_only_certificates_that_chain_to_its_slots() {
        let now = OffsetDateTime::now_utc();
        let (a, b) = (ca("A", now), ca("B", now));
        let groups = [group("ga", &a), group("gb", &b)];
        let ctx = by_groups(&groups, now);
        let from_b = request("dev-1", vec![leaf("dev-1", &b, now)]);
        assert!(matches!(decide(&from_b, &ctx), Decision::Group { name, .. } if name == "gb"));

        let stranger = ca("Stranger", now);
        let unknown = request("dev-2", vec![leaf("dev-2", &stranger, now)]);
        assert_eq!(
            decide(&unknown, &ctx),
            Decision::Rejected("no enrollment accepts this certificate".into())
        );
    }

    /// A prevalidated path is taken once by the same inputs and by nothing else: a chain that
    /// does not validate is never remembered, and another second or anchor validates afresh.
    #[test]
    fn a_prevalidated_path_is_taken_once_and_only_for_the_same_inputs() {
        let now = OffsetDateTime::now_utc();
        let (good, other) = (ca("Pre", now), ca("Pre", now));
        let der = leaf("dev-pre", &good, now);
        prevalidate(&der, &[], good.cert_der(), now);
        let key = validation_key(&der, &[], good.cert_der(), now);
        assert!(PREVALIDATED.lock().unwrap().contains(&key));
        assert_eq!(
            chains_to(std::slice::from_ref(&der), good.cert_der(), now),
            Ok(())
        );
        assert!(!PREVALIDATED.lock().unwrap().contains(&key), "taken once");
        // Under another CA of the same name it does not validate, prevalidated or not.
        prevalidate(&der, &[], other.cert_der(), now);
        assert!(
            !PREVALIDATED
                .lock()
                .unwrap()
                .contains(&validation_key(&der, &[], other.cert_der(), now))
        );
        assert!(chains_to(std::slice::from_ref(&der), other.cert_der(), now).is_err());
        // After its notAfter the remembered success of an earlier second does not count.
        prevalidate(&der, &[], good.cert_der(), now);
        let later = now + Duration::days(60);
        assert!(chains_to(std::slice::from_ref(&der), good.cert_der(), later).is_err());
    }

    /// Mid-roll a group holds two CAs of one name (old and renewed key): a leaf of either is
    /// accepted whichever slot is asked first, and a third key of that name by neither.
    #[test]
    fn a_group_mid_roll_accepts_leaves_of_either_slot_and_no_other_key_of_the_name() {
        let now = OffsetDateTime::now_utc();
        let (old, renewed, stranger) = (ca("Factory", now), ca("Factory", now), ca("Factory", now));
        let slot = |ca: &IssuerKey| {
            Some(Slot {
                cert_der: ca.cert_der().to_vec(),
                ca_reference: None,
            })
        };
        let groups = [verified_slots(EnrollmentGroup {
            name: "g".into(),
            primary: slot(&old),
            secondary: slot(&renewed),
            status: Status::Enabled,
            reprovision: "migrate".into(),
            hub: "g-hub".into(),
            foreign: Vec::new(),
            take_back: false,
        })];
        // The renewed CA's leaf is asked of the secondary slot first (by key identifier).
        assert!(groups[0].key_ids.iter().all(Option::is_some));
        assert_ne!(groups[0].key_ids[0], groups[0].key_ids[1]);
        let ctx = by_groups(&groups, now);
        for (id, issuer) in [("dev-old", &old), ("dev-new", &renewed)] {
            let req = request(id, vec![leaf(id, issuer, now)]);
            assert!(
                matches!(decide(&req, &ctx), Decision::Group { name, .. } if name == "g"),
                "{id}"
            );
        }
        let foreign = request("dev-x", vec![leaf("dev-x", &stranger, now)]);
        assert_eq!(
            decide(&foreign, &ctx),
            Decision::Rejected("no enrollment accepts this certificate".into())
        );
    }

    #[test]
    fn the_group_of_the_nearest_ca_in_the_chain_wins_over_one_further_up() {
        let now = OffsetDateTime::now_utc();
        let root = ca("Root", now);
        let line_key = PrivateKey::generate(&P256).unwrap();
        let line_key_again = PrivateKey::from_pkcs8(line_key.pkcs8_der(), &P256).unwrap();
        let line_der = crate::pki::sign_leaf(&profile("Line", true, now), &line_key, &root).unwrap();
        let line = IssuerKey::new(line_der.clone(), line_key).unwrap();
        // The root's group comes first in the list: order must not decide.
        let groups = [group("by-root", &root), group("by-line", &line)];
        let ctx = by_groups(&groups, now);
        let name = |req: &RegistrationRequest| match decide(req, &ctx) {
            Decision::Group { name, .. } => name,
            other => panic!("{other:?}"),
        };
        let under_line = leaf("dev-1", &line, now);
        let full = request(
            "dev-1",
            vec![under_line.clone(), line_der.clone(), root.cert_der().to_vec()],
        );
        assert_eq!(name(&full), "by-line");
        assert_eq!(
            name(&request("dev-1", vec![under_line, line_der.clone()])),
            "by-line"
        );
        // A device the root signs directly belongs to the root's group.
        assert_eq!(
            name(&request("dev-2", vec![leaf("dev-2", &root, now)])),
            "by-root"
        );

        // The line's group slot holds a renewed Line certificate (same name and key, new serial):
        // devices still presenting the old one with the root belong to it all the same.
        let renewed = crate::pki::sign_leaf(&profile("Line", true, now), &line_key_again, &root).unwrap();
        assert_ne!(renewed, line_der);
        let groups = [group("by-root", &root), slot_of("by-line", renewed)];
        let ctx = by_groups(&groups, now);
        let chain = vec![
            leaf("dev-3", &line, now),
            line_der.clone(),
            root.cert_der().to_vec(),
        ];
        assert!(
            matches!(decide(&request("dev-3", chain), &ctx), Decision::Group { name, .. } if name == "by-line")
        );
    }

    #[test]
    fn a_disabled_nearest_group_refuses_its_devices_though_a_group_further_up_would_accept() {
        let now = OffsetDateTime::now_utc();
        let root = ca("Root", now);
        let line = intermediate("Line", &root, now);
        let line_der = line.cert_der().to_vec();
        let mut groups = [group("by-root", &root), group("by-line", &line)];
        groups[1].group.status = Status::Disabled;
        let ctx = by_groups(&groups, now);
        let chain = vec![leaf("dev-1", &line, now), line_der];
        assert_eq!(
            decide(&request("dev-1", chain), &ctx),
            Decision::Disabled("enrollment group `by-line` is disabled".into())
        );
    }

    #[test]
    fn expiry_and_disabled_groups_and_cn_mismatch_reject() {
        let now = OffsetDateTime::now_utc();
        let a = ca("A", now);
        let mut groups = [group("ga", &a)];
        let req = request("dev-1", vec![leaf("dev-1", &a, now)]);
        let later = now + Duration::days(60);
        let ctx = by_groups(&groups, later);
        assert!(
            matches!(decide(&req, &ctx), Decision::Rejected(_)),
            "expired leaf must be refused"
        );

        let wrong_cn = request("dev-2", vec![leaf("dev-1", &a, now)]);
        let ctx = by_groups(&groups, now);
        assert!(matches!(decide(&wrong_cn, &ctx), Decision::Rejected(r) if r.contains("does not match")));

        groups[0].group.status = Status::Disabled;
        let ctx = by_groups(&groups, now);
        assert!(matches!(decide(&req, &ctx), Decision::Disabled(_)));
    }

    #[test]
    fn a_disabled_enrollment_wins_over_a_group_that_would_accept() {
        let now = OffsetDateTime::now_utc();
        let a = ca("A", now);
        let groups = [group("ga", &a)];
        let req = request("dev-1", vec![leaf("dev-1", &a, now)]);
        let disabled = ["dev-1".to_string()];
        let ctx = Context {
            disabled_holding_leaf: &disabled,
            individual: None,
            groups: &groups,
            now,
        };
        assert!(matches!(decide(&req, &ctx), Decision::Disabled(r) if r.contains("disallowed")));
    }

    #[test]
    fn an_individual_enrollment_accepts_either_slot_and_nothing_else() {
        let now = OffsetDateTime::now_utc();
        let a = ca("A", now);
        let (old, new, other) = (leaf("gw", &a, now), leaf("gw", &a, now), leaf("gw", &a, now));
        let mut ind = IndividualEnrollment {
            registration_id: "gw".into(),
            primary: Some(old.clone()),
            secondary: Some(new.clone()),
            status: Status::Enabled,
            reprovision: "reset".into(),
            hub: "hub".into(),
            foreign: Vec::new(),
            take_back: false,
        };
        // A group that would accept `other` must not matter: the individual enrollment decides.
        let groups = [group("ga", &a)];
        for cert in [&old, &new] {
            let ctx = Context {
                disabled_holding_leaf: &[],
                individual: Some(&ind),
                groups: &groups,
                now,
            };
            let d = decide(&request("gw", vec![cert.clone()]), &ctx);
            assert!(matches!(d, Decision::Individual { ref reprovision, .. } if reprovision == "reset"));
        }
        let ctx = Context {
            disabled_holding_leaf: &[],
            individual: Some(&ind),
            groups: &groups,
            now,
        };
        assert!(matches!(
            decide(&request("gw", vec![other.clone()]), &ctx),
            Decision::Rejected(_)
        ));
        ind.status = Status::Disabled;
        let ctx = Context {
            disabled_holding_leaf: &[],
            individual: Some(&ind),
            groups: &groups,
            now,
        };
        assert!(
            matches!(decide(&request("gw", vec![old]), &ctx), Decision::Disabled(r) if r.contains("disabled"))
        );
        // A certificate the disabled enrollment does not hold authenticates nobody: an
        // attestation failure, not a refusal by the (disabled) enrollment.
        assert!(
            matches!(decide(&request("gw", vec![other]), &ctx), Decision::Rejected(r) if r.contains("neither slot"))
        );
    }

    fn service_ca(name: &str, der: &[u8], verified: bool) -> ServiceCa {
        ServiceCa {
            name: name.into(),
            cert_der: der.to_vec(),
            thumbprint: crate::pki::sha1_thumbprint(der),
            verified,
        }
    }

    fn intermediate(cn: &str, issuer: &IssuerKey, now: OffsetDateTime) -> IssuerKey {
        let key = PrivateKey::generate(&P256).unwrap();
        let der = crate::pki::sign_leaf(&profile(cn, true, now), &key, issuer).unwrap();
        IssuerKey::new(der, key).unwrap()
    }

    // Issue 10 item 10: DPS accepts a group's devices only when the group's signing certificate is
    // verified or its chain ends at a verified CA certificate.
    #[test]
    fn an_intermediate_under_an_unverified_or_unknown_root_accepts_nobody() {
        let now = OffsetDateTime::now_utc();
        let root = ca("Root", now);
        let line = intermediate("Line", &root, now);
        let req = request("dev-1", vec![leaf("dev-1", &line, now), line.cert_der().to_vec()]);
        let decide_with = |cas: &[ServiceCa]| {
            let groups = usable_groups(vec![enrollment_group("g", line.cert_der().to_vec())], cas);
            decide(&req, &by_groups(&groups, now))
        };
        for cas in [vec![], vec![service_ca("root", root.cert_der(), false)]] {
            match decide_with(&cas) {
                Decision::Rejected(why) => {
                    assert!(why.contains("group `g`") && why.contains("not verified"), "{why}")
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(matches!(
            decide_with(&[service_ca("root", root.cert_der(), true)]),
            Decision::Group { .. }
        ));
        // The intermediate verified itself is enough.
        assert!(matches!(
            decide_with(&[service_ca("line", line.cert_der(), true)]),
            Decision::Group { .. }
        ));
        // Another, unrelated verified root does not help.
        let other = ca("Other", now);
        assert!(matches!(
            decide_with(&[service_ca("other", other.cert_der(), true)]),
            Decision::Rejected(_)
        ));
    }

    #[test]
    fn a_deeper_intermediate_reaches_the_verified_root_through_the_presented_chain() {
        let now = OffsetDateTime::now_utc();
        let root = ca("Root", now);
        let middle = intermediate("Middle", &root, now);
        let line = intermediate("Line", &middle, now);
        let cas = [service_ca("root", root.cert_der(), true)];
        let groups = usable_groups(vec![enrollment_group("g", line.cert_der().to_vec())], &cas);
        let ctx = by_groups(&groups, now);
        let full = vec![
            leaf("dev-1", &line, now),
            line.cert_der().to_vec(),
            middle.cert_der().to_vec(),
        ];
        assert!(matches!(
            decide(&request("dev-1", full), &ctx),
            Decision::Group { .. }
        ));
        // Without the middle CA the chain ends nowhere the service verified.
        let short = vec![leaf("dev-2", &line, now), line.cert_der().to_vec()];
        assert!(matches!(
            decide(&request("dev-2", short), &ctx),
            Decision::Rejected(_)
        ));
    }

    #[test]
    fn the_verbs_are_told_where_an_unverified_chain_ends() {
        let now = OffsetDateTime::now_utc();
        let root = ca("Root", now);
        let line = intermediate("Line", &root, now);
        let above = [root.cert_der().to_vec()];
        assert_eq!(
            unverified_signing_certificate(
                line.cert_der(),
                &above,
                &[service_ca("r", root.cert_der(), true)]
            ),
            None
        );
        let why = unverified_signing_certificate(
            line.cert_der(),
            &above,
            &[service_ca("r", root.cert_der(), false)],
        );
        assert!(
            why.as_deref()
                .is_some_and(|w| w.contains("`r`") && w.contains("not verified")),
            "{why:?}"
        );
        let why = unverified_signing_certificate(line.cert_der(), &above, &[]);
        assert!(
            why.as_deref()
                .is_some_and(|w| w.contains("CN=Root") && w.contains("not among")),
            "{why:?}"
        );
        let why = unverified_signing_certificate(line.cert_der(), &[], &[]);
        assert!(
            why.as_deref()
                .is_some_and(|w| w.contains("issuer `CN=Root` is not among")),
            "{why:?}"
        );
    }
}
