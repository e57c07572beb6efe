//! `revoke`: disallowed certificates fail registration and the hub, and land on the CRL that
//! `openssl verify -crl_check` honours.

use crate::util::*;

/// Exports the factory CA's CRL; returns its number and how many certificates it lists.
fn crl(env: &TestEnv) -> (u64, usize) {
    env.run(&[
        "--plan",
        "plan.toml",
        "export",
        "ca:factory",
        "--crl",
        "--out",
        "f.crl",
    ])
    .ok();
    let text = env
        .openssl(&["crl", "-in", "f.crl", "-noout", "-text"])
        .ok()
        .stdout;
    let at = text.find("CRL Number:").expect("CRL number");
    let number = text[at..].lines().nth(1).unwrap().trim().parse().unwrap();
    (number, text.matches("Serial Number:").count())
}

fn verify_with_crl(env: &TestEnv, device: &str) -> bool {
    env.openssl(&[
        "verify",
        "-crl_check",
        "-CAfile",
        "root.pem",
        "-untrusted",
        &format!("{device}.pem"),
        "-CRLfile",
        "f.crl",
        &format!("{device}.pem"),
    ])
    .code
        == 0
}

#[test]
fn revoking_a_group_device_disallows_it_everywhere_and_only_it() {
    let env = TestEnv::new();
    env.quickstart();
    env.run(&["--plan", "plan.toml", "issue"]).ok();
    env.run(&["--plan", "plan.toml", "export", "ca:root", "--out", "root.pem"])
        .ok();
    for d in ["sensor-05", "sensor-06"] {
        env.run(&[
            "--plan",
            "plan.toml",
            "export",
            &format!("device:{d}"),
            "--out",
            &format!("{d}.pem"),
        ])
        .ok();
    }
    assert_eq!(crl(&env), (1, 0));

    // Not on a terminal and no --yes: refused, nothing changed.
    let r = env
        .run(&[
            "--plan",
            "plan.toml",
            "revoke",
            "device:sensor-05",
            "--reason",
            "key-compromise",
        ])
        .code(2);
    assert!(r.stderr.contains("--yes"), "{}", r.stderr);
    let dry = env
        .run(&[
            "--plan",
            "plan.toml",
            "revoke",
            "device:sensor-05",
            "--reason",
            "key-compromise",
            "--dry-run",
            "-o",
            "json",
        ])
        .ok()
        .json();
    assert_eq!(
        dry["targets"][0]["devices_cut_off"],
        serde_json::json!({ "count": 1, "first": ["sensor-05"] })
    );
    assert_eq!(dry["steps"][0]["devices_cut_off"]["count"], 1);
    assert_eq!(
        crl(&env),
        (2, 0),
        "neither a refusal nor a dry run lists anything; each CRL issued has its own number"
    );

    let r = env
        .run(&[
            "--plan",
            "plan.toml",
            "revoke",
            "device:sensor-05",
            "--reason",
            "key-compromise",
            // `-y`, as the rolls take it.
            "-y",
            "-o",
            "json",
        ])
        .ok()
        .json();
    assert_eq!(r["targets"][0]["steps"].as_array().unwrap().len(), 4, "{r}");
    assert_eq!(crl(&env), (3, 1));
    assert!(
        !verify_with_crl(&env, "sensor-05"),
        "openssl must see the revocation"
    );
    assert!(verify_with_crl(&env, "sensor-06"));

    // The enrollment service rejects it although the group would accept its chain; the hub too.
    let rp = env
        .run(&[
            "--plan",
            "plan.toml",
            "reprovision",
            "device:sensor-05",
            "device:sensor-06",
            "-o",
            "json",
        ])
        .code(1)
        .json();
    // DPS's status for a refusal by a disabled enrollment (issue 10 item 2).
    assert_eq!(rp["devices"][0]["status"], "disabled");
    assert!(
        rp["devices"][0]["error"]
            .as_str()
            .unwrap()
            .contains("disabled enrollment")
    );
    // Its neighbour is still assigned with the certificate it holds: nothing changes for it.
    assert_eq!(rp["devices"][1]["status"], "unchanged");
    let s = env
        .run(&["--plan", "plan.toml", "status", "-o", "json", "device:sensor-05"])
        .ok()
        .json();
    assert_eq!(s["devices"][0]["hub_identity"]["status"], "disabled");
    // The disabled individual enrollment that refuses it, holding its certificate.
    let disallowed = &s["devices"][0]["individual_enrollment"];
    assert_eq!(disallowed["status"], "disabled", "{s}");
    assert_eq!(
        disallowed["primary"]["thumbprint"], s["devices"][0]["installed"]["thumbprint"],
        "{s}"
    );
    // The disabled version is not exported any more.
    env.run(&[
        "--plan",
        "plan.toml",
        "export",
        "device:sensor-05",
        "--out",
        "again.pem",
    ])
    .code(2);

    // A rerun changes nothing; another revocation raises the CRL number.
    let again = env
        .run(&[
            "--plan",
            "plan.toml",
            "revoke",
            "device:sensor-05",
            "--reason",
            "key-compromise",
            "--yes",
            "-o",
            "json",
        ])
        .ok()
        .json();
    assert!(again["targets"][0]["steps"].as_array().unwrap().is_empty());
    assert_eq!(crl(&env).1, 1, "a rerun lists nothing twice");
    env.run(&[
        "--plan",
        "plan.toml",
        "revoke",
        "device:sensor-06",
        "--reason",
        "superseded",
        "--yes",
        "--hub-identity",
        "delete",
    ])
    .ok();
    assert_eq!(crl(&env).1, 2);
    assert!(!verify_with_crl(&env, "sensor-06"));
    let s = env
        .run(&["--plan", "plan.toml", "status", "-o", "json", "device:sensor-06"])
        .ok()
        .json();
    assert!(s["devices"][0]["hub_identity"].is_null());
}

#[test]
fn revoking_an_individual_enrollment_disables_it() {
    let env = TestEnv::new();
    env.quickstart();
    env.run(&["--plan", "plan.toml", "issue"]).ok();
    env.run(&[
        "--plan",
        "plan.toml",
        "revoke",
        "enrollment:gateway-01",
        "--reason",
        "cessation-of-operation",
        "--yes",
    ])
    .ok();
    let s = env
        .run(&[
            "--plan",
            "plan.toml",
            "status",
            "-o",
            "json",
            "enrollment:gateway-01",
        ])
        .ok()
        .json();
    assert_eq!(s["enrollments"][0]["status"], "disabled");
    env.run(&["--plan", "plan.toml", "reprovision", "device:gateway-01"])
        .code(1);
    env.run(&[
        "--plan",
        "plan.toml",
        "revoke",
        "group:sensors",
        "--reason",
        "unspecified",
        "--yes",
    ])
    .ok();
    let s = env
        .run(&["--plan", "plan.toml", "status", "-o", "json", "group:sensors"])
        .ok()
        .json();
    assert_eq!(s["groups"][0]["status"], "disabled");
    env.run(&["--plan", "plan.toml", "reprovision", "device:sensor-01"])
        .code(1);
    env.run(&[
        "--plan",
        "plan.toml",
        "revoke",
        "device:sensor-01",
        "--reason",
        "bogus",
        "--yes",
    ])
    .code(2);
}

#[test]
fn issue_leaves_revoked_devices_alone() {
    let env = TestEnv::new();
    env.quickstart();
    env.run(&["--plan", "plan.toml", "issue"]).ok();
    env.run(&[
        "--plan",
        "plan.toml",
        "revoke",
        "device:sensor-04",
        "--reason",
        "key-compromise",
        "--hub-identity",
        "delete",
        "--yes",
    ])
    .ok();
    env.run(&[
        "--plan",
        "plan.toml",
        "revoke",
        "enrollment:gateway-01",
        "--reason",
        "superseded",
        "--hub-identity",
        "delete",
        "--yes",
    ])
    .ok();
    let again = env
        .run(&["--plan", "plan.toml", "issue", "-o", "json"])
        .ok()
        .json();
    assert!(again["steps"].as_array().unwrap().is_empty(), "{again}");
}

#[test]
fn revoking_a_ca_takes_it_out_of_every_group_and_onto_its_issuers_crl() {
    let env = TestEnv::new();
    env.quickstart();
    env.run(&["--plan", "plan.toml", "issue"]).ok();
    let args = [
        "--plan",
        "plan.toml",
        "revoke",
        "ca:factory",
        "--reason",
        "ca-compromise",
    ];
    let dry = env
        .run(&[&args[..], &["--dry-run", "-o", "json"]].concat())
        .ok()
        .json();
    // Every device below the factory CA: the 50 sensors and the gateway.
    assert_eq!(dry["steps"][0]["devices_cut_off"]["count"], 51, "{dry}");
    let r = env
        .run(&[&args[..], &["--yes", "-o", "json"]].concat())
        .ok()
        .json();
    assert!(!r["targets"][0]["steps"].as_array().unwrap().is_empty(), "{r}");
    let s = env
        .run(&["--plan", "plan.toml", "status", "-o", "json", "group:sensors"])
        .ok()
        .json();
    assert!(s["groups"][0]["primary"].is_null(), "{s}");
    let rp = env
        .run(&[
            "--plan",
            "plan.toml",
            "reprovision",
            "device:sensor-01",
            "-o",
            "json",
        ])
        .code(1)
        .json();
    assert_eq!(rp["devices"][0]["status"], "failed", "{rp}");
    // The root's CRL lists the factory CA; openssl refuses it.
    env.run(&["--plan", "plan.toml", "export", "ca:root", "--out", "root.pem"])
        .ok();
    env.run(&[
        "--plan",
        "plan.toml",
        "export",
        "ca:root",
        "--crl",
        "--out",
        "r.crl",
    ])
    .ok();
    env.run(&[
        "--plan",
        "plan.toml",
        "export",
        "device:sensor-01",
        "--out",
        "s.pem",
    ])
    .ok();
    let chain = certroll::pki::pem::certs_from_pem(&std::fs::read(env.path("s.pem")).unwrap()).unwrap();
    env.write_pem(&chain[1], "factory");
    let check = env.openssl(&[
        "verify",
        "-crl_check",
        "-CAfile",
        "root.pem",
        "-CRLfile",
        "r.crl",
        "factory.pem",
    ]);
    assert_ne!(check.code, 0, "{}", check.stdout);
    assert!(format!("{}{}", check.stdout, check.stderr).contains("revoked"));
    let again = env
        .run(&[&args[..], &["--yes", "-o", "json"]].concat())
        .ok()
        .json();
    assert!(
        again["targets"][0]["steps"].as_array().unwrap().is_empty(),
        "{again}"
    );
}

#[test]
fn a_revoke_killed_part_way_is_finished_by_running_it_again() {
    for kill_at in 1..=2 {
        let env = TestEnv::new();
        env.quickstart();
        env.run(&["--plan", "plan.toml", "issue"]).ok();
        let args = [
            "--plan",
            "plan.toml",
            "revoke",
            "device:sensor-01",
            "device:sensor-02",
            "device:gateway-01",
            "--reason",
            "key-compromise",
            "--yes",
        ];
        let out = env
            .cmd()
            .args(args)
            .env("CERTROLL_FAULT_AFTER_STEPS", kill_at.to_string())
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "the fault switch must abort after step {kill_at}"
        );
        let r = env.run(&[&args[..], &["-o", "json"]].concat()).ok().json();
        assert_eq!(r["resumed"], true, "{r}");
        assert_eq!(r["steps"][kill_at - 1]["state"], "done-before", "{r}");
        assert_eq!(
            crl(&env).1,
            3,
            "the three serials (all signed by the factory CA) listed once each (killed after {kill_at})"
        );
    }
}

#[test]
fn after_a_ca_roll_each_ca_version_has_its_own_crl_that_openssl_honours() {
    let env = TestEnv::new();
    env.quickstart();
    env.run(&["--plan", "plan.toml", "issue"]).ok();
    // sensor-01 keeps its leaf under the first factory CA; the group roll gives sensor-02 a leaf
    // under the second.
    env.run(&[
        "--plan",
        "plan.toml",
        "export",
        "device:sensor-01",
        "--out",
        "sensor-01.pem",
    ])
    .ok();
    env.run(&["--plan", "plan.toml", "roll-secondary", "group:sensors"])
        .ok();
    env.run(&[
        "--plan",
        "plan.toml",
        "export",
        "device:sensor-02",
        "--out",
        "sensor-02.pem",
    ])
    .ok();
    env.run(&["--plan", "plan.toml", "export", "ca:root", "--out", "root.pem"])
        .ok();
    for d in ["sensor-01", "sensor-02"] {
        env.run(&[
            "--plan",
            "plan.toml",
            "revoke",
            &format!("device:{d}"),
            "--reason",
            "key-compromise",
            "--yes",
        ])
        .ok();
    }
    env.run(&[
        "--plan",
        "plan.toml",
        "export",
        "ca:factory",
        "--crl",
        "--out",
        "f.crl",
    ])
    .ok();
    assert_eq!(
        std::fs::read_to_string(env.path("f.crl"))
            .unwrap()
            .matches("BEGIN X509 CRL")
            .count(),
        2
    );
    for d in ["sensor-01", "sensor-02"] {
        let check = env.openssl(&[
            "verify",
            "-crl_check",
            "-CAfile",
            "root.pem",
            "-untrusted",
            &format!("{d}.pem"),
            "-CRLfile",
            "f.crl",
            &format!("{d}.pem"),
        ]);
        let said = format!("{}{}", check.stdout, check.stderr);
        assert!(check.code != 0 && said.contains("revoked"), "{d}: {said}");
    }
}

#[test]
fn revoking_a_root_takes_what_it_signed_out_of_every_group() {
    let env = TestEnv::new();
    env.quickstart();
    env.plan_run(&["issue"]).ok();
    let args = ["revoke", "ca:root", "--reason", "ca-compromise"];
    let dry = env
        .plan_run(&[&args[..], &["--dry-run", "-o", "json"]].concat())
        .ok()
        .json();
    assert_eq!(dry["steps"][0]["devices_cut_off"]["count"], 51, "{dry}");
    env.plan_run(&[&args[..], &["--yes"]].concat()).ok();
    let s = env.plan_run(&["status", "-o", "json"]).ok().json();
    assert!(
        s["groups"][0]["primary"].is_null(),
        "the factory CA left the group: {s}"
    );
    assert!(s["cas"][0]["in_service"].as_array().unwrap().is_empty(), "{s}");
    let v = env
        .plan_run(&["vault", "show", "ca:factory", "-o", "json"])
        .ok()
        .json();
    assert!(
        v.to_string().contains("\"enabled\":false"),
        "the factory CA is disabled: {v}"
    );
    let rp = env.plan_run(&["reprovision", "-o", "json"]).code(1).json();
    assert_eq!(
        rp["rejected"], 50,
        "every sensor is refused; the gateway's enrollment holds its own cert: {rp}"
    );
}
