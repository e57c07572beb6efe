//! Issue 12 item 2: a CA whose key is not exportable (EC-HSM, RSA-HSM) never leaves Key Vault;
//! certroll builds each certificate and CRL with rcgen and Key Vault's keys client signs it.
//! The same plan runs on the local store and on azure against `certroll serve`, which checks
//! every signature it is shown (the proof of possession of the root, each device's registration
//! over mutual TLS); openssl checks the chains and CRLs certroll exports.

use crate::azure_verbs::{fleet_plans_hook, fleet_plans_with, key_vault_curl, mask, run_fleet, start_serve};
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
    let (code, body) = key_vault_curl(env, serve, "GET", &format!("/{path}"), None);
    assert!((200..300).contains(&code), "GET {path}: {code} {body}");
    serde_json::from_str(&body).unwrap()
}

/// serve's Key Vault answer to `POST path` with the JSON `body` (the client plans' token): the
/// HTTP status and the body.
fn key_vault_post(env: &TestEnv, serve: &Serve, path: &str, body: &Value) -> (u16, Value) {
    let (code, answer) = key_vault_curl(env, serve, "POST", &format!("/{path}"), Some(&body.to_string()));
    assert_ne!(code, 0, "POST {path}: no answer");
    (code, serde_json::from_str(&answer).unwrap_or(Value::Null))
}

/// Every version of `name` as serve's Key Vault lists it (key holders included), with tags.
fn listed_versions(env: &TestEnv, serve: &Serve, name: &str) -> Vec<Value> {
    key_vault_get(env, serve, &format!("certificates/{name}/versions"))["value"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The root's key holders in serve's listing of `name`'s versions (tag `certroll-key-holder`).
fn key_holders(env: &TestEnv, serve: &Serve, name: &str) -> Vec<Value> {
    listed_versions(env, serve, name)
        .into_iter()
        .filter(|v| !v["tags"]["certroll-key-holder"].is_null())
        .collect()
}

/// The last path segment of a Key Vault id.
fn version_in(id: &Value) -> String {
    id.as_str()
        .unwrap_or_default()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string()
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

/// `args` on the azure plan, killed right after its `n`th Key Vault write
/// (`CERTROLL_FAULT_AFTER_VAULT_WRITES`): the run fails, saying so.
fn killed_after(env: &TestEnv, serve: &Serve, n: &str, args: &[&str]) {
    let fault = [("CERTROLL_FAULT_AFTER_VAULT_WRITES", n)];
    let run = crate::azure_verbs::run_fleet_with(env, serve, "azure", &fault, args);
    assert_ne!(run.code, 0, "write {n}: the fault aborts the run");
    assert!(
        run.stderr.contains("fault injection"),
        "write {n}: {}",
        run.stderr
    );
}

/// Serve over [`HSM_GROUP`], the fleet plans delivering through the device hook, and `issue`
/// killed right after its `n`th Key Vault write ([`killed_after`]).
fn hsm_group_issue_killed_after(env: &TestEnv, n: &str) -> Serve {
    let serve = start_serve(env, HSM_GROUP);
    fleet_plans_hook(env, &serve, HSM_GROUP);
    killed_after(env, &serve, n, &["issue"]);
    serve
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
    // The root's key is made by its key holder's create, then certified by a `reuse_key`
    // request: two creates; an intermediate's by one.
    for (ca, creates) in [("ca-root", 2), ("ca-line", 1)] {
        let path = format!("/certificates/{ca}");
        assert_eq!(
            vault_requests(&env, "POST", &format!("{path}/create")),
            creates,
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
    // The root certified its own key through Key Vault's sign with its key holder's completed
    // version before its merge; the holder is disabled since, and no listing shows it.
    let holders = key_holders(&env, &serve, "ca-root");
    assert_eq!(holders.len(), 1, "{holders:?}");
    assert_eq!(holders[0]["attributes"]["enabled"], false, "{holders:?}");
    let holder = version_in(&holders[0]["id"]);
    assert!(vault_requests(&env, "POST", &format!("/keys/ca-root/{holder}/sign")) >= 1);
    assert!(
        !vault_versions(&env, &serve, "ca-root")
            .iter()
            .any(|v| v["version"] == holder.as_str())
    );
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
    // Key Vault records a create's validity in months (it has no days): what certroll reads of
    // the recorded policy is the same on both backends. `check` times renewals from the plan
    // and the certificate itself; the lifetime actions (notify, auto-renew) are the plan's;
    // the months cover the plan's days and no more.
    let (l, a) = both(&env, &serve, &["check", "-o", "json"]);
    assert_same(&l, &a, "check after issue");
    let shown = ["local", "azure"].map(|which| {
        run_fleet(&env, &serve, which, &["vault", "show", "ca-line", "-o", "json"])
            .ok()
            .json()["policy"]
            .clone()
    });
    assert_eq!(
        shown[0]["lifetime_actions"], shown[1]["lifetime_actions"],
        "local {} azure {}",
        shown[0], shown[1]
    );
    assert_eq!(shown[0]["x509_props"]["validity_days"], 1825, "{}", shown[0]);
    let months = shown[1]["x509_props"]["validity_months"].as_i64().unwrap_or(0);
    assert!(
        (1825 * 12 / 365..=1825 * 12 / 365 + 1).contains(&months),
        "azure: {}",
        shown[1]
    );
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
    // The second Key Vault write of `issue` is the root's request, after its key holder's
    // create: the request waits, over the holder's key.
    let serve = hsm_group_issue_killed_after(&env, "2");
    let op = key_vault_get(&env, &serve, "certificates/ca-root/pending");
    assert_eq!(op["status"], "inProgress", "{op}");
    assert!(
        vault_versions(&env, &serve, "ca-root").is_empty(),
        "the key holder is no version of the root"
    );
    assert!(
        !run_fleet(&env, &serve, "azure", &["status", "-o", "json"])
            .ok()
            .stdout
            .contains("HSM Root"),
        "no root yet"
    );
    // The waiting request is shown with the time Key Vault made it (its policy's, which the
    // create wrote; third trial: `since 1970-01-01T00:00:00Z`).
    let policy = key_vault_get(&env, &serve, "certificates/ca-root/policy");
    assert_eq!(policy["key_props"]["reuse_key"], true, "{policy}");
    let made = policy["attributes"]["updated"]
        .as_i64()
        .expect("the policy is dated");
    let made = time::OffsetDateTime::from_unix_timestamp(made).unwrap();
    let listed = run_fleet(&env, &serve, "azure", &["vault", "list", "-o", "json"])
        .ok()
        .json();
    let pending = listed["pending"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == "ca-root"))
        .unwrap_or_else(|| panic!("ca-root pending in {listed}"))
        .clone();
    let shown = time::OffsetDateTime::parse(
        pending["created"].as_str().unwrap_or_default(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap_or_else(|e| panic!("{pending}: {e}"));
    assert_eq!(shown, made, "{pending}");
    for args in [&["vault", "list"][..], &["vault", "show", "ca-root"][..]] {
        let text = run_fleet(&env, &serve, "azure", args).ok().stdout;
        assert!(
            text.contains(&format!("since {}", pending["created"].as_str().unwrap()))
                && !text.contains("1970"),
            "{args:?}: {text}"
        );
    }
    // The request's key is the pending version's, which is disabled: Key Vault refuses to sign
    // with it (the way certroll signed a root before, which could never work there).
    let waiting = key_vault_get(&env, &serve, "keys/ca-root");
    assert_eq!(waiting["attributes"]["enabled"], false, "{waiting}");
    let digest = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, [7u8; 48]);
    let (status, refused) = key_vault_post(
        &env,
        &serve,
        &format!("keys/ca-root/{}/sign", version_in(&waiting["key"]["kid"])),
        &serde_json::json!({ "alg": "ES384", "value": digest }),
    );
    assert_eq!(status, 403, "{refused}");
    assert_eq!(refused["error"]["code"], "Forbidden", "{refused}");
    assert_eq!(refused["error"]["innererror"]["code"], "KeyDisabled", "{refused}");
    // The request names the key holder's key (`reuse_key`): the holder's completed version
    // signs with it.
    let holders = key_holders(&env, &serve, "ca-root");
    assert_eq!(holders.len(), 1, "{holders:?}");
    assert_eq!(holders[0]["attributes"]["enabled"], true, "{holders:?}");
    let holder = version_in(&holders[0]["id"]);
    let held = key_vault_get(&env, &serve, &format!("keys/ca-root/{holder}"));
    assert_eq!(held["key"]["x"], waiting["key"]["x"], "{held} {waiting}");
    assert_eq!(held["key"]["y"], waiting["key"]["y"], "{held} {waiting}");

    run_fleet(&env, &serve, "azure", &["issue", "-o", "json"]).ok();
    assert_eq!(
        vault_requests(&env, "POST", "/certificates/ca-root/create"),
        2,
        "no third create"
    );
    assert_eq!(vault_versions(&env, &serve, "ca-root").len(), 1);
    assert!(
        vault_requests(&env, "POST", &format!("/keys/ca-root/{holder}/sign")) >= 1,
        "the self-signature was made with the key holder's version"
    );
    let holders = key_holders(&env, &serve, "ca-root");
    assert_eq!(holders.len(), 1, "{holders:?}");
    assert_eq!(holders[0]["attributes"]["enabled"], false, "{holders:?}");
    assert_eq!(vault_versions(&env, &serve, "ca-line").len(), 1);
    // Nothing is left pending.
    for ca in ["ca-root", "ca-line"] {
        let op = key_vault_get(&env, &serve, &format!("certificates/{ca}/pending"));
        assert_eq!(op["status"], "completed", "{ca}: {op}");
    }
    verify_devices(&env, &serve, &["c-1", "c-2"], "issued");

    // A renewal of the intermediate cut off after its create, then after its merge.
    killed_after(&env, &serve, "1", &["roll-primary", "ca:line"]);
    assert_eq!(
        vault_versions(&env, &serve, "ca-line").len(),
        1,
        "only a request so far"
    );
    killed_after(&env, &serve, "1", &["roll-primary", "ca:line"]);
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

/// A root whose key is not exportable is made in four Key Vault writes: its key holder's
/// create, the `reuse_key` request, the merge, the holder's disabling. A run killed after each
/// finishes on rerun with one root version, made from one holder and one request, the holder
/// disabled and shown by no listing, status or export; the root's key is never read as a
/// secret; openssl verifies the chains; a rerun of the finished work changes nothing.
#[test]
fn a_root_killed_after_each_key_holder_step_finishes_on_rerun_with_one_version() {
    for n in ["1", "2", "3", "4"] {
        let env = TestEnv::new();
        let serve = hsm_group_issue_killed_after(&env, n);
        assert_eq!(key_holders(&env, &serve, "ca-root").len(), 1, "write {n}");
        let run = run_fleet(&env, &serve, "azure", &["issue", "-o", "json"]);
        assert_eq!(run.code, 0, "write {n}: {}{}", run.stdout, run.stderr);
        // The rerun of finished work changes nothing.
        run_fleet(&env, &serve, "azure", &["issue", "-o", "json"]).ok();

        let listed = listed_versions(&env, &serve, "ca-root");
        assert_eq!(listed.len(), 2, "write {n}: a holder and a root: {listed:?}");
        let holders = key_holders(&env, &serve, "ca-root");
        assert_eq!(holders.len(), 1, "write {n}: {holders:?}");
        assert_eq!(
            holders[0]["attributes"]["enabled"], false,
            "write {n}: {holders:?}"
        );
        let holder = version_in(&holders[0]["id"]);
        for (what, path, count) in [
            ("create", "/certificates/ca-root/create", 2),
            ("merge", "/certificates/ca-root/pending/merge", 1),
            ("import", "/certificates/ca-root/import", 0),
            ("secret", "/secrets/ca-root", 0),
        ] {
            let method = if what == "secret" { "GET" } else { "POST" };
            assert_eq!(vault_requests(&env, method, path), count, "write {n}: {what}");
        }
        let versions = vault_versions(&env, &serve, "ca-root");
        assert_eq!(versions.len(), 1, "write {n}: {versions:?}");
        assert_ne!(versions[0]["version"], holder.as_str(), "write {n}");
        let shown = versions[0]["cert"]["thumbprint"].clone();
        // No listing, status or export shows the holder: each shows the root.
        let list = run_fleet(&env, &serve, "azure", &["vault", "list", "-o", "json"])
            .ok()
            .stdout;
        let status = run_fleet(&env, &serve, "azure", &["status", "-o", "json"])
            .ok()
            .stdout;
        for (what, text) in [("vault list", &list), ("status", &status)] {
            assert!(
                !text.contains(&holder),
                "write {n}: {what} shows the holder: {text}"
            );
        }
        let root = export(&env, &serve, "ca:root", "root.pem", &[]);
        let text = env
            .openssl(&["x509", "-in", &root, "-noout", "-text", "-fingerprint"])
            .ok()
            .stdout;
        assert!(
            text.contains("CA:TRUE") && text.contains("HSM Root"),
            "write {n}: {text}"
        );
        let fingerprint = text
            .lines()
            .find_map(|l| l.strip_prefix("SHA1 Fingerprint="))
            .unwrap_or_default()
            .replace(':', "");
        assert_eq!(
            Value::from(fingerprint),
            shown,
            "write {n}: the export is the root version"
        );
        let verified = openssl_in(env.dir.path(), &["verify", "-CAfile", &root, &root]);
        assert!(
            verified.stdout.contains(": OK"),
            "write {n}: self-signed {}{}",
            verified.stdout,
            verified.stderr
        );
        verify_devices(&env, &serve, &["c-1", "c-2"], &format!("w{n}"));
        // The root's key is the holder's, which stays in the vault.
        let key = key_vault_get(&env, &serve, &format!("keys/ca-root/{holder}"));
        assert!(
            cert_key_is(&root, &key["key"]),
            "write {n}: the root certifies the holder's key"
        );
    }
}

/// Key Vault takes no key in the clear as an HSM key: serve refuses an import whose policy says
/// `EC-HSM` (azure-wire 1.6, Import), so `vault import --hsm` on azure fails with Key Vault's
/// own message (exit 2: no rerun can succeed) and leaves no certificate, while the same import as a software key that is not
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
    // Bad input, not a failure part-way: the same import can never succeed (fifth azure trial,
    // F-HSM-IMPORT-EXIT).
    assert_eq!(run.code, 2, "{}\n{}", run.stdout, run.stderr);
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
    // `vault create`, then the root's key holder and its `reuse_key` request.
    assert_eq!(vault_requests(&env, "POST", "/certificates/ca-root/create"), 3);
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

/// The 1-based line and column where `needle` starts in the file at `path`.
fn line_col(path: &std::path::Path, needle: &str) -> (usize, usize) {
    let text = std::fs::read_to_string(path).unwrap();
    let at = text.find(needle).unwrap_or_else(|| panic!("{needle} in {text}"));
    let line = text[..at].matches('\n').count() + 1;
    let col = at - text[..at].rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, col)
}

/// A run killed right after Key Vault's create of an HSM root (the request waiting, no
/// version), then the plan edited to make the root's key exportable: the rerun takes the import
/// path, and first deletes the stale request, so the root ends with exactly one version (the
/// imported, exportable one) and nothing pending; the rerun of the finished work changes nothing.
#[test]
fn a_request_left_by_a_killed_create_goes_when_the_plan_makes_the_ca_exportable() {
    let env = TestEnv::new();
    // The second write of `issue` is the root's request (after its key holder's create).
    let serve = hsm_group_issue_killed_after(&env, "2");
    let op = key_vault_get(&env, &serve, "certificates/ca-root/pending");
    assert_eq!(op["status"], "inProgress", "{op}");

    let edited = HSM_GROUP.replace(
        "key = { type = \"EC-HSM\", curve = \"P-384\" }",
        "key = { type = \"EC\", curve = \"P-384\" }",
    );
    assert_ne!(edited, HSM_GROUP);
    fleet_plans_hook(&env, &serve, &edited);
    let run = run_fleet(&env, &serve, "azure", &["issue", "-o", "json"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(
        vault_requests(&env, "DELETE", "/certificates/ca-root/pending"),
        1,
        "the stale request is deleted"
    );
    assert_eq!(vault_requests(&env, "POST", "/certificates/ca-root/import"), 1);
    assert_eq!(vault_requests(&env, "POST", "/certificates/ca-root/create"), 2);
    // The key holder of the abandoned root signs nothing more.
    let holders = key_holders(&env, &serve, "ca-root");
    assert_eq!(holders.len(), 1, "{holders:?}");
    assert_eq!(holders[0]["attributes"]["enabled"], false, "{holders:?}");
    let show = run_fleet(&env, &serve, "azure", &["vault", "show", "ca-root", "-o", "json"])
        .ok()
        .json();
    assert!(show["pending"].is_null(), "nothing pending: {show}");
    let versions = show["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 1, "{show}");
    // The key holder made the name live, and a live name keeps its policy on import (serve),
    // so the version's recorded key facts are the abandoned request's; the certificate is the
    // plan's root all the same.
    assert_eq!(versions[0]["cert"]["subject"], "CN=HSM Root", "{show}");
    verify_devices(&env, &serve, &["c-1", "c-2"], "issued");

    // The rerun of finished work changes nothing.
    run_fleet(&env, &serve, "azure", &["issue", "-o", "json"]).ok();
    assert_eq!(vault_versions(&env, &serve, "ca-root").len(), 1);
    assert_eq!(vault_requests(&env, "POST", "/certificates/ca-root/import"), 1);
    assert_eq!(vault_requests(&env, "DELETE", "/certificates/ca-root/pending"), 1);

    // A renewal of the RSA-HSM intermediate cut off after its create: Key Vault refuses an
    // import while the request waits (409, azure-wire 1.7) ...
    killed_after(&env, &serve, "1", &["roll-primary", "ca:line"]);
    // ... so the rerun with the intermediate made exportable deletes the request first, and
    // ends with one new version and nothing pending.
    let edited = edited.replace(
        "key = { type = \"RSA-HSM\", size = 2048 }",
        "key = { type = \"RSA\", size = 2048 }",
    );
    fleet_plans_hook(&env, &serve, &edited);
    let run = run_fleet(&env, &serve, "azure", &["roll-primary", "ca:line", "-o", "json"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(vault_requests(&env, "DELETE", "/certificates/ca-line/pending"), 1);
    let show = run_fleet(&env, &serve, "azure", &["vault", "show", "ca-line", "-o", "json"])
        .ok()
        .json();
    assert!(show["pending"].is_null(), "nothing pending: {show}");
    assert_eq!(show["versions"].as_array().unwrap().len(), 2, "{show}");
    verify_devices(&env, &serve, &["c-1", "c-2"], "renewed");
}

/// On azure a device's key is delivered to the device and Key Vault imports no HSM key, so a
/// device policy (group `device_policy`, enrollment `policy`) whose key is not exportable is
/// refused when the plan is read: exit 2, at the reference's line and column, naming the
/// policy and why, before any request to the services. The same plan on the local store, which
/// holds its devices' keys, still issues.
#[test]
fn a_device_policy_whose_key_cannot_leave_the_vault_is_refused_on_azure_at_plan_validation() {
    let env = TestEnv::new();
    let body = HSM_GROUP.replace(
        "[policies.device]\nkey = { type = \"EC\", curve = \"P-256\" }",
        "[policies.device]\nkey = { type = \"EC-HSM\", curve = \"P-256\" }",
    ) + "[policies.sealed]\nkey = { type = \"RSA\", size = 2048, exportable = false }\nvalidity_days = 365\n\
         [enrollments.gw-1]\nissuer = \"line\"\npolicy = \"sealed\"\nhub = \"conf-hub\"\n";
    let serve = start_serve(&env, &body);
    fleet_plans_hook(&env, &serve, &body);
    let plan = env.path("azure/plan.toml");
    let refused = |needle: &str, want: &str| {
        for args in [&["issue"][..], &["status", "-o", "json"][..]] {
            let run = run_fleet(&env, &serve, "azure", args);
            assert_eq!(run.code, 2, "{args:?}: {}{}", run.stdout, run.stderr);
            let (line, col) = line_col(&plan, needle);
            assert!(
                run.stderr.contains(&format!("plan.toml:{line}:{col}: {want}")),
                "{args:?}: {}",
                run.stderr
            );
        }
    };
    refused(
        "\"device\"\ndevices",
        "policy `device` has a key that is not exportable (EC-HSM), so it cannot be used for device certificates on `[backend] kind = \"azure\"` (group `cams` uses it as device_policy)",
    );
    // The local store holds its devices' keys: the same plan issues there.
    run_fleet(&env, &serve, "local", &["issue", "-o", "json"]).ok();
    // The group's policy made exportable, the enrollment's is still refused.
    let fixed = body.replace(
        "[policies.device]\nkey = { type = \"EC-HSM\"",
        "[policies.device]\nkey = { type = \"EC\"",
    );
    fleet_plans_hook(&env, &serve, &fixed);
    refused(
        "\"sealed\"\nhub",
        "policy `sealed` has a key that is not exportable (RSA), so it cannot be used for device certificates on `[backend] kind = \"azure\"` (enrollment `gw-1` uses it)",
    );
    assert_eq!(
        vault_requests(&env, "POST", "/certificates/"),
        0,
        "nothing reached Key Vault"
    );
    assert!(!env.path("azure/state.db").exists(), "no store was made");
}

/// A run killed right after Key Vault made a root's key holder (the root's name has no other
/// version yet): until the rerun, the name is no certificate of the vault's. `vault list`,
/// `vault show`, `status`, `check` and `notify` show nothing of the holder (no version, no
/// thumbprint) and none fails over it; the rerun finishes the root with one version, the holder
/// disabled.
#[test]
fn a_key_holder_left_alone_by_a_kill_after_its_create_is_no_certificate_until_the_rerun() {
    let env = TestEnv::new();
    let serve = hsm_group_issue_killed_after(&env, "1");
    let listed = listed_versions(&env, &serve, "ca-root");
    assert_eq!(listed.len(), 1, "the holder alone: {listed:?}");
    let holders = key_holders(&env, &serve, "ca-root");
    assert_eq!(holders.len(), 1, "{holders:?}");
    let holder = version_in(&holders[0]["id"]);
    let thumbprint = crate::util::x5t_thumbprint(&holders[0]);

    let shows_nothing = |what: &str, run: &crate::util::Run| {
        for text in [&run.stdout, &run.stderr] {
            assert!(
                !text.contains(&holder) && !text.contains(&thumbprint),
                "{what} shows the key holder: {}{}",
                run.stdout,
                run.stderr
            );
        }
    };
    let list = run_fleet(&env, &serve, "azure", &["vault", "list", "-o", "json"]);
    assert_eq!(list.code, 0, "{}{}", list.stdout, list.stderr);
    assert_eq!(
        list.json(),
        serde_json::json!({"certificates": [], "pending": []}),
        "no certificate and no request yet"
    );
    shows_nothing("vault list", &list);
    let show = run_fleet(&env, &serve, "azure", &["vault", "show", "ca-root", "-o", "json"]);
    assert_eq!(show.code, 2, "{}{}", show.stdout, show.stderr);
    assert!(
        show.stderr.contains("no certificate `ca-root`"),
        "{}",
        show.stderr
    );
    shows_nothing("vault show", &show);
    let status = run_fleet(&env, &serve, "azure", &["status", "-o", "json"]);
    assert_eq!(status.code, 0, "{}{}", status.stdout, status.stderr);
    let root = status.json()["cas"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "root"))
        .cloned()
        .unwrap_or_default();
    assert!(root["cert"].is_null(), "the root has no certificate yet: {root}");
    shows_nothing("status", &status);
    let check = run_fleet(&env, &serve, "azure", &["check", "-o", "json"]);
    let problems = check.json()["problems"].clone();
    let root_problem = problems
        .as_array()
        .and_then(|p| p.iter().find(|p| p["target"] == "ca:root"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (root_problem["level"].as_str(), root_problem["reason"].as_str()),
        (
            Some("critical"),
            Some("no certificate: `certroll issue ca:root` issues it")
        ),
        "{problems}"
    );
    shows_nothing("check", &check);
    let notify = run_fleet(&env, &serve, "azure", &["notify", "--dry-run", "-o", "json"]);
    assert_eq!(notify.code, 0, "{}{}", notify.stdout, notify.stderr);
    assert_eq!(
        notify.json()["events"],
        serde_json::json!([]),
        "{}",
        notify.stdout
    );
    shows_nothing("notify", &notify);

    // The rerun goes on with that holder: one root version, the holder disabled.
    let run = run_fleet(&env, &serve, "azure", &["issue", "-o", "json"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let holders = key_holders(&env, &serve, "ca-root");
    assert_eq!(holders.len(), 1, "no second holder: {holders:?}");
    assert_eq!(version_in(&holders[0]["id"]), holder);
    assert_eq!(holders[0]["attributes"]["enabled"], false, "{holders:?}");
    let versions = vault_versions(&env, &serve, "ca-root");
    assert_eq!(versions.len(), 1, "{versions:?}");
    assert_ne!(versions[0]["version"], holder.as_str());
    let list = run_fleet(&env, &serve, "azure", &["vault", "list", "-o", "json"]).ok();
    shows_nothing("vault list after the rerun", &list);
    verify_devices(&env, &serve, &["c-1", "c-2"], "rerun");
}

/// Trial az8 F1: the SDK's Key Vault challenge policy sends a keys client's first request
/// without its body and takes the body out of the request to do so; when that try was dropped,
/// the retry went out with no body and Key Vault answered 400 "alg is required", failing the
/// run. certroll's keys client now learns the challenge with a GET first. With a fifth of Key
/// Vault's connections dropped, twelve `issue`s of one enrollment each (each a new process
/// whose first sign is its keys client's first request, so each had a fifth of a chance of the
/// fault before the fix: about nine in ten of this test's runs failed then) all finish, every
/// sign with its body.
#[test]
fn a_sign_retried_after_a_dropped_connection_goes_again_with_its_body() {
    let mut plan = String::from(
        "[policies.device]\nkey = { type = \"EC\", curve = \"P-256\" }\nvalidity_days = 365\n\
         [policies.hsm]\nkey = { type = \"EC-HSM\", curve = \"P-256\" }\nvalidity_days = 3650\n\
         key_usage = [\"keyCertSign\", \"cRLSign\", \"digitalSignature\"]\n\
         [ca.root]\nsubject = \"CN=HSM Root\"\npolicy = \"hsm\"\n",
    );
    for n in 0..12 {
        plan.push_str(&format!(
            "[enrollments.gw-{n}]\nissuer = \"root\"\npolicy = \"device\"\nhub = \"conf-hub\"\n"
        ));
    }
    let env = TestEnv::new();
    let serve = start_serve(
        &env,
        &format!("{plan}[serve.services.keyvault]\ndrop_percent = 20\n"),
    );
    fleet_plans_with(&env, &serve, &plan, "delivery = \"none\"\n");
    for n in 0..12 {
        let target = format!("enrollment:gw-{n}");
        let r = run_fleet(&env, &serve, "azure", &["issue", &target]);
        assert_eq!(r.code, 0, "{target}\n{}\n{}", r.stdout, r.stderr);
    }
    let log = std::fs::read_to_string(env.path("serve.log")).unwrap_or_default();
    assert!(
        !log.lines().any(|l| l.contains("/sign") && l.contains(" 400 ")),
        "a sign went without its body:\n{log}"
    );
    assert!(
        log.lines().any(|l| l.contains("dropped (injected)")),
        "serve dropped no connection, so the test tried nothing"
    );
    for n in 0..12 {
        assert_eq!(
            vault_versions(&env, &serve, &format!("dev-gw-{n}")).len(),
            1,
            "gw-{n}"
        );
    }
}

/// The policy `vault show` gives a CA whose key is not exportable is the plan's, as on local:
/// for the root (az8 F7) self-signed (issuer `Self`) and no `reuse_key`, not the `reuse_key`
/// request (issuer `Unknown`) over its key holder's key that the key-holder flow made it with;
/// for the intermediate `line` (az11 F2) issued by `root`, not the `Unknown` of the vault's
/// create request. Key Vault's own renewal would read it.
#[test]
fn hsm_cas_keep_the_plan_s_policy_after_the_vault_made_their_keys() {
    let env = TestEnv::new();
    let serve = start_serve(&env, HSM_GROUP);
    fleet_plans_hook(&env, &serve, HSM_GROUP);
    let (l, a) = both(&env, &serve, &["issue", "-o", "json"]);
    assert_eq!(l, a, "issue");
    let shown = |which: &str, name: &str| -> (Value, Value) {
        let v = run_fleet(&env, &serve, which, &["vault", "show", name, "-o", "json"])
            .ok()
            .json();
        let policy = &v["policy"];
        (
            policy["issuer"]["name"].clone(),
            policy["key_props"]["reuse_key"].clone(),
        )
    };
    for (name, issuer) in [("ca-root", "Self"), ("ca-line", "root")] {
        assert_eq!(
            shown("azure", name),
            (Value::from(issuer), Value::from(false)),
            "azure {name}"
        );
        assert_eq!(shown("azure", name), shown("local", name), "{name}");
        // What Key Vault itself holds, read by another client.
        let policy = key_vault_get(&env, &serve, &format!("certificates/{name}/policy"));
        assert_eq!(policy["issuer"]["name"], issuer, "{name}: {policy}");
        assert_eq!(policy["key_props"]["reuse_key"], false, "{name}: {policy}");
        assert_eq!(policy["key_props"]["exportable"], false, "{name}: {policy}");
    }
}

/// The same fault in the certificates client: `vault contacts set` is that client's first
/// request, and it has a body. With serve dropping Key Vault's first connection, the SDK's retry
/// went out without the body and Key Vault refused it (400 "contacts ... is required"; a body
/// Key Vault takes empty would have been carried out empty). Every Key Vault client of certroll
/// now learns the challenge with a GET before its first body.
#[test]
fn a_certificates_write_whose_first_try_is_dropped_goes_again_with_its_body() {
    let plan = "[policies.ca]\nkey = { type = \"EC\", curve = \"P-256\" }\nvalidity_days = 3650\n\
                key_usage = [\"keyCertSign\", \"cRLSign\"]\n[ca.root]\nsubject = \"CN=Root\"\npolicy = \"ca\"\n\
                [policies.device]\nkey = { type = \"EC\", curve = \"P-256\" }\nvalidity_days = 365\n\
                [enrollments.gw-1]\nissuer = \"root\"\npolicy = \"device\"\nhub = \"conf-hub\"\n";
    let env = TestEnv::new();
    let serve = start_serve(
        &env,
        &format!("{plan}[serve.services.keyvault]\ndrop_first = 1\n"),
    );
    fleet_plans_with(&env, &serve, plan, "delivery = \"none\"\n");
    let r = run_fleet(
        &env,
        &serve,
        "azure",
        &["vault", "contacts", "set", "pki@example.com"],
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let log = std::fs::read_to_string(env.path("serve.log")).unwrap_or_default();
    assert!(
        log.lines().any(|l| l.contains("dropped (injected)")),
        "serve dropped no connection, so the test tried nothing:\n{log}"
    );
    let (status, body) = key_vault_curl(&env, &serve, "GET", "/certificates/contacts", None);
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("pki@example.com"),
        "the contacts went without their body: {body}"
    );
}

/// Trial az14 F6: the key holder of a root whose key Key Vault keeps (a self-signed
/// end-entity certificate over the root's key, which no listing shows) could be enabled with
/// `vault update --version HOLDER --enable` and its certificate exported: a second enabled
/// "root" that `vault show` does not list. Both are refused (exit 2) naming it as the key
/// holder, and nothing changes; `--disable` alone is taken, which undoes an enable made before
/// (here by another client of Key Vault).
#[test]
fn a_roots_key_holder_is_neither_enabled_nor_exported_by_a_vault_verb() {
    let env = TestEnv::new();
    let serve = start_serve(&env, HSM_GROUP);
    fleet_plans_hook(&env, &serve, HSM_GROUP);
    crate::azure_verbs::fleet_ok(&env, &serve, &["issue"]);
    let holders = key_holders(&env, &serve, "ca-root");
    assert_eq!(holders.len(), 1, "{holders:?}");
    let holder = version_in(&holders[0]["id"]);
    let enabled = || key_holders(&env, &serve, "ca-root")[0]["attributes"]["enabled"].clone();
    assert_eq!(enabled(), Value::Bool(false));

    let refused = |args: &[&str], what: &str| {
        let r = run_fleet(&env, &serve, "azure", args);
        assert_eq!(r.code, 2, "{args:?}: {}{}", r.stdout, r.stderr);
        assert!(
            r.stderr
                .contains(&format!("version {holder} of `ca-root` is the key holder"))
                && r.stderr.contains(&format!("it is not {what}")),
            "{args:?}: {}",
            r.stderr
        );
    };
    refused(
        &["vault", "update", "ca-root", "--version", &holder, "--enable"],
        "enabled",
    );
    refused(
        &["vault", "update", "ca:root", "--version", &holder, "--tag", "a=b"],
        "enabled, tagged",
    );
    assert_eq!(enabled(), Value::Bool(false), "a refused enable changed nothing");

    // Enabled by another client: still not exported, and `--disable` puts it back.
    let (code, body) = crate::azure_verbs::key_vault_curl(
        &env,
        &serve,
        "PATCH",
        &format!("/certificates/ca-root/{holder}"),
        Some(r#"{"attributes":{"enabled":true}}"#),
    );
    assert_eq!(code, 200, "{body}");
    let out = env.path("holder.pem");
    let out = out.to_str().unwrap();
    refused(
        &["vault", "export", "ca-root", "--version", &holder, "--out", out],
        "exported",
    );
    assert!(!env.path("holder.pem").exists(), "nothing written");
    run_fleet(
        &env,
        &serve,
        "azure",
        &["vault", "update", "ca-root", "--version", &holder, "--disable"],
    )
    .ok();
    assert_eq!(enabled(), Value::Bool(false));
    // The root's own versions are as before: exported, a CA.
    let root = export(&env, &serve, "ca:root", "root.pem", &[]);
    let text = openssl_in(env.dir.path(), &["x509", "-in", &root, "-noout", "-text"]);
    assert!(text.stdout.contains("CA:TRUE"), "{}", text.stdout);
}
