//! Fuzzes `Subject::parse` and the other plan value parsers (key usage, EKU, curve). A subject
//! that parses must print as text that parses back to the same subject.
#![no_main]

use certroll::pki::spec::{Curve, ExtendedKeyUsage, KeyUsage, Subject};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(s) = Subject::parse(text) {
        let shown = s.to_string();
        assert_eq!(
            Subject::parse(&shown).as_ref(),
            Ok(&s),
            "`{text}` parsed, printed as `{shown}`, which does not parse back"
        );
        assert!(s.cn().is_some());
    }
    let _ = KeyUsage::parse(text);
    if let Some(eku) = ExtendedKeyUsage::parse(text) {
        let _ = eku.oid();
    }
    let _ = Curve::parse(text);
});
