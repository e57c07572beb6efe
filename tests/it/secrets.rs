//! Private keys never show up where they should not: not in anything certroll prints (human or
//! JSON), not in clear in the store file or its WAL, and a missing store key is never replaced
//! by a fresh one behind the user's back.

use crate::util::*;
use std::collections::HashSet;

/// The label of a PEM key block, built so that no key header literal sits in the source.
fn key_label() -> String {
    ["PRIVATE", "KEY"].join(" ")
}

/// Decodes standard base64 (the body of a PEM block); panics on anything else.
fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=') {
        let v = ALPHABET
            .iter()
            .position(|&a| a == c)
            .unwrap_or_else(|| panic!("not base64: {:?}", c as char)) as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// The base64 lines of the key block of a PEM file written by `export --with-key`.
fn key_block_lines(pem: &str) -> Vec<String> {
    let begin = format!("-----BEGIN {}-----", key_label());
    let end = format!("-----END {}-----", key_label());
    let start = pem
        .find(&begin)
        .unwrap_or_else(|| panic!("no key block in:\n{pem}"));
    let body = &pem[start + begin.len()..];
    let body = &body[..body.find(&end).expect("key block is closed")];
    body.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// The secret numbers of a key as `openssl pkey -text` prints them (EC `priv`, RSA
/// `privateExponent`, `prime1`, `prime2`), leading zero bytes dropped.
fn secret_numbers(env: &TestEnv, key_pem: &str) -> Vec<Vec<u8>> {
    let text = env
        .openssl(&["pkey", "-in", key_pem, "-noout", "-text"])
        .ok()
        .stdout;
    let wanted = ["priv:", "privateExponent:", "prime1:", "prime2:"];
    let mut numbers = Vec::new();
    let mut current: Option<String> = None;
    let flush = |hex: Option<String>, numbers: &mut Vec<Vec<u8>>| {
        if let Some(hex) = hex {
            let mut bytes: Vec<u8> = (0..hex.len() / 2)
                .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
                .collect();
            while bytes.first() == Some(&0) {
                bytes.remove(0);
            }
            numbers.push(bytes);
        }
    };
    for line in text.lines() {
        if line.starts_with(char::is_whitespace) {
            if let Some(hex) = current.as_mut() {
                hex.extend(line.chars().filter(char::is_ascii_hexdigit));
            }
        } else {
            flush(current.take(), &mut numbers);
            if wanted.contains(&line.trim()) {
                current = Some(String::new());
            }
        }
    }
    flush(current.take(), &mut numbers);
    assert!(!numbers.is_empty(), "no secret numbers in:\n{text}");
    assert!(numbers.iter().all(|n| n.len() >= 32), "{numbers:?}");
    numbers
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// 16-byte windows of each secret: finding any one of them means the secret leaked.
fn windows(secrets: &[Vec<u8>]) -> HashSet<Vec<u8>> {
    secrets
        .iter()
        .flat_map(|s| s.windows(16).map(<[u8]>::to_vec))
        .collect()
}

/// How `text` (something certroll printed) gives the key away, if it does.
fn text_leak(text: &str, der: &[u8], b64_lines: &[String], secrets: &[Vec<u8>]) -> Option<&'static str> {
    if text.contains(&key_label()) {
        return Some("a key block");
    }
    let squeezed: String = text
        .chars()
        .filter(|c| !c.is_whitespace() && *c != ':')
        .collect::<String>()
        .to_uppercase();
    if squeezed.contains(&hex(der)) {
        return Some("the key as hex");
    }
    if windows(secrets).iter().any(|w| squeezed.contains(&hex(w))) {
        return Some("part of a private number as hex");
    }
    if b64_lines
        .iter()
        .filter(|l| l.len() >= 40)
        .any(|l| text.contains(l.as_str()))
    {
        return Some("the key's base64");
    }
    None
}

/// How `bytes` (a file) hold the key in clear, if they do.
fn bytes_leak(bytes: &[u8], der: &[u8], b64_lines: &[String], secrets: &[Vec<u8>]) -> Option<&'static str> {
    if bytes.windows(der.len()).any(|w| w == der) {
        return Some("the key's DER");
    }
    let set = windows(secrets);
    if bytes.windows(16).any(|w| set.contains(w)) {
        return Some("bytes of a private number");
    }
    if b64_lines
        .iter()
        .filter(|l| l.len() >= 40)
        .any(|l| bytes.windows(l.len()).any(|w| w == l.as_bytes()))
    {
        return Some("the key's base64");
    }
    None
}

#[test]
fn no_trace_of_a_private_key_in_output_or_in_the_store_files() {
    let env = TestEnv::new();
    env.write("plan.toml", &mixed_plan(3, 3));
    let p = ["--plan", "plan.toml"];
    let with = |rest: &[&str]| -> Vec<String> { p.iter().chain(rest).map(|s| s.to_string()).collect() };
    // Everything a user sees, in both output formats, before and after the keys exist.
    let mut printed: Vec<(String, String)> = Vec::new();
    let mut record = |args: Vec<String>, run: Run| {
        printed.push((format!("{args:?}"), run.stdout + &run.stderr));
    };
    for args in [
        with(&["issue", "--dry-run"]),
        with(&["issue", "-o", "json"]),
        with(&["issue"]),
        with(&["-v", "issue", "-o", "json"]),
        with(&["status"]),
        with(&["status", "-o", "json"]),
        with(&["-v", "status", "device:gw-rsa", "device:meter-1"]),
        with(&["validate", "-o", "json"]),
        with(&["export", "device:gw-rsa", "--out", "gw-public.pem"]),
        with(&["export", "device:meter-1", "--out", "m-public.pem", "-o", "json"]),
        with(&["-v", "export", "ca:line-a", "--out", "line-a.pem"]),
    ] {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = env.run(&refs).ok();
        record(args, run);
    }
    // The export with the key reports that it wrote one, but does not print it.
    let args = with(&["export", "device:gw-rsa", "--with-key", "--out", "gw.pem"]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = env.run(&refs).ok();
    record(args, run);
    let args = with(&[
        "export",
        "device:meter-1",
        "--with-key",
        "--out",
        "m.pem",
        "-o",
        "json",
    ]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = env.run(&refs).ok();
    assert_eq!(run.json()["includes_key"], true);
    record(args, run);

    for public in ["gw-public.pem", "m-public.pem", "line-a.pem"] {
        let text = std::fs::read_to_string(env.path(public)).unwrap();
        assert!(!text.contains(&key_label()), "{public} holds a key");
    }

    for (file, kind) in [("gw.pem", "RSA 2048"), ("m.pem", "EC P-256")] {
        let pem = std::fs::read_to_string(env.path(file)).unwrap();
        let lines = key_block_lines(&pem);
        let der = base64_decode(&lines.concat());
        assert!(der.len() > 100, "{file}: {} bytes of key", der.len());
        let secrets = secret_numbers(&env, file);
        // The detectors find the key where it is, so a clean answer below means something.
        assert!(text_leak(&hex(&der).to_lowercase(), &der, &lines, &secrets).is_some());
        let scalar = &secrets[0][4..24];
        let colons: Vec<String> = scalar.iter().map(|b| format!("{b:02x}")).collect();
        assert!(text_leak(&colons.join(":"), &der, &lines, &secrets).is_some());
        assert!(text_leak(&lines[1], &der, &lines, &secrets).is_some());
        let mut padded = b"SQLite page".to_vec();
        padded.extend_from_slice(&der);
        assert!(bytes_leak(&padded, &der, &lines, &secrets).is_some());
        assert!(bytes_leak(&[&[7u8; 9][..], scalar].concat(), &der, &lines, &secrets).is_some());

        for (what, text) in &printed {
            if let Some(how) = text_leak(text, &der, &lines, &secrets) {
                panic!("{what} printed {how} of the {kind} key");
            }
        }
        // The store file, its WAL and shared memory, the key file, anything else in the folder.
        for entry in std::fs::read_dir(env.store_dir()).unwrap() {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            if let Some(how) = bytes_leak(&bytes, &der, &lines, &secrets) {
                panic!("{} holds {how} of the {kind} key in clear", path.display());
            }
        }
    }
}

#[test]
fn key_files_written_by_certroll_are_owner_only() {
    let env = TestEnv::new();
    env.write("plan.toml", &mixed_plan(2, 2));
    env.run(&["--plan", "plan.toml", "issue"]).ok();
    let store = env.store_dir();
    assert_eq!(mode(&store.join("state.db")), 0o600);
    assert_eq!(mode(&store.join("state.db.key")), 0o600);
    for f in ["state.db-wal", "state.db-shm"] {
        if store.join(f).exists() {
            assert_eq!(mode(&store.join(f)), 0o600, "{f} holds store data too");
        }
    }

    env.run(&[
        "--plan",
        "plan.toml",
        "export",
        "device:pump-1",
        "--with-key",
        "--out",
        "k.pem",
    ])
    .ok();
    assert_eq!(mode(&env.path("k.pem")), 0o600);

    // Overwriting a world-readable file with a key makes it private, too.
    env.write("loose.pem", "old");
    std::fs::set_permissions(
        env.path("loose.pem"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    env.run(&[
        "--plan",
        "plan.toml",
        "export",
        "device:pump-2",
        "--with-key",
        "--out",
        "loose.pem",
    ])
    .ok();
    assert_eq!(mode(&env.path("loose.pem")), 0o600);
    let text = std::fs::read_to_string(env.path("loose.pem")).unwrap();
    assert!(text.contains(&key_label()));
}

#[test]
fn a_missing_key_file_stops_every_verb_and_is_never_replaced() {
    let env = TestEnv::new();
    env.quickstart();
    env.run(&["--plan", "plan.toml", "issue"]).ok();
    let key_file = env.store_dir().join("state.db.key");
    let store_file = env.store_dir().join("state.db");
    std::fs::remove_file(&key_file).unwrap();
    let before = std::fs::read(&store_file).unwrap();

    let attempts: &[&[&str]] = &[
        &["status"],
        &["status", "-o", "json"],
        &["status", "device:sensor-01"],
        &["issue"],
        &["issue", "-o", "json"],
        &["issue", "--dry-run"],
        &["export", "device:sensor-01", "--out", "s.pem"],
        &["export", "device:sensor-01", "--with-key", "--out", "s.pem"],
    ];
    for args in attempts {
        let mut full = vec!["--plan", "plan.toml"];
        full.extend_from_slice(args);
        let run = env.run(&full);
        assert!(
            run.code != 0 && run.code != 101,
            "{args:?}: exit {} (want a clean failure)\n{}",
            run.code,
            run.stderr
        );
        assert!(
            run.stderr.contains("state.db.key"),
            "{args:?}: the message must name the key file: {}",
            run.stderr
        );
        assert!(!run.stderr.contains("panicked"), "{args:?}: {}", run.stderr);
        if args.contains(&"json") {
            // Not a partial report: the one error document, naming the key file too.
            let error = &run.json()["error"];
            assert!(
                error["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("state.db.key"),
                "{args:?}: {error}"
            );
        } else {
            assert!(
                run.stdout.trim().is_empty(),
                "{args:?}: no partial report on stdout: {}",
                run.stdout
            );
        }
        assert!(
            !key_file.exists(),
            "{args:?} made a new store key: the sealed keys would no longer open"
        );
        assert!(!env.path("s.pem").exists(), "{args:?} wrote an export");
    }
    assert!(
        std::fs::read(&store_file).unwrap() == before,
        "the store file changed while its key was missing"
    );
}

#[test]
fn a_store_key_from_the_environment_serves_a_whole_fleet() {
    let env = TestEnv::new();
    env.quickstart();
    let key = "0123456789abcdef".repeat(4);
    let with_key = |args: &[&str]| {
        let out = env
            .cmd()
            .args(["--plan", "plan.toml"])
            .args(args)
            .env("CERTROLL_STORE_KEY", &key)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    with_key(&["issue"]);
    assert!(env.store_dir().join("state.db").exists());
    assert!(
        !env.store_dir().join("state.db.key").exists(),
        "with CERTROLL_STORE_KEY no key file is written"
    );
    let status: serde_json::Value = serde_json::from_str(&with_key(&["status", "-o", "json"])).unwrap();
    assert_eq!(status["devices"].as_array().unwrap().len(), 51);

    // The keys sealed under the environment key open again under it, and match their certs.
    with_key(&["export", "device:gateway-01", "--with-key", "--out", "gw.pem"]);
    let from_key = env.openssl(&["pkey", "-in", "gw.pem", "-pubout"]).ok().stdout;
    let from_cert = env
        .openssl(&["x509", "-in", "gw.pem", "-noout", "-pubkey"])
        .ok()
        .stdout;
    assert_eq!(from_key, from_cert);

    // Without the environment key the store is locked, with a message that says how to open it.
    let run = env.run(&["--plan", "plan.toml", "status"]);
    assert!(run.code != 0 && run.code != 101, "exit {}", run.code);
    assert!(run.stderr.contains("CERTROLL_STORE_KEY"), "{}", run.stderr);

    // A malformed environment key is refused before anything is touched.
    let bad = env
        .cmd()
        .args(["--plan", "plan.toml", "issue"])
        .env("CERTROLL_STORE_KEY", "not-hex")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("CERTROLL_STORE_KEY"));
}
