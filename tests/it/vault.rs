//! `vault`: versions in order, key operations from key usage, disabled versions refuse to sign.

use crate::util::*;

#[test]
fn versions_policy_and_key_operations() {
    let env = TestEnv::new();
    env.write("plan.toml", &mixed_plan(2, 2));
    env.run(&["--plan", "plan.toml", "issue"]).ok();
    env.run(&[
        "--plan",
        "plan.toml",
        "--now",
        "2027-01-01T00:00:00Z",
        "roll-secondary",
        "device:gw-rsa",
    ])
    .ok();
    let v = env
        .run(&[
            "--plan",
            "plan.toml",
            "vault",
            "show",
            "device:gw-rsa",
            "-o",
            "json",
        ])
        .ok()
        .json();
    let versions = v["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2);
    assert!(
        versions[0]["created"].as_str() < versions[1]["created"].as_str(),
        "oldest first"
    );
    assert_eq!(
        v["key_operations"],
        serde_json::json!(["sign", "verify", "wrapKey", "unwrapKey"])
    );
    assert_eq!(v["policy"]["key_props"]["kty"], "RSA");
    assert_eq!(v["policy"]["key_props"]["key_size"], 2048);
    // An earlier version stays readable.
    assert_eq!(versions[0]["cert"]["subject"], "CN=gw-rsa");

    let list = env
        .run(&["--plan", "plan.toml", "vault", "list", "-o", "json"])
        .ok()
        .json();
    assert_eq!(list["certificates"].as_array().unwrap().len(), 4 + 4 + 2);
    env.run(&["--plan", "plan.toml", "vault", "show", "nope"]).code(2);
}

#[test]
fn a_disabled_ca_version_refuses_to_sign_until_enabled() {
    let env = TestEnv::new();
    env.quickstart();
    env.run(&["--plan", "plan.toml", "issue", "ca:factory"]).ok();
    env.run(&[
        "--plan",
        "plan.toml",
        "vault",
        "update",
        "ca:factory",
        "--disable",
    ])
    .ok();
    // Refused before anything is written (exit 2), naming the disabled version.
    let r = env.run(&["--plan", "plan.toml", "issue"]).code(2);
    assert!(r.stderr.contains("disabled"), "{}", r.stderr);
    env.run(&["--plan", "plan.toml", "export", "ca:factory", "--out", "f.pem"])
        .code(2);
    env.run(&["--plan", "plan.toml", "vault", "update", "ca:factory", "--enable"])
        .ok();
    env.run(&["--plan", "plan.toml", "issue"]).ok();
}

// ------------------------------------------------------------------ issue 4: vault operations

/// A plan with no PKI of its own: the vault is used directly.
fn bare_plan(env: &TestEnv) {
    env.write(
        "plan.toml",
        "version = 1\n\n[contacts]\nemails = [\"plan@example.com\"]\n",
    );
}

fn vault(env: &TestEnv, args: &[&str]) -> Run {
    let mut full = vec!["--plan", "plan.toml", "vault"];
    full.extend_from_slice(args);
    env.run(&full)
}

/// `vault` at the real time, for certificates openssl made just now.
fn vault_live(env: &TestEnv, args: &[&str]) -> Run {
    let now = certroll::clock::rfc3339(time::OffsetDateTime::now_utc() + time::Duration::minutes(1));
    let mut full = vec!["--plan", "plan.toml", "--now", now.as_str(), "vault"];
    full.extend_from_slice(args);
    env.run(&full)
}

/// `vault` with an environment variable set.
fn vault_env(env: &TestEnv, var: (&str, &str), args: &[&str]) -> Run {
    let now = certroll::clock::rfc3339(time::OffsetDateTime::now_utc() + time::Duration::minutes(1));
    let out = env
        .cmd()
        .env(var.0, var.1)
        .args(["--plan", "plan.toml", "--now", now.as_str(), "vault"])
        .args(args)
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The DER of the first certificate in a PEM file, through openssl.
fn der_of(env: &TestEnv, pem_file: &str) -> Vec<u8> {
    let der = format!("{pem_file}.der");
    env.openssl(&["x509", "-in", pem_file, "-outform", "DER", "-out", &der])
        .ok();
    std::fs::read(env.path(&der)).unwrap()
}

/// The public key (PEM) of the private key in a file, through openssl.
fn pubkey_of(env: &TestEnv, key_file: &str) -> String {
    env.openssl(&["pkey", "-in", key_file, "-pubout"]).ok().stdout
}

/// The public key (PEM) in a certificate, through openssl.
fn cert_pubkey_of(env: &TestEnv, cert_file: &str) -> String {
    env.openssl(&["x509", "-in", cert_file, "-noout", "-pubkey"])
        .ok()
        .stdout
}

/// The line after the one starting with `header` in `openssl x509 -text` output, trimmed.
fn line_after(text: &str, header: &str) -> String {
    let mut lines = text.lines();
    lines.find(|l| l.trim_start().starts_with(header));
    lines.next().unwrap_or_default().trim().to_string()
}

fn create_self(env: &TestEnv, name: &str) -> String {
    vault(
        env,
        &[
            "create",
            name,
            "--subject",
            &format!("CN={name}, O=Example"),
            "--key-type",
            "EC",
            "-o",
            "json",
        ],
    )
    .ok()
    .json()["version"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Tags live on versions, as in Key Vault (issue 12): a certificate's tags are its newest
/// version's, a versionless update writes the newest version, and a new version starts with none.
#[test]
fn tags_live_on_versions_and_the_certificate_shows_its_newest_version_s() {
    let env = TestEnv::new();
    bare_plan(&env);
    let v1 = create_self(&env, "t1");
    let v2 = create_self(&env, "t1");
    vault(&env, &["update", "t1", "--tag", "owner=ops", "--tag", "env=prod"]).ok();
    vault(
        &env,
        &["update", "t1", "--version", &v1, "--tag", "rollout=canary"],
    )
    .ok();
    let r = vault(&env, &["update", "t1", "--untag", "env", "-o", "json"])
        .ok()
        .json();
    assert_eq!(r["tags_on"], "certificate");
    assert_eq!(r["tags"], serde_json::json!({ "owner": "ops" }));

    let show = vault(&env, &["show", "t1", "-o", "json"]).ok().json();
    assert_eq!(show["tags"], serde_json::json!({ "owner": "ops" }));
    assert_eq!(show["versions"][0]["version"], v1.as_str());
    assert_eq!(
        show["versions"][0]["tags"],
        serde_json::json!({ "rollout": "canary" })
    );
    assert_eq!(show["versions"][1]["version"], v2.as_str());
    assert_eq!(show["versions"][1]["tags"], serde_json::json!({ "owner": "ops" }));
    let list = vault(&env, &["list", "-o", "json"]).ok().json();
    assert_eq!(
        list["certificates"][0]["tags"],
        serde_json::json!({ "owner": "ops" })
    );
    // A version named explicitly is that version's tags, newest or not.
    let r = vault(
        &env,
        &[
            "update",
            "t1",
            "--version",
            &v2,
            "--tag",
            "env=test",
            "-o",
            "json",
        ],
    )
    .ok()
    .json();
    assert_eq!(r["tags_on"], "version");
    assert_eq!(r["tags"], serde_json::json!({ "owner": "ops", "env": "test" }));
    vault(&env, &["update", "t1", "--version", &v2, "--untag", "env"]).ok();
    let show = vault(&env, &["show", "t1", "-o", "json"]).ok().json();

    // Bad input names the value and changes nothing.
    let r = vault(&env, &["update", "t1", "--tag", "noequals"]).code(2);
    assert!(r.stderr.contains("noequals"), "{}", r.stderr);
    let mut many = vec!["update", "t1"];
    let tags: Vec<String> = (0..15).map(|i| format!("--tag=k{i}=v")).collect();
    many.extend(tags.iter().map(String::as_str));
    let r = vault(&env, &many).code(2);
    assert!(r.stderr.contains("at most 15"), "{}", r.stderr);
    let r = vault(&env, &["update", "t1", "--version", "0123", "--tag", "a=b"]).code(2);
    assert!(r.stderr.contains("0123"), "{}", r.stderr);
    assert_eq!(vault(&env, &["show", "t1", "-o", "json"]).ok().json(), show);
}

#[test]
fn soft_delete_list_deleted_recover_and_purge() {
    let env = TestEnv::new();
    bare_plan(&env);
    create_self(&env, "c1");
    vault(&env, &["update", "c1", "--tag", "owner=ops"]).ok();
    let before = vault(&env, &["show", "c1", "-o", "json"]).ok().json();

    vault(&env, &["delete", "c1", "--recovery-days", "3"]).code(2);
    let d = vault(&env, &["delete", "c1", "--dry-run", "-o", "json"])
        .ok()
        .json();
    assert_eq!(d["dry_run"], true);
    assert_eq!(d["deleted"]["scheduled_purge_date"], "2027-02-21T00:00:00Z");
    assert_eq!(vault(&env, &["show", "c1", "-o", "json"]).ok().json(), before);
    let d = vault(&env, &["delete", "c1", "-o", "json"]).ok().json();
    assert_eq!(d["deleted"]["deleted_date"], NOW);
    assert_eq!(d["deleted"]["scheduled_purge_date"], "2027-02-21T00:00:00Z"); // + 90 days
    // Invisible everywhere, and the name stays taken.
    let r = vault(&env, &["show", "c1"]).code(2);
    assert!(r.stderr.contains("deleted"), "{}", r.stderr);
    let list = vault(&env, &["list", "-o", "json"]).ok().json();
    assert_eq!(list["certificates"], serde_json::json!([]));
    vault(&env, &["export", "c1", "--out", "c1.pem"]).code(2);
    assert!(!env.path("c1.pem").exists());
    vault(&env, &["create", "c1", "--subject", "CN=c1"]).code(2);
    let deleted = vault(&env, &["list-deleted", "-o", "json"]).ok().json();
    assert_eq!(deleted["deleted"][0]["name"], "c1");
    assert_eq!(
        deleted["deleted"][0]["tags"],
        serde_json::json!({ "owner": "ops" })
    );

    // Recover: everything back exactly.
    vault(&env, &["recover", "c1"]).ok();
    assert_eq!(vault(&env, &["show", "c1", "-o", "json"]).ok().json(), before);
    vault(&env, &["export", "c1", "--out", "c1.pem"]).ok();
    vault(&env, &["recover", "c1"]).code(2);

    // Purge: only what is deleted, and only when confirmed.
    let r = vault(&env, &["purge", "c1", "--yes"]).code(2);
    assert!(r.stderr.contains("not deleted"), "{}", r.stderr);
    let d = vault(&env, &["delete", "c1", "--recovery-days", "7", "-o", "json"])
        .ok()
        .json();
    assert_eq!(d["deleted"]["scheduled_purge_date"], "2026-11-30T00:00:00Z");
    let r = vault(&env, &["purge", "c1", "--dry-run", "-o", "json"])
        .ok()
        .json();
    assert_eq!(r["dry_run"], true);
    assert_eq!(r["purged"]["name"], "c1");
    let r = vault(&env, &["purge", "c1"]).code(2); // no terminal, no --yes
    assert!(r.stderr.contains("--yes"), "{}", r.stderr);
    assert_eq!(
        vault(&env, &["list-deleted", "-o", "json"]).ok().json()["deleted"][0]["name"],
        "c1"
    );
    vault(&env, &["purge", "c1", "--yes"]).ok();
    assert_eq!(
        vault(&env, &["list-deleted", "-o", "json"]).ok().json()["deleted"],
        serde_json::json!([])
    );
    vault(&env, &["recover", "c1"]).code(2);
    vault(&env, &["show", "c1"]).code(2);
    // The name is free again.
    create_self(&env, "c1");
}

#[test]
fn deleting_what_a_device_holds_or_what_signed_others_needs_force() {
    let env = TestEnv::new();
    env.quickstart();
    env.run(&["--plan", "plan.toml", "issue"]).ok();
    let r = vault(&env, &["delete", "device:sensor-01"]).code(2);
    assert!(
        r.stderr.contains("sensor-01") && r.stderr.contains("--force"),
        "{}",
        r.stderr
    );
    // What the plan has it sign, in the words both backends use (trial az11 F6).
    let r = vault(&env, &["delete", "ca:factory"]).code(2);
    assert!(
        r.stderr.contains("the CA that signs group sensors") && r.stderr.contains("--force"),
        "{}",
        r.stderr
    );
    vault(&env, &["show", "ca:factory"]).ok();

    vault(&env, &["delete", "device:sensor-01", "--force"]).ok();
    env.run(&[
        "--plan",
        "plan.toml",
        "export",
        "device:sensor-01",
        "--out",
        "s.pem",
    ])
    .code(2);
    vault(&env, &["recover", "device:sensor-01"]).ok();
    env.run(&[
        "--plan",
        "plan.toml",
        "export",
        "device:sensor-01",
        "--out",
        "s.pem",
    ])
    .ok();
    // `vault export` writes what `export` writes: leaf and chain up to, not including, the root.
    vault(&env, &["export", "device:sensor-01", "--out", "v.pem"]).ok();
    assert_eq!(
        std::fs::read(env.path("v.pem")).unwrap(),
        std::fs::read(env.path("s.pem")).unwrap()
    );
    env.run(&["--plan", "plan.toml", "issue"]).ok();
}

#[test]
fn import_pem_reads_the_policy_from_the_certificate_and_round_trips() {
    let env = TestEnv::new();
    bare_plan(&env);
    env.openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-384",
        "-nodes",
        "-keyout",
        "k.pem",
        "-out",
        "c.pem",
        "-subj",
        "/CN=web-1/O=Example",
        "-days",
        "30",
        "-addext",
        "subjectAltName=DNS:web-1.example.com,IP:10.0.0.1",
        "-addext",
        "keyUsage=digitalSignature",
        "-addext",
        "extendedKeyUsage=serverAuth,clientAuth",
    ])
    .ok();
    let both = [
        std::fs::read_to_string(env.path("c.pem")).unwrap(),
        std::fs::read_to_string(env.path("k.pem")).unwrap(),
    ]
    .concat();
    env.write("both.pem", &both);
    let r = vault(&env, &["import", "web-1", "--file", "both.pem", "-o", "json"])
        .ok()
        .json();
    assert_eq!(r["new_certificate"], true);
    assert_eq!(r["exportable"], true);

    let text = env
        .openssl(&["x509", "-in", "c.pem", "-noout", "-text"])
        .ok()
        .stdout;
    let subject = env
        .openssl(&["x509", "-in", "c.pem", "-noout", "-subject"])
        .ok()
        .stdout;
    let show = vault(&env, &["show", "web-1", "-o", "json"]).ok().json();
    let policy = &show["policy"];
    assert_eq!(
        format!("subject={}", policy["x509_props"]["subject"].as_str().unwrap()),
        subject.trim().replace(" = ", "=")
    );
    assert!(text.contains("NIST CURVE: P-384"));
    assert_eq!(policy["key_props"]["kty"], "EC");
    assert_eq!(policy["key_props"]["crv"], "P-384");
    assert_eq!(
        line_after(&text, "X509v3 Subject Alternative Name"),
        "DNS:web-1.example.com, IP Address:10.0.0.1"
    );
    // Key Vault policies hold DNS names, not IP addresses: the IP SAN stays out of the policy.
    assert_eq!(
        policy["x509_props"]["sans"]["dns_names"],
        serde_json::json!(["web-1.example.com"])
    );
    assert_eq!(line_after(&text, "X509v3 Key Usage"), "Digital Signature");
    assert_eq!(
        policy["x509_props"]["key_usage"],
        serde_json::json!(["digitalSignature"])
    );
    assert_eq!(
        line_after(&text, "X509v3 Extended Key Usage"),
        "TLS Web Server Authentication, TLS Web Client Authentication"
    );
    assert_eq!(
        policy["x509_props"]["ekus"],
        serde_json::json!(["1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"])
    );
    assert_eq!(policy["x509_props"]["validity_days"], 30);
    assert_eq!(policy["issuer"]["name"], "Self");
    assert_eq!(policy["secret_props"]["contentType"], "application/x-pem-file");
    assert_eq!(show["key_operations"], serde_json::json!(["sign", "verify"]));

    // Out again, byte for byte, with the same key.
    vault_live(&env, &["export", "web-1", "--with-key", "--out", "out.pem"]).ok();
    assert_eq!(mode(&env.path("out.pem")), 0o600);
    assert_eq!(der_of(&env, "out.pem"), der_of(&env, "c.pem"));
    assert_eq!(pubkey_of(&env, "out.pem"), pubkey_of(&env, "k.pem"));

    // A SEC1 key and a PKCS#1 RSA key import too; an existing name gets a new version.
    env.openssl(&["ec", "-in", "k.pem", "-out", "k-sec1.pem"]).ok();
    assert!(
        std::fs::read_to_string(env.path("k-sec1.pem"))
            .unwrap()
            .contains("EC PRIVATE KEY")
    );
    env.write(
        "sec1.pem",
        &[
            std::fs::read_to_string(env.path("c.pem")).unwrap(),
            std::fs::read_to_string(env.path("k-sec1.pem")).unwrap(),
        ]
        .concat(),
    );
    let r = vault(&env, &["import", "web-1", "--file", "sec1.pem", "-o", "json"])
        .ok()
        .json();
    assert_eq!(r["new_certificate"], false);
    assert_eq!(
        vault(&env, &["show", "web-1", "-o", "json"]).ok().json()["versions"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    env.openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "rk.pem",
        "-out",
        "rc.pem",
        "-subj",
        "/CN=rsa-1",
        "-days",
        "10",
    ])
    .ok();
    env.openssl(&["rsa", "-in", "rk.pem", "-traditional", "-out", "rk1.pem"])
        .ok();
    assert!(
        std::fs::read_to_string(env.path("rk1.pem"))
            .unwrap()
            .contains("RSA PRIVATE KEY")
    );
    env.write(
        "rsa.pem",
        &[
            std::fs::read_to_string(env.path("rc.pem")).unwrap(),
            std::fs::read_to_string(env.path("rk1.pem")).unwrap(),
        ]
        .concat(),
    );
    vault(&env, &["import", "rsa-1", "--file", "rsa.pem"]).ok();
    let policy = vault(&env, &["show", "rsa-1", "-o", "json"]).ok().json()["policy"].clone();
    assert_eq!(policy["key_props"]["kty"], "RSA");
    assert_eq!(policy["key_props"]["key_size"], 2048);
    vault_live(&env, &["export", "rsa-1", "--with-key", "--out", "rsa-out.pem"]).ok();
    assert_eq!(pubkey_of(&env, "rsa-out.pem"), pubkey_of(&env, "rk.pem"));

    // A key that is not the certificate's is refused, and nothing is stored.
    env.write(
        "mismatch.pem",
        &[
            std::fs::read_to_string(env.path("rc.pem")).unwrap(),
            std::fs::read_to_string(env.path("k.pem")).unwrap(),
        ]
        .concat(),
    );
    let r = vault(&env, &["import", "odd", "--file", "mismatch.pem"]).code(2);
    assert!(r.stderr.contains("does not belong"), "{}", r.stderr);
    vault(&env, &["show", "odd"]).code(2);
    vault(&env, &["import", "bad_name", "--file", "both.pem"]).code(2);
    // No key material in any output.
    assert!(!r.stdout.contains("PRIVATE") && !r.stderr.contains("PRIVATE"));
}

#[test]
fn import_pfx_from_openssl_and_an_hsm_key_never_leaves() {
    let env = TestEnv::new();
    bare_plan(&env);
    env.openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-subj",
        "/CN=Outside CA",
        "-days",
        "100",
    ])
    .ok();
    env.openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "leaf.key",
        "-out",
        "leaf.csr",
        "-subj",
        "/CN=gw.example.com",
    ])
    .ok();
    env.openssl(&[
        "x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-days", "60", "-out",
        "leaf.pem",
    ])
    .ok();
    env.openssl(&[
        "pkcs12",
        "-export",
        "-inkey",
        "leaf.key",
        "-in",
        "leaf.pem",
        "-certfile",
        "ca.pem",
        "-out",
        "leaf.pfx",
        "-passout",
        "pass:s3cret",
    ])
    .ok();
    vault(&env, &["import", "gw", "--file", "leaf.pfx"]).code(2); // needs a password
    let r = vault_env(
        &env,
        ("PW", "wrong"),
        &["import", "gw", "--file", "leaf.pfx", "--password-env", "PW"],
    )
    .code(2);
    assert!(r.stderr.contains("leaf.pfx"), "{}", r.stderr);
    let r = vault_env(
        &env,
        ("PW", "s3cret"),
        &[
            "import",
            "gw",
            "--file",
            "leaf.pfx",
            "--password-env",
            "PW",
            "-o",
            "json",
        ],
    )
    .ok()
    .json();
    assert_eq!(r["other_certificates"], 1);
    let policy = vault(&env, &["show", "gw", "-o", "json"]).ok().json()["policy"].clone();
    assert_eq!(policy["issuer"]["name"], "Unknown");
    assert_eq!(policy["key_props"]["kty"], "RSA");
    assert_eq!(policy["key_props"]["key_size"], 2048);
    assert_eq!(policy["key_props"]["exportable"], true);
    assert_eq!(policy["secret_props"]["contentType"], "application/x-pkcs12");
    assert_eq!(policy["x509_props"]["subject"], "CN=gw.example.com");
    vault_live(&env, &["export", "gw", "--with-key", "--out", "gw.pem"]).ok();
    assert_eq!(der_of(&env, "gw.pem"), der_of(&env, "leaf.pem"));
    assert_eq!(pubkey_of(&env, "gw.pem"), pubkey_of(&env, "leaf.key"));
    // The CA that came in the file is kept as the chain: PEM stops before the root, PFX has it,
    // and so does a restored backup.
    let certs_in = |file: &str| {
        std::fs::read_to_string(env.path(file))
            .unwrap()
            .matches("BEGIN CERTIFICATE")
            .count()
    };
    assert_eq!(certs_in("gw.pem"), 1);
    let pfx_certs = |env: &TestEnv, file: &str| {
        env.openssl(&["pkcs12", "-in", file, "-nokeys", "-passin", "pass:x"])
            .ok()
            .stdout
            .matches("BEGIN CERTIFICATE")
            .count()
    };
    vault_env(
        &env,
        ("PW", "x"),
        &[
            "export",
            "gw",
            "--format",
            "pfx",
            "--password-env",
            "PW",
            "--out",
            "gw.pfx",
        ],
    )
    .ok();
    assert_eq!(pfx_certs(&env, "gw.pfx"), 2);
    vault_env(
        &env,
        ("PW", "pw"),
        &["backup", "gw", "--out", "gw.bak", "--password-env", "PW"],
    )
    .ok();
    vault(&env, &["delete", "gw"]).ok();
    vault(&env, &["purge", "gw", "--yes"]).ok();
    vault_env(
        &env,
        ("PW", "pw"),
        &["restore", "--in", "gw.bak", "--password-env", "PW"],
    )
    .ok();
    vault_env(
        &env,
        ("PW", "x"),
        &[
            "export",
            "gw",
            "--format",
            "pfx",
            "--password-env",
            "PW",
            "--out",
            "gw2.pfx",
        ],
    )
    .ok();
    assert_eq!(pfx_certs(&env, "gw2.pfx"), 2);
    env.openssl(&[
        "verify",
        "-attime",
        &time::OffsetDateTime::now_utc().unix_timestamp().to_string(),
        "-CAfile",
        "ca.pem",
        "gw.pem",
    ])
    .ok();

    // --hsm: never exportable, by any path.
    let r = vault_env(
        &env,
        ("PW", "s3cret"),
        &[
            "import",
            "gw-hsm",
            "--file",
            "leaf.pfx",
            "--password-env",
            "PW",
            "--hsm",
            "-o",
            "json",
        ],
    )
    .ok()
    .json();
    assert_eq!(r["kty"], "RSA-HSM");
    assert_eq!(r["exportable"], false);
    let show = vault(&env, &["show", "gw-hsm", "-o", "json"]).ok().json();
    assert_eq!(show["policy"]["key_props"]["exportable"], false);
    assert_eq!(show["policy"]["key_props"]["kty"], "RSA-HSM");
    vault_live(&env, &["export", "gw-hsm", "--with-key", "--out", "h.pem"]).code(2);
    vault_env(
        &env,
        ("PW", "x"),
        &[
            "export",
            "gw-hsm",
            "--format",
            "pfx",
            "--password-env",
            "PW",
            "--out",
            "h.pfx",
        ],
    )
    .code(2);
    assert!(!env.path("h.pem").exists() && !env.path("h.pfx").exists());
    vault_live(&env, &["export", "gw-hsm", "--out", "h.pem"]).ok(); // the certificate alone is public
    assert!(
        !std::fs::read_to_string(env.path("h.pem"))
            .unwrap()
            .contains("PRIVATE")
    );
    // A later import into the name stays non-exportable.
    let r = vault_env(
        &env,
        ("PW", "s3cret"),
        &[
            "import",
            "gw-hsm",
            "--file",
            "leaf.pfx",
            "--password-env",
            "PW",
            "-o",
            "json",
        ],
    )
    .ok()
    .json();
    assert_eq!(r["exportable"], false);
}

#[test]
fn backup_purge_restore_brings_back_every_version_byte_for_byte() {
    let env = TestEnv::new();
    bare_plan(&env);
    let v1 = create_self(&env, "b1");
    let v2 = create_self(&env, "b1");
    let v3 = create_self(&env, "b1");
    vault(&env, &["update", "b1", "--tag", "owner=ops"]).ok();
    vault(&env, &["update", "b1", "--version", &v2, "--tag", "note=second"]).ok();
    for v in [&v1, &v2, &v3] {
        vault(
            &env,
            &[
                "export",
                "b1",
                "--version",
                v,
                "--with-key",
                "--out",
                &format!("before-{v}.pem"),
            ],
        )
        .ok();
    }
    vault(&env, &["update", "b1", "--version", &v1, "--disable"]).ok();
    let before = vault(&env, &["show", "b1", "-o", "json"]).ok().json();

    vault_env(
        &env,
        ("PW", ""),
        &["backup", "b1", "--out", "b1.bak", "--password-env", "PW"],
    )
    .code(2);
    vault(
        &env,
        &["backup", "b1", "--out", "b1.bak", "--password-env", "UNSET_VAR"],
    )
    .code(2);
    let r = vault_env(
        &env,
        ("PW", "correct horse"),
        &[
            "backup",
            "b1",
            "--out",
            "b1.bak",
            "--password-env",
            "PW",
            "-o",
            "json",
        ],
    )
    .ok()
    .json();
    assert_eq!(r["versions"], serde_json::json!([v1, v2, v3]));
    assert_eq!(mode(&env.path("b1.bak")), 0o600);
    let file = std::fs::read_to_string(env.path("b1.bak")).unwrap();
    assert!(!file.contains("PRIVATE") && file.contains("PBKDF2-HMAC-SHA256"));
    // The keys are inside the encryption: not even their hex shows.
    env.openssl(&[
        "pkey",
        "-in",
        &format!("before-{v3}.pem"),
        "-outform",
        "DER",
        "-out",
        "k3.der",
    ])
    .ok();
    let key_hex: String = std::fs::read(env.path("k3.der"))
        .unwrap()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect();
    // Bytes 36..68 of a P-256 PKCS#8 key are the private scalar.
    assert!(!file.to_uppercase().contains(&key_hex[72..136]));

    // A name that exists (live or deleted) is never overwritten.
    let r = vault_env(
        &env,
        ("PW", "correct horse"),
        &["restore", "--in", "b1.bak", "--password-env", "PW"],
    )
    .code(2);
    assert!(r.stderr.contains("b1"), "{}", r.stderr);
    vault(&env, &["delete", "b1"]).ok();
    vault_env(
        &env,
        ("PW", "correct horse"),
        &["restore", "--in", "b1.bak", "--password-env", "PW"],
    )
    .code(2);
    vault(&env, &["purge", "b1", "--yes"]).ok();
    vault(&env, &["show", "b1"]).code(2);

    // Wrong password, or an altered file: refused, nothing restored.
    vault_env(
        &env,
        ("PW", "wrong"),
        &["restore", "--in", "b1.bak", "--password-env", "PW"],
    )
    .code(2);
    let altered = file.replacen("\"ciphertext\": \"", "\"ciphertext\": \"00", 1);
    env.write("altered.bak", &altered);
    vault_env(
        &env,
        ("PW", "correct horse"),
        &["restore", "--in", "altered.bak", "--password-env", "PW"],
    )
    .code(2);
    let renamed = file.replacen("\"name\": \"b1\"", "\"name\": \"b2\"", 1);
    assert_ne!(renamed, file);
    env.write("renamed.bak", &renamed);
    vault_env(
        &env,
        ("PW", "correct horse"),
        &["restore", "--in", "renamed.bak", "--password-env", "PW"],
    )
    .code(2);
    vault(&env, &["show", "b1"]).code(2);
    vault(&env, &["show", "b2"]).code(2);

    vault_env(
        &env,
        ("PW", "correct horse"),
        &["restore", "--in", "b1.bak", "--password-env", "PW"],
    )
    .ok();
    assert_eq!(vault(&env, &["show", "b1", "-o", "json"]).ok().json(), before);
    vault(&env, &["update", "b1", "--version", &v1, "--enable"]).ok();
    for v in [&v1, &v2, &v3] {
        let after = format!("after-{v}.pem");
        vault(
            &env,
            &["export", "b1", "--version", v, "--with-key", "--out", &after],
        )
        .ok();
        let b = format!("before-{v}.pem");
        assert_eq!(der_of(&env, &after), der_of(&env, &b), "version {v}");
        assert_eq!(pubkey_of(&env, &after), pubkey_of(&env, &b), "version {v}");
        assert_eq!(
            pubkey_of(&env, &after),
            cert_pubkey_of(&env, &after),
            "version {v}"
        );
    }

    // Into another store with another store key: exportable keys travel.
    let other = TestEnv::new();
    bare_plan(&other);
    std::fs::copy(env.path("b1.bak"), other.path("b1.bak")).unwrap();
    vault_env(
        &other,
        ("PW", "correct horse"),
        &["restore", "--in", "b1.bak", "--password-env", "PW"],
    )
    .ok();
    vault(
        &other,
        &["export", "b1", "--version", &v3, "--with-key", "--out", "o.pem"],
    )
    .ok();
    std::fs::copy(env.path(&format!("before-{v3}.pem")), other.path("b.pem")).unwrap();
    assert_eq!(pubkey_of(&other, "o.pem"), pubkey_of(&other, "b.pem"));
}

#[test]
fn an_hsm_backup_restores_only_under_the_same_store_key() {
    let env = TestEnv::new();
    bare_plan(&env);
    vault(
        &env,
        &["create", "h1", "--subject", "CN=h1", "--key-type", "EC-HSM"],
    )
    .ok();
    vault(&env, &["export", "h1", "--with-key", "--out", "h.pem"]).code(2);
    let r = vault_env(
        &env,
        ("PW", "pw"),
        &[
            "backup",
            "h1",
            "--out",
            "h1.bak",
            "--password-env",
            "PW",
            "-o",
            "json",
        ],
    )
    .ok()
    .json();
    assert_eq!(r["sealed_keys"].as_array().unwrap().len(), 1);

    let other = TestEnv::new();
    bare_plan(&other);
    other.run(&["--plan", "plan.toml", "vault", "list"]).ok();
    std::fs::copy(env.path("h1.bak"), other.path("h1.bak")).unwrap();
    // Make the other store exist with its own key, then try.
    vault(&other, &["contacts", "set", "x@example.com"]).ok();
    let r = vault_env(
        &other,
        ("PW", "pw"),
        &["restore", "--in", "h1.bak", "--password-env", "PW"],
    )
    .code(2);
    assert!(r.stderr.contains("store key"), "{}", r.stderr);
    vault(&other, &["show", "h1"]).code(2);

    let before = vault(&env, &["show", "h1", "-o", "json"]).ok().json();
    vault(&env, &["delete", "h1"]).ok();
    vault(&env, &["purge", "h1", "--yes"]).ok();
    vault_env(
        &env,
        ("PW", "pw"),
        &["restore", "--in", "h1.bak", "--password-env", "PW"],
    )
    .ok();
    assert_eq!(vault(&env, &["show", "h1", "-o", "json"]).ok().json(), before);
    vault(&env, &["export", "h1", "--with-key", "--out", "h.pem"]).code(2);
    vault(&env, &["export", "h1", "--out", "h.pem"]).ok();
}

#[test]
fn a_csr_signed_by_an_outside_ca_is_merged() {
    let env = TestEnv::new();
    bare_plan(&env);
    let r = vault(
        &env,
        &["create", "m1", "--subject", "CN=m1", "--issuer", "nosuch"],
    )
    .code(2);
    assert!(r.stderr.contains("nosuch"), "{}", r.stderr);
    for (bad, named) in [
        (&["--subject", "CN=m1", "--curve", "P-384"][..], "P-384"),
        (&["--subject", "CN=m1", "--key-size", "1024"][..], "1024"),
        (
            &["--subject", "CN=m1", "--key-type", "EC", "--key-size", "3072"][..],
            "3072",
        ),
        (&["--subject", "XX=m1"][..], "XX=m1"),
        (&["--subject", "CN=m1", "--validity-days", "0"][..], "0"),
        (&["--subject", "CN=m1", "--eku", "nonsense"][..], "nonsense"),
    ] {
        let mut args = vec!["create", "m1"];
        args.extend_from_slice(bad);
        let r = vault(&env, &args).code(2);
        assert!(r.stderr.contains(named), "{bad:?}: {}", r.stderr);
    }
    vault(&env, &["show", "m1"]).code(2);
    let r = vault(
        &env,
        &[
            "create",
            "m1",
            "--subject",
            "CN=m1, O=Example",
            "--dns",
            "m1.example.com",
            "--key-type",
            "EC",
            "--curve",
            "P-384",
            "--eku",
            "serverAuth",
            "--issuer",
            "Unknown",
            "-o",
            "json",
        ],
    )
    .ok()
    .json();
    assert_eq!(r["status"], "inProgress");
    let show = vault(&env, &["show", "m1", "-o", "json"]).ok().json();
    assert_eq!(show["versions"], serde_json::json!([]));
    assert_eq!(show["pending"]["issuer"], "Unknown");
    vault(&env, &["export", "m1", "--out", "m1.pem"]).code(2);
    let list = vault(&env, &["list", "-o", "json"]).ok().json();
    assert_eq!(list["certificates"], serde_json::json!([]));
    assert_eq!(list["pending"][0]["name"], "m1");
    vault(
        &env,
        &["create", "m1", "--subject", "CN=m1", "--issuer", "Unknown"],
    )
    .code(2);

    vault(&env, &["csr", "m1", "--out", "m1.csr"]).ok();
    let req = env
        .openssl(&["req", "-in", "m1.csr", "-verify", "-noout", "-text"])
        .ok();
    assert!(format!("{}{}", req.stdout, req.stderr).contains("verify OK"));
    assert!(req.stdout.contains("Subject: CN = m1, O = Example"));
    assert!(req.stdout.contains("DNS:m1.example.com"));
    assert!(req.stdout.contains("NIST CURVE: P-384"));
    assert!(!req.stdout.contains("PRIVATE"));

    env.openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-subj",
        "/CN=Outside CA",
        "-days",
        "100",
    ])
    .ok();
    env.openssl(&[
        "x509",
        "-req",
        "-in",
        "m1.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-days",
        "60",
        "-copy_extensions",
        "copy",
        "-out",
        "m1-signed.pem",
    ])
    .ok();
    // A certificate for another key is refused; the request still waits.
    let r = vault(&env, &["merge", "m1", "--file", "ca.pem"]).code(2);
    assert!(r.stderr.contains("not for the key"), "{}", r.stderr);
    assert!(vault(&env, &["show", "m1", "-o", "json"]).ok().json()["pending"].is_object());

    // The signed certificate with its CA after it: the CA is kept as the chain.
    env.write(
        "m1-with-ca.pem",
        &[
            std::fs::read_to_string(env.path("m1-signed.pem")).unwrap(),
            std::fs::read_to_string(env.path("ca.pem")).unwrap(),
        ]
        .concat(),
    );
    let r = vault_live(&env, &["merge", "m1", "--file", "m1-with-ca.pem", "-o", "json"])
        .ok()
        .json();
    let show = vault(&env, &["show", "m1", "-o", "json"]).ok().json();
    assert_eq!(show["versions"][0]["version"], r["version"]);
    assert!(show["pending"].is_null());
    let list = vault(&env, &["list", "-o", "json"]).ok().json();
    assert_eq!(list["certificates"][0]["name"], "m1");
    assert_eq!(list["pending"], serde_json::json!([]));
    assert_eq!(show["policy"]["issuer"]["name"], "Unknown");
    vault_live(&env, &["export", "m1", "--out", "m1-out.pem"]).ok();
    assert_eq!(der_of(&env, "m1-out.pem"), der_of(&env, "m1-signed.pem"));
    env.openssl(&[
        "verify",
        "-attime",
        &time::OffsetDateTime::now_utc().unix_timestamp().to_string(),
        "-CAfile",
        "ca.pem",
        "m1-out.pem",
    ])
    .ok();
    vault(&env, &["csr", "m1", "--out", "again.csr"]).code(2);
    vault(&env, &["merge", "m1", "--file", "m1-signed.pem"]).code(2);
    vault_env(
        &env,
        ("PW", "x"),
        &[
            "export",
            "m1",
            "--format",
            "pfx",
            "--password-env",
            "PW",
            "--out",
            "m1.pfx",
        ],
    )
    .ok();
    let certs = env
        .openssl(&["pkcs12", "-in", "m1.pfx", "-nokeys", "-passin", "pass:x"])
        .ok()
        .stdout;
    assert_eq!(certs.matches("BEGIN CERTIFICATE").count(), 2);
    assert!(certs.contains("subject=CN = Outside CA"));
}

#[test]
fn contacts_and_issuers() {
    let env = TestEnv::new();
    bare_plan(&env);
    let c = vault(&env, &["contacts", "get", "-o", "json"]).ok().json();
    assert_eq!(
        c,
        serde_json::json!({ "contacts": ["plan@example.com"], "source": "plan" })
    );
    let r = vault(&env, &["contacts", "set", "a@example.com", "not-an-address"]).code(2);
    assert!(r.stderr.contains("not-an-address"), "{}", r.stderr);
    vault(
        &env,
        &[
            "contacts",
            "set",
            "a@example.com",
            "b@example.com",
            "a@example.com",
        ],
    )
    .ok();
    let c = vault(&env, &["contacts", "get", "-o", "json"]).ok().json();
    assert_eq!(
        c,
        serde_json::json!({ "contacts": ["a@example.com", "b@example.com"], "source": "store" })
    );
    let c = vault(&env, &["contacts", "delete", "-o", "json"]).ok().json();
    assert_eq!(
        c["removed"],
        serde_json::json!(["a@example.com", "b@example.com"])
    );
    assert_eq!(c["source"], "plan");

    vault(&env, &["issuers", "set", "Self", "--provider", "X"]).code(2);
    vault(&env, &["issuers", "set", "dc", "--provider", "has space"]).code(2);
    let i = vault(
        &env,
        &[
            "issuers",
            "set",
            "dc",
            "--provider",
            "DigiCert",
            "--account-id",
            "acct-1",
            "-o",
            "json",
        ],
    )
    .ok()
    .json();
    assert_eq!(i["provider"], "DigiCert");
    assert_eq!(i["account_id"], "acct-1");
    vault(&env, &["issuers", "set", "gs", "--provider", "GlobalSign"]).ok();
    let l = vault(&env, &["issuers", "list", "-o", "json"]).ok().json();
    let names: Vec<&str> = l["issuers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["dc", "gs"]);
    assert_eq!(
        vault(&env, &["issuers", "get", "gs", "-o", "json"]).ok().json()["provider"],
        "GlobalSign"
    );
    // A policy naming an issuer keeps it.
    vault(
        &env,
        &[
            "create",
            "w1",
            "--subject",
            "CN=w1",
            "--key-type",
            "EC",
            "--issuer",
            "dc",
        ],
    )
    .ok();
    let r = vault(&env, &["issuers", "delete", "dc"]).code(2);
    assert!(r.stderr.contains("w1"), "{}", r.stderr);
    vault(&env, &["issuers", "delete", "gs"]).ok();
    vault(&env, &["issuers", "get", "gs"]).code(2);
    vault(&env, &["issuers", "delete", "gs"]).code(2);
}

#[test]
fn deleting_one_certificate_after_another_never_reuses_a_version_number() {
    let env = TestEnv::new();
    env.quickstart();
    env.plan_run(&["issue", "ca:root"]).ok();
    // The newest versions leave vault_versions on delete; their numbers must not come back.
    create_self(&env, "a1");
    vault(&env, &["delete", "a1"]).ok();
    create_self(&env, "b1");
    vault(&env, &["delete", "b1"]).ok();
    vault(&env, &["recover", "a1"]).ok();
    vault(&env, &["recover", "b1"]).ok();
    let list = vault(&env, &["list", "-o", "json"]).ok().stdout;
    assert!(list.contains("a1") && list.contains("b1"), "{list}");
}

/// Key Vault starts every version with the tags its request names: a new version certroll makes
/// has none, so the certificate's tags are empty until set again (issue 12).
#[test]
fn a_new_version_starts_without_tags_and_the_older_one_keeps_its_own() {
    let env = TestEnv::new();
    bare_plan(&env);
    let v1 = create_self(&env, "t2");
    vault(&env, &["update", "t2", "--tag", "owner=ops"]).ok();
    create_self(&env, "t2");
    let show = vault(&env, &["show", "t2", "-o", "json"]).ok().json();
    assert_eq!(show["tags"], serde_json::json!({}), "{show}");
    assert_eq!(show["versions"][0]["version"], v1.as_str());
    assert_eq!(show["versions"][0]["tags"], serde_json::json!({ "owner": "ops" }));
}

/// The fifth trial: `vault import` of a DER certificate file is named for what it is (not "a
/// damaged PKCS#12 file"), and a PEM certificate without its key says what the command needs.
#[test]
fn vault_import_names_a_der_certificate_and_a_keyless_pem() {
    let env = TestEnv::new();
    fid5_plan(&env);
    env.plan_run(&["issue"]).ok();
    openssl_ca(&env, "k.pem", "made.pem", "/CN=der-test", "30", &[]);
    env.openssl(&["x509", "-in", "made.pem", "-outform", "DER", "-out", "c.der"])
        .ok();
    let before = store_bytes(&env);
    for with_password in [false, true] {
        let mut args = vec!["vault", "import", "imp", "--file", "c.der"];
        if with_password {
            args.extend(["--password-env", "PFX_PW"]);
        }
        let out = env
            .cmd()
            .env("PFX_PW", "pw")
            .args([&["--plan", "plan.toml"][..], &args].concat())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("c.der is a DER certificate (`CN=der-test`) without a private key")
                && err.contains("PEM (certificate and key blocks in one file"),
            "{err}"
        );
        assert!(!err.contains("damaged") && !err.contains("PKCS#12 file"), "{err}");
    }
    env.openssl(&["x509", "-inform", "DER", "-in", "c.der", "-out", "c.pem"])
        .ok();
    let r = env
        .plan_run(&["vault", "import", "imp", "--file", "c.pem"])
        .code(2);
    assert!(
        r.stderr
            .contains("c.pem holds 1 certificate(s) but no private key")
            && r.stderr
                .contains("`vault import` needs the certificate with its key"),
        "{}",
        r.stderr
    );
    assert_eq!(store_bytes(&env), before, "nothing changed");
}

/// A `device:` or `ca:` target the plan does not declare is refused by every `vault` verb as by
/// the others, with what it may have meant (trial az15 N6: `device:sensor-3` for the generated
/// `sensor-03` said only "the vault has no certificate `dev-sensor-3`"). Exit 2, nothing
/// changed, no file written; a plain vault name is still taken as it is.
#[test]
fn a_vault_verb_given_an_undeclared_target_says_what_it_may_have_meant_and_changes_nothing() {
    let env = TestEnv::new();
    env.quickstart();
    env.plan_run(&["issue"]).ok();
    let before = env
        .plan_run(&["vault", "show", "dev-sensor-03", "-o", "json"])
        .ok()
        .stdout;
    for args in [
        vec!["vault", "show", "device:sensor-3"],
        vec!["vault", "export", "device:sensor-3", "--out", "x.pem"],
        vec!["vault", "update", "device:sensor-3", "--disable"],
        vec!["vault", "delete", "device:sensor-3", "--force"],
    ] {
        let r = env.plan_run(&args).code(2);
        assert!(
            r.stderr.contains(
                "target `device:sensor-3` is not declared in the plan; did you mean `device:sensor-03`?"
            ),
            "{args:?}: {}",
            r.stderr
        );
    }
    let r = env.plan_run(&["vault", "show", "ca:factroy"]).code(2);
    assert!(
        r.stderr.contains("it declares `ca:root`, `ca:factory`"),
        "{}",
        r.stderr
    );
    assert!(!env.path("x.pem").exists(), "a refused export writes nothing");
    let after = env
        .plan_run(&["vault", "show", "dev-sensor-03", "-o", "json"])
        .ok()
        .stdout;
    assert_eq!(before, after, "a refused target changes nothing");
    // A plain vault name is the vault's, not the plan's.
    let r = env.plan_run(&["vault", "show", "dev-sensor-3"]).code(2);
    assert!(
        r.stderr.contains("the vault has no certificate `dev-sensor-3`")
            && !r.stderr.contains("did you mean"),
        "{}",
        r.stderr
    );
}
