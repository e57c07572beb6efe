//! `export`: PEM and PFX that openssl reads, keys only where the policy allows.

use crate::util::*;

fn issued_mixed() -> TestEnv {
    let env = TestEnv::new();
    env.write("plan.toml", &mixed_plan(3, 3));
    env.run(&["--plan", "plan.toml", "issue"]).ok();
    env
}

#[test]
fn pfx_is_read_by_openssl_3_without_legacy_and_holds_the_matching_key() {
    let env = issued_mixed();
    env.run(&[
        "--plan",
        "plan.toml",
        "export",
        "device:gw-rsa",
        "--format",
        "pfx",
        "--password-env",
        "PW",
        "--out",
        "gw.pfx",
    ])
    .code(2); // PW is not set
    assert!(!env.path("gw.pfx").exists());

    let out = env
        .cmd()
        .args([
            "--plan",
            "plan.toml",
            "export",
            "device:gw-rsa",
            "--format",
            "pfx",
            "--password-env",
            "PW",
            "--out",
            "gw.pfx",
        ])
        .env("PW", "s3cret pass")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(mode(&env.path("gw.pfx")), 0o600);

    let info = std::process::Command::new("openssl")
        .args(["pkcs12", "-in", "gw.pfx", "-passin", "env:PW", "-info", "-noout"])
        .env("PW", "s3cret pass")
        .current_dir(env.dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&info.stderr).into_owned() + &String::from_utf8_lossy(&info.stdout);
    assert!(info.status.success(), "{text}");
    assert!(text.contains("PBES2") && text.contains("AES-256"), "{text}");

    let dump = |what: &[&str], file: &str| {
        let out = std::process::Command::new("openssl")
            .args([
                "pkcs12", "-in", "gw.pfx", "-passin", "env:PW", "-passout", "pass:x", "-out", file,
            ])
            .args(what)
            .env("PW", "s3cret pass")
            .current_dir(env.dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    dump(&["-nocerts", "-nodes"], "key.pem");
    dump(&["-nokeys", "-clcerts"], "leaf.pem");
    let from_key = env.openssl(&["pkey", "-in", "key.pem", "-pubout"]).ok().stdout;
    let from_cert = env
        .openssl(&["x509", "-in", "leaf.pem", "-noout", "-pubkey"])
        .ok()
        .stdout;
    assert_eq!(from_key, from_cert, "the PFX key belongs to its certificate");
}

#[test]
fn pem_with_key_is_private_and_matches_the_certificate() {
    let env = issued_mixed();
    env.run(&[
        "--plan",
        "plan.toml",
        "export",
        "device:meter-2",
        "--with-key",
        "--out",
        "m.pem",
    ])
    .ok();
    assert_eq!(mode(&env.path("m.pem")), 0o600);
    let text = std::fs::read_to_string(env.path("m.pem")).unwrap();
    assert_eq!(text.matches("END PRIVATE KEY-----").count(), 1);
    let from_key = env.openssl(&["pkey", "-in", "m.pem", "-pubout"]).ok().stdout;
    let from_cert = env
        .openssl(&["x509", "-in", "m.pem", "-noout", "-pubkey"])
        .ok()
        .stdout;
    assert_eq!(from_key, from_cert);

    env.run(&[
        "--plan",
        "plan.toml",
        "export",
        "device:meter-2",
        "--out",
        "public.pem",
    ])
    .ok();
    assert!(
        !std::fs::read_to_string(env.path("public.pem"))
            .unwrap()
            .contains("PRIVATE KEY")
    );
}

#[test]
fn keys_the_policy_keeps_are_refused_and_nothing_is_written() {
    let env = issued_mixed();
    let refused: &[&[&str]] = &[
        &["export", "ca:rsa-root", "--with-key", "--out", "x.pem"],
        &["export", "device:gw-hsm", "--with-key", "--out", "x.pem"],
        &["export", "group:meters", "--out", "x.pem"],
        &["export", "device:nope", "--out", "x.pem"],
    ];
    for args in refused {
        let mut full = vec!["--plan", "plan.toml"];
        full.extend_from_slice(args);
        let run = env.run(&full).code(2);
        assert!(run.stderr.starts_with("error: "), "{}", run.stderr);
        assert!(!env.path("x.pem").exists(), "{args:?} wrote a file");
    }
    let hsm = env
        .cmd()
        .args([
            "--plan",
            "plan.toml",
            "export",
            "device:gw-hsm",
            "--format",
            "pfx",
            "--password-env",
            "PW",
            "--out",
            "x.pfx",
        ])
        .env("PW", "pw")
        .output()
        .unwrap();
    assert_eq!(hsm.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&hsm.stderr).contains("not exportable"));
    assert!(!env.path("x.pfx").exists());
}

#[test]
fn an_expired_certificate_is_not_exported() {
    let env = issued_mixed();
    let run = env.run(&[
        "--plan",
        "plan.toml",
        "--now",
        "2027-06-01T00:00:00Z",
        "export",
        "device:pump-1",
        "--out",
        "p.pem",
    ]);
    let run = run.code(2);
    assert!(run.stderr.contains("valid only"), "{}", run.stderr);
    assert!(!env.path("p.pem").exists());
}

#[test]
fn nothing_issued_yet_is_an_input_error() {
    let env = TestEnv::new();
    env.quickstart();
    env.run(&["--plan", "plan.toml", "export", "ca:root", "--out", "r.pem"])
        .code(2);
    assert!(!env.store_dir().join("state.db").exists());
}

/// Every PEM file certroll writes has Unix line endings (the `pem` crate's default is CRLF,
/// which shows as `^M` in editors and diffs on the systems certroll runs on).
#[test]
fn pem_files_have_unix_line_endings() {
    let env = issued_mixed();
    env.plan_run(&["export", "device:meter-2", "--with-key", "--out", "leaf.pem"])
        .ok();
    env.plan_run(&["export", "ca:line-a", "--crl", "--out", "factory.crl"])
        .ok();
    env.plan_run(&[
        "vault",
        "create",
        "req",
        "--subject",
        "CN=req",
        "--issuer",
        "Unknown",
    ])
    .ok();
    env.plan_run(&["vault", "csr", "req", "--out", "req.csr"]).ok();
    for file in ["leaf.pem", "factory.crl", "req.csr"] {
        let text = std::fs::read(env.path(file)).unwrap();
        assert!(text.starts_with(b"-----BEGIN "), "{file}");
        assert!(!text.contains(&b'\r'), "{file} has CR line endings");
    }
}

/// The fifth trial: an export whose format follows the version (no `--format`) refuses an `--out`
/// name of the other format (PEM text in a `.pfx` file), writing nothing; `--format` writes what
/// it says, whatever the name.
#[test]
fn an_out_name_of_the_other_format_is_refused_unless_the_format_is_asked_for() {
    let env = TestEnv::new();
    fid5_plan(&env);
    env.plan_run(&["issue"]).ok();
    // A pem-content-type version exported, with and without the plan's policy since moved to pfx.
    for (args, out) in [
        (vec!["export", "device:d-1", "--out", "d1.pfx"], "d1.pfx"),
        (vec!["vault", "export", "dev-d-1", "--out", "v1.P12"], "v1.P12"),
        (vec!["vault", "export", "ca-m", "--out", "m.pfx"], "m.pfx"),
    ] {
        let r = env.plan_run(&args).code(2);
        assert!(
            r.stderr.contains(&format!(
                "--out {out} names a PKCS#12 file, but this export is PEM"
            )) && r.stderr.contains("--format pfx --password-env VAR")
                && r.stderr.contains("Nothing was written"),
            "{}",
            r.stderr
        );
        assert!(!env.path(out).exists(), "{out} written");
    }
    let text = std::fs::read_to_string(env.path("plan.toml")).unwrap();
    env.write(
        "plan.toml",
        &text.replace(
            "validity_days = 200\n",
            "validity_days = 200\ncontent_type = \"pfx\"\n",
        ),
    );
    let r = env.plan_run(&["export", "device:d-1", "--out", "d1.pfx"]).code(2);
    assert!(
        r.stderr.contains("names a PKCS#12 file, but this export is PEM")
            && r.stderr.contains("was made under content_type \"pem\""),
        "{}",
        r.stderr
    );
    assert!(!env.path("d1.pfx").exists());

    // Asked for: PEM where asked, and a real PKCS#12 file where asked.
    env.plan_run(&["export", "device:d-1", "--format", "pem", "--out", "asked.pfx"])
        .ok();
    assert!(
        std::fs::read_to_string(env.path("asked.pfx"))
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----")
    );
    let out = env
        .cmd()
        .env("PFX_PW", "pw")
        .args([
            "--plan",
            "plan.toml",
            "export",
            "device:d-1",
            "--format",
            "pfx",
            "--password-env",
            "PFX_PW",
            "--out",
            "d1.pfx",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    env.openssl(&[
        "pkcs12",
        "-in",
        "d1.pfx",
        "-passin",
        "pass:pw",
        "-nokeys",
        "-out",
        "d1-certs.pem",
    ])
    .ok();
}
