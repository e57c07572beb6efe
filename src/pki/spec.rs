//! Plain descriptions of keys and certificate contents, shared by the plan and the PKI core.
//!
//! These types carry no key material and do no cryptography; `pki::keys` and `pki::cert` turn
//! them into keys and certificates.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Elliptic curves a key can be generated on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Curve {
    /// NIST P-256 (secp256r1), signs with SHA-256.
    #[serde(rename = "P-256")]
    P256,
    /// NIST P-384 (secp384r1), signs with SHA-384.
    #[serde(rename = "P-384")]
    P384,
    /// NIST P-521 (secp521r1), signs with SHA-512.
    #[serde(rename = "P-521")]
    P521,
}

impl Curve {
    /// Parses the Key Vault spelling (`P-256`, `P-384`, `P-521`).
    pub fn parse(s: &str) -> Option<Curve> {
        match s {
            "P-256" => Some(Curve::P256),
            "P-384" => Some(Curve::P384),
            "P-521" => Some(Curve::P521),
            _ => None,
        }
    }
}

impl fmt::Display for Curve {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Curve::P256 => "P-256",
            Curve::P384 => "P-384",
            Curve::P521 => "P-521",
        })
    }
}

/// The key type and size of a policy, as Key Vault names them (`RSA`, `EC`, `RSA-HSM`, `EC-HSM`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kty")]
pub enum KeySpec {
    /// RSA with a modulus of 2048, 3072 or 4096 bits.
    Rsa {
        /// Modulus size in bits.
        bits: u32,
        /// An HSM key: never exportable.
        hsm: bool,
    },
    /// ECDSA on a NIST curve.
    Ec {
        /// The curve.
        curve: Curve,
        /// An HSM key: never exportable.
        hsm: bool,
    },
}

/// RSA modulus sizes certroll generates.
pub const RSA_SIZES: [u32; 3] = [2048, 3072, 4096];

impl KeySpec {
    /// Key Vault's `kty` name for this key.
    pub fn kty(&self) -> &'static str {
        match self {
            KeySpec::Rsa { hsm: false, .. } => "RSA",
            KeySpec::Rsa { hsm: true, .. } => "RSA-HSM",
            KeySpec::Ec { hsm: false, .. } => "EC",
            KeySpec::Ec { hsm: true, .. } => "EC-HSM",
        }
    }

    /// Whether the key lives in an (emulated) HSM, which makes it non-exportable.
    pub fn is_hsm(&self) -> bool {
        matches!(
            self,
            KeySpec::Rsa { hsm: true, .. } | KeySpec::Ec { hsm: true, .. }
        )
    }
}

impl fmt::Display for KeySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySpec::Rsa { bits, .. } => write!(f, "{} {bits}", self.kty()),
            KeySpec::Ec { curve, .. } => write!(f, "{} {curve}", self.kty()),
        }
    }
}

/// X.509 key usage bits (RFC 5280 section 4.2.1.3), spelled as Key Vault spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum KeyUsage {
    /// digitalSignature
    DigitalSignature,
    /// nonRepudiation (contentCommitment)
    NonRepudiation,
    /// keyEncipherment
    KeyEncipherment,
    /// dataEncipherment
    DataEncipherment,
    /// keyAgreement
    KeyAgreement,
    /// keyCertSign
    KeyCertSign,
    /// cRLSign
    #[serde(rename = "cRLSign")]
    CrlSign,
    /// encipherOnly
    EncipherOnly,
    /// decipherOnly
    DecipherOnly,
}

impl KeyUsage {
    /// All key usages, in RFC 5280 bit order.
    pub const ALL: [KeyUsage; 9] = [
        KeyUsage::DigitalSignature,
        KeyUsage::NonRepudiation,
        KeyUsage::KeyEncipherment,
        KeyUsage::DataEncipherment,
        KeyUsage::KeyAgreement,
        KeyUsage::KeyCertSign,
        KeyUsage::CrlSign,
        KeyUsage::EncipherOnly,
        KeyUsage::DecipherOnly,
    ];

    /// The Key Vault / RFC 5280 name of this usage.
    pub fn name(&self) -> &'static str {
        match self {
            KeyUsage::DigitalSignature => "digitalSignature",
            KeyUsage::NonRepudiation => "nonRepudiation",
            KeyUsage::KeyEncipherment => "keyEncipherment",
            KeyUsage::DataEncipherment => "dataEncipherment",
            KeyUsage::KeyAgreement => "keyAgreement",
            KeyUsage::KeyCertSign => "keyCertSign",
            KeyUsage::CrlSign => "cRLSign",
            KeyUsage::EncipherOnly => "encipherOnly",
            KeyUsage::DecipherOnly => "decipherOnly",
        }
    }

    /// Parses a name as written in a plan (`digitalSignature`, `cRLSign`, ...).
    pub fn parse(s: &str) -> Option<KeyUsage> {
        KeyUsage::ALL.into_iter().find(|u| u.name() == s)
    }

    /// The key operations this usage permits, by the Key Vault table.
    pub fn key_operations(&self) -> &'static [&'static str] {
        match self {
            KeyUsage::DigitalSignature
            | KeyUsage::NonRepudiation
            | KeyUsage::KeyCertSign
            | KeyUsage::CrlSign => &["sign", "verify"],
            KeyUsage::KeyEncipherment => &["wrapKey", "unwrapKey"],
            KeyUsage::DataEncipherment => &["encrypt", "decrypt"],
            KeyUsage::EncipherOnly => &["encrypt"],
            KeyUsage::DecipherOnly => &["decrypt"],
            KeyUsage::KeyAgreement => &[],
        }
    }
}

/// Extended key usages a policy may ask for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ExtendedKeyUsage {
    /// TLS server authentication, 1.3.6.1.5.5.7.3.1
    ServerAuth,
    /// TLS client authentication, 1.3.6.1.5.5.7.3.2
    ClientAuth,
    /// Code signing, 1.3.6.1.5.5.7.3.3
    CodeSigning,
    /// E-mail protection, 1.3.6.1.5.5.7.3.4
    EmailProtection,
    /// Time stamping, 1.3.6.1.5.5.7.3.8
    TimeStamping,
    /// OCSP signing, 1.3.6.1.5.5.7.3.9
    OcspSigning,
    /// Any other EKU, by dotted OID.
    Other(Vec<u64>),
}

impl ExtendedKeyUsage {
    /// Parses a plan value: a short name (`clientAuth`) or a dotted OID (`1.3.6.1.5.5.7.3.2`).
    pub fn parse(s: &str) -> Option<ExtendedKeyUsage> {
        Some(match s {
            "serverAuth" | "1.3.6.1.5.5.7.3.1" => ExtendedKeyUsage::ServerAuth,
            "clientAuth" | "1.3.6.1.5.5.7.3.2" => ExtendedKeyUsage::ClientAuth,
            "codeSigning" | "1.3.6.1.5.5.7.3.3" => ExtendedKeyUsage::CodeSigning,
            "emailProtection" | "1.3.6.1.5.5.7.3.4" => ExtendedKeyUsage::EmailProtection,
            "timeStamping" | "1.3.6.1.5.5.7.3.8" => ExtendedKeyUsage::TimeStamping,
            "OCSPSigning" | "ocspSigning" | "1.3.6.1.5.5.7.3.9" => ExtendedKeyUsage::OcspSigning,
            other => {
                let arcs: Option<Vec<u64>> = other.split('.').map(|a| a.parse().ok()).collect();
                let arcs = arcs?;
                if arcs.len() < 2 {
                    return None;
                }
                ExtendedKeyUsage::Other(arcs)
            }
        })
    }

    /// The dotted OID of this usage.
    pub fn oid(&self) -> String {
        match self {
            ExtendedKeyUsage::ServerAuth => "1.3.6.1.5.5.7.3.1".into(),
            ExtendedKeyUsage::ClientAuth => "1.3.6.1.5.5.7.3.2".into(),
            ExtendedKeyUsage::CodeSigning => "1.3.6.1.5.5.7.3.3".into(),
            ExtendedKeyUsage::EmailProtection => "1.3.6.1.5.5.7.3.4".into(),
            ExtendedKeyUsage::TimeStamping => "1.3.6.1.5.5.7.3.8".into(),
            ExtendedKeyUsage::OcspSigning => "1.3.6.1.5.5.7.3.9".into(),
            ExtendedKeyUsage::Other(arcs) => arcs.iter().map(|a| a.to_string()).collect::<Vec<_>>().join("."),
        }
    }
}

/// One RDN attribute of a subject, e.g. `CN=device-1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnAttribute {
    /// The attribute's short name: CN, O, OU, C, ST, L.
    pub kind: DnKind,
    /// The value, unescaped.
    pub value: String,
}

/// The subject attribute types certroll writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DnKind {
    /// commonName
    CN,
    /// organizationName
    O,
    /// organizationalUnitName
    OU,
    /// countryName
    C,
    /// stateOrProvinceName
    ST,
    /// localityName
    L,
}

/// A subject distinguished name parsed from `CN=x, O=y` text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subject(pub Vec<DnAttribute>);

impl Subject {
    /// A subject with only a common name.
    pub fn common_name(cn: &str) -> Subject {
        Subject(vec![DnAttribute {
            kind: DnKind::CN,
            value: cn.to_string(),
        }])
    }

    /// Parses `CN=Example Root CA, O=Example`. A `,`, `;`, `+` or `\` inside a value is escaped
    /// with `\`; an unescaped `+` (an RFC 4514 multi-valued RDN), a repeated attribute and a
    /// lower-case country are refused, saying why.
    pub fn parse(text: &str) -> Result<Subject, String> {
        // RFC 5280 Appendix A upper bounds: ub-common-name, ub-organization-name and
        // ub-organizational-unit-name are 64 characters, ub-locality-name and ub-state-name 128;
        // a whole DN of a few hundred characters at most.
        const MAX_DN: usize = 1024;
        const MAX_VALUE: usize = 128;
        // A bound on the text first, so that absurd input costs nothing; the limit itself is
        // checked on the subject as certroll writes it out (below), which may be longer than
        // the text (`S=` becomes `ST=`, `;` becomes `, `), so that what certroll shows parses back.
        if text.chars().count() > 4 * MAX_DN {
            return Err(format!(
                "is {} characters long; a subject may have at most {MAX_DN}",
                text.chars().count()
            ));
        }
        if let Some(c) = text.chars().find(|c| c.is_control()) {
            return Err(format!(
                "contains the control character {:?}; subjects may not hold control characters",
                c
            ));
        }
        let mut attrs = Vec::new();
        let mut parts = Vec::new();
        let mut current = String::new();
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some(next) => current.push(next),
                    None => return Err("ends with a lone backslash".into()),
                },
                ',' | ';' => parts.push(std::mem::take(&mut current)),
                // RFC 4514: an unescaped `+` joins two attributes into one multi-valued RDN,
                // which certroll does not write; taking it as a literal would make a subject
                // other than the one a reader of the text sees.
                '+' => {
                    return Err(format!(
                        "`{text}` has an unescaped `+`, which RFC 4514 reads as a multi-valued \
                         RDN (two attributes in one); certroll writes one attribute per RDN: \
                         write `\\+` for a `+` in a value"
                    ));
                }
                c => current.push(c),
            }
        }
        parts.push(current);
        for part in parts {
            let part = part.trim();
            if part.is_empty() {
                return Err(format!("empty attribute in `{text}`"));
            }
            let Some((key, value)) = part.split_once('=') else {
                return Err(format!("`{part}` is not of the form KEY=value"));
            };
            let kind = match key.trim().to_ascii_uppercase().as_str() {
                "CN" => DnKind::CN,
                "O" => DnKind::O,
                "OU" => DnKind::OU,
                "C" => DnKind::C,
                "ST" | "S" => DnKind::ST,
                "L" => DnKind::L,
                other => {
                    return Err(format!(
                        "unknown attribute `{other}` (expected CN, O, OU, C, ST or L)"
                    ));
                }
            };
            let value = value.trim();
            if value.is_empty() {
                return Err(format!("`{}` has an empty value", key.trim()));
            }
            let most = match kind {
                DnKind::L | DnKind::ST => MAX_VALUE,
                _ => 64,
            };
            if value.chars().count() > most {
                return Err(format!(
                    "`{}` is {} characters long; RFC 5280 allows at most {most}",
                    key.trim(),
                    value.chars().count()
                ));
            }
            if kind == DnKind::C && !(value.len() == 2 && value.bytes().all(|b| b.is_ascii_alphabetic())) {
                return Err(format!("country `C={value}` must be a two-letter code"));
            }
            if kind == DnKind::C && value.bytes().any(|b| b.is_ascii_lowercase()) {
                return Err(format!(
                    "country `C={value}` must be upper case (`C={}`): ISO 3166-1 alpha-2 codes \
                     are, and name matching compares them as written",
                    value.to_ascii_uppercase()
                ));
            }
            // X.509 allows an attribute type in several RDNs (`OU=a, OU=b`), but the certificate
            // builder (rcgen) keeps one value per type, so a second one would be dropped
            // without a word.
            if attrs.iter().any(|a: &DnAttribute| a.kind == kind) {
                return Err(format!(
                    "`{}` appears twice; X.509 allows that, but certroll writes each attribute \
                     once: join the values in one (e.g. `OU=a / b`)",
                    key.trim()
                ));
            }
            attrs.push(DnAttribute {
                kind,
                value: value.to_string(),
            });
        }
        if !attrs.iter().any(|a| a.kind == DnKind::CN) {
            return Err(format!("`{text}` has no CN"));
        }
        let subject = Subject(attrs);
        let written = subject.to_string().chars().count();
        if written > MAX_DN {
            return Err(format!(
                "is {written} characters long written out; a subject may have at most {MAX_DN}"
            ));
        }
        Ok(subject)
    }

    /// The common name, if any.
    pub fn cn(&self) -> Option<&str> {
        self.0
            .iter()
            .find(|a| a.kind == DnKind::CN)
            .map(|a| a.value.as_str())
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, a) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            // Escape what `parse` splits on or unescapes, so the text parses back to this subject.
            write!(f, "{:?}=", a.kind)?;
            for c in a.value.chars() {
                if matches!(c, '\\' | ',' | ';' | '+') {
                    f.write_str("\\")?;
                }
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 10 item 13: an unescaped `+` (RFC 4514 multi-valued RDN), a repeated attribute and
    /// a lower-case country are refused with the reason; `\+` is a literal `+` and shows
    /// escaped, so it parses back.
    #[test]
    fn plus_repeats_and_country_case_are_refused_with_the_reason() {
        let e = Subject::parse("CN=a, O=x+y").unwrap_err();
        assert!(e.contains("multi-valued RDN") && e.contains("\\+"), "{e}");
        let s = Subject::parse("CN=a, O=x\\+y").unwrap();
        assert_eq!(s.0[1].value, "x+y");
        assert_eq!(s.to_string(), "CN=a, O=x\\+y");
        assert_eq!(Subject::parse(&s.to_string()).unwrap(), s);
        let e = Subject::parse("CN=a, C=de").unwrap_err();
        assert!(
            e.contains("must be upper case (`C=DE`)") && e.contains("ISO 3166"),
            "{e}"
        );
        assert_eq!(Subject::parse("CN=a, C=DE").unwrap().0[1].value, "DE");
        let e = Subject::parse("CN=a, OU=x, OU=y").unwrap_err();
        assert!(e.contains("X.509 allows that") && e.contains("once"), "{e}");
    }

    #[test]
    fn value_lengths_follow_rfc_5280_appendix_a_per_attribute() {
        // ub-locality-name and ub-state-name are 128; CN, O and OU are 64.
        for key in ["L", "ST"] {
            assert!(
                Subject::parse(&format!("CN=x, {key}={}", "a".repeat(128))).is_ok(),
                "{key}"
            );
            let e = Subject::parse(&format!("CN=x, {key}={}", "a".repeat(129))).unwrap_err();
            assert!(e.contains("at most 128"), "{e}");
        }
        for key in ["CN", "O", "OU"] {
            let cn = if key == "CN" { "" } else { "CN=x, " };
            assert!(
                Subject::parse(&format!("{cn}{key}={}", "a".repeat(64))).is_ok(),
                "{key}"
            );
            let e = Subject::parse(&format!("{cn}{key}={}", "a".repeat(65))).unwrap_err();
            assert!(e.contains("at most 64"), "{e}");
        }
    }

    #[test]
    fn subject_parses_escaped_commas_and_round_trips() {
        assert!(
            Subject::parse("CN=a\0b")
                .unwrap_err()
                .contains("control character")
        );
        assert!(
            Subject::parse("CN=a\nb")
                .unwrap_err()
                .contains("control character")
        );
        assert!(
            Subject::parse(&format!("CN={}", "x".repeat(65)))
                .unwrap_err()
                .contains("at most 64")
        );
        assert!(
            Subject::parse(&format!("CN={}", "x".repeat(5000)))
                .unwrap_err()
                .contains("at most 1024")
        );
        let s = Subject::parse(r"CN=Example\, Inc Root, O=Example, C=KR").unwrap();
        assert_eq!(s.cn(), Some("Example, Inc Root"));
        assert_eq!(s.0.len(), 3);
        assert_eq!(Subject::parse(&s.to_string()).unwrap(), s);
    }

    #[test]
    fn subject_rejects_what_openssl_would_not_want() {
        assert!(Subject::parse("O=NoCommonName").is_err());
        assert!(Subject::parse("CN=x, XX=y").unwrap_err().contains("XX"));
        assert!(Subject::parse("CN=x,, O=y").is_err());
        assert!(Subject::parse("CN=x, C=Korea").is_err());
        assert!(Subject::parse("CN=x, C=K1").is_err());
        assert!(Subject::parse("CN=x, OU=a, OU=b").unwrap_err().contains("twice"));
    }

    #[test]
    fn key_usage_maps_to_key_vault_operations() {
        assert_eq!(
            KeyUsage::KeyEncipherment.key_operations(),
            ["wrapKey", "unwrapKey"]
        );
        assert_eq!(KeyUsage::CrlSign.key_operations(), ["sign", "verify"]);
        assert_eq!(KeyUsage::parse("cRLSign"), Some(KeyUsage::CrlSign));
        assert_eq!(
            ExtendedKeyUsage::parse("1.3.6.1.5.5.7.3.2"),
            Some(ExtendedKeyUsage::ClientAuth)
        );
        assert_eq!(ExtendedKeyUsage::parse("1.2.3").unwrap().oid(), "1.2.3");
        assert!(ExtendedKeyUsage::parse("bogus").is_none());
    }
}
