//! The vault suite on the local store.

use certroll::backend::local::LocalBackend;
use certroll::store::{OpenOptions, Store};

/// A fresh local store in `dir`, open for writing.
pub fn fresh_store(dir: &std::path::Path) -> LocalBackend {
    LocalBackend::new(
        Store::open(&OpenOptions {
            path: dir.join("state.db"),
            key_file: None,
            create: true,
            write: true,
            lock_timeout: std::time::Duration::from_secs(5),
        })
        .unwrap(),
    )
}

#[test]
fn the_vault_suite_passes_on_the_local_store() {
    let dir = tempfile::tempdir().unwrap();
    let mut local = fresh_store(dir.path());
    super::suite(&mut local);
}

#[test]
fn the_enrollment_and_hub_suites_pass_on_the_local_store() {
    use certroll::backend::EnrollmentService;
    use certroll::backend::types::RegistrationRequest;
    let dir = tempfile::tempdir().unwrap();
    let mut local = fresh_store(dir.path());
    super::services::enrollment_suite(&mut local, "conf-hub");

    // The local hub's identities come from registrations, as DPS creates them.
    let devices = [
        super::self_signed("conf-hub-1", 30, false),
        super::self_signed("conf-hub-2", 30, false),
    ];
    let ids = ["conf-hub-1", "conf-hub-2"];
    let enrollments: Vec<_> = ids
        .iter()
        .zip(&devices)
        .map(|(id, d)| super::services::enrollment(id, d, "migrate", "conf-hub"))
        .collect();
    local.put_individuals(&enrollments, super::now()).unwrap();
    let requests: Vec<_> = ids
        .iter()
        .zip(&devices)
        .map(|(id, d)| RegistrationRequest {
            registration_id: id.to_string(),
            chain: vec![d.cert_der.clone()],
        })
        .collect();
    local.register(&requests, super::now()).unwrap();
    let tps = devices
        .each_ref()
        .map(|d| certroll::pki::sha1_thumbprint(&d.cert_der));
    super::services::hub_suite(&mut local, "conf-hub", ids, [&tps[0], &tps[1]]);
}
