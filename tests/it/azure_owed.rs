//! Deliveries owed on azure (issue 12 items 3 and 7): a device's new certificate is recorded as
//! owed with its fleet record and settled only once the delivery channel took it, so a run
//! killed between a unit's commit and its deliveries, or a hook that failed, leaves it owed, and
//! the next run delivers it, once. Every delivery is read from the hook's own record of its calls.
//! And deliveries overlap the Key Vault imports: a unit of devices holds a few seconds of imports
//! at the plan's `vault_rate`, so the first devices get their certificates while the later ones'
//! imports go on.

use crate::azure_verbs::{
    DEVICE_HOOK, FLEET, device_hook_every_boot, fleet_ok, fleet_plans_with, hook_delivery, run_fleet,
    run_fleet_with, start_serve,
};
use crate::azure_verbs2::device;
use crate::conformance::azure::Serve;
use crate::util::TestEnv;
use serde_json::Value;

/// The delivery hook of [`DEVICE_HOOK`]'s simulated device, recording each delivery it took as
/// `DEVICE VERSION` in `log`; while the file `fail` exists it refuses every delivery (exit 1,
/// nothing recorded), as a device that cannot be reached.
const RECORDING_HOOK: &str = r#"
import json, os, subprocess, sys
port, scope, ca, home, log, fail, device = sys.argv[1:8]
raw = sys.stdin.read()
job = json.loads(raw)
if os.path.exists(fail):
    sys.stderr.write("device unreachable\n")
    sys.exit(1)
out = subprocess.run([sys.executable, device, port, scope, ca, home], input=raw, text=True,
                     capture_output=True)
if out.returncode != 0:
    sys.stderr.write(out.stderr)
    sys.exit(out.returncode)
with open(log, "a") as f:
    f.write(f"{job['device_id']} {job['vault']['version']}\n")
"#;

/// The fleet plans with delivery through [`RECORDING_HOOK`]; returns the paths of its log and
/// of its failure switch.
fn recording_plans(env: &TestEnv, serve: &Serve) -> (std::path::PathBuf, std::path::PathBuf) {
    recording_plans_of(env, serve, FLEET)
}

/// [`recording_plans`] of `fleet`.
fn recording_plans_of(env: &TestEnv, serve: &Serve, fleet: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    env.write("device-hook.py", DEVICE_HOOK);
    env.write("recording-hook.py", RECORDING_HOOK);
    let (log, fail) = (env.path("deliveries.log"), env.path("devices-unreachable"));
    let extra = [log.clone(), fail.clone(), env.path("device-hook.py")];
    let delivery = hook_delivery(env, serve, "recording-hook.py", &extra);
    fleet_plans_with(env, serve, fleet, &delivery);
    (log, fail)
}

/// [`recording_plans_of`] `fleet`, its devices registering again at every delivery (as a
/// device that reboots onto each certificate it is handed), then `issue`d: each holds one
/// version. Returns the paths of the hook's log and of its failure switch.
fn recording_fleet(env: &TestEnv, serve: &Serve, fleet: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let (log, fail) = recording_plans_of(env, serve, fleet);
    env.write("device-hook.py", &device_hook_every_boot());
    fleet_ok(env, serve, &["issue", "-o", "json"]);
    (log, fail)
}

/// The deliveries the hook took, in order: `(device, version)`.
fn deliveries(log: &std::path::Path) -> Vec<(String, String)> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let (d, v) = l.split_once(' ').unwrap();
            (d.to_string(), v.to_string())
        })
        .collect()
}

/// The vault's versions of a device's certificate, oldest first.
fn versions(env: &TestEnv, serve: &Serve, id: &str) -> Vec<String> {
    let r = run_fleet(
        env,
        serve,
        "azure",
        &["vault", "show", &format!("device:{id}"), "-o", "json"],
    )
    .ok();
    r.json()["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_str().unwrap().to_string())
        .collect()
}

/// certroll on the azure plan with `extra` environment (a fault switch).
fn run_with(env: &TestEnv, serve: &Serve, extra: &[(&str, &str)], args: &[&str]) -> crate::util::Run {
    run_fleet_with(env, serve, "azure", extra, args)
}

/// After `issue` of [`FLEET`]'s two devices: the hook took each device's one vault version
/// once, the devices registered with it (the hook's device does, on delivery: `status` shows
/// it installed, nothing pending), and a further `issue` delivers nothing.
fn each_device_got_its_one_version_once(env: &TestEnv, serve: &Serve, log: &std::path::Path) {
    let mut got = deliveries(log);
    got.sort();
    let want: Vec<(String, String)> = ["gw-1", "gw-2"]
        .iter()
        .map(|id| {
            let v = versions(env, serve, id);
            assert_eq!(v.len(), 1, "{id}: one version, none made again: {v:?}");
            (id.to_string(), v[0].clone())
        })
        .collect();
    assert_eq!(got, want, "each device got its certificate once");
    let s = run_fleet(env, serve, "azure", &["status", "-o", "json"])
        .ok()
        .json();
    for id in ["gw-1", "gw-2"] {
        let d = device(&s, id);
        assert!(d["installed"]["thumbprint"].is_string(), "{d}");
        assert_eq!(d["pending"], Value::Null, "{d}");
    }

    let r = run_fleet(env, serve, "azure", &["issue", "-o", "json"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let mut again = deliveries(log);
    again.sort();
    assert_eq!(again, got, "nothing owed any more");
    assert!(!r.stderr.contains("had not reached"), "{}", r.stderr);
}

/// A roll killed right after its unit committed (the new versions in Key Vault, the enrollments'
/// slots and the fleet record written), before any delivery ran: no device got its certificate.
/// The rerun finds nothing left to roll, yet delivers each device its new version, once; a
/// third run delivers nothing.
#[test]
fn a_roll_killed_between_its_commit_and_its_deliveries_delivers_them_on_rerun_once() {
    let env = TestEnv::new();
    let serve = start_serve(&env, FLEET);
    let (log, _) = recording_plans(&env, &serve);
    fleet_ok(&env, &serve, &["issue", "-o", "json"]);
    let issued = deliveries(&log);
    assert_eq!(issued.len(), 2, "issue delivered each device once: {issued:?}");

    let roll = ["roll-secondary", "device:gw-1", "device:gw-2", "-o", "json"];
    let r = run_with(&env, &serve, &[("CERTROLL_FAULT_BEFORE_DELIVERY", "1")], &roll);
    assert_ne!(r.code, 0, "the fault aborts the roll: {}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("fault injection"), "{}", r.stderr);
    assert_eq!(deliveries(&log), issued, "killed before any delivery");
    let new: Vec<String> = ["gw-1", "gw-2"]
        .iter()
        .map(|id| {
            let v = versions(&env, &serve, id);
            assert_eq!(v.len(), 2, "{id}: the roll's version is in the vault: {v:?}");
            v[1].clone()
        })
        .collect();
    // What the killed run committed: each device owes its new certificate, none holds it.
    let s = run_fleet(&env, &serve, "azure", &["status", "-o", "json"])
        .ok()
        .json();
    for id in ["gw-1", "gw-2"] {
        let note = device(&s, id)["pending"]["note"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            note.contains("not delivered yet")
                && note.contains("the next `certroll issue` or roll delivers it"),
            "{}",
            device(&s, id)
        );
    }

    let r = fleet_ok(&env, &serve, &roll);
    assert!(
        r.stderr.contains("had not reached their devices") && r.stderr.contains("2 delivered now"),
        "the rerun says what it delivered: {}",
        r.stderr
    );
    let after = deliveries(&log);
    // Hooks run side by side: in whichever order they end.
    let mut rerun: Vec<(&str, &str)> = after[2..].iter().map(|(d, v)| (d.as_str(), v.as_str())).collect();
    rerun.sort();
    assert_eq!(
        rerun,
        vec![("gw-1", new[0].as_str()), ("gw-2", new[1].as_str())],
        "each device got its new version once: {after:?}"
    );
    for id in ["gw-1", "gw-2"] {
        assert_eq!(versions(&env, &serve, id).len(), 2, "{id}: no version made again");
    }

    let r = fleet_ok(&env, &serve, &roll);
    assert_eq!(deliveries(&log), after, "nothing is owed any more");
    assert!(!r.stderr.contains("had not reached"), "{}", r.stderr);
}

/// `issue` killed right after its second unit committed (gw-2's version in Key Vault, its fleet
/// record and what it is owed written), before its delivery ran: gw-1's unit was delivered and
/// registered, gw-2 got nothing and `status` says it is owed its certificate. The rerun
/// delivers gw-2 its version once (before, `issue` delivered inside its unit, so a kill after
/// the deliveries redelivered the whole unit), gw-2 registers with it, and no version is made
/// again; a third run delivers nothing.
#[test]
fn an_issue_killed_between_its_commit_and_its_deliveries_delivers_them_on_rerun_once() {
    let env = TestEnv::new();
    let serve = start_serve(&env, FLEET);
    let (log, _) = recording_plans(&env, &serve);
    let r = run_with(
        &env,
        &serve,
        &[("CERTROLL_FAULT_BEFORE_DELIVERY", "2")],
        &["issue", "-o", "json"],
    );
    assert_ne!(
        r.code, 0,
        "the fault aborts the issue: {}\n{}",
        r.stdout, r.stderr
    );
    assert!(r.stderr.contains("fault injection"), "{}", r.stderr);
    let first = versions(&env, &serve, "gw-1");
    assert_eq!(
        deliveries(&log),
        vec![("gw-1".to_string(), first[0].clone())],
        "the first unit delivered, the second was killed before its delivery"
    );
    assert_eq!(
        versions(&env, &serve, "gw-2").len(),
        1,
        "gw-2's version is in the vault"
    );
    let s = run_fleet(&env, &serve, "azure", &["status", "-o", "json"])
        .ok()
        .json();
    let note = device(&s, "gw-2")["pending"]["note"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(note.contains("not delivered yet"), "{}", device(&s, "gw-2"));
    assert_eq!(
        device(&s, "gw-1")["pending"],
        Value::Null,
        "{}",
        device(&s, "gw-1")
    );

    let r = fleet_ok(&env, &serve, &["issue", "-o", "json"]);
    assert!(
        r.stderr.contains("had not reached their devices") && r.stderr.contains("1 delivered now"),
        "the rerun says what it delivered: {}",
        r.stderr
    );
    assert!(
        r.json()["rejected"].as_array().is_some_and(Vec::is_empty),
        "{}",
        r.stdout
    );
    each_device_got_its_one_version_once(&env, &serve, &log);
}

/// A delivery hook that fails leaves the certificate owed: `issue` reports the devices waiting,
/// and its rerun, once the devices can be reached, delivers each its certificate once (before,
/// the rerun found the fleet record current and never ran the hook again); a further rerun
/// delivers nothing.
#[test]
fn a_failed_delivery_stays_owed_and_the_next_run_delivers_it_once() {
    let env = TestEnv::new();
    let serve = start_serve(&env, FLEET);
    let (log, fail) = recording_plans(&env, &serve);
    std::fs::write(&fail, "").unwrap();
    let r = run_fleet(&env, &serve, "azure", &["issue", "-o", "json"]);
    assert_eq!(r.code, 1, "the devices wait: {}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("device unreachable"), "{}", r.stderr);
    assert!(deliveries(&log).is_empty());
    let s = run_fleet(&env, &serve, "azure", &["status", "-o", "json"])
        .ok()
        .json();
    let note = device(&s, "gw-1")["pending"]["note"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(note.contains("did not run or failed"), "{}", device(&s, "gw-1"));
    // Their first delivery failed: neither ever held a certificate of certroll's, so `check`
    // pages for each (critical, counted once), not "still uses the one before" counted ok.
    let c = run_fleet(&env, &serve, "azure", &["check", "-o", "json"]);
    assert_eq!(c.code, 2, "{}", c.stdout);
    let doc = c.json();
    for id in ["gw-1", "gw-2"] {
        let p = doc["problems"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["target"] == format!("device:{id}"))
            .unwrap_or_else(|| panic!("no problem of device:{id}: {doc}"));
        assert_eq!(p["level"], "critical", "{p}");
        let reason = p["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains("has not connected yet")
                && reason.contains(&format!("`certroll issue device:{id}`")),
            "{p}"
        );
    }
    assert!(
        !c.stdout.contains("still uses the one before"),
        "no owed-deliveries warning for devices that never held one: {}",
        c.stdout
    );
    assert_eq!(doc["counts"]["critical"], 2, "{doc}");
    assert_eq!(doc["counts"]["warning"], 0, "{doc}");

    // Still unreachable: the rerun tries again and leaves both owed.
    let r = run_fleet(&env, &serve, "azure", &["issue", "-o", "json"]);
    assert!(r.stderr.contains("0 delivered now, 2 still owed"), "{}", r.stderr);
    assert_eq!(r.code, 1, "work left for a rerun: {}", r.stdout);
    assert_eq!(r.json()["deliveries_owed"], 2, "{}", r.stdout);
    assert!(deliveries(&log).is_empty());

    std::fs::remove_file(&fail).unwrap();
    fleet_ok(&env, &serve, &["issue", "-o", "json"]);
    each_device_got_its_one_version_once(&env, &serve, &log);
}

/// A roll whose hook fails for both devices says so (trial az4, §2): each device is `rolled`
/// (the vault, DPS and the hub hold its new certificate) with `delivery` naming the failure, and
/// the run exits 1 (before, 0 with a WARN line only); its text says so too. `check` warns
/// (exit 1) naming both devices and `certroll issue`; that issue, once the devices can be
/// reached, delivers them (exit 0) and `check` no longer warns.
#[test]
fn a_roll_whose_delivery_failed_exits_1_says_so_per_device_and_check_warns_until_delivered() {
    let env = TestEnv::new();
    let serve = start_serve(&env, FLEET);
    let (log, fail) = recording_plans(&env, &serve);
    let r = fleet_ok(&env, &serve, &["issue", "-o", "json"]);
    assert_eq!(r.json()["deliveries_owed"], 0, "{}", r.stdout);
    let c = run_fleet(&env, &serve, "azure", &["check", "-o", "json"]);
    assert_eq!(c.code, 0, "nothing owed yet: {}", c.stdout);

    std::fs::write(&fail, "").unwrap();
    let r = run_fleet(
        &env,
        &serve,
        "azure",
        &["roll-secondary", "device:gw-1", "device:gw-2", "-o", "json"],
    );
    assert_eq!(r.code, 1, "work left for a rerun: {}\n{}", r.stdout, r.stderr);
    let report = r.json();
    assert_eq!(report["deliveries_owed"], 2, "{}", r.stdout);
    for d in report["devices"].as_array().unwrap() {
        assert_eq!(d["outcome"], "rolled", "{d}");
        let delivery = d["delivery"].as_str().unwrap_or_default();
        assert!(
            delivery.starts_with("owed: hook `python3`") && delivery.contains("exit status: 1"),
            "{d}"
        );
    }
    assert_eq!(
        deliveries(&log).len(),
        2,
        "only issue's deliveries reached the devices"
    );

    // Text: each device's line says it was not delivered, and the run says what delivers it.
    let r = run_fleet(&env, &serve, "azure", &["roll-secondary", "device:gw-1"]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("2 device(s) still owed their new certificate")
            && r.stdout.contains("the next `certroll issue` or roll delivers it"),
        "{}",
        r.stdout
    );

    let c = run_fleet(&env, &serve, "azure", &["check", "-o", "json"]);
    assert_eq!(c.code, 1, "a warning: {}", c.stdout);
    let problems = c.json()["problems"].as_array().unwrap().clone();
    let owed = problems
        .iter()
        .find(|p| p["target"] == "deliveries")
        .unwrap_or_else(|| panic!("no owed deliveries among {problems:?}"));
    assert_eq!(owed["level"], "warning", "{owed}");
    let reason = owed["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("2 device(s) still owed")
            && reason.contains("device:gw-1, device:gw-2")
            && reason.contains("`certroll issue` delivers"),
        "{reason}"
    );
    // Narrowed to one device, check names it alone.
    let c = run_fleet(&env, &serve, "azure", &["check", "device:gw-2"]);
    assert_eq!(c.code, 1, "{}", c.stdout);
    assert!(
        c.stdout.contains("device:gw-2")
            && c.stdout.contains("1 device(s) still owed")
            && !c.stdout.contains("gw-1"),
        "{}",
        c.stdout
    );

    std::fs::remove_file(&fail).unwrap();
    let r = fleet_ok(&env, &serve, &["issue", "-o", "json"]);
    assert_eq!(r.json()["deliveries_owed"], 0, "{}", r.stdout);
    assert_eq!(
        deliveries(&log).len(),
        4,
        "each device got its new certificate once"
    );
    let c = run_fleet(&env, &serve, "azure", &["check", "-o", "json"]);
    assert_eq!(c.code, 0, "{}", c.stdout);
}

/// A root, an intermediate and a group of `n` devices under it, on hub `conf-hub`.
pub(crate) fn group_of(n: usize) -> String {
    format!(
        "[policies.device]\nkey = {{ type = \"EC\", curve = \"P-256\" }}\nvalidity_days = 365\n\
         [policies.ca]\nkey = {{ type = \"EC\", curve = \"P-256\" }}\nvalidity_days = 3650\n\
         key_usage = [\"keyCertSign\", \"cRLSign\", \"digitalSignature\"]\n\
         [ca.root]\nsubject = \"CN=Root\"\npolicy = \"ca\"\n\
         [ca.factory]\nsubject = \"CN=Factory\"\nissuer = \"root\"\npath_len = 0\npolicy = \"ca\"\n\
         [groups.meters]\nsigning_ca = \"factory\"\nhub = \"conf-hub\"\n\
         device_policy = \"device\"\ndevices = {{ prefix = \"m-\", count = {n} }}\n"
    )
}

/// `METHOD host/path` of each of serve's access lines, in the order the answers went out.
fn requests(env: &TestEnv) -> Vec<String> {
    access_lines(env)
        .into_iter()
        .map(|(request, _)| request)
        .collect()
}

/// `(METHOD host/path, status)` of each of serve's access lines, in the order the answers went
/// out (each line is written before its answer).
fn access_lines(env: &TestEnv) -> Vec<(String, String)> {
    std::fs::read_to_string(env.path("serve.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split("certroll::serve::access: ").nth(1))
        .map(|rest| {
            let mut words = rest.split(' ');
            let request = words.by_ref().take(2).collect::<Vec<_>>().join(" ");
            (request, words.next().unwrap_or_default().to_string())
        })
        .collect()
}

/// Serve with [`group_of`]`(n)` and its Key Vault throttled at 25 requests a second (burst 50).
fn throttled_serve(env: &TestEnv, n: usize) -> (String, Serve) {
    let fleet = group_of(n);
    let serve = start_serve(
        env,
        &format!("{fleet}[serve.services.keyvault]\nrate_per_second = 25\nburst = 50\n"),
    );
    (fleet, serve)
}

/// The plans of `fleet` importing at 5 a second (`vault_rate = 5`: units of 100 devices),
/// delivering through `hook` (a simulated device's script, as [`DEVICE_HOOK`]).
fn throttled_plans(env: &TestEnv, serve: &Serve, fleet: &str, hook: &str) {
    env.write("device-hook.py", hook);
    let delivery = format!(
        "vault_rate = 5\n{}",
        hook_delivery(env, serve, "device-hook.py", &[])
    );
    fleet_plans_with(env, serve, fleet, &delivery);
}

/// `issue` of 130 group devices, the plan importing at 5 a second (`vault_rate = 5`: units of
/// 100 devices) against serve's Key Vault throttled at 25 requests a second: the first device
/// registers with DPS with the certificate its delivery hook was handed before the last device's
/// certificate is imported (read from serve's access log, in the order its answers went out).
/// With the 2,048-device unit, every import came first. Every device is delivered and registers
/// once.
#[test]
fn deliveries_start_while_later_imports_go_on_under_a_throttled_key_vault() {
    const N: usize = 130;
    let env = TestEnv::new();
    let (fleet, serve) = throttled_serve(&env, N);
    throttled_plans(&env, &serve, &fleet, DEVICE_HOOK);
    let r = fleet_ok(&env, &serve, &["issue", "-o", "json"]);
    assert!(
        r.json()["rejected"].as_array().is_some_and(Vec::is_empty),
        "{}",
        r.stdout
    );

    let log = requests(&env);
    let imports: Vec<usize> = (0..log.len())
        .filter(|&i| {
            log[i].starts_with("POST ")
                && log[i].contains("/certificates/dev-m-")
                && log[i].ends_with("/import")
        })
        .collect();
    let registrations: Vec<usize> = (0..log.len())
        .filter(|&i| {
            log[i].contains("global.azure-devices-provisioning.net") && log[i].contains("/registrations/m-")
        })
        .collect();
    let devices = |at: &[usize]| -> std::collections::BTreeSet<String> {
        at.iter()
            .filter_map(|&i| log[i].split("m-").nth(1))
            .map(|rest| rest.chars().take_while(char::is_ascii_digit).collect())
            .collect()
    };
    assert_eq!(devices(&imports).len(), N, "every device's certificate imported");
    assert_eq!(
        registrations.len(),
        N,
        "every device delivered and registered once"
    );
    assert_eq!(devices(&registrations).len(), N);
    let (first_registration, last_import) = (registrations[0], *imports.last().unwrap());
    assert!(
        first_registration < last_import,
        "the first device registered (request {first_registration}: {}) only after the last import \
         (request {last_import}: {})",
        log[first_registration],
        log[last_import]
    );
}

/// A roll of 150 group devices (units of 100: the plan imports at `vault_rate = 5`) against
/// serve's Key Vault throttled at 25 requests a second, each device registering with DPS again
/// whenever its delivery hook hands it a certificate (so each delivery shows in serve's access
/// log, as does the delivery's read of the device's key for its PFX). Every device's new
/// certificate is imported and delivered once; the first unit's deliveries come after its
/// imports (the unit committed first) and run beside the second unit's imports: one of their
/// requests is answered between the second unit's first and last import (before, the second
/// unit's imports started only once every delivery of the first had run).
#[test]
fn a_rolls_deliveries_run_beside_the_next_units_imports_under_a_throttled_key_vault() {
    const N: usize = 150;
    const UNIT: usize = 100;
    let env = TestEnv::new();
    let (fleet, serve) = throttled_serve(&env, N);
    throttled_plans(&env, &serve, &fleet, DEVICE_HOOK);
    fleet_ok(&env, &serve, &["issue", "-o", "json"]);
    let before = access_lines(&env).len();

    // From now on each delivery registers the device again with what it was handed.
    throttled_plans(&env, &serve, &fleet, &device_hook_every_boot());
    let r = fleet_ok(&env, &serve, &["roll-secondary", "group:meters", "-o", "json"]);
    assert_eq!(r.json()["deliveries_owed"], 0, "{}", r.stdout);

    // What serve did (a try it throttled with 429 is no import nor registration).
    let log: Vec<String> = access_lines(&env)
        .split_off(before)
        .into_iter()
        .filter(|(_, status)| status.starts_with('2'))
        .map(|(request, _)| request)
        .collect();
    let number = |i: usize| -> Option<usize> {
        log[i]
            .split("m-")
            .nth(1)?
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .ok()
    };
    let imports: Vec<(usize, usize)> = (0..log.len())
        .filter(|&i| {
            log[i].starts_with("POST ")
                && log[i].contains("/certificates/dev-m-")
                && log[i].ends_with("/import")
        })
        .filter_map(|i| Some((i, number(i)?)))
        .collect();
    let registrations: Vec<(usize, usize)> = (0..log.len())
        .filter(|&i| {
            log[i].contains("global.azure-devices-provisioning.net") && log[i].contains("/registrations/m-")
        })
        .filter_map(|i| Some((i, number(i)?)))
        .collect();
    let distinct = |v: &[(usize, usize)]| {
        v.iter()
            .map(|x| x.1)
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    };
    assert_eq!(
        (imports.len(), distinct(&imports)),
        (N, N),
        "each device's new certificate imported once"
    );
    assert_eq!(
        (registrations.len(), distinct(&registrations)),
        (N, N),
        "each device delivered (and registered again) once"
    );
    // (request index, device number) → the request indices of one unit's devices.
    let of_unit = |v: &[(usize, usize)], second: bool| -> Vec<usize> {
        v.iter()
            .filter(|(_, n)| (*n > UNIT) == second)
            .map(|x| x.0)
            .collect()
    };
    let last_first_import = *of_unit(&imports, false).iter().max().unwrap();
    let second_unit = of_unit(&imports, true);
    let (first_second_import, last_second_import) = (
        *second_unit.iter().min().unwrap(),
        *second_unit.iter().max().unwrap(),
    );
    assert!(
        last_first_import < first_second_import,
        "the units import one after the other: the first's last import is request {last_first_import}, \
         the second's first is request {first_second_import}"
    );
    // A hook delivery starts by reading the device's key from Key Vault for its PFX (nothing
    // else in this roll reads a device's secret); its device registers when the hook runs.
    let key_reads: Vec<(usize, usize)> = (0..log.len())
        .filter(|&i| log[i].starts_with("GET ") && log[i].contains("/secrets/dev-m-"))
        .filter_map(|i| Some((i, number(i)?)))
        .collect();
    assert_eq!(distinct(&key_reads), N, "each delivery read its device's key");
    let first_unit_deliveries: Vec<usize> = of_unit(&key_reads, false)
        .into_iter()
        .chain(of_unit(&registrations, false))
        .collect();
    assert!(
        first_unit_deliveries.iter().all(|&i| i > last_first_import),
        "a unit's deliveries come after its commit, so after its imports"
    );
    assert!(
        first_unit_deliveries
            .iter()
            .any(|&i| first_second_import < i && i < last_second_import),
        "none of the first unit's deliveries (key reads and registrations: requests {first_unit_deliveries:?}) \
         came between the second unit's first import (request {first_second_import}) and its last (request \
         {last_second_import})"
    );
}

/// A device breach whose delivery failed (the rehearsal's INC-0005, its hook registering the
/// device with each certificate it takes): the leaked certificate is refused at once and the
/// replacement is owed (exit 1). Once the device can be reached, a dry run of the rerun lists no
/// replacement as compromised, and the rerun of the same breach delivers that replacement and
/// finishes (exit 0), as does a rerun without `--incident`; before, the rerun took the
/// replacement for compromised and disabled it, and the next run left the device with no working
/// certificate. Only another incident takes the replacement for compromised.
#[test]
fn a_breach_whose_delivery_failed_delivers_its_replacement_on_rerun_and_never_disables_it() {
    let env = TestEnv::new();
    let serve = start_serve(&env, FLEET);
    let (log, fail) = recording_fleet(&env, &serve, FLEET);
    let leaked = versions(&env, &serve, "gw-1");
    assert_eq!(leaked.len(), 1, "{leaked:?}");
    let breach = crate::azure_verbs::breach_args("device:gw-1", "INC-0005");

    std::fs::write(&fail, "").unwrap();
    let r = run_fleet(&env, &serve, "azure", &breach);
    assert_eq!(r.code, 1, "the delivery failed: {}\n{}", r.stdout, r.stderr);
    let report = r.json();
    let d = device_roll(&report, "gw-1");
    assert_eq!(d["outcome"], "replaced", "{d}");
    assert!(
        d["delivery"]
            .as_str()
            .is_some_and(|w| w.contains("device unreachable")),
        "{d}"
    );
    assert_eq!(report["deliveries_owed"], 1, "{}", r.stdout);
    let replacement = d["new_thumbprint"].as_str().unwrap().to_string();
    let made = versions(&env, &serve, "gw-1");
    assert_eq!(made.len(), 2, "{made:?}");
    assert_eq!(made[0], leaked[0]);
    // `check` says the device is cut off and names the breach that delivers the replacement,
    // not `issue` and "the one before" (trial az9 G4): critical, as the leaked one is refused.
    let c = run_fleet(&env, &serve, "azure", &["check", "-o", "json"]);
    assert_eq!(c.code, 2, "{}\n{}", c.stdout, c.stderr);
    let p = crate::util::problem(&c.json(), "device:gw-1");
    let reason = p["reason"].as_str().unwrap();
    assert_eq!(p["level"], "critical", "{p}");
    assert!(
        reason.contains(&replacement)
            && reason.contains("cut off until it has the new one")
            && reason.contains(&format!("`certroll {}`", breach[..6].join(" ")))
            && !reason.contains("the one before")
            && !reason.contains("certroll issue"),
        "{reason}"
    );
    assert!(
        !c.stdout.contains("still owed their new certificate"),
        "{}",
        c.stdout
    );
    // `status` says the same (trial az10 N4: it showed the device assigned, with no word).
    let s = run_fleet(&env, &serve, "azure", &["status", "device:gw-1", "-o", "json"])
        .ok()
        .json();
    assert_eq!(device(&s, "gw-1")["cannot_connect"], reason, "{s}");
    let s = run_fleet(&env, &serve, "azure", &["status", "device:gw-1"]).ok();
    assert!(
        s.stdout.contains(&format!("cannot connect: {reason}")),
        "{}",
        s.stdout
    );
    std::fs::remove_file(&fail).unwrap();

    // The dry run of the rerun: the replacement is not compromised.
    let mut dry = breach.to_vec();
    dry.insert(5, "--dry-run");
    let r = run_fleet(&env, &serve, "azure", &dry);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let d = device_roll(&r.json(), "gw-1").clone();
    assert_eq!(d["outcome"], "already-replaced", "{d}");
    assert!(!d.to_string().contains(&replacement), "{d}");
    assert!(!d.to_string().contains(&made[1]), "{d}");

    let r = fleet_ok(&env, &serve, &breach);
    assert_eq!(r.json()["deliveries_owed"], 0, "{}", r.stdout);
    assert_eq!(
        deliveries(&log).last(),
        Some(&("gw-1".to_string(), made[1].clone())),
        "the rerun delivered the first replacement"
    );
    for args in [&breach[..5], &breach[..3]] {
        let r = fleet_ok(&env, &serve, &[args, &["--yes", "-o", "json"][..]].concat());
        let d = device_roll(&r.json(), "gw-1").clone();
        assert_eq!(d["outcome"], "already-replaced", "{args:?}: {d}");
    }
    assert_eq!(
        deliveries(&log).iter().filter(|(id, _)| id == "gw-1").count(),
        2,
        "issue's and the replacement's, each once: {:?}",
        deliveries(&log)
    );

    // One new vault version: the leaked one disabled, the replacement enabled and held.
    let show = run_fleet(
        &env,
        &serve,
        "azure",
        &["vault", "show", "device:gw-1", "-o", "json"],
    )
    .ok()
    .json();
    let enabled: Vec<(String, bool)> = show["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["version"].as_str().unwrap().to_string(), v["enabled"] == true))
        .collect();
    assert_eq!(
        enabled,
        vec![(made[0].clone(), false), (made[1].clone(), true)],
        "{show}"
    );
    let s = run_fleet(&env, &serve, "azure", &["status", "-o", "json"])
        .ok()
        .json();
    let held = device(&s, "gw-1");
    assert_eq!(held["installed"]["thumbprint"], replacement.as_str(), "{held}");
    assert_eq!(held["pending"], Value::Null, "{held}");
    let c = run_fleet(&env, &serve, "azure", &["check", "-o", "json"]);
    assert_eq!(c.code, 0, "{}\n{}", c.stdout, c.stderr);
    assert!(
        !c.json()["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["target"] == "device:gw-1"),
        "{}",
        c.stdout
    );

    // The replacement disabled in the vault by hand (trial az10 N2): critical, as it can no
    // longer be delivered, but the device still connects with it (DPS and the hub hold it,
    // and certroll revoked nothing); `check` says so, not "revoked" nor "cut off", and the
    // command it gives enables it again.
    let r = run_fleet(
        &env,
        &serve,
        "azure",
        &["vault", "update", "dev-gw-1", "--version", &made[1], "--disable"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let c = run_fleet(&env, &serve, "azure", &["check", "-o", "json"]);
    assert_eq!(c.code, 2, "{}\n{}", c.stdout, c.stderr);
    let p = crate::util::problem(&c.json(), "device:gw-1");
    let reason = p["reason"].as_str().unwrap();
    let enable = format!("certroll vault update dev-gw-1 --version {} --enable", made[1]);
    assert_eq!(p["level"], "critical", "{p}");
    assert!(
        reason.contains(&replacement)
            && reason.contains("disabled in the vault, not revoked")
            && reason.contains("still connects with it")
            && reason.contains(&format!("`{enable}`"))
            && !reason.contains("(revoked)")
            && !reason.contains("cut off")
            && !reason.contains("no working certificate"),
        "{reason}"
    );
    let args: Vec<&str> = enable.split(' ').skip(1).collect();
    fleet_ok(&env, &serve, &args);
    let c = run_fleet(&env, &serve, "azure", &["check", "-o", "json"]);
    assert_eq!(c.code, 0, "{}\n{}", c.stdout, c.stderr);

    // Another incident declares the replacement's key leaked too.
    let mut other = crate::azure_verbs::breach_args("device:gw-1", "INC-0006").to_vec();
    other.insert(5, "--dry-run");
    let r = run_fleet(&env, &serve, "azure", &other);
    let d = device_roll(&r.json(), "gw-1").clone();
    assert_eq!(d["outcome"], "would-replace", "{d}");
    assert_eq!(d["compromised"], serde_json::json!([replacement]), "{d}");
}

/// A CA breach whose deliveries failed (trial az10: G4 covered device breaches only): its
/// devices hold certificates under the compromised CA, which DPS refuses, so `check` says each
/// is cut off (critical), naming `certroll issue` (a rerun of the CA breach would replace the
/// CA again), not "the one before"; `status` says `cannot connect` alike. Once the devices can
/// be reached, that command delivers the replacements and `check` is OK.
#[test]
fn a_ca_breach_whose_deliveries_failed_is_critical_in_check_and_status_until_issue_delivers() {
    let env = TestEnv::new();
    let serve = start_serve(&env, FLEET);
    let (log, fail) = recording_fleet(&env, &serve, FLEET);
    std::fs::write(&fail, "").unwrap();
    let r = run_fleet(
        &env,
        &serve,
        "azure",
        &crate::azure_verbs::breach_args("ca:root", "INC-CA-1"),
    );
    assert_eq!(r.code, 1, "the deliveries failed: {}\n{}", r.stdout, r.stderr);
    assert_eq!(r.json()["deliveries_owed"], 2, "{}", r.stdout);

    let c = run_fleet(&env, &serve, "azure", &["check", "-o", "json"]);
    assert_eq!(c.code, 2, "{}\n{}", c.stdout, c.stderr);
    let report = c.json();
    let s = run_fleet(&env, &serve, "azure", &["status", "-o", "json"])
        .ok()
        .json();
    for id in ["gw-1", "gw-2"] {
        let p = crate::util::problem(&report, &format!("device:{id}"));
        let reason = p["reason"].as_str().unwrap();
        assert_eq!(p["level"], "critical", "{p}");
        assert!(
            reason.contains("cut off until it has the new one")
                && reason.contains("`certroll issue` delivers it")
                && !reason.contains("the one before")
                && !reason.contains("--breach ca:root"),
            "{reason}"
        );
        assert_eq!(device(&s, id)["cannot_connect"], reason, "{s}");
    }
    assert!(
        !c.stdout.contains("still owed their new certificate"),
        "{}",
        c.stdout
    );

    std::fs::remove_file(&fail).unwrap();
    fleet_ok(&env, &serve, &["issue", "-o", "json"]);
    assert_eq!(
        deliveries(&log).len(),
        4,
        "issue's and the replacements', each once: {:?}",
        deliveries(&log)
    );
    let c = run_fleet(&env, &serve, "azure", &["check", "-o", "json"]);
    assert_eq!(c.code, 0, "{}\n{}", c.stdout, c.stderr);
}

/// The report of device `id` in a roll's report.
fn device_roll<'a>(report: &'a Value, id: &str) -> &'a Value {
    let target = format!("device:{id}");
    report["devices"]
        .as_array()
        .and_then(|ds| ds.iter().find(|d| d["target"] == target.as_str()))
        .unwrap_or_else(|| panic!("no {target} in {report}"))
}

/// A device breach on azure with `delivery = "none"` (the default): the replacement waits for
/// the operator, so the device cannot have registered with it. The step failed ("has not
/// registered with its new certificate"), which rolled back its record while Key Vault, DPS and
/// the hub kept the replacement, and the rerun took the replacement for compromised (runbook
/// rehearsal; the same fault as a failed delivery). Now the breach finishes, says the
/// certificate waits for the operator, and its rerun does nothing.
#[test]
fn a_breach_whose_replacement_waits_for_the_operator_finishes_and_its_rerun_does_nothing() {
    let env = TestEnv::new();
    let serve = start_serve(&env, FLEET);
    crate::azure_verbs::fleet_plans_with(&env, &serve, FLEET, "delivery = \"none\"\n");
    fleet_ok(&env, &serve, &["issue"]);
    let leaked = versions(&env, &serve, "gw-1");
    assert_eq!(leaked.len(), 1, "{leaked:?}");
    let breach = crate::azure_verbs::breach_args("device:gw-1", "INC-0007");
    let r = fleet_ok(&env, &serve, &breach);
    let d = device_roll(&r.json(), "gw-1").clone();
    assert_eq!(d["outcome"], "replaced", "{d}");
    let made = versions(&env, &serve, "gw-1");
    assert_eq!(made.len(), 2, "{made:?}");
    assert!(r.stderr.contains("certroll export device:gw-1"), "{}", r.stderr);
    let no_incident = ["roll-primary", "--breach", "device:gw-1", "--yes", "-o", "json"];
    for args in [&breach[..], &no_incident[..]] {
        let r = fleet_ok(&env, &serve, args);
        let d = device_roll(&r.json(), "gw-1").clone();
        assert_eq!(d["outcome"], "already-replaced", "{args:?}: {d}");
    }
    assert_eq!(versions(&env, &serve, "gw-1"), made, "no version more");
    assert_leaked_disabled_replacement_enabled(&env, &serve);
}

/// A device breach killed after its remote writes, before its unit committed (the replacement
/// in Key Vault, DPS's enrollment and the hub; the fleet record still naming the leaked
/// certificate). The rerun found the replacement in the enrollment's slot, took it for
/// compromised, disabled it and made a third certificate. The replacement carries the step's
/// mark, so the rerun adopts it: no version more, the leaked one alone disabled, the
/// replacement installed, and a further rerun does nothing.
#[test]
fn a_breach_killed_before_its_commit_adopts_its_own_replacement_on_rerun_and_never_disables_it() {
    let env = TestEnv::new();
    let serve = start_serve(&env, FLEET);
    let (log, _) = recording_fleet(&env, &serve, FLEET);
    let leaked = versions(&env, &serve, "gw-1");
    assert_eq!(leaked.len(), 1, "{leaked:?}");
    let breach = crate::azure_verbs::breach_args("device:gw-1", "INC-0008");

    let r = run_with(
        &env,
        &serve,
        &[(certroll::ops::journal::FAULT_BEFORE_COMMIT_ENV, "1")],
        &breach,
    );
    assert!(r.code != 0 && r.code != 1, "killed: {}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("fault injection"), "{}", r.stderr);
    let made = versions(&env, &serve, "gw-1");
    assert_eq!(made.len(), 2, "the replacement is in Key Vault: {made:?}");
    assert_eq!(
        deliveries(&log).last(),
        Some(&("gw-1".to_string(), made[1].clone())),
        "the device got the replacement before the kill"
    );

    // The dry run lists what the rerun does (trial az10 N3): it takes that replacement, issues
    // nothing, and does not do again what the killed run did (the leaked certificate is out of
    // the enrollment and disabled already).
    let dry_args: Vec<&str> = breach
        .iter()
        .copied()
        .filter(|a| *a != "--yes")
        .chain(["--dry-run"])
        .collect();
    let dry = fleet_ok(&env, &serve, &dry_args).json();
    assert_eq!(dry["resumed"], true, "{dry}");
    let planned = device_roll(&dry, "gw-1")["steps"].to_string();
    assert!(!planned.contains("issue a new certificate"), "{dry}");
    assert!(
        planned.contains("none is issued") && planned.contains(&made[1]),
        "{dry}"
    );
    assert!(!planned.contains("delete the compromised"), "{dry}");
    assert!(!planned.contains("disable vault version"), "{dry}");
    assert_eq!(
        versions(&env, &serve, "gw-1"),
        made,
        "the dry run changes nothing"
    );

    let r = run_fleet(&env, &serve, "azure", &breach);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let report = r.json();
    assert_eq!(report["resumed"], true, "{report}");
    let d = device_roll(&report, "gw-1");
    assert_eq!(d["outcome"], "replaced", "{d}");
    assert_eq!(
        d["compromised"].as_array().map(Vec::len),
        Some(1),
        "only the leaked one: {d}"
    );
    assert_eq!(versions(&env, &serve, "gw-1"), made, "no version more");
    assert_leaked_disabled_replacement_enabled(&env, &serve);
    let s = run_fleet(&env, &serve, "azure", &["status", "-o", "json"])
        .ok()
        .json();
    let held = device(&s, "gw-1");
    assert_eq!(held["installed"]["thumbprint"], d["new_thumbprint"], "{held}");
    let c = run_fleet(&env, &serve, "azure", &["check", "-o", "json"]);
    assert_eq!(c.code, 0, "{}\n{}", c.stdout, c.stderr);

    let r = fleet_ok(&env, &serve, &breach);
    let again = device_roll(&r.json(), "gw-1").clone();
    assert_eq!(again["outcome"], "already-replaced", "{again}");
    assert_eq!(versions(&env, &serve, "gw-1"), made, "the rerun changes nothing");
}

/// A CA breach whose delivery failed for every device (the hook cannot reach them): the unit
/// failed after Key Vault, DPS and the hub held the replacements, and every rerun stopped
/// there again while the devices were away, the rest of the fleet behind that unit never
/// replaced. Now the breach stands as a device's own does: each device `replaced` with its
/// delivery owed, the compromised certificates already shut out of DPS and the hub, exit 1;
/// once the devices are back, the rerun delivers each replacement once, exits 0, and makes no
/// version more.
#[test]
fn a_ca_breach_whose_deliveries_failed_stands_and_its_rerun_delivers_the_replacements_once() {
    let env = TestEnv::new();
    let fleet = crate::azure_foreign::FLEET;
    let serve = start_serve(&env, fleet);
    let (log, fail) = recording_fleet(&env, &serve, fleet);
    let ids = ["gw-1", "gw-2", "gw-3", "gw-4"];
    let breach = crate::azure_verbs::breach_args("ca:factory", "INC-0010");

    std::fs::write(&fail, "").unwrap();
    let r = run_fleet(&env, &serve, "azure", &breach);
    assert_eq!(r.code, 1, "the deliveries failed: {}\n{}", r.stdout, r.stderr);
    let report = r.json();
    assert_eq!(report["deliveries_owed"], 4, "{}", r.stdout);
    let mut made = Vec::new();
    for id in ids {
        let d = device_roll(&report, id);
        assert_eq!(d["outcome"], "replaced", "{d}");
        assert!(
            d["delivery"]
                .as_str()
                .is_some_and(|w| w.contains("device unreachable")),
            "{d}"
        );
        let v = versions(&env, &serve, id);
        assert_eq!(v.len(), 2, "{id}: {v:?}");
        made.push(v);
    }
    let s = run_fleet(&env, &serve, "azure", &["status", "-o", "json"])
        .ok()
        .json();
    for id in ids {
        let d = device_roll(&report, id);
        let held = device(&s, id);
        assert_eq!(
            held["hub_identity"]["primary_thumbprint"], d["new_thumbprint"],
            "{id}: the hub holds only the replacement: {held}"
        );
        assert_eq!(
            held["hub_identity"]["secondary_thumbprint"],
            Value::Null,
            "{held}"
        );
    }
    std::fs::remove_file(&fail).unwrap();

    let r = fleet_ok(&env, &serve, &breach);
    assert_eq!(r.json()["deliveries_owed"], 0, "{}", r.stdout);
    for (id, v) in ids.iter().zip(&made) {
        assert_eq!(&versions(&env, &serve, id), v, "{id}: no version more");
        let got: Vec<(String, String)> = deliveries(&log).into_iter().filter(|(d, _)| d == id).collect();
        assert_eq!(
            got,
            vec![(id.to_string(), v[0].clone()), (id.to_string(), v[1].clone())],
            "{id}: issue's certificate and the replacement, each once"
        );
    }
    let c = run_fleet(&env, &serve, "azure", &["check", "-o", "json"]);
    assert_eq!(c.code, 0, "{}\n{}", c.stdout, c.stderr);
}

/// The vault's versions of a device's certificate, oldest first: `(version, enabled)`.
fn versions_enabled(env: &TestEnv, serve: &Serve, id: &str) -> Vec<(String, bool)> {
    let show = run_fleet(
        env,
        serve,
        "azure",
        &["vault", "show", &format!("device:{id}"), "-o", "json"],
    )
    .ok()
    .json();
    show["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["version"].as_str().unwrap().to_string(), v["enabled"] == true))
        .collect()
}

/// Incident A's breach of `gw-1` killed right after its Key Vault import (its replacement in the
/// vault, nothing else written), then incident B's breach finished. Returns A's command, the
/// version A made and B's report.
pub(crate) fn a_killed_after_its_import_then_b(
    env: &TestEnv,
    serve: &Serve,
) -> ([&'static str; 8], String, Value) {
    crate::azure_verbs::fleet_plans_with(env, serve, FLEET, "delivery = \"none\"\n");
    fleet_ok(env, serve, &["issue"]);
    let a = crate::azure_verbs::breach_args("device:gw-1", "INC-A");
    let killed = run_with(env, serve, &[("CERTROLL_FAULT_AFTER_VAULT_WRITES", "1")], &a);
    assert!(
        killed.code != 0 && killed.code != 1,
        "killed: {}\n{}",
        killed.stdout,
        killed.stderr
    );
    let made = versions(env, serve, "gw-1");
    assert_eq!(made.len(), 2, "A's replacement is in Key Vault: {made:?}");
    let b = fleet_ok(
        env,
        serve,
        &crate::azure_verbs::breach_args("device:gw-1", "INC-B"),
    )
    .json();
    assert_eq!(device_roll(&b, "gw-1")["outcome"], "replaced", "{b}");
    (a, made[1].clone(), b)
}

/// Trial az10 N1 on azure: A killed after its import, then B, then A's command again (the
/// resumed run, then fresh ones). A's replacement is found in the vault by its mark, and B's
/// record did not know A: the resumed A took B's good certificate for compromised, and A's next
/// run revoked it and issued another. Now every A run says `already-replaced` and B's
/// certificate stays the one in force, enabled.
#[test]
fn an_incident_killed_after_its_import_then_a_later_one_then_the_first_again_replaces_nothing_twice() {
    let env = TestEnv::new();
    let serve = start_serve(&env, FLEET);
    let (a, _, b) = a_killed_after_its_import_then_b(&env, &serve);
    let after_b = device_roll(&b, "gw-1")["new_thumbprint"].clone();
    let held = versions(&env, &serve, "gw-1");
    for n in 0..3 {
        let again = fleet_ok(&env, &serve, &a).json();
        assert_eq!(again["resumed"], n == 0, "{again}");
        let d = device_roll(&again, "gw-1");
        assert_eq!(d["outcome"], "already-replaced", "run {n}: {again}");
        assert!(
            !d["compromised"].to_string().contains(after_b.as_str().unwrap()),
            "B's certificate is not compromised: {again}"
        );
        assert_eq!(
            versions(&env, &serve, "gw-1"),
            held,
            "run {n}: no version more: {again}"
        );
        let newest = versions_enabled(&env, &serve, "gw-1").pop().unwrap();
        assert!(newest.1, "B's replacement stays enabled: {again}");
    }
    let s = run_fleet(&env, &serve, "azure", &["status", "device:gw-1", "-o", "json"])
        .ok()
        .json();
    // `delivery = "none"`: B's replacement waits for the operator.
    assert_eq!(
        device(&s, "gw-1")["pending"]["cert"]["thumbprint"],
        after_b,
        "{s}"
    );
}

/// Trial az10 N1's orphan: A killed after its Key Vault import, then B replaced the device, then
/// A resumed and said `already-replaced`, leaving its replacement (never enrolled, never
/// delivered) enabled with an exportable key while `check` said OK. Now the resumed A disables
/// it and says so; B's replacement stays enabled, and A's reruns change nothing.
#[test]
fn a_resumed_breach_disables_its_own_replacement_a_later_breach_superseded_and_its_reruns_change_nothing() {
    let env = TestEnv::new();
    let serve = start_serve(&env, FLEET);
    let (a, orphan, b) = a_killed_after_its_import_then_b(&env, &serve);
    let after_b = device_roll(&b, "gw-1")["new_thumbprint"].clone();
    let before = versions_enabled(&env, &serve, "gw-1");
    assert_eq!(before.len(), 3, "{before:?}");
    assert_eq!(
        before[1],
        (orphan.clone(), true),
        "A's replacement is left enabled: {before:?}"
    );

    let dry_args: Vec<&str> = a
        .iter()
        .copied()
        .filter(|x| *x != "--yes")
        .chain(["--dry-run"])
        .collect();
    let dry = fleet_ok(&env, &serve, &dry_args).json();
    let said = device_roll(&dry, "gw-1")["steps"].to_string();
    assert!(
        said.contains("would be disabled") && said.contains(&orphan),
        "{dry}"
    );
    assert_eq!(
        versions_enabled(&env, &serve, "gw-1"),
        before,
        "the dry run changes nothing"
    );

    let resumed = run_fleet(&env, &serve, "azure", &a[..6]);
    assert_eq!(resumed.code, 0, "{}\n{}", resumed.stdout, resumed.stderr);
    assert!(
        resumed.stdout.contains("never used") && resumed.stdout.contains(&orphan),
        "the output says so: {}",
        resumed.stdout
    );
    let after = versions_enabled(&env, &serve, "gw-1");
    let want: Vec<(String, bool)> = vec![
        (before[0].0.clone(), false),
        (orphan.clone(), false),
        (before[2].0.clone(), true),
    ];
    assert_eq!(after, want, "A's unused replacement disabled, B's enabled");
    // Only B's replacement waiting for the operator (`delivery = "none"`) is left to say.
    let c = run_fleet(&env, &serve, "azure", &["check", "-o", "json"]).json();
    assert_eq!(c["counts"]["critical"], 0, "{c}");

    for n in 0..2 {
        let again = fleet_ok(&env, &serve, &a).json();
        assert_eq!(again["resumed"], false, "{again}");
        assert_eq!(
            device_roll(&again, "gw-1")["outcome"],
            "already-replaced",
            "run {n}: {again}"
        );
        assert_eq!(
            versions_enabled(&env, &serve, "gw-1"),
            want,
            "run {n} changes nothing: {again}"
        );
    }
    let s = run_fleet(&env, &serve, "azure", &["status", "device:gw-1", "-o", "json"])
        .ok()
        .json();
    assert_eq!(
        device(&s, "gw-1")["pending"]["cert"]["thumbprint"],
        after_b,
        "{s}"
    );
}

/// gw-1 has two vault versions: the leaked one disabled, its breach replacement enabled.
fn assert_leaked_disabled_replacement_enabled(env: &TestEnv, serve: &Serve) {
    let versions = versions_enabled(env, serve, "gw-1");
    let enabled: Vec<bool> = versions.iter().map(|(_, enabled)| *enabled).collect();
    assert_eq!(
        enabled,
        vec![false, true],
        "the leaked version disabled, the replacement not: {versions:?}"
    );
}

/// Trial az14 F2: another client put its certificate into the slot of individual enrollment
/// `gw-1` where certroll's new one waited for its delivery (the hook had failed). DPS refuses
/// the owed certificate now, so delivering it hands the device a key that cannot connect.
/// `check` names the foreign certificate alone (critical), not `certroll issue`; a roll of
/// another device holds the delivery back (reported, not attempted) and exits 0; the breach
/// of the enrollment, the critical line's remedy, replaces the owed version and delivers the
/// replacement, after which nothing is owed or critical.
#[test]
fn an_owed_delivery_whose_slot_another_client_took_is_held_back_until_the_enrollment_is_taken_back() {
    use crate::azure_foreign::{FLEET as ENROLLMENTS, change_enrollment, fingerprint};
    let env = TestEnv::new();
    let serve = start_serve(&env, ENROLLMENTS);
    let (log, fail) = recording_fleet(&env, &serve, ENROLLMENTS);
    std::fs::write(&fail, "").unwrap();
    let r = run_fleet(
        &env,
        &serve,
        "azure",
        &["roll-secondary", "device:gw-1", "-o", "json"],
    );
    assert_eq!(r.code, 1, "the delivery failed: {}\n{}", r.stdout, r.stderr);
    assert_eq!(r.json()["deliveries_owed"], 1, "{}", r.stdout);
    let owed = versions(&env, &serve, "gw-1").pop().unwrap();

    // The other client, after certroll's write: its certificate where the owed one was.
    crate::azure_verbs::make_cert(&env, "gw-1", false);
    let pem = std::fs::read_to_string(env.path("gw-1-cert.pem")).unwrap();
    change_enrollment(&env, &serve, "gw-1", |e| {
        e["attestation"]["x509"]["clientCertificates"]["secondary"] =
            serde_json::json!({ "certificate": pem });
    });
    let foreign = fingerprint(&env, "gw-1-cert.pem");
    std::fs::remove_file(&fail).unwrap();

    let c = run_fleet(&env, &serve, "azure", &["check", "-o", "json"]);
    assert_eq!(c.code, 2, "{}\n{}", c.stdout, c.stderr);
    let problems = c.json()["problems"].as_array().unwrap().clone();
    assert_eq!(problems.len(), 1, "the foreign certificate alone: {problems:?}");
    assert_eq!(problems[0]["target"], "device:gw-1", "{problems:?}");
    assert_eq!(problems[0]["level"], "critical", "{problems:?}");
    let reason = problems[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains(&foreign) && reason.contains("`certroll roll-primary --breach enrollment:gw-1`"),
        "{reason}"
    );
    assert!(!reason.contains("certroll issue"), "{reason}");

    // A roll of another device: the owed delivery is held back, named, and not attempted.
    let r = run_fleet(
        &env,
        &serve,
        "azure",
        &["roll-secondary", "device:gw-2", "-o", "json"],
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let report = r.json();
    assert_eq!(report["deliveries_owed"], 0, "{report}");
    let held = report["held_back_deliveries"].as_array().unwrap();
    assert_eq!(held.len(), 1, "{report}");
    assert_eq!(held[0]["target"], "device:gw-1", "{report}");
    let why = held[0]["reason"].as_str().unwrap();
    assert!(
        why.contains(&foreign) && why.contains("roll-primary --breach enrollment:gw-1"),
        "{why}"
    );
    assert!(
        !r.stderr.contains("had not reached their devices"),
        "{}",
        r.stderr
    );
    let text = run_fleet(&env, &serve, "azure", &["roll-secondary", "device:gw-2"]);
    assert_eq!(text.code, 0, "{}\n{}", text.stdout, text.stderr);
    assert!(
        text.stdout
            .contains("device:gw-1: delivery held back: its new certificate"),
        "{}",
        text.stdout
    );
    assert!(
        !deliveries(&log).iter().any(|(d, v)| d == "gw-1" && *v == owed),
        "never delivered"
    );
    // `issue` of another target holds it back too; of the whole plan it leaves gw-1 alone (exit
    // 1, as a roll does), naming the other client's certificate and the remedy, and delivers
    // nothing to it.
    let r = run_fleet(&env, &serve, "azure", &["issue", "enrollment:gw-2", "-o", "json"]);
    assert_eq!(
        r.code, 0,
        "{}
{}",
        r.stdout, r.stderr
    );
    assert_eq!(
        r.json()["held_back_deliveries"][0]["target"],
        "device:gw-1",
        "{}",
        r.stdout
    );
    let r = run_fleet(&env, &serve, "azure", &["issue"]);
    assert_eq!(
        r.code, 1,
        "{}
{}",
        r.stdout, r.stderr
    );
    assert!(
        r.stdout.contains(&format!(
            "device:gw-1: not issued: another client put certificate {foreign}"
        )) && r.stdout.contains("roll-primary --breach enrollment:gw-1")
            && !r.stderr.contains("had not reached"),
        "{}
{}",
        r.stdout,
        r.stderr
    );
    assert!(
        !deliveries(&log).iter().any(|(d, v)| d == "gw-1" && *v == owed),
        "never delivered"
    );

    // The remedy: the breach of the enrollment takes it back; its replacement is delivered,
    // the held version is owed nothing any more.
    let r = fleet_ok(
        &env,
        &serve,
        &[
            "roll-primary",
            "--breach",
            "enrollment:gw-1",
            "--incident",
            "F2",
            "--yes",
            "-o",
            "json",
        ],
    );
    assert_eq!(r.json()["deliveries_owed"], 0, "{}", r.stdout);
    assert_eq!(
        r.json()["held_back_deliveries"],
        serde_json::json!([]),
        "{}",
        r.stdout
    );
    let replacement = versions(&env, &serve, "gw-1").pop().unwrap();
    let got: Vec<String> = deliveries(&log)
        .into_iter()
        .filter(|(d, _)| d == "gw-1")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(got.last(), Some(&replacement), "{got:?}");
    assert!(!got.contains(&owed), "{got:?}");
    let c = run_fleet(&env, &serve, "azure", &["check", "-o", "json"]);
    assert_eq!(c.code, 0, "{}\n{}", c.stdout, c.stderr);
}
