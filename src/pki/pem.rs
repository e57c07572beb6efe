//! PEM in and out: parsing with rustls-pki-types' `PemObject` (and the `pem` crate for labels
//! it does not know, such as `PKCS7`), writing with the `pem` crate.
//!
//! Text outside the blocks is ignored, as RFC 7468 section 5.2 asks of parsers: `openssl pkcs12
//! -nodes` writes "Bag Attributes" lines before each block, `openssl ca` and `openssl x509
//! -text` the certificate dump. Every PEM reader of certroll goes through this module, so a file
//! is PEM or not, and a damaged block is described, the same way everywhere.

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

/// Whether `bytes` are PEM text: some line opens a block (`-----BEGIN `), whatever explanatory
/// text comes before it.
pub fn is_pem(bytes: &[u8]) -> bool {
    bytes
        .split(|b| *b == b'\n')
        .any(|line| line.trim_ascii_start().starts_with(b"-----BEGIN "))
}

/// A damaged PEM block in words (rustls-pki-types' own `Display` shows markers as byte lists), never as raw bytes: which block, and what is wrong with it.
pub fn pem_error(e: &rustls_pki_types::pem::Error) -> String {
    use rustls_pki_types::pem::Error as E;
    let shown = |bytes: &[u8]| {
        let text = String::from_utf8_lossy(bytes);
        let text = text.trim();
        let mut short: String = text.chars().take(64).collect();
        if short.len() < text.len() {
            short.push_str("...");
        }
        short
    };
    match e {
        E::MissingSectionEnd { end_marker } => format!(
            "the PEM block `-----BEGIN {label}-----` has no `-----END {label}-----` line: the file is truncated \
             or was cut while copying",
            label = shown(end_marker)
        ),
        E::IllegalSectionStart { line } => format!(
            "a PEM block starts with a malformed line `{}` (expected `-----BEGIN LABEL-----`)",
            shown(line)
        ),
        E::Base64Decode(_) => {
            "a PEM block's body is not valid base64: the file is damaged or truncated".to_string()
        }
        E::NoItemsFound => "no PEM block found".to_string(),
        E::SectionTooLarge => "a PEM block is larger than 256 MB".to_string(),
        other => format!("unreadable PEM ({other})"),
    }
}

/// Whether `text` holds a legacy (RFC 1421) encrypted PEM key: a block with a
/// `Proc-Type: 4,ENCRYPTED` header, as `openssl genrsa -aes128` and `openssl rsa -traditional`
/// write. Its headers are not base64, so a PEM parser sees a damaged body.
pub fn has_legacy_encrypted_key(text: &[u8]) -> bool {
    text.split(|b| *b == b'\n').any(|line| {
        let line = line.trim_ascii();
        line.starts_with(b"Proc-Type:") && line.ends_with(b"ENCRYPTED")
    })
}

/// What a reader of an encrypted private key is told (legacy PEM or PKCS#8 alike).
pub const ENCRYPTED_KEY: &str = "the private key is encrypted; decrypt it first (`openssl pkey -in KEY -out plain.pem`), or import it as PKCS#12 with --password-env";

fn describe_in(text: &[u8], e: rustls_pki_types::pem::Error) -> Error {
    if matches!(e, rustls_pki_types::pem::Error::Base64Decode(_)) && has_legacy_encrypted_key(text) {
        return Error::BadPem(format!(
            "{ENCRYPTED_KEY} (a legacy PEM key: `Proc-Type: 4,ENCRYPTED`)"
        ));
    }
    Error::BadPem(pem_error(&e))
}

/// Checks that every block in `text` is whole (begins, ends, decodes), of any label, and says
/// which is not. Text outside the blocks is allowed.
fn check_framing(text: &[u8]) -> Result<(), Error> {
    let mut rest = text;
    loop {
        match rustls_pki_types::pem::from_buf(&mut rest) {
            Ok(Some(_)) => {}
            Ok(None) => return Ok(()),
            Err(e) => return Err(describe_in(text, e)),
        }
    }
}

/// Every PEM block in `text` as `(label, DER)`, in order; text outside the blocks is ignored.
/// Fails, naming the block, when one is truncated or damaged.
pub fn blocks(text: &[u8]) -> Result<Vec<(String, Vec<u8>)>, Error> {
    check_framing(text)?;
    let parsed = pem::parse_many(text).map_err(|e| Error::BadPem(format!("unreadable PEM ({e})")))?;
    Ok(parsed
        .into_iter()
        .map(|p| (p.tag().to_string(), p.into_contents()))
        .collect())
}

/// All certificates in PEM text, in order. Fails when there are none or a block is malformed.
pub fn certs_from_pem(text: &[u8]) -> Result<Vec<Vec<u8>>, Error> {
    let certs = CertificateDer::pem_slice_iter(text)
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| describe_in(text, e))?;
    if certs.is_empty() {
        return Err(Error::BadPem("no CERTIFICATE block found".into()));
    }
    Ok(certs)
}

/// The first private key in PEM text (PKCS#8, SEC1 or PKCS#1), as DER.
pub fn key_from_pem(text: &[u8]) -> Result<zeroize::Zeroizing<Vec<u8>>, Error> {
    let key = private_key_from_pem(text)?;
    Ok(zeroize::Zeroizing::new(key.secret_der().to_vec()))
}

/// The first private key in PEM text (PKCS#8, SEC1 or PKCS#1), in its own form.
pub fn private_key_from_pem(text: &[u8]) -> Result<PrivateKeyDer<'static>, Error> {
    PrivateKeyDer::from_pem_slice(text).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => Error::BadPem("no PRIVATE KEY block found".into()),
        other => describe_in(text, other),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MARK: &str = concat!("-----BEGIN ", "CERTIFICATE-----");

    #[test]
    fn text_outside_the_blocks_is_ignored_and_a_cut_block_is_named() {
        let der = vec![0x30, 0x03, 0x02, 0x01, 0x01];
        let block = cert_to_pem(&der);
        let with_text =
            format!("Bag Attributes\n    localKeyID: 01 02\nsubject=CN = x\n{block}trailing words\n");
        assert!(is_pem(with_text.as_bytes()));
        assert_eq!(certs_from_pem(with_text.as_bytes()).unwrap(), vec![der.clone()]);
        assert_eq!(
            blocks(with_text.as_bytes()).unwrap(),
            vec![("CERTIFICATE".to_string(), der)]
        );
        assert!(!is_pem(b"\x30\x82\x01\x00 binary"));

        let cut = &block[..block.len() / 2];
        assert!(cut.starts_with(MARK));
        for e in [
            certs_from_pem(cut.as_bytes()).unwrap_err(),
            blocks(cut.as_bytes()).unwrap_err(),
        ] {
            let msg = e.to_string();
            assert!(
                msg.contains("-----END CERTIFICATE-----")
                    && msg.contains("truncated")
                    && !msg.contains("[45"),
                "{msg}"
            );
        }
    }
}
