//! Fuzzes what `vault merge` reads (`ops::vault::pending::parse_merge`): a PEM chain (leaf
//! first), one DER certificate, or anything else (PKCS#7 is refused with a message).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = certroll::ops::vault::pending::parse_merge("fuzz.pem", data) {
        // What merge then does with the leaf: compare its key with the pending one.
        let _ = certroll::pki::inspect::CertFacts::from_der(&m.leaf);
        let _ = certroll::pki::inspect::chain_names(&m.leaf);
    }
});
