//! Issue 10, the vault and X.509 items: key exportability for a key's whole life, key
//! operations by key type, vault-only lifetime actions, `content_type = "pfx"`, chain order,
//! legacy PKCS#12, RFC 5280 string types, one SAN validator, serials as openssl shows them and
//! PKCS#7 merges. Every file certroll writes or reads is made or checked with the real openssl.

use crate::util::*;

fn vault(env: &TestEnv, args: &[&str]) -> Run {
    let mut full = vec!["--plan", "plan.toml", "vault"];
    full.extend_from_slice(args);
    env.run(&full)
}

/// certroll at the real clock (certificates openssl made just now), with `PW` set.
pub fn live(env: &TestEnv, args: &[&str]) -> Run {
    let now = certroll::clock::rfc3339(time::OffsetDateTime::now_utc() + time::Duration::minutes(1));
    let out = env
        .cmd()
        .env("PW", "changeit")
        .args(["--plan", "plan.toml", "--now", now.as_str()])
        .args(args)
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub fn bare_plan(env: &TestEnv) {
    env.write(
        "plan.toml",
        "version = 1\n\n[contacts]\nemails = [\"plan@example.com\"]\n",
    );
}

/// A root, an intermediate and a leaf with its key, made by openssl: root.pem, int.pem,
/// leaf.pem, leaf.key.
pub fn openssl_chain(env: &TestEnv) {
    let ok = |args: &[&str]| env.openssl(args).ok();
    ok(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        "root.key",
    ]);
    ok(&[
        "req",
        "-x509",
        "-new",
        "-key",
        "root.key",
        "-subj",
        "/CN=Chain Root",
        "-days",
        "30",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-out",
        "root.pem",
    ]);
    ok(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        "int.key",
    ]);
    ok(&[
        "req",
        "-new",
        "-key",
        "int.key",
        "-subj",
        "/CN=Chain Int",
        "-out",
        "int.csr",
    ]);
    env.write(
        "int.ext",
        "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n",
    );
    ok(&[
        "x509", "-req", "-in", "int.csr", "-CA", "root.pem", "-CAkey", "root.key", "-days", "20", "-extfile",
        "int.ext", "-out", "int.pem",
    ]);
    ok(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        "leaf.ec",
    ]);
    ok(&[
        "pkcs8", "-topk8", "-nocrypt", "-in", "leaf.ec", "-out", "leaf.key",
    ]);
    ok(&[
        "req",
        "-new",
        "-key",
        "leaf.key",
        "-subj",
        "/CN=Chain Leaf",
        "-out",
        "leaf.csr",
    ]);
    ok(&[
        "x509", "-req", "-in", "leaf.csr", "-CA", "int.pem", "-CAkey", "int.key", "-days", "10", "-out",
        "leaf.pem",
    ]);
}

/// The subjects of the certificates in a PEM file, in file order (through openssl).
fn subjects_in(env: &TestEnv, file: &str) -> Vec<String> {
    let text = std::fs::read_to_string(env.path(file)).unwrap();
    let mut out = Vec::new();
    for (i, body) in text.split("-----BEGIN CERTIFICATE-----").skip(1).enumerate() {
        let one = format!("{file}.{i}.pem");
        env.write(&one, &format!("-----BEGIN CERTIFICATE-----{body}"));
        let s = env
            .openssl(&["x509", "-in", &one, "-noout", "-subject", "-nameopt", "RFC2253"])
            .ok()
            .stdout;
        out.push(s.trim().trim_start_matches("subject=").to_string());
    }
    out
}

// ------------------------------------------------------------------ item 1

#[test]
fn a_key_made_in_an_hsm_stays_unexportable_after_the_policy_is_edited() {
    let env = TestEnv::new();
    let plan = mixed_plan(1, 1).replace(
        "key = { type = \"EC-HSM\", curve = \"P-256\" }",
        "key = { type = \"EC-HSM\", curve = \"P-256\", reuse_key = true }",
    );
    assert!(plan.contains("reuse_key = true"));
    env.write("plan.toml", &plan);
    env.plan_run(&["issue"]).ok();
    // The plan's policy is edited to an exportable software key; the renewal reuses the key.
    env.write(
        "plan.toml",
        &plan.replace(
            "key = { type = \"EC-HSM\", curve = \"P-256\", reuse_key = true }",
            "key = { type = \"EC\", curve = \"P-256\", exportable = true, reuse_key = true }",
        ),
    );
    env.plan_run(&["--now", "2027-01-10T00:00:00Z", "roll-secondary", "device:gw-hsm"])
        .ok();
    let show = env
        .plan_run(&[
            "--now",
            "2027-01-10T00:00:00Z",
            "vault",
            "show",
            "device:gw-hsm",
            "-o",
            "json",
        ])
        .ok()
        .json();
    let versions = show["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[0]["exportable"], false);
    assert_eq!(versions[1]["exportable"], false, "{show:#}");
    assert_eq!(versions[1]["kty"], "EC-HSM", "the key is still the HSM's");
    let r = env
        .plan_run(&[
            "--now",
            "2027-01-10T00:00:00Z",
            "export",
            "device:gw-hsm",
            "--with-key",
            "--out",
            "gw.pem",
        ])
        .code(2);
    assert!(r.stderr.contains("not exportable"), "{}", r.stderr);
    assert!(!env.path("gw.pem").exists());
    // Nor through the vault, as PEM or PFX.
    env.plan_run(&[
        "--now",
        "2027-01-10T00:00:00Z",
        "vault",
        "export",
        "device:gw-hsm",
        "--with-key",
        "--out",
        "v.pem",
    ])
    .code(2);
    assert!(!env.path("v.pem").exists());
}

// ------------------------------------------------------------------ item 6

#[test]
fn key_operations_follow_key_type_and_the_certificates_key_usage() {
    let env = TestEnv::new();
    env.write("plan.toml", &mixed_plan(1, 1));
    env.plan_run(&["issue"]).ok();
    let ops = |target: &str| {
        env.plan_run(&["vault", "show", target, "-o", "json"]).ok().json()["key_operations"].clone()
    };
    // An EC device key: Key Vault gives EC keys sign and verify only.
    assert_eq!(ops("device:meter-1"), serde_json::json!(["sign", "verify"]));
    // A CA with digitalSignature, keyCertSign and cRLSign signs; it does not wrap keys, RSA or EC.
    assert_eq!(ops("ca:rsa-root"), serde_json::json!(["sign", "verify"]));
    assert_eq!(ops("ca:ec-root"), serde_json::json!(["sign", "verify"]));
    // An RSA leaf with keyEncipherment wraps keys.
    assert_eq!(
        ops("device:gw-rsa"),
        serde_json::json!(["sign", "verify", "wrapKey", "unwrapKey"])
    );
}

#[test]
fn ec_keys_get_no_key_encipherment_by_default() {
    let env = TestEnv::new();
    bare_plan(&env);
    vault(
        &env,
        &["create", "ec-web", "--subject", "CN=ec-web", "--key-type", "EC"],
    )
    .ok();
    vault(&env, &["export", "ec-web", "--out", "ec.pem"]).ok();
    let text = env
        .openssl(&["x509", "-in", "ec.pem", "-noout", "-ext", "keyUsage"])
        .ok()
        .stdout;
    assert!(text.contains("Digital Signature"), "{text}");
    assert!(!text.contains("Key Encipherment"), "RFC 8813: {text}");
    let r = vault(
        &env,
        &[
            "create",
            "ec-2",
            "--subject",
            "CN=ec-2",
            "--key-type",
            "EC",
            "--key-usage",
            "keyEncipherment",
        ],
    )
    .code(2);
    assert!(r.stderr.contains("RFC 8813"), "{}", r.stderr);
    // RSA keeps Key Vault's default.
    vault(&env, &["create", "rsa-web", "--subject", "CN=rsa-web"]).ok();
    vault(&env, &["export", "rsa-web", "--out", "rsa.pem"]).ok();
    let text = env
        .openssl(&["x509", "-in", "rsa.pem", "-noout", "-ext", "keyUsage"])
        .ok()
        .stdout;
    assert!(text.contains("Key Encipherment"), "{text}");
}

// ------------------------------------------------------------------ item 7

#[test]
fn a_vault_only_auto_renew_is_checked_and_carried_out_by_the_due_roll() {
    let env = TestEnv::new();
    env.quickstart();
    env.plan_run(&["issue"]).ok();
    vault(
        &env,
        &["create", "web", "--subject", "CN=web", "--validity-days", "100"],
    )
    .ok();
    // 80 % of 100 days: day 80.
    let before = "2027-02-10T00:00:00Z"; // day 79
    let after = "2027-02-13T00:00:00Z"; // day 82
    let check = env.plan_run(&["--now", before, "check", "-o", "json"]).json();
    assert_eq!(check["next_due"]["target"], "vault:web", "{check:#}");
    assert_eq!(check["next_due"]["action"], "auto-renew");
    let check = env.plan_run(&["--now", after, "check", "-o", "json"]).json();
    let web: Vec<_> = check["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["target"] == "vault:web")
        .collect();
    assert_eq!(web.len(), 1, "{check:#}");
    assert_eq!(web[0]["reason"], "auto-renew due");

    let dry = env
        .plan_run(&[
            "--now",
            after,
            "roll-secondary",
            "--due",
            "--dry-run",
            "-o",
            "json",
        ])
        .ok()
        .json();
    assert_eq!(dry["vault_renewed"][0]["name"], "web", "{dry:#}");
    assert!(dry["vault_renewed"][0]["version"].is_null());
    let r = env
        .plan_run(&["--now", after, "roll-secondary", "--due", "-o", "json"])
        .ok()
        .json();
    assert_eq!(r["vault_renewed"].as_array().unwrap().len(), 1, "{r:#}");
    let show = vault(&env, &["--now", after, "show", "web", "-o", "json"])
        .ok()
        .json();
    let versions = show["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2, "a new version under its policy");
    assert_ne!(versions[0]["cert"]["sha256"], versions[1]["cert"]["sha256"]);
    assert_eq!(versions[1]["cert"]["subject"], "CN=web");
    // A rerun finds nothing due.
    let again = env
        .plan_run(&["--now", after, "roll-secondary", "--due", "-o", "json"])
        .ok()
        .json();
    assert_eq!(again["vault_renewed"], serde_json::json!([]));
    let check = env.plan_run(&["--now", after, "check", "-o", "json"]).json();
    assert!(
        !check["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["target"] == "vault:web"),
        "{check:#}"
    );
}

// ------------------------------------------------------------------ item 8

#[test]
fn a_pfx_content_type_exports_pkcs12() {
    let env = TestEnv::new();
    let plan = std::fs::read_to_string(env.quickstart()).unwrap();
    env.write(
        "plan.toml",
        &plan.replace("content_type = \"pem\"", "content_type = \"pfx\""),
    );
    env.plan_run(&["issue"]).ok();
    let r = env
        .plan_run(&["export", "device:gateway-01", "--out", "gw.out"])
        .code(2);
    assert!(r.stderr.contains("password"), "{}", r.stderr);
    let out = env
        .cmd()
        .env("PW", "changeit")
        .args([
            "--plan",
            "plan.toml",
            "export",
            "device:gateway-01",
            "--password-env",
            "PW",
            "--out",
            "gw.out",
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    env.openssl(&["pkcs12", "-in", "gw.out", "-passin", "pass:changeit", "-noout"])
        .ok();
    let out = env
        .cmd()
        .env("PW", "changeit")
        .args([
            "--plan",
            "plan.toml",
            "vault",
            "export",
            "device:gateway-01",
            "--password-env",
            "PW",
            "--out",
            "v.out",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    env.openssl(&["pkcs12", "-in", "v.out", "-passin", "pass:changeit", "-noout"])
        .ok();
    // --format pem still writes PEM.
    env.plan_run(&[
        "vault",
        "export",
        "device:gateway-01",
        "--format",
        "pem",
        "--out",
        "v.pem",
    ])
    .ok();
    env.openssl(&["x509", "-in", "v.pem", "-noout"]).ok();
}

// ------------------------------------------------------------------ item 11

#[test]
fn an_imported_bundle_exports_leaf_first_in_path_order_without_the_root() {
    let env = TestEnv::new();
    bare_plan(&env);
    openssl_chain(&env);
    let bundle = ["root.pem", "int.pem", "leaf.pem", "leaf.key"]
        .iter()
        .map(|f| std::fs::read_to_string(env.path(f)).unwrap())
        .collect::<String>();
    env.write("bundle.pem", &bundle);
    live(&env, &["vault", "import", "web", "--file", "bundle.pem"]).ok();
    live(&env, &["vault", "export", "web", "--out", "out.pem"]).ok();
    assert_eq!(subjects_in(&env, "out.pem"), ["CN=Chain Leaf", "CN=Chain Int"]);
    // The export verifies as a chain under the root.
    env.openssl(&[
        "verify",
        "-attime",
        &time::OffsetDateTime::now_utc().unix_timestamp().to_string(),
        "-CAfile",
        "root.pem",
        "-untrusted",
        "out.pem",
        "out.pem",
    ])
    .ok();
}

// ------------------------------------------------------------------ item 12

#[test]
fn legacy_pkcs12_from_openssl_imports() {
    let env = TestEnv::new();
    bare_plan(&env);
    openssl_chain(&env);
    for (file, scheme) in [("rc2.pfx", "PBE-SHA1-RC2-40"), ("3des.pfx", "PBE-SHA1-3DES")] {
        let r = env.openssl(&[
            "pkcs12",
            "-export",
            "-legacy",
            "-in",
            "leaf.pem",
            "-inkey",
            "leaf.key",
            "-certfile",
            "int.pem",
            "-certpbe",
            scheme,
            "-keypbe",
            "PBE-SHA1-3DES",
            "-macalg",
            "sha1",
            "-passout",
            "pass:changeit",
            "-out",
            file,
        ]);
        if r.code != 0 {
            // The legacy provider is part of every OpenSSL 3 install; without it the test cannot
            // make its input, which is a failure, not a pass.
            panic!("openssl cannot write {scheme}: {}", r.stderr);
        }
        let name = file.replace(".pfx", "").replace('3', "three");
        let r = live(
            &env,
            &[
                "vault",
                "import",
                &name,
                "--file",
                file,
                "--password-env",
                "PW",
                "-o",
                "json",
            ],
        )
        .ok()
        .json();
        assert_eq!(r["cert"]["subject"], "CN=Chain Leaf", "{scheme}");
        assert_eq!(r["other_certificates"], 1, "{scheme}");
    }
    // A wrong password is named as such.
    let out = env
        .cmd()
        .env("PW", "wrong")
        .args([
            "--plan",
            "plan.toml",
            "vault",
            "import",
            "x",
            "--file",
            "rc2.pfx",
            "--password-env",
            "PW",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("wrong password"), "{err}");
}

// ------------------------------------------------------------------ item 13

#[test]
fn names_use_rfc_5280_string_types_in_certificates_and_requests() {
    let env = TestEnv::new();
    bare_plan(&env);
    let subject = "CN=web-2, O=Example, OU=Ops, L=Seoul, ST=Seoul, C=KR";
    vault(&env, &["create", "self", "--subject", subject]).ok();
    vault(&env, &["export", "self", "--out", "self.pem"]).ok();
    vault(
        &env,
        &["create", "req", "--subject", subject, "--issuer", "Unknown"],
    )
    .ok();
    vault(&env, &["csr", "req", "--out", "req.csr"]).ok();
    for (cmd, file) in [("x509", "self.pem"), ("req", "req.csr")] {
        let text = env
            .openssl(&[
                cmd,
                "-in",
                file,
                "-noout",
                "-subject",
                "-nameopt",
                "sep_comma_plus,show_type",
            ])
            .ok()
            .stdout;
        assert!(text.contains("C=PRINTABLESTRING:KR"), "{file}: {text}");
        for attr in [
            "CN=UTF8STRING:web-2",
            "O=UTF8STRING:Example",
            "OU=UTF8STRING:Ops",
            "L=UTF8STRING:Seoul",
            "ST=UTF8STRING:Seoul",
        ] {
            assert!(text.contains(attr), "{file}: {attr} in {text}");
        }
    }
}

// ------------------------------------------------------------------ item 14

#[test]
fn sans_are_validated_alike_by_the_plan_and_the_flags() {
    let env = TestEnv::new();
    bare_plan(&env);
    for bad in ["bad name!", "192.0.2.300", "-lead.example.com", "a..b"] {
        let flag = format!("--dns={bad}");
        let r = vault(&env, &["create", "web", "--subject", "CN=web", &flag]).code(2);
        assert!(r.stderr.contains(bad), "{bad}: {}", r.stderr);
        let plan = format!(
            "version = 1\n\n[policies.p]\nkey = {{ type = \"EC\" }}\nvalidity_days = 30\ndns_names = [\"{bad}\"]\n"
        );
        env.write("bad.toml", &plan);
        let r = env.run(&["--plan", "bad.toml", "validate"]);
        assert_eq!(r.code, 2, "{bad}: {}{}", r.stdout, r.stderr);
        assert!(r.stderr.contains(bad), "{bad}: {}", r.stderr);
    }
    assert!(!env.store_dir().join("state.db").exists() || vault(&env, &["show", "web"]).code == 2);
    vault(
        &env,
        &[
            "create",
            "web",
            "--subject",
            "CN=web",
            "--dns",
            "*.example.com",
            "--dns",
            "192.0.2.7",
        ],
    )
    .ok();
    vault(&env, &["export", "web", "--out", "web.pem"]).ok();
    let text = env
        .openssl(&["x509", "-in", "web.pem", "-noout", "-ext", "subjectAltName"])
        .ok()
        .stdout;
    assert!(
        text.contains("DNS:*.example.com") && text.contains("IP Address:192.0.2.7"),
        "{text}"
    );
}

// ------------------------------------------------------------------ item 18

#[test]
fn a_negative_serial_shows_as_openssl_shows_it() {
    let env = TestEnv::new();
    bare_plan(&env);
    env.openssl(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        "k.ec",
    ])
    .ok();
    env.openssl(&["pkcs8", "-topk8", "-nocrypt", "-in", "k.ec", "-out", "k.key"])
        .ok();
    env.openssl(&[
        "req",
        "-x509",
        "-new",
        "-key",
        "k.key",
        "-subj",
        "/CN=neg",
        "-days",
        "5",
        "-set_serial",
        "-1234",
        "-out",
        "neg.pem",
    ])
    .ok();
    let shown = env
        .openssl(&["x509", "-in", "neg.pem", "-noout", "-serial"])
        .ok()
        .stdout;
    let shown = shown.trim().trim_start_matches("serial=").to_string();
    assert!(shown.starts_with('-'), "{shown}");
    let bundle = std::fs::read_to_string(env.path("neg.pem")).unwrap()
        + &std::fs::read_to_string(env.path("k.key")).unwrap();
    env.write("neg-bundle.pem", &bundle);
    let r = live(
        &env,
        &["vault", "import", "neg", "--file", "neg-bundle.pem", "-o", "json"],
    )
    .ok()
    .json();
    assert_eq!(r["cert"]["serial"], shown.as_str());
    let show = live(&env, &["vault", "show", "neg", "-o", "json"]).ok().json();
    assert_eq!(show["versions"][0]["cert"]["serial"], shown.as_str());
}

#[test]
fn merge_takes_a_pkcs7_bundle_in_pem_or_der() {
    let env = TestEnv::new();
    bare_plan(&env);
    openssl_chain(&env);
    for (name, form) in [("p7-pem", "PEM"), ("p7-der", "DER")] {
        live(
            &env,
            &[
                "vault",
                "create",
                name,
                "--subject",
                &format!("CN={name}"),
                "--issuer",
                "Unknown",
                "--key-type",
                "EC",
            ],
        )
        .ok();
        live(&env, &["vault", "csr", name, "--out", &format!("{name}.csr")]).ok();
        env.openssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "int.pem",
            "-CAkey",
            "int.key",
            "-days",
            "5",
            "-out",
            &format!("{name}.pem"),
        ])
        .ok();
        // A CA's answer: root, leaf and intermediate in a certs-only PKCS#7, in no useful order.
        env.openssl(&[
            "crl2pkcs7",
            "-nocrl",
            "-certfile",
            "root.pem",
            "-certfile",
            &format!("{name}.pem"),
            "-certfile",
            "int.pem",
            "-outform",
            form,
            "-out",
            &format!("{name}.p7b"),
        ])
        .ok();
        let r = live(
            &env,
            &[
                "vault",
                "merge",
                name,
                "--file",
                &format!("{name}.p7b"),
                "-o",
                "json",
            ],
        )
        .ok()
        .json();
        assert_eq!(r["cert"]["subject"], format!("CN={name}"), "{form}");
        live(
            &env,
            &["vault", "export", name, "--out", &format!("{name}.out.pem")],
        )
        .ok();
        assert_eq!(
            subjects_in(&env, &format!("{name}.out.pem")),
            [format!("CN={name}"), "CN=Chain Int".to_string()],
            "{form}"
        );
    }
}
