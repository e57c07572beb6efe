//! Reading certificates: the facts certroll shows and decides on, parsed with x509-parser.

use super::Error;
use serde::Serialize;
use time::OffsetDateTime;

/// What a certificate says, in the shape `status -o json` prints.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CertInfo {
    /// SHA-1 thumbprint, uppercase hex (Azure's `x509Thumbprint`).
    pub thumbprint: String,
    /// SHA-256 thumbprint, uppercase hex.
    pub sha256: String,
    /// Serial number, uppercase hex.
    pub serial: String,
    /// Subject DN (RFC 4514 order as x509-parser prints it).
    pub subject: String,
    /// Issuer DN.
    pub issuer: String,
    /// notBefore.
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    /// notAfter.
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
}

impl CertInfo {
    /// Parses a DER certificate.
    pub fn from_der(der: &[u8]) -> Result<CertInfo, Error> {
        let (rest, cert) =
            x509_parser::parse_x509_certificate(der).map_err(|e| Error::BadCertificate(e.to_string()))?;
        if !rest.is_empty() {
            return Err(Error::BadCertificate(
                "trailing bytes after the certificate".into(),
            ));
        }
        Ok(CertInfo {
            thumbprint: super::sha1_thumbprint(der),
            sha256: super::sha256_thumbprint(der),
            serial: super::hex_upper(cert.raw_serial()),
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            not_before: cert.validity().not_before.to_datetime(),
            not_after: cert.validity().not_after.to_datetime(),
        })
    }

    /// Whether `now` is inside notBefore..=notAfter.
    pub fn valid_at(&self, now: OffsetDateTime) -> bool {
        self.not_before <= now && now <= self.not_after
    }
}

/// What the vault indexes a certificate by: cheaper than [`CertInfo`] (no SHA-256, no names),
/// because it is computed for every certificate a fleet stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFacts {
    /// SHA-1 thumbprint, uppercase hex.
    pub thumbprint: String,
    /// Serial number, uppercase hex.
    pub serial: String,
    /// notBefore.
    pub not_before: OffsetDateTime,
    /// notAfter.
    pub not_after: OffsetDateTime,
}

impl CertFacts {
    /// Parses a DER certificate.
    pub fn from_der(der: &[u8]) -> Result<CertFacts, Error> {
        let (rest, cert) =
            x509_parser::parse_x509_certificate(der).map_err(|e| Error::BadCertificate(e.to_string()))?;
        if !rest.is_empty() {
            return Err(Error::BadCertificate(
                "trailing bytes after the certificate".into(),
            ));
        }
        Ok(CertFacts {
            thumbprint: super::sha1_thumbprint(der),
            serial: super::hex_upper(cert.raw_serial()),
            not_before: cert.validity().not_before.to_datetime(),
            not_after: cert.validity().not_after.to_datetime(),
        })
    }
}

/// What places a certificate in a chain: its subject and issuer names (raw DER, compared byte
/// for byte as path building does) and its subject's common name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainNames {
    /// The subject name, DER.
    pub subject: Vec<u8>,
    /// The issuer name, DER.
    pub issuer: Vec<u8>,
    /// The subject's first common name.
    pub common_name: Option<String>,
}

/// Reads a DER certificate's [`ChainNames`].
pub fn chain_names(der: &[u8]) -> Result<ChainNames, Error> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| Error::BadCertificate(e.to_string()))?;
    Ok(ChainNames {
        subject: cert.subject().as_raw().to_vec(),
        issuer: cert.issuer().as_raw().to_vec(),
        common_name: cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_string),
    })
}

/// The common name of a DER certificate's subject.
pub fn common_name(der: &[u8]) -> Result<Option<String>, Error> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| Error::BadCertificate(e.to_string()))?;
    Ok(cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string))
}
