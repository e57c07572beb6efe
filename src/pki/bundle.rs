//! Certificate bundles as CAs hand them back: PEM `CERTIFICATE` blocks, a PKCS#7 certs-only
//! `SignedData` (`.p7b`, PEM `PKCS7` or DER), or one DER certificate. PKCS#7 is decoded with
//! RustCrypto's `cms`; certificates come out as DER, in the order the file holds them (a PKCS#7
//! `SET OF` has no order of its own: callers place them with [`super::inspect::issuer_path`]).

use super::Error;
use der::{Decode, Encode};

/// Every certificate in `bytes`, whatever the bundle format.
pub fn certs_from_bundle(bytes: &[u8]) -> Result<Vec<Vec<u8>>, Error> {
    if super::pem::is_pem(bytes) {
        let mut certs = Vec::new();
        for (label, der) in super::pem::blocks(bytes)? {
            match label.as_str() {
                "CERTIFICATE" => certs.push(der),
                "PKCS7" | "CMS" => certs.extend(certs_from_pkcs7(&der)?),
                _ => {}
            }
        }
        if certs.is_empty() {
            return Err(Error::BadPem("no CERTIFICATE or PKCS7 block found".into()));
        }
        return Ok(certs);
    }
    if x509_parser::parse_x509_certificate(bytes).is_ok_and(|(rest, _)| rest.is_empty()) {
        return Ok(vec![bytes.to_vec()]);
    }
    certs_from_pkcs7(bytes).map_err(|e| {
        Error::BadCertificate(format!(
            "neither PEM, a DER certificate nor a DER PKCS#7 bundle ({e})"
        ))
    })
}

/// The certificates of a DER PKCS#7 / CMS `SignedData` (a certs-only `.p7b`).
pub fn certs_from_pkcs7(der_bytes: &[u8]) -> Result<Vec<Vec<u8>>, Error> {
    let bad = |e: &dyn std::fmt::Display| Error::BadCertificate(format!("PKCS#7: {e}"));
    let info = cms::content_info::ContentInfo::from_der(der_bytes).map_err(|e| bad(&e))?;
    if info.content_type != const_oid_signed_data() {
        return Err(bad(&format!(
            "content type {} is not signedData (1.2.840.113549.1.7.2)",
            info.content_type
        )));
    }
    let signed = info
        .content
        .decode_as::<cms::signed_data::SignedData>()
        .map_err(|e| bad(&e))?;
    let mut out = Vec::new();
    for choice in signed.certificates.iter().flat_map(|set| set.0.iter()) {
        if let cms::cert::CertificateChoices::Certificate(c) = choice {
            out.push(c.to_der().map_err(|e| bad(&e))?);
        }
    }
    if out.is_empty() {
        return Err(bad(&"the bundle holds no certificate"));
    }
    Ok(out)
}

fn const_oid_signed_data() -> der::oid::ObjectIdentifier {
    der::oid::ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2")
}
