//! The PKI core: keys, certificates, thumbprints, PEM and PKCS#12.
//!
//! Pure functions over bytes and times. `pki` never reads the clock (validity is passed in), never touches
//! the store or the network, and never logs key material.

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
    /// A PEM file could not be read.
    #[error("malformed PEM: {0}")]
    BadPem(String),
    /// A name (subject alternative name) that its type's grammar refuses.
    #[error("invalid subject alternative name: {0}")]
    BadName(String),
    /// PKCS#12 encoding or decoding failed.
    #[error("PKCS#12: {0}")]
    Pkcs12(String),
    /// The operating system's random generator failed.
    #[error("random number generator failed")]
    Rng,
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
