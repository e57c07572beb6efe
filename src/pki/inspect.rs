//! Reading certificates: the facts certroll shows and decides on, parsed with x509-parser.

use super::Error;
use serde::Serialize;
use time::OffsetDateTime;
use x509_parser::prelude::X509Certificate;

/// Parses a DER certificate; returns what follows it beside it.
/// Errors: [`Error::BadCertificate`], worded by [`super::x509_parse_error`].
pub(crate) fn parse(der: &[u8]) -> Result<(&[u8], X509Certificate<'_>), Error> {
    x509_parser::parse_x509_certificate(der).map_err(|e| Error::BadCertificate(super::x509_parse_error(&e)))
}

/// [`parse`] of a certificate that must be the whole of `der`: trailing bytes are an error.
fn parse_whole(der: &[u8]) -> Result<X509Certificate<'_>, Error> {
    let (rest, cert) = parse(der)?;
    if !rest.is_empty() {
        return Err(Error::BadCertificate(
            "trailing bytes after the certificate".into(),
        ));
    }
    Ok(cert)
}

/// Ok when `der` is one whole certificate as [`CertInfo::from_der`] reads it, else the error
/// that refuses it there: the check without the work of rendering what it says.
pub fn check_whole(der: &[u8]) -> Result<(), Error> {
    parse_whole(der).map(|_| ())
}

/// What a certificate says, in the shape `status -o json` prints.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CertInfo {
    /// SHA-1 thumbprint, uppercase hex (Azure's `x509Thumbprint`).
    pub thumbprint: String,
    /// SHA-256 thumbprint, uppercase hex.
    pub sha256: String,
    /// Serial number: the DER content octets in uppercase hex, as the store and CRLs key it;
    /// shown (JSON, text) as openssl shows it, see [`serial_display`].
    #[serde(serialize_with = "serialize_serial")]
    pub serial: String,
    /// Subject DN, escaped per RFC 4514 (see [`name_text`]).
    pub subject: String,
    /// Issuer DN, escaped the same way.
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
        let cert = parse_whole(der)?;
        Ok(CertInfo {
            thumbprint: super::sha1_thumbprint(der),
            sha256: super::sha256_thumbprint(der),
            serial: super::hex_upper(cert.raw_serial()),
            subject: name_text(cert.subject()),
            issuer: name_text(cert.issuer()),
            not_before: cert.validity().not_before.to_datetime(),
            not_after: cert.validity().not_after.to_datetime(),
        })
    }

    /// Whether `now` is inside notBefore..=notAfter.
    pub fn valid_at(&self, now: OffsetDateTime) -> bool {
        self.not_before <= now && now <= self.not_after
    }

    /// Why the certificate is not valid at `now`, in words (None when it is): not yet valid
    /// (before notBefore) and expired (after notAfter) are told apart, since the fixes differ
    /// (a device's clock, or a renewal).
    pub fn validity_problem(&self, now: OffsetDateTime) -> Option<String> {
        validity_problem(self.not_before, self.not_after, now)
    }
}

/// [`CertInfo::validity_problem`] of a validity period already read.
pub fn validity_problem(
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    now: OffsetDateTime,
) -> Option<String> {
    if now < not_before {
        Some(format!(
            "the certificate is not yet valid: its validity starts at {} (notBefore)",
            crate::clock::rfc3339(not_before)
        ))
    } else if now > not_after {
        Some(format!(
            "the certificate has expired: its validity ended at {} (notAfter)",
            crate::clock::rfc3339(not_after)
        ))
    } else {
        None
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
        let cert = parse_whole(der)?;
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

impl ChainNames {
    /// The names of a certificate already parsed.
    pub(crate) fn of(cert: &X509Certificate<'_>) -> ChainNames {
        ChainNames {
            subject: cert.subject().as_raw().to_vec(),
            issuer: cert.issuer().as_raw().to_vec(),
            common_name: first_common_name(cert),
        }
    }
}

/// Reads a DER certificate's [`ChainNames`].
pub fn chain_names(der: &[u8]) -> Result<ChainNames, Error> {
    Ok(ChainNames::of(&parse(der)?.1))
}

/// The common name of a DER certificate's subject.
pub fn common_name(der: &[u8]) -> Result<Option<String>, Error> {
    Ok(first_common_name(&parse(der)?.1))
}

/// The first common name of a certificate's subject, when it is a string.
fn first_common_name(cert: &X509Certificate<'_>) -> Option<String> {
    cert.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string)
}

/// The key usage bits a DER certificate asserts, in RFC 5280 bit order; `None` when it has no
/// keyUsage extension (any use is allowed).
pub fn key_usage(der: &[u8]) -> Result<Option<Vec<super::spec::KeyUsage>>, Error> {
    use super::spec::KeyUsage;
    let (_, cert) = parse(der)?;
    let Some(ku) = cert
        .key_usage()
        .map_err(|_| Error::BadCertificate("its keyUsage extension cannot be read".into()))?
    else {
        return Ok(None);
    };
    let ku = ku.value;
    Ok(Some(
        [
            (ku.digital_signature(), KeyUsage::DigitalSignature),
            (ku.non_repudiation(), KeyUsage::NonRepudiation),
            (ku.key_encipherment(), KeyUsage::KeyEncipherment),
            (ku.data_encipherment(), KeyUsage::DataEncipherment),
            (ku.key_agreement(), KeyUsage::KeyAgreement),
            (ku.key_cert_sign(), KeyUsage::KeyCertSign),
            (ku.crl_sign(), KeyUsage::CrlSign),
            (ku.encipher_only(), KeyUsage::EncipherOnly),
            (ku.decipher_only(), KeyUsage::DecipherOnly),
        ]
        .into_iter()
        .filter_map(|(set, usage)| set.then_some(usage))
        .collect(),
    ))
}

/// The issuers of `leaf` found in `pool`, in path order: its issuer first, then that one's
/// issuer, up to a self-signed root or the first certificate whose issuer is not in the pool.
/// A candidate must carry the issuer name (byte for byte) and its key must verify the
/// signature, so a bundle in any order, with duplicates or unrelated certificates, gives the
/// same path; certificates not on the path are left out.
pub fn issuer_path(leaf: &[u8], pool: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let parsed: Vec<(&Vec<u8>, X509Certificate<'_>)> = pool
        .iter()
        .filter_map(|der| {
            x509_parser::parse_x509_certificate(der)
                .ok()
                .map(|(_, c)| (der, c))
        })
        .collect();
    let Ok((_, mut current)) = x509_parser::parse_x509_certificate(leaf) else {
        return Vec::new();
    };
    let mut used = vec![false; parsed.len()];
    let mut path = Vec::new();
    // Each pool certificate is used once at most, so the walk ends.
    while current.subject().as_raw() != current.issuer().as_raw() {
        let next = parsed.iter().enumerate().find(|(i, (_, cand))| {
            !used[*i]
                && cand.subject().as_raw() == current.issuer().as_raw()
                && current.verify_signature(Some(cand.public_key())).is_ok()
        });
        let Some((i, (der, cand))) = next else {
            break;
        };
        used[i] = true;
        path.push((*der).clone());
        current = cand.clone();
    }
    path
}

/// The short names RFC 4514 section 3 gives, plus the two openssl also prints by name.
const NAME_KEYS: [(&str, &str); 11] = [
    ("2.5.4.3", "CN"),
    ("2.5.4.6", "C"),
    ("2.5.4.7", "L"),
    ("2.5.4.8", "ST"),
    ("2.5.4.9", "STREET"),
    ("2.5.4.10", "O"),
    ("2.5.4.11", "OU"),
    ("0.9.2342.19200300.100.1.25", "DC"),
    ("0.9.2342.19200300.100.1.1", "UID"),
    ("1.2.840.113549.1.9.1", "emailAddress"),
    ("2.5.4.5", "serialNumber"),
];

/// A distinguished name as text, escaped per RFC 4514 section 2.4 as openssl's
/// `-nameopt RFC2253` escapes it: `,` `+` `"` `\` `<` `>` `;`, a leading `#` or space, a
/// trailing space and control characters are escaped; the attributes of a multi-valued RDN are
/// joined with an unescaped `+`; a type without a short name is its dotted OID, and a value that
/// is not a string is `#` and the hex of its DER. RDNs are listed in certificate order joined by
/// `, `, as certroll writes and reads subjects (`CN=device-1, O=Example`), so a subject certroll
/// can write reads back as the same subject; x509-parser's own text escapes nothing, so
/// `O=x+y` (a literal plus) and `O=x + CN=y` (two attributes) would look alike.
pub fn name_text(name: &x509_parser::x509::X509Name<'_>) -> String {
    use x509_parser::der_parser::asn1_rs::{Tag, ToDer};
    let mut out = String::new();
    for (i, rdn) in name.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        for (j, attr) in rdn.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            let oid = attr.attr_type().to_id_string();
            match NAME_KEYS.iter().find(|(o, _)| *o == oid) {
                Some((_, key)) => out.push_str(key),
                None => out.push_str(&oid),
            }
            out.push('=');
            let any = attr.attr_value();
            let data = any.data;
            let text = match any.tag() {
                Tag::NumericString
                | Tag::PrintableString
                | Tag::Utf8String
                | Tag::Ia5String
                | Tag::VisibleString
                | Tag::T61String => std::str::from_utf8(data).ok().map(str::to_string),
                Tag::BmpString if data.len() % 2 == 0 => {
                    char::decode_utf16(data.chunks(2).map(|c| u16::from_be_bytes([c[0], c[1]])))
                        .collect::<Result<String, _>>()
                        .ok()
                }
                Tag::UniversalString if data.len() % 4 == 0 => data
                    .chunks(4)
                    .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                    .collect::<Option<String>>(),
                _ => None,
            };
            match text {
                Some(text) => escape_value(&text, &mut out),
                None => {
                    out.push('#');
                    out.push_str(&super::hex_upper(&any.to_der_vec().unwrap_or_default()));
                }
            }
        }
    }
    out
}

/// Whether `text`, a distinguished name as a service writes it of another certificate (DPS's
/// `issuerName` and `subjectName`: `CN=Root, O=Example`), names the subject (`issuer` false) or
/// the issuer (`issuer` true) of the DER certificate `der`. The certificate's name is read from
/// its DER; both are compared RDN by RDN after RFC 4514 unescaping, with attribute types by
/// their short names (`S` and `ST`, `E` and `emailAddress` alike) and values as X.500's
/// caseIgnoreMatch compares strings (case and runs of spaces ignored), in the certificate's
/// order or reversed (.NET, behind DPS, lists the most specific RDN first). False when `der`
/// does not parse.
pub fn dn_names(text: &str, der: &[u8], issuer: bool) -> bool {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return false;
    };
    let name = if issuer { cert.issuer() } else { cert.subject() };
    let ours = dn_parts(&name_text(name));
    let theirs = dn_parts(text);
    if ours.is_empty() || theirs.is_empty() {
        return false;
    }
    let mut reversed = theirs.clone();
    reversed.reverse();
    ours == theirs || ours == reversed
}

/// The RDNs of a distinguished name's text, each normalised for [`dn_names`]: `TYPE=value`
/// with the type's short name upper-cased and the value unescaped, trimmed, its runs of spaces
/// made one and lower-cased; the attributes of a multi-valued RDN sorted.
fn dn_parts(text: &str) -> Vec<String> {
    let mut rdns: Vec<Vec<String>> = vec![Vec::new()];
    let mut current = String::new();
    let mut chars = text.chars().peekable();
    let push = |current: &mut String, rdns: &mut Vec<Vec<String>>| {
        let part = std::mem::take(current);
        if let Some(last) = rdns.last_mut() {
            last.push(part);
        }
    };
    while let Some(c) = chars.next() {
        match c {
            // A `\` and two hex digits is one escaped octet; anything else escaped is itself.
            '\\' => {
                let hex: String = chars.clone().take(2).collect();
                match (hex.len() == 2)
                    .then(|| u8::from_str_radix(&hex, 16).ok())
                    .flatten()
                {
                    Some(b) => {
                        chars.next();
                        chars.next();
                        current.push(char::from(b));
                    }
                    None => {
                        if let Some(next) = chars.next() {
                            current.push(next);
                        }
                    }
                }
            }
            ',' | ';' => {
                push(&mut current, &mut rdns);
                rdns.push(Vec::new());
            }
            '+' => push(&mut current, &mut rdns),
            c => current.push(c),
        }
    }
    push(&mut current, &mut rdns);
    rdns.into_iter()
        .map(|attrs| {
            let mut attrs: Vec<String> = attrs
                .iter()
                .filter_map(|a| {
                    let (key, value) = a.split_once('=')?;
                    let key = key.trim().to_ascii_uppercase();
                    let key = match key.trim_start_matches("OID.") {
                        "S" => "ST".to_string(),
                        "E" | "EMAIL" => "EMAILADDRESS".to_string(),
                        other => NAME_KEYS
                            .iter()
                            .find(|(oid, _)| *oid == other)
                            .map_or_else(|| other.to_string(), |(_, k)| k.to_ascii_uppercase()),
                    };
                    let value = value
                        .trim()
                        .trim_matches('"')
                        .split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" ")
                        .to_lowercase();
                    Some(format!("{key}={value}"))
                })
                .collect();
            attrs.sort();
            attrs.join("+")
        })
        .filter(|rdn| !rdn.is_empty())
        .collect()
}

/// RFC 4514 section 2.4 escaping of one attribute value.
fn escape_value(value: &str, out: &mut String) {
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            ',' | '+' | '"' | '\\' | '<' | '>' | ';' => {
                out.push('\\');
                out.push(c);
            }
            '#' | ' ' if i == 0 => {
                out.push('\\');
                out.push(c);
            }
            ' ' if i == last => out.push_str("\\ "),
            c if c.is_control() => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\{b:02X}"));
                }
            }
            c => out.push(c),
        }
    }
}

/// A serial number as `openssl x509 -serial` shows it, from its DER content octets: uppercase
/// hex of the value's magnitude without the sign-padding octet, and a leading `-` when the
/// (two's complement) integer is negative, as some old CAs wrote them.
pub fn serial_display(content: &[u8]) -> String {
    let negative = content.first().is_some_and(|b| b & 0x80 != 0);
    let mut magnitude = content.to_vec();
    if negative {
        // Two's complement: invert and add one.
        for b in magnitude.iter_mut() {
            *b = !*b;
        }
        for b in magnitude.iter_mut().rev() {
            let (sum, carry) = b.overflowing_add(1);
            *b = sum;
            if !carry {
                break;
            }
        }
    }
    let first = magnitude.iter().position(|&b| b != 0).unwrap_or(magnitude.len());
    let digits = match &magnitude[first..] {
        [] => "00".to_string(),
        rest => super::hex_upper(rest),
    };
    if negative { format!("-{digits}") } else { digits }
}

/// [`serial_display`] of a serial held as uppercase hex content octets (as [`CertInfo`] holds it).
pub fn serial_display_hex(hex: &str) -> String {
    let bytes: Option<Vec<u8>> = (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
        .collect();
    match bytes {
        Some(b) if hex.len().is_multiple_of(2) => serial_display(&b),
        _ => hex.to_string(),
    }
}

fn serialize_serial<S: serde::Serializer>(hex: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&serial_display_hex(hex))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4514 section 2.4, as openssl's `-nameopt RFC2253` escapes values.
    #[test]
    fn values_are_escaped_per_rfc_4514() {
        let escaped = |v: &str| {
            let mut out = String::new();
            escape_value(v, &mut out);
            out
        };
        assert_eq!(escaped("x+y"), r"x\+y");
        assert_eq!(escaped("Acme, Inc."), r"Acme\, Inc.");
        assert_eq!(escaped(r#"a"b<c>d;e\f"#), r#"a\"b\<c\>d\;e\\f"#);
        assert_eq!(escaped("#tag"), r"\#tag");
        assert_eq!(escaped("a#b"), "a#b");
        assert_eq!(escaped(" lead and trail "), r"\ lead and trail\ ");
        assert_eq!(escaped("a\nb"), r"a\0Ab");
        assert_eq!(escaped("Zürich"), "Zürich");
    }

    /// A self-signed certificate (EC P-256, valid for a day from now) of `subject` with `usage`.
    fn self_signed(subject: crate::pki::spec::Subject, usage: crate::pki::spec::KeyUsage) -> Vec<u8> {
        let key = crate::pki::PrivateKey::generate(&crate::pki::spec::KeySpec::Ec {
            curve: crate::pki::spec::Curve::P256,
            hsm: false,
        })
        .unwrap();
        let now = time::OffsetDateTime::now_utc();
        crate::pki::sign_self(
            &crate::pki::CertProfile {
                subject,
                dns_names: Vec::new(),
                key_usage: vec![usage],
                extended_key_usage: Vec::new(),
                not_before: now,
                not_after: now + time::Duration::days(1),
                ca: None,
            },
            &key,
        )
        .unwrap()
    }

    /// A certroll-written subject shows as certroll writes it, so that it parses back.
    #[test]
    fn a_subject_certroll_writes_shows_as_its_text() {
        let subject = crate::pki::spec::Subject::parse(r"CN=a\, b, O=x\+y, C=DE").unwrap();
        let der = self_signed(subject.clone(), crate::pki::spec::KeyUsage::DigitalSignature);
        let info = CertInfo::from_der(&der).unwrap();
        assert_eq!(info.subject, subject.to_string());
        assert_eq!(crate::pki::spec::Subject::parse(&info.subject).unwrap(), subject);
    }

    /// A service's text of a name matches the certificate's name as DPS (.NET) or openssl may
    /// write it, and only that name: a CA of another hierarchy with one attribute more or a
    /// different value does not.
    #[test]
    fn a_services_name_text_matches_the_certificates_name_in_either_order() {
        let subject = crate::pki::spec::Subject::parse(r"CN=Plant  Root\, East, O=Example, C=DE").unwrap();
        let der = self_signed(subject, crate::pki::spec::KeyUsage::KeyCertSign);
        for text in [
            r"CN=Plant  Root\, East, O=Example, C=DE",
            r"cn=plant root\2C east,o=EXAMPLE,c=de",
            r"C=DE, O=Example, CN=Plant Root\, East",
            r#"C=DE; O=Example; CN="Plant Root\, East""#,
        ] {
            assert!(dn_names(text, &der, false), "{text}");
            assert!(dn_names(text, &der, true), "self-signed: {text}");
        }
        for text in [
            r"CN=Plant Root, O=Example, C=DE",
            r"CN=Plant Root\, East, O=Example",
            r"CN=Plant Root\, East, O=Example, C=DE, OU=x",
            r"O=Example, CN=Plant Root\, East, C=DE",
            "",
        ] {
            assert!(!dn_names(text, &der, false), "{text}");
        }
        assert!(!dn_names("CN=x", b"not a certificate", false));
    }

    #[test]
    fn serials_show_as_openssl_shows_them() {
        assert_eq!(serial_display(&[0x01, 0x02]), "0102");
        assert_eq!(serial_display(&[0x00, 0x9A]), "9A");
        assert_eq!(serial_display(&[0xFF]), "-01");
        assert_eq!(serial_display(&[0xFE, 0xDC]), "-0124");
        assert_eq!(serial_display(&[0x80]), "-80");
        assert_eq!(serial_display(&[0x00]), "00");
        assert_eq!(serial_display_hex("00FF"), "FF");
    }
}
