//! Private keys: generation for every key type certroll supports, and loading from PKCS#8.
//!
//! A [`PrivateKey`] keeps its PKCS#8 bytes in a zeroizing buffer and never prints them.

use super::Error;
use super::spec::{Curve, KeySpec};
use rcgen::{KeyPair, PublicKeyData, RsaKeySize, SignatureAlgorithm};
use zeroize::Zeroizing;

/// A private key with its signature algorithm.
pub struct PrivateKey {
    pair: KeyPair,
    pkcs8: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key bytes: Debug output ends up in logs.
        write!(f, "PrivateKey({:?}, <redacted>)", self.pair.algorithm())
    }
}

/// The signature algorithm certroll signs with for a key type.
pub fn signature_algorithm(spec: &KeySpec) -> &'static SignatureAlgorithm {
    match spec {
        KeySpec::Rsa { .. } => &rcgen::PKCS_RSA_SHA256,
        KeySpec::Ec {
            curve: Curve::P256, ..
        } => &rcgen::PKCS_ECDSA_P256_SHA256,
        KeySpec::Ec {
            curve: Curve::P384, ..
        } => &rcgen::PKCS_ECDSA_P384_SHA384,
        KeySpec::Ec {
            curve: Curve::P521, ..
        } => &rcgen::PKCS_ECDSA_P521_SHA512,
    }
}

impl PrivateKey {
    /// Generates a fresh key.
    pub fn generate(spec: &KeySpec) -> Result<PrivateKey, Error> {
        let alg = signature_algorithm(spec);
        let pair = match spec {
            KeySpec::Rsa { bits, .. } => {
                let size = match bits {
                    2048 => RsaKeySize::_2048,
                    3072 => RsaKeySize::_3072,
                    4096 => RsaKeySize::_4096,
                    other => return Err(Error::BadKey(format!("unsupported RSA size {other}"))),
                };
                KeyPair::generate_rsa_for(alg, size)?
            }
            KeySpec::Ec { .. } => KeyPair::generate_for(alg)?,
        };
        let pkcs8 = Zeroizing::new(pair.serialize_der());
        Ok(PrivateKey { pair, pkcs8 })
    }

    /// Loads a PKCS#8 DER key that must be of type `spec`.
    pub fn from_pkcs8(der: &[u8], spec: &KeySpec) -> Result<PrivateKey, Error> {
        let alg = signature_algorithm(spec);
        let pkcs8 = Zeroizing::new(der.to_vec());
        let pair = KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8.as_slice().into(), alg)
            .map_err(|e| Error::BadKey(format!("expected a {spec} key: {e}")))?;
        Ok(PrivateKey { pair, pkcs8 })
    }

    /// Loads a PKCS#8, SEC1 or PKCS#1 DER key, detecting its type.
    pub fn from_der_any(der: &[u8]) -> Result<(PrivateKey, KeySpec), Error> {
        let pair = KeyPair::try_from(der).map_err(|e| Error::BadKey(e.to_string()))?;
        let pkcs8 = Zeroizing::new(pair.serialize_der());
        let key = PrivateKey { pair, pkcs8 };
        let spec = key.spec()?;
        // Reload with certroll's own algorithm choice for the curve (P-521 signs with SHA-512).
        let key = PrivateKey::from_pkcs8(&key.pkcs8, &spec)?;
        Ok((key, spec))
    }

    /// The key type, read from the key itself.
    pub fn spec(&self) -> Result<KeySpec, Error> {
        let alg = self.pair.algorithm();
        if alg == &rcgen::PKCS_ECDSA_P256_SHA256 {
            return Ok(KeySpec::Ec {
                curve: Curve::P256,
                hsm: false,
            });
        }
        if alg == &rcgen::PKCS_ECDSA_P384_SHA384 {
            return Ok(KeySpec::Ec {
                curve: Curve::P384,
                hsm: false,
            });
        }
        if alg == &rcgen::PKCS_ECDSA_P521_SHA256
            || alg == &rcgen::PKCS_ECDSA_P521_SHA384
            || alg == &rcgen::PKCS_ECDSA_P521_SHA512
        {
            return Ok(KeySpec::Ec {
                curve: Curve::P521,
                hsm: false,
            });
        }
        if alg == &rcgen::PKCS_RSA_SHA256 || alg == &rcgen::PKCS_RSA_SHA384 || alg == &rcgen::PKCS_RSA_SHA512
        {
            let bits = rsa_modulus_bits(self.pair.der_bytes())
                .ok_or_else(|| Error::BadKey("cannot read the RSA modulus".into()))?;
            return Ok(KeySpec::Rsa { bits, hsm: false });
        }
        Err(Error::BadKey(format!("unsupported key algorithm {alg:?}")))
    }

    /// The PKCS#8 DER bytes. Handle with care: this is the secret.
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The rcgen key pair, for signing.
    pub fn pair(&self) -> &KeyPair {
        &self.pair
    }

    /// The SubjectPublicKeyInfo DER.
    pub fn public_key_der(&self) -> Vec<u8> {
        self.pair.subject_public_key_info()
    }
}

/// A freshly generated key for a certificate's subject: the PKCS#8 to store and the public key
/// to certify. Cheaper than a [`PrivateKey`] because it is never loaded for signing.
pub struct SubjectKey {
    pkcs8: Zeroizing<Vec<u8>>,
    public: SubjectPublicKey,
}

/// A public key as a certificate carries it: the raw key bytes and the algorithm. For EC keys
/// these are the point the key pair already holds, so nothing is encoded and parsed back.
pub struct SubjectPublicKey {
    bytes: Vec<u8>,
    algorithm: &'static SignatureAlgorithm,
}

impl PublicKeyData for SubjectPublicKey {
    fn der_bytes(&self) -> &[u8] {
        &self.bytes
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.algorithm
    }
}

impl std::fmt::Debug for SubjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SubjectKey(<redacted>)")
    }
}

impl SubjectKey {
    /// Generates a key of type `spec`.
    pub fn generate(spec: &KeySpec) -> Result<SubjectKey, Error> {
        use aws_lc_rs::signature::{self as sig, KeyPair as _};
        let fail = |what: &str| Error::BadKey(format!("{what} key generation failed"));
        match spec {
            KeySpec::Ec { curve, .. } => {
                let (alg, algorithm) = match curve {
                    Curve::P256 => (
                        &sig::ECDSA_P256_SHA256_ASN1_SIGNING,
                        &rcgen::PKCS_ECDSA_P256_SHA256,
                    ),
                    Curve::P384 => (
                        &sig::ECDSA_P384_SHA384_ASN1_SIGNING,
                        &rcgen::PKCS_ECDSA_P384_SHA384,
                    ),
                    Curve::P521 => (
                        &sig::ECDSA_P521_SHA512_ASN1_SIGNING,
                        &rcgen::PKCS_ECDSA_P521_SHA512,
                    ),
                };
                let pair = sig::EcdsaKeyPair::generate(alg).map_err(|_| fail("EC"))?;
                let pkcs8 = pair.to_pkcs8v1().map_err(|_| fail("EC"))?.as_ref().to_vec();
                Ok(SubjectKey {
                    pkcs8: Zeroizing::new(pkcs8),
                    // The uncompressed point: the subjectPublicKey of an EC SPKI.
                    public: SubjectPublicKey {
                        bytes: pair.public_key().as_ref().to_vec(),
                        algorithm,
                    },
                })
            }
            KeySpec::Rsa { .. } => SubjectKey::reuse(&PrivateKey::generate(spec)?),
        }
    }

    /// Keeps an existing key (a renewal with `reuse_key`).
    pub fn reuse(key: &PrivateKey) -> Result<SubjectKey, Error> {
        let spki = rcgen::SubjectPublicKeyInfo::from_der(&key.public_key_der())?;
        Ok(SubjectKey {
            pkcs8: Zeroizing::new(key.pkcs8_der().to_vec()),
            public: SubjectPublicKey {
                bytes: spki.der_bytes().to_vec(),
                algorithm: spki.algorithm(),
            },
        })
    }

    /// The PKCS#8 DER bytes. Handle with care: this is the secret.
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The public key, for certifying.
    pub fn public_key(&self) -> &SubjectPublicKey {
        &self.public
    }
}

/// Converts a PKCS#8, SEC1 (EC) or PKCS#1 (RSA) private key to PKCS#8 DER, as the store keeps
/// every key.
pub fn to_pkcs8(key: &rustls_pki_types::PrivateKeyDer<'_>) -> Result<Zeroizing<Vec<u8>>, Error> {
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::signature as sig;
    use rustls_pki_types::PrivateKeyDer;
    match key {
        PrivateKeyDer::Pkcs8(k) => Ok(Zeroizing::new(k.secret_pkcs8_der().to_vec())),
        PrivateKeyDer::Sec1(k) => {
            for alg in [
                &sig::ECDSA_P256_SHA256_ASN1_SIGNING,
                &sig::ECDSA_P384_SHA384_ASN1_SIGNING,
                &sig::ECDSA_P521_SHA512_ASN1_SIGNING,
            ] {
                if let Ok(pair) = sig::EcdsaKeyPair::from_private_key_der(alg, k.secret_sec1_der()) {
                    let doc = pair
                        .to_pkcs8v1()
                        .map_err(|_| Error::BadKey("cannot convert the EC key to PKCS#8".into()))?;
                    return Ok(Zeroizing::new(doc.as_ref().to_vec()));
                }
            }
            Err(Error::BadKey("the EC key is not on P-256, P-384 or P-521".into()))
        }
        PrivateKeyDer::Pkcs1(k) => {
            let pair = sig::RsaKeyPair::from_der(k.secret_pkcs1_der())
                .map_err(|e| Error::BadKey(format!("RSA key: {e}")))?;
            let doc: aws_lc_rs::encoding::Pkcs8V1Der<'static> = pair
                .as_der()
                .map_err(|_| Error::BadKey("cannot convert the RSA key to PKCS#8".into()))?;
            Ok(Zeroizing::new(doc.as_ref().to_vec()))
        }
        _ => Err(Error::BadKey("unsupported private key format".into())),
    }
}

/// Bits of an RSA modulus, from the PKCS#1 RSAPublicKey inside the SPKI's bit string.
fn rsa_modulus_bits(rsa_public_key: &[u8]) -> Option<u32> {
    use x509_parser::der_parser::ber::parse_ber_sequence;
    let (_, seq) = parse_ber_sequence(rsa_public_key).ok()?;
    let modulus = seq.as_sequence().ok()?.first()?.as_bigint().ok()?;
    let bits = modulus.bits() as u32;
    // Round to the size that was asked for (a modulus may have a leading zero bit).
    Some(bits.div_ceil(8) * 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every supported key type (the smallest RSA size: the others differ only in length).
    const SPECS: [KeySpec; 4] = [
        KeySpec::Ec {
            curve: Curve::P256,
            hsm: false,
        },
        KeySpec::Ec {
            curve: Curve::P384,
            hsm: false,
        },
        KeySpec::Ec {
            curve: Curve::P521,
            hsm: false,
        },
        KeySpec::Rsa {
            bits: 2048,
            hsm: false,
        },
    ];

    #[test]
    fn every_supported_key_type_generates_and_reloads() {
        for spec in SPECS {
            let key = PrivateKey::generate(&spec).unwrap();
            assert_eq!(key.spec().unwrap(), spec, "{spec}");
            let again = PrivateKey::from_pkcs8(key.pkcs8_der(), &spec).unwrap();
            assert_eq!(again.public_key_der(), key.public_key_der());
            let (detected, detected_spec) = PrivateKey::from_der_any(key.pkcs8_der()).unwrap();
            assert_eq!(detected_spec, spec);
            assert_eq!(detected.public_key_der(), key.public_key_der());
        }
    }

    #[test]
    fn subject_keys_load_back_as_the_same_key() {
        for spec in SPECS {
            let fresh = SubjectKey::generate(&spec).unwrap();
            let loaded = PrivateKey::from_pkcs8(fresh.pkcs8_der(), &spec).unwrap();
            assert_eq!(
                loaded.public_key_der(),
                rcgen::PublicKeyData::subject_public_key_info(fresh.public_key())
            );
        }
    }

    #[test]
    fn debug_output_never_shows_the_key() {
        let key = PrivateKey::generate(&KeySpec::Ec {
            curve: Curve::P256,
            hsm: false,
        })
        .unwrap();
        let shown = format!("{key:?}");
        assert!(shown.contains("redacted"));
        assert!(!shown.contains(&crate::pki::hex_upper(&key.pkcs8_der()[36..44])));
    }
}
