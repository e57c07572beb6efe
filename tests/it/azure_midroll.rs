//! A device another client cuts off while a roll of it goes on (trial az11 F3, and az8's F4 for
//! an individual enrollment): another client of the hub disables a device's identity, or another
//! client of DPS its individual enrollment, between the roll's read and its write. certroll's
//! write keeps that status (it never enables what another client disabled), and the roll's own
//! report says what `check` says right after: the device is `disabled`, with the way back, and
//! the run exits 1. Once the other client's change is undone, the rerun has nothing left to do.
//! No request is made for this: the write's own answer (or the re-read after its lost race)
//! carries the status.

use crate::azure_foreign::{GROUPS, another_client, device, set_provisioning, slot_thumbprint};
use crate::azure_verbs::{fleet_ok, fleet_plans_hook, run_fleet, start_serve};
use crate::conformance::azure::{HUB_HOST, Serve};
use crate::util::TestEnv;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Device `id`'s identity in hub `conf-hub`, as another client reads it.
fn identity(env: &TestEnv, serve: &Serve, id: &str) -> Value {
    let (code, d) = another_client(env, serve, HUB_HOST, "GET", &format!("/devices/{id}"), None, None);
    assert_eq!(code, 200, "{d}");
    d
}

/// The other client of the hub: sets device `id`'s identity to `status` with the etag it read.
fn set_identity_status(env: &TestEnv, serve: &Serve, id: &str, status: &str) {
    let mut d = identity(env, serve, id);
    let etag = format!("\"{}\"", d["etag"].as_str().unwrap().trim_matches('"'));
    d["status"] = json!(status);
    let path = format!("/devices/{id}");
    let (code, answer) = another_client(env, serve, HUB_HOST, "PUT", &path, Some(&etag), Some(&d));
    assert_eq!(code, 200, "the other client's {status}: {answer}");
}

/// serve's access lines so far (`METHOD host/path STATUS Nms`).
fn access(env: &TestEnv) -> Vec<String> {
    std::fs::read_to_string(env.path("serve.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split("certroll::serve::access: ").nth(1))
        .map(str::to_string)
        .collect()
}

/// Runs certroll with `args` on the azure plan while another client waits for serve to answer
/// the first request whose line contains `trigger`, then does `act` (serve's Key Vault answers
/// slowly, so `act` lands between the roll's read of the device and its write). Returns the run
/// and serve's access lines of the run, the other client's included.
fn while_rolling(
    env: &TestEnv,
    serve: &Serve,
    trigger: &str,
    act: impl FnOnce() + Send,
    args: &[&str],
) -> (crate::util::Run, Vec<String>) {
    let before = access(env).len();
    let (run, acted) = std::thread::scope(|s| {
        let other = s.spawn(move || {
            let until = Instant::now() + Duration::from_secs(120);
            while Instant::now() < until {
                if access(env).iter().skip(before).any(|l| l.contains(trigger)) {
                    act();
                    return true;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            false
        });
        let run = run_fleet(env, serve, "azure", args);
        (run, other.join().unwrap())
    });
    assert!(
        acted,
        "no request matched `{trigger}`:\n{}\n{}",
        run.stdout, run.stderr
    );
    (run, access(env).split_off(before))
}

/// [`GROUPS`] issued on azure through the device hook, serve's Key Vault answering each request
/// after `delay_ms`.
fn slow_vault_fleet(env: &TestEnv, delay_ms: u32) -> Serve {
    let serve = start_serve(
        env,
        &format!("{GROUPS}[serve.services.keyvault]\ndelay_ms = {delay_ms}\n"),
    );
    fleet_plans_hook(env, &serve, GROUPS);
    fleet_ok(env, &serve, &["issue", "-o", "json"]);
    serve
}

/// Asserts device `id` of a roll's JSON `report` is `disabled` with its new certificate
/// written, its way back first among its steps naming each of `words`; returns the new
/// certificate's thumbprint.
fn cut_off_after_its_write(report: &Value, id: &str, words: &[&str]) -> String {
    let d = device(report, id);
    assert_eq!(d["outcome"], "disabled", "{report}");
    let why = d["steps"][0].as_str().unwrap_or_default();
    for w in words {
        assert!(why.contains(w), "{w}: {d}");
    }
    d["new_thumbprint"]
        .as_str()
        .unwrap_or_else(|| panic!("its new certificate was written: {d}"))
        .to_string()
}

/// The `PUT`s of `target` (`host/path`) answered 200 among access `lines`.
fn puts(lines: &[String], target: &str) -> usize {
    let line = format!("PUT {target} 200 ");
    lines.iter().filter(|l| l.starts_with(&line)).count()
}

/// Whether `check` on the azure plan has a critical problem on `target`.
fn critical(env: &TestEnv, serve: &Serve, target: &str) -> bool {
    let report = run_fleet(env, serve, "azure", &["check", "-o", "json"]).json();
    report["problems"]
        .as_array()
        .unwrap_or_else(|| panic!("{report}"))
        .iter()
        .any(|p| p["target"] == target && p["level"] == "critical")
}

/// Requests certroll made of Key Vault, DPS, IoT Hub and ARM, from access lines (the other
/// client's name serve's port with the host, so they are not counted).
fn by_service(lines: &[String]) -> [usize; 4] {
    let n = |host: &str| lines.iter().filter(|l| l.contains(host)).count();
    [
        n("vault.azure.net"),
        n("azure-devices-provisioning.net"),
        n("azure-devices.net/"),
        n("management.azure.com"),
    ]
}

/// Trial az11 F3: another client of the hub disables device `m-2`'s identity while a
/// `roll-secondary` of its group, then a CA breach above it, goes on. Each time the identity
/// stays disabled with the new thumbprint, the roll reports `m-2` `disabled` with the way back
/// (as `check` says) and exits 1; once the identity is enabled again, the rerun finds nothing
/// left to do and exits 0. The roll makes as many requests as one with nobody else about.
#[test]
fn a_hub_identity_another_client_disables_mid_roll_is_reported_disabled_and_the_rerun_finishes() {
    let env = TestEnv::new();
    let serve = slow_vault_fleet(&env, 500);
    let hub_words = [
        "its identity in hub `conf-hub` is disabled",
        "enable it again in the hub",
    ];

    let roll = ["roll-secondary", "group:meters", "--yes", "-o", "json"];
    let (r, lines) = while_rolling(
        &env,
        &serve,
        "dev-m-1/import",
        || set_identity_status(&env, &serve, "m-2", "disabled"),
        &roll,
    );
    // What the roll asked of each service (its re-read and re-applied write of m-2 included):
    // compared with a build before the change, which asked the same.
    let raced = by_service(&lines);
    eprintln!(
        "roll-secondary group:meters with m-2 disabled mid-roll: Key Vault {}, DPS {}, IoT Hub {}, ARM {} \
         requests",
        raced[0], raced[1], raced[2], raced[3]
    );
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let report = r.json();
    let tp = cut_off_after_its_write(&report, "m-2", &hub_words);
    assert_eq!(device(&report, "m-1")["outcome"], "rolled", "{report}");
    // The other client's disable landed between the roll's read and its write: the write lost
    // its race and was applied again over what the other client wrote.
    assert_eq!(
        puts(&lines, "conf-hub.azure-devices.net/devices/m-2"),
        1,
        "the roll's write of m-2 after it lost its race (the other client's names serve's port):\n{}",
        lines.join("\n")
    );
    let held = identity(&env, &serve, "m-2");
    assert_eq!(held["status"], "disabled", "{held}");
    let thumbprints = held["authentication"]["x509Thumbprint"]
        .to_string()
        .to_ascii_uppercase();
    assert!(thumbprints.contains(&tp), "the new thumbprint: {held}");
    assert!(
        critical(&env, &serve, "device:m-2"),
        "check says what the roll says"
    );

    set_identity_status(&env, &serve, "m-2", "enabled");
    let r = run_fleet(&env, &serve, "azure", &roll);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    for id in ["m-1", "m-2"] {
        assert_eq!(device(&r.json(), id)["outcome"], "already-rolled", "{}", r.stdout);
    }

    // A CA breach above it: the compromised thumbprints leave the hub, the identity stays
    // disabled, and the report says so.
    let breach = [
        "roll-primary",
        "--breach",
        "ca:factory",
        "--incident",
        "L1",
        "--yes",
        "-o",
        "json",
    ];
    let (r, _) = while_rolling(
        &env,
        &serve,
        "dev-m-1/import",
        || set_identity_status(&env, &serve, "m-2", "disabled"),
        &breach,
    );
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let report = r.json();
    cut_off_after_its_write(&report, "m-2", &hub_words);
    for id in ["m-1", "gw-1"] {
        assert_eq!(device(&report, id)["outcome"], "replaced", "{report}");
    }
    assert_eq!(identity(&env, &serve, "m-2")["status"], "disabled");

    set_identity_status(&env, &serve, "m-2", "enabled");
    let r = run_fleet(&env, &serve, "azure", &breach);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let report = r.json();
    assert_eq!(report["groups"][0]["outcome"], "already-replaced", "{report}");
    assert_eq!(report["devices"], json!([]), "nothing left to replace: {report}");
    assert!(!critical(&env, &serve, "device:m-2"));
}

/// az8's F4 for an individual enrollment: another client of DPS disables `gw-1`'s enrollment
/// while a `roll-secondary` of it, then a breach of it, goes on. The enrollment stays disabled
/// with the new certificate, the roll reports `gw-1` `disabled` with the way back and exits 1
/// (the breach's registration, which DPS refuses, does not fail its step); once the enrollment
/// is enabled again, the rerun finds nothing left to do.
#[test]
fn an_individual_enrollment_another_client_disables_mid_roll_is_reported_disabled_and_the_rerun_finishes() {
    let env = TestEnv::new();
    let serve = slow_vault_fleet(&env, 500);
    let dps_words = [
        "its individual enrollment `gw-1` is disabled",
        "enable it again in DPS",
    ];
    let disable = || set_provisioning(&env, &serve, "gw-1", false, "disabled");

    let roll = ["roll-secondary", "enrollment:gw-1", "--yes", "-o", "json"];
    let (r, lines) = while_rolling(&env, &serve, "dev-gw-1/import", disable, &roll);
    let raced = by_service(&lines);
    eprintln!(
        "roll-secondary enrollment:gw-1 with gw-1 disabled mid-roll: Key Vault {}, DPS {}, IoT Hub {}, ARM {} \
         requests",
        raced[0], raced[1], raced[2], raced[3]
    );
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let tp = cut_off_after_its_write(&r.json(), "gw-1", &dps_words);
    assert_eq!(
        puts(
            &lines,
            "certroll-dps.azure-devices-provisioning.net/enrollments/gw-1"
        ),
        1,
        "the roll's write of gw-1 after it lost its race (the other client's names serve's port):\n{}",
        lines.join("\n")
    );
    assert_eq!(
        slot_thumbprint(&env, &serve, "gw-1", "secondary").as_deref(),
        Some(tp.as_str())
    );
    let human = run_fleet(&env, &serve, "azure", &roll[..3]);
    assert_eq!(human.code, 1, "{}\n{}", human.stdout, human.stderr);
    assert!(
        human
            .stdout
            .contains("device:gw-1: not rolled: its individual enrollment `gw-1` is disabled"),
        "the next roll finds it disabled before it writes:\n{}",
        human.stdout
    );

    set_provisioning(&env, &serve, "gw-1", false, "enabled");
    let r = run_fleet(&env, &serve, "azure", &roll);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(
        device(&r.json(), "gw-1")["outcome"],
        "already-rolled",
        "{}",
        r.stdout
    );

    let breach = [
        "roll-primary",
        "--breach",
        "device:gw-1",
        "--incident",
        "G1",
        "--yes",
        "-o",
        "json",
    ];
    let (r, _) = while_rolling(&env, &serve, "dev-gw-1/import", disable, &breach);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let tp = cut_off_after_its_write(&r.json(), "gw-1", &dps_words);
    assert_eq!(
        slot_thumbprint(&env, &serve, "gw-1", "primary").as_deref(),
        Some(tp.as_str())
    );

    set_provisioning(&env, &serve, "gw-1", false, "enabled");
    let r = run_fleet(&env, &serve, "azure", &breach);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(
        device(&r.json(), "gw-1")["outcome"],
        "already-replaced",
        "{}",
        r.stdout
    );
    assert!(!critical(&env, &serve, "device:gw-1"));
}

/// What a roll of [`GROUPS`]'s three devices asks of each service when nobody else is about:
/// printed, to be compared with a build before the change (which made no request of its own).
#[test]
fn requests_of_a_quiet_roll_of_three_devices() {
    let env = TestEnv::new();
    let serve = slow_vault_fleet(&env, 1);
    let before = access(&env).len();
    fleet_ok(
        &env,
        &serve,
        &[
            "roll-secondary",
            "group:meters",
            "enrollment:gw-1",
            "--yes",
            "-o",
            "json",
        ],
    );
    let lines = access(&env).split_off(before);
    let n = by_service(&lines);
    eprintln!(
        "quiet roll-secondary group:meters enrollment:gw-1: Key Vault {}, DPS {}, IoT Hub {}, ARM {} requests",
        n[0], n[1], n[2], n[3]
    );
}
