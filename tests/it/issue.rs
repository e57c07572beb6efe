//! `issue` and `status` end to end.

use crate::util::*;

fn status_json(env: &TestEnv) -> serde_json::Value {
    env.run(&["--plan", "plan.toml", "status", "-o", "json"])
        .ok()
        .json()
}

fn assert_cert_shape(cert: &serde_json::Value) {
    let tp = cert["thumbprint"].as_str().expect("thumbprint");
    assert_eq!(tp.len(), 40, "{tp}");
    assert!(
        tp.chars().all(|c| c.is_ascii_digit() || ('A'..='F').contains(&c)),
        "{tp}"
    );
    assert_eq!(cert["sha256"].as_str().unwrap().len(), 64);
    for key in ["serial", "subject", "issuer", "not_before", "not_after"] {
        assert!(cert[key].is_string(), "{key} missing in {cert}");
    }
}

#[test]
fn quickstart_issues_everything_and_status_shows_the_documented_shape() {
    let env = TestEnv::new();
    env.quickstart();
    env.run(&["--plan", "plan.toml", "issue"]).ok();
    let s = status_json(&env);

    let cas = s["cas"].as_array().unwrap();
    assert_eq!(cas.len(), 2);
    assert_eq!(cas[0]["name"], "root");
    assert_eq!(
        cas[0]["verified"], true,
        "the root is verified by proof of possession"
    );
    cas.iter().for_each(|c| assert_cert_shape(&c["cert"]));

    let group = &s["groups"][0];
    assert_eq!(group["name"], "sensors");
    assert_eq!(group["status"], "enabled");
    assert_cert_shape(&group["primary"]);
    assert!(group["secondary"].is_null());
    assert_eq!(
        group["primary"]["thumbprint"], cas[1]["cert"]["thumbprint"],
        "the factory CA is in the primary slot"
    );

    let enrollment = &s["enrollments"][0];
    assert_eq!(enrollment["name"], "gateway-01");
    assert_cert_shape(&enrollment["primary"]);

    let devices = s["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 51);
    for d in devices {
        let installed = &d["installed"];
        assert_cert_shape(installed);
        assert_eq!(installed["subject"], format!("CN={}", d["id"].as_str().unwrap()));
        assert_eq!(d["registration"]["status"], "assigned", "{d}");
        assert_eq!(d["registration"]["substatus"], "initialAssignment");
        assert_eq!(d["registration"]["hub"], "example-hub");
        assert_eq!(d["hub_identity"]["status"], "enabled");
        assert_eq!(d["hub_identity"]["primary_thumbprint"], installed["thumbprint"]);
    }
    let gw = devices.iter().find(|d| d["id"] == "gateway-01").unwrap();
    assert_eq!(gw["enrollment"], "gateway-01");
    assert_eq!(gw["installed"]["thumbprint"], enrollment["primary"]["thumbprint"]);

    // The thumbprint is the SHA-1 of the DER, as openssl computes it.
    env.run(&[
        "--plan",
        "plan.toml",
        "export",
        "device:sensor-07",
        "--out",
        "s7.pem",
    ])
    .ok();
    let fp = env
        .openssl(&["x509", "-in", "s7.pem", "-noout", "-fingerprint", "-sha1"])
        .ok()
        .stdout;
    let fp = fp.trim().rsplit('=').next().unwrap().replace(':', "");
    let s7 = devices.iter().find(|d| d["id"] == "sensor-07").unwrap();
    assert_eq!(s7["installed"]["thumbprint"].as_str().unwrap(), fp);
}

#[test]
fn a_second_issue_changes_nothing() {
    let env = TestEnv::new();
    env.quickstart();
    let first = env
        .run(&["--plan", "plan.toml", "issue", "-o", "json"])
        .ok()
        .json();
    assert!(!first["steps"].as_array().unwrap().is_empty());
    let before = env
        .run(&["--plan", "plan.toml", "status", "-o", "json"])
        .ok()
        .stdout;
    let again = env
        .run(&["--plan", "plan.toml", "issue", "-o", "json"])
        .ok()
        .json();
    assert_eq!(again["steps"].as_array().unwrap().len(), 0, "{again}");
    let human = env.run(&["--plan", "plan.toml", "issue"]).ok().stdout;
    assert!(human.contains("Nothing to do"), "{human}");
    let after = env
        .run(&["--plan", "plan.toml", "status", "-o", "json"])
        .ok()
        .stdout;
    assert_eq!(before, after);
}

#[test]
fn dry_run_prints_the_steps_and_creates_nothing() {
    let env = TestEnv::new();
    env.quickstart();
    let plan = env
        .run(&["--plan", "plan.toml", "issue", "--dry-run", "-o", "json"])
        .ok()
        .json();
    assert_eq!(plan["dry_run"], true);
    let actions: Vec<&str> = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["action"].as_str().unwrap())
        .collect();
    for wanted in [
        "create-ca",
        "upload-ca",
        "verify-ca",
        "create-group",
        "issue-device-certs",
        "register-devices",
    ] {
        assert!(actions.contains(&wanted), "{wanted} missing from {actions:?}");
    }
    assert!(!env.store_dir().exists(), "a dry run must not create the store");

    // The dry run announced exactly what the real run then did.
    let real = env
        .run(&["--plan", "plan.toml", "issue", "-o", "json"])
        .ok()
        .json();
    let real_actions: Vec<&str> = real["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, real_actions);
    let after = env
        .run(&["--plan", "plan.toml", "issue", "--dry-run", "-o", "json"])
        .ok()
        .json();
    assert!(after["steps"].as_array().unwrap().is_empty());
}

#[test]
fn targets_limit_issue_to_what_they_need() {
    let env = TestEnv::new();
    env.quickstart();
    env.run(&["--plan", "plan.toml", "issue", "device:sensor-03"])
        .ok();
    let s = status_json(&env);
    let devices = s["devices"].as_array().unwrap();
    let issued: Vec<&str> = devices
        .iter()
        .filter(|d| !d["installed"].is_null())
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(issued, ["sensor-03"]);
    assert!(
        !s["groups"][0]["primary"].is_null(),
        "the device's group and CA chain are created too"
    );
    assert!(
        s["enrollments"][0]["primary"].is_null(),
        "the gateway was not a target"
    );

    env.run(&["--plan", "plan.toml", "issue", "device:nope"]).code(2);
    env.run(&["--plan", "plan.toml", "issue", "bogus:x"]).code(2);
}

#[test]
fn now_sets_the_validity_of_what_is_issued() {
    let env = TestEnv::new();
    env.quickstart();
    env.run(&["--plan", "plan.toml", "--now", "2030-01-01T00:00:00Z", "issue"])
        .ok();
    let s = status_json(&env);
    // Backdated by the plan's default skew of 5 minutes, for devices with a slow clock.
    assert_eq!(s["devices"][0]["installed"]["not_before"], "2029-12-31T23:55:00Z");
    assert_eq!(s["devices"][0]["installed"]["not_after"], "2031-01-01T00:00:00Z");
    env.run(&["--plan", "plan.toml", "--now", "yesterday", "status"])
        .code(2);
}

#[test]
fn a_mixed_fleet_chains_for_openssl_with_the_right_extensions() {
    let env = TestEnv::new();
    env.write("plan.toml", &mixed_plan(120, 80));
    env.run(&["--plan", "plan.toml", "issue"]).ok();
    let s = status_json(&env);
    assert_eq!(s["devices"].as_array().unwrap().len(), 202);
    assert!(
        s["devices"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["registration"]["status"] == "assigned")
    );

    for root in ["rsa-root", "ec-root"] {
        env.run(&[
            "--plan",
            "plan.toml",
            "export",
            &format!("ca:{root}"),
            "--out",
            &format!("{root}.pem"),
        ])
        .ok();
    }
    let rsa_root = env
        .openssl(&["x509", "-in", "rsa-root.pem", "-noout", "-text"])
        .ok()
        .stdout;
    assert!(rsa_root.contains("Public-Key: (3072 bit)"), "{rsa_root}");
    assert!(rsa_root.contains("CA:TRUE"));
    let ec_root = env
        .openssl(&["x509", "-in", "ec-root.pem", "-noout", "-text"])
        .ok()
        .stdout;
    assert!(ec_root.contains("NIST CURVE: P-384"), "{ec_root}");

    env.run(&[
        "--plan",
        "plan.toml",
        "export",
        "ca:line-a",
        "--out",
        "line-a.pem",
    ])
    .ok();
    let int = env
        .openssl(&["x509", "-in", "line-a.pem", "-noout", "-text"])
        .ok()
        .stdout;
    assert!(int.contains("CA:TRUE, pathlen:0"), "{int}");
    assert!(int.contains("Certificate Sign, CRL Sign"), "{int}");

    let cases = [
        ("meter-001", "rsa-root", 2),
        ("meter-120", "rsa-root", 2),
        ("pump-01", "ec-root", 1),
        ("pump-80", "ec-root", 1),
        ("gw-rsa", "ec-root", 2),
        ("gw-hsm", "rsa-root", 2),
    ];
    for (device, root, certs_in_file) in cases {
        let file = format!("{device}.pem");
        env.run(&[
            "--plan",
            "plan.toml",
            "export",
            &format!("device:{device}"),
            "--out",
            &file,
        ])
        .ok();
        let text = std::fs::read_to_string(env.path(&file)).unwrap();
        assert_eq!(
            text.matches("BEGIN CERTIFICATE").count(),
            certs_in_file,
            "{device}: chain up to, not including, the root"
        );
        let verify = env
            .openssl(&[
                "verify",
                "-CAfile",
                &format!("{root}.pem"),
                "-untrusted",
                &file,
                &file,
            ])
            .ok();
        assert!(verify.stdout.contains(": OK"), "{device}: {}", verify.stdout);
        let x = env
            .openssl(&["x509", "-in", &file, "-noout", "-text", "-subject"])
            .ok()
            .stdout;
        assert!(x.contains("CA:FALSE"), "{device}: {x}");
        assert!(x.contains("TLS Web Client Authentication"), "{device}: {x}");
        assert!(
            x.contains(&format!("CN = {device}")) || x.contains(&format!("CN={device}")),
            "{device}: {x}"
        );
        if device == "gw-rsa" {
            assert!(x.contains("Public-Key: (2048 bit)"), "{x}");
            assert!(x.contains("Digital Signature, Key Encipherment"), "{x}");
        } else {
            assert!(x.contains("NIST CURVE: P-256"), "{x}");
        }
    }
    // The other root does not vouch for these devices.
    let wrong = env.openssl(&[
        "verify",
        "-CAfile",
        "ec-root.pem",
        "-untrusted",
        "meter-001.pem",
        "meter-001.pem",
    ]);
    assert_ne!(wrong.code, 0);
}
