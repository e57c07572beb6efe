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

/// Reads a PFX.
pub fn read_pfx(data: &[u8], password: &str) -> Result<PfxContents, Error> {
    let store = KeyStore::from_pkcs12(data, password, p12_keystore::Pkcs12ImportPolicy::Relaxed)
        .map_err(|e| Error::Pkcs12(e.to_string()))?;
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
