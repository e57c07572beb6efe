//! The `vault` group as a user runs it, on a local plan and on the same plan with
//! `kind = "azure"` against `certroll serve` (Key Vault through the official Rust SDK, the real
//! host name resolved to serve's port): every subcommand gives the same answer on both, apart
//! from ids, versions, keys and times (issue 12, item 1).

use super::azure::Serve;
use crate::util::{Run, TestEnv};
use serde_json::Value;

const TOKEN: &str = "vault-verbs-token";

/// Serve, and `local/plan.toml` beside `azure/plan.toml` (both `version = 1` plus `body`).
pub(crate) fn setup(env: &TestEnv, body: &str) -> Serve {
    std::fs::create_dir_all(env.path("serve")).unwrap();
    let serve = Serve::start_at(env, TOKEN, "serve/plan.toml", "version = 1\n");
    let azure = super::azure::azure_backend(&serve, "state.db", "CERTROLL_AZ_TOKEN", "../ca.pem", false);
    super::azure::write_plans(env, &azure, body);
    serve
}

/// certroll on `which` plan, at real time (serve's Key Vault keeps real time).
pub(crate) fn run(env: &TestEnv, which: &str, args: &[&str]) -> Run {
    let vars = [
        ("CERTROLL_AZ_TOKEN", TOKEN),
        ("CERTROLL_BACKUP_PW", "correct horse battery staple"),
    ];
    super::azure::run_plan(env, which, &vars, args)
}

/// The same command on both plans, `{which}` in an argument replaced by the plan's folder;
/// both must succeed. Returns both JSON answers, masked.
pub(crate) fn both(env: &TestEnv, args: &[&str]) -> (Value, Value) {
    let [l, a] = super::azure::both_json(0, args, |which, args| run(env, which, args));
    (mask(l), mask(a))
}

/// Ids, versions, thumbprints, serials, CSRs, paths and times differ between two runs by
/// nature; every other value must not.
pub(crate) fn mask(v: Value) -> Value {
    match v {
        Value::String(s) => {
            let time = s.len() >= 20 && s.as_bytes()[4] == b'-' && s.as_bytes()[10] == b'T';
            let varies = time
                || s.starts_with("-----BEGIN")
                || ["local/", "azure/"]
                    .iter()
                    .any(|d| s.starts_with(d) || s.contains(&format!("/{d}")));
            Value::String(if varies {
                "<masked>".into()
            } else {
                crate::azure_verbs::mask_hex(&s)
            })
        }
        Value::Array(a) => Value::Array(a.into_iter().map(mask).collect()),
        Value::Object(o) => Value::Object(o.into_iter().map(|(k, v)| (k, mask(v))).collect()),
        other => other,
    }
}

/// Key Vault's policy keeps validity in months and adds its own attributes: the policies are
/// compared on what both keep, then left out of the comparison.
fn same_policy(l: &mut Value, a: &mut Value, step: &str) {
    if let (Some(lp), Some(ap)) = (l.get_mut("policy"), a.get_mut("policy")) {
        for field in ["key_props", "lifetime_actions"] {
            assert_eq!(lp[field], ap[field], "{step}: policy {field}");
        }
        assert_eq!(
            lp["x509_props"]["subject"], ap["x509_props"]["subject"],
            "{step}: policy subject"
        );
        assert_eq!(
            lp["issuer"]["name"], ap["issuer"]["name"],
            "{step}: policy issuer"
        );
        *lp = Value::Null;
        *ap = Value::Null;
    }
}

/// `vault restore` on `which` plan of the backup of `selfie` in plan folder `from`.
fn restore_selfie(env: &TestEnv, which: &str, from: &str) -> Run {
    let backup = format!("{from}/selfie.bak");
    run(
        env,
        which,
        &[
            "vault",
            "restore",
            "--in",
            &backup,
            "--password-env",
            "CERTROLL_BACKUP_PW",
        ],
    )
}

fn assert_same(env: &TestEnv, args: &[&str]) -> (Value, Value) {
    let (mut l, mut a) = both(env, args);
    same_policy(&mut l, &mut a, &format!("{args:?}"));
    assert_eq!(l, a, "{args:?}");
    (l, a)
}

/// A CA made by openssl, to sign requests as an outside CA would.
fn outside_ca(env: &TestEnv) {
    crate::util::openssl_ca(
        env,
        "outside-ca-key.pem",
        "outside-ca.pem",
        "/CN=Outside CA",
        "30",
        &["basicConstraints=critical,CA:TRUE"],
    );
}

/// The outside CA ([`outside_ca`]) signs the CSR file `csr` with openssl into `out`.
fn outside_ca_signs(env: &TestEnv, csr: &str, out: &str) {
    env.openssl(&[
        "x509",
        "-req",
        "-in",
        csr,
        "-CA",
        "outside-ca.pem",
        "-CAkey",
        "outside-ca-key.pem",
        "-CAcreateserial",
        "-days",
        "20",
        "-out",
        out,
    ])
    .ok();
}

/// `vault create ext` with issuer `Unknown`: a request whose CSR an outside CA signs.
const CREATE_EXT: &[&str] = &[
    "vault",
    "create",
    "ext",
    "--subject",
    "CN=ext",
    "--issuer",
    "Unknown",
    "-o",
    "json",
];

#[test]
fn every_vault_subcommand_answers_the_same_on_local_and_on_azure_against_serve() {
    let env = TestEnv::new();
    let _serve = setup(&env, "");
    outside_ca(&env);

    // Issuer Self: a version at once (Key Vault makes the key and the certificate).
    let (_, a) = assert_same(
        &env,
        &[
            "vault",
            "create",
            "selfie",
            "--subject",
            "CN=selfie",
            "--validity-days",
            "30",
            "-o",
            "json",
        ],
    );
    assert_eq!(a["status"], "completed", "{a}");
    let (_, a) = assert_same(&env, &["vault", "show", "selfie", "-o", "json"]);
    assert_eq!(a["versions"].as_array().map(Vec::len), Some(1), "{a}");

    // Issuer Unknown: a request whose CSR an outside CA signs, then the merge.
    let (_, a) = assert_same(&env, CREATE_EXT);
    assert_eq!(a["status"], "inProgress", "{a}");
    assert_same(&env, &["vault", "show", "ext", "-o", "json"]);
    assert_same(&env, &["vault", "list", "-o", "json"]);
    assert_same(
        &env,
        &["vault", "csr", "ext", "--out", "{which}/ext.csr", "-o", "json"],
    );
    for which in ["local", "azure"] {
        let csr = env.path(&format!("{which}/ext.csr"));
        // openssl, not certroll, reads the CSR and signs it.
        env.openssl(&["req", "-in", csr.to_str().unwrap(), "-noout", "-verify"])
            .ok();
        outside_ca_signs(
            &env,
            csr.to_str().unwrap(),
            env.path(&format!("{which}/ext-signed.pem")).to_str().unwrap(),
        );
    }
    let (_, a) = assert_same(
        &env,
        &[
            "vault",
            "merge",
            "ext",
            "--file",
            "{which}/ext-signed.pem",
            "-o",
            "json",
        ],
    );
    assert_eq!(a["cert"]["subject"], "CN=ext", "{a}");
    let (_, a) = assert_same(&env, &["vault", "show", "ext", "-o", "json"]);
    assert!(a["pending"].is_null(), "merged: no request waits any more: {a}");
    // A second merge finds no request.
    for which in ["local", "azure"] {
        let r = run(
            &env,
            which,
            &[
                "vault",
                "merge",
                "ext",
                "--file",
                &format!("{which}/ext-signed.pem"),
            ],
        );
        assert_eq!(r.code, 2, "{which}: {}", r.stderr);
    }

    // A request cancelled through delete leaves the name free.
    assert_same(
        &env,
        &[
            "vault",
            "create",
            "gone",
            "--subject",
            "CN=gone",
            "--issuer",
            "Unknown",
            "-o",
            "json",
        ],
    );
    assert_same(&env, &["vault", "delete", "gone", "-o", "json"]);

    // Tags, attributes, soft delete, recover, purge.
    assert_same(
        &env,
        &["vault", "update", "selfie", "--tag", "env=prod", "-o", "json"],
    );
    assert_same(&env, &["vault", "update", "selfie", "--disable", "-o", "json"]);
    assert_same(&env, &["vault", "update", "selfie", "--enable", "-o", "json"]);
    assert_same(&env, &["vault", "delete", "selfie", "-o", "json"]);
    assert_same(&env, &["vault", "list-deleted", "-o", "json"]);
    assert_same(&env, &["vault", "recover", "selfie", "-o", "json"]);

    // Backup, then purge, then restore: the same versions come back.
    let (_, a) = assert_same(
        &env,
        &[
            "vault",
            "backup",
            "selfie",
            "--out",
            "{which}/selfie.bak",
            "--password-env",
            "CERTROLL_BACKUP_PW",
            "-o",
            "json",
        ],
    );
    assert_eq!(a["versions"].as_array().map(Vec::len), Some(1), "{a}");
    for which in ["local", "azure"] {
        assert_eq!(
            crate::util::mode(&env.path(&format!("{which}/selfie.bak"))) & 0o777,
            0o600
        );
    }
    assert_same(&env, &["vault", "delete", "selfie", "-o", "json"]);
    assert_same(&env, &["vault", "purge", "selfie", "--yes", "-o", "json"]);
    assert_same(
        &env,
        &[
            "vault",
            "restore",
            "--in",
            "{which}/selfie.bak",
            "--password-env",
            "CERTROLL_BACKUP_PW",
            "-o",
            "json",
        ],
    );
    let (_, a) = assert_same(&env, &["vault", "show", "selfie", "-o", "json"]);
    assert_eq!(a["tags"]["env"], "prod", "restored with its tags: {a}");
    // Over the live name: refused in the same words on both, with the way to free the name
    // (trial az11 F6: Key Vault's backup was refused without it).
    let refusal = super::azure::refused_alike(|which| restore_selfie(&env, which, which));
    assert!(
        refusal.contains("restore never overwrites one (delete and purge it first)"),
        "{refusal}"
    );
    // A backup of the other kind is refused with exit 2, naming where it restores.
    for (which, other) in [("local", "azure"), ("azure", "local")] {
        run(&env, which, &["vault", "delete", "selfie"]);
        run(&env, which, &["vault", "purge", "selfie", "--yes"]);
        let r = restore_selfie(&env, which, other);
        assert_eq!(r.code, 2, "{which}: {}\n{}", r.stdout, r.stderr);
        assert!(r.stderr.contains("restores only"), "{which}: {}", r.stderr);
        restore_selfie(&env, which, which).ok();
    }

    // Contacts and issuers. Set contacts are said to come from where they are kept: the local
    // store, or Key Vault (trial az11 F6: `store` on azure too).
    for args in [
        &[
            "vault",
            "contacts",
            "set",
            "a@example.com",
            "b@example.com",
            "-o",
            "json",
        ][..],
        &["vault", "contacts", "get", "-o", "json"],
    ] {
        let (mut l, mut a) = both(&env, args);
        assert_eq!(l["source"], "store", "{args:?}: {l}");
        assert_eq!(a["source"], "keyvault", "{args:?}: {a}");
        l["source"] = Value::Null;
        a["source"] = Value::Null;
        assert_eq!(l, a, "{args:?}");
    }
    assert_same(&env, &["vault", "contacts", "delete", "-o", "json"]);
    assert_same(
        &env,
        &[
            "vault",
            "issuers",
            "set",
            "digicert",
            "--provider",
            "DigiCert",
            "--account-id",
            "acct",
            "-o",
            "json",
        ],
    );
    assert_same(&env, &["vault", "issuers", "list", "-o", "json"]);
    assert_same(&env, &["vault", "issuers", "get", "digicert", "-o", "json"]);
    assert_same(&env, &["vault", "issuers", "delete", "digicert", "-o", "json"]);

    // Export: openssl reads what was written, key and certificate.
    assert_same(
        &env,
        &[
            "vault",
            "export",
            "selfie",
            "--with-key",
            "--out",
            "{which}/selfie.pem",
            "-o",
            "json",
        ],
    );
    for which in ["local", "azure"] {
        let out = env.path(&format!("{which}/selfie.pem"));
        env.openssl(&["x509", "-in", out.to_str().unwrap(), "-noout"])
            .ok();
        env.openssl(&["pkey", "-in", out.to_str().unwrap(), "-noout"])
            .ok();
    }

    assert_same(&env, &["vault", "list", "-o", "json"]);
}

/// The plan's `vault_rate` paces what makes a key in Key Vault (create, import, restore): a
/// window's worth (10 s) at once, then `vault_rate` a second; reads are not paced (issue 12).
#[test]
fn vault_rate_paces_key_creations_after_a_ten_second_burst() {
    use certroll::backend::Vault;
    use certroll::backend::azure::AzureVault;
    let env = TestEnv::new();
    let serve = setup(&env, "");
    let text = format!(
        "version = 1\n{}vault_rate = 2.0\n",
        super::azure::azure_backend(&serve, "client/state.db", "UNUSED", "ca.pem", false)
    );
    let path = env.write("rate.toml", &text);
    let plan = certroll::plan::parse(&path, &text).unwrap();
    let mut vault = super::azure::vault_client(plan.azure.as_ref().unwrap(), &env.path("client"), TOKEN);
    let policy = super::policy("CN=r", true, "application/x-pem-file");
    let import = |vault: &mut AzureVault, names: &[String]| {
        let made: Vec<super::Made> = names.iter().map(|n| super::self_signed(n, 30, false)).collect();
        let batch: Vec<_> = names
            .iter()
            .zip(&made)
            .map(|(n, m)| super::new_version(n, &policy, m, None))
            .collect();
        let t = std::time::Instant::now();
        vault.create_versions(&batch, super::now()).unwrap();
        t.elapsed()
    };
    // 2 a second: the first 20 (one 10-second window) go at once ...
    let first: Vec<String> = (0..20).map(|i| format!("r-{i}")).collect();
    let burst = import(&mut vault, &first);
    // ... 6 more take half a second each, counted from the first request.
    let next: Vec<String> = (20..26).map(|i| format!("r-{i}")).collect();
    let paced = import(&mut vault, &next);
    assert!(
        burst + paced >= std::time::Duration::from_millis(2900),
        "26 imports at 2 a second after a burst of 20 took {:?}",
        burst + paced
    );
    // Reads are not paced.
    let t = std::time::Instant::now();
    let all: Vec<String> = (0..26).map(|i| format!("r-{i}")).collect();
    assert!(vault.current_many(&all).unwrap().iter().all(Option::is_some));
    assert!(
        t.elapsed() < std::time::Duration::from_secs(8),
        "{:?}",
        t.elapsed()
    );
    eprintln!("20 imports in {burst:?}, 6 more at 2/s in {paced:?}");
}

/// Key Vault gives a merged version an id of its own: neither the request's id nor the id its
/// placeholder showed while it waited (azure-sdk-for-js
/// `recording_can_merge_a_self_signed_certificate.json`; serve does the same, and the local
/// store too). certroll follows the merge's answer: on both plans `vault merge` reports the
/// version `vault show` and `vault list` then name, which is not the request's id, and that
/// version holds the certificate openssl signed.
#[test]
fn a_merged_version_has_an_id_of_its_own_and_every_verb_names_it() {
    let env = TestEnv::new();
    let _serve = setup(&env, "");
    outside_ca(&env);
    for which in ["local", "azure"] {
        let json = |args: &[&str]| -> Value {
            let r = run(&env, which, args);
            assert_eq!(r.code, 0, "{which} {args:?}: {}{}", r.stdout, r.stderr);
            serde_json::from_str(&r.stdout).unwrap()
        };
        let made = json(CREATE_EXT);
        let request = made["request_id"].as_str().unwrap_or_default().to_string();
        assert_eq!(request.len(), 32, "{which}: {made}");
        let shown = json(&["vault", "show", "ext", "-o", "json"]);
        assert_eq!(
            shown["pending"]["request_id"],
            request.as_str(),
            "{which}: {shown}"
        );
        assert_eq!(shown["versions"], serde_json::json!([]), "{which}: {shown}");
        let csr = format!("{which}/ext.csr");
        let signed = format!("{which}/ext-signed.pem");
        json(&["vault", "csr", "ext", "--out", &csr, "-o", "json"]);
        outside_ca_signs(&env, &csr, &signed);
        let merged = json(&["vault", "merge", "ext", "--file", &signed, "-o", "json"]);
        let version = merged["version"].as_str().unwrap_or_default().to_string();
        assert_eq!(version.len(), 32, "{which}: {merged}");
        assert_ne!(
            version, request,
            "{which}: the merged version is not the request's id"
        );
        let fingerprint = env
            .openssl(&["x509", "-in", &signed, "-noout", "-fingerprint", "-sha1"])
            .ok()
            .stdout
            .trim()
            .rsplit('=')
            .next()
            .unwrap()
            .replace(':', "");
        let shown = json(&["vault", "show", "ext", "-o", "json"]);
        let versions = shown["versions"].as_array().cloned().unwrap_or_default();
        assert_eq!(versions.len(), 1, "{which}: {shown}");
        assert_eq!(versions[0]["version"], version.as_str(), "{which}: {shown}");
        assert_eq!(
            versions[0]["cert"]["thumbprint"],
            fingerprint.as_str(),
            "{which}: {shown}"
        );
        assert!(shown["pending"].is_null(), "{which}: {shown}");
        let listed = json(&["vault", "list", "-o", "json"]);
        let entry = listed["certificates"]
            .as_array()
            .and_then(|a| a.iter().find(|c| c["name"] == "ext"))
            .cloned()
            .unwrap_or_default();
        assert_eq!(entry["current"], version.as_str(), "{which}: {listed}");
    }
}

/// A name whose only version is a request waiting for its merge is pending, not live, on both
/// backends: `vault export`, `vault update` and `vault import` of it say the request waits for
/// `vault merge` (exit 2, the same message), and the import leaves the request waiting.
#[test]
fn a_name_whose_first_request_waits_is_pending_on_both_backends() {
    let env = TestEnv::new();
    let _serve = setup(&env, "");
    assert_same(
        &env,
        &[
            "vault",
            "create",
            "ext",
            "--subject",
            "CN=ext",
            "--issuer",
            "Unknown",
            "-o",
            "json",
        ],
    );
    let cert = super::self_signed("ext", 30, false);
    let mut pem = certroll::pki::pem::cert_to_pem(&cert.cert_der);
    pem.push_str(&certroll::pki::pem::key_to_pem(&cert.key_pkcs8));
    env.write("ext.pem", &pem);
    let waiting = "the vault certificate `ext` has no version yet: its request waits for \
                   `certroll vault merge ext --file SIGNED.pem`";
    for which in ["local", "azure"] {
        let out = format!("{which}/ext-out.pem");
        for args in [
            vec!["vault", "export", "ext", "--out", &out],
            vec!["vault", "update", "ext", "--disable"],
            vec!["vault", "import", "ext", "--file", "ext.pem"],
        ] {
            let r = run(&env, which, &args);
            assert_eq!(r.code, 2, "{which} {args:?}: {}{}", r.stdout, r.stderr);
            assert!(r.stderr.contains(waiting), "{which} {args:?}: {}", r.stderr);
        }
        let shown = run(&env, which, &["vault", "show", "ext", "-o", "json"]).json();
        assert!(
            shown["pending"].is_object() && shown["versions"] == serde_json::json!([]),
            "{which}: the request still waits, no version: {shown}"
        );
    }
}
