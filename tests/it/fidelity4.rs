//! Issue 10, the leftovers a new user's trial found with other examples of each kind: a rerun
//! after a roll of another target or slot rolls nothing, a capped CA renewal, the cron `--due`
//! run beside a device not issued yet, a disabled CA, `reprovision --dry-run`'s exit code, a
//! failed registration in plain `status`, PEM with text around the blocks, PKCS#12 schemes named,
//! `check` on a group no verified CA accepts, and `serve --ca-out -`.

use crate::fidelity::{bare_plan, live, openssl_chain};
use crate::roll::{at, backend};
use crate::util::*;
use certroll::backend::{Journal as _, Vault as _};

/// How many vault versions each certificate of the plan has: the CAs and every device.
fn versions(env: &TestEnv, names: &[String]) -> Vec<(String, usize)> {
    let b = backend(env);
    names
        .iter()
        .map(|n| (n.clone(), b.versions(n).unwrap().len()))
        .collect()
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Fault 1 (issue 10 item 3's kind): for every ordered pair of different roll commands A and B,
/// the run A, B, A issues no certificate version and renews no CA on its third run, and reports
/// every group and device as already rolled (or not due). Nothing moves the clock, so B can never
/// make A's target due again; the one way B gives A work is renewing the CA that signs A's
/// device target outside B's scope (then A rolls it once, and its rerun does nothing).
#[test]
fn a_roll_rerun_after_any_other_roll_issues_nothing() {
    let seed = TestEnv::new();
    small_quickstart(&seed, 2);
    seed.plan_run(&["issue"]).ok();
    let mut names = vec!["ca-root".to_string(), "ca-factory".to_string()];
    names.extend(["sensor-1", "sensor-2", "gateway-01"].map(|d| format!("dev-{d}")));
    let t = at(100);
    let commands: Vec<Vec<&str>> = vec![
        vec!["roll-secondary", "ca:root"],
        vec!["roll-primary", "ca:root"],
        vec!["roll-secondary", "ca:factory"],
        vec!["roll-primary", "ca:factory"],
        vec!["roll-secondary", "group:sensors"],
        vec!["roll-primary", "group:sensors"],
        vec!["roll-secondary", "device:gateway-01"],
        vec!["roll-primary", "enrollment:gateway-01"],
        vec!["roll-secondary", "device:sensor-1"],
        vec!["roll-primary", "device:sensor-1"],
        vec!["roll-secondary", "--due"],
    ];
    let mut cases = Vec::new();
    for a in &commands {
        for b in &commands {
            if a != b {
                cases.push((a.clone(), b.clone()));
            }
        }
    }
    let failures = std::sync::Mutex::new(Vec::<String>::new());
    // Two lanes: every case copies the issued store, so the cases are independent.
    std::thread::scope(|scope| {
        for lane in 0..2 {
            let cases = &cases;
            let failures = &failures;
            let seed = &seed;
            let names = &names;
            let t = &t;
            scope.spawn(move || {
                for (a, b) in cases.iter().skip(lane).step_by(2) {
                    let env = TestEnv::new();
                    std::fs::copy(seed.path("plan.toml"), env.path("plan.toml")).unwrap();
                    copy_dir(&seed.store_dir(), &env.store_dir());
                    let run = |args: &[&str]| {
                        env.plan_run(&[&["--now", t.as_str(), "-o", "json"][..], args].concat())
                            .ok()
                            .json()
                    };
                    run(a);
                    let before_b = versions(&env, names);
                    run(b);
                    let mut before = versions(&env, names);
                    let mut third = run(a);
                    let mut after = versions(&env, names);
                    let mut case = format!("{a:?} then {b:?} then {a:?}");
                    // B renewed the CA that signs A's device outside B's own scope (a group roll
                    // renews `factory`, which signs gateway-01 too): A's device is then under an
                    // old CA version and A has work again, once. Its rerun must do nothing.
                    let device_target = a[1].starts_with("device:") || a[1].starts_with("enrollment:");
                    let ca_renewed = before_b[..2] != before[..2];
                    if device_target && ca_renewed && before != after {
                        assert_eq!(after[..2], before[..2], "{case}: a CA was renewed");
                        before = after;
                        third = run(a);
                        after = versions(&env, names);
                        case.push_str(" then again");
                    }
                    if before != after {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("{case}: versions {before:?} -> {after:?}"));
                    }
                    let settled = |list: &serde_json::Value, ok: &[&str]| {
                        list.as_array()
                            .unwrap()
                            .iter()
                            .all(|x| ok.contains(&x["outcome"].as_str().unwrap_or_default()))
                    };
                    if !settled(&third["groups"], &["already-rolled"])
                        || !settled(&third["devices"], &["already-rolled", "not-due"])
                        || third["devices_cut_off"]["count"] != 0
                    {
                        failures.lock().unwrap().push(format!("{case}: {third}"));
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} cases rolled again:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// The example the trial found, step by step, with what the middle run reports: a device roll
/// into the other slot after a CA roll that already gave the device its certificate under the
/// new CA does nothing, whichever slot holds it.
#[test]
fn a_device_roll_into_the_other_slot_after_its_ca_roll_does_nothing() {
    let env = TestEnv::new();
    small_quickstart(&env, 1);
    env.plan_run(&["issue"]).ok();
    let t = at(100);
    let run = |args: &[&str]| {
        env.plan_run(&[&["--now", t.as_str(), "-o", "json"][..], args].concat())
            .ok()
            .json()
    };
    run(&["roll-secondary", "ca:root"]);
    let gw = || backend(&env).versions("dev-gateway-01").unwrap().len();
    let after_ca = gw();
    assert_eq!(after_ca, 2);
    let r = run(&["roll-primary", "enrollment:gateway-01"]);
    assert_eq!(r["devices"][0]["outcome"], "already-rolled", "{r:#}");
    assert_eq!(r["devices"][0]["slot"], "secondary", "{r:#}");
    run(&["roll-secondary", "ca:root"]);
    assert_eq!(gw(), after_ca, "gateway-01 was rolled again");
    let human = env
        .plan_run(&["--now", &t, "roll-primary", "device:gateway-01"])
        .ok()
        .stdout;
    assert!(human.contains("already holds its newest certificate"), "{human}");
}

/// The plan of fidelity3's capped test: root 30 days, factory 60, so the root caps the factory.
fn capped_plan(env: &TestEnv) {
    let text = small_quickstart(env, 2)
        .replace(
            "O=Example\"\npolicy = \"ca\"",
            "O=Example\"\npolicy = \"root-30\"",
        )
        .replace(
            "path_len = 0\npolicy = \"ca\"",
            "path_len = 0\npolicy = \"ca-60\"",
        )
        + "\n[policies.root-30]\nkey = { type = \"EC\", curve = \"P-384\", exportable = false }\nvalidity_days = 30\n\
           \n[policies.ca-60]\nkey = { type = \"EC\", curve = \"P-384\", exportable = false }\nvalidity_days = 60\n\
           lifetime_actions = [{ days_before_expiry = 25, action = \"auto-renew\" }]\n";
    env.write("plan.toml", &text);
}

/// Fault 2 (item 15, second half): `roll-secondary ca:factory` under a root whose expiry caps the
/// factory CA would renew it to the same notAfter. It does not: the run reports the factory CA
/// and its devices capped by `ca:root`, changes no version (dry run and run alike), and `check`
/// names the root too.
#[test]
fn a_ca_renewal_capped_by_its_issuer_does_not_happen() {
    let env = TestEnv::new();
    capped_plan(&env);
    env.plan_run(&["issue"]).ok();
    let names: Vec<String> = ["ca-root", "ca-factory", "dev-sensor-1", "dev-gateway-01"]
        .map(String::from)
        .to_vec();
    let before = versions(&env, &names);
    let t = at(10);
    for dry in [true, false] {
        let mut args = vec!["--now", t.as_str(), "-o", "json", "roll-secondary", "ca:factory"];
        if dry {
            args.push("--dry-run");
        }
        let r = env.plan_run(&args).ok().json();
        let first = r["renew_ca_first"].as_array().unwrap();
        assert_eq!(first.len(), 1, "dry run {dry}: {r:#}");
        assert_eq!(first[0]["target"], "ca:root", "{r:#}");
        assert_eq!(first[0]["cas"], serde_json::json!(["ca:factory"]), "{r:#}");
        assert!(
            first[0]["message"]
                .as_str()
                .unwrap()
                .contains("roll-secondary ca:root"),
            "{r:#}"
        );
        for d in r["devices"].as_array().unwrap() {
            assert_eq!(d["outcome"], "capped", "dry run {dry}: {r:#}");
        }
        assert!(
            r["steps"]
                .as_array()
                .unwrap()
                .iter()
                .all(|s| s["kind"] != "renew-ca"),
            "{r:#}"
        );
        assert_eq!(versions(&env, &names), before, "dry run {dry}");
    }
    // `check` says the same of the factory CA, whose auto-renew has fired.
    let check = env.plan_run(&["check", "-o", "json", "--now", &t]).json();
    let factory = check["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["target"] == "ca:factory")
        .unwrap_or_else(|| panic!("{check:#}"))
        .clone();
    let reason = factory["reason"].as_str().unwrap();
    assert!(
        reason.contains("would end no later") && reason.contains("roll-secondary ca:root"),
        "{factory:#}"
    );
    // Renewing the root first moves the cap, and then the factory CA renews.
    env.plan_run(&["--now", &t, "roll-secondary", "ca:root"]).ok();
    let after = versions(&env, &names);
    assert_eq!(after[1].1, before[1].1 + 1, "{after:?}");
}

/// Fault 3: a device added to the plan but not issued yet does not stop the cron run: what is due
/// is rolled, the new device is reported `not-issued` with the command that issues it, and the
/// run exits 1 (README: a device the run could not serve), not 2 for the whole fleet.
#[test]
fn the_cron_due_run_rolls_what_is_due_beside_a_device_not_issued() {
    let env = TestEnv::new();
    let text = small_quickstart(&env, 2);
    env.plan_run(&["issue"]).ok();
    env.write(
        "plan.toml",
        &(text + "\n[enrollments.gateway-02]\nissuer = \"factory\"\npolicy = \"device\"\nhub = \"example-hub\"\n"),
    );
    let due = at(340);
    let r = env
        .plan_run(&["--now", &due, "-o", "json", "roll-secondary", "--due"])
        .code(1)
        .json();
    let outcome = |id: &str| {
        r["devices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["target"] == format!("device:{id}"))
            .unwrap_or_else(|| panic!("{id}: {r:#}"))
            .clone()
    };
    for id in ["sensor-1", "sensor-2", "gateway-01"] {
        assert_eq!(outcome(id)["outcome"], "rolled", "{r:#}");
        assert_eq!(backend(&env).versions(&format!("dev-{id}")).unwrap().len(), 2);
    }
    let new = outcome("gateway-02");
    assert_eq!(new["outcome"], "not-issued", "{r:#}");
    assert!(
        new["steps"][0]
            .as_str()
            .unwrap()
            .contains("certroll issue device:gateway-02"),
        "{new:#}"
    );
    // The human report says the same; the rerun rolls nothing more and still exits 1.
    let again = env.plan_run(&["--now", &due, "roll-secondary", "--due"]).code(1);
    assert!(
        again.stdout.contains("device:gateway-02: not issued yet")
            && again.stdout.contains("`certroll issue device:gateway-02`"),
        "{}",
        again.stdout
    );
    assert_eq!(backend(&env).versions("dev-sensor-1").unwrap().len(), 2);
    // Issued, it is simply not due.
    env.plan_run(&["--now", &due, "issue", "enrollment:gateway-02"])
        .ok();
    env.plan_run(&["--now", &due, "roll-secondary", "--due"]).ok();
}

/// Fault 4: an expiry roll under a CA whose current version is disabled (here the root, revoked)
/// is refused up front, for a CA target as for a device signed below it: exit 2, naming the
/// topmost disabled CA and the breach roll, nothing written and no open journal run (a rerun is
/// refused the same way, not resumed).
#[test]
fn a_ca_roll_under_a_disabled_ca_is_refused_before_anything_is_written() {
    let env = TestEnv::new();
    small_quickstart(&env, 1);
    env.plan_run(&["issue"]).ok();
    env.plan_run(&["revoke", "ca:root", "--reason", "ca-compromise", "--yes"])
        .ok();
    let before = env.plan_run(&["status", "-o", "json"]).ok().stdout;
    for args in [
        &["roll-secondary", "ca:root"][..],
        &["roll-secondary", "ca:root"],
        &["roll-primary", "ca:factory"],
        &["roll-secondary", "device:gateway-01"],
    ] {
        let r = env.plan_run(args).code(2);
        assert!(
            r.stderr.contains("disabled")
                && r.stderr.contains("roll-primary --breach ca:root")
                && r.stderr.contains("Nothing was changed")
                && !r.stderr.contains("Resuming")
                && !r.stdout.contains("Resuming"),
            "{args:?}: {}",
            r.stderr
        );
        assert_eq!(env.plan_run(&["status", "-o", "json"]).ok().stdout, before);
        let command = format!("roll-{}", args.join(" ").trim_start_matches("roll-"));
        assert!(
            backend(&env).open_run(&command).unwrap().is_none(),
            "{command}: a journal run was left open"
        );
    }
    // The way named works.
    env.plan_run(&["roll-primary", "--breach", "ca:root", "--yes"])
        .ok();
}

/// Fault 5: `reprovision --dry-run` exits 1 when the service would refuse a device, as the run
/// itself does and the README says.
#[test]
fn reprovision_dry_run_exits_1_when_a_device_would_be_refused() {
    let env = TestEnv::new();
    small_quickstart(&env, 1);
    env.plan_run(&["issue"]).ok();
    env.plan_run(&["reprovision", "--dry-run"]).ok();
    env.plan_run(&["revoke", "device:sensor-1", "--reason", "superseded", "--yes"])
        .ok();
    let r = env
        .plan_run(&["reprovision", "--dry-run", "-o", "json"])
        .code(1)
        .json();
    assert_eq!(r["rejected"], 1, "{r:#}");
    let human = env.plan_run(&["reprovision", "--dry-run"]).code(1);
    assert!(human.stdout.contains("would be rejected"), "{}", human.stdout);
    env.plan_run(&["reprovision", "device:sensor-1"]).code(1);
}

/// Fault 6: plain `status` shows a failed registration's status, error code and message, as
/// `-o json` does.
#[test]
fn plain_status_shows_a_failed_registration_with_its_error() {
    let env = TestEnv::new();
    small_quickstart(&env, 1);
    env.plan_run(&["issue"]).ok();
    env.plan_run(&["revoke", "device:gateway-01", "--reason", "superseded", "--yes"])
        .ok();
    env.plan_run(&["reprovision", "device:gateway-01"]).code(1);
    let json = env
        .plan_run(&["status", "device:gateway-01", "-o", "json"])
        .ok()
        .json();
    let reg = &json["devices"][0]["registration"];
    let code = reg["error_code"].as_i64().unwrap_or_else(|| panic!("{json:#}"));
    let message = reg["error"].as_str().unwrap();
    let human = env.plan_run(&["status"]).ok().stdout;
    let lines: Vec<&str> = human.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.contains("last registration"))
        .unwrap_or_else(|| panic!("{human}"));
    // Under the device's own row.
    assert!(
        lines[at - 1].trim_start().starts_with("gateway-01 ") && lines[at - 1].contains("example-hub"),
        "{human}"
    );
    let line = lines[at];
    assert!(
        line.contains(&format!("last registration {}", reg["status"].as_str().unwrap()))
            && line.contains(&format!("errorCode {code}"))
            && line.contains(message),
        "{line}\n{human}"
    );
}

/// Fault 7: PEM with text around the blocks, as openssl writes it (`pkcs12 -nodes` with its "Bag
/// Attributes" lines, `x509 -text` with the dump first), is read; a truncated PEM is named as
/// truncated, never shown as bytes. Exit 2 and nothing imported for the truncated one.
#[test]
fn pem_with_text_outside_the_blocks_is_read_and_a_truncated_one_is_named() {
    let env = TestEnv::new();
    bare_plan(&env);
    openssl_chain(&env);
    env.openssl(&[
        "pkcs12",
        "-export",
        "-in",
        "leaf.pem",
        "-inkey",
        "leaf.key",
        "-certfile",
        "int.pem",
        "-passout",
        "pass:changeit",
        "-out",
        "x.p12",
    ])
    .ok();
    env.openssl(&[
        "pkcs12",
        "-in",
        "x.p12",
        "-nodes",
        "-passin",
        "pass:changeit",
        "-out",
        "bags.pem",
    ])
    .ok();
    let bags = std::fs::read_to_string(env.path("bags.pem")).unwrap();
    assert!(bags.starts_with("Bag Attributes"), "{bags}");
    let r = live(
        &env,
        &["vault", "import", "bags", "--file", "bags.pem", "-o", "json"],
    )
    .ok()
    .json();
    assert_eq!(r["cert"]["subject"], "CN=Chain Leaf", "{r:#}");

    let dump = env.openssl(&["x509", "-in", "leaf.pem", "-text"]).ok().stdout;
    assert!(dump.starts_with("Certificate:"), "{dump}");
    let key = std::fs::read_to_string(env.path("leaf.key")).unwrap();
    env.write("dump.pem", &format!("{dump}{key}"));
    let r = live(
        &env,
        &["vault", "import", "dump", "--file", "dump.pem", "-o", "json"],
    )
    .ok()
    .json();
    assert_eq!(r["cert"]["subject"], "CN=Chain Leaf", "{r:#}");

    let leaf = std::fs::read_to_string(env.path("leaf.pem")).unwrap();
    env.write("cut.pem", &format!("{key}{}", &leaf[..leaf.len() / 2]));
    let r = live(&env, &["vault", "import", "cut", "--file", "cut.pem"]).code(2);
    assert!(
        r.stderr.contains("cut.pem")
            && r.stderr.contains("truncated")
            && r.stderr.contains("-----END CERTIFICATE-----")
            && !r.stderr.contains("[45"),
        "{}",
        r.stderr
    );
    live(&env, &["vault", "show", "cut"]).code(2);
}

/// Fault 8 (item 12): a PKCS#12 scheme certroll cannot read is named, with its OID; the legacy
/// schemes openssl writes (3DES for keys and certificates, RC2-40 for certificates) are read.
#[test]
fn an_unreadable_pkcs12_scheme_is_named() {
    let env = TestEnv::new();
    bare_plan(&env);
    openssl_chain(&env);
    let export = |out: &str, keypbe: &str, certpbe: &str| {
        env.openssl(&[
            "pkcs12",
            "-export",
            "-legacy",
            "-in",
            "leaf.pem",
            "-inkey",
            "leaf.key",
            "-keypbe",
            keypbe,
            "-certpbe",
            certpbe,
            "-passout",
            "pass:changeit",
            "-out",
            out,
        ])
        .ok();
    };
    export("3des.p12", "PBE-SHA1-3DES", "PBE-SHA1-3DES");
    export("rc2.p12", "PBE-SHA1-3DES", "PBE-SHA1-RC2-40");
    export("rc4.p12", "PBE-SHA1-RC4-128", "PBE-SHA1-RC4-128");
    for (name, file) in [("three", "3des.p12"), ("rc", "rc2.p12")] {
        live(
            &env,
            &["vault", "import", name, "--file", file, "--password-env", "PW"],
        )
        .ok();
    }
    let r = live(
        &env,
        &[
            "vault",
            "import",
            "four",
            "--file",
            "rc4.p12",
            "--password-env",
            "PW",
        ],
    )
    .code(2);
    assert!(
        r.stderr
            .contains("pbeWithSHAAnd128BitRC4 (1.2.840.113549.1.12.1.1)")
            && !r.stderr.contains("wrong password"),
        "{}",
        r.stderr
    );
}

/// Fault 9 (item 9's kind): `check` reports a group whose signing CA reaches no verified CA
/// certificate of the enrollment service, with the way on.
#[test]
fn check_reports_a_group_no_verified_ca_accepts() {
    let env = TestEnv::new();
    small_quickstart(&env, 1);
    env.plan_run(&["issue"]).ok();
    let ok = env.plan_run(&["check", "-o", "json"]).json();
    assert!(
        !ok["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["target"] == "group:sensors"),
        "{ok:#}"
    );
    env.plan_run(&["revoke", "ca:root", "--reason", "ca-compromise", "--yes"])
        .ok();
    let check = env.plan_run(&["check", "-o", "json"]).json();
    let group = check["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["target"] == "group:sensors")
        .unwrap_or_else(|| panic!("{check:#}"))
        .clone();
    assert_eq!(group["level"], "critical", "{group:#}");
    let reason = group["reason"].as_str().unwrap();
    assert!(
        reason.contains("accept none of its devices") && reason.contains("roll-primary --breach ca:root"),
        "{group:#}"
    );
}

/// Fault 10: `serve --ca-out -` writes the CA certificate to standard output (openssl reads it)
/// and the start lines to standard error; with `-o json` it is refused (exit 2), as `--out -` is.
#[test]
fn serve_ca_out_dash_writes_the_ca_to_standard_output() {
    use std::io::Read as _;
    let env = TestEnv::new();
    small_quickstart(&env, 1);
    env.plan_run(&["issue"]).ok();
    let r = env
        .plan_run(&["-o", "json", "serve", "--listen", "127.0.0.1:0", "--ca-out", "-"])
        .code(2);
    assert!(r.stdout.contains("--ca-out -"), "{}", r.stdout);
    assert!(!env.path("-").exists());

    let mut child = env
        .cmd()
        .env_remove("CERTROLL_NOW")
        .args([
            "--plan",
            "plan.toml",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--ca-out",
            "-",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let mut buf = [0u8; 4096];
        while !text.contains("-----END CERTIFICATE-----") {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => text.push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
        let _ = tx.send(text);
    });
    // The start lines go to stderr once serve listens, which may be after the CA is out.
    let mut err = child.stderr.take().unwrap();
    let (etx, erx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let mut buf = [0u8; 4096];
        while !text.contains("listening") {
            match err.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => text.push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
        let _ = etx.send(text);
    });
    let text = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .unwrap_or_default();
    let stderr = erx
        .recv_timeout(std::time::Duration::from_secs(60))
        .unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        text.starts_with("-----BEGIN CERTIFICATE-----"),
        "{text:?}\n{stderr}"
    );
    assert!(!text.contains("listening"), "{text}");
    assert!(stderr.contains("listening"), "{stderr}");
    assert!(!env.path("-").exists());
    env.write("serve-ca.pem", &text);
    env.openssl(&["x509", "-in", "serve-ca.pem", "-noout", "-subject"])
        .ok();
}
