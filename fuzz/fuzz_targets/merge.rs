//! Fuzzes what `vault merge` reads (`ops::vault::pending::parse_merge`): a PEM chain, one DER
//! certificate, or a PKCS#7 bundle in PEM or DER.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(all) = certroll::ops::vault::pending::parse_merge("fuzz.pem", data) {
        // What merge then does with each certificate: compare its key with the pending one, and
        // order the rest as a chain.
        for c in &all {
            let _ = certroll::pki::inspect::CertFacts::from_der(c);
            let _ = certroll::pki::inspect::chain_names(c);
        }
    }
});
