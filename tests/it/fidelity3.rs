//! Issue 10, what a new user's trial found after the first fixes: a revoked root trusted again,
//! `--out -`, deleted device certificates in `revoke` and `reprovision`, the CA a capped renewal
//! names, and the chain `export` writes.

use crate::util::*;

fn status_json(env: &TestEnv) -> serde_json::Value {
    env.plan_run(&["status", "-o", "json"]).ok().json()
}

/// A root revoked as compromised is never uploaded, verified or trusted again: the roll that
/// finds the service without it advises a breach roll, `issue ca:root` refuses (exit 2) and
/// changes nothing, and the breach roll is indeed the way on.
#[test]
fn a_revoked_root_is_never_uploaded_or_verified_again() {
    let env = TestEnv::new();
    env.quickstart();
    env.plan_run(&["issue"]).ok();
    env.plan_run(&["revoke", "ca:root", "--reason", "ca-compromise", "--yes"])
        .ok();
    let before = status_json(&env);

    let roll = env
        .plan_run(&["roll-secondary", "group:sensors", "--yes"])
        .code(2);
    assert!(
        roll.stderr.contains("`certroll roll-primary --breach ca:root`")
            && !roll.stderr.contains("`certroll issue ca:root` uploads")
            && !roll.stderr.contains("--enable"),
        "{}",
        roll.stderr
    );
    for args in [&["issue", "ca:root"][..], &["issue"][..]] {
        let r = env.plan_run(args).code(2);
        assert!(
            r.stderr.contains("disabled") && !r.stderr.contains("--enable"),
            "{args:?}: {}",
            r.stderr
        );
        assert_eq!(status_json(&env), before, "{args:?} changed something");
    }
    let ca_root = env.plan_run(&["issue", "ca:root"]).code(2);
    assert!(
        ca_root.stderr.contains("roll-primary --breach ca:root"),
        "{}",
        ca_root.stderr
    );

    // The advised way on works, and afterwards the group rolls again.
    env.plan_run(&["roll-primary", "--breach", "ca:root", "--yes"])
        .ok();
    env.plan_run(&["roll-secondary", "group:sensors", "--yes"]).ok();
}

/// `--out -` is standard output for every verb that writes a file: the PEM (key included when
/// asked for, here into a pipe) is what openssl reads, no file named `-` appears, and `-o json`
/// beside it is refused rather than mixed in.
#[test]
fn out_dash_is_standard_output_and_never_a_file() {
    let env = TestEnv::new();
    env.quickstart();
    env.plan_run(&["issue"]).ok();
    let dash = env.path("-");

    let r = env
        .plan_run(&[
            "vault",
            "export",
            "dev-sensor-02",
            "--with-key",
            "--format",
            "pem",
            "--out",
            "-",
        ])
        .ok();
    assert!(!dash.exists(), "a file named `-` was created");
    assert!(
        r.stdout.contains(concat!("-----BEGIN ", "PRIVATE KEY-----")),
        "{}",
        r.stdout
    );
    assert!(
        !r.stdout.contains("Wrote"),
        "the report is mixed into the PEM: {}",
        r.stdout
    );
    std::fs::write(env.path("got.pem"), &r.stdout).unwrap();
    let subject = env
        .openssl(&["x509", "-in", "got.pem", "-noout", "-subject"])
        .ok();
    assert!(subject.stdout.contains("sensor-02"), "{}", subject.stdout);
    env.openssl(&["pkey", "-in", "got.pem", "-noout"]).ok();

    let r = env.plan_run(&["export", "device:sensor-02", "--out", "-"]).ok();
    assert!(!dash.exists());
    assert!(
        r.stdout.starts_with("-----BEGIN CERTIFICATE-----"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("PRIVATE KEY"));

    let r = env
        .plan_run(&["-o", "json", "export", "device:sensor-02", "--out", "-"])
        .code(2);
    assert!(
        r.stdout.contains("--out -") && !r.stdout.contains("BEGIN"),
        "{}",
        r.stdout
    );
    assert!(!dash.exists());
}

/// A device certificate deleted from the vault but still installed is revoked all the same (its
/// serial on the CRL openssl reads, a second revoke finds it done); one purged is named as purged
/// (exit 2, nothing changed), not "not issued"; `reprovision` says the device still holds it.
#[test]
fn a_deleted_or_purged_device_certificate_in_revoke_and_reprovision() {
    let env = TestEnv::new();
    env.quickstart();
    env.plan_run(&["issue"]).ok();
    env.plan_run(&["vault", "delete", "dev-sensor-03", "--force"])
        .ok();

    let r = env
        .plan_run(&["reprovision", "device:sensor-03", "--force"])
        .code(1);
    assert!(
        r.stdout.contains("still holds")
            && r.stdout.contains("deleted")
            && !r.stdout.contains("no certificate is installed"),
        "{}",
        r.stdout
    );

    let r = env
        .plan_run(&[
            "-o",
            "json",
            "revoke",
            "device:sensor-03",
            "--reason",
            "superseded",
            "--yes",
        ])
        .ok();
    assert!(r.stdout.contains("to the CRL of `ca-factory`"), "{}", r.stdout);
    let again = env
        .plan_run(&["revoke", "device:sensor-03", "--reason", "superseded", "--yes"])
        .ok();
    assert!(again.stdout.contains("already revoked"), "{}", again.stdout);
    // The CRL openssl reads lists the deleted certificate's serial.
    env.plan_run(&["vault", "recover", "dev-sensor-03"]).ok();
    env.plan_run(&["export", "device:sensor-03", "--out", "leaf.pem"])
        .ok();
    let serial = env
        .openssl(&["x509", "-in", "leaf.pem", "-noout", "-serial"])
        .ok()
        .stdout;
    let serial = serial.trim().trim_start_matches("serial=").to_string();
    env.plan_run(&["export", "ca:factory", "--crl", "--out", "crl.pem"])
        .ok();
    let crl = env
        .openssl(&["crl", "-in", "crl.pem", "-noout", "-text"])
        .ok()
        .stdout;
    assert!(crl.contains(&serial), "{serial} not in {crl}");

    env.plan_run(&["vault", "delete", "dev-sensor-04", "--force"])
        .ok();
    env.plan_run(&["vault", "purge", "dev-sensor-04", "--yes"]).ok();
    let before = env.plan_run(&["status", "-o", "json"]).ok().stdout;
    let r = env
        .plan_run(&["revoke", "device:sensor-04", "--reason", "superseded", "--yes"])
        .code(2);
    assert!(
        r.stderr.contains("purged")
            && r.stderr.contains("still holds")
            && !r.stderr.contains("not been issued"),
        "{}",
        r.stderr
    );
    assert_eq!(env.plan_run(&["status", "-o", "json"]).ok().stdout, before);
    let r = env
        .plan_run(&["reprovision", "device:sensor-04", "--force"])
        .code(1);
    assert!(
        r.stdout.contains("still holds") && r.stdout.contains("purged"),
        "{}",
        r.stdout
    );
}

/// Root 30 days, factory 60: the root's expiry caps the factory CA, which caps its devices. The
/// roll and `check` name the CA whose renewal moves the cap (`ca:root`), not the factory CA,
/// whose own renewal could not end any later.
#[test]
fn a_capped_renewal_names_the_ca_whose_expiry_caps_it() {
    let env = TestEnv::new();
    let text = std::fs::read_to_string(env.quickstart()).unwrap();
    let text = text
        .replace(
            "O=Example\"\npolicy = \"ca\"",
            "O=Example\"\npolicy = \"root-30\"",
        )
        .replace(
            "path_len = 0\npolicy = \"ca\"",
            "path_len = 0\npolicy = \"ca-60\"",
        )
        + "\n[policies.root-30]\nkey = { type = \"EC\", curve = \"P-384\", exportable = false }\nvalidity_days = 30\n\
           \n[policies.ca-60]\nkey = { type = \"EC\", curve = \"P-384\", exportable = false }\nvalidity_days = 60\n";
    env.write("plan.toml", &text);
    env.plan_run(&["issue"]).ok();
    let at = crate::roll::at(10);
    let r = env
        .plan_run(&["roll-secondary", "--due", "--now", &at, "-o", "json"])
        .code(1)
        .json();
    let first = &r["renew_ca_first"];
    assert_eq!(first.as_array().map(Vec::len), Some(1), "{r:#}");
    assert_eq!(first[0]["target"], "ca:root", "{r:#}");
    assert!(
        first[0]["message"]
            .as_str()
            .unwrap()
            .contains("roll-secondary ca:root"),
        "{r:#}"
    );

    let check = env
        .plan_run(&["check", "-o", "json", "--now", &at])
        .code(1)
        .json();
    let sensor = check["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["target"] == "device:sensor-01")
        .unwrap_or_else(|| panic!("{check:#}"))
        .clone();
    let reason = sensor["reason"].as_str().unwrap();
    assert!(
        reason.contains("capped by CA `root`") && reason.contains("roll-secondary ca:root"),
        "{sensor:#}"
    );
}

/// A device under a CA merged from outside (`vault merge` of a .p7b holding it and the outside
/// root): `export device:` writes the leaf, then the merged CA, the root left out, exactly as
/// `vault export` does, and openssl verifies it against the outside root.
#[test]
fn export_of_a_device_under_a_merged_ca_carries_the_chain() {
    let env = TestEnv::new();
    env.write(
        "plan.toml",
        "version = 1\n[policies.device]\nkey = { type = \"EC\", curve = \"P-256\" }\nvalidity_days = 100\n\
         [policies.ca]\nkey = { type = \"EC\", curve = \"P-256\", exportable = false }\nvalidity_days = 1000\n\
         [ca.ext]\nsubject = \"CN=Ext Inter\"\npolicy = \"ca\"\npath_len = 0\n\
         [enrollments.e-1]\nissuer = \"ext\"\npolicy = \"device\"\nhub = \"hub1\"\n",
    );
    env.write(
        "ext.cnf",
        "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign,digitalSignature\n",
    );
    env.plan_run(&[
        "vault",
        "create",
        "ca-ext",
        "--subject",
        "CN=Ext Inter",
        "--issuer",
        "Unknown",
    ])
    .ok();
    env.plan_run(&["vault", "csr", "ca-ext", "--out", "ext.csr"]).ok();
    crate::util::openssl_ca(&env, "oroot.key", "oroot.crt", "/CN=Outside Root", "3650", &[]);
    env.openssl(&[
        "x509",
        "-req",
        "-in",
        "ext.csr",
        "-CA",
        "oroot.crt",
        "-CAkey",
        "oroot.key",
        "-CAcreateserial",
        "-days",
        "900",
        "-extfile",
        "ext.cnf",
        "-out",
        "ext.crt",
    ])
    .ok();
    env.openssl(&[
        "crl2pkcs7",
        "-nocrl",
        "-certfile",
        "ext.crt",
        "-certfile",
        "oroot.crt",
        "-out",
        "ext.p7b",
    ])
    .ok();
    env.plan_run(&["vault", "merge", "ca-ext", "--file", "ext.p7b"])
        .ok();
    env.plan_run(&["issue", "enrollment:e-1"]).ok();

    env.plan_run(&["export", "device:e-1", "--out", "e.pem"]).ok();
    env.plan_run(&["vault", "export", "dev-e-1", "--out", "v.pem"])
        .ok();
    let e = std::fs::read_to_string(env.path("e.pem")).unwrap();
    assert_eq!(e.matches("BEGIN CERTIFICATE").count(), 2, "{e}");
    assert_eq!(e, std::fs::read_to_string(env.path("v.pem")).unwrap());
    let ext = std::fs::read_to_string(env.path("ext.crt")).unwrap();
    assert!(e.ends_with(&ext), "the merged CA follows the leaf:\n{e}");
    env.write("inter.pem", &ext);
    // At the real clock: the outside root and the merged CA were made just now by openssl.
    openssl_in(
        &env.path("."),
        &[
            "verify",
            "-CAfile",
            "oroot.crt",
            "-untrusted",
            "inter.pem",
            "e.pem",
        ],
    )
    .ok();
}
