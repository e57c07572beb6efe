//! Issue 10, the fourth trial's leftovers, part A: plan errors reported first in the file and
//! in words, numeric flags stating their real range, the one SAN validator on wildcards and `_`,
//! subject syntax (`+`, repeated attributes, country case), the exit-code contract said the same
//! everywhere, and the truth about a sealed key.

use crate::util::*;

/// The quickstart plan with `edit` applied (`(from, to)` replacements, each of which must
/// match), written as plan.toml; returns the text.
fn quickstart_with(env: &TestEnv, edits: &[(&str, &str)]) -> String {
    let mut text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/quickstart.toml")).unwrap();
    for (from, to) in edits {
        assert!(text.contains(from), "`{from}` is not in the quickstart plan");
        text = text.replacen(from, to, 1);
    }
    env.write("plan.toml", &text);
    text
}

/// The 1-based line of `text` that holds `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap() + 1
}

/// `validate` exits 2 with its error on the line holding `at`, saying `says`.
#[track_caller]
fn refused_at(env: &TestEnv, text: &str, at: &str, says: &str) -> String {
    let r = env.plan_run(&["validate"]).code(2);
    let line = line_of(text, at);
    let want = format!("plan.toml:{line}:");
    assert!(
        r.stderr.contains(&want),
        "expected {want} (`{at}`), got: {}",
        r.stderr
    );
    assert!(r.stderr.contains(says), "expected `{says}` in: {}", r.stderr);
    r.stderr
}

/// Item 20, the trial's two examples: an unknown key at line N then an unknown sub-table below
/// it reports line N; an undefined policy above an unknown key reports the policy.
#[test]
fn the_first_error_in_the_file_is_reported_whichever_check_finds_it() {
    let env = TestEnv::new();
    let text = quickstart_with(
        &env,
        &[(
            "path_len = 0\npolicy = \"ca\"\n",
            "path_len = 0\npolicy = \"ca\"\nzzz = 1\n[ca.factory.extra]\na = 1\n",
        )],
    );
    refused_at(&env, &text, "zzz = 1", "unknown field `zzz`");

    let text = quickstart_with(
        &env,
        &[
            (
                "path_len = 0\npolicy = \"ca\"\n",
                "path_len = 0\npolicy = \"nope\"\n",
            ),
            (
                "device_policy = \"device\"\n",
                "device_policy = \"device\"\nbogus = 1\n",
            ),
        ],
    );
    refused_at(&env, &text, "\"nope\"", "policy `nope` is not defined");

    // A wrong type below a bad value, and a bad value below a wrong type.
    let text = quickstart_with(
        &env,
        &[
            ("validity_days = 365", "validity_days = 0"),
            ("count = 50", "count = \"50\""),
        ],
    );
    refused_at(&env, &text, "validity_days = 0", "out of range (1 to 36500)");
    let text = quickstart_with(
        &env,
        &[
            ("validity_days = 365", "validity_days = \"365\""),
            ("count = 50", "count = 0"),
        ],
    );
    refused_at(&env, &text, "validity_days = \"365\"", "expected an integer");
    // A misspelt key is what is said, not the key it stands for being missing.
    let text = quickstart_with(&env, &[("validity_days = 365", "validity = 365")]);
    refused_at(&env, &text, "validity = 365", "unknown field `validity`");
}

/// Item 20: a table-valued key given a string says what is expected in words, never a Rust type
/// name; an integer past 64 bits gets the key's range.
#[test]
fn wrong_types_and_huge_integers_are_said_in_words() {
    let env = TestEnv::new();
    let text = quickstart_with(
        &env,
        &[(
            "devices = { prefix = \"sensor-\", count = 50 }",
            "devices = \"d-\"",
        )],
    );
    let e = refused_at(
        &env,
        &text,
        "devices = \"d-\"",
        "expected a table like { prefix = \"sensor-\", count = 100 } or { file = \"devices.txt\" }",
    );
    let text = quickstart_with(
        &env,
        &[(
            "key = { type = \"EC\", curve = \"P-256\", exportable = true, reuse_key = false }",
            "key = \"EC\"",
        )],
    );
    let e2 = refused_at(
        &env,
        &text,
        "key = \"EC\"",
        "expected a table like { type = \"EC\", curve = \"P-256\" }",
    );
    let text = quickstart_with(
        &env,
        &[("validity_days = 365", "validity_days = 9223372036854775808")],
    );
    let e3 = refused_at(
        &env,
        &text,
        "9223372036854775808",
        "validity_days = 9223372036854775808 is out of range (1 to 36500)",
    );
    for e in [e, e2, e3] {
        for leak in ["struct", "Raw", "enum", "variant", "i64", "i128"] {
            assert!(!e.contains(leak), "`{leak}` in: {e}");
        }
    }
}

/// Item 20: every numeric flag states its real range, once, in words.
#[test]
fn numeric_flags_state_their_real_range() {
    let env = TestEnv::new();
    env.quickstart();
    for (args, says) in [
        (
            &[
                "vault",
                "create",
                "x",
                "--subject",
                "CN=x",
                "--validity-days",
                "99999999999",
            ][..],
            "out of range (1 to 36500)",
        ),
        (
            &[
                "vault",
                "create",
                "x",
                "--subject",
                "CN=x",
                "--validity-days",
                "0",
            ][..],
            "out of range (1 to 36500)",
        ),
        (
            &[
                "vault",
                "create",
                "x",
                "--subject",
                "CN=x",
                "--key-size",
                "99999999999",
            ][..],
            "not a supported RSA key size (2048, 3072, 4096)",
        ),
        (
            &["vault", "delete", "x", "--recovery-days", "99999999999"][..],
            "out of range (7 to 90)",
        ),
        (
            &["check", "--warn-within", "99999999999"][..],
            "out of range (0 to 36500)",
        ),
        (
            &["check", "--critical-within=-1"][..],
            "out of range (0 to 36500)",
        ),
        (
            &["--lock-timeout", "99999999999999999999", "status"][..],
            "out of range (0 to 86400)",
        ),
        (
            &["--lock-timeout", "abc", "status"][..],
            "not a whole number (0 to 86400)",
        ),
    ] {
        // check's own contract (Nagios-style): 3 when it cannot run at all.
        let r = env.plan_run(args).code(if args[0] == "check" { 3 } else { 2 });
        assert!(r.stderr.contains(says), "{args:?}: {}", r.stderr);
        assert!(
            !r.stderr.contains("4294967295") && !r.stderr.contains("..="),
            "{args:?}: {}",
            r.stderr
        );
    }
    assert!(!env.store_dir().exists(), "nothing was created");
    for (listen, says) in [
        ("127.0.0.1:99999", "the port out of range (0 to 65535)"),
        ("localhost:8443", "not an IP address and port (IP:PORT"),
    ] {
        let r = env.plan_run(&["serve", "--listen", listen]).code(2);
        assert!(r.stderr.contains(says), "--listen {listen}: {}", r.stderr);
    }
}

/// Item 14: a wildcard directly under a top-level domain and a `_` in a label are refused by the
/// one validator, with the reason, from `vault create --dns` and from a plan's `dns_names` alike.
#[test]
fn wildcards_over_one_label_and_underscores_are_refused_everywhere() {
    let env = TestEnv::new();
    for (name, why) in [
        ("*.com", "Baseline Requirements 3.2.2.6"),
        ("*.internal", "wildcard directly under a top-level domain"),
        ("a.b_c.com", "forbid `_` in dNSName"),
    ] {
        env.quickstart();
        let r = env
            .plan_run(&[
                "vault",
                "create",
                "w",
                "--subject",
                "CN=w",
                "--dns",
                name,
                "--issuer",
                "Self",
            ])
            .code(2);
        assert!(r.stderr.contains(why), "--dns {name}: {}", r.stderr);
        let text = quickstart_with(
            &env,
            &[(
                "extended_key_usage = [\"clientAuth\"]",
                &format!("extended_key_usage = [\"clientAuth\"]\ndns_names = [\"{name}\"]"),
            )],
        );
        refused_at(&env, &text, "dns_names", why);
    }
    assert!(!env.store_dir().exists(), "nothing was created");
    // A wildcard under a domain is still fine, and openssl reads it.
    env.quickstart();
    env.plan_run(&[
        "vault",
        "create",
        "w",
        "--subject",
        "CN=w",
        "--dns",
        "*.example.com",
        "--issuer",
        "Self",
    ])
    .ok();
    env.plan_run(&["vault", "export", "w", "--out", "w.pem"]).ok();
    let text = env
        .openssl(&["x509", "-in", "w.pem", "-noout", "-ext", "subjectAltName"])
        .ok()
        .stdout;
    assert!(text.contains("DNS:*.example.com"), "{text}");
}

/// Item 13: an unescaped `+` is refused (RFC 4514 multi-valued RDN), `\+` is a literal plus that
/// openssl shows escaped; `C=de` is refused for upper case; a repeated OU is refused saying why.
#[test]
fn subjects_refuse_multi_valued_rdns_lower_case_countries_and_say_why_repeats_are_refused() {
    let env = TestEnv::new();
    env.quickstart();
    for (subject, says) in [
        ("CN=x, O=x+y", "multi-valued RDN"),
        ("CN=x, C=de", "must be upper case (`C=DE`)"),
        ("CN=x, OU=a, OU=b", "X.509 allows that"),
    ] {
        let r = env
            .plan_run(&["vault", "create", "s", "--subject", subject, "--issuer", "Self"])
            .code(2);
        assert!(r.stderr.contains(says), "{subject}: {}", r.stderr);
    }
    let text = quickstart_with(&env, &[("O=Example\"\npolicy", "O=x+y\"\npolicy")]);
    refused_at(&env, &text, "O=x+y", "multi-valued RDN");

    env.quickstart();
    env.plan_run(&[
        "vault",
        "create",
        "s",
        "--subject",
        "CN=x, O=x\\+y, C=DE",
        "--issuer",
        "Self",
    ])
    .ok();
    env.plan_run(&["vault", "export", "s", "--out", "s.pem"]).ok();
    let subject = env
        .openssl(&[
            "x509", "-in", "s.pem", "-noout", "-subject", "-nameopt", "RFC2253",
        ])
        .ok()
        .stdout;
    assert_eq!(
        subject.trim(),
        "subject=C=DE,O=x\\+y,CN=x",
        "one attribute per RDN, the + a literal"
    );
}

/// README's exit-code table, `certroll --help` and the man page say the same, "held back"
/// included.
#[test]
fn the_exit_code_contract_is_said_the_same_everywhere() {
    let env = TestEnv::new();
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let table: Vec<(String, String)> = readme
        .lines()
        .skip_while(|l| !l.starts_with("### Exit codes"))
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            (cells.len() == 4 && cells[1].len() == 1 && cells[1].bytes().all(|b| b.is_ascii_digit()))
                .then(|| (cells[1].to_string(), cells[2].to_string()))
        })
        .collect();
    let codes: Vec<&str> = table.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(codes[..4], ["0", "1", "2", "3"], "{table:?}");
    // --help wraps to the terminal: compared with whitespace collapsed.
    let words = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let help = words(&env.run(&["--help"]).ok().stdout);
    let man = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/man/certroll.1")).unwrap();
    for (code, meaning) in &table[..4] {
        assert!(
            help.contains(&format!("{code} {meaning}")),
            "--help lacks exit {code}: {meaning}\n{help}"
        );
        let roff = meaning.replace('-', "\\-");
        assert!(
            man.contains(&roff) || man.contains(meaning),
            "man page lacks exit {code}: {meaning}"
        );
    }
    assert!(table[1].1.contains("held back"));
}

/// Item 1's wording: a key created in an HSM is refused as what it is, whatever the plan's
/// policy says now.
#[test]
fn a_sealed_key_is_refused_as_created_sealed_not_under_its_policy() {
    let env = TestEnv::new();
    let plan = mixed_plan(1, 1).replace(
        "key = { type = \"EC-HSM\", curve = \"P-256\" }",
        "key = { type = \"EC-HSM\", curve = \"P-256\", reuse_key = true }",
    );
    env.write("plan.toml", &plan);
    env.plan_run(&["issue"]).ok();
    env.write(
        "plan.toml",
        &plan.replace(
            "key = { type = \"EC-HSM\", curve = \"P-256\", reuse_key = true }",
            "key = { type = \"EC\", curve = \"P-256\", exportable = true, reuse_key = true }",
        ),
    );
    let r = env
        .plan_run(&["export", "device:gw-hsm", "--with-key", "--out", "gw.pem"])
        .code(2);
    assert!(
        r.stderr
            .contains("it was created in an HSM (EC-HSM) and stays so")
            && !r.stderr.contains("under its policy"),
        "{}",
        r.stderr
    );
    assert!(!env.path("gw.pem").exists());
    // A software key made non-exportable says so.
    env.plan_run(&[
        "vault",
        "create",
        "soft",
        "--subject",
        "CN=s",
        "--key-type",
        "EC",
        "--issuer",
        "Self",
        "--not-exportable",
    ])
    .ok();
    let r = env
        .plan_run(&["vault", "export", "soft", "--with-key", "--out", "s.pem"])
        .code(2);
    assert!(
        r.stderr
            .contains("it was created non-exportable (EC) and stays so"),
        "{}",
        r.stderr
    );
}

/// Subjects as CAs outside certroll write them, as `openssl req -subj` spells them, with the
/// vault name each is imported under. The first four can be written again as they are; the
/// last two cannot by the certificate builder (rcgen).
const IMPORTED_SUBJECTS: [(&str, &str); 6] = [
    ("s-plus", r"/CN=plus/O=x\+y"),
    ("s-country", "/CN=de-device/C=de"),
    ("s-comma", r"/CN=Acme, Inc. device/O=Acme\, Inc."),
    (
        "s-attrs",
        "/CN=attrs/DC=example/emailAddress=ops@example.com/serialNumber=SN-42/UID=u-1",
    ),
    ("s-repeat", "/CN=repeat/OU=a/OU=b"),
    ("s-multi", "/O=x+CN=y"),
];

/// An openssl-made self-signed EC certificate of 100 days with the `-subj` subject, written
/// as NAME.pem (and its key NAME.key), imported with `vault import NAME` at `now`.
fn import_openssl_self_signed(env: &TestEnv, name: &str, subj: &str, now: &str) {
    openssl_ca(
        env,
        &format!("{name}.key"),
        &format!("{name}.pem"),
        subj,
        "100",
        &[],
    );
    let bundle = std::fs::read_to_string(env.path(&format!("{name}.pem"))).unwrap()
        + &std::fs::read_to_string(env.path(&format!("{name}.key"))).unwrap();
    env.write(&format!("{name}.bundle.pem"), &bundle);
    env.plan_run(&[
        "vault",
        "import",
        name,
        "--file",
        &format!("{name}.bundle.pem"),
        "--now",
        now,
    ])
    .ok();
}

/// `openssl x509 -subject -nameopt RFC2253` of a PEM file in `env`.
fn openssl_subject(env: &TestEnv, file: &str) -> String {
    env.openssl(&["x509", "-in", file, "-noout", "-subject", "-nameopt", "RFC2253"])
        .ok()
        .stdout
        .trim()
        .to_string()
}

/// The kind of fault behind issue 10's subject syntax (found by fid-8a): `vault import` takes
/// a subject as the certificate has it, and a renewal must write that subject again, not read
/// it back with the syntax certroll asks of users. Self-signed certificates made by openssl with
/// a literal `+`, a lower-case country, commas in values, attributes certroll does not name
/// (DC, emailAddress, serialNumber, UID), a repeated OU and a multi-valued RDN are imported,
/// given Key Vault's AutoRenew at 80% (as a client's policy update would), and renewed by
/// `roll-secondary --due` at 80% of their life: the new version's subject is the old one as
/// openssl prints it (and the same DER); the two subjects rcgen cannot write are named with
/// the reason, their current version stays, the run exits 1 and renews the others, and a rerun
/// changes nothing. `vault show` shows the subjects escaped per RFC 4514.
#[test]
fn imported_subjects_renew_with_the_same_subject_or_are_named() {
    use certroll::backend::Vault;
    let env = TestEnv::new();
    env.write(
        "plan.toml",
        "version = 1\n\n[contacts]\nemails = [\"plan@example.com\"]\n",
    );
    let real = time::OffsetDateTime::now_utc();
    let at_import = certroll::clock::rfc3339(real + time::Duration::minutes(1));
    // 100 days of life, renewed at day 81: past the 80% trigger, before expiry.
    let at_renewal = certroll::clock::rfc3339(real + time::Duration::days(81));
    for (name, subj) in IMPORTED_SUBJECTS {
        import_openssl_self_signed(&env, name, subj, &at_import);
    }
    // RFC 4514 escaping in `vault show`: a literal `+` is `\+`, a multi-valued RDN's `+` is not.
    let shown = |name: &str| {
        let show = env
            .plan_run(&["vault", "show", name, "-o", "json", "--now", &at_import])
            .ok()
            .json();
        show["versions"][0]["cert"]["subject"]
            .as_str()
            .unwrap_or_else(|| panic!("no subject in {show:#}"))
            .to_string()
    };
    assert_eq!(shown("s-plus"), r"CN=plus, O=x\+y");
    assert_eq!(shown("s-comma"), r"CN=Acme\, Inc. device, O=Acme\, Inc.");
    // One RDN of two attributes, in the DER order of its SET (CN's OID sorts first).
    assert_eq!(shown("s-multi"), "CN=y+O=x");
    assert_eq!(
        shown("s-attrs"),
        "CN=attrs, DC=example, emailAddress=ops@example.com, serialNumber=SN-42, UID=u-1"
    );
    {
        // Key Vault gives an imported certificate EmailContacts at 80%; a client's policy
        // update (`PATCH .../policy`) makes it AutoRenew.
        let mut b = writable_backend(&env);
        for (name, _) in IMPORTED_SUBJECTS {
            let mut policy = b.policy(name).unwrap().unwrap();
            assert_eq!(policy["issuer"]["name"], "Self", "{policy:#}");
            policy["lifetime_actions"] = serde_json::json!([
                { "trigger": { "lifetime_percentage": 80 }, "action": { "action_type": "AutoRenew" } }
            ]);
            assert!(b.set_policy(name, &policy.to_string(), real).unwrap());
        }
    }
    let roll = |code: i32| {
        env.plan_run(&[
            "roll-secondary",
            "--due",
            "-y",
            "--now",
            &at_renewal,
            "--allow-time-travel",
            "-o",
            "json",
        ])
        .code(code)
        .json()
    };
    let r = roll(1);
    let renewed = r["vault_renewed"].as_array().unwrap();
    assert_eq!(renewed.len(), 6, "{r:#}");
    for (name, _) in IMPORTED_SUBJECTS {
        let entry = renewed.iter().find(|e| e["name"] == name).unwrap();
        let versions = env
            .plan_run(&["vault", "show", name, "-o", "json", "--now", &at_renewal])
            .ok()
            .json()["versions"]
            .as_array()
            .unwrap()
            .len();
        if matches!(name, "s-repeat" | "s-multi") {
            let why = entry["refused"].as_str().unwrap_or_else(|| panic!("{entry:#}"));
            let reason = if name == "s-repeat" {
                "in two RDNs"
            } else {
                "multi-valued RDN"
            };
            assert!(why.contains(reason) && why.contains("not renewed"), "{why}");
            assert!(entry["version"].is_null(), "{entry:#}");
            assert_eq!(versions, 1, "{name}: nothing may be written");
            continue;
        }
        assert!(entry["refused"].is_null(), "{entry:#}");
        assert!(entry["version"].is_string(), "{entry:#}");
        assert_eq!(versions, 2, "{name}");
        let new = format!("{name}.renewed.pem");
        env.plan_run(&["vault", "export", name, "--out", &new, "--now", &at_renewal])
            .ok();
        let old = format!("{name}.pem");
        assert_eq!(openssl_subject(&env, &new), openssl_subject(&env, &old), "{name}");
        // The same DER, not only the same text: string types and order too.
        let subject_der = |file: &str| {
            let out = format!("{file}.der");
            env.openssl(&["x509", "-in", file, "-outform", "DER", "-out", &out])
                .ok();
            let der = std::fs::read(env.path(&out)).unwrap();
            let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
            cert.subject().as_raw().to_vec()
        };
        assert_eq!(subject_der(&new), subject_der(&old), "{name}");
        // A new certificate (new key, new dates), self-signed under the same name.
        assert_ne!(
            std::fs::read(env.path(&new)).unwrap(),
            std::fs::read(env.path(&old)).unwrap()
        );
        env.openssl(&[
            "verify",
            "-attime",
            &(real + time::Duration::days(81)).unix_timestamp().to_string(),
            "-CAfile",
            &new,
            &new,
        ])
        .ok();
    }
    // A rerun renews nothing again; the two held back are named again.
    let r = roll(1);
    let again = r["vault_renewed"].as_array().unwrap();
    assert_eq!(again.len(), 2, "{r:#}");
    assert!(again.iter().all(|e| e["refused"].is_string()), "{r:#}");
}

/// The store of `env`, open for writing (a vault client's change behind certroll's verbs).
fn writable_backend(env: &TestEnv) -> certroll::backend::local::LocalBackend {
    certroll::backend::local::LocalBackend::new(
        certroll::store::Store::open(&certroll::store::OpenOptions {
            path: env.store_dir().join("state.db"),
            key_file: None,
            create: false,
            write: true,
            lock_timeout: std::time::Duration::from_secs(5),
        })
        .unwrap(),
    )
}

/// The same fault through serve's Key Vault, which the azure backend's renewal goes through: a
/// create under an imported certificate's own policy (what `roll-* --due` on azure and a Key
/// Vault client's renewal send) makes a version with the certificate's subject, byte for byte,
/// though certroll's syntax refuses its text; a subject that no certificate of the name shows
/// is still read as input (400, saying why).
#[test]
fn serve_renews_an_imported_certificate_under_its_own_policy_with_the_same_subject() {
    use crate::serve_keyvault::{Serve, curl_send, json_body};
    let env = TestEnv::new();
    env.write("plan.toml", "version = 1\n");
    let serve = Serve::start(&env, &[("CERTROLL_SERVE_TOKEN", "tok")]);
    let now = certroll::clock::rfc3339(time::OffsetDateTime::now_utc() + time::Duration::minutes(1));
    let create = |name: &str, subject: &str| {
        let body = serde_json::json!({ "policy": {
            "issuer": { "name": "Self" },
            "x509_props": { "subject": subject, "validity_months": 3 },
            "key_props": { "kty": "EC", "crv": "P-256" },
        }});
        curl_send(
            &env,
            &serve,
            "POST",
            &format!("/certificates/{name}/create?api-version=7.5"),
            Some(&body.to_string()),
        )
    };
    for (name, subj) in [
        ("k-country", "/CN=de-device/C=de"),
        (
            "k-attrs",
            "/CN=attrs/DC=example/emailAddress=ops@example.com/serialNumber=SN-42/UID=u-1",
        ),
    ] {
        import_openssl_self_signed(&env, name, subj, &now);
        let (code, text) = curl_send(
            &env,
            &serve,
            "GET",
            &format!("/certificates/{name}/policy?api-version=7.5"),
            None,
        );
        assert_eq!(code, 200, "{text}");
        let subject = json_body(&text)["x509_props"]["subject"]
            .as_str()
            .unwrap()
            .to_string();
        // certroll's own syntax refuses it (lower-case country; DC and the others unknown).
        assert!(
            certroll::pki::spec::Subject::parse(&subject).is_err(),
            "{subject}"
        );
        let (code, text) = create(name, &subject);
        assert_eq!(code, 202, "{name}: {text}");
        let show = env
            .plan_run(&["vault", "show", name, "-o", "json", "--now", &now])
            .ok()
            .json();
        assert_eq!(show["versions"].as_array().unwrap().len(), 2, "{show:#}");
        let new = format!("{name}.renewed.pem");
        env.plan_run(&["vault", "export", name, "--out", &new, "--now", &now])
            .ok();
        let old = format!("{name}.pem");
        assert_eq!(openssl_subject(&env, &new), openssl_subject(&env, &old), "{name}");
        assert_ne!(
            std::fs::read(env.path(&new)).unwrap(),
            std::fs::read(env.path(&old)).unwrap()
        );
    }
    let (code, text) = create("k-typed", "CN=typed, C=de");
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("must be upper case"), "{text}");
    assert_eq!(serve.stop(), 0);
}
