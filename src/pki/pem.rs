//! PEM in and out: parsing with rustls-pki-types' `PemObject`, writing with the `pem` crate.

use super::Error;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// PEM text of one DER object under `label` (`CERTIFICATE`, `X509 CRL`, `CERTIFICATE REQUEST`),
/// with Unix line endings (the `pem` crate's default is CRLF, which shows as `^M` in files on
/// the systems certroll runs on; RFC 7468 readers take either).
pub fn encode(label: &str, der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new(label, der),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// PEM text of one certificate.
pub fn cert_to_pem(der: &[u8]) -> String {
    encode("CERTIFICATE", der)
}

/// PEM text of a PKCS#8 private key. The returned string holds the secret: zeroize it after use.
pub fn key_to_pem(pkcs8_der: &[u8]) -> zeroize::Zeroizing<String> {
    zeroize::Zeroizing::new(encode("PRIVATE KEY", pkcs8_der))
}

/// A PEM reading error in words: rustls-pki-types' own `Display` shows the missing end marker
/// and a bad BEGIN line as debug lists of bytes.
pub fn pem_error(e: &rustls_pki_types::pem::Error) -> String {
    use rustls_pki_types::pem::Error as E;
    match e {
        E::MissingSectionEnd { end_marker } => format!(
            "a PEM block has no `{}` line",
            String::from_utf8_lossy(end_marker).trim()
        ),
        E::IllegalSectionStart { .. } => "a PEM `-----BEGIN` line is malformed".to_string(),
        E::Base64Decode(_) => "the base64 inside a PEM block is not valid".to_string(),
        E::NoItemsFound => "no PEM block found".to_string(),
        other => other.to_string(),
    }
}

/// All certificates in PEM text, in order. Fails when there are none or a block is malformed.
pub fn certs_from_pem(text: &[u8]) -> Result<Vec<Vec<u8>>, Error> {
    let certs = CertificateDer::pem_slice_iter(text)
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::BadPem(pem_error(&e)))?;
    if certs.is_empty() {
        return Err(Error::BadPem("no CERTIFICATE block found".into()));
    }
    Ok(certs)
}

/// The first private key in PEM text (PKCS#8, SEC1 or PKCS#1), as DER.
pub fn key_from_pem(text: &[u8]) -> Result<zeroize::Zeroizing<Vec<u8>>, Error> {
    let key = PrivateKeyDer::from_pem_slice(text).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => Error::BadPem("no PRIVATE KEY block found".into()),
        other => Error::BadPem(pem_error(&other)),
    })?;
    Ok(zeroize::Zeroizing::new(key.secret_der().to_vec()))
}
