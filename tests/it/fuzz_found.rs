//! What the fuzzers (fuzz/, issue 9 item 13) and the proptest properties found, one regression
//! test per finding.

use certroll::pki::spec::Subject;

/// Found by the `subject` property: a value holding `;` or `\` (written `\;`, `\\` in a plan)
/// was printed unescaped, so the subject certroll shows did not parse back (`CN=a;b` is two
/// attributes, the second without `=`) or parsed to another subject (`CN=a\b` is `CN=ab`).
#[test]
fn a_printed_subject_parses_back_with_semicolons_and_backslashes() {
    for text in [r"CN=a\;b, O=x", r"CN=a\\b", r"CN=x\\, O=y\,z\;w"] {
        let s = Subject::parse(text).unwrap();
        let shown = s.to_string();
        assert_eq!(Subject::parse(&shown), Ok(s), "`{text}` printed as `{shown}`");
    }
    assert_eq!(Subject::parse(r"CN=a\;b").unwrap().to_string(), r"CN=a\;b");
}

/// Found by the `subject` fuzz target (a 1,032-byte input, 858,302 executions in): the 1,024
/// character limit was checked on the text as written, but certroll prints `S=` as `ST=` and
/// `;` as `, `, so a subject within the limit was shown as text over it, which `validate` then
/// refused. The limit now holds for the subject as written out.
#[test]
fn a_subject_within_the_limit_prints_within_it() {
    // The input it found repeated `S=` (printed `ST=`): 1,024 characters typed, 1,534 printed.
    let text = format!("CN=x{}", ";S=a".repeat(255));
    assert_eq!(text.chars().count(), 1024);
    assert!(Subject::parse(&text).is_err());
    // The longest subject there can be (every attribute, 64 escaped characters each) prints
    // within the limit and parses back.
    let v = ",".repeat(64);
    let text = format!(r"CN={v}, O={v}, OU={v}, ST={v}, L={v}, C=KR").replace(',', r"\,");
    let text = text.replace(r"\, ", ", ");
    let s = Subject::parse(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert!(s.to_string().chars().count() <= 1024);
    assert_eq!(Subject::parse(&s.to_string()), Ok(s));
}

/// Found by the `san` fuzz target (219,210 executions in): `validate` accepted a `dns_names`
/// entry that is not ASCII (`v[paœ`), which a certificate cannot hold (a dNSName is an
/// IA5String, RFC 5280 4.2.1.6), so `issue` would have failed half-way. Refused at validation,
/// at the entry's line and column.
#[test]
fn a_dns_name_that_is_not_ascii_is_refused_at_validation() {
    let dir = tempfile::tempdir().unwrap();
    let text = "version = 1\n\
                [policies.p]\n\
                key = { type = \"EC\", curve = \"P-256\" }\n\
                validity_days = 30\n\
                key_usage = [\"keyCertSign\", \"cRLSign\"]\n\
                dns_names = [\"ok.example\", \"v[paœ\", \"bücher.example\"]\n\
                [ca.root]\n\
                subject = \"CN=root\"\n\
                policy = \"p\"\n";
    let err = certroll::plan::parse(&dir.path().join("certroll.toml"), text).unwrap_err();
    assert_eq!((err.line, err.column), (Some(6), Some(28)), "{err}");
    assert!(err.message.contains("`v[paœ` is not ASCII"), "{err}");
    assert!(err.message.contains("xn--"), "{err}");
    let ok = text.replace(
        "\"v[paœ\", \"bücher.example\"",
        "\"xn--bcher-kva.example\", \"10.0.0.1\"",
    );
    certroll::plan::parse(&dir.path().join("certroll.toml"), &ok).unwrap();
}

/// Found by the `san` fuzz target (563,423 executions into its second run): a subject with an
/// attribute type twice (`CN=a, CN=b`, `OU=x, OU=y`) validated, but the certificate held only
/// the last value (rcgen keeps one per type) while certroll took the first as the CN. Refused.
#[test]
fn a_subject_with_a_repeated_attribute_is_refused() {
    for text in ["CN=a, CN=b", "CN=a, OU=x, OU=y", "CN=a, S=x, ST=y"] {
        let err = Subject::parse(text).unwrap_err();
        assert!(err.contains("appears twice"), "{text}: {err}");
    }
    assert!(Subject::parse("CN=a, O=x, OU=y, L=z, ST=w, C=KR").is_ok());
}
