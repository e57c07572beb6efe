//! The PKI core: keys, certificates, thumbprints, PEM and PKCS#12.
//!
//! Pure functions over bytes and times. `pki` never reads the clock (validity is passed in), never touches
//! the store or the network, and never logs key material. A CA key that stays in a remote vault
//! signs through a [`cert::RemoteSigningKey`] the backend supplies (its requests are the
//! backend's).

pub mod bundle;
pub mod cert;
pub mod inspect;
pub mod keys;
pub mod pem;
pub mod pkcs12;
pub mod san;
pub mod spec;

pub use cert::{CertProfile, IssuerKey, sign_leaf, sign_self};
pub use inspect::{CertFacts, CertInfo};
pub use keys::{PrivateKey, SubjectKey};

/// Errors of the PKI core.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// rcgen refused to build or sign a certificate.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// Bytes that should be a DER certificate are not.
    #[error("not a valid X.509 certificate: {0}")]
    BadCertificate(String),
    /// Bytes that should be a private key are not, or do not match the expected type.
    #[error("not a usable private key: {0}")]
    BadKey(String),
    /// Bytes that should be a DER PKCS#10 certificate request are not.
    #[error("not a valid PKCS#10 certificate request: {0}")]
    BadCsr(String),
    /// A PEM file could not be read.
    #[error("malformed PEM: {0}")]
    BadPem(String),
    /// A name (subject alternative name) that its type's grammar refuses.
    #[error("invalid subject alternative name: {0}")]
    BadName(String),
    /// A subject kept from an earlier certificate that the certificate builder cannot write
    /// as it is (see [`cert::sign_self_keeping_subject`]).
    #[error("the subject cannot be written as it is: {0}")]
    UnwritableName(String),
    /// PKCS#12 encoding or decoding failed.
    #[error("PKCS#12: {0}")]
    Pkcs12(String),
    /// The operating system's random generator failed.
    #[error("random number generator failed")]
    Rng,
    /// A vault that keeps a CA key did not sign: its reason (service, operation, status, code
    /// and message).
    #[error("{0}")]
    RemoteSign(String),
}

/// Why `x509_parser` could not read a certificate, in words. Its own `Display` prints the
/// error's debug form (`Parsing Error: Der(UnexpectedTag { expected: Some(..) .. })`), which
/// tells an API's user nothing and reads as a crash.
pub fn x509_parse_error(e: &x509_parser::nom::Err<x509_parser::error::X509Error>) -> String {
    use x509_parser::der_parser::error::BerError;
    use x509_parser::error::X509Error;
    let truncated = "the DER ends before the certificate does (truncated)".to_string();
    let not_a_certificate = "the bytes are not a DER-encoded X.509 certificate".to_string();
    match e {
        x509_parser::nom::Err::Incomplete(_) => truncated,
        x509_parser::nom::Err::Error(inner) | x509_parser::nom::Err::Failure(inner) => match inner {
            X509Error::Der(BerError::Incomplete(_)) => truncated,
            X509Error::Der(_) | X509Error::NomError(_) | X509Error::Generic => not_a_certificate,
            // The rest are thiserror sentences without debug text ("invalid date", ...).
            other => format!("the certificate's {other}"),
        },
    }
}

/// Why a signature by `issuer_der`'s key over `cert_der` does not verify, in words; `Ok` when
/// it does. A key of another type than the signature's (an RSA CA and an ECDSA signature) is
/// told as a signature by another key, not as `x509_parser`'s "signature unsupported
/// algorithm".
pub fn verify_signature(cert_der: &[u8], issuer_der: &[u8]) -> Result<(), String> {
    use x509_parser::error::X509Error;
    use x509_parser::public_key::PublicKey;
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).map_err(|e| x509_parse_error(&e))?;
    let (_, issuer) = x509_parser::parse_x509_certificate(issuer_der)
        .map_err(|e| format!("the issuer certificate: {}", x509_parse_error(&e)))?;
    let key_kind = match issuer.public_key().parsed() {
        Ok(PublicKey::RSA(_)) => "RSA",
        Ok(PublicKey::EC(_)) => "EC",
        Ok(PublicKey::DSA(_)) => "DSA",
        Ok(PublicKey::GostR3410(_) | PublicKey::GostR3410_2012(_)) => "GOST",
        _ => "unknown",
    };
    let sig_oid = &cert.signature_algorithm.algorithm;
    let sig_kind = {
        use x509_parser::oid_registry::*;
        if *sig_oid == OID_SIG_ECDSA_WITH_SHA256
            || *sig_oid == OID_SIG_ECDSA_WITH_SHA384
            || *sig_oid == OID_SIG_ECDSA_WITH_SHA512
        {
            "EC"
        } else if *sig_oid == OID_SIG_ED25519 {
            "Ed25519"
        } else if [
            OID_PKCS1_SHA256WITHRSA,
            OID_PKCS1_SHA384WITHRSA,
            OID_PKCS1_SHA512WITHRSA,
            OID_PKCS1_SHA1WITHRSA,
            OID_PKCS1_RSASSAPSS,
        ]
        .contains(sig_oid)
        {
            "RSA"
        } else {
            "unknown"
        }
    };
    match cert.verify_signature(Some(issuer.public_key())) {
        Ok(()) => Ok(()),
        Err(X509Error::SignatureUnsupportedAlgorithm) if sig_kind != key_kind => Err(format!(
            "it carries a signature made with {} key, and the issuer's key is {}",
            article(sig_kind),
            article(key_kind)
        )),
        Err(X509Error::SignatureUnsupportedAlgorithm) => Err(format!(
            "its signature algorithm ({sig_oid}) with the issuer's {key_kind} key is not one certroll can check"
        )),
        Err(_) => Err("its signature does not verify with the issuer's public key".into()),
    }
}

/// `an RSA`, `an EC`, `a DSA`... for a key kind in a sentence.
fn article(kind: &str) -> String {
    match kind {
        "RSA" | "EC" | "Ed25519" | "unknown" => format!("an {kind}"),
        _ => format!("a {kind}"),
    }
}

/// Uppercase hex, as Azure writes thumbprints.
pub fn hex_upper(bytes: &[u8]) -> String {
    // A table, not `write!`: thumbprints are computed for every certificate of a fleet.
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 0x0f) as usize] as char);
    }
    s
}

/// SHA-1 thumbprint of a DER certificate, uppercase hex (the Azure `x509Thumbprint`).
pub fn sha1_thumbprint(der: &[u8]) -> String {
    hex_upper(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, der).as_ref())
}

/// SHA-256 thumbprint of a DER certificate, uppercase hex.
pub fn sha256_thumbprint(der: &[u8]) -> String {
    hex_upper(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der).as_ref())
}

/// Fills `buf` from the system's secure random generator.
pub fn random_bytes(buf: &mut [u8]) -> Result<(), Error> {
    use aws_lc_rs::rand::SecureRandom;
    aws_lc_rs::rand::SystemRandom::new()
        .fill(buf)
        .map_err(|_| Error::Rng)
}
