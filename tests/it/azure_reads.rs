//! Reads a verb should not make on azure (issue 12 item 6), counted from serve's access log:
//! `status` reads each hub identity and each individual enrollment once, `status` and `check`
//! after a roll read the version a device presented rather than every version again with the
//! name's policy, and a hook delivery builds its PFX without reading back the key this run
//! imported.

use crate::azure_requests::{
    REVOKE, REVOKED, assert_nothing_left_to_revoke, count, during, group_device_requests, group_of,
    request_of, vault_requests, with_enrollments,
};
use crate::azure_verbs::{fleet_ok, fleet_plans_hook, issued_fleet, run_fleet, start_serve};
use crate::util::TestEnv;

/// The Key Vault requests of a group device's certificate (`m-N`) among `lines`.
fn group_device_vault(lines: &[String]) -> usize {
    group_device_requests(&vault_requests(lines))
}

/// `status` of 20 group devices and 3 individual enrollments reads the hub once (one registry
/// query for the page; measured before: two, one for the registration's thumbprint and one for
/// the identity), each enrollment once and each enrollment's registration state once (before:
/// each enrollment read twice; DPS's enrollment query carries no registration state,
/// Azure/azure-iot-sdk-csharp#3478, so each is one GET of the registration), and no device
/// certificate's policy (before: one per enrollment, for key facts the newest version's read
/// carried). After a roll of the group, `status` and `check` read of each device's certificate
/// its newest version, its listing and the version it presented (before: every version again
/// and the policy, 5 Key Vault requests a device), and answer as before.
#[test]
fn status_reads_each_identity_and_enrollment_once_and_after_a_roll_only_the_presented_version() {
    const N: usize = 20;
    const E: usize = 3;
    let env = TestEnv::new();
    let fleet = with_enrollments(N, E);
    let serve = issued_fleet(&env, &fleet);
    let ok = |args: &[&str]| fleet_ok(&env, &serve, args).json();
    let mut status = serde_json::Value::Null;
    let lines = during(&env, || status = ok(&["status", "-o", "json"]));
    let hub = count(&lines, ".azure-devices.net/devices");
    let enrollment_gets: Vec<usize> = (1..=E)
        .map(|i| {
            count(
                &lines,
                &format!("GET certroll-dps.azure-devices-provisioning.net/enrollments/gw-{i}"),
            )
        })
        .collect();
    let registration_gets = count(&lines, "azure-devices-provisioning.net/registrations/gw-");
    let policies = count(&lines, ".vault.azure.net/certificates/dev-");
    let device_policies = lines
        .iter()
        .map(|l| request_of(l))
        .filter(|r| r.contains("/certificates/dev-") && r.ends_with("/policy"))
        .count();
    eprintln!(
        "status: {} requests, {hub} of the hub, enrollment GETs {enrollment_gets:?}, {registration_gets} \
         registration GETs of an enrollment's device, {device_policies} device policy reads ({policies} \
         Key Vault requests of a device certificate)",
        lines.len()
    );
    assert!(hub <= 1, "status read the hub {hub} times for {} devices", N + E);
    // The enrollments' query read them for the report's head; the devices' page takes those.
    assert!(
        enrollment_gets.iter().all(|&n| n == 0),
        "an individual enrollment was read again by GET: {enrollment_gets:?}"
    );
    assert_eq!(
        registration_gets, E,
        "each enrollment's device's registration state is read once, by GET"
    );
    assert_eq!(device_policies, 0, "a device certificate's policy was read");
    // The answer is what it was: every device assigned, presenting the certificate it was issued.
    let devices = status["devices"].as_array().cloned().unwrap_or_default();
    assert_eq!(devices.len(), N + E, "{status}");
    for d in &devices {
        assert_eq!(d["registration"]["status"], "assigned", "{d}");
        assert_eq!(
            d["registration"]["cert_thumbprint"], d["installed"]["thumbprint"],
            "{d}"
        );
        assert_eq!(
            d["hub_identity"]["primary_thumbprint"], d["installed"]["thumbprint"],
            "{d}"
        );
        assert!(d["pending"].is_null(), "{d}");
    }

    // A roll of the group puts a new version in the vault; the devices got it through the
    // hook and registered with it, the old one stays listed.
    ok(&["roll-secondary", "group:meters", "-o", "json"]);
    let mut status = serde_json::Value::Null;
    let lines = during(&env, || status = ok(&["status", "-o", "json"]));
    let per_device = group_device_vault(&lines);
    eprintln!(
        "status after the roll: {} requests, {per_device} Key Vault requests of a group device's certificate",
        lines.len()
    );
    for (k, n) in vault_requests(&lines) {
        eprintln!("  {n:5} {k}");
    }
    assert!(
        per_device <= 3 * N,
        "status after a roll made {per_device} Key Vault requests for {N} group devices' certificates"
    );
    let devices = status["devices"].as_array().cloned().unwrap_or_default();
    assert_eq!(devices.len(), N + E, "{status}");
    for d in devices.iter().filter(|d| d["group"] == "meters") {
        assert_eq!(
            d["registration"]["cert_thumbprint"], d["installed"]["thumbprint"],
            "{d}"
        );
        assert!(d["installed"]["thumbprint"].is_string(), "{d}");
        // A new version not presented yet is the one the roll put beside it in the hub.
        if !d["pending"].is_null() {
            assert_eq!(
                d["pending"]["cert"]["thumbprint"], d["hub_identity"]["secondary_thumbprint"],
                "{d}"
            );
        }
    }
    let mut report = serde_json::Value::Null;
    let lines = during(&env, || report = ok(&["check", "-o", "json"]));
    let per_device = group_device_vault(&lines);
    eprintln!(
        "check after the roll: {} requests, {per_device} Key Vault requests of a group device's certificate",
        lines.len()
    );
    assert_eq!(report["status"], "ok", "{report}");
    assert!(
        per_device <= 3 * N,
        "check after a roll made {per_device} Key Vault requests for {N} group devices' certificates"
    );
}

/// `issue` of 20 group devices and 3 enrollments delivering through a hook: each PFX is built
/// from the key this run imported, not read back from the vault's secret (measured before: one
/// secret read per device), and the CA chain is read once a run, not per device; the hook's
/// PFX still works (each device registers with it and DPS assigns it).
#[test]
fn a_hook_delivery_reads_neither_the_key_it_just_imported_nor_the_chain_per_device() {
    const N: usize = 20;
    const E: usize = 3;
    let env = TestEnv::new();
    let fleet = with_enrollments(N, E);
    let serve = start_serve(&env, &fleet);
    fleet_plans_hook(&env, &serve, &fleet);
    let mut report = serde_json::Value::Null;
    let lines = during(&env, || {
        let r = run_fleet(&env, &serve, "azure", &["issue", "-o", "json"]);
        assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
        report = r.json();
    });
    let device_secrets = count(&lines, ".vault.azure.net/secrets/dev-");
    let ca_reads =
        count(&lines, ".vault.azure.net/certificates/ca-") + count(&lines, ".vault.azure.net/secrets/ca-");
    for (k, n) in vault_requests(&lines).iter().filter(|(k, _)| k.contains("/ca-")) {
        eprintln!("  {n:5} {k}");
    }
    // The chain is the CAs' versions by id.
    let chain_reads = vault_requests(&lines)
        .iter()
        .filter(|(k, _)| k.starts_with("GET ") && k.contains("/certificates/ca-") && k.ends_with("/VERSION"))
        .map(|(_, n)| n)
        .sum::<usize>();
    eprintln!(
        "issue of {} devices through a hook: {} requests, {device_secrets} secret reads of a device, {ca_reads} \
         Key Vault requests of a CA, {chain_reads} of them a CA's version by id",
        N + E,
        lines.len()
    );
    assert!(
        report["rejected"].as_array().is_some_and(Vec::is_empty),
        "{report}"
    );
    assert_eq!(device_secrets, 0, "a device's key was read back from the vault");
    assert!(
        chain_reads <= 2 * 2,
        "the 2 CAs' versions were read {chain_reads} times for {} devices",
        N + E
    );
    let status = run_fleet(&env, &serve, "azure", &["status", "-o", "json"]).json();
    let devices = status["devices"].as_array().cloned().unwrap_or_default();
    assert_eq!(devices.len(), N + E, "{status}");
    for d in &devices {
        assert_eq!(d["registration"]["status"], "assigned", "{d}");
        assert_eq!(
            d["registration"]["cert_thumbprint"], d["installed"]["thumbprint"],
            "{d}"
        );
    }
}

/// `revoke` of 3 group devices and an enrollment disables each one's hub identity, found in
/// the hub its registration names by one registry query (no GET of the identity); run again
/// with nothing left to do, it reads each target once, for the preview that shows there is
/// nothing to do (measured before: three times, the confirmed run's preview and its step
/// reading again what the first preview had found revoked: 3 DPS enrollment GETs, 3
/// registration GETs, 3 hub queries and 3 identity GETs a target).
#[test]
fn a_revoke_finds_identities_by_query_and_its_rerun_reads_each_target_once() {
    const N: usize = 12;
    let env = TestEnv::new();
    let fleet = group_of(N);
    let serve = issued_fleet(&env, &fleet);
    let ok = |args: &[&str]| fleet_ok(&env, &serve, args).json();
    let targets = REVOKED;
    let lines = during(&env, || {
        ok(&REVOKE);
    });
    let identity_gets = count(&lines, "GET conf-hub.azure-devices.net/devices/");
    eprintln!(
        "revoke of {} targets: {} requests, {identity_gets} hub identity GETs",
        targets.len(),
        lines.len()
    );
    assert_eq!(identity_gets, 0, "an identity was read by GET");
    let status = ok(&["status", "-o", "json"]);
    for id in targets {
        let d = crate::azure_verbs2::device(&status, id);
        assert_eq!(d["hub_identity"]["status"], "disabled", "{d}");
    }
    let untouched = crate::azure_verbs2::device(&status, "m-06");
    assert_eq!(untouched["hub_identity"]["status"], "enabled", "{untouched}");

    let mut report = serde_json::Value::Null;
    let lines = during(&env, || report = ok(&REVOKE));
    let per_target = |part: &str| -> Vec<usize> {
        targets
            .iter()
            .map(|id| {
                lines
                    .iter()
                    .map(|l| request_of(l))
                    .filter(|r| {
                        r.contains(part)
                            && r.split('?')
                                .next()
                                .unwrap_or_default()
                                .ends_with(&format!("/{id}"))
                    })
                    .count()
            })
            .collect()
    };
    let enrollment_gets = per_target("GET certroll-dps.azure-devices-provisioning.net/enrollments/");
    let registration_gets = per_target("GET certroll-dps.azure-devices-provisioning.net/registrations/");
    let hub_queries = count(&lines, "POST conf-hub.azure-devices.net/devices/query");
    let identity_gets = count(&lines, "GET conf-hub.azure-devices.net/devices/");
    eprintln!(
        "revoke again: {} requests; per target {targets:?}: enrollment GETs {enrollment_gets:?}, registration GETs \
         {registration_gets:?}; {hub_queries} hub queries, {identity_gets} identity GETs",
        lines.len()
    );
    assert_nothing_left_to_revoke(&report);
    assert!(enrollment_gets.iter().all(|&n| n <= 1), "{enrollment_gets:?}");
    assert!(registration_gets.iter().all(|&n| n <= 1), "{registration_gets:?}");
    assert!(hub_queries <= targets.len(), "{hub_queries} hub queries");
    assert_eq!(identity_gets, 0, "an identity was read by GET");
}

/// Measurement (trial az4 on 200 devices: a no-op `issue` took 26 s, a no-op rerun of a
/// revoke read all 200 devices): 200 group devices and 10 enrollments on a serve whose DPS and
/// Key Vault answer 3 ms late; prints the requests per host and the time of a no-op `issue`
/// and of a no-op rerun of a revoke of 16 devices, and checks that the rerun reads only its
/// targets, each once. Run with `cargo test --test it -- --ignored --nocapture
/// azure_reads::measure_no_op_reruns_on_200_devices` (about 10 minutes).
#[test]
#[ignore = "measurement: 200 devices issued through a hook, about 10 minutes"]
fn measure_no_op_reruns_on_200_devices() {
    const N: usize = 200;
    let env = TestEnv::new();
    let fleet = with_enrollments(N, 10);
    let serve = start_serve(
        &env,
        &format!("{fleet}[serve.services.dps]\ndelay_ms = 3\n[serve.services.keyvault]\ndelay_ms = 3\n"),
    );
    fleet_plans_hook(&env, &serve, &fleet);
    let timed = |what: &str, args: &[&str]| -> Vec<String> {
        let t = std::time::Instant::now();
        let lines = during(&env, || {
            let r = run_fleet(&env, &serve, "azure", args);
            assert_eq!(r.code, 0, "{args:?}\n{}\n{}", r.stdout, r.stderr);
        });
        let mut hosts = std::collections::BTreeMap::<String, usize>::new();
        for l in &lines {
            let host = request_of(l)
                .split(' ')
                .nth(1)
                .unwrap_or_default()
                .split('/')
                .next()
                .unwrap_or_default();
            *hosts.entry(host.to_string()).or_default() += 1;
        }
        eprintln!(
            "{what}: {:.1} s, {} requests: {hosts:?}",
            t.elapsed().as_secs_f64(),
            lines.len()
        );
        lines
    };
    timed("issue", &["issue", "-o", "json"]);
    timed("issue again", &["issue", "-o", "json"]);
    let targets: Vec<String> = (1..=16).map(|i| format!("device:m-{i:03}")).collect();
    let mut revoke: Vec<&str> = vec!["revoke"];
    revoke.extend(targets.iter().map(String::as_str));
    revoke.extend(["--reason", "superseded", "--yes", "-o", "json"]);
    timed("revoke of 16", &revoke);
    let lines = timed("revoke of 16 again", &revoke);
    let devices: std::collections::BTreeSet<&str> = lines
        .iter()
        .map(|l| request_of(l))
        .filter(|r| r.contains("azure-devices-provisioning.net/enrollments/m-"))
        .filter_map(|r| r.rsplit('/').next())
        .collect();
    let enrollment_gets = count(&lines, "azure-devices-provisioning.net/enrollments/m-");
    assert!(
        devices.len() <= 16,
        "the rerun read other devices' enrollments: {devices:?}"
    );
    assert!(
        enrollment_gets <= 16,
        "{enrollment_gets} enrollment reads for 16 targets"
    );
}

/// A roll of a group whose devices were issued with `delivery = "none"` (the operator has not
/// handed most certificates out, so those devices never registered) reads no registration state
/// of a device the group's listing lacks: its enrollment read found it has no enrollment of its
/// own, so no enrollment of the service assigned it (measured before: one DPS GET per such
/// device, 260 of trial az5's 300 at DPS's rate, the roll's bound). The device that did register
/// (the operator handed it its certificate) is found through the listing: the roll puts its new
/// thumbprint beside the old in its hub identity, as for a device of a delivered fleet.
#[test]
fn a_roll_reads_no_registration_of_a_group_device_no_enrollment_assigned() {
    const N: usize = 12;
    let env = TestEnv::new();
    let fleet = group_of(N);
    let serve = start_serve(&env, &fleet);
    crate::azure_verbs::fleet_plans_with(&env, &serve, &fleet, "delivery = \"none\"\n");
    fleet_ok(&env, &serve, &["issue", "-o", "json"]);
    // The operator hands m-01 its certificate, and it registers.
    register_by_hand(&env, &serve, "m-01");
    let mut report = serde_json::Value::Null;
    let lines = during(&env, || {
        report = fleet_ok(&env, &serve, &["roll-secondary", "group:meters", "-o", "json"]).json()
    });
    let gets = count(
        &lines,
        &format!("GET {}/registrations/m-", crate::conformance::azure::DPS_HOST),
    );
    let listings = count(&lines, "/registrations/meters/query");
    eprintln!(
        "roll-secondary of {N} group devices, 1 registered: {} requests, {gets} registration GETs, {listings} group listings",
        lines.len()
    );
    assert_eq!(
        gets, 0,
        "the roll read registration states of devices no enrollment assigned"
    );
    assert!(listings >= 1, "the group's registrations were listed");
    let devices = report["devices"].as_array().cloned().unwrap_or_default();
    assert_eq!(devices.len(), N, "{report}");
    assert!(devices.iter().all(|d| d["outcome"] == "rolled"), "{report}");
    let status = fleet_ok(&env, &serve, &["status", "-o", "json"]).json();
    for d in status["devices"].as_array().into_iter().flatten() {
        if d["group"] != "meters" {
            continue;
        }
        if d["id"] == "m-01" {
            assert_eq!(d["registration"]["status"], "assigned", "{d}");
            assert!(d["pending"]["cert"]["thumbprint"].is_string(), "{d}");
            assert_eq!(
                d["hub_identity"]["secondary_thumbprint"], d["pending"]["cert"]["thumbprint"],
                "the roll put m-01's new thumbprint into its hub identity: {d}"
            );
        } else {
            assert!(d["registration"].is_null(), "{d}");
            assert!(d["hub_identity"].is_null(), "{d}");
        }
    }
}

/// The operator hands group device `id` its certificate (`export --with-key`) and the device
/// registers with it through DPS's device API (curl, mutual TLS). Returns the SHA-1 thumbprint of
/// the certificate it presented.
fn register_by_hand(env: &TestEnv, serve: &crate::conformance::azure::Serve, id: &str) -> String {
    let file = env.path(&format!("{id}.pem"));
    fleet_ok(
        env,
        serve,
        &[
            "export",
            &format!("device:{id}"),
            "--with-key",
            "--out",
            file.to_str().unwrap(),
        ],
    );
    let port = serve.port();
    let url = format!(
        "https://global.azure-devices-provisioning.net:{port}/{}/registrations/{id}/register?api-version=2021-06-01",
        serve.start["id_scope"].as_str().unwrap()
    );
    let out = std::process::Command::new("curl")
        .args(["-sS", "--fail-with-body", "--cacert"])
        .arg(env.path("ca.pem"))
        .arg("--cert")
        .arg(&file)
        .arg("--key")
        .arg(&file)
        .arg("--resolve")
        .arg(format!("global.azure-devices-provisioning.net:{port}:127.0.0.1"))
        .args(["-X", "PUT", "-H", "Content-Type: application/json"])
        .args(["--data", &format!(r#"{{"registrationId": "{id}"}}"#)])
        .arg(&url)
        .output()
        .expect("curl runs");
    assert!(
        out.status.success(),
        "{id} registers: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&file).unwrap();
    let cert = pem::parse_many(text)
        .unwrap()
        .into_iter()
        .find(|p| p.tag() == "CERTIFICATE")
        .expect("the export holds the device certificate");
    certroll::pki::sha1_thumbprint(cert.contents())
}

/// A roll in the very second a device registered (`m-1` of two) leaves it holding the certificate it registered
/// with: `status` shows that one installed and the roll's one pending (in the hub's secondary
/// slot), not the roll's one installed. Serve's clock is stopped, so DPS's assignment and Key
/// Vault's new version share their (whole-second) time; before, the new version in the hub's
/// secondary slot passed for presented (one run in six of the test above, CI run 27).
#[test]
fn a_roll_in_the_second_a_device_registered_leaves_the_new_certificate_pending() {
    let env = TestEnv::new();
    let fleet = group_of(2);
    let now = certroll::clock::rfc3339(time::OffsetDateTime::now_utc());
    let serve = crate::azure_verbs::start_serve_at(&env, &fleet, &now);
    crate::azure_verbs::fleet_plans_with(&env, &serve, &fleet, "delivery = \"none\"\n");
    fleet_ok(&env, &serve, &["issue", "-o", "json"]);
    let registered = register_by_hand(&env, &serve, "m-1");
    fleet_ok(&env, &serve, &["roll-secondary", "group:meters", "-o", "json"]);
    let status = fleet_ok(&env, &serve, &["status", "-o", "json"]).json();
    let d = status["devices"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| d["id"] == "m-1")
        .cloned()
        .unwrap_or_default();
    assert_eq!(d["registration"]["status"], "assigned", "{d}");
    assert_eq!(d["installed"]["thumbprint"], registered.as_str(), "{d}");
    assert_eq!(d["registration"]["cert_thumbprint"], registered.as_str(), "{d}");
    let pending = d["pending"]["cert"]["thumbprint"].as_str().unwrap_or_default();
    assert!(!pending.is_empty() && pending != registered, "{d}");
    assert_eq!(d["hub_identity"]["secondary_thumbprint"], pending, "{d}");
}
