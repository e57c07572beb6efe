//! Failures under `-o json`: exactly one document on stdout, `{"error": {"message", "kind",
//! "exit_code"}}`, with the same text on stderr and the same exit code as without `-o json`; never
//! a second document after a command's own report.

use crate::util::*;
use serde_json::Value;

/// The error document of a failed run: stdout must hold it and nothing else.
fn error_of(run: &Run) -> Value {
    let doc = run.json();
    let keys: Vec<&str> = doc.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["error"], "one member only: {doc}");
    let error = doc["error"].clone();
    let mut fields: Vec<&str> = error.as_object().unwrap().keys().map(String::as_str).collect();
    fields.sort();
    assert_eq!(fields, ["exit_code", "kind", "message"], "{doc}");
    assert_eq!(
        error["exit_code"].as_i64(),
        Some(i64::from(run.code)),
        "the document tells the real exit code: {doc}"
    );
    error
}

#[test]
fn a_broken_plan_gives_every_verb_an_input_error_document_naming_the_file() {
    let env = TestEnv::new();
    env.write("plan.toml", "version = 1\n\n[ca.root]\nsubject = 3\n");
    let verbs: &[&[&str]] = &[
        &["validate"],
        &["issue"],
        &["issue", "--dry-run"],
        &["status"],
        &["roll-secondary", "device:x"],
        &["roll-primary", "--breach", "device:x", "--yes"],
        &["revoke", "device:x", "--reason", "superseded", "--yes"],
        &["reprovision"],
        &["export", "ca:root", "--out", "r.pem"],
        &["notify", "--dry-run"],
        &["vault", "list"],
    ];
    for verb in verbs {
        let mut args = vec!["--plan", "plan.toml"];
        args.extend_from_slice(verb);
        let text = env.run(&args).code(2);
        args.extend_from_slice(&["-o", "json"]);
        let run = env.run(&args).code(2);
        let error = error_of(&run);
        assert_eq!(error["kind"], "input", "{verb:?}");
        let message = error["message"].as_str().unwrap();
        assert!(message.starts_with("plan.toml:4:11: "), "{verb:?}: {message}");
        // stderr is what it always was; the document carries the same message.
        assert_eq!(run.stderr, text.stderr, "{verb:?}");
        assert_eq!(run.stderr.trim_end(), format!("error: {message}"), "{verb:?}");
    }
    assert!(!env.store_dir().exists(), "a broken plan created the store");
}

#[test]
fn check_reports_an_unreadable_plan_as_unknown_in_its_document() {
    let env = TestEnv::new();
    env.write("plan.toml", "version = 1\n\n[ca.root]\nsubject = 3\n");
    let run = env.plan_run(&["check", "-o", "json"]).code(3);
    let error = error_of(&run);
    // Why is still told (a plan to fix); the code is check's own UNKNOWN.
    assert_eq!(error["kind"], "input");
    assert!(
        error["message"].as_str().unwrap().contains("plan.toml:4:11"),
        "{error}"
    );
    assert!(
        run.stderr.starts_with("UNKNOWN: plan.toml:4:11"),
        "{}",
        run.stderr
    );
    // Without -o json, nothing on stdout, as before.
    let text = env.plan_run(&["check"]).code(3);
    assert!(text.stdout.is_empty(), "{}", text.stdout);
}

#[test]
fn a_roll_before_issue_is_an_input_error_document_and_creates_nothing() {
    let env = TestEnv::new();
    env.quickstart();
    for verb in [
        &["roll-secondary", "device:gateway-01"][..],
        &["roll-primary", "group:sensors"],
        &["roll-secondary", "--due"],
    ] {
        let run = env.plan_run(&[verb, &["-o", "json"][..]].concat()).code(2);
        let error = error_of(&run);
        assert_eq!(error["kind"], "input", "{verb:?}");
        let message = error["message"].as_str().unwrap();
        assert!(message.contains("certroll issue"), "{verb:?}: {message}");
        assert!(run.stderr.contains(message), "{verb:?}: {}", run.stderr);
    }
    assert!(!env.store_dir().exists(), "a refused roll created the store");
}

#[test]
fn a_refused_command_line_with_json_asked_for_gets_a_usage_document() {
    let env = TestEnv::new();
    env.quickstart();
    for (args, code) in [
        (&["status", "--frobnicate", "-o", "json"][..], 2),
        (&["-ojson", "status", "--frobnicate"], 2),
        (&["--output=json", "roll-secondary", "devic:x"], 2),
        (&["roll-secondary", "--due", "--breach", "-o", "json"], 2),
        (&["-o", "json"], 2),
        // check keeps monitoring's UNKNOWN for a command line it cannot run.
        (&["check", "--frobnicate", "-o", "json"], 3),
    ] {
        let run = env.plan_run(args).code(code);
        let error = error_of(&run);
        assert_eq!(error["kind"], "usage", "{args:?}");
        assert!(
            !error["message"].as_str().unwrap().starts_with("error:"),
            "{error}"
        );
        assert!(
            run.stderr.starts_with("error: "),
            "{args:?}: clap's text stays: {}",
            run.stderr
        );
    }
    let run = env.plan_run(&["status", "--frobnicate", "-o", "json"]);
    assert!(
        error_of(&run)["message"]
            .as_str()
            .unwrap()
            .contains("--frobnicate")
    );
    // Without -o json (or with an -o value clap refuses) stdout stays empty.
    for args in [
        &["status", "--frobnicate"][..],
        &["-o", "yaml", "status"],
        &["status", "--", "-o", "json"],
    ] {
        let run = env.plan_run(args).code(2);
        assert!(run.stdout.is_empty(), "{args:?}: {}", run.stdout);
    }
    // Help is not an error: the help text, no document.
    let help = env.plan_run(&["status", "--help", "-o", "json"]).ok();
    assert!(help.stdout.contains("Usage"), "{}", help.stdout);
}

#[test]
fn success_and_a_report_that_exits_1_each_print_exactly_their_own_document() {
    let env = TestEnv::new();
    env.quickstart();
    // `json()` parses all of stdout, so a second document after the first would fail it.
    let issued = env.plan_run(&["issue", "-o", "json"]).ok().json();
    assert!(
        issued.get("error").is_none() && issued["steps"].is_array(),
        "{issued}"
    );
    let status = env.plan_run(&["status", "-o", "json"]).ok().json();
    assert!(status.get("error").is_none(), "{status}");
    assert_eq!(status["devices"].as_array().unwrap().len(), 51);
    let check = env.plan_run(&["check", "-o", "json"]).ok().json();
    assert!(check.get("error").is_none(), "{check}");
    // Every sensor is refused once its CA is gone: the report says so and the run exits 1,
    // with no error document added.
    env.plan_run(&["revoke", "ca:root", "--reason", "ca-compromise", "--yes"])
        .ok();
    let run = env.plan_run(&["reprovision", "-o", "json"]).code(1);
    let report = run.json();
    assert!(report.get("error").is_none(), "{report}");
    assert_eq!(report["rejected"], 50, "{report}");
}

#[test]
fn a_status_that_fails_while_streaming_devices_closes_its_one_document_with_the_error() {
    let env = TestEnv::new();
    env.quickstart();
    env.plan_run(&["issue"]).ok();
    // A certificate that no longer parses, in the middle of the device list.
    let db = env.store_dir().join("state.db");
    let out = std::process::Command::new("sqlite3")
        .arg(&db)
        .arg("UPDATE vault_versions SET cert_der = x'3000' WHERE name = 'dev-sensor-20'")
        .output()
        .expect("the sqlite3 CLI must be installed");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let run = env.plan_run(&["status", "-o", "json"]).code(1);
    let doc = run.json();
    let listed: Vec<&str> = doc["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed.len(), 19, "the devices before the broken one: {listed:?}");
    assert_eq!(listed.last(), Some(&"sensor-19"));
    assert_eq!(doc["error"]["kind"], "failed", "{}", doc["error"]);
    assert_eq!(doc["error"]["exit_code"], 1);
    let message = doc["error"]["message"].as_str().unwrap();
    assert!(message.contains("X.509"), "{message}");
    assert!(
        run.stderr.contains(&format!("error: {message}")),
        "{}",
        run.stderr
    );
}

#[test]
fn an_import_error_document_holds_no_key_material() {
    let env = TestEnv::new();
    env.write("plan.toml", "version = 1\n");
    for name in ["a", "b"] {
        openssl_ca(
            &env,
            &format!("{name}-key.pem"),
            &format!("{name}-cert.pem"),
            &format!("/CN={name}"),
            "3650",
            &[],
        );
    }
    let key = std::fs::read_to_string(env.path("b-key.pem")).unwrap();
    // Its base64 lines, without the BEGIN/END labels.
    let key_lines: Vec<&str> = key.lines().filter(|l| !l.starts_with("-----")).collect();
    let cert = std::fs::read_to_string(env.path("a-cert.pem")).unwrap();
    env.write("mismatch.pem", &format!("{cert}{key}"));
    // The key with its body damaged past the first line, so a parser has something to echo.
    let mut damaged = key.clone();
    let second = key_lines[1];
    damaged = damaged.replacen(second, &"A".repeat(second.len()), 1);
    env.write("damaged.pem", &format!("{cert}{damaged}"));

    for file in ["mismatch.pem", "damaged.pem"] {
        let run = env
            .plan_run(&["vault", "import", "x", "--file", file, "-o", "json"])
            .code(2);
        let error = error_of(&run);
        assert_eq!(error["kind"], "input", "{file}: {error}");
        let printed = format!("{}{}", run.stdout, run.stderr);
        assert!(!printed.contains("PRIVATE KEY"), "{file}: {printed}");
        for line in &key_lines {
            assert!(
                !printed.contains(line),
                "{file} printed a line of the key: {printed}"
            );
        }
    }
}
