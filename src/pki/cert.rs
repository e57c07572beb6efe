//! Building and signing certificates: self-signed roots, intermediates with a path length,
//! and leaves with key usage, EKU and SANs.

use super::Error;
use super::inspect::CertFacts;
use super::keys::PrivateKey;
use super::san::San;
use super::spec::{DnKind, ExtendedKeyUsage, KeyUsage, Subject};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue, ExtendedKeyUsagePurpose, IsCa,
    KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;

/// Everything about a certificate except its keys.
#[derive(Debug, Clone)]
pub struct CertProfile {
    /// The subject.
    pub subject: Subject,
    /// DNS names or IP addresses for the subjectAltName.
    pub dns_names: Vec<String>,
    /// Key usage bits.
    pub key_usage: Vec<KeyUsage>,
    /// Extended key usages.
    pub extended_key_usage: Vec<ExtendedKeyUsage>,
    /// notBefore.
    pub not_before: OffsetDateTime,
    /// notAfter.
    pub not_after: OffsetDateTime,
    /// `Some(path_len)` for a CA (`path_len` None = unconstrained); `None` for a leaf.
    pub ca: Option<Option<u8>>,
}

/// A CA signing key that stays outside this process: a vault holds the private half and makes
/// each signature (rcgen calls [`rcgen::SigningKey::sign`] once per certificate or CRL, and the
/// call blocks until the vault answers).
pub trait RemoteSigningKey: rcgen::SigningKey + Send + Sync {
    /// Why the last failed `sign` failed, in the service's words (rcgen only carries
    /// `RemoteKeyError`); taken once.
    fn take_failure(&self) -> Option<String>;
    /// How many signatures may be asked for at once (the plan's limit for the service).
    fn concurrency(&self) -> usize;
}

/// What signs for a CA version, as a vault hands it out.
pub enum CaSigner {
    /// The private key, held in this process.
    Key(PrivateKey),
    /// A key that never leaves its vault, which signs what certroll builds.
    Remote(Box<dyn RemoteSigningKey>),
}

impl std::fmt::Debug for CaSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CaSigner::Key(k) => write!(f, "CaSigner::Key({k:?})"),
            CaSigner::Remote(k) => write!(f, "CaSigner::Remote({:?})", k.algorithm()),
        }
    }
}

impl rcgen::PublicKeyData for CaSigner {
    fn der_bytes(&self) -> &[u8] {
        match self {
            CaSigner::Key(k) => k.pair().der_bytes(),
            CaSigner::Remote(k) => k.der_bytes(),
        }
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            CaSigner::Key(k) => k.pair().algorithm(),
            CaSigner::Remote(k) => k.algorithm(),
        }
    }
}

impl rcgen::SigningKey for CaSigner {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        match self {
            CaSigner::Key(k) => k.pair().sign(msg),
            CaSigner::Remote(k) => k.sign(msg),
        }
    }
}

/// A CA certificate together with what signs for it, ready to sign.
pub struct IssuerKey {
    cert_der: Vec<u8>,
    issuer: rcgen::Issuer<'static, CaSigner>,
    /// The threads that wait on a remote signer's signatures, made on first use.
    pool: std::sync::OnceLock<Option<rayon::ThreadPool>>,
}

impl IssuerKey {
    /// Pairs a CA certificate with its private key.
    pub fn new(cert_der: Vec<u8>, key: PrivateKey) -> Result<IssuerKey, Error> {
        IssuerKey::with_signer(cert_der, CaSigner::Key(key))
    }

    /// Pairs a CA certificate with what signs for it (its key, or a vault that keeps the key).
    /// Errors: [`Error::BadKey`] when the signer's public key is not the certificate's.
    pub fn with_signer(cert_der: Vec<u8>, signer: CaSigner) -> Result<IssuerKey, Error> {
        if rcgen::PublicKeyData::subject_public_key_info(&signer) != spki_of(&cert_der)? {
            return Err(Error::BadKey(
                "the key does not belong to the CA certificate".into(),
            ));
        }
        let issuer = rcgen::Issuer::from_ca_cert_der(&CertificateDer::from(cert_der.as_slice()), signer)?;
        Ok(IssuerKey {
            cert_der,
            issuer,
            pool: std::sync::OnceLock::new(),
        })
    }

    /// The CA certificate (DER).
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The rcgen issuer, for CRLs and other signatures. A failure of a remote signer comes back
    /// as `RemoteKeyError`; [`IssuerKey::failure`] gives the service's reason.
    pub fn issuer(&self) -> &rcgen::Issuer<'static, CaSigner> {
        &self.issuer
    }

    /// Whether a vault makes this CA's signatures (each one a request to it).
    pub fn is_remote(&self) -> bool {
        matches!(self.issuer.key(), CaSigner::Remote(_))
    }

    /// Runs `work`, which signs with this CA from rayon's parallel iterators, where its
    /// signatures are made best: as it is for a key held here (every core); for a remote signer
    /// on a pool of the signer's `concurrency` threads, each waiting on one signature, so that
    /// many requests are in flight and never more than the plan allows.
    pub fn install<R: Send>(&self, work: impl FnOnce() -> R + Send) -> R {
        let CaSigner::Remote(remote) = self.issuer.key() else {
            return work();
        };
        let pool = self.pool.get_or_init(|| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(remote.concurrency().max(1))
                .thread_name(|i| format!("certroll-sign-{i}"))
                .build()
                .ok()
        });
        match pool {
            Some(pool) => pool.install(work),
            // No threads to be had: sign on the caller's pool, fewer at once.
            None => work(),
        }
    }

    /// The error to report for an rcgen failure while signing with this CA: a remote signer's
    /// own reason when it has one.
    pub fn failure(&self, e: rcgen::Error) -> Error {
        if let (rcgen::Error::RemoteKeyError, CaSigner::Remote(remote)) = (&e, self.issuer.key())
            && let Some(why) = remote.take_failure()
        {
            return Error::RemoteSign(why);
        }
        Error::Generate(e)
    }
}

/// The SubjectPublicKeyInfo (DER) a certificate certifies.
/// Errors: [`Error::BadCertificate`] when it does not parse.
pub fn spki_of(cert_der: &[u8]) -> Result<Vec<u8>, Error> {
    let (_, cert) = super::inspect::parse(cert_der)?;
    Ok(cert.tbs_certificate.subject_pki.raw.to_vec())
}

/// The SubjectPublicKeyInfo (DER) a PKCS#10 request asks to certify.
/// Errors: [`Error::BadCsr`] when the request does not parse.
pub fn csr_spki(csr_der: &[u8]) -> Result<Vec<u8>, Error> {
    use x509_parser::prelude::FromDer as _;
    let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(csr_der)
        .map_err(|e| Error::BadCsr(e.to_string()))?;
    Ok(csr.certification_request_info.subject_pki.raw.to_vec())
}

/// A random, positive, 128-bit serial number (RFC 5280 4.1.2.2 asks for at most 20 octets).
pub fn random_serial() -> Result<SerialNumber, Error> {
    let mut bytes = [0u8; 16];
    super::random_bytes(&mut bytes)?;
    // Keep it positive and exactly 16 octets long when DER-encoded.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

fn params(profile: &CertProfile) -> Result<CertificateParams, Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    for attr in &profile.subject.0 {
        let kind = match attr.kind {
            DnKind::CN => DnType::CommonName,
            DnKind::O => DnType::OrganizationName,
            DnKind::OU => DnType::OrganizationalUnitName,
            DnKind::C => DnType::CountryName,
            DnKind::ST => DnType::StateOrProvinceName,
            DnKind::L => DnType::LocalityName,
        };
        // RFC 5280 Appendix A: countryName is a PrintableString; every other attribute a
        // DirectoryString, for which section 4.1.2.4 asks UTF8String. Name-matching CA policies
        // compare the string type too.
        let value = match attr.kind {
            DnKind::C => DnValue::PrintableString(attr.value.as_str().try_into()?),
            _ => DnValue::Utf8String(attr.value.clone()),
        };
        dn.push(kind, value);
    }
    params.distinguished_name = dn;
    params.subject_alt_names = profile
        .dns_names
        .iter()
        .map(|name| match San::dns_or_ip(name).map_err(Error::BadName)? {
            San::Ip(ip) => Ok(SanType::IpAddress(ip)),
            other => Ok(SanType::DnsName(other.to_string().try_into()?)),
        })
        .collect::<Result<_, Error>>()?;
    params.key_usages = profile
        .key_usage
        .iter()
        .map(|u| match u {
            KeyUsage::DigitalSignature => KeyUsagePurpose::DigitalSignature,
            KeyUsage::NonRepudiation => KeyUsagePurpose::ContentCommitment,
            KeyUsage::KeyEncipherment => KeyUsagePurpose::KeyEncipherment,
            KeyUsage::DataEncipherment => KeyUsagePurpose::DataEncipherment,
            KeyUsage::KeyAgreement => KeyUsagePurpose::KeyAgreement,
            KeyUsage::KeyCertSign => KeyUsagePurpose::KeyCertSign,
            KeyUsage::CrlSign => KeyUsagePurpose::CrlSign,
            KeyUsage::EncipherOnly => KeyUsagePurpose::EncipherOnly,
            KeyUsage::DecipherOnly => KeyUsagePurpose::DecipherOnly,
        })
        .collect();
    params.extended_key_usages = profile
        .extended_key_usage
        .iter()
        .map(|e| match e {
            ExtendedKeyUsage::ServerAuth => ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsage::ClientAuth => ExtendedKeyUsagePurpose::ClientAuth,
            ExtendedKeyUsage::CodeSigning => ExtendedKeyUsagePurpose::CodeSigning,
            ExtendedKeyUsage::EmailProtection => ExtendedKeyUsagePurpose::EmailProtection,
            ExtendedKeyUsage::TimeStamping => ExtendedKeyUsagePurpose::TimeStamping,
            ExtendedKeyUsage::OcspSigning => ExtendedKeyUsagePurpose::OcspSigning,
            ExtendedKeyUsage::Other(arcs) => ExtendedKeyUsagePurpose::Other(arcs.clone()),
        })
        .collect();
    params.is_ca = match profile.ca {
        None => IsCa::ExplicitNoCa,
        Some(None) => IsCa::Ca(BasicConstraints::Unconstrained),
        Some(Some(n)) => IsCa::Ca(BasicConstraints::Constrained(n)),
    };
    params.not_before = profile.not_before;
    params.not_after = profile.not_after;
    params.serial_number = Some(random_serial()?);
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

/// Signs a self-signed (root) certificate; returns its DER.
pub fn sign_self(profile: &CertProfile, key: &PrivateKey) -> Result<Vec<u8>, Error> {
    let mut params = params(profile)?;
    // A self-signed certificate's AKI would only repeat its SKI.
    params.use_authority_key_identifier_extension = false;
    Ok(params.self_signed(key.pair())?.der().to_vec())
}

/// Signs a self-signed (root) certificate with what signs for its key: a key held here, or a
/// vault that keeps it (a key Key Vault made, which never leaves it). The certificate is that of
/// [`sign_self`]; a remote signer's failure comes back as [`Error::RemoteSign`] with its reason.
pub fn sign_self_with(profile: &CertProfile, signer: &CaSigner) -> Result<Vec<u8>, Error> {
    let mut params = params(profile)?;
    params.use_authority_key_identifier_extension = false;
    match params.self_signed(signer) {
        Ok(cert) => Ok(cert.der().to_vec()),
        Err(rcgen::Error::RemoteKeyError) => Err(match signer {
            CaSigner::Remote(remote) => Error::RemoteSign(
                remote
                    .take_failure()
                    .unwrap_or_else(|| "the vault did not sign".into()),
            ),
            CaSigner::Key(_) => Error::Generate(rcgen::Error::RemoteKeyError),
        }),
        Err(e) => Err(Error::Generate(e)),
    }
}

/// A self-signed certificate as [`sign_self`] makes it, but whose subject (and so issuer) is
/// `subject_der`, a DER `Name` kept from an earlier certificate (an imported one renewed), not
/// `profile.subject`: every attribute in its order, with its type (also one certroll does not
/// name, such as DC or emailAddress) and its string type, byte for byte.
///
/// Errors with [`Error::UnwritableName`] (naming the attribute) for what rcgen cannot write:
/// a multi-valued RDN (`O=x+CN=y`), an attribute type in two RDNs (`OU=a, OU=b`, of which rcgen
/// would keep one without a word), or a value that is not a string. The written subject is
/// compared with `subject_der` before the certificate is returned, so a subject never changes
/// silently.
pub fn sign_self_keeping_subject(
    profile: &CertProfile,
    key: &PrivateKey,
    subject_der: &[u8],
) -> Result<Vec<u8>, Error> {
    let name = der_name(subject_der)?;
    let mut params = params(profile)?;
    params.distinguished_name = rcgen_name(&name)?;
    params.use_authority_key_identifier_extension = false;
    let der = params.self_signed(key.pair())?.der().to_vec();
    let (_, cert) = super::inspect::parse(&der)?;
    if cert.subject().as_raw() != subject_der {
        return Err(Error::UnwritableName(format!(
            "`{}` would be written as `{}`",
            super::inspect::name_text(&name),
            super::inspect::name_text(cert.subject())
        )));
    }
    Ok(der)
}

/// Whether [`sign_self_keeping_subject`] can write `subject_der` as it is, and if not why
/// ([`Error::UnwritableName`]): what a dry run asks before it promises a renewal.
pub fn check_name_writable(subject_der: &[u8]) -> Result<(), Error> {
    rcgen_name(&der_name(subject_der)?).map(|_| ())
}

fn der_name(subject_der: &[u8]) -> Result<x509_parser::x509::X509Name<'_>, Error> {
    use x509_parser::prelude::FromDer;
    let (rest, name) = x509_parser::x509::X509Name::from_der(subject_der)
        .map_err(|e| Error::UnwritableName(format!("the subject is not a DER Name ({e})")))?;
    if !rest.is_empty() {
        return Err(Error::UnwritableName("trailing bytes after the subject".into()));
    }
    Ok(name)
}

/// The rcgen form of a parsed name, or why rcgen cannot write it as it is.
fn rcgen_name(name: &x509_parser::x509::X509Name<'_>) -> Result<DistinguishedName, Error> {
    use x509_parser::der_parser::asn1_rs::Tag;
    let shown = super::inspect::name_text(name);
    let mut dn = DistinguishedName::new();
    let mut seen: Vec<Vec<u64>> = Vec::new();
    for rdn in name.iter() {
        let attrs: Vec<_> = rdn.iter().collect();
        let [attr] = attrs.as_slice() else {
            return Err(Error::UnwritableName(format!(
                "`{shown}` has a multi-valued RDN (attributes joined by `+`), which the \
                 certificate builder (rcgen) cannot write"
            )));
        };
        let arcs: Vec<u64> = attr
            .attr_type()
            .iter()
            .ok_or_else(|| {
                Error::UnwritableName(format!("`{shown}` has an attribute type too large to write"))
            })?
            .collect();
        if seen.contains(&arcs) {
            return Err(Error::UnwritableName(format!(
                "`{shown}` has the attribute {} in two RDNs, which the certificate builder \
                 (rcgen) cannot write (it keeps one value per type)",
                attr.attr_type().to_id_string()
            )));
        }
        let data = attr.attr_value().data;
        let text = || {
            std::str::from_utf8(data)
                .map_err(|_| Error::UnwritableName(format!("`{shown}` has a value that is not valid text")))
        };
        let value = match attr.attr_value().tag() {
            Tag::Utf8String => DnValue::Utf8String(text()?.to_string()),
            Tag::PrintableString => DnValue::PrintableString(text()?.try_into()?),
            Tag::Ia5String => DnValue::Ia5String(text()?.try_into()?),
            Tag::T61String => DnValue::TeletexString(text()?.try_into()?),
            Tag::BmpString => DnValue::BmpString(rcgen::string::BmpString::from_utf16be(data.to_vec())?),
            Tag::UniversalString => {
                DnValue::UniversalString(rcgen::string::UniversalString::from_utf32be(data.to_vec())?)
            }
            other => {
                return Err(Error::UnwritableName(format!(
                    "`{shown}`: the value of {} is a {other:?}, which the certificate builder \
                     (rcgen) cannot write",
                    attr.attr_type().to_id_string()
                )));
            }
        };
        dn.push(DnType::from_oid(&arcs), value);
        seen.push(arcs);
    }
    Ok(dn)
}

/// Signs a certificate for `subject_key` with the issuer's key; returns its DER.
pub fn sign_leaf(
    profile: &CertProfile,
    subject_key: &PrivateKey,
    issuer: &IssuerKey,
) -> Result<Vec<u8>, Error> {
    sign_public_key(profile, subject_key.pair(), issuer)
}

/// Signs a certificate for a public key only (the holder keeps the private key), e.g. a
/// proof-of-possession verification certificate or a CSR's key.
pub fn sign_public_key(
    profile: &CertProfile,
    public_key: &impl rcgen::PublicKeyData,
    issuer: &IssuerKey,
) -> Result<Vec<u8>, Error> {
    signed(&params(profile)?, public_key, issuer)
}

/// The DER of `params` signed by `issuer` for `public_key`.
fn signed(
    params: &CertificateParams,
    public_key: &impl rcgen::PublicKeyData,
    issuer: &IssuerKey,
) -> Result<Vec<u8>, Error> {
    Ok(params
        .signed_by(public_key, &issuer.issuer)
        .map_err(|e| issuer.failure(e))?
        .der()
        .to_vec())
}

/// [`sign_public_key`], with the certificate's [`CertFacts`] known from what was signed rather
/// than parsed back: a fleet signs hundreds of thousands of them.
pub fn sign_public_key_with_facts(
    profile: &CertProfile,
    public_key: &impl rcgen::PublicKeyData,
    issuer: &IssuerKey,
) -> Result<(Vec<u8>, CertFacts), Error> {
    let params = params(profile)?;
    // `random_serial` makes serials whose DER content is exactly their bytes.
    let serial = params
        .serial_number
        .as_ref()
        .map(|s| super::hex_upper(&s.to_bytes()))
        .unwrap_or_default();
    let der = signed(&params, public_key, issuer)?;
    // Certificates carry whole seconds in UTC.
    let second = |t: OffsetDateTime| {
        t.to_offset(time::UtcOffset::UTC) - time::Duration::nanoseconds(i64::from(t.nanosecond()))
    };
    let facts = CertFacts {
        thumbprint: super::sha1_thumbprint(&der),
        serial,
        not_before: second(profile.not_before),
        not_after: second(profile.not_after),
    };
    Ok((der, facts))
}

/// A PKCS#10 certificate request (DER) for `key` with the profile's subject, SANs, key usage
/// and EKUs (validity and CA-ness are the signing CA's to decide).
pub fn csr_der(profile: &CertProfile, key: &PrivateKey) -> Result<Vec<u8>, Error> {
    let mut params = params(profile)?;
    // The CA picks the serial and writes the authority key identifier.
    params.serial_number = None;
    params.use_authority_key_identifier_extension = false;
    Ok(params.serialize_request(key.pair())?.der().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::SubjectKey;
    use crate::pki::spec::{Curve, KeySpec};
    use time::macros::datetime;

    const P256: KeySpec = KeySpec::Ec {
        curve: Curve::P256,
        hsm: false,
    };

    fn profile(not_before: OffsetDateTime, not_after: OffsetDateTime, ca: bool) -> CertProfile {
        CertProfile {
            subject: Subject::common_name("facts"),
            dns_names: vec![],
            key_usage: vec![],
            extended_key_usage: vec![],
            not_before,
            not_after,
            ca: ca.then_some(None),
        }
    }

    #[test]
    fn facts_known_at_signing_are_the_facts_parsed_from_the_certificate() {
        let now = datetime!(2026-11-23 17:45:12.987654321 +02:00);
        let key = PrivateKey::generate(&P256).unwrap();
        let ca_der = sign_self(&profile(now, now + time::Duration::days(3650), true), &key).unwrap();
        let issuer = IssuerKey::new(ca_der, key).unwrap();
        // UTCTime and (from 2050) GeneralizedTime, fractional seconds, an offset, and many
        // random serials.
        let windows = [
            (now, now + time::Duration::days(365)),
            (now, datetime!(2051-01-01 00:00:00.5 UTC)),
            (
                datetime!(2049-12-31 23:59:59.999 UTC),
                datetime!(2050-01-01 00:00:00 UTC),
            ),
        ];
        for (i, (nbf, exp)) in windows.iter().cycle().take(60).enumerate() {
            let subject = SubjectKey::generate(&P256).unwrap();
            let (der, facts) =
                sign_public_key_with_facts(&profile(*nbf, *exp, false), subject.public_key(), &issuer)
                    .unwrap();
            assert_eq!(facts, CertFacts::from_der(&der).unwrap(), "certificate {i}");
        }
    }
}
