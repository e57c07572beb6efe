//! What certroll issued, recorded beside the fleet record (store v15, issue 12): `check`,
//! `status` and an `issue` rerun with nothing to do decide from the record and one listing of
//! the vault instead of reading every device's newest certificate from Key Vault (one request a
//! device before), counted from serve's access log; a version another client made or disabled
//! is still seen, because the listing shows each name's newest version as Key Vault holds it.

use crate::azure_requests::{during, group_of, request_of, vault_requests};
use crate::azure_verbs::{fleet_ok, issued_fleet, key_vault_curl, run_fleet};
use crate::conformance::azure::Serve;
use crate::util::TestEnv;
use std::process::Command;

/// Group devices of the fleet (`m-1..=m-N`), beside enrollment `gw-1`.
const N: usize = 50;

/// The Key Vault requests among `lines` of one device's certificate (`dev-m-N` or `dev-gw-N`).
fn device_vault_requests(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|l| request_of(l).to_string())
        .filter(|r| r.contains(".vault.azure.net") && r.contains("/dev-"))
        .collect()
}

/// The version id of `name`'s newest version, as Key Vault answers it.
fn newest_version(env: &TestEnv, serve: &Serve, name: &str) -> String {
    let (status, body) = key_vault_curl(env, serve, "GET", &format!("/certificates/{name}"), None);
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["id"].as_str().unwrap().rsplit('/').next().unwrap().to_string()
}

/// `check` of 50 group devices and an enrollment, after `issue`, reads no device's certificate
/// from Key Vault (measured before: one GET of each device's newest version, 51 requests; and
/// the vault's listing read twice); a rerun of `issue` with nothing to do reads none either
/// (before: 51) and writes nothing; both answer as before (check OK, issue "nothing to do").
#[test]
fn check_and_a_no_op_issue_read_no_device_certificate_from_key_vault() {
    let env = TestEnv::new();
    let serve = issued_fleet(&env, &group_of(N));
    let ok = |args: &[&str]| fleet_ok(&env, &serve, args).json();

    let mut report = serde_json::Value::Null;
    let lines = during(&env, || report = ok(&["check", "-o", "json"]));
    let device = device_vault_requests(&lines);
    eprintln!(
        "check of {} devices: {} requests, {} Key Vault requests of a device certificate",
        N + 1,
        lines.len(),
        device.len()
    );
    for (k, n) in vault_requests(&lines) {
        eprintln!("  {n:5} {k}");
    }
    assert_eq!(report["status"], "ok", "{report}");
    assert_eq!(report["counts"]["ok"], (N + 1 + 2) as u64, "{report}");
    // Of the group's devices, none; the enrollment's presented version is still looked up
    // among its versions (its listing and that version), as before.
    let group = device.iter().filter(|r| r.contains("/dev-m-")).count();
    assert_eq!(
        group, 0,
        "check read group devices' certificates from Key Vault: {device:?}"
    );
    assert!(
        device.len() <= 2,
        "check read device certificates from Key Vault: {device:?}"
    );

    let mut again = serde_json::Value::Null;
    let lines = during(&env, || again = ok(&["issue", "-o", "json"]));
    let device = device_vault_requests(&lines);
    eprintln!(
        "issue again: {} requests, {} Key Vault requests of a device certificate",
        lines.len(),
        device.len()
    );
    for (k, n) in vault_requests(&lines) {
        eprintln!("  {n:5} {k}");
    }
    assert!(again["steps"].as_array().is_some_and(Vec::is_empty), "{again}");
    assert!(
        device.is_empty(),
        "issue with nothing to do read {} device certificates from Key Vault: {device:?}",
        device.len()
    );
    assert!(
        lines.iter().all(|l| !crate::azure_requests::is_write(l)),
        "issue with nothing to do wrote"
    );
    let status = ok(&["status", "-o", "json"]);
    let devices = status["devices"].as_array().cloned().unwrap_or_default();
    assert_eq!(devices.len(), N + 1, "{status}");
    for d in &devices {
        assert_eq!(
            d["registration"]["cert_thumbprint"], d["installed"]["thumbprint"],
            "{d}"
        );
        assert!(d["pending"].is_null(), "{d}");
    }
}

/// Another client of the vault disables the version certroll issued `m-03` and makes a new
/// version of `m-04`'s certificate (self-signed, as Key Vault's own create makes it): `check`
/// makes `m-03` critical (its version is disabled) and `issue` takes `m-04`'s newer version as
/// the one to hand out (the hook hands it over; `status` shows it on its way), reading those two
/// names' versions, exactly as when every device's newest version was read.
#[test]
fn a_version_another_client_disabled_or_made_is_still_seen() {
    let env = TestEnv::new();
    let serve = issued_fleet(&env, &group_of(N));
    let run = |args: &[&str]| run_fleet(&env, &serve, "azure", args);

    let m3 = newest_version(&env, &serve, "dev-m-03");
    let (status, body) = key_vault_curl(
        &env,
        &serve,
        "PATCH",
        &format!("/certificates/dev-m-03/{m3}"),
        Some(r#"{"attributes":{"enabled":false}}"#),
    );
    assert_eq!(status, 200, "{body}");
    let before = newest_version(&env, &serve, "dev-m-04");
    let (status, body) = key_vault_curl(
        &env,
        &serve,
        "POST",
        "/certificates/dev-m-04/create",
        Some(
            r#"{"policy":{"key_props":{"kty":"EC","crv":"P-256","exportable":true},
                "x509_props":{"subject":"CN=m-04","validity_months":12},"issuer":{"name":"Self"},
                "secret_props":{"contentType":"application/x-pem-file"}}}"#,
        ),
    );
    assert!(status == 202 || status == 200, "{status} {body}");
    let made = newest_version(&env, &serve, "dev-m-04");
    assert_ne!(made, before, "the other client's create made no version");

    let r = run(&["check", "-o", "json"]);
    let report = r.json();
    eprintln!("{report:#}");
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    let problems = report["problems"].as_array().cloned().unwrap_or_default();
    assert!(
        problems.iter().any(|p| p["target"] == "device:m-03"
            && p["level"] == "critical"
            && p["reason"].as_str().unwrap_or_default().contains("disabled")),
        "{report}"
    );

    let lines = during(&env, || {
        let r = run(&["issue", "-o", "json"]);
        eprintln!("{}\n{}", r.stdout, r.stderr);
        let report = r.json();
        let installs: Vec<&serde_json::Value> = report["steps"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["action"] == "install-device-certs")
            .collect();
        assert_eq!(installs.len(), 1, "{report}");
        assert_eq!(installs[0]["count"], 1, "{report}");
    });
    let device = device_vault_requests(&lines);
    eprintln!("issue after the other client: {device:?}");
    assert!(
        device
            .iter()
            .any(|r| r.starts_with("GET ") && r.contains("/dev-m-04")),
        "{device:?}"
    );
    // The version handed out is the other client's: `status` shows it on its way to `m-04`
    // (the hook took it; the device registers only when it first starts).
    let (status, body) = key_vault_curl(
        &env,
        &serve,
        "GET",
        &format!("/certificates/dev-m-04/{made}"),
        None,
    );
    assert_eq!(status, 200, "{body}");
    let thumbprint = crate::util::x5t_thumbprint(&serde_json::from_str(&body).unwrap());
    let status = fleet_ok(&env, &serve, &["status", "device:m-04", "-o", "json"]).json();
    let m4 = crate::azure_verbs2::device(&status, "m-04");
    assert_eq!(m4["pending"]["delivery"], "hook", "{m4}");
    assert_eq!(
        m4["pending"]["cert"]["thumbprint"], thumbprint,
        "m-04 is handed the version {made} the other client made: {m4}"
    );
    let held = env.path("devices/m-04.pem");
    let held = env
        .openssl(&[
            "x509",
            "-in",
            held.to_str().unwrap(),
            "-noout",
            "-fingerprint",
            "-sha1",
        ])
        .ok()
        .stdout;
    assert!(
        held.trim().replace(':', "").ends_with(&format!("={thumbprint}")),
        "the hook handed m-04 {held}, not {thumbprint}"
    );
}

/// A store the previous release made (schema v14: no record of what was issued) over a fleet
/// already issued: it is upgraded, `check` reads each device's certificate from Key Vault as
/// before and answers the same; the next `issue` (nothing to do) reads them once more and
/// records them, and `check` after it reads none.
#[test]
fn a_store_of_the_previous_release_reads_as_before_until_the_next_issue_records() {
    let env = TestEnv::new();
    let serve = issued_fleet(&env, &group_of(N));
    let ok = |args: &[&str]| fleet_ok(&env, &serve, args).json();
    // Back to v14, as that release left it: without the tables and columns of v15 and later.
    let out = Command::new("sqlite3")
        .arg(env.path("azure/state.db"))
        .arg(
            "DROP TABLE issued_versions; DROP TABLE deleted_versions; DROP TABLE purged_versions; \
             ALTER TABLE hub_devices DROP COLUMN hub_extra; ALTER TABLE registrations DROP COLUMN device_id; \
             PRAGMA user_version = 14;",
        )
        .output()
        .unwrap_or_else(|e| panic!("sqlite3: {e}"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let group_reads = |lines: &[String]| {
        device_vault_requests(lines)
            .iter()
            .filter(|r| r.contains("/dev-m-"))
            .count()
    };
    let mut first = serde_json::Value::Null;
    let lines = during(&env, || first = ok(&["check", "-o", "json"]));
    assert_eq!(first["status"], "ok", "{first}");
    assert_eq!(
        group_reads(&lines),
        N,
        "check on a v14 store reads each group device's certificate"
    );
    let lines = during(&env, || {
        let again = ok(&["issue", "-o", "json"]);
        assert!(again["steps"].as_array().is_some_and(Vec::is_empty), "{again}");
    });
    assert_eq!(
        group_reads(&lines),
        N,
        "the first issue on a v14 store reads each certificate once"
    );
    let mut last = serde_json::Value::Null;
    let lines = during(&env, || last = ok(&["check", "-o", "json"]));
    assert_eq!(group_reads(&lines), 0, "check after the issue recorded them");
    // The same answer throughout, times apart.
    first["now"] = serde_json::Value::Null;
    last["now"] = serde_json::Value::Null;
    assert_eq!(first, last);
}
