//! Issue 10, the roll and registration items: soft-deleted certificates during rolls and issue,
//! renewals capped by their issuer, not yet valid versus expired and the notBefore skew, and
//! `--now` far from the real clock.

use crate::util::*;

/// Eleven months after [`NOW`]: the quickstart's device certificates (365 days, auto-renew 30
/// days before expiry) are all due.
const DUE: &str = "2027-11-01T00:00:00Z";

fn status_json(env: &TestEnv, now: &str) -> serde_json::Value {
    env.plan_run(&["status", "-o", "json", "--now", now]).ok().json()
}

// ------------------------------------------------------------------ item 17

/// A device certificate deleted with `vault delete --force` is named as deleted by `roll --due`
/// and by `issue` (exit 2), nothing changes, and no journal run is left open: once it is
/// recovered, the next roll starts afresh and rolls every device that is due.
#[test]
fn a_soft_deleted_certificate_stops_rolls_and_issue_up_front() {
    let env = TestEnv::new();
    env.quickstart();
    env.plan_run(&["issue"]).ok();
    env.plan_run(&["vault", "delete", "dev-sensor-07", "--force"])
        .ok();
    let before = status_json(&env, DUE);

    // A named roll refuses up front; the cron `--due` run holds the device back and rolls the
    // rest (fidelity6).
    let roll = env
        .plan_run(&["roll-secondary", "group:sensors", "--now", DUE, "-y"])
        .code(2);
    assert!(
        roll.stderr.contains("device:sensor-07") && roll.stderr.contains("`dev-sensor-07` is deleted"),
        "the deleted certificate is named as deleted:\n{}",
        roll.stderr
    );
    assert!(!roll.stderr.contains("has not been issued"), "{}", roll.stderr);
    assert!(
        roll.stderr.contains("vault recover dev-sensor-07"),
        "{}",
        roll.stderr
    );
    assert_eq!(status_json(&env, DUE), before, "a refused roll changes nothing");

    let dry = env
        .plan_run(&["roll-secondary", "group:sensors", "--now", DUE, "--dry-run"])
        .code(2);
    assert!(
        dry.stderr.contains("`dev-sensor-07` is deleted"),
        "{}",
        dry.stderr
    );

    let issue = env.plan_run(&["issue", "device:sensor-07"]).code(2);
    assert!(
        issue.stderr.contains("`dev-sensor-07` is deleted") && !issue.stderr.contains("constraint"),
        "{}",
        issue.stderr
    );
    let all = env.plan_run(&["issue"]).code(2);
    assert!(
        all.stderr.contains("`dev-sensor-07` is deleted"),
        "{}",
        all.stderr
    );
    assert_eq!(status_json(&env, DUE), before, "a refused issue changes nothing");

    // A deleted CA stops the rolls of what it signs, before anything is written.
    env.plan_run(&["vault", "recover", "dev-sensor-07"]).ok();
    env.plan_run(&["vault", "delete", "ca-factory", "--force"]).ok();
    let by_ca = env
        .plan_run(&["roll-secondary", "device:gateway-01", "--now", DUE, "-y"])
        .code(2);
    assert!(
        by_ca.stderr.contains("ca:factory") && by_ca.stderr.contains("`ca-factory` is deleted"),
        "{}",
        by_ca.stderr
    );
    env.plan_run(&["vault", "recover", "ca-factory"]).ok();

    // No run was left open: the next roll is not a resumption, and rolls all 51 devices.
    let next = env
        .plan_run(&["roll-secondary", "--due", "--now", DUE, "-y", "-o", "json"])
        .ok()
        .json();
    assert_eq!(next["resumed"], false, "{next:#}");
    let rolled = next["devices"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["outcome"] == "rolled")
        .count();
    assert_eq!(rolled, 51, "{next:#}");
}

// ------------------------------------------------------------------ item 15

/// The quickstart with a factory CA that lives 300 days: every device certificate (365 days) is
/// capped at the CA's notAfter.
fn capped_plan(env: &TestEnv) {
    let text = std::fs::read_to_string(env.quickstart()).unwrap();
    let text = text.replace(
        "path_len = 0\npolicy = \"ca\"",
        "path_len = 0\npolicy = \"short-ca\"",
    ) + "\n[policies.short-ca]\nkey = { type = \"EC\", curve = \"P-384\", exportable = false }\nvalidity_days = 300\n";
    env.write("plan.toml", &text);
}

/// A device due for renewal whose new certificate would end no later than the one it holds
/// (its CA's expiry caps both) is not renewed: `roll --due` reports it `capped` and says the
/// issuing CA must be renewed first, any number of times, and `check` says the same.
#[test]
fn a_renewal_that_cannot_move_the_expiry_later_does_not_happen() {
    let env = TestEnv::new();
    capped_plan(&env);
    env.plan_run(&["issue"]).ok();
    // The factory CA ends 2027-09-19; auto-renew fired 30 days before.
    let at = "2027-09-01T00:00:00Z";
    let before = status_json(&env, at);
    for _ in 0..2 {
        // Something due was not done: exit 1, as for held-back devices.
        let r = env
            .plan_run(&["roll-secondary", "--due", "--now", at, "-o", "json"])
            .code(1)
            .json();
        let outcomes: std::collections::BTreeSet<&str> = r["devices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["outcome"].as_str().unwrap())
            .collect();
        assert_eq!(outcomes, ["capped"].into_iter().collect(), "{r:#}");
        let first = &r["renew_ca_first"];
        assert_eq!(first.as_array().map(Vec::len), Some(1), "{r:#}");
        assert_eq!(first[0]["target"], "ca:factory");
        assert_eq!(first[0]["devices"], 51);
        assert!(
            first[0]["message"]
                .as_str()
                .unwrap()
                .contains("renew the issuing CA first"),
            "{r:#}"
        );
        assert_eq!(status_json(&env, at), before, "no new version, no new key");
    }
    let human = env.plan_run(&["roll-secondary", "--due", "--now", at]).code(1);
    assert!(
        human
            .stdout
            .contains("ca:factory: CA `factory` expires at 2027-09-19"),
        "{}",
        human.stdout
    );

    let check = env.plan_run(&["check", "-o", "json", "--now", at]).code(1).json();
    let sensor = check["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["target"] == "device:sensor-01")
        .unwrap_or_else(|| panic!("{check:#}"))
        .clone();
    assert!(
        sensor["reason"]
            .as_str()
            .unwrap()
            .contains("its issuing CA `factory` expires at 2027-09-19"),
        "{sensor:#}"
    );
    assert!(
        sensor["reason"]
            .as_str()
            .unwrap()
            .contains("renew the issuing CA first")
    );

    // Once the CA is renewed (its devices roll with it), nothing is capped any more.
    env.plan_run(&["roll-secondary", "ca:factory", "--now", at]).ok();
    let after = env
        .plan_run(&["roll-secondary", "--due", "--now", at, "-o", "json"])
        .ok()
        .json();
    assert_eq!(after["renew_ca_first"], serde_json::json!([]), "{after:#}");
}

// ------------------------------------------------------------------ item 16

/// The notBefore of a certificate as openssl reads it from an export, in RFC 3339.
fn openssl_not_before(env: &TestEnv, target: &str, file: &str) -> String {
    env.plan_run(&["export", target, "--out", file]).ok();
    let out = env
        .openssl(&[
            "x509",
            "-in",
            file,
            "-noout",
            "-startdate",
            "-dateopt",
            "iso_8601",
        ])
        .ok()
        .stdout;
    // `notBefore=2026-11-22 23:55:00Z`
    out.trim().trim_start_matches("notBefore=").replacen(' ', "T", 1)
}

/// Fresh certificates start a few minutes before they are made (the plan's
/// `not_before_skew_minutes`, 5 by default), so a device whose clock is a little slow takes one
/// at once; a device whose clock is further behind is refused because the certificate is not
/// yet valid, for a group member as for an individual enrollment, never with "no enrollment
/// accepts this certificate".
#[test]
fn not_yet_valid_is_not_expired_and_fresh_certificates_are_backdated() {
    let env = TestEnv::new();
    env.quickstart();
    env.plan_run(&["issue"]).ok();
    for target in ["device:sensor-01", "device:gateway-01", "ca:factory", "ca:root"] {
        let file = format!("{}.pem", target.replace(':', "-"));
        assert_eq!(
            openssl_not_before(&env, target, &file),
            "2026-11-22T23:55:00Z",
            "{target}: 5 minutes before {NOW}"
        );
    }
    // Rolled certificates are backdated too.
    env.plan_run(&[
        "roll-secondary",
        "device:sensor-02",
        "--now",
        "2027-01-01T00:00:00Z",
    ])
    .ok();
    let rolled = env
        .plan_run(&["status", "-o", "json", "--now", "2027-01-01T00:00:00Z"])
        .ok()
        .json();
    let s2 = rolled["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == "sensor-02")
        .unwrap_or_else(|| panic!("{rolled:#}"));
    assert_eq!(s2["installed"]["not_before"], "2026-12-31T23:55:00Z", "{s2:#}");

    // Three minutes slow: accepted.
    env.plan_run(&[
        "reprovision",
        "device:sensor-01",
        "device:gateway-01",
        "--now",
        "2026-11-22T23:57:00Z",
    ])
    .ok();
    // An hour slow: refused as not yet valid, by the group path and the individual path alike.
    let early = env
        .plan_run(&[
            "reprovision",
            "device:sensor-01",
            "device:gateway-01",
            "--now",
            "2026-11-22T23:00:00Z",
        ])
        .code(1);
    assert!(
        !early.stdout.contains("no enrollment accepts"),
        "{}",
        early.stdout
    );
    assert_eq!(
        early
            .stdout
            .matches("not yet valid: its validity starts at 2026-11-22T23:55:00Z")
            .count(),
        2,
        "{}",
        early.stdout
    );
    // After its notAfter: expired, named as such.
    let late = env
        .plan_run(&["reprovision", "device:sensor-01", "--now", "2028-01-01T00:00:00Z"])
        .code(1);
    assert!(
        late.stdout
            .contains("has expired: its validity ended at 2027-11-23T00:00:00Z"),
        "{}",
        late.stdout
    );
}

/// `not_before_skew_minutes` is validated (0 to 1440, a whole number), and 0 means notBefore is
/// the moment of issue.
#[test]
fn the_not_before_skew_is_validated_and_zero_means_none() {
    let env = TestEnv::new();
    let text = std::fs::read_to_string(env.quickstart()).unwrap();
    for (value, needle) in [
        ("-1", "not_before_skew_minutes = -1 is out of range"),
        ("1441", "not_before_skew_minutes = 1441 is out of range"),
        ("\"5m\"", "expected an integer"),
    ] {
        env.write(
            "plan.toml",
            &text.replace(
                "version = 1\n",
                &format!("version = 1\nnot_before_skew_minutes = {value}\n"),
            ),
        );
        let r = env.plan_run(&["validate"]).code(2);
        assert!(
            r.stderr.contains(needle) && r.stderr.contains("plan.toml:"),
            "{value}: {}",
            r.stderr
        );
        env.plan_run(&["issue"]).code(2);
        assert!(!env.store_dir().exists(), "{value}: nothing written");
    }
    env.write(
        "plan.toml",
        &text.replace("version = 1\n", "version = 1\nnot_before_skew_minutes = 0\n"),
    );
    env.plan_run(&["issue"]).ok();
    assert_eq!(
        openssl_not_before(&env, "device:sensor-01", "s1.pem"),
        "2026-11-23T00:00:00Z"
    );
}

// ------------------------------------------------------------------ item 22

/// A verb that writes, with `--now` more than a day from the real clock, refuses (exit 2, saying
/// so) unless `--allow-time-travel` is given; nothing is written. Dry runs, reads and a `--now`
/// within the day are not affected.
#[test]
fn a_write_far_from_the_real_clock_needs_allow_time_travel() {
    let env = TestEnv::new();
    env.quickstart();
    let real = time::OffsetDateTime::now_utc();
    let next_year = certroll::clock::rfc3339(real + time::Duration::days(365));
    let last_week = certroll::clock::rfc3339(real - time::Duration::days(7));
    let in_an_hour = certroll::clock::rfc3339(real + time::Duration::hours(1));
    let run = |args: &[&str]| {
        let out = env
            .cmd()
            .env_remove("CERTROLL_ALLOW_TIME_TRAVEL")
            .args(["--plan", "plan.toml"])
            .args(args)
            .output()
            .unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    };
    for now in [&next_year, &last_week] {
        let r = run(&["issue", "--now", now]).code(2);
        assert!(
            r.stderr.contains("--allow-time-travel") && r.stderr.contains(now.as_str()),
            "{}",
            r.stderr
        );
        assert!(!env.store_dir().exists(), "a refused issue writes nothing");
    }
    // The pinned clock of the suite (CERTROLL_NOW) counts the same as --now.
    let r = run(&["issue"]).code(2);
    assert!(r.stderr.contains("days behind the real clock"), "{}", r.stderr);
    // A dry run and a read may look at any time.
    run(&["issue", "--now", &next_year, "--dry-run"]).ok();
    run(&["validate"]).ok();
    // An hour ahead is refused too: its certificates would not be valid for an hour (their
    // notBefore is --now less the 5-minute backdating). Within 5 minutes ahead, a day behind,
    // and with the flag, it writes.
    let r = run(&["issue", "--now", &in_an_hour]).code(2);
    assert!(
        r.stderr.contains("minutes ahead of the real clock"),
        "{}",
        r.stderr
    );
    assert!(!env.store_dir().exists(), "a refused issue writes nothing");
    let yesterday = certroll::clock::rfc3339(real - time::Duration::hours(20));
    run(&["issue", "--now", &yesterday, "--dry-run"]).ok();
    let in_two_minutes = certroll::clock::rfc3339(real + time::Duration::minutes(2));
    run(&["issue", "--now", &in_two_minutes]).ok();
    for verb in [
        &["roll-secondary", "--due"][..],
        &["roll-primary", "device:sensor-01"][..],
        &["reprovision", "device:sensor-01"][..],
        &["revoke", "device:sensor-01", "--reason", "superseded", "--yes"][..],
        &["vault", "create", "web", "--subject", "CN=web"][..],
    ] {
        let r = run(&[verb, &["--now", &next_year][..]].concat()).code(2);
        assert!(r.stderr.contains("--allow-time-travel"), "{verb:?}: {}", r.stderr);
    }
    let rolled = run(&[
        "roll-secondary",
        "--due",
        "--now",
        &next_year,
        "--allow-time-travel",
        "-o",
        "json",
    ])
    .ok()
    .json();
    assert!(
        rolled["devices"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["outcome"] == "rolled"),
        "{rolled:#}"
    );
}

// ------------------------------------------------------------------ item 5

/// When the hub identity of `device` was created, read from the store with the sqlite3 CLI
/// (unix seconds).
fn identity_created(env: &TestEnv, device: &str) -> i64 {
    let out = std::process::Command::new("sqlite3")
        .arg(env.path(".certroll/state.db"))
        .arg(format!(
            "SELECT created FROM hub_devices WHERE device_id = '{device}'"
        ))
        .output()
        .expect("the sqlite3 CLI must be installed");
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{device}: no hub identity ({text:?})"))
}

fn unix(t: &str) -> i64 {
    certroll::clock::parse_rfc3339(t).unwrap().unix_timestamp()
}

/// `--remove-hub-identity` is honoured for `group:` and `ca:` breaches as for `device:`: each
/// device's identity is deleted and the device provisions afresh (a new identity holding only
/// the new thumbprint); without the flag the identity is kept and re-provisioned.
#[test]
fn remove_hub_identity_is_honoured_for_group_and_ca_breaches() {
    let env = TestEnv::new();
    env.quickstart();
    env.plan_run(&["issue"]).ok();
    assert_eq!(identity_created(&env, "sensor-01"), unix(NOW));

    let t1 = "2026-12-01T00:00:00Z";
    env.plan_run(&["roll-primary", "--breach", "group:sensors", "--yes", "--now", t1])
        .ok();
    assert_eq!(
        identity_created(&env, "sensor-01"),
        unix(NOW),
        "kept without the flag"
    );

    let t2 = "2026-12-02T00:00:00Z";
    let dry = env
        .plan_run(&[
            "roll-primary",
            "--breach",
            "group:sensors",
            "--incident",
            "second",
            "--remove-hub-identity",
            "--dry-run",
            "-o",
            "json",
            "--now",
            t2,
        ])
        .ok()
        .json();
    let steps: Vec<String> = dry["devices"][0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    assert!(
        steps
            .iter()
            .any(|s| s.starts_with("delete device `sensor-01` from hub")),
        "{steps:?}"
    );
    env.plan_run(&[
        "roll-primary",
        "--breach",
        "group:sensors",
        "--incident",
        "second",
        "--remove-hub-identity",
        "--yes",
        "--now",
        t2,
    ])
    .ok();
    assert_eq!(
        identity_created(&env, "sensor-01"),
        unix(t2),
        "group: removed and made afresh"
    );
    assert_eq!(
        identity_created(&env, "gateway-01"),
        unix(t2),
        "outside the group, but issued by the compromised CA version: replaced too"
    );

    let t3 = "2026-12-03T00:00:00Z";
    env.plan_run(&[
        "roll-primary",
        "--breach",
        "ca:factory",
        "--remove-hub-identity",
        "--yes",
        "--now",
        t3,
    ])
    .ok();
    for id in ["sensor-01", "sensor-50", "gateway-01"] {
        assert_eq!(
            identity_created(&env, id),
            unix(t3),
            "{id}: ca: removed and made afresh"
        );
    }
    // The new identity holds the new certificate's thumbprint only.
    let s = env
        .plan_run(&["status", "-o", "json", "device:gateway-01", "--now", t3])
        .ok()
        .json();
    let d = &s["devices"][0];
    assert_eq!(
        d["hub_identity"]["primary_thumbprint"], d["installed"]["thumbprint"],
        "{d:#}"
    );
    assert_eq!(
        d["hub_identity"]["secondary_thumbprint"],
        serde_json::Value::Null,
        "{d:#}"
    );
}

// ------------------------------------------------------------------ item 4

/// The quickstart with a root that lives 400 days: the factory CA below it is capped there.
fn short_root_plan(env: &TestEnv) {
    let text = std::fs::read_to_string(env.quickstart()).unwrap();
    let text = text.replace(
        "subject = \"CN=Quickstart Root CA, O=Example\"\npolicy = \"ca\"",
        "subject = \"CN=Quickstart Root CA, O=Example\"\npolicy = \"short-root\"",
    ) + "\n[policies.short-root]\nkey = { type = \"EC\", curve = \"P-384\", exportable = false }\nvalidity_days = 400\n";
    env.write("plan.toml", &text);
}

fn day(days: i64) -> String {
    crate::roll::at(days)
}

/// After a root roll, the old root and the old intermediate expire; `check` then reports the
/// expired root still among the service's CA certificates and the expired intermediate still in
/// the group's slot, and the next roll (here a `--due` run with no device due) removes both,
/// after which `check` is quiet about them and a rerun does nothing more.
#[test]
fn expired_cas_leave_the_service_and_the_slots_with_the_next_roll() {
    let env = TestEnv::new();
    short_root_plan(&env);
    env.plan_run(&["issue"]).ok();
    env.plan_run(&["roll-secondary", "ca:root", "--now", &day(100)])
        .ok();
    let t = day(410);
    let s = status_json(&env, &t);
    let root = s["cas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "root")
        .unwrap();
    assert_eq!(root["in_service"].as_array().unwrap().len(), 2, "{root:#}");
    assert!(
        !s["groups"][0]["primary"].is_null(),
        "the old factory CA is still held: {:#}",
        s["groups"][0]
    );

    let check = env.plan_run(&["check", "-o", "json", "--now", &t]).json();
    let targets: Vec<(String, String)> = check["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["target"].as_str().unwrap().to_string(),
                p["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        targets
            .iter()
            .any(|(t, r)| t == "service-ca:root" && r.contains("next roll removes it")),
        "{targets:#?}"
    );
    assert!(
        targets
            .iter()
            .any(|(t, r)| t == "group:sensors"
                && r.contains("primary slot holds a CA certificate that expired")),
        "{targets:#?}"
    );

    let dry = env
        .plan_run(&["roll-secondary", "--due", "--now", &t, "--dry-run"])
        .ok();
    assert!(
        dry.stdout.contains("remove expired CA certificates"),
        "{}",
        dry.stdout
    );
    assert_eq!(status_json(&env, &t), s, "a dry run changes nothing");
    env.plan_run(&["roll-secondary", "--due", "--now", &t]).ok();
    let after = status_json(&env, &t);
    let root = after["cas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "root")
        .unwrap();
    let names: Vec<&str> = root["in_service"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["root-v2"], "{root:#}");
    // The live intermediate the secondary slot held is the primary now (DPS holds no group with
    // a secondary and no primary).
    assert_eq!(
        after["groups"][0]["primary"]["thumbprint"], s["groups"][0]["secondary"]["thumbprint"],
        "the current CA stays, as the primary: {:#}",
        after["groups"][0]
    );
    assert!(
        after["groups"][0]["secondary"].is_null(),
        "{:#}",
        after["groups"][0]
    );

    let check = env.plan_run(&["check", "-o", "json", "--now", &t]).json();
    assert!(
        !check["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["target"] == "service-ca:root" || p["target"] == "group:sensors"),
        "{check:#}"
    );
    // The devices still register: their chain is the new one.
    env.plan_run(&[
        "reprovision",
        "device:sensor-01",
        "device:gateway-01",
        "--now",
        &t,
    ])
    .ok();
    let again = env.plan_run(&["roll-secondary", "--due", "--now", &t]).ok();
    assert!(
        !again.stdout.contains("remove expired CA certificates"),
        "{}",
        again.stdout
    );
}

// ------------------------------------------------------------------ item 21

/// Renaming `[groups.sensors]` to `[groups.meters]` is recognised: `issue` refuses (exit 2,
/// nothing changed) and names the old group, its devices and the ways on, instead of creating a
/// second enabled group with the same signing CA beside the old one.
#[test]
fn a_renamed_group_is_named_instead_of_created_twice() {
    let env = TestEnv::new();
    let text = std::fs::read_to_string(env.quickstart()).unwrap();
    env.plan_run(&["issue"]).ok();
    env.write("plan.toml", &text.replace("[groups.sensors]", "[groups.meters]"));
    let before = status_json(&env, NOW);
    let r = env.plan_run(&["issue"]).code(2);
    for needle in [
        "group:meters is new in the plan",
        "group `sensors`, which the plan no longer declares",
        "signing CA `factory`",
        "50 registered device(s)",
        "rename the table back to `[groups.sensors]`",
    ] {
        assert!(r.stderr.contains(needle), "{needle}: {}", r.stderr);
    }
    assert_eq!(status_json(&env, NOW), before, "nothing changed");
    let dry = env.plan_run(&["issue", "--dry-run"]).code(2);
    assert!(dry.stderr.contains("group `sensors`"), "{}", dry.stderr);
    // Back under its old name, everything is in place.
    env.write("plan.toml", &text);
    let again = env.plan_run(&["issue", "-o", "json"]).ok().json();
    assert_eq!(again["steps"], serde_json::json!([]), "{again:#}");
}

// ------------------------------------------------------------------ items 9 and 10

/// Makes, with openssl in the test's directory, a root certroll does not know ("Outside Root")
/// and a CA certificate with `subject` signed by it, and writes `NAME.pem` holding that
/// certificate, its key and the outside root (as a CA hands an intermediate over).
fn outside_ca(env: &TestEnv, name: &str, subject: &str) {
    crate::util::openssl_ca(
        env,
        "outside-root.key",
        "outside-root.pem",
        "/CN=Outside Root",
        "3650",
        &[
            "basicConstraints=critical,CA:TRUE",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    env.write(
        "ca-ext.cnf",
        "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign,digitalSignature\n",
    );
    env.openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &format!("{name}.key"),
        "-out",
        &format!("{name}.csr"),
        "-subj",
        subject,
    ])
    .ok();
    env.openssl(&[
        "x509",
        "-req",
        "-in",
        &format!("{name}.csr"),
        "-CA",
        "outside-root.pem",
        "-CAkey",
        "outside-root.key",
        "-set_serial",
        "7",
        "-days",
        "1000",
        "-extfile",
        "ca-ext.cnf",
        "-out",
        &format!("{name}.crt"),
    ])
    .ok();
    let read = |f: &str| std::fs::read_to_string(env.path(f)).unwrap();
    env.write(
        &format!("{name}.pem"),
        &format!(
            "{}{}{}",
            read(&format!("{name}.crt")),
            read(&format!("{name}.key")),
            read("outside-root.pem")
        ),
    );
}

/// An intermediate signed outside and imported as a group's signing CA is refused by `issue`
/// and by every roll that would sign with it (exit 2, naming the group, the CA and the outside
/// root, nothing changed), before any device holds a certificate the service would refuse; the
/// way out the message gives (`roll-secondary ca:factory`) then works and every device
/// registers. The same for an imported root certificate: the roll names `certroll issue ca:root`,
/// which uploads and verifies it.
#[test]
fn a_ca_brought_in_from_outside_is_refused_before_it_signs_for_a_group() {
    // Imported before the first issue: `issue` creates nothing.
    let env = TestEnv::new();
    env.quickstart();
    outside_ca(&env, "factory", "/CN=Quickstart Factory CA/O=Example");
    env.plan_run(&["vault", "import", "ca-factory", "--file", "factory.pem"])
        .ok();
    for args in [
        &["issue"][..],
        &["issue", "--dry-run"][..],
        &["issue", "group:sensors"][..],
    ] {
        let r = env.plan_run(args).code(2);
        assert!(
            r.stderr.contains("group:sensors")
                && r.stderr.contains("`factory`")
                && r.stderr.contains("CN=Outside Root")
                && r.stderr.contains("verif")
                && r.stderr.contains("vault purge ca-factory"),
            "{args:?}: {}",
            r.stderr
        );
    }
    assert_eq!(
        env.plan_run(&["vault", "show", "ca-root"]).code,
        2,
        "a refused issue creates no CA"
    );

    // Merged after a request signed outside (the answer without its root): the same.
    let env = TestEnv::new();
    env.quickstart();
    outside_ca(&env, "unused", "/CN=Unused");
    env.plan_run(&[
        "vault",
        "create",
        "ca-factory",
        "--subject",
        "CN=Quickstart Factory CA, O=Example",
        "--issuer",
        "Unknown",
    ])
    .ok();
    env.plan_run(&["vault", "csr", "ca-factory", "--out", "factory.csr"])
        .ok();
    env.openssl(&[
        "x509",
        "-req",
        "-in",
        "factory.csr",
        "-CA",
        "outside-root.pem",
        "-CAkey",
        "outside-root.key",
        "-set_serial",
        "9",
        "-days",
        "900",
        "-extfile",
        "ca-ext.cnf",
        "-out",
        "factory.pem",
    ])
    .ok();
    env.plan_run(&["vault", "merge", "ca-factory", "--file", "factory.pem"])
        .ok();
    let r = env.plan_run(&["issue"]).code(2);
    assert!(
        r.stderr.contains("group:sensors") && r.stderr.contains("issuer `CN=Outside Root` is not among"),
        "{}",
        r.stderr
    );

    // Imported after issue: the rolls that would sign with it refuse up front.
    let env = TestEnv::new();
    env.quickstart();
    env.plan_run(&["issue"]).ok();
    outside_ca(&env, "factory", "/CN=Quickstart Factory CA/O=Example");
    env.plan_run(&["vault", "import", "ca-factory", "--file", "factory.pem"])
        .ok();
    let before = status_json(&env, NOW);
    for args in [
        &["roll-secondary", "device:sensor-01", "-y"][..],
        &["roll-secondary", "--due", "--now", DUE, "-y"][..],
        &["roll-primary", "device:sensor-02", "--dry-run"][..],
        &["issue"][..],
    ] {
        let r = env.plan_run(args).code(2);
        assert!(
            r.stderr.contains("group:sensors")
                && r.stderr.contains("CN=Outside Root")
                && r.stderr.contains("roll-secondary ca:factory")
                && r.stderr.contains("Nothing was changed"),
            "{args:?}: {}",
            r.stderr
        );
        assert_eq!(status_json(&env, NOW), before, "{args:?} changed something");
    }
    // Renewing the CA from the plan's root makes it acceptable again.
    env.plan_run(&["roll-secondary", "ca:factory", "-y"]).ok();
    let r = env
        .plan_run(&["reprovision", "--force", "-o", "json"])
        .ok()
        .json();
    assert_eq!(r["rejected"], 0, "{r:#}");

    // An imported certificate for the root: a group roll would sign the new factory CA with it.
    let env = TestEnv::new();
    env.quickstart();
    env.plan_run(&["issue"]).ok();
    outside_ca(&env, "root", "/CN=Quickstart Root CA/O=Example");
    env.plan_run(&["vault", "import", "ca-root", "--file", "root.pem"])
        .ok();
    let r = env.plan_run(&["roll-secondary", "group:sensors", "-y"]).code(2);
    assert!(
        r.stderr.contains("group:sensors")
            && r.stderr.contains("CA `root`")
            && r.stderr.contains("certroll issue ca:root"),
        "{}",
        r.stderr
    );
    env.plan_run(&["issue", "ca:root"]).ok();
    env.plan_run(&["roll-secondary", "group:sensors", "-y"]).ok();
    let r = env
        .plan_run(&["reprovision", "--force", "-o", "json"])
        .ok()
        .json();
    assert_eq!(r["rejected"], 0, "{r:#}");
}

/// The store of `env`, open for writing (to change the service behind certroll's back).
fn writable_backend(env: &TestEnv) -> certroll::backend::local::LocalBackend {
    certroll::backend::local::LocalBackend::new(
        certroll::store::Store::open(&certroll::store::OpenOptions {
            path: env.store_dir().join("state.db"),
            key_file: None,
            create: false,
            write: true,
            lock_timeout: std::time::Duration::from_secs(5),
        })
        .unwrap(),
    )
}

/// A group's intermediate whose root the service holds but has not verified accepts no device,
/// as in DPS (the registration fails naming the group and the unverified CA, not "no enrollment
/// accepts"), and a roll that would put a new intermediate under that root into the group
/// refuses before writing, naming the way out; once the root is verified again, all is well.
#[test]
fn an_intermediate_under_an_unverified_root_is_refused_by_the_service_and_the_rolls() {
    use certroll::backend::EnrollmentService;
    let env = TestEnv::new();
    env.quickstart();
    env.plan_run(&["issue"]).ok();
    {
        // Uploading the same root again leaves it unverified (as DPS does on an update).
        let mut b = writable_backend(&env);
        let root = b.cas().unwrap().remove(0);
        assert!(root.verified);
        b.upload_ca(&root.name, &root.cert_der, time::OffsetDateTime::now_utc())
            .unwrap();
        assert!(!b.ca(&root.name).unwrap().unwrap().verified);
    }
    let r = env
        .plan_run(&["reprovision", "device:sensor-01", "--force", "-o", "json"])
        .json();
    let text = r.to_string();
    assert!(
        text.contains("enrollment group `sensors`") && text.contains("not verified"),
        "{r:#}"
    );
    let status = status_json(&env, NOW);
    let sensor = status["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == "sensor-01")
        .unwrap()
        .clone();
    assert_eq!(sensor["registration"]["status"], "failed", "{sensor:#}");

    let before = status_json(&env, NOW);
    let roll = env.plan_run(&["roll-secondary", "group:sensors", "-y"]).code(2);
    assert!(
        roll.stderr.contains("group:sensors")
            && roll.stderr.contains("has not verified")
            && roll.stderr.contains("certroll issue ca:root"),
        "{}",
        roll.stderr
    );
    assert_eq!(status_json(&env, NOW), before, "a refused roll changes nothing");

    env.plan_run(&["issue", "ca:root"]).ok();
    env.plan_run(&["roll-secondary", "group:sensors", "-y"]).ok();
    let r = env
        .plan_run(&["reprovision", "--force", "-o", "json"])
        .ok()
        .json();
    assert_eq!(r["rejected"], 0, "{r:#}");
}

// ------------------------------------------------------------------ item 22, the vault verbs

/// The vault verbs that write, and `serve` (whose requests write), refuse a `--now` more than a
/// day from the real clock without `--allow-time-travel`, as the plan's verbs do; nothing is
/// written, and the same commands run with the flag.
#[test]
fn vault_writes_and_serve_far_from_the_real_clock_need_allow_time_travel() {
    let env = TestEnv::new();
    env.quickstart();
    env.plan_run(&["vault", "create", "web", "--subject", "CN=web"])
        .ok();
    env.plan_run(&["vault", "create", "old", "--subject", "CN=old"])
        .ok();
    env.plan_run(&["vault", "export", "web", "--out", "web.pem", "--with-key"])
        .ok();
    env.cmd()
        .env("PW", "changeit")
        .args([
            "--plan",
            "plan.toml",
            "vault",
            "backup",
            "old",
            "--out",
            "old.backup",
            "--password-env",
            "PW",
        ])
        .output()
        .unwrap();
    env.plan_run(&["vault", "delete", "old", "--force"]).ok();
    let next_year = certroll::clock::rfc3339(time::OffsetDateTime::now_utc() + time::Duration::days(365));
    let run = |args: &[&str], allow: bool| {
        let mut cmd = env.cmd();
        cmd.env_remove("CERTROLL_ALLOW_TIME_TRAVEL")
            .env("PW", "changeit")
            .args(["--plan", "plan.toml", "--now", &next_year])
            .args(args);
        if allow {
            cmd.arg("--allow-time-travel");
        }
        let out = cmd.output().unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    };
    let list = || env.plan_run(&["vault", "list", "-o", "json"]).ok().stdout;
    let before = list();
    let writes: [&[&str]; 8] = [
        &["vault", "import", "web2", "--file", "web.pem"],
        &["vault", "update", "web", "--disable"],
        &["vault", "update", "web", "--tag", "team=pki"],
        &["vault", "delete", "web", "--force"],
        &["vault", "recover", "old"],
        &["vault", "purge", "old", "--yes"],
        &[
            "vault",
            "issuers",
            "set",
            "corp",
            "--provider",
            "OneCertV2-PrivateCA",
        ],
        &["serve", "--listen", "127.0.0.1:0"],
    ];
    for args in writes {
        let r = run(args, false).code(2);
        assert!(
            r.stderr.contains("--allow-time-travel") && r.stderr.contains(&next_year),
            "{args:?}: {}",
            r.stderr
        );
    }
    assert_eq!(list(), before, "a refused vault verb changes nothing");
    // Restore and merge refuse before reading their file.
    let r = run(
        &["vault", "restore", "--in", "old.backup", "--password-env", "PW"],
        false,
    )
    .code(2);
    assert!(r.stderr.contains("--allow-time-travel"), "{}", r.stderr);
    let r = run(&["vault", "merge", "web", "--file", "web.pem"], false).code(2);
    assert!(r.stderr.contains("--allow-time-travel"), "{}", r.stderr);
    // A dry run may look at any time; with the flag the write happens.
    run(&["vault", "delete", "web", "--force", "--dry-run"], false).ok();
    run(&["vault", "update", "web", "--tag", "team=pki"], true).ok();
    run(&["vault", "import", "web2", "--file", "web.pem"], true).ok();
}

// ------------------------------------------------------------------ item 16, vault-only certificates

/// A vault-only certificate (`vault create --issuer Self`) and its auto-renewal start the plan's
/// `not_before_skew_minutes` before they are made, as the plan's certificates do.
#[test]
fn vault_only_certificates_are_backdated_by_the_plan_skew() {
    let env = TestEnv::new();
    env.quickstart();
    env.plan_run(&["issue"]).ok();
    env.plan_run(&[
        "vault",
        "create",
        "web",
        "--subject",
        "CN=web",
        "--validity-days",
        "100",
    ])
    .ok();
    env.plan_run(&["vault", "export", "web", "--out", "web.pem"]).ok();
    let start = |file: &str| {
        let out = env
            .openssl(&[
                "x509",
                "-in",
                file,
                "-noout",
                "-startdate",
                "-dateopt",
                "iso_8601",
            ])
            .ok()
            .stdout;
        out.trim().trim_start_matches("notBefore=").replacen(' ', "T", 1)
    };
    assert_eq!(start("web.pem"), "2026-11-22T23:55:00Z");
    // 90 days on, past the default AutoRenew at 80% of its lifetime: the renewal is backdated too.
    let later = "2027-02-21T00:00:00Z";
    env.plan_run(&["roll-secondary", "--due", "--now", later, "-y"])
        .ok();
    let show = env.plan_run(&["vault", "show", "web", "-o", "json"]).ok().json();
    let versions = show["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2, "{show:#}");
    env.plan_run(&["vault", "export", "web", "--out", "web2.pem", "--now", later])
        .ok();
    assert_eq!(start("web2.pem"), "2027-02-20T23:55:00Z");

    env.write(
        "plan.toml",
        &std::fs::read_to_string(env.path("plan.toml"))
            .unwrap()
            .replace("version = 1", "version = 1\nnot_before_skew_minutes = 0"),
    );
    env.plan_run(&["vault", "create", "api", "--subject", "CN=api"])
        .ok();
    env.plan_run(&["vault", "export", "api", "--out", "api.pem"]).ok();
    assert_eq!(start("api.pem"), "2026-11-23T00:00:00Z");
}

// ------------------------------------------------------------------ item 17, purged certificates

/// A certificate purged from the vault (`vault purge`) while a device still holds it is named as
/// purged by `vault show`, `vault export`, `export` and the rolls (exit 2, with the way out:
/// `issue` makes a new one), never "has not been issued yet"; a refused roll records no run.
#[test]
fn a_purged_certificate_is_named_as_purged() {
    let env = TestEnv::new();
    env.quickstart();
    env.plan_run(&["issue"]).ok();
    env.plan_run(&["vault", "delete", "dev-sensor-07", "--force"])
        .ok();
    env.plan_run(&["vault", "purge", "dev-sensor-07", "--yes"]).ok();
    let before = status_json(&env, DUE);
    for args in [
        &["vault", "show", "dev-sensor-07"][..],
        &["vault", "export", "dev-sensor-07", "--out", "x.pem"][..],
        &["export", "device:sensor-07", "--out", "x.pem"][..],
        &["roll-secondary", "device:sensor-07", "-y"][..],
        &["roll-secondary", "group:sensors", "--now", DUE, "-y"][..],
        &["roll-primary", "group:sensors", "--dry-run"][..],
    ] {
        let r = env.plan_run(args).code(2);
        assert!(
            r.stderr.contains("`dev-sensor-07`")
                && r.stderr.contains("purged")
                && r.stderr.contains("certroll issue device:sensor-07")
                && !r.stderr.contains("not been issued"),
            "{args:?}: {}",
            r.stderr
        );
    }
    assert_eq!(status_json(&env, DUE), before, "a refused roll changes nothing");
    // No run was left open, and the way out works.
    env.plan_run(&["issue", "device:sensor-07"]).ok();
    let next = env
        .plan_run(&["roll-secondary", "device:sensor-07", "-y", "-o", "json"])
        .ok()
        .json();
    assert_eq!(next["resumed"], false, "{next:#}");
    // A name certroll never issued is simply not there.
    let r = env.plan_run(&["vault", "show", "nothing-here"]).code(2);
    assert!(r.stderr.contains("no certificate `nothing-here`") && !r.stderr.contains("purged"));
}
