//! Issue 13: a decision whose inputs did not change is not made again, and is made again as soon
//! as one did; a cron run with nothing to do leaves the store as it was; the journal keeps what
//! resume and reruns need and no more.

use crate::util::*;

fn reprovision(env: &TestEnv, args: &[&str], code: i32) -> serde_json::Value {
    env.plan_run(&[&["reprovision", "-o", "json"][..], args].concat())
        .code(code)
        .json()
}

fn status_of(r: &serde_json::Value, id: &str) -> String {
    r["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["device"] == id)
        .and_then(|d| d["status"].as_str())
        .unwrap_or_else(|| panic!("no {id} in {r}"))
        .to_string()
}

fn counts(r: &serde_json::Value) -> (u64, u64, u64) {
    (
        r["assigned"].as_u64().unwrap(),
        r["unchanged"].as_u64().unwrap(),
        r["rejected"].as_u64().unwrap(),
    )
}

fn issued() -> TestEnv {
    let env = TestEnv::new();
    env.quickstart();
    env.plan_run(&["issue"]).ok();
    env
}

/// Runs the sqlite3 CLI on the test's store.
fn sqlite(env: &TestEnv, sql: &str) -> String {
    let db = env.store_dir().join("state.db");
    let out = std::process::Command::new("sqlite3")
        .arg(&db)
        .arg(sql)
        .output()
        .expect("the sqlite3 CLI");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn a_noop_reprovision_leaves_every_device_and_records_nothing() {
    let env = issued();
    let runs = sqlite(&env, "SELECT count(*) FROM journal_runs");
    let r = reprovision(&env, &[], 0);
    assert_eq!(counts(&r), (0, 51, 0), "{r}");
    assert_eq!(
        r["run"],
        serde_json::Value::Null,
        "nothing done, nothing recorded: {r}"
    );
    assert_eq!(sqlite(&env, "SELECT count(*) FROM journal_runs"), runs);
    // --force decides every device afresh and registers it again.
    let r = reprovision(&env, &["--force"], 0);
    assert_eq!(counts(&r), (51, 0, 0), "{r}");
    assert_eq!(counts(&reprovision(&env, &[], 0)), (0, 51, 0));
}

#[test]
fn a_noop_reprovision_notices_a_revoked_certificate() {
    let env = issued();
    assert_eq!(counts(&reprovision(&env, &[], 0)), (0, 51, 0));
    env.plan_run(&[
        "revoke",
        "device:sensor-05",
        "--reason",
        "key-compromise",
        "--yes",
    ])
    .ok();
    let r = reprovision(&env, &["group:sensors"], 1);
    assert_eq!(status_of(&r, "sensor-05"), "disabled", "{r}");
    assert_eq!(counts(&r), (0, 49, 1), "{r}");
}

#[test]
fn a_noop_reprovision_notices_a_disabled_enrollment() {
    let env = issued();
    assert_eq!(counts(&reprovision(&env, &[], 0)), (0, 51, 0));
    env.plan_run(&[
        "revoke",
        "group:sensors",
        "--reason",
        "cessation-of-operation",
        "--yes",
    ])
    .ok();
    let r = reprovision(&env, &[], 1);
    assert_eq!(status_of(&r, "sensor-01"), "disabled", "{r}");
    assert_eq!(
        counts(&r),
        (0, 1, 50),
        "the gateway's own enrollment still holds: {r}"
    );
}

#[test]
fn a_noop_reprovision_notices_a_removed_ca() {
    let env = issued();
    assert_eq!(counts(&reprovision(&env, &[], 0)), (0, 51, 0));
    env.plan_run(&["revoke", "ca:root", "--reason", "ca-compromise", "--yes"])
        .ok();
    let r = reprovision(&env, &[], 1);
    assert_eq!(status_of(&r, "sensor-07"), "failed", "{r}");
    assert_eq!(counts(&r), (0, 1, 50), "{r}");
}

#[test]
fn a_noop_reprovision_notices_a_hub_identity_that_no_longer_lets_the_device_in() {
    let env = issued();
    assert_eq!(counts(&reprovision(&env, &[], 0)), (0, 51, 0));
    // Someone cleared the device's thumbprints in the hub, and disabled another device there:
    // the recorded decision still holds, but the devices cannot connect, so they register again.
    sqlite(
        &env,
        "UPDATE hub_devices SET primary_thumbprint = NULL, secondary_thumbprint = NULL
           WHERE device_id = 'sensor-03';
         UPDATE hub_devices SET status = 'disabled' WHERE device_id = 'sensor-04';",
    );
    let r = reprovision(&env, &[], 0);
    assert_eq!(status_of(&r, "sensor-03"), "assigned", "{r}");
    assert_eq!(counts(&r), (2, 49, 0), "{r}");
    assert_ne!(
        sqlite(
            &env,
            "SELECT primary_thumbprint FROM hub_devices WHERE device_id = 'sensor-03'"
        ),
        "",
        "re-provisioning put the presented certificate back into the hub"
    );
    // Registration does not enable an identity the hub's operator disabled: that device is
    // registered again on every run, while the hub refuses it.
    let r = reprovision(&env, &[], 0);
    assert_eq!(status_of(&r, "sensor-03"), "unchanged", "{r}");
    assert_eq!(status_of(&r, "sensor-04"), "assigned", "{r}");
    assert_eq!(counts(&r), (1, 50, 0), "{r}");
}

#[test]
fn a_recorded_decision_ends_with_the_certificate() {
    let env = issued();
    // A year and a day later every device certificate has expired: no decision made while
    // it was valid may stand.
    let later = "2027-11-24T00:00:00Z";
    let r = env
        .plan_run(&["--now", later, "reprovision", "group:sensors", "-o", "json"])
        .code(1)
        .json();
    assert_eq!(counts(&r), (0, 0, 50), "{r}");
    assert_eq!(status_of(&r, "sensor-01"), "failed", "{r}");
}

#[test]
fn fifty_cron_runs_with_nothing_due_leave_the_store_as_it_was() {
    let env = issued();
    let cron = || {
        let r = env
            .plan_run(&["roll-secondary", "--due", "-o", "json"])
            .ok()
            .json();
        assert!(
            r["devices"]
                .as_array()
                .unwrap()
                .iter()
                .all(|d| d["outcome"] == "not-due"),
            "{r}"
        );
        assert_eq!(r["run"], serde_json::Value::Null, "{r}");
        assert_eq!(r["devices"][0]["target"], "device:sensor-01", "plan order: {r}");
    };
    cron();
    let size = |env: &TestEnv| {
        ["state.db", "state.db-wal"]
            .iter()
            .filter_map(|f| std::fs::metadata(env.store_dir().join(f)).ok())
            .map(|m| m.len())
            .sum::<u64>()
    };
    let before = size(&env);
    let runs = sqlite(&env, "SELECT count(*) FROM journal_runs");
    for _ in 0..50 {
        cron();
    }
    assert_eq!(size(&env), before, "50 runs with nothing due grew the store");
    assert_eq!(sqlite(&env, "SELECT count(*) FROM journal_runs"), runs);
}

#[test]
fn finished_runs_are_pruned_to_what_reruns_read() {
    let env = issued();
    // Three rolls of the group a month apart, then a breach of one device.
    for now in [
        "2026-12-01T00:00:00Z",
        "2027-01-01T00:00:00Z",
        "2027-02-01T00:00:00Z",
    ] {
        env.plan_run(&["--now", now, "roll-secondary", "group:sensors"])
            .ok();
    }
    let t = "2027-02-02T00:00:00Z";
    let breach = [
        "--now",
        t,
        "roll-primary",
        "--breach",
        "device:sensor-03",
        "--yes",
        "-o",
        "json",
    ];
    env.plan_run(&breach).ok();
    // Only the newest finished run holds steps of a target and kind; older ones are gone.
    let stale = sqlite(
        &env,
        "SELECT count(*) FROM journal_steps s WHERE EXISTS (SELECT 1 FROM journal_steps n
           WHERE n.target = s.target AND n.kind = s.kind AND n.run_id > s.run_id)",
    );
    assert_eq!(stale, "0");
    // The breach is still known as done: a rerun replaces nothing.
    let again = env.plan_run(&breach).ok().json();
    assert_eq!(again["devices"][0]["outcome"], "already-replaced", "{again}");
}
