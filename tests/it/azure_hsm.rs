//! Issue 12 item 2: a CA whose key is not exportable (EC-HSM, RSA-HSM) never leaves Key Vault;
//! certroll builds each certificate and CRL with rcgen and Key Vault's keys client signs it.
//! The same plan runs on the local store and on azure against `certroll serve`, which checks
//! every signature it is shown (the proof of possession of the root, each device's registration
//! over mutual TLS); openssl checks the chains and CRLs certroll exports.

use crate::azure_verbs::{TOKEN, fleet_plans_hook, fleet_plans_with, mask, run_fleet, start_serve};
use crate::azure_verbs2::{assert_same, both};
use crate::conformance::azure::Serve;
use crate::util::{TestEnv, openssl_in};
use serde_json::Value;

/// An EC-HSM root; under it an EC-HSM intermediate that signs a group of two and one individual
/// enrollment, and an RSA-HSM intermediate that signs another enrollment.
const HSM: &str = "[policies.device]\nkey = { type = \"EC\", curve = \"P-256\" }\nvalidity_days = 365\n\
     [policies.hsm]\nkey = { type = \"EC-HSM\", curve = \"P-256\" }\nvalidity_days = 3650\n\
     key_usage = [\"keyCertSign\", \"cRLSign\", \"digitalSignature\"]\n\
     [policies.rsa-hsm]\nkey = { type = \"RSA-HSM\", size = 2048 }\nvalidity_days = 3650\n\
     key_usage = [\"keyCertSign\", \"cRLSign\", \"digitalSignature\"]\n\
     [ca.root]\nsubject = \"CN=HSM Root\"\npolicy = \"hsm\"\n\
     [ca.field]\nsubject = \"CN=HSM Field\"\nissuer = \"root\"\npath_len = 0\npolicy = \"hsm\"\n\
     [ca.rsa]\nsubject = \"CN=RSA HSM\"\nissuer = \"root\"\npath_len = 0\npolicy = \"rsa-hsm\"\n\
     [groups.cams]\nsigning_ca = \"field\"\nhub = \"conf-hub\"\nreprovision = \"migrate\"\n\
     device_policy = \"device\"\ndevices = { prefix = \"c-\", count = 2 }\n\
     [enrollments.gw-1]\nissuer = \"field\"\npolicy = \"device\"\nhub = \"conf-hub\"\n\
     [enrollments.gw-2]\nissuer = \"rsa\"\npolicy = \"device\"\nhub = \"conf-hub\"\n";

/// `certroll export TARGET --out FILE` on the azure plan; returns the file's path as a string.
fn export(env: &TestEnv, serve: &Serve, target: &str, file: &str, more: &[&str]) -> String {
    let out = env.path(file).to_str().unwrap().to_string();
    let mut args = vec!["export", target, "--out", &out];
    args.extend_from_slice(more);
    run_fleet(env, serve, "azure", &args).ok();
    out
}

/// openssl verifies, at the real time serve's vault keeps, the exported chain of each device (its certificate, then the intermediates)
/// up to the exported root.
fn verify_devices(env: &TestEnv, serve: &Serve, ids: &[&str], tag: &str) {
    let root = export(env, serve, "ca:root", &format!("{tag}-root.pem"), &[]);
    for id in ids {
        let chain = export(
            env,
            serve,
            &format!("device:{id}"),
            &format!("{tag}-{id}.pem"),
            &[],
        );
        let run = openssl_in(
            env.dir.path(),
            &["verify", "-CAfile", &root, "-untrusted", &chain, &chain],
        );
        assert!(
            run.stdout.contains(": OK"),
            "{tag} {id}: {}{}",
            run.stdout,
            run.stderr
        );
    }
}

/// What serve's Key Vault answers for `path` (GET, with the client plans' token).
fn key_vault_get(env: &TestEnv, serve: &Serve, path: &str) -> Value {
    let port = serve.port();
    let out = std::process::Command::new("curl")
        .args(["-sS", "--fail-with-body", "--cacert"])
        .arg(env.path("ca.pem"))
        .arg("--resolve")
        .arg(format!("certroll.vault.azure.net:{port}:127.0.0.1"))
        .arg("-H")
        .arg(format!("Authorization: Bearer {TOKEN}"))
        .arg(format!(
            "https://certroll.vault.azure.net:{port}/{path}?api-version=7.5"
        ))
        .output()
        .expect("curl runs");
    assert!(
        out.status.success(),
        "GET {path}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The steps of an `issue` report as `action target count`.
fn steps(report: &Value) -> Vec<String> {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| format!("{} {} {}", s["action"], s["target"], s["count"]))
        .collect()
}

/// Issue, revoke with a CRL, expiry rolls and breach rolls under HSM CAs: each works on azure as
/// on the local store (same reports and status), Key Vault signs every certificate and CRL, and
/// no CA key ever leaves it.
#[test]
fn hsm_cas_sign_in_key_vault_for_issue_crls_rolls_and_breaches_as_on_local() {
    let env = TestEnv::new();
    let serve = start_serve(&env, HSM);
    fleet_plans_hook(&env, &serve, HSM);

    // The dry run plans what the run then does, on both backends: the HSM root's proof of
    // possession, the intermediates it signs, the devices they sign.
    let (dry_l, dry_a) = both(&env, &serve, &["issue", "--dry-run", "-o", "json"]);
    assert_eq!(dry_l, dry_a, "issue --dry-run");
    let (l, a) = both(&env, &serve, &["issue", "-o", "json"]);
    assert_eq!(l, a, "issue");
    assert_eq!(steps(&dry_a), steps(&a), "the dry run planned what ran");
    for needed in [
        "\"verify-ca\" \"ca:root\" 1",
        "\"create-ca\" \"ca:field\" 1",
        "\"create-ca\" \"ca:rsa\" 1",
        "\"issue-device-certs\" \"group:cams\" 2",
        "\"issue-device-certs\" \"enrollment:gw-2\" 1",
    ] {
        assert!(steps(&a).iter().any(|s| s == needed), "{needed}: {:?}", steps(&a));
    }
    let (l, a) = both(&env, &serve, &["status", "-o", "json"]);
    assert_same(&l, &a, "status after issue");
    verify_devices(&env, &serve, &["c-1", "c-2", "gw-1", "gw-2"], "issued");
    // The RSA-HSM intermediate signed gw-2 with RSA, the EC-HSM one gw-1 with ECDSA.
    let text = |file: &str| {
        env.openssl(&["x509", "-in", env.path(file).to_str().unwrap(), "-noout", "-text"])
            .ok()
            .stdout
    };
    assert!(text("issued-gw-2.pem").contains("Signature Algorithm: sha256WithRSAEncryption"));
    assert!(text("issued-gw-1.pem").contains("Signature Algorithm: ecdsa-with-SHA256"));

    // No CA key ever left Key Vault: its secret holds the certificate alone, its key has no
    // private part, and certroll refuses to export it (exit 2, no file).
    for ca in ["root", "field", "rsa"] {
        let secret = key_vault_get(&env, &serve, &format!("secrets/ca-{ca}"));
        let value = secret["value"].as_str().unwrap();
        assert!(
            value.contains("CERTIFICATE") && !value.contains("PRIVATE KEY"),
            "{ca}"
        );
        let key = key_vault_get(&env, &serve, &format!("keys/ca-{ca}"));
        assert!(key["key"]["kty"].as_str().unwrap().ends_with("-HSM"), "{key}");
        assert!(
            key["key"].get("d").is_none() && key["key"].get("p").is_none(),
            "{ca}"
        );
        let out = env.path(&format!("ca-{ca}-key.pem"));
        let out = out.to_str().unwrap();
        for args in [
            &["vault", "export", &format!("ca-{ca}"), "--with-key", "--out", out][..],
            &["export", &format!("ca:{ca}"), "--with-key", "--out", out],
        ] {
            let run = run_fleet(&env, &serve, "azure", args).code(2);
            assert!(run.stderr.contains("not exportable"), "{args:?}: {}", run.stderr);
            assert!(!env.path(&format!("ca-{ca}-key.pem")).exists());
        }
    }

    // A revocation, then the CRLs of both HSM intermediates, signed in Key Vault: openssl
    // checks each CRL's signature and finds gw-1 revoked by it.
    let (l, a) = both(
        &env,
        &serve,
        &[
            "revoke",
            "device:gw-1",
            "--reason",
            "key-compromise",
            "--yes",
            "-o",
            "json",
        ],
    );
    assert_same(&l, &a, "revoke");
    let root = export(&env, &serve, "ca:root", "crl-root.pem", &[]);
    for ca in ["field", "rsa"] {
        let ca_pem = export(&env, &serve, &format!("ca:{ca}"), &format!("crl-{ca}.pem"), &[]);
        let crl = export(
            &env,
            &serve,
            &format!("ca:{ca}"),
            &format!("{ca}.crl"),
            &["--crl"],
        );
        let run = env.openssl(&["crl", "-in", &crl, "-CAfile", &ca_pem, "-noout"]);
        assert!(
            format!("{}{}", run.stdout, run.stderr).contains("verify OK"),
            "{ca}: {}{}",
            run.stdout,
            run.stderr
        );
    }
    let gw1 = env.path("issued-gw-1.pem");
    let run = openssl_in(
        env.dir.path(),
        &[
            "verify",
            "-crl_check",
            "-CRLfile",
            env.path("field.crl").to_str().unwrap(),
            "-CAfile",
            &root,
            "-untrusted",
            gw1.to_str().unwrap(),
            gw1.to_str().unwrap(),
        ],
    );
    assert!(
        format!("{}{}", run.stdout, run.stderr).contains("certificate revoked"),
        "{}{}",
        run.stdout,
        run.stderr
    );

    // Expiry rolls and breach rolls under the HSM CAs, the intermediate's breach included (a
    // new intermediate signed by the HSM root, and every device it signed replaced). The factory
    // hook gave each device its first certificate; from here on they go over the air.
    fleet_plans_with(&env, &serve, HSM, "delivery = \"direct-method\"\n");
    let rolls: &[&[&str]] = &[
        &["roll-secondary", "group:cams", "-o", "json"],
        &["roll-primary", "device:gw-2", "-o", "json"],
        &["roll-primary", "--breach", "device:c-2", "--yes", "-o", "json"],
        &["status", "-o", "json"],
        &["roll-primary", "--breach", "ca:field", "--yes", "-o", "json"],
        &["status", "-o", "json"],
        &["roll-primary", "--breach", "ca:field", "--yes", "-o", "json"],
    ];
    for (i, step) in rolls.iter().enumerate() {
        let (l, a) = both(&env, &serve, step);
        assert_same(&l, &a, &format!("step {i} {step:?}"));
    }
    verify_devices(&env, &serve, &["c-1", "c-2", "gw-2"], "rolled");
    let versions = run_fleet(
        &env,
        &serve,
        "azure",
        &["vault", "show", "ca-field", "-o", "json"],
    )
    .ok()
    .json();
    assert!(
        mask(versions.clone()).to_string().contains("EC-HSM"),
        "the new intermediate is HSM too: {versions}"
    );
}
