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
            P12::UnsupportedEncryptionScheme | P12::UnsupportedMacAlgorithm => {
                let named = unreadable_schemes(data);
                let what = if named.is_empty() {
                    format!("an encryption or MAC scheme certroll cannot read ({e})")
                } else {
                    named.join(", ")
                };
                Error::Pkcs12(format!(
                    "the file uses {what}, which certroll cannot read; readable are PBES2 (PBKDF2 with \
                     AES-CBC), pbeWithSHAAnd3-KeyTripleDES-CBC and pbeWithSHAAnd40BitRC2-CBC, with an \
                     HMAC-SHA1/SHA-2 MAC. Convert it with `openssl pkcs12 -legacy -in FILE -nodes | \
                     openssl pkcs12 -export -out NEW.p12`"
                ))
            }
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

/// Encryption schemes p12-keystore decrypts (with its `pbes1` feature): PBES2, and the PKCS#12
/// PBEs with 3-key 3DES and 40-bit RC2.
const READABLE_SCHEMES: [&str; 3] = [
    "1.2.840.113549.1.5.13",
    "1.2.840.113549.1.12.1.3",
    "1.2.840.113549.1.12.1.6",
];

/// MAC digests p12-keystore verifies: SHA-1 and the SHA-2 family.
const READABLE_MACS: [&str; 7] = [
    "1.3.14.3.2.26",
    "2.16.840.1.101.3.4.2.4",
    "2.16.840.1.101.3.4.2.1",
    "2.16.840.1.101.3.4.2.2",
    "2.16.840.1.101.3.4.2.3",
    "2.16.840.1.101.3.4.2.5",
    "2.16.840.1.101.3.4.2.6",
];

/// The common name of a scheme a PKCS#12 file may use, by OID.
fn scheme_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "1.2.840.113549.1.12.1.1" => "pbeWithSHAAnd128BitRC4",
        "1.2.840.113549.1.12.1.2" => "pbeWithSHAAnd40BitRC4",
        "1.2.840.113549.1.12.1.3" => "pbeWithSHAAnd3-KeyTripleDES-CBC",
        "1.2.840.113549.1.12.1.4" => "pbeWithSHAAnd2-KeyTripleDES-CBC",
        "1.2.840.113549.1.12.1.5" => "pbeWithSHAAnd128BitRC2-CBC",
        "1.2.840.113549.1.12.1.6" => "pbeWithSHAAnd40BitRC2-CBC",
        "1.2.840.113549.1.5.3" => "pbeWithMD5AndDES-CBC",
        "1.2.840.113549.1.5.10" => "pbeWithSHA1AndDES-CBC",
        "1.2.840.113549.1.5.13" => "PBES2",
        "1.2.840.113549.1.5.14" => "PBMAC1",
        "1.2.840.113549.2.5" => "MD5",
        "1.3.14.3.2.26" => "SHA-1",
        _ => return None,
    })
}

/// The encryption schemes and MAC algorithm of a PKCS#12 file that p12-keystore cannot read, each
/// as "name (OID)" (or the OID alone), read from the file's structure with the `pkcs12` and `cms`
/// crates. Empty when the file cannot be decoded that far or uses nothing unreadable (then a
/// PBES2 parameter, such as its cipher, is what p12-keystore refused).
fn unreadable_schemes(data: &[u8]) -> Vec<String> {
    use der::{Decode as _, Encode as _};
    let content_data = "1.2.840.113549.1.7.1";
    let encrypted_data = "1.2.840.113549.1.7.6";
    let shrouded_key_bag = "1.2.840.113549.1.12.10.1.2";
    let mut found: Vec<String> = Vec::new();
    let Ok(pfx) = pkcs12::Pfx::from_der(data) else {
        return found;
    };
    if let Some(mac) = &pfx.mac_data {
        found.push(format!("mac:{}", mac.mac.algorithm.oid));
    }
    let octets = |any: &der::Any| -> Option<Vec<u8>> {
        der::asn1::OctetString::from_der(&any.to_der().ok()?)
            .ok()
            .map(|o| o.as_bytes().to_vec())
    };
    let safes = octets(&pfx.auth_safe.content)
        .and_then(|b| pkcs12::AuthenticatedSafe::from_der(&b).ok())
        .unwrap_or_default();
    for ci in safes {
        let kind = ci.content_type.to_string();
        if kind == encrypted_data {
            if let Some(ed) = ci
                .content
                .to_der()
                .ok()
                .and_then(|d| cms::encrypted_data::EncryptedData::from_der(&d).ok())
            {
                found.push(ed.enc_content_info.content_enc_alg.oid.to_string());
            }
        } else if kind == content_data {
            let bags = octets(&ci.content)
                .and_then(|b| Vec::<pkcs12::SafeBag>::from_der(&b).ok())
                .unwrap_or_default();
            for bag in bags.iter().filter(|b| b.bag_id.to_string() == shrouded_key_bag) {
                // EncryptedPrivateKeyInfo ::= SEQUENCE { encryptionAlgorithm, encryptedData }
                let alg = der::asn1::ContextSpecific::<der::Any>::from_der(&bag.bag_value)
                    .ok()
                    .and_then(|cs| {
                        let mut reader = der::SliceReader::new(cs.value.value()).ok()?;
                        cms::cert::x509::spki::AlgorithmIdentifierOwned::decode(&mut reader).ok()
                    });
                if let Some(alg) = alg {
                    found.push(alg.oid.to_string());
                }
            }
        }
    }
    let mut out: Vec<String> = Vec::new();
    for oid in found {
        let (is_mac, oid) = match oid.strip_prefix("mac:") {
            Some(o) => (true, o.to_string()),
            None => (false, oid),
        };
        let readable = if is_mac {
            READABLE_MACS.contains(&oid.as_str())
        } else {
            READABLE_SCHEMES.contains(&oid.as_str())
        };
        if readable {
            continue;
        }
        let what = if is_mac {
            "the MAC"
        } else {
            "the encryption scheme"
        };
        let shown = match scheme_name(&oid) {
            Some(name) => format!("{what} {name} ({oid})"),
            None => format!("{what} {oid}"),
        };
        if !out.contains(&shown) {
            out.push(shown);
        }
    }
    out
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
