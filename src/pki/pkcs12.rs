//! PKCS#12 (PFX) files through p12-keystore, with PBES2/AES-256 and an HMAC-SHA256 MAC so that
//! OpenSSL 3 reads them without `-legacy`.

use super::Error;
use p12_keystore::{Certificate, KeyStore, KeyStoreEntry, PrivateKey, PrivateKeyChain};

/// Writes a PFX holding the key and its chain (leaf first).
pub fn write_pfx(
    alias: &str,
    pkcs8_der: &[u8],
    chain_der: &[Vec<u8>],
    password: &str,
) -> Result<Vec<u8>, Error> {
    let certs = chain_der
        .iter()
        .map(|der| Certificate::from_der(der).map_err(|e| Error::Pkcs12(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    let leaf = chain_der
        .first()
        .ok_or_else(|| Error::Pkcs12("empty chain".into()))?;
    let local_key_id = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, leaf);
    let key = PrivateKey::from_der(pkcs8_der).map_err(|e| Error::Pkcs12(e.to_string()))?;
    let mut store = KeyStore::new();
    store.add_entry(
        alias,
        KeyStoreEntry::PrivateKeyChain(PrivateKeyChain::new(local_key_id.as_ref().to_vec(), key, certs)),
    );
    store
        .writer(password)
        .encryption_algorithm(p12_keystore::EncryptionAlgorithm::PbeWithHmacSha256AndAes256)
        .mac_algorithm(p12_keystore::MacAlgorithm::HmacSha256)
        .write()
        .map_err(|e| Error::Pkcs12(e.to_string()))
}

/// What a PFX holds: the private key (PKCS#8 DER) and the chain, leaf first.
pub struct PfxContents {
    /// The private key, PKCS#8 DER.
    pub key: zeroize::Zeroizing<Vec<u8>>,
    /// The certificates, leaf first.
    pub chain: Vec<Vec<u8>>,
}

/// Reads a PFX: PBES2 (AES) as OpenSSL 3 writes it, and the legacy PBE-SHA1-3DES and
/// PBE-SHA1-RC2-40 of `openssl pkcs12 -legacy`, Windows and older tools. The error tells a wrong
/// password (the MAC or the padding does not check) from a scheme certroll cannot read.
pub fn read_pfx(data: &[u8], password: &str) -> Result<PfxContents, Error> {
    use p12_keystore::error::Error as P12;
    let store = KeyStore::from_pkcs12(data, password, p12_keystore::Pkcs12ImportPolicy::Relaxed).map_err(
        |e| match e {
            P12::MacError(_) | P12::UnpadError => {
                Error::Pkcs12("wrong password (the file's integrity check does not match it)".into())
            }
            P12::UnsupportedEncryptionScheme | P12::UnsupportedMacAlgorithm => Error::Pkcs12(format!(
                "the file uses an encryption or MAC scheme certroll cannot read ({}); readable are \
                 PBES2 with PBKDF2 and AES, PBE-SHA1-3DES and PBE-SHA1-RC2-40 with an HMAC-SHA1/SHA2 MAC",
                e
            )),
            // der's messages name tags and byte offsets: not what a user can act on.
            P12::DerError(_) => {
                Error::Pkcs12("not a PKCS#12 file, or a damaged one (its DER does not decode)".into())
            }
            P12::InvalidVersion | P12::UnsupportedContentType => {
                Error::Pkcs12(format!("not a PKCS#12 file, or a damaged one ({e})"))
            }
            P12::X509Error(x) => Error::Pkcs12(format!(
                "a certificate in the file cannot be read: {}",
                super::x509_parse_error(&x)
            )),
            other => Error::Pkcs12(other.to_string()),
        },
    )?;
    let (_, chain) = store
        .private_key_chain()
        .ok_or_else(|| Error::Pkcs12("the file holds no private key with a certificate".into()))?;
    let key = zeroize::Zeroizing::new(chain.key().as_der().to_vec());
    let certs = chain.certs().iter().map(|c| c.as_der().to_vec()).collect();
    Ok(PfxContents { key, chain: certs })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::spec::{Curve, KeySpec, Subject};

    #[test]
    fn pfx_round_trips_key_and_chain() {
        let key = crate::pki::PrivateKey::generate(&KeySpec::Ec {
            curve: Curve::P256,
            hsm: false,
        })
        .unwrap();
        let now = time::OffsetDateTime::now_utc();
        let profile = crate::pki::CertProfile {
            subject: Subject::common_name("pfx-test"),
            dns_names: vec![],
            key_usage: vec![],
            extended_key_usage: vec![],
            not_before: now,
            not_after: now + time::Duration::days(1),
            ca: None,
        };
        let der = crate::pki::sign_self(&profile, &key).unwrap();
        let pfx = write_pfx("pfx-test", key.pkcs8_der(), std::slice::from_ref(&der), "pw").unwrap();
        let back = read_pfx(&pfx, "pw").unwrap();
        assert_eq!(back.chain, vec![der]);
        assert_eq!(back.key.as_slice(), key.pkcs8_der());
        assert!(read_pfx(&pfx, "wrong").is_err());
    }
}
