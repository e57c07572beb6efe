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
    let text = format!("CN=x{}", ";S=a".repeat(255));
    assert_eq!(text.chars().count(), 1024);
    let err = Subject::parse(&text).unwrap_err();
    assert!(err.contains("1534 characters long written out"), "{err}");
    assert!(err.contains("at most 1024"), "{err}");
    // Just inside the limit when written out: accepted, and it parses back.
    let text = format!("CN=x{}", ";S=a".repeat(170));
    let s = Subject::parse(&text).unwrap();
    assert!(s.to_string().chars().count() <= 1024);
    assert_eq!(Subject::parse(&s.to_string()), Ok(s));
}
