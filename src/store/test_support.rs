//! Test fixtures shared by the store's, the notifier's and the local backend's unit tests: a
//! vault version holding a real self-signed EC certificate and key.

use super::Store;
use crate::backend::types::NewVersion;
use crate::pki::spec::{Curve, KeySpec, Subject};
use time::OffsetDateTime;

/// A self-signed EC P-256 certificate (`CN=t`) valid `days` from `not_before`, and its key.
pub fn self_signed(not_before: OffsetDateTime, days: i64) -> (Vec<u8>, crate::pki::PrivateKey) {
    let key = crate::pki::PrivateKey::generate(&KeySpec::Ec {
        curve: Curve::P256,
        hsm: false,
    })
    .unwrap();
    let profile = crate::pki::CertProfile {
        subject: Subject::common_name("t"),
        dns_names: vec![],
        key_usage: vec![],
        extended_key_usage: vec![],
        not_before,
        not_after: not_before + time::Duration::days(days),
        ca: None,
    };
    (crate::pki::sign_self(&profile, &key).unwrap(), key)
}

/// Stores a new version of `name` with `policy_json`, valid `days` from `not_before`; returns
/// its version id (or why the store refused it).
pub fn insert_version(
    store: &mut Store,
    name: &str,
    policy_json: &str,
    not_before: OffsetDateTime,
    days: i64,
) -> Result<String, super::StoreError> {
    let (der, key) = self_signed(not_before, days);
    let new = NewVersion {
        name,
        policy_json,
        cert_der: &der,
        key_pkcs8: key.pkcs8_der(),
        kty: "EC",
        exportable: true,
        issuer: None,
        facts: None,
        new_key: false,
    };
    store.write(|conn, k| super::queries::vault_insert(conn, k, not_before, &new))
}
