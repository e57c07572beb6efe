//! `check`: monitoring exit codes and JSON at several points of a certificate's life.

use crate::util::*;

fn check(env: &TestEnv, now: &str, extra: &[&str]) -> (i32, serde_json::Value) {
    let mut args = vec!["--plan", "plan.toml", "--now", now, "check", "-o", "json"];
    args.extend_from_slice(extra);
    let run = env.run(&args);
    let json = run.json();
    (run.code, json)
}

#[test]
fn check_follows_the_lifetime_of_the_fleet() {
    let env = TestEnv::new();
    env.quickstart();
    // Nothing issued yet: every certificate is missing.
    let (code, j) = check(&env, NOW, &[]);
    assert_eq!(code, 2);
    assert_eq!(j["counts"]["critical"], 53);
    assert!(!env.store_dir().exists(), "check changes nothing");

    env.run(&["--plan", "plan.toml", "issue"]).ok();
    // Device certs: 2026-11-22T23:55 (backdated by the default 5-minute skew) .. 2027-11-23;
    // email at 80% of that (2027-09-10T23:59), auto-renew 30 days before.
    let (code, j) = check(&env, NOW, &[]);
    assert_eq!((code, j["status"].as_str().unwrap()), (0, "ok"), "{j}");
    assert_eq!(j["next_due"]["action"], "email-contacts");
    assert_eq!(j["next_due"]["at"], "2027-09-10T23:59:00Z");

    let (code, j) = check(&env, "2027-09-20T00:00:00Z", &[]);
    assert_eq!(code, 1);
    assert_eq!(j["counts"]["warning"], 51, "{j}");
    assert_eq!(j["problems"][0]["actions_due"][0]["action"], "email-contacts");
    assert_eq!(j["next_due"]["action"], "auto-renew");

    let (_, j) = check(&env, "2027-10-30T00:00:00Z", &[]);
    let due: Vec<&str> = j["problems"][0]["actions_due"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert_eq!(due, ["email-contacts", "auto-renew"]);

    // Thresholds: the same instant can be made critical by the operator.
    let (code, _) = check(&env, "2027-11-20T00:00:00Z", &["--critical-within", "7"]);
    assert_eq!(code, 2);
    // CAs live ten years: with only a warning window they are OK long after devices expired.
    let (code, j) = check(&env, "2028-01-01T00:00:00Z", &["ca:root", "ca:factory"]);
    assert_eq!(code, 0, "{j}");
    let (code, j) = check(&env, "2028-01-01T00:00:00Z", &["device:gateway-01"]);
    assert_eq!(code, 2);
    assert!(
        j["problems"][0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("expired"),
        "{j}"
    );
    let (code, j) = check(&env, "2036-06-01T00:00:00Z", &["ca:root", "--warn-within", "365"]);
    assert_eq!(
        (code, j["problems"][0]["level"].as_str().unwrap()),
        (1, "warning"),
        "{j}"
    );
}

#[test]
fn check_reports_unknown_when_it_cannot_read() {
    let env = TestEnv::new();
    env.quickstart();
    env.run(&["--plan", "plan.toml", "issue"]).ok();
    assert_eq!(env.run(&["--plan", "missing.toml", "check"]).code, 3);
    assert_eq!(
        env.run(&["--plan", "plan.toml", "check", "--warn-within", "soon"])
            .code,
        3,
        "a usage error is UNKNOWN"
    );
    std::fs::remove_file(env.store_dir().join("state.db.key")).unwrap();
    let run = env.run(&["--plan", "plan.toml", "check"]);
    assert_eq!(run.code, 3);
    assert!(run.stderr.starts_with("UNKNOWN"), "{}", run.stderr);
}

#[test]
fn a_revoked_device_is_counted_not_paged_for() {
    let env = TestEnv::new();
    env.quickstart();
    env.plan_run(&["issue"]).ok();
    env.plan_run(&[
        "revoke",
        "device:sensor-09",
        "--reason",
        "key-compromise",
        "--yes",
    ])
    .ok();
    let r = env.plan_run(&["check", "-o", "json"]).ok().json();
    assert_eq!(r["counts"]["revoked"], 1, "{r}");
    assert_eq!(r["counts"]["critical"], 0, "{r}");
}
