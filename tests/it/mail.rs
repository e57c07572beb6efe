//! Mail and hooks: a real SMTP server (aiosmtpd, `tests/support/smtp_sink.py`) on loopback
//! receives what certroll sends, exactly when a trigger fires and never twice; undelivered
//! notices stay owed and go out with the next run; the hook reads JSON on stdin.
//!
//! The server needs a Python with aiosmtpd: `CERTROLL_TEST_PYTHON`, or `target/ci-venv` as
//! `.ci/run` makes it (`python3 -m venv target/ci-venv && target/ci-venv/bin/pip install
//! aiosmtpd`). Without one these tests fail (never skipped as passed).

use crate::util::*;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The Python that has aiosmtpd. Without one the test fails, naming the command that installs
/// it: a mail test that cannot run is never reported as passed.
pub(crate) fn python() -> PathBuf {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ci-venv/bin/python");
    let python = std::env::var_os("CERTROLL_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or(venv);
    let has_aiosmtpd = Command::new(&python)
        .args(["-c", "import aiosmtpd"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        has_aiosmtpd,
        "the mail tests need a Python with aiosmtpd ({} has none): set CERTROLL_TEST_PYTHON, or \
         run `python3 -m venv target/ci-venv && target/ci-venv/bin/pip install aiosmtpd`",
        python.display()
    );
    python
}

/// A running SMTP sink; killed on drop.
pub(crate) struct Sink {
    child: Child,
    pub(crate) port: u16,
    dir: PathBuf,
}

impl Sink {
    pub(crate) fn start(python: &Path, dir: &Path, port: Option<u16>, auth: Option<&str>) -> Sink {
        Sink::start_with(python, dir, port, auth, &[])
    }

    fn start_with(python: &Path, dir: &Path, port: Option<u16>, auth: Option<&str>, reject: &[&str]) -> Sink {
        let extra: Vec<String> = reject
            .iter()
            .flat_map(|a| ["--reject".to_string(), a.to_string()])
            .collect();
        Sink::start_args(python, dir, port, auth, &extra)
    }

    fn start_args(
        python: &Path,
        dir: &Path,
        port: Option<u16>,
        auth: Option<&str>,
        extra: &[String],
    ) -> Sink {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/smtp_sink.py");
        let mut cmd = Command::new(python);
        cmd.arg(script).arg(dir);
        if let Some(port) = port {
            cmd.args(["--port", &port.to_string()]);
        }
        if let Some(auth) = auth {
            cmd.args(["--auth", auth]);
        }
        cmd.args(extra);
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the SMTP sink");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the SMTP sink did not start within 20 s");
        let port = line
            .trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("the SMTP sink said `{line}`"));
        Sink {
            child,
            port,
            dir: dir.to_path_buf(),
        }
    }

    /// Every message received so far, in order of arrival.
    pub(crate) fn messages(&self) -> Vec<String> {
        messages(&self.dir)
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn messages(dir: &Path) -> Vec<String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "eml"));
    files.sort();
    files
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect()
}

/// The value of a header of a received message.
pub(crate) fn header<'m>(message: &'m str, name: &str) -> Vec<&'m str> {
    message
        .lines()
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(": ")))
        .collect()
}

/// A root CA, two sensors in a group and a gateway. Devices live a year (2026-11-23 ..
/// 2027-11-23): email-contacts at 80% (2027-09-11), auto-renew 30 days before expiry.
fn plan(port: u16, extra: &str) -> String {
    format!(
        r#"version = 1

[contacts]
emails = ["pki-oncall@example.com", "fleet@example.com"]

[mail]
smtp_host = "127.0.0.1"
smtp_port = {port}
tls = "none"
from = "certroll <certroll@example.com>"
{extra}
[policies.device]
key = {{ type = "EC", curve = "P-256" }}
validity_days = 365
lifetime_actions = [
  {{ days_before_expiry = 30, action = "auto-renew" }},
  {{ lifetime_percentage = 80, action = "email-contacts" }},
]

[policies.ca]
key = {{ type = "EC", curve = "P-256", exportable = false }}
validity_days = 3650
lifetime_actions = [{{ days_before_expiry = 180, action = "email-contacts" }}]

[ca.root]
subject = "CN=Mail Test Root"
policy = "ca"

[groups.sensors]
signing_ca = "root"
hub = "hub"
device_policy = "device"
devices = {{ prefix = "sensor-", count = 2 }}

[enrollments.gateway-01]
issuer = "root"
policy = "device"
hub = "hub"
"#
    )
}

fn at(env: &TestEnv, now: &str, args: &[&str]) -> Run {
    let mut full = vec!["--plan", "plan.toml", "--now", now];
    full.extend_from_slice(args);
    env.run(&full)
}

/// A free loopback port with nothing listening on it: a sink started and stopped.
fn dead_port(python: &Path, dir: &Path) -> u16 {
    let sink = Sink::start(python, dir, None, None);
    sink.port
}

const FIRED: &str = "2027-09-20T00:00:00Z";

#[test]
fn mail_arrives_once_per_contact_exactly_when_the_trigger_fires() {
    let py = python();
    let env = TestEnv::new();
    let sink = Sink::start(&py, &env.path("inbox"), None, None);
    env.write("plan.toml", &plan(sink.port, ""));

    at(&env, NOW, &["issue"]).ok();
    at(&env, NOW, &["notify"]).ok();
    at(&env, "2027-09-10T00:00:00Z", &["notify"]).ok();
    assert!(sink.messages().is_empty(), "nothing has fired yet");

    // The dry run lists what would go, and sends and records nothing.
    let dry = at(&env, FIRED, &["notify", "--dry-run", "-o", "json"])
        .ok()
        .json();
    assert_eq!(dry["queued"], 3, "{dry}");
    assert_eq!(dry["deliveries"][0]["outcome"], "would-send");
    // Neither does a dry run of a mutating verb, nor `check`.
    at(&env, FIRED, &["roll-secondary", "device:gateway-01", "--dry-run"]).ok();
    at(&env, FIRED, &["check"]).code(1);
    assert!(sink.messages().is_empty(), "dry runs and check send nothing");

    let run = at(&env, FIRED, &["notify", "-o", "json"]).ok().json();
    assert_eq!(run["queued"], 3, "{run}");
    assert_eq!(run["owed_mail"], 0, "{run}");
    let mail = sink.messages();
    assert_eq!(mail.len(), 2, "one mail per contact");
    let mut to: Vec<&str> = mail.iter().flat_map(|m| header(m, "X-Envelope-To")).collect();
    to.sort();
    assert_eq!(to, ["fleet@example.com", "pki-oncall@example.com"]);
    for m in &mail {
        assert_eq!(
            header(m, "Subject"),
            ["certroll: 3 certificates need attention"],
            "{m}"
        );
        assert_eq!(header(m, "X-Envelope-From"), ["certroll@example.com"]);
        for name in [
            "device:gateway-01",
            "device:sensor-1",
            "device:sensor-2",
            "lifetime_percentage = 80",
        ] {
            assert!(m.contains(name), "{name} missing from:\n{m}");
        }
        assert!(!m.contains("ca:root"), "the CA's action has not fired:\n{m}");
        assert!(m.contains("expires 2027-11-23T00:00:00Z"), "{m}");
    }

    // Again, and later in the year: nothing new fires, nothing is sent twice.
    let again = at(&env, FIRED, &["notify", "-o", "json"]).ok().json();
    assert_eq!(
        (
            again["queued"].as_u64(),
            again["deliveries"].as_array().map(Vec::len)
        ),
        (Some(0), Some(0))
    );
    at(&env, "2027-11-01T00:00:00Z", &["notify"]).ok();
    at(&env, "2027-12-01T00:00:00Z", &["reprovision"]);
    assert_eq!(sink.messages().len(), 2, "never twice");

    // Ten years on, the root's own action (180 days before its expiry) fires: one more mail each.
    at(&env, "2036-06-01T00:00:00Z", &["notify"]).ok();
    let mail = sink.messages();
    assert_eq!(mail.len(), 4);
    assert_eq!(
        header(&mail[3], "Subject"),
        ["certroll: 1 certificate needs attention"]
    );
    assert!(
        mail[3].contains("ca:root") && mail[3].contains("days_before_expiry = 180"),
        "{}",
        mail[3]
    );
}

#[test]
fn undelivered_mail_stays_owed_and_the_next_run_sends_it() {
    let py = python();
    let env = TestEnv::new();
    let inbox = env.path("inbox");
    let port = dead_port(&py, &inbox);
    env.write("plan.toml", &plan(port, ""));
    at(&env, NOW, &["issue"]).ok();

    // A roll while the server is down: the roll is done, the renewal mail is owed, exit 1.
    let roll_at = "2027-06-01T00:00:00Z";
    let run = at(
        &env,
        roll_at,
        &["roll-secondary", "device:gateway-01", "-o", "json"],
    )
    .code(1);
    assert_eq!(run.json()["devices"][0]["outcome"], "rolled", "{}", run.stdout);
    assert!(
        run.stderr.contains(&format!("127.0.0.1:{port}")),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("not delivered"), "{}", run.stderr);
    assert!(run.stderr.contains("next certroll run"), "{}", run.stderr);
    let run = at(&env, roll_at, &["notify"]).code(1);
    assert!(run.stderr.contains("fleet@example.com"), "{}", run.stderr);

    let sink = Sink::start(&py, &inbox, Some(port), None);
    let run = at(&env, roll_at, &["notify", "-o", "json"]).ok().json();
    assert_eq!(run["queued"], 0, "queued once, by the roll: {run}");
    let mail = sink.messages();
    assert_eq!(mail.len(), 2, "the owed mail, once per contact");
    for m in &mail {
        assert_eq!(header(m, "Subject"), ["certroll: 1 certificate renewed"], "{m}");
        assert!(
            m.contains("device:gateway-01") && m.contains("renewed at 2027-06-01T00:00:00Z"),
            "{m}"
        );
    }
    at(&env, roll_at, &["notify"]).ok();
    assert_eq!(sink.messages().len(), 2, "not twice");

    // With the server up, a roll mails its renewal itself.
    at(&env, "2027-07-01T00:00:00Z", &["roll-primary", "device:sensor-1"]).ok();
    let mail = sink.messages();
    assert_eq!(mail.len(), 4);
    assert!(mail[3].contains("device:sensor-1"), "{}", mail[3]);
}

#[test]
fn a_contact_whose_mail_failed_is_mailed_again_and_only_that_contact() {
    let py = python();
    let env = TestEnv::new();
    let inbox = env.path("inbox");
    let sink = Sink::start_with(&py, &inbox, None, None, &["fleet@example.com"]);
    let port = sink.port;
    env.write("plan.toml", &plan(port, ""));
    at(&env, NOW, &["issue"]).ok();

    let run = at(&env, FIRED, &["notify", "-o", "json"]).code(1);
    let report = run.json();
    let outcomes: Vec<(&str, &str)> = report["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["to"].as_str().unwrap(), d["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("pki-oncall@example.com", "sent"),
            ("fleet@example.com", "failed")
        ]
    );
    assert!(run.stderr.contains("550"), "{}", run.stderr);
    assert_eq!(report["owed_mail"], 3);
    assert_eq!(sink.messages().len(), 1);
    drop(sink);

    let sink = Sink::start(&py, &inbox, Some(port), None);
    at(&env, FIRED, &["notify"]).ok();
    let mail = sink.messages();
    assert_eq!(mail.len(), 2, "one more mail");
    assert_eq!(header(&mail[1], "X-Envelope-To"), ["fleet@example.com"]);
    assert!(mail[1].contains("3 certificates need attention"), "{}", mail[1]);
    at(&env, FIRED, &["notify"]).ok();
    assert_eq!(sink.messages().len(), 2);
}

/// A CA and a certificate for 127.0.0.1 signed by it, made with the openssl CLI in `dir`.
fn smtp_server_certificate(dir: &Path) {
    let run = |args: &[&str]| {
        let out = openssl_in(dir, args);
        assert_eq!(out.code, 0, "openssl {args:?}: {}", out.stderr);
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    let mut ca = vec![
        "req",
        "-x509",
        "-keyout",
        "smtp-ca.key",
        "-out",
        "smtp-ca.pem",
        "-days",
        "30",
    ];
    ca.extend(ec);
    ca.extend([
        "-subj",
        "/CN=SMTP Test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
    ]);
    ca.extend(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
    run(&ca);
    let mut csr = vec![
        "req",
        "-keyout",
        "smtp.key",
        "-out",
        "smtp.csr",
        "-subj",
        "/CN=127.0.0.1",
    ];
    csr.extend(ec);
    run(&csr);
    std::fs::write(
        dir.join("smtp.ext"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "smtp.csr",
        "-CA",
        "smtp-ca.pem",
        "-CAkey",
        "smtp-ca.key",
        "-CAcreateserial",
        "-out",
        "smtp.pem",
        "-days",
        "7",
        "-extfile",
        "smtp.ext",
    ]);
}

#[test]
fn starttls_and_tls_verify_the_server_against_the_system_roots_and_ca_file() {
    let py = python();
    for mode in ["starttls", "tls"] {
        let env = TestEnv::new();
        smtp_server_certificate(env.dir.path());
        let inbox = env.path("inbox");
        let tls_args: Vec<String> = ["--tls", mode, "--cert", "smtp.pem", "--key", "smtp.key"]
            .iter()
            .map(|a| a.to_string())
            .collect();
        let tls_args: Vec<String> = tls_args
            .into_iter()
            .map(|a| {
                if a.starts_with("smtp.") {
                    env.path(&a).display().to_string()
                } else {
                    a
                }
            })
            .collect();
        let sink = Sink::start_args(&py, &inbox, None, None, &tls_args);
        let with = |tls: &str| plan(sink.port, "").replace("tls = \"none\"", tls);
        env.write("plan.toml", &with(&format!("tls = \"{mode}\"")));
        at(&env, NOW, &["issue"]).ok();

        // Signed by a CA the system does not trust: refused, nothing delivered, owed.
        let run = at(&env, FIRED, &["notify"]).code(1);
        assert!(
            run.stderr.to_lowercase().contains("certificate"),
            "{mode}: {}",
            run.stderr
        );
        assert!(sink.messages().is_empty(), "{mode}");

        env.write(
            "plan.toml",
            &with(&format!("tls = \"{mode}\"\nca_file = \"smtp-ca.pem\"")),
        );
        at(&env, FIRED, &["notify"]).ok();
        let mail = sink.messages();
        assert_eq!(mail.len(), 2, "{mode}");
        assert!(
            mail[0].contains("3 certificates need attention"),
            "{mode}: {}",
            mail[0]
        );
    }

    // STARTTLS is required: a server that does not offer it gets nothing.
    let env = TestEnv::new();
    let sink = Sink::start(&py, &env.path("inbox"), None, None);
    env.write(
        "plan.toml",
        &plan(sink.port, "").replace("tls = \"none\"", "tls = \"starttls\""),
    );
    at(&env, NOW, &["issue"]).ok();
    let run = at(&env, FIRED, &["notify"]).code(1);
    assert!(run.stderr.contains("(starttls)"), "{}", run.stderr);
    assert!(sink.messages().is_empty());
}

#[test]
fn notices_recorded_before_mail_was_configured_are_not_sent_later() {
    let py = python();
    let env = TestEnv::new();
    let sink = Sink::start(&py, &env.path("inbox"), None, None);
    let with_mail = plan(sink.port, "");
    let start = with_mail.find("[mail]").unwrap();
    let end = with_mail.find("[policies.device]").unwrap();
    let without_mail = format!("{}{}", &with_mail[..start], &with_mail[end..]);
    env.write("plan.toml", &without_mail);
    at(&env, NOW, &["issue"]).ok();
    let run = at(&env, FIRED, &["notify", "-o", "json"]).ok().json();
    assert_eq!(
        (run["queued"].as_u64(), run["mail_configured"].as_bool()),
        (Some(3), Some(false)),
        "{run}"
    );
    assert_eq!(run["deliveries"], serde_json::json!([]));

    env.write("plan.toml", &with_mail);
    let run = at(&env, FIRED, &["notify", "-o", "json"]).ok().json();
    assert_eq!(
        (run["queued"].as_u64(), run["owed_mail"].as_u64()),
        (Some(0), Some(0)),
        "{run}"
    );
    assert!(sink.messages().is_empty(), "no backlog");
    // What happens from now on is mailed.
    at(
        &env,
        "2027-09-21T00:00:00Z",
        &["roll-secondary", "device:gateway-01"],
    )
    .ok();
    let mail = sink.messages();
    assert_eq!(mail.len(), 2);
    assert_eq!(header(&mail[0], "Subject"), ["certroll: 1 certificate renewed"]);
}

#[test]
fn the_hook_reads_the_events_as_json_and_a_failing_hook_keeps_them_owed() {
    let py = python();
    let env = TestEnv::new();
    let sink = Sink::start(&py, &env.path("inbox"), None, None);
    let hook =
        |script: &str| format!("[hooks]\ncommand = [\"/bin/sh\", \"-c\", \"{script}\"]\ntimeout_secs = 2\n");
    env.write(
        "plan.toml",
        &plan(
            sink.port,
            &hook("cat > hook.json; echo paging is down >&2; exit 3"),
        ),
    );
    at(&env, NOW, &["issue"]).ok();

    let run = at(&env, FIRED, &["notify"]).code(1);
    assert!(
        run.stderr.contains("hook `/bin/sh`") && run.stderr.contains("paging is down"),
        "{}",
        run.stderr
    );
    assert_eq!(sink.messages().len(), 2, "the mail went; only the hook failed");

    // A hook that hangs is killed at its timeout and counts as failed.
    env.write("plan.toml", &plan(sink.port, &hook("sleep 30")));
    let started = std::time::Instant::now();
    let run = at(&env, FIRED, &["notify"]).code(1);
    assert!(run.stderr.contains("timeout"), "{}", run.stderr);
    assert!(started.elapsed() < Duration::from_secs(20));

    env.write("plan.toml", &plan(sink.port, &hook("cat > hook.json")));
    at(&env, FIRED, &["notify"]).ok();
    assert_eq!(sink.messages().len(), 2, "the mail is not sent again");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(env.path("hook.json")).unwrap()).unwrap();
    assert_eq!(doc["source"], "certroll");
    let events = doc["events"].as_array().unwrap();
    assert_eq!(events.len(), 3, "{doc}");
    assert!(
        events
            .iter()
            .all(|e| e["kind"] == "email-contacts" && e["trigger"] == "lifetime_percentage = 80")
    );
    assert_eq!(events[0]["not_after"], "2027-11-23T00:00:00Z");

    std::fs::remove_file(env.path("hook.json")).unwrap();
    at(&env, FIRED, &["notify"]).ok();
    assert!(
        !env.path("hook.json").exists(),
        "delivered events are not handed over again"
    );
}

#[test]
fn the_smtp_password_comes_from_the_environment_and_is_never_shown() {
    let py = python();
    let env = TestEnv::new();
    let password = "pw-7f3a9c1e-never-print";
    let sink = Sink::start(
        &py,
        &env.path("inbox"),
        None,
        Some(&format!("certroll:{password}")),
    );
    let login = "username = \"certroll\"\npassword_env = \"TEST_SMTP_PW\"\n\
                 [hooks]\ncommand = [\"/bin/sh\", \"-c\", \"env > hook-env.txt\"]\n";
    env.write("plan.toml", &plan(sink.port, login));
    let run_with = |pw: &str, now: &str, args: &[&str]| {
        let mut full = vec!["--plan", "plan.toml", "--now", now, "-vv"];
        full.extend_from_slice(args);
        let out = env.cmd().args(&full).env("TEST_SMTP_PW", pw).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        )
    };
    // Without the variable, `notify` refuses (bad input, nothing changed); a mutating verb does
    // its work and says mail cannot be sent (exit 1).
    let run = at(&env, NOW, &["notify"]).code(2);
    assert!(run.stderr.contains("TEST_SMTP_PW"), "{}", run.stderr);
    let run = at(&env, NOW, &["issue"]).code(1);
    assert!(
        run.stderr.contains("mail not sent") && run.stderr.contains("TEST_SMTP_PW"),
        "{}",
        run.stderr
    );
    at(&env, NOW, &["status"]).ok();

    let (code, out) = run_with(password, NOW, &["issue"]);
    assert_eq!(code, 0, "{out}");
    let wrong = "wrong-3b8d-password";
    let (code, out) = run_with(wrong, FIRED, &["notify", "-o", "json"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("535") || out.contains("uthentication"), "{out}");
    assert!(!out.contains(wrong) && !out.contains(password), "{out}");
    assert!(sink.messages().is_empty());

    let (code, out) = run_with(password, FIRED, &["notify", "-o", "json"]);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains(password), "{out}");
    assert_eq!(sink.messages().len(), 2);
    for m in sink.messages() {
        assert!(!m.contains(password), "{m}");
    }
    // The hook ran, without the password in its environment.
    let hook_env = std::fs::read_to_string(env.path("hook-env.txt")).unwrap();
    assert!(hook_env.contains("PATH="), "{hook_env}");
    assert!(
        !hook_env.contains(password) && !hook_env.contains("TEST_SMTP_PW"),
        "{hook_env}"
    );
}

#[test]
fn bad_mail_settings_stop_notify_but_never_the_work() {
    let env = TestEnv::new();
    env.write("plan.toml", &plan(2525, ""));
    for (var, value, word) in [
        ("CERTROLL_SMTP_TLS", "sometimes", "CERTROLL_SMTP_TLS"),
        ("CERTROLL_SMTP_PORT", "99999", "CERTROLL_SMTP_PORT"),
        ("CERTROLL_SMTP_HOST", "smtp.example.com", "in clear"),
    ] {
        let run = |args: &[&str]| {
            let out = env
                .cmd()
                .args(["--plan", "plan.toml"])
                .args(args)
                .env(var, value)
                .output()
                .unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        };
        let (code, stderr) = run(&["notify"]);
        assert_eq!(code, Some(2), "{var}: {stderr}");
        assert!(stderr.contains(word), "{var}: {stderr}");
        assert!(!env.store_dir().exists(), "{var}: notify changed something");
    }
    // An incident runbook is never blocked by mail: the revoke happens, mail is reported owed.
    env.run(&["--plan", "plan.toml", "issue"]).ok();
    let out = env
        .cmd()
        .args([
            "--plan",
            "plan.toml",
            "revoke",
            "device:sensor-1",
            "--reason",
            "key-compromise",
            "--yes",
        ])
        .env("CERTROLL_SMTP_TLS", "sometimes")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("mail not sent") && stderr.contains("CERTROLL_SMTP_TLS"),
        "{stderr}"
    );
    let status = env
        .run(&["--plan", "plan.toml", "status", "-o", "json", "device:sensor-1"])
        .ok()
        .json();
    assert_eq!(
        status["devices"][0]["hub_identity"]["status"], "disabled",
        "{status}"
    );
}

#[test]
fn contacts_set_in_the_vault_take_the_place_of_the_plans() {
    let py = python();
    let env = TestEnv::new();
    let sink = Sink::start(&py, &env.path("inbox"), None, None);
    env.write("plan.toml", &plan(sink.port, ""));
    at(&env, NOW, &["issue"]).ok();
    at(
        &env,
        NOW,
        &["vault", "contacts", "set", "night-shift@example.com"],
    )
    .ok();
    at(&env, FIRED, &["notify"]).ok();
    let mail = sink.messages();
    let to: Vec<&str> = mail.iter().flat_map(|m| header(m, "X-Envelope-To")).collect();
    assert_eq!(
        to,
        ["night-shift@example.com"],
        "the vault's contacts, not the plan's"
    );
}
