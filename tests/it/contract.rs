//! What scripts and operators rely on beyond the happy path: every field of `status -o json`
//! agrees with what openssl reads from the exported certificates, CA and leaf profiles, status
//! before anything is issued, and broken plans refused with an exact location by every verb
//! without leaving a single file behind.

use crate::util::*;
use serde_json::Value;
use std::collections::{BTreeSet, HashSet};

/// `openssl -attime` for [`NOW`] (2026-11-23T00:00:00Z = 1795392000) plus an hour: the checks
/// do not depend on the wall clock, so they keep passing after the test certificates (issued at
/// the pinned clock, some valid for 90 days) have really expired.
const AT_NOW: &str = "1795395600";

fn keys(v: &Value) -> BTreeSet<&str> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .map(String::as_str)
        .collect()
}

fn assert_has(v: &Value, wanted: &[&str]) {
    let have = keys(v);
    for k in wanted {
        assert!(have.contains(k), "`{k}` missing from {v}");
    }
}

/// `openssl x509` on one certificate file: (sha1, sha256, serial, notBefore, notAfter, subject).
fn openssl_facts(env: &TestEnv, file: &str) -> [String; 6] {
    let out = env
        .openssl(&[
            "x509",
            "-in",
            file,
            "-noout",
            "-fingerprint",
            "-sha1",
            "-serial",
            "-dates",
            "-dateopt",
            "iso_8601",
            "-subject",
            "-nameopt",
            "RFC2253",
        ])
        .ok()
        .stdout;
    let sha256 = env
        .openssl(&["x509", "-in", file, "-noout", "-fingerprint", "-sha256"])
        .ok()
        .stdout;
    let field = |text: &str, prefix: &str| -> String {
        text.lines()
            .find(|l| l.to_lowercase().starts_with(&prefix.to_lowercase()))
            .map(|l| &l[prefix.len()..])
            .unwrap_or_else(|| panic!("no {prefix} in {text}"))
            .trim()
            .to_string()
    };
    let fp = |s: String| s.replace(':', "");
    // 2026-11-23 00:00:00Z -> 2026-11-23T00:00:00Z
    let date = |s: String| s.replacen(' ', "T", 1);
    [
        fp(field(&out, "SHA1 Fingerprint=")),
        fp(field(&sha256, "SHA256 Fingerprint=")),
        field(&out, "serial="),
        date(field(&out, "notBefore=")),
        date(field(&out, "notAfter=")),
        field(&out, "subject="),
    ]
}

/// Compares a status certificate object with what openssl reads from `file` (its first cert).
fn assert_matches_openssl(env: &TestEnv, cert: &Value, file: &str, cn: &str) {
    assert_has(
        cert,
        &[
            "thumbprint",
            "sha256",
            "serial",
            "subject",
            "issuer",
            "not_before",
            "not_after",
        ],
    );
    let [sha1, sha256, serial, nb, na, subject] = openssl_facts(env, file);
    let s = |k: &str| cert[k].as_str().unwrap_or_else(|| panic!("{k} in {cert}"));
    assert_eq!(s("thumbprint"), sha1, "{file}: thumbprint = SHA-1 of the DER");
    assert_eq!(s("sha256"), sha256, "{file}: sha256 = SHA-256 of the DER");
    let trim = |x: &str| x.trim_start_matches('0').to_string();
    assert_eq!(trim(s("serial")), trim(&serial), "{file}: serial");
    assert!(
        s("serial")
            .chars()
            .all(|c| c.is_ascii_digit() || ('A'..='F').contains(&c)),
        "serial is uppercase hex: {}",
        s("serial")
    );
    assert_eq!(s("not_before"), nb, "{file}: not_before");
    assert_eq!(s("not_after"), na, "{file}: not_after");
    assert!(
        subject.split(',').any(|rdn| rdn == format!("CN={cn}")),
        "{file}: openssl subject {subject}, wanted CN={cn}"
    );
    assert!(
        s("subject").contains(&format!("CN={cn}")),
        "{file}: status subject {}",
        s("subject")
    );
}

fn export(env: &TestEnv, target: &str, out: &str) {
    env.run(&["--plan", "plan.toml", "export", target, "--out", out])
        .ok();
}

#[test]
fn every_status_field_is_what_openssl_reads_from_the_certificates() {
    let env = TestEnv::new();
    env.quickstart();
    env.run(&["--plan", "plan.toml", "issue"]).ok();
    let s = env
        .run(&["--plan", "plan.toml", "status", "-o", "json"])
        .ok()
        .json();
    assert_eq!(
        keys(&s),
        BTreeSet::from(["cas", "groups", "enrollments", "devices"]),
        "the documented top level"
    );

    // CAs.
    let subjects = [
        ("root", "Quickstart Root CA"),
        ("factory", "Quickstart Factory CA"),
    ];
    for (ca, (name, cn)) in s["cas"].as_array().unwrap().iter().zip(subjects) {
        assert_eq!(ca["name"], name);
        let file = format!("{name}.pem");
        export(&env, &format!("ca:{name}"), &file);
        assert_matches_openssl(&env, &ca["cert"], &file, cn);
    }
    assert_eq!(
        s["cas"][1]["cert"]["issuer"], s["cas"][0]["cert"]["subject"],
        "the factory CA is issued by the root"
    );

    // The group and the enrollment: status and both slots, always present.
    for (list, name) in [("groups", "sensors"), ("enrollments", "gateway-01")] {
        let all = s[list].as_array().unwrap();
        assert_eq!(all.len(), 1, "{list}");
        let e = &all[0];
        assert_has(e, &["name", "status", "primary", "secondary"]);
        assert_eq!(e["name"], name);
        assert_eq!(e["status"], "enabled", "{e}");
        assert!(e["secondary"].is_null(), "{e}");
    }
    assert_eq!(
        s["groups"][0]["primary"], s["cas"][1]["cert"],
        "the group's primary slot holds the factory CA"
    );

    // Devices: each one once, the documented fields, distinct certificates.
    let devices = s["devices"].as_array().unwrap();
    let ids: Vec<&str> = devices.iter().map(|d| d["id"].as_str().unwrap()).collect();
    let mut wanted: Vec<String> = (1..=50).map(|i| format!("sensor-{i:02}")).collect();
    wanted.push("gateway-01".into());
    assert_eq!(ids, wanted, "plan order, each device once");
    let mut thumbprints = HashSet::new();
    let mut serials = HashSet::new();
    for d in devices {
        assert_has(
            d,
            &[
                "id",
                "group",
                "enrollment",
                "installed",
                "registration",
                "hub_identity",
            ],
        );
        assert_has(&d["registration"], &["status", "substatus", "hub"]);
        assert_has(
            &d["hub_identity"],
            &["status", "primary_thumbprint", "secondary_thumbprint"],
        );
        let id = d["id"].as_str().unwrap();
        if id == "gateway-01" {
            assert!(d["group"].is_null() && d["enrollment"] == "gateway-01", "{d}");
        } else {
            assert!(d["group"] == "sensors" && d["enrollment"].is_null(), "{d}");
        }
        assert_eq!(d["registration"]["status"], "assigned", "{d}");
        assert_eq!(d["registration"]["substatus"], "initialAssignment", "{d}");
        assert_eq!(d["registration"]["hub"], "example-hub", "{d}");
        assert_eq!(d["hub_identity"]["status"], "enabled", "{d}");
        assert_eq!(
            d["hub_identity"]["primary_thumbprint"], d["installed"]["thumbprint"],
            "{d}"
        );
        assert!(d["hub_identity"]["secondary_thumbprint"].is_null(), "{d}");
        assert_eq!(
            d["installed"]["issuer"], s["cas"][1]["cert"]["subject"],
            "{id} is signed by the factory CA"
        );
        assert!(thumbprints.insert(d["installed"]["thumbprint"].as_str().unwrap()));
        assert!(
            serials.insert(d["installed"]["serial"].as_str().unwrap()),
            "{id}: serial numbers are unique"
        );
    }

    // A sample of devices and the gateway, checked field by field against openssl.
    for id in ["sensor-01", "sensor-13", "sensor-26", "sensor-50", "gateway-01"] {
        let d = devices.iter().find(|d| d["id"] == id).unwrap();
        let file = format!("{id}.pem");
        export(&env, &format!("device:{id}"), &file);
        assert_matches_openssl(&env, &d["installed"], &file, id);
    }
    let gw = devices.iter().find(|d| d["id"] == "gateway-01").unwrap();
    assert_eq!(
        s["enrollments"][0]["primary"], gw["installed"],
        "the enrollment's primary slot holds the gateway's certificate"
    );
}

#[test]
fn status_before_anything_is_issued_shows_the_plan_and_creates_nothing() {
    let env = TestEnv::new();
    env.quickstart();
    let s = env
        .run(&["--plan", "plan.toml", "status", "-o", "json"])
        .ok()
        .json();
    assert_eq!(
        keys(&s),
        BTreeSet::from(["cas", "groups", "enrollments", "devices"])
    );
    assert_eq!(s["cas"].as_array().unwrap().len(), 2);
    assert!(s["cas"].as_array().unwrap().iter().all(|c| c["cert"].is_null()));
    assert!(s["groups"][0]["status"].is_null() && s["groups"][0]["primary"].is_null());
    assert!(s["enrollments"][0]["status"].is_null());
    let devices = s["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 51);
    assert!(
        devices
            .iter()
            .all(|d| d["installed"].is_null() && d["registration"].is_null() && d["hub_identity"].is_null())
    );
    env.run(&["--plan", "plan.toml", "status"]).ok();
    assert!(!env.store_dir().exists(), "status must not create the store");
}

#[test]
fn cas_and_leaves_carry_their_policy_profile() {
    let env = TestEnv::new();
    env.write("plan.toml", &mixed_plan(30, 20));
    env.run(&["--plan", "plan.toml", "-q", "issue"]).ok();

    // (CA, its root, key fact, pathlen)
    let cas = [
        ("rsa-root", "rsa-root", "Public-Key: (3072 bit)", None),
        ("ec-root", "ec-root", "NIST CURVE: P-384", None),
        ("line-a", "rsa-root", "NIST CURVE: P-256", Some(0)),
        ("line-b", "ec-root", "NIST CURVE: P-256", Some(0)),
    ];
    for (ca, root, key, pathlen) in cas {
        let file = format!("{ca}.pem");
        export(&env, &format!("ca:{ca}"), &file);
        let text = env
            .openssl(&["x509", "-in", &file, "-noout", "-text"])
            .ok()
            .stdout;
        assert_eq!(
            std::fs::read_to_string(env.path(&file))
                .unwrap()
                .matches("BEGIN CERTIFICATE")
                .count(),
            1,
            "{ca}: the chain of a CA stops before the root, which is its issuer here"
        );
        assert!(text.contains(key), "{ca}: wanted {key} in\n{text}");
        match pathlen {
            Some(n) => assert!(text.contains(&format!("CA:TRUE, pathlen:{n}")), "{ca}: {text}"),
            None => assert!(
                text.contains("CA:TRUE") && !text.contains("pathlen"),
                "{ca}: {text}"
            ),
        }
        assert!(text.contains("Certificate Sign, CRL Sign"), "{ca}: {text}");
        let verify = env
            .openssl(&[
                "verify",
                "-attime",
                AT_NOW,
                "-CAfile",
                &format!("{root}.pem"),
                &file,
            ])
            .ok();
        assert!(verify.stdout.contains(": OK"), "{ca}: {}", verify.stdout);
    }

    // Ten devices across both groups, and every individual enrollment.
    let devices = [
        ("meter-01", "rsa-root"),
        ("meter-08", "rsa-root"),
        ("meter-15", "rsa-root"),
        ("meter-22", "rsa-root"),
        ("meter-30", "rsa-root"),
        ("pump-01", "ec-root"),
        ("pump-05", "ec-root"),
        ("pump-10", "ec-root"),
        ("pump-15", "ec-root"),
        ("pump-20", "ec-root"),
        ("gw-rsa", "ec-root"),
        ("gw-hsm", "rsa-root"),
    ];
    for (id, root) in devices {
        let file = format!("{id}.pem");
        export(&env, &format!("device:{id}"), &file);
        let verify = env
            .openssl(&[
                "verify",
                "-attime",
                AT_NOW,
                "-purpose",
                "sslclient",
                "-CAfile",
                &format!("{root}.pem"),
                "-untrusted",
                &file,
                &file,
            ])
            .ok();
        assert!(verify.stdout.contains(": OK"), "{id}: {}", verify.stdout);
        let text = env
            .openssl(&["x509", "-in", &file, "-noout", "-text"])
            .ok()
            .stdout;
        assert!(text.contains("CA:FALSE"), "{id}: {text}");
        assert!(text.contains("TLS Web Client Authentication"), "{id}: {text}");
        assert!(text.contains(&format!("Subject: CN = {id}\n")), "{id}: {text}");
        let usage = text
            .lines()
            .skip_while(|l| !l.contains("X509v3 Key Usage"))
            .nth(1)
            .unwrap_or_else(|| panic!("{id}: no key usage in {text}"))
            .trim()
            .to_string();
        if id == "gw-rsa" {
            assert!(text.contains("Public-Key: (2048 bit)"), "{id}: {text}");
            assert_eq!(usage, "Digital Signature, Key Encipherment", "{id}");
        } else if id == "gw-hsm" {
            // No key_usage in the policy: the default for an EC key, without keyEncipherment
            // (RFC 8813).
            assert!(text.contains("NIST CURVE: P-256"), "{id}: {text}");
            assert_eq!(usage, "Digital Signature", "{id}");
        } else {
            assert!(text.contains("NIST CURVE: P-256"), "{id}: {text}");
            assert_eq!(usage, "Digital Signature", "{id}");
        }
    }
}

// ---- broken plans -------------------------------------------------------------------------

/// A valid plan; each case below breaks one line of it (line numbers in the comments).
const BASE: &str = r#"version = 1

[policies.ca]
key = { type = "EC", curve = "P-256" }
validity_days = 3650

[policies.dev]
key = { type = "EC", curve = "P-256" }
validity_days = 365

[ca.root]
subject = "CN=Root"
policy = "ca"

[groups.g]
signing_ca = "root"
hub = "hub"
device_policy = "dev"
devices = { prefix = "d-", count = 3 }
"#;

/// One broken plan: how to make it from [`BASE`], and where the error must point.
struct Broken {
    what: &'static str,
    /// (text to find in BASE, replacement); an empty `find` appends.
    edit: (&'static str, &'static str),
    /// Extra files to write next to the plan.
    files: &'static [(&'static str, &'static str)],
    /// The file the error is in, its line and column (None = column not checked).
    at: (&'static str, usize, Option<usize>),
    /// A word the message must contain.
    word: &'static str,
}

fn broken_cases() -> Vec<Broken> {
    vec![
        Broken {
            what: "unknown top-level key",
            edit: ("version = 1\n", "version = 1\ncolour = \"blue\"\n"),
            files: &[],
            at: ("plan.toml", 2, Some(1)),
            word: "colour",
        },
        Broken {
            what: "unknown key in a policy's key table",
            edit: (
                "key = { type = \"EC\", curve = \"P-256\" }\nvalidity_days = 365\n",
                "key = { type = \"EC\", curve = \"P-256\", shape = \"round\" }\nvalidity_days = 365\n",
            ),
            files: &[],
            at: ("plan.toml", 8, None),
            word: "shape",
        },
        Broken {
            what: "wrong type",
            edit: ("validity_days = 365\n", "validity_days = \"365\"\n"),
            files: &[],
            at: ("plan.toml", 9, Some(17)),
            word: "",
        },
        Broken {
            what: "dangling device policy",
            edit: ("device_policy = \"dev\"", "device_policy = \"devx\""),
            files: &[],
            at: ("plan.toml", 18, Some(17)),
            word: "devx",
        },
        Broken {
            what: "dangling CA policy",
            edit: ("policy = \"ca\"", "policy = \"cax\""),
            files: &[],
            at: ("plan.toml", 13, Some(10)),
            word: "cax",
        },
        Broken {
            what: "dangling signing_ca",
            edit: ("signing_ca = \"root\"", "signing_ca = \"rot\""),
            files: &[],
            at: ("plan.toml", 16, Some(14)),
            word: "rot",
        },
        Broken {
            what: "dangling CA issuer",
            edit: (
                "subject = \"CN=Root\"\n",
                "subject = \"CN=Root\"\nissuer = \"nosuch\"\n",
            ),
            files: &[],
            at: ("plan.toml", 13, Some(10)),
            word: "nosuch",
        },
        Broken {
            what: "dangling enrollment policy",
            edit: (
                "",
                "\n[enrollments.gw]\nissuer = \"root\"\npolicy = \"nope\"\nhub = \"hub\"\n",
            ),
            files: &[],
            at: ("plan.toml", 23, Some(10)),
            word: "nope",
        },
        Broken {
            what: "CA issuer cycle",
            edit: (
                "",
                "\n[ca.a]\nsubject = \"CN=A\"\nissuer = \"b\"\npolicy = \"ca\"\n\n[ca.b]\nsubject = \"CN=B\"\nissuer = \"a\"\npolicy = \"ca\"\n",
            ),
            files: &[],
            at: ("plan.toml", 23, Some(10)),
            word: "cycle",
        },
        Broken {
            what: "CA that is its own issuer",
            edit: (
                "subject = \"CN=Root\"\n",
                "subject = \"CN=Root\"\nissuer = \"root\"\n",
            ),
            files: &[],
            at: ("plan.toml", 13, Some(10)),
            word: "itself",
        },
        Broken {
            what: "bad CA name",
            edit: ("[ca.root]", "[ca.bad_name]"),
            files: &[],
            at: ("plan.toml", 11, Some(5)),
            word: "bad_name",
        },
        Broken {
            what: "bad group name",
            edit: ("[groups.g]", "[groups.bad_name]"),
            files: &[],
            at: ("plan.toml", 15, Some(9)),
            word: "bad_name",
        },
        Broken {
            what: "RSA 1024",
            edit: (
                "key = { type = \"EC\", curve = \"P-256\" }\nvalidity_days = 3650",
                "key = { type = \"RSA\", size = 1024 }\nvalidity_days = 3650",
            ),
            files: &[],
            at: ("plan.toml", 4, Some(30)),
            word: "1024",
        },
        Broken {
            what: "curve P-192",
            edit: (
                "key = { type = \"EC\", curve = \"P-256\" }\nvalidity_days = 365\n",
                "key = { type = \"EC\", curve = \"P-192\" }\nvalidity_days = 365\n",
            ),
            files: &[],
            at: ("plan.toml", 8, Some(30)),
            word: "P-192",
        },
        Broken {
            what: "path_len 0 CA issuing another CA",
            edit: (
                "",
                "\n[ca.mid]\nsubject = \"CN=Mid\"\nissuer = \"root\"\npath_len = 0\npolicy = \"ca\"\n\n[ca.low]\nsubject = \"CN=Low\"\nissuer = \"mid\"\npolicy = \"ca\"\n",
            ),
            files: &[],
            at: ("plan.toml", 29, Some(10)),
            word: "path_len",
        },
        Broken {
            what: "device id in a group and as an enrollment",
            edit: (
                "",
                "\n[enrollments.d-2]\nissuer = \"root\"\npolicy = \"dev\"\nhub = \"hub\"\n",
            ),
            files: &[],
            at: ("plan.toml", 21, Some(14)),
            word: "d-2",
        },
        Broken {
            what: "device id in two groups",
            edit: (
                "",
                "\n[groups.h]\nsigning_ca = \"line-h\"\nhub = \"hub\"\ndevice_policy = \"dev\"\ndevices = { prefix = \"d-\", count = 5 }\n\
                 \n[ca.line-h]\nsubject = \"CN=Line H\"\nissuer = \"root\"\npolicy = \"ca\"\n",
            ),
            files: &[],
            at: ("plan.toml", 25, Some(11)),
            word: "d-1",
        },
        Broken {
            what: "device id listed twice in a device file",
            edit: (
                "devices = { prefix = \"d-\", count = 3 }",
                "devices = { file = \"ids.txt\" }",
            ),
            files: &[("ids.txt", "# fleet\ncam-1\ncam-2\n\ncam-1\n")],
            at: ("ids.txt", 5, Some(1)),
            word: "cam-1",
        },
        Broken {
            what: "missing devices file",
            edit: (
                "devices = { prefix = \"d-\", count = 3 }",
                "devices = { file = \"missing.txt\" }",
            ),
            files: &[],
            at: ("plan.toml", 19, Some(20)),
            word: "missing.txt",
        },
        Broken {
            what: "TOML syntax error",
            edit: ("hub = \"hub\"\n", "hub = \"hub\n"),
            files: &[],
            at: ("plan.toml", 17, None),
            word: "",
        },
        Broken {
            what: "keyCertSign leaf policy",
            edit: (
                "validity_days = 365\n",
                "validity_days = 365\nkey_usage = [\"digitalSignature\", \"keyCertSign\"]\n",
            ),
            files: &[],
            at: ("plan.toml", 19, Some(17)),
            word: "keyCertSign",
        },
    ]
}

/// Every file under `dir`, with its contents, to prove a refused command wrote nothing.
fn snapshot(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                out.push((p.clone(), Vec::new()));
                todo.push(p);
            } else {
                let bytes = std::fs::read(&p).unwrap();
                out.push((p, bytes));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn the_base_of_the_broken_plans_is_valid() {
    let env = TestEnv::new();
    env.write("plan.toml", BASE);
    let v = env
        .run(&["--plan", "plan.toml", "validate", "-o", "json"])
        .ok()
        .json();
    assert_eq!(v["devices"], 3);
}

#[test]
fn every_verb_refuses_a_broken_plan_at_its_exact_location_and_writes_nothing() {
    for case in broken_cases() {
        let env = TestEnv::new();
        let (find, replace) = case.edit;
        let text = if find.is_empty() {
            format!("{BASE}{replace}")
        } else {
            assert!(BASE.contains(find), "{}: `{find}` not in BASE", case.what);
            BASE.replacen(find, replace, 1)
        };
        env.write("plan.toml", &text);
        for (name, body) in case.files {
            env.write(name, body);
        }
        let before = snapshot(env.dir.path());
        let (file, line, column) = case.at;
        let location = match column {
            Some(c) => format!("{file}:{line}:{c}: "),
            None => format!("{file}:{line}:"),
        };
        let verbs: &[&[&str]] = &[
            &["validate"],
            &["validate", "-o", "json"],
            &["issue"],
            &["issue", "-o", "json"],
            &["issue", "--dry-run"],
            &["status", "-o", "json"],
            &["export", "ca:root", "--out", "r.pem"],
            &["notify"],
            &["notify", "--dry-run", "-o", "json"],
        ];
        for verb in verbs {
            let mut args = vec!["--plan", "plan.toml"];
            args.extend_from_slice(verb);
            let run = env.run(&args);
            assert_eq!(
                run.code, 2,
                "{}: {verb:?} must exit 2\nplan:\n{text}\nstderr: {}",
                case.what, run.stderr
            );
            assert!(
                run.stderr.contains(&location),
                "{}: {verb:?} wanted `{location}` in: {}\nplan:\n{text}",
                case.what,
                run.stderr
            );
            assert!(
                run.stderr.contains(case.word),
                "{}: wanted `{}` in {}",
                case.what,
                case.word,
                run.stderr
            );
            if verb.contains(&"json") {
                // A script gets the error as the one document, never a report.
                let doc = run.json();
                assert_eq!(doc["error"]["exit_code"], 2, "{}: {verb:?}: {doc}", case.what);
                let message = doc["error"]["message"].as_str().unwrap_or_default();
                assert!(message.starts_with(&location), "{}: {verb:?}: {doc}", case.what);
            } else {
                assert!(
                    run.stdout.is_empty(),
                    "{}: {verb:?} printed a report for a broken plan: {}",
                    case.what,
                    run.stdout
                );
            }
            assert!(!run.stderr.contains("panicked"), "{}: {}", case.what, run.stderr);
        }
        assert!(
            snapshot(env.dir.path()) == before,
            "{}: a refused command changed the folder",
            case.what
        );
    }
}

#[test]
fn a_plan_that_cannot_be_read_is_named_and_touches_nothing() {
    let env = TestEnv::new();
    for args in [
        &["--plan", "absent.toml", "validate"][..],
        &["--plan", "absent.toml", "issue"],
        &["--plan", "absent.toml", "status", "-o", "json"],
        &["issue"], // the default certroll.toml
    ] {
        let run = env.run(args).code(2);
        let name = if args.len() > 2 {
            "absent.toml"
        } else {
            "certroll.toml"
        };
        assert!(run.stderr.contains(name), "{args:?}: {}", run.stderr);
        if args.contains(&"json") {
            let message = run.json()["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            assert!(message.contains(name), "{args:?}: {}", run.stdout);
        } else {
            assert!(run.stdout.is_empty(), "{args:?}: {}", run.stdout);
        }
    }
    std::fs::create_dir(env.path("a-dir.toml")).unwrap();
    env.run(&["--plan", "a-dir.toml", "validate"]).code(2);
    env.write("empty.toml", "");
    let run = env.run(&["--plan", "empty.toml", "validate"]).code(2);
    assert!(run.stderr.contains("version"), "{}", run.stderr);
    assert_eq!(
        snapshot(env.dir.path()).len(),
        2,
        "only the two files this test made"
    );
}

#[test]
fn the_plan_can_come_from_the_environment() {
    let env = TestEnv::new();
    env.write("elsewhere.toml", BASE);
    let out = env
        .cmd()
        .args(["validate", "-o", "json"])
        .env("CERTROLL_PLAN", "elsewhere.toml")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], true);
    assert!(v["plan"].as_str().unwrap().ends_with("elsewhere.toml"));
}

#[test]
fn issue_and_status_answer_the_same_targets() {
    let env = TestEnv::new();
    env.quickstart();
    let dry = env
        .run(&[
            "--plan",
            "plan.toml",
            "issue",
            "--dry-run",
            "group:sensors",
            "-o",
            "json",
        ])
        .ok()
        .json();
    let targets: BTreeSet<&str> = dry["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["target"].as_str().unwrap())
        .collect();
    assert_eq!(
        targets,
        BTreeSet::from(["ca:root", "ca:factory", "group:sensors"]),
        "a group needs its CA chain and nothing of the gateway"
    );
    env.run(&["--plan", "plan.toml", "issue", "enrollment:gateway-01"])
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
    let devices = s["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 1, "{s}");
    assert_eq!(devices[0]["id"], "gateway-01");
    assert_eq!(devices[0]["registration"]["status"], "assigned");
    let all = env
        .run(&["--plan", "plan.toml", "status", "-o", "json"])
        .ok()
        .json();
    let issued = all["devices"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| !d["installed"].is_null())
        .count();
    assert_eq!(issued, 1, "only the gateway was issued");
    for bad in [
        "device:nope",
        "group:nope",
        "ca:nope",
        "enrollment:nope",
        "nope",
        "device:",
    ] {
        let run = env.run(&["--plan", "plan.toml", "status", bad]).code(2);
        assert!(run.stdout.is_empty(), "{bad}: {}", run.stdout);
    }
}
