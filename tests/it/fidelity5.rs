//! Issue 10, the faults the third new-user trial found: the cron `roll-* --due` run beside an odd
//! corner of the fleet (an expired or purged CA, a renamed or revoked group) rolls everything
//! else and reports each corner, `--due` renews a CA whose own auto-renew is due, every writing
//! verb refuses a far `--now`, no write to a closed stderr panics, `check` names renamed groups
//! and deleted certificates, and the leftover messages are put in words.

use crate::roll::{at, backend};
use crate::util::*;
use certroll::backend::Vault as _;

/// Asserts the factory's devices were rolled by `r` (one new version each).
fn factory_rolled(env: &TestEnv, r: &serde_json::Value) {
    for id in ["sensor-1", "sensor-2", "gateway-01"] {
        assert_eq!(outcome(r, id)["outcome"], "rolled", "{r:#}");
        assert_eq!(count(env, &format!("dev-{id}")), 2, "{id}");
    }
}

/// Priority 1: the cron run at day 340 (the factory's devices are due) beside a CA `short` that
/// expired at day 200 and never got renewed: the factory's devices are rolled, the `short` group's
/// devices are reported `held-back` naming the expired CA and the command that renews it, the run
/// exits 1 (partial), and nothing under `short` changed.
#[test]
fn the_cron_run_rolls_everything_else_beside_an_expired_ca() {
    let env = TestEnv::new();
    two_ca_plan(&env, 200, false);
    env.plan_run(&["issue"]).ok();
    let due = at(340);
    let r = env
        .plan_run(&["--now", &due, "-o", "json", "roll-secondary", "--due"])
        .code(1)
        .json();
    factory_rolled(&env, &r);
    for id in ["t-1", "t-2"] {
        let d = outcome(&r, id);
        assert_eq!(d["outcome"], "held-back", "{r:#}");
        let why = d["steps"][0].as_str().unwrap();
        assert!(
            why.contains("CA `short` expired at") && why.contains("certroll roll-secondary ca:short"),
            "{why}"
        );
        assert_eq!(count(&env, &format!("dev-{id}")), 1);
    }
    let human = env.plan_run(&["--now", &due, "roll-secondary", "--due"]).code(1);
    assert!(
        human
            .stdout
            .contains("device:t-1: not rolled: its CA `short` expired at"),
        "{}",
        human.stdout
    );
}

/// Priority 1: a group renamed in the plan (`[groups.shorts]` -> `[groups.shorts2]`): the cron run
/// rolls the rest, reports the renamed group's devices `held-back` with the rename named, and the
/// advice (rename the table back) works: after it the run rolls them and exits 0.
#[test]
fn the_cron_run_rolls_everything_else_beside_a_renamed_group_and_its_advice_works() {
    let env = TestEnv::new();
    let text = two_ca_plan(&env, 3650, false);
    env.plan_run(&["issue"]).ok();
    env.write("plan.toml", &text.replace("[groups.shorts]", "[groups.shorts2]"));
    let due = at(340);
    let r = env
        .plan_run(&["--now", &due, "-o", "json", "roll-secondary", "--due"])
        .code(1)
        .json();
    factory_rolled(&env, &r);
    let d = outcome(&r, "t-1");
    assert_eq!(d["outcome"], "held-back", "{r:#}");
    let why = d["steps"][0].as_str().unwrap();
    assert!(
        why.contains("group `shorts2` is not in the enrollment service")
            && why.contains("holds group `shorts`")
            && why.contains("rename the table back to `[groups.shorts]`"),
        "{why}"
    );
    assert_eq!(count(&env, "dev-t-1"), 1);
    env.write("plan.toml", &text);
    let r = env
        .plan_run(&["--now", &due, "-o", "json", "roll-secondary", "--due"])
        .ok()
        .json();
    assert_eq!(outcome(&r, "t-1")["outcome"], "rolled", "{r:#}");
    assert_eq!(count(&env, "dev-t-1"), 2);
}

/// Priority 1: a CA purged from the vault: the cron run rolls the rest and says in plain words
/// that the CA has no certificate in the vault (not "CA `short` in the vault ... not found").
#[test]
fn the_cron_run_rolls_everything_else_beside_a_purged_ca() {
    let env = TestEnv::new();
    two_ca_plan(&env, 3650, false);
    env.plan_run(&["issue"]).ok();
    env.plan_run(&["vault", "delete", "ca-short", "--force"]).ok();
    env.plan_run(&["vault", "purge", "ca-short", "--yes"]).ok();
    let due = at(340);
    let r = env
        .plan_run(&["--now", &due, "-o", "json", "roll-secondary", "--due"])
        .code(1)
        .json();
    factory_rolled(&env, &r);
    let d = outcome(&r, "t-2");
    assert_eq!(d["outcome"], "held-back", "{r:#}");
    assert!(
        d["steps"][0]
            .as_str()
            .unwrap()
            .contains("its CA `short` has no certificate in the vault (purged, or never issued)"),
        "{d:#}"
    );
    // A device roll under it names it the same way.
    let one = env
        .plan_run(&["--now", &due, "roll-secondary", "device:t-1"])
        .code(1);
    assert!(
        one.stderr.contains("CA `short` has no certificate in the vault")
            && !one.stderr.contains("not found"),
        "{}",
        one.stderr
    );
}

/// Priority 3: after `revoke group:shorts`, the cron run gives its devices nothing (outcome
/// `revoked`, as for a revoked device), and the human report of a real run neither says "would
/// roll" for a revoked device nor claims a done roll step for them.
#[test]
fn the_cron_run_skips_the_devices_of_a_revoked_group() {
    let env = TestEnv::new();
    two_ca_plan(&env, 3650, false);
    env.plan_run(&["issue"]).ok();
    env.plan_run(&[
        "revoke",
        "group:shorts",
        "--reason",
        "cessation-of-operation",
        "--yes",
    ])
    .ok();
    env.plan_run(&[
        "revoke",
        "device:gateway-01",
        "--reason",
        "cessation-of-operation",
        "--yes",
    ])
    .ok();
    let due = at(340);
    let r = env
        .plan_run(&["--now", &due, "-o", "json", "roll-secondary", "--due"])
        .ok()
        .json();
    for id in ["t-1", "t-2", "gateway-01"] {
        assert_eq!(outcome(&r, id)["outcome"], "revoked", "{r:#}");
        assert_eq!(count(&env, &format!("dev-{id}")), 1, "{id}");
    }
    assert_eq!(outcome(&r, "sensor-1")["outcome"], "rolled", "{r:#}");
    let human = env
        .plan_run(&["--now", &due, "roll-secondary", "--due"])
        .ok()
        .stdout;
    assert!(!human.contains("would roll"), "{human}");
    assert!(!human.contains("[done] devices"), "{human}");
    assert!(
        human.contains("device:t-1: not rolled: its group `shorts` is disabled (revoked)"),
        "{human}"
    );
    assert!(human.contains("device:gateway-01: not rolled"), "{human}");
}

/// Priority 2 (item 15's cron half): CA `short` (200 days, auto-renew 30 days before expiry) caps
/// its devices. At day 175 `check` says its auto-renew is due; the cron run renews it (a new CA
/// version in its group's slot) and then its due devices, whose new certificates end later than
/// the ones they held; nothing is capped, the rerun changes nothing and `check` is clean of it.
#[test]
fn the_cron_run_renews_a_ca_whose_auto_renew_is_due_and_then_its_devices() {
    let env = TestEnv::new();
    two_ca_plan(&env, 200, true);
    env.plan_run(&["issue"]).ok();
    let t = at(175);
    let check = env.plan_run(&["check", "-o", "json", "--now", &t]).json();
    assert!(
        check["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["target"] == "ca:short" && p["reason"].as_str().unwrap().contains("auto-renew due")),
        "{check:#}"
    );
    let old_exp = backend(&env).current("dev-t-1").unwrap().unwrap().exp;
    let r = env
        .plan_run(&["--now", &t, "-o", "json", "roll-secondary", "--due"])
        .ok()
        .json();
    assert_eq!(count(&env, "ca-short"), 2, "{r:#}");
    assert_eq!(count(&env, "ca-factory"), 1, "{r:#}");
    assert_eq!(r["renew_ca_first"], serde_json::json!([]), "{r:#}");
    for id in ["t-1", "t-2"] {
        assert_eq!(outcome(&r, id)["outcome"], "rolled", "{r:#}");
        assert_eq!(count(&env, &format!("dev-{id}")), 2, "{id}");
    }
    assert!(backend(&env).current("dev-t-1").unwrap().unwrap().exp > old_exp);
    assert_eq!(outcome(&r, "sensor-1")["outcome"], "not-due", "{r:#}");
    assert_eq!(count(&env, "dev-sensor-1"), 1);
    // The group holds the new CA version, so its devices register with their new certificates.
    env.plan_run(&["--now", &t, "reprovision", "device:t-1"]).ok();
    let again = env
        .plan_run(&["--now", &t, "-o", "json", "roll-secondary", "--due"])
        .ok()
        .json();
    assert_eq!(count(&env, "ca-short"), 2, "{again:#}");
    assert_eq!(count(&env, "dev-t-1"), 2, "{again:#}");
    let check = env.plan_run(&["check", "-o", "json", "--now", &t]).json();
    assert!(
        !check["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["target"] == "ca:short" || p["target"] == "device:t-1"),
        "{check:#}"
    );
}

/// Priority 5 (item 19's kind, on stderr): with stderr a pipe whose reader is gone (as in
/// `certroll ... 2>&1 | head -c 1`), an error message, a verbose log line and a refusal exit with
/// the same code as with a readable stderr, never 101 (a panic on the broken pipe).
#[test]
fn a_closed_stderr_never_panics() {
    let env = TestEnv::new();
    env.quickstart();
    env.plan_run(&["issue"]).ok();
    let cases: [&[&str]; 5] = [
        &["vault", "show", "nosuch"],
        &["export", "ca:nosuch"],
        &["roll-secondary", "device:nosuch"],
        &["-vv", "status"],
        &["vault", "create", "a", "--subject", "bad"],
    ];
    for args in cases {
        let open = env.plan_run(args);
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = env
            .cmd()
            .args([&["--plan", "plan.toml"][..], args].concat())
            .stderr(writer)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert_ne!(out.code(), Some(101), "{args:?} panicked");
        assert_eq!(out.code(), Some(open.code), "{args:?}: {}", open.stderr);
    }
}

/// Priority 4 (item 22's kind): every verb that writes something (the store, a file, a notice
/// recorded as sent) refuses a `--now` far from the real clock without `--allow-time-travel`:
/// exit 2 naming the flag, no file written, no notice recorded (a later real `notify` at that
/// date still finds them owed), no CRL number spent.
#[test]
fn every_writing_verb_refuses_a_far_now_without_allow_time_travel() {
    let env = TestEnv::new();
    env.quickstart();
    env.plan_run(&["issue"]).ok();
    let far = "2036-07-01T00:00:00Z";
    let table: &[(&[&str], Option<&str>)] = &[
        (&["notify"], None),
        (
            &["export", "ca:factory", "--crl", "--out", "crl.pem"],
            Some("crl.pem"),
        ),
        (&["export", "device:sensor-1", "--out", "d.pem"], Some("d.pem")),
        (
            &["vault", "export", "dev-sensor-1", "--out", "v.pem"],
            Some("v.pem"),
        ),
        (
            &[
                "vault",
                "backup",
                "ca-root",
                "--out",
                "b.bak",
                "--password-env",
                "PW",
            ],
            Some("b.bak"),
        ),
        (&["vault", "csr", "nosuch", "--out", "c.csr"], Some("c.csr")),
        (&["vault", "contacts", "set", "a@example.com"], None),
        (&["vault", "issuers", "delete", "nosuch"], None),
        (&["store", "rekey"], None),
        (&["--plan", "new.toml", "init"], Some("new.toml")),
    ];
    for (args, file) in table {
        let mut full = vec!["--now", far];
        if args[0] != "--plan" {
            full.extend(["--plan", "plan.toml"]);
        }
        full.extend(args.iter());
        let out = env
            .cmd()
            .env_remove("CERTROLL_ALLOW_TIME_TRAVEL")
            .env_remove("CERTROLL_NOW")
            .env("PW", "changeit-123")
            .args(&full)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("--allow-time-travel"), "{args:?}: {stderr}");
        if let Some(file) = file {
            assert!(!env.path(file).exists(), "{args:?} wrote {file}");
        }
    }
    // Nothing was recorded as sent: at that date the notices are still owed.
    let owed = env
        .plan_run(&["--now", far, "notify", "--dry-run", "-o", "json"])
        .ok()
        .json();
    assert!(owed["queued"].as_u64().unwrap() > 0, "{owed:#}");
    // The first CRL written for real carries CRL number 1: the refused one spent none.
    env.plan_run(&["export", "ca:factory", "--crl", "--out", "crl.pem"])
        .ok();
    let crl = env
        .openssl(&["crl", "-in", "crl.pem", "-noout", "-crlnumber"])
        .ok()
        .stdout;
    assert_eq!(crl.trim(), "crlNumber=0x01", "{crl}");
}

/// Priority 6 (item 21, in `check`): after `[groups.shorts]` is renamed `[groups.shorts2]`,
/// `check` is not OK: the plan's group missing from the service is critical, naming the old
/// group and the way back, and the service's group missing from the plan is a warning.
#[test]
fn check_reports_a_renamed_group_both_ways() {
    let env = TestEnv::new();
    let text = two_ca_plan(&env, 3650, false);
    env.plan_run(&["issue"]).ok();
    env.write("plan.toml", &text.replace("[groups.shorts]", "[groups.shorts2]"));
    let r = env.plan_run(&["check", "-o", "json"]);
    assert_ne!(r.code, 0, "{}", r.stdout);
    let check = r.json();
    assert_eq!(check["status"], "critical", "{check:#}");
    let new = problem(&check, "group:shorts2");
    assert_eq!(new["level"], "critical", "{new:#}");
    let reason = new["reason"].as_str().unwrap();
    assert!(
        reason.contains("holds group `shorts`") && reason.contains("renamed to `[groups.shorts2]`"),
        "{reason}"
    );
    let old = problem(&check, "service-group:shorts");
    assert_eq!(old["level"], "warning", "{old:#}");
    // Renamed back, all is well again.
    env.write("plan.toml", &text);
    env.plan_run(&["check"]).ok();
}

/// Priority 7 (item 17's naming): a soft-deleted certificate is named deleted, with the way back,
/// by `check` (for a device and a CA) and by `status` (human and JSON), not "no certificate".
#[test]
fn a_soft_deleted_certificate_is_named_deleted_by_check_and_status() {
    let env = TestEnv::new();
    two_ca_plan(&env, 3650, false);
    env.plan_run(&["issue"]).ok();
    env.plan_run(&["vault", "delete", "dev-sensor-1", "--force"]).ok();
    env.plan_run(&["vault", "delete", "ca-short", "--force"]).ok();
    let check = env.plan_run(&["check", "-o", "json"]).json();
    for (target, name) in [("device:sensor-1", "dev-sensor-1"), ("ca:short", "ca-short")] {
        let reason = problem(&check, target)["reason"].as_str().unwrap().to_string();
        assert!(
            reason.contains("is deleted in the vault")
                && reason.contains(&format!("certroll vault recover {name}")),
            "{reason}"
        );
    }
    let status = env.plan_run(&["status", "-o", "json"]).ok().json();
    let ca = status["cas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "short")
        .unwrap()
        .clone();
    assert_eq!(ca["deleted"], true, "{ca:#}");
    let human = env.plan_run(&["status"]).ok().stdout;
    let line = human
        .lines()
        .find(|l| l.trim_start().starts_with("sensor-1 "))
        .unwrap_or_else(|| panic!("{human}"));
    assert!(line.contains("(deleted in the vault)"), "{line}");
    assert!(human.contains("certificate deleted in the vault"), "{human}");
}

/// Priority 8 (item 12's PEM kind): a legacy encrypted PEM key (`Proc-Type: 4,ENCRYPTED`, as
/// `openssl ec -aes128` writes) is said to be encrypted, as a PKCS#8 encrypted key is, not
/// "not valid base64"; nothing is imported.
#[test]
fn a_legacy_encrypted_pem_key_is_named_encrypted() {
    let env = TestEnv::new();
    env.quickstart();
    env.plan_run(&["issue"]).ok();
    env.openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        "plain.pem",
    ])
    .ok();
    env.openssl(&[
        "ec",
        "-in",
        "plain.pem",
        "-aes128",
        "-passout",
        "pass:secret1",
        "-out",
        "enc.pem",
    ])
    .ok();
    let enc = std::fs::read_to_string(env.path("enc.pem")).unwrap();
    assert!(enc.contains("Proc-Type: 4,ENCRYPTED"), "{enc}");
    env.openssl(&[
        "req",
        "-x509",
        "-key",
        "plain.pem",
        "-subj",
        "/CN=legacy",
        "-days",
        "30",
        "-out",
        "cert.pem",
    ])
    .ok();
    let cert = std::fs::read_to_string(env.path("cert.pem")).unwrap();
    env.write("both.pem", &format!("{cert}{enc}"));
    let r = env
        .plan_run(&["vault", "import", "legacy", "--file", "both.pem"])
        .code(2);
    assert!(
        r.stderr.contains("the private key is encrypted") && r.stderr.contains("Proc-Type: 4,ENCRYPTED"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("base64"), "{}", r.stderr);
    assert_eq!(backend(&env).versions("legacy").unwrap().len(), 0);
}

/// Priority 9 (item 20's kind, the leftovers): `vault purge -y`; no serde type names (`as i128`,
/// `expected a sequence`, `expected struct Envelope`, `EOF while parsing`) in messages; a store
/// locked by another program said once, in words; an empty import file called empty; `check
/// vault:NAME` accepted for a name `check` prints.
#[test]
fn the_leftover_messages_are_plain_words() {
    let env = TestEnv::new();
    let text = std::fs::read_to_string(env.quickstart()).unwrap();
    env.plan_run(&["issue"]).ok();
    // -y wherever --yes is.
    env.plan_run(&["vault", "create", "pz", "--subject", "CN=pz", "--issuer", "Self"])
        .ok();
    env.plan_run(&["vault", "delete", "pz", "--force"]).ok();
    env.plan_run(&["vault", "purge", "pz", "-y"]).ok();
    // Plan type errors.
    for (from, to, want) in [
        (
            "count = 50",
            "count = 99999999999999999999",
            "count = 99999999999999999999 is out of range (1 to 10000000)",
        ),
        (
            "emails = [\"pki-oncall@example.com\"]",
            "emails = \"pki-oncall@example.com\"",
            "expected a list",
        ),
    ] {
        assert!(text.contains(from), "{from}");
        env.write("bad.toml", &text.replace(from, to));
        let r = env.run(&["--plan", "bad.toml", "validate"]).code(2);
        assert!(r.stderr.contains(want), "{to}: {}", r.stderr);
        for word in ["i128", "sequence", "expected i64"] {
            assert!(!r.stderr.contains(word), "{to}: {}", r.stderr);
        }
    }
    // Not a backup: a PEM file, and a backup cut short.
    let with_pw = |args: &[&str]| {
        let out = env
            .cmd()
            .env("PW", "changeit-123")
            .args([&["--plan", "plan.toml"][..], args].concat())
            .output()
            .unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    };
    env.plan_run(&["export", "device:sensor-01", "--out", "d.pem"])
        .ok();
    let r = with_pw(&["vault", "restore", "--in", "d.pem", "--password-env", "PW"]).code(2);
    assert!(
        r.stderr.contains("not a certroll vault backup") && !r.stderr.contains("Envelope"),
        "{}",
        r.stderr
    );
    with_pw(&[
        "vault",
        "backup",
        "dev-sensor-01",
        "--out",
        "b.bak",
        "--password-env",
        "PW",
    ])
    .ok();
    let whole = std::fs::read(env.path("b.bak")).unwrap();
    std::fs::write(env.path("cut.bak"), &whole[..whole.len() / 2]).unwrap();
    let r = with_pw(&["vault", "restore", "--in", "cut.bak", "--password-env", "PW"]).code(2);
    assert!(
        r.stderr.contains("ends part-way") && !r.stderr.contains("EOF while parsing"),
        "{}",
        r.stderr
    );
    // An empty import file.
    env.write("empty.pem", "");
    let r = env
        .plan_run(&["vault", "import", "e", "--file", "empty.pem"])
        .code(2);
    assert!(
        r.stderr.contains("empty.pem is empty") && !r.stderr.contains("read as PKCS#12"),
        "{}",
        r.stderr
    );
    // check vault:NAME, as check names it.
    env.plan_run(&[
        "vault",
        "create",
        "v10",
        "--subject",
        "CN=v10",
        "--issuer",
        "Self",
    ])
    .ok();
    let r = env.plan_run(&["check", "vault:v10", "-o", "json"]).ok().json();
    assert_eq!(r["counts"]["ok"], 1, "{r:#}");
    let r = env.plan_run(&["check", "vault:nosuch"]).code(3);
    assert!(r.stderr.contains("vault:nosuch"), "{}", r.stderr);
    // A store another program (sqlite3) holds locked: told once, in words.
    let holder = rusqlite::Connection::open(env.store_dir().join("state.db")).unwrap();
    holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let r = env
        .plan_run(&["vault", "create", "zz", "--subject", "CN=zz"])
        .code(1);
    assert!(
        r.stderr.contains("another program (not certroll)"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("Error code 5"), "{}", r.stderr);
    assert_eq!(r.stderr.matches("database is locked").count(), 0, "{}", r.stderr);
    holder.execute_batch("ROLLBACK").unwrap();
}
