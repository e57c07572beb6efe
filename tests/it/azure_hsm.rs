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

/// An EC-HSM root (P-384) and under it an RSA-HSM intermediate that signs a group of two.
const HSM_GROUP: &str = "[policies.device]\nkey = { type = \"EC\", curve = \"P-256\" }\nvalidity_days = 365\n\
     [policies.root-hsm]\nkey = { type = \"EC-HSM\", curve = \"P-384\" }\nvalidity_days = 3650\n\
     [policies.rsa-hsm]\nkey = { type = \"RSA-HSM\", size = 2048 }\nvalidity_days = 1825\n\
     key_usage = [\"keyCertSign\", \"cRLSign\", \"digitalSignature\"]\n\
     lifetime_actions = [{ days_before_expiry = 180, action = \"email-contacts\" }]\n\
     [ca.root]\nsubject = \"CN=HSM Root\"\npolicy = \"root-hsm\"\n\
     [ca.line]\nsubject = \"CN=RSA HSM Line\"\nissuer = \"root\"\npath_len = 0\npolicy = \"rsa-hsm\"\n\
     [groups.cams]\nsigning_ca = \"line\"\nhub = \"conf-hub\"\nreprovision = \"migrate\"\n\
     device_policy = \"device\"\ndevices = { prefix = \"c-\", count = 2 }\n";

/// serve's access lines for `method` on the Key Vault path `path` (`/certificates/ca-root/create`).
fn vault_requests(env: &TestEnv, method: &str, path: &str) -> usize {
    let needle = format!("{method} certroll.vault.azure.net{path}");
    std::fs::read_to_string(env.path("serve.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&needle))
        .count()
}

/// The versions `vault show NAME` lists on the azure plan.
fn vault_versions(env: &TestEnv, serve: &Serve, name: &str) -> Vec<Value> {
    run_fleet(env, serve, "azure", &["vault", "show", name, "-o", "json"])
        .ok()
        .json()["versions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Whether the public key of the certificate in the PEM file `pem` is the key `jwk` (Key
/// Vault's JSON web key: EC `x`, `y` or RSA `n`, `e`, base64url).
fn cert_key_is(pem: &str, jwk: &Value) -> bool {
    use base64::Engine as _;
    use x509_parser::public_key::PublicKey;
    let text = std::fs::read(pem).unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(&text).unwrap();
    let cert = pem.parse_x509().unwrap();
    let b64 = |field: &str| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(jwk[field].as_str().unwrap_or_default())
            .unwrap()
    };
    let trim = |b: &[u8]| b.iter().skip_while(|x| **x == 0).copied().collect::<Vec<u8>>();
    match cert.public_key().parsed().unwrap() {
        PublicKey::EC(point) => {
            let mut raw = vec![4u8];
            raw.extend(b64("x"));
            raw.extend(b64("y"));
            raw == point.data()
        }
        PublicKey::RSA(rsa) => trim(&b64("n")) == trim(rsa.modulus) && trim(&b64("e")) == trim(rsa.exponent),
        other => panic!("unexpected key {other:?}"),
    }
}

/// certroll on the azure fleet plan with extra environment (a fault switch).
fn run_fleet_with(env: &TestEnv, serve: &Serve, extra: &[(&str, &str)], args: &[&str]) -> crate::util::Run {
    use crate::conformance::azure::sas_key;
    let (dps_key, hub_key) = (sas_key(serve, "certroll-dps").1, sas_key(serve, "conf-hub").1);
    let mut vars = vec![
        ("CERTROLL_AZ_TOKEN", TOKEN),
        ("CERTROLL_AZ_DPS_KEY", dps_key.as_str()),
        ("CERTROLL_AZ_HUB_KEY", hub_key.as_str()),
    ];
    vars.extend_from_slice(extra);
    crate::conformance::azure::run_plan(env, "azure", &vars, args)
}

/// Issue 12 item 2: the key of an HSM CA is made by Key Vault's create (issuer `Unknown`),
/// certroll builds the CA certificate over the request's CSR and the merge makes it the version;
/// nothing is imported for a CA, while device leaves keep the import path. The version's key is
/// the key Key Vault holds, the chains verify, and a CA renewal makes a new vault key.
#[test]
fn hsm_ca_keys_are_made_by_key_vault_create_and_merged_never_imported() {
    let env = TestEnv::new();
    let serve = start_serve(&env, HSM_GROUP);
    fleet_plans_hook(&env, &serve, HSM_GROUP);
    let (l, a) = both(&env, &serve, &["issue", "-o", "json"]);
    assert_eq!(l, a, "issue");
    for ca in ["ca-root", "ca-line"] {
        let path = format!("/certificates/{ca}");
        assert_eq!(
            vault_requests(&env, "POST", &format!("{path}/create")),
            1,
            "{ca} create"
        );
        assert_eq!(
            vault_requests(&env, "POST", &format!("{path}/pending/merge")),
            1,
            "{ca} merge"
        );
        assert_eq!(
            vault_requests(&env, "POST", &format!("{path}/import")),
            0,
            "{ca} import"
        );
        assert_eq!(vault_versions(&env, &serve, ca).len(), 1, "{ca}");
    }
    // The root certified its own key through Key Vault's sign before its merge.
    assert!(vault_requests(&env, "POST", "/keys/ca-root/") >= 1);
    // Key Vault keeps the policy certroll's create sent: the plan's lifetime action (what
    // `notify` reads there) and a key that is not exportable.
    let policy = key_vault_get(&env, &serve, "certificates/ca-line/policy");
    assert_eq!(
        policy["lifetime_actions"][0]["trigger"]["days_before_expiry"], 180,
        "{policy}"
    );
    assert_eq!(
        policy["lifetime_actions"][0]["action"]["action_type"], "EmailContacts",
        "{policy}"
    );
    assert_eq!(policy["key_props"]["exportable"], false, "{policy}");
    assert_eq!(policy["key_props"]["kty"], "RSA-HSM", "{policy}");
    // Leaves still go in by import, with their keys.
    assert_eq!(vault_requests(&env, "POST", "/certificates/dev-c-1/import"), 1);
    let (l, a) = both(&env, &serve, &["status", "-o", "json"]);
    assert_same(&l, &a, "status after issue");
    verify_devices(&env, &serve, &["c-1", "c-2"], "issued");

    // The CA certificates are CAs of the plan's shape, and each certifies the key Key Vault
    // holds under its name, of the HSM type.
    let mut keys = Vec::new();
    for (ca, kty) in [("root", "EC-HSM"), ("line", "RSA-HSM")] {
        let pem = export(&env, &serve, &format!("ca:{ca}"), &format!("{ca}.pem"), &[]);
        let text = env.openssl(&["x509", "-in", &pem, "-noout", "-text"]).ok().stdout;
        assert!(text.contains("CA:TRUE"), "{ca}: {text}");
        let key = key_vault_get(&env, &serve, &format!("keys/ca-{ca}"));
        assert_eq!(key["key"]["kty"], kty, "{key}");
        assert!(
            cert_key_is(&pem, &key["key"]),
            "ca:{ca} certifies the key Key Vault holds"
        );
        keys.push(key["key"].clone());
    }
    let root_text = env
        .openssl(&[
            "x509",
            "-in",
            env.path("root.pem").to_str().unwrap(),
            "-noout",
            "-text",
        ])
        .ok()
        .stdout;
    assert!(
        root_text.contains("ecdsa-with-SHA384") && root_text.contains("P-384"),
        "{root_text}"
    );

    // A renewal of the RSA-HSM intermediate: a new create, a new key in Key Vault, no import.
    let (l, a) = both(&env, &serve, &["roll-primary", "ca:line", "-o", "json"]);
    assert_same(&l, &a, "roll-primary ca:line");
    assert_eq!(vault_requests(&env, "POST", "/certificates/ca-line/create"), 2);
    assert_eq!(vault_requests(&env, "POST", "/certificates/ca-line/import"), 0);
    assert_eq!(vault_versions(&env, &serve, "ca-line").len(), 2);
    let renewed = export(&env, &serve, "ca:line", "line-2.pem", &[]);
    let key = key_vault_get(&env, &serve, "keys/ca-line");
    assert!(
        cert_key_is(&renewed, &key["key"]),
        "the renewal certifies the new vault key"
    );
    assert_ne!(key["key"]["n"], keys[1]["n"], "the renewal has a new key");
    let (l, a) = both(&env, &serve, &["status", "-o", "json"]);
    assert_same(&l, &a, "status after the renewal");
    verify_devices(&env, &serve, &["c-1", "c-2"], "renewed");
}

/// A run killed right after Key Vault's create of an HSM CA (its request pending, no version):
/// the rerun finds the request, signs and merges it, and the CA has exactly one version made
/// from one create. Killed after the merge of a renewal but before the local commit, the rerun
/// adopts the merged version instead of making another.
#[test]
fn a_run_killed_between_key_vault_create_and_merge_finishes_on_rerun_with_one_ca_version() {
    let env = TestEnv::new();
    let serve = start_serve(&env, HSM_GROUP);
    fleet_plans_hook(&env, &serve, HSM_GROUP);
    let fault = |n: &str, args: &[&str]| {
        let run = run_fleet_with(&env, &serve, &[("CERTROLL_FAULT_AFTER_VAULT_WRITES", n)], args);
        assert_ne!(run.code, 0, "the fault aborts the run");
        assert!(run.stderr.contains("fault injection"), "{}", run.stderr);
    };

    // The first Key Vault write of `issue` is the root's create.
    fault("1", &["issue"]);
    let op = key_vault_get(&env, &serve, "certificates/ca-root/pending");
    assert_eq!(op["status"], "inProgress", "{op}");
    assert!(vault_versions(&env, &serve, "ca-root").is_empty());
    run_fleet(&env, &serve, "azure", &["issue", "-o", "json"]).ok();
    assert_eq!(
        vault_requests(&env, "POST", "/certificates/ca-root/create"),
        1,
        "no second create"
    );
    assert_eq!(vault_versions(&env, &serve, "ca-root").len(), 1);
    assert_eq!(vault_versions(&env, &serve, "ca-line").len(), 1);
    // Nothing is left pending.
    for ca in ["ca-root", "ca-line"] {
        let op = key_vault_get(&env, &serve, &format!("certificates/{ca}/pending"));
        assert_eq!(op["status"], "completed", "{ca}: {op}");
    }
    verify_devices(&env, &serve, &["c-1", "c-2"], "issued");

    // A renewal of the intermediate cut off after its create, then after its merge.
    fault("1", &["roll-primary", "ca:line"]);
    assert_eq!(
        vault_versions(&env, &serve, "ca-line").len(),
        1,
        "only a request so far"
    );
    fault("1", &["roll-primary", "ca:line"]);
    assert_eq!(
        vault_requests(&env, "POST", "/certificates/ca-line/create"),
        2,
        "the rerun finished the waiting request rather than making another"
    );
    assert_eq!(
        vault_versions(&env, &serve, "ca-line").len(),
        2,
        "merged, not yet recorded"
    );
    run_fleet(&env, &serve, "azure", &["roll-primary", "ca:line", "-o", "json"]).ok();
    assert_eq!(
        vault_versions(&env, &serve, "ca-line").len(),
        2,
        "the merged version adopted"
    );
    assert_eq!(vault_requests(&env, "POST", "/certificates/ca-line/create"), 2);
    verify_devices(&env, &serve, &["c-1", "c-2"], "renewed");
}

/// Key Vault takes no key in the clear as an HSM key: serve refuses an import whose policy says
/// `EC-HSM` (azure-wire 1.6, Import), so `vault import --hsm` on azure fails with Key Vault's
/// own message and leaves no certificate, while the same import as a software key that is not
/// exportable goes in.
#[test]
fn an_hsm_key_is_never_imported_into_key_vault() {
    let env = TestEnv::new();
    let serve = start_serve(&env, HSM_GROUP);
    fleet_plans_hook(&env, &serve, HSM_GROUP);
    let bundle = crate::azure_verbs::make_cert(&env, "web", false);
    let bundle = bundle.to_str().unwrap();
    let run = run_fleet(
        &env,
        &serve,
        "azure",
        &["vault", "import", "web", "--file", bundle, "--hsm"],
    );
    assert_ne!(run.code, 0, "{}", run.stdout);
    assert!(
        run.stderr
            .contains("Key Vault import certificate `web` failed: HTTP 400")
            && run.stderr.contains("cannot be imported into an HSM"),
        "{}",
        run.stderr
    );
    assert!(
        vault_versions_of(&env, &serve, "web").is_none(),
        "nothing was imported"
    );
    run_fleet(
        &env,
        &serve,
        "azure",
        &["vault", "import", "web", "--file", bundle],
    )
    .ok();
    assert_eq!(vault_versions_of(&env, &serve, "web").map(|v| v.len()), Some(1));
}

/// The versions of `name` on the azure plan; None when `vault show` finds no such certificate.
fn vault_versions_of(env: &TestEnv, serve: &Serve, name: &str) -> Option<Vec<Value>> {
    let run = run_fleet(env, serve, "azure", &["vault", "show", name, "-o", "json"]);
    (run.code == 0).then(|| run.json()["versions"].as_array().cloned().unwrap_or_default())
}

/// A request already waiting on a CA's name that certroll's create would not have made (here
/// `vault create` with an exportable RSA key) is not trusted: `issue` deletes it, creates the
/// CA's own request and merges that, so the root's key is the policy's EC-HSM key made in the
/// vault, not the waiting one.
#[test]
fn a_waiting_request_of_another_key_on_a_ca_name_is_deleted_and_made_anew() {
    let env = TestEnv::new();
    let serve = start_serve(&env, HSM_GROUP);
    fleet_plans_hook(&env, &serve, HSM_GROUP);
    let made = run_fleet(
        &env,
        &serve,
        "azure",
        &[
            "vault",
            "create",
            "ca-root",
            "--subject",
            "CN=Not The Root",
            "--issuer",
            "Unknown",
            "-o",
            "json",
        ],
    )
    .ok()
    .json();
    assert_eq!(made["status"], "inProgress", "{made}");
    let waiting = key_vault_get(&env, &serve, "keys/ca-root");
    assert_eq!(waiting["key"]["kty"], "RSA", "{waiting}");

    run_fleet(&env, &serve, "azure", &["issue", "-o", "json"]).ok();
    assert_eq!(vault_requests(&env, "DELETE", "/certificates/ca-root/pending"), 1);
    assert_eq!(vault_requests(&env, "POST", "/certificates/ca-root/create"), 2);
    assert_eq!(vault_versions(&env, &serve, "ca-root").len(), 1);
    let key = key_vault_get(&env, &serve, "keys/ca-root");
    assert_eq!(key["key"]["kty"], "EC-HSM", "{key}");
    let root = export(&env, &serve, "ca:root", "root.pem", &[]);
    assert!(
        cert_key_is(&root, &key["key"]),
        "the root certifies the key its own create made"
    );
    let text = env
        .openssl(&["x509", "-in", &root, "-noout", "-subject"])
        .ok()
        .stdout;
    assert!(text.contains("HSM Root"), "{text}");
    verify_devices(&env, &serve, &["c-1", "c-2"], "issued");
}
