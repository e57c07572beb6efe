//! Fuzzes what `vault import` reads (`ops::vault::transfer::parse_import`): PEM with
//! certificates and a PKCS#8/SEC1/PKCS#1 key in any order, DER, or PKCS#12 with the password
//! `fuzz-password`; and, for what it accepts, the policy Key Vault would make from it.
#![no_main]

use certroll::ops::vault::transfer::{parse_import, policy_from_certificate};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = parse_import("fuzz.pem", data, Some("fuzz-password")) {
        assert!(m.leaf < m.certs.len());
        let _ = policy_from_certificate("fuzz", &m.certs[m.leaf], m.spec, true, m.content_type);
        let _ = certroll::ops::vault::transfer::is_self_signed(&m.certs[m.leaf]);
    }
});
