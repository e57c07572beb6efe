//! One suite of vault behaviours, run against every backend: the local store (`local.rs`) and
//! Key Vault as `certroll serve` answers it through the official Rust SDK (`azure.rs`). A
//! behaviour that differs between them is a bug in one of them.
//!
//! The suite drives the `Vault` trait directly (it is public), so each backend gets the same
//! calls; the verbs on top of it are covered by their own tests.

pub(crate) mod azure;
mod local;
mod services;
// The `vault` subcommands through the binary, on local and on azure against serve.
mod vault_verbs;

use certroll::backend::Vault;
use certroll::backend::types::{IssuerConfig, NewVersion, Tags};
use time::OffsetDateTime;

/// A certificate and its key (PKCS#8), made with rcgen.
pub struct Made {
    pub cert_der: Vec<u8>,
    pub key_pkcs8: Vec<u8>,
}

/// A self-signed EC P-256 certificate with this CN, valid from an hour ago for `days`.
pub fn self_signed(cn: &str, days: i64, ca: bool) -> Made {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, cn);
    let now = OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(days);
    if ca {
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    }
    let cert = params.self_signed(&key).unwrap();
    Made {
        cert_der: cert.der().to_vec(),
        key_pkcs8: key.serialize_der(),
    }
}

/// A Key Vault-shaped policy, as certroll records one.
pub fn policy(subject: &str, exportable: bool, content_type: &str) -> String {
    serde_json::json!({
        "key_props": { "kty": "EC", "crv": "P-256", "exportable": exportable, "reuse_key": false },
        "secret_props": { "contentType": content_type },
        "x509_props": { "subject": subject, "validity_months": 12 },
        "issuer": { "name": "Self" },
    })
    .to_string()
}

fn new_version<'a>(
    name: &'a str,
    policy: &'a str,
    m: &'a Made,
    issuer: Option<(&'a str, &'a str)>,
) -> NewVersion<'a> {
    NewVersion {
        name,
        policy_json: policy,
        cert_der: &m.cert_der,
        key_pkcs8: &m.key_pkcs8,
        kty: "EC",
        exportable: true,
        issuer,
        facts: None,
        new_key: false,
    }
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// Every behaviour, in order, on a fresh vault.
pub fn suite(v: &mut dyn Vault) {
    an_absent_name_has_nothing(v);
    versions_round_trip_newest_last_with_their_issuer(v);
    a_disabled_version_reads_back_disabled(v);
    certificate_and_version_tags_are_separate(v);
    the_policy_reads_back_and_can_be_replaced(v);
    delete_recover_and_purge(v);
    contacts_are_set_and_removed(v);
    issuers_are_put_listed_and_deleted(v);
    names_page_in_name_order(v);
}

fn an_absent_name_has_nothing(v: &mut dyn Vault) {
    assert!(v.current("absent").unwrap().is_none());
    assert!(v.versions("absent").unwrap().is_empty());
    assert!(
        v.version("absent", "0123456789abcdef0123456789abcdef")
            .unwrap()
            .is_none()
    );
    assert_eq!(v.name_state("absent").unwrap(), None);
    assert!(v.tags("absent", None).unwrap().is_none());
}

fn versions_round_trip_newest_last_with_their_issuer(v: &mut dyn Vault) {
    let p = policy("CN=conf-root", true, "application/x-pem-file");
    let root = self_signed("conf-root", 3650, true);
    let ids = v
        .create_versions(&[new_version("conf-root", &p, &root, None)], now())
        .unwrap();
    assert_eq!(ids.len(), 1);
    let root_v = ids[0].clone();

    let lp = policy("CN=conf-leaf", true, "application/x-pkcs12");
    let (a, b) = (
        self_signed("conf-leaf", 30, false),
        self_signed("conf-leaf", 60, false),
    );
    let first = v
        .create_versions(
            &[new_version("conf-leaf", &lp, &a, Some(("conf-root", &root_v)))],
            now(),
        )
        .unwrap();
    // Key Vault's `created` has second precision: versions made in one second would tie.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let second = v
        .create_versions(
            &[new_version("conf-leaf", &lp, &b, Some(("conf-root", &root_v)))],
            now(),
        )
        .unwrap();

    let current = v.current("conf-leaf").unwrap().expect("conf-leaf exists");
    assert_eq!(current.version, second[0]);
    assert_eq!(current.cert_der, b.cert_der);
    assert_eq!(current.kty, "EC");
    assert!(current.exportable && current.enabled);
    assert_eq!(current.issuer, Some(("conf-root".to_string(), root_v.clone())));

    let all = v.versions("conf-leaf").unwrap();
    let ids: Vec<&str> = all.iter().map(|x| x.version.as_str()).collect();
    assert_eq!(ids, [first[0].as_str(), second[0].as_str()], "oldest first");
    let one = v.version("conf-leaf", &first[0]).unwrap().unwrap();
    assert_eq!(one.cert_der, a.cert_der);
    assert_eq!(one.issuer, Some(("conf-root".to_string(), root_v)));

    // The exportable key comes back as it went in (PFX content type).
    let key = v.private_key(&one).unwrap();
    assert_eq!(key.pkcs8_der(), a.key_pkcs8.as_slice());
    // ... and through a PEM secret.
    let root_version = v.current("conf-root").unwrap().unwrap();
    assert_eq!(
        v.private_key(&root_version).unwrap().pkcs8_der(),
        root.key_pkcs8.as_slice()
    );

    let many = v
        .current_many(&["conf-root".into(), "absent".into(), "conf-leaf".into()])
        .unwrap();
    assert_eq!(many.len(), 3);
    assert!(many[1].is_none());
    assert_eq!(many[2].as_ref().unwrap().version, second[0]);
    assert_eq!(v.name_state("conf-leaf").unwrap(), Some("live"));
}

fn a_disabled_version_reads_back_disabled(v: &mut dyn Vault) {
    let all = v.versions("conf-leaf").unwrap();
    v.set_enabled(&all[0], false, now()).unwrap();
    assert!(!v.version("conf-leaf", &all[0].version).unwrap().unwrap().enabled);
    assert!(v.version("conf-leaf", &all[1].version).unwrap().unwrap().enabled);
    v.set_enabled(&all[0], true, now()).unwrap();
    assert!(v.version("conf-leaf", &all[0].version).unwrap().unwrap().enabled);
}

fn certificate_and_version_tags_are_separate(v: &mut dyn Vault) {
    let all = v.versions("conf-leaf").unwrap();
    let cert_tags: Tags = [("owner".to_string(), "pki".to_string())].into();
    let version_tags: Tags = [("batch".to_string(), "7".to_string())].into();
    v.set_tags("conf-leaf", None, &cert_tags, now()).unwrap();
    v.set_tags("conf-leaf", Some(&all[0].version), &version_tags, now())
        .unwrap();
    assert_eq!(v.tags("conf-leaf", None).unwrap(), Some(cert_tags));
    assert_eq!(
        v.tags("conf-leaf", Some(&all[0].version)).unwrap(),
        Some(version_tags)
    );
    // Tags never lose the issuer certroll recorded.
    assert!(
        v.version("conf-leaf", &all[0].version)
            .unwrap()
            .unwrap()
            .issuer
            .is_some()
    );
}

fn the_policy_reads_back_and_can_be_replaced(v: &mut dyn Vault) {
    let p = v.policy("conf-leaf").unwrap().expect("a policy");
    assert_eq!(p["x509_props"]["subject"], "CN=conf-leaf");
    assert_eq!(p["key_props"]["kty"], "EC");
    assert_eq!(p["secret_props"]["contentType"], "application/x-pkcs12");
    let replaced = policy("CN=conf-leaf-2", true, "application/x-pkcs12");
    assert!(v.set_policy("conf-leaf", &replaced, now()).unwrap());
    assert_eq!(
        v.policy("conf-leaf").unwrap().unwrap()["x509_props"]["subject"],
        "CN=conf-leaf-2"
    );
    assert!(!v.set_policy("absent", &replaced, now()).unwrap());
    assert!(v.policy("absent").unwrap().is_none());
}

fn delete_recover_and_purge(v: &mut dyn Vault) {
    let later = now() + time::Duration::days(90);
    assert!(v.delete_certificate("conf-leaf", now(), later).unwrap());
    assert!(
        !v.delete_certificate("conf-leaf", now(), later).unwrap(),
        "already deleted"
    );
    assert_eq!(v.name_state("conf-leaf").unwrap(), Some("deleted"));
    assert!(v.current("conf-leaf").unwrap().is_none());
    let deleted = v.deleted_certificates(Some("conf-leaf")).unwrap();
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0].name, "conf-leaf");
    assert!(
        v.deleted_certificates(None)
            .unwrap()
            .iter()
            .any(|d| d.name == "conf-leaf")
    );

    assert!(v.recover_certificate("conf-leaf").unwrap());
    assert!(
        !v.recover_certificate("conf-leaf").unwrap(),
        "not deleted any more"
    );
    assert_eq!(
        v.versions("conf-leaf").unwrap().len(),
        2,
        "recovered with its versions"
    );

    assert!(v.delete_certificate("conf-leaf", now(), later).unwrap());
    assert!(v.purge_certificate("conf-leaf").unwrap());
    assert!(!v.purge_certificate("conf-leaf").unwrap());
    assert_eq!(v.name_state("conf-leaf").unwrap(), None);
}

fn contacts_are_set_and_removed(v: &mut dyn Vault) {
    let emails = vec!["a@example.com".to_string(), "b@example.com".to_string()];
    v.set_contacts(Some(&emails)).unwrap();
    assert_eq!(v.contacts().unwrap(), Some(emails));
    v.set_contacts(None).unwrap();
    assert_eq!(v.contacts().unwrap(), None);
}

fn issuers_are_put_listed_and_deleted(v: &mut dyn Vault) {
    let issuer = IssuerConfig {
        name: "digicert-prod".into(),
        provider: "DigiCert".into(),
        account_id: Some("acct-1".into()),
        enabled: true,
        created: now(),
        updated: now(),
    };
    v.put_issuer(&issuer, now()).unwrap();
    let listed = v.issuers().unwrap();
    let found = listed.iter().find(|i| i.name == "digicert-prod").expect("listed");
    assert_eq!(found.provider, "DigiCert");
    assert_eq!(found.account_id.as_deref(), Some("acct-1"));
    assert!(v.delete_issuer("digicert-prod").unwrap());
    assert!(!v.delete_issuer("digicert-prod").unwrap());
}

fn names_page_in_name_order(v: &mut dyn Vault) {
    let p = policy("CN=page", true, "application/x-pem-file");
    let made: Vec<Made> = (0..3)
        .map(|i| self_signed(&format!("page-{i}"), 30, false))
        .collect();
    let names: Vec<String> = (0..3).map(|i| format!("page-{i}")).collect();
    let batch: Vec<NewVersion<'_>> = names
        .iter()
        .zip(&made)
        .rev()
        .map(|(n, m)| new_version(n, &p, m, None))
        .collect();
    let ids = v.create_versions(&batch, now()).unwrap();
    assert_eq!(ids.len(), 3);
    assert!(ids.iter().all(|id| !id.is_empty()));
    // The ids come back in the order asked.
    assert_eq!(v.current("page-2").unwrap().unwrap().version, ids[0]);
    assert_eq!(v.names_page("page-0", 10).unwrap(), ["page-1", "page-2"]);
    assert_eq!(v.names_page("", 2).unwrap(), ["conf-root", "page-0"]);
}
