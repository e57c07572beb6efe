//! Subject alternative names: the one validator for DNS names, IP addresses, e-mail addresses
//! and URIs (RFC 5280 section 4.2.1.6), used by the plan, every command-line flag that takes one,
//! and the certificate builder, so that what is accepted anywhere is accepted everywhere.
//!
//! The grammar checks are the well-kept crates' own: rustls-pki-types' `DnsName` (RFC 1034
//! preferred name syntax, 63-octet labels, 253-octet names, no all-numeric last label),
//! `std::net::IpAddr`, lettre's `Address` (the addresses the mailer sends to) and `url::Url`.

use std::fmt;
use std::net::IpAddr;

/// One subjectAltName entry, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum San {
    /// dNSName, e.g. `gw.example.com` or `*.example.com`.
    Dns(String),
    /// iPAddress, IPv4 or IPv6.
    Ip(IpAddr),
    /// rfc822Name, e.g. `pki@example.com`.
    Email(String),
    /// uniformResourceIdentifier, e.g. `spiffe://example.org/gw`.
    Uri(String),
}

impl fmt::Display for San {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            San::Dns(s) | San::Email(s) | San::Uri(s) => f.write_str(s),
            San::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

impl San {
    /// What a policy's `dns_names` and `--dns` take: an IP address, or a DNS name whose first
    /// label may be the wildcard `*`. The error says why, without the input's type prefix.
    ///
    /// Beyond the grammar: no `_` (the Baseline Requirements forbid it in dNSName since 2019,
    /// though some resolvers take it), and no wildcard over a single label (`*.com`; BR 3.2.2.6).
    /// A wildcard right of a multi-label public suffix (`*.co.uk`) would need the Public Suffix
    /// List, which certroll does not carry, and is accepted.
    pub fn dns_or_ip(text: &str) -> Result<San, String> {
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(San::Ip(ip));
        }
        // Dotted digits that do not parse as an address are a mistyped address, not a name.
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return Err(format!("`{text}` is not a valid IPv4 address"));
        }
        if !text.is_ascii() {
            // RFC 5280 4.2.1.6: a dNSName is an IA5String.
            return Err(format!(
                "`{text}` is not ASCII; write an internationalized name in its xn-- (A-label) form"
            ));
        }
        let name = text.strip_prefix("*.").unwrap_or(text);
        if text.contains('_') {
            return Err(format!(
                "`{text}` has a `_`, which a certificate's DNS name may not hold (RFC 5280 4.2.1.6 \
                 takes RFC 1034's preferred name syntax: letters, digits and `-`; the CA/Browser \
                 Forum Baseline Requirements forbid `_` in dNSName since 2019)"
            ));
        }
        if rustls_pki_types::DnsName::try_from(name).is_err() || text.ends_with('.') {
            return Err(format!(
                "`{text}` is not a DNS name or IP address (a DNS name is dot-separated labels of \
                 letters, digits and `-`, each at most 63 characters, not starting or ending \
                 with `-`; only the first label may be `*`)"
            ));
        }
        if name.len() != text.len() && !name.contains('.') {
            return Err(format!(
                "`{text}` is a wildcard directly under a top-level domain, which would match every \
                 name registered there (CA/Browser Forum Baseline Requirements 3.2.2.6: a wildcard \
                 may not stand right of a public suffix); put it under a domain, e.g. \
                 `*.example.{name}`"
            ));
        }
        Ok(San::Dns(text.to_string()))
    }

    /// An e-mail address (rfc822Name; also what contacts take).
    pub fn email(text: &str) -> Result<San, String> {
        let bad = || format!("`{text}` is not an e-mail address");
        let address: lettre::Address = text.parse().map_err(|_| bad())?;
        if !text.is_ascii() || San::dns_or_ip(address.domain()).is_err() {
            return Err(bad());
        }
        Ok(San::Email(text.to_string()))
    }

    /// An absolute URI with a scheme (uniformResourceIdentifier).
    pub fn uri(text: &str) -> Result<San, String> {
        let url = url::Url::parse(text).map_err(|e| format!("`{text}` is not a URI: {e}"))?;
        if !text.is_ascii()
            || text.chars().any(char::is_whitespace)
            || url.cannot_be_a_base() && url.path().is_empty()
        {
            return Err(format!("`{text}` is not a URI"));
        }
        Ok(San::Uri(text.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names_and_addresses() {
        assert_eq!(
            San::dns_or_ip("GW-1.Example.com").unwrap(),
            San::Dns("GW-1.Example.com".into())
        );
        assert_eq!(
            San::dns_or_ip("*.example.com").unwrap(),
            San::Dns("*.example.com".into())
        );
        assert!(matches!(San::dns_or_ip("192.0.2.1").unwrap(), San::Ip(_)));
        assert!(matches!(San::dns_or_ip("2001:db8::1").unwrap(), San::Ip(_)));
        for bad in [
            "bad name!",
            "a b",
            "",
            "-lead.example",
            "trail-.example",
            "a..b",
            "x.*.example",
            "*",
            "example.com.",
            &"a".repeat(64),
        ] {
            assert!(San::dns_or_ip(bad).is_err(), "{bad:?} was accepted");
        }
        // Issue 10 item 14: a wildcard over one label, and `_`, are refused with the reason.
        for (bad, why) in [
            ("*.com", "wildcard directly under a top-level domain"),
            ("*.localhost", "Baseline Requirements 3.2.2.6"),
            ("a.b_c.com", "`_`"),
            ("_srv.example.com", "Baseline Requirements forbid `_`"),
            ("*.x_y.com", "`_`"),
        ] {
            let e = San::dns_or_ip(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert!(San::dns_or_ip("*.example.com").is_ok());
        assert!(San::dns_or_ip("localhost").is_ok());
        assert!(San::email("pki@mail_host.example.com").is_err());
        assert!(
            San::dns_or_ip("192.0.2.300")
                .unwrap_err()
                .contains("not a valid IPv4 address")
        );
    }

    #[test]
    fn emails_and_uris() {
        assert!(San::email("pki@example.com").is_ok());
        for bad in [
            "pki",
            "@example.com",
            "pki@",
            "a b@example.com",
            "pki@bad name",
            "pki@a@b",
        ] {
            assert!(San::email(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(San::uri("spiffe://example.org/gw").is_ok());
        assert!(San::uri("urn:example:gw").is_ok());
        for bad in ["gw", "http://a b", "://x"] {
            assert!(San::uri(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
