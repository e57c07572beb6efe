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
