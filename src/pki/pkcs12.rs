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

/// Reads a PFX: the private key (PKCS#8 DER) and the chain, leaf first.
pub fn read_pfx(data: &[u8], password: &str) -> Result<(zeroize::Zeroizing<Vec<u8>>, Vec<Vec<u8>>), Error> {
    let store = KeyStore::from_pkcs12(data, password, p12_keystore::Pkcs12ImportPolicy::Relaxed)
        .map_err(|e| Error::Pkcs12(e.to_string()))?;
    let (_, chain) = store
        .private_key_chain()
        .ok_or_else(|| Error::Pkcs12("the file holds no private key with a certificate".into()))?;
    let key = zeroize::Zeroizing::new(chain.key().as_der().to_vec());
    let certs = chain.certs().iter().map(|c| c.as_der().to_vec()).collect();
    Ok((key, certs))
}
