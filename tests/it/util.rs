//! Test helpers: a temporary work dir, certroll with a clean environment, and openssl.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The instant every test runs at unless it says otherwise.
pub const NOW: &str = "2026-11-23T00:00:00Z";

pub struct TestEnv {
    pub dir: tempfile::TempDir,
}

/// What a command printed and how it exited.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "expected success\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
    pub fn code(self, code: i32) -> Run {
        assert_eq!(
            self.code, code,
            "expected exit {code}\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", self.stdout))
    }
}

fn run_output(out: Output) -> Run {
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

impl TestEnv {
    pub fn new() -> TestEnv {
        TestEnv {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// The quickstart example, copied in as `plan.toml`.
    pub fn quickstart(&self) -> PathBuf {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/quickstart.toml"))
            .unwrap();
        self.write("plan.toml", &text)
    }

    /// certroll with no CERTROLL_* from the caller's environment, in the temp dir, at [`NOW`].
    pub fn cmd(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_certroll"));
        for (k, _) in std::env::vars() {
            if k.starts_with("CERTROLL_") {
                cmd.env_remove(k);
            }
        }
        // The suite runs at a pinned instant far from the real clock on purpose; a test of the
        // time-travel guard removes this.
        cmd.current_dir(self.dir.path())
            .env("CERTROLL_NOW", NOW)
            .env("CERTROLL_ALLOW_TIME_TRAVEL", "1");
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Run {
        run_output(self.cmd().args(args).output().unwrap())
    }

    /// certroll with `--plan plan.toml` and these arguments.
    pub fn plan_run(&self, args: &[&str]) -> Run {
        self.run(&[&["--plan", "plan.toml"][..], args].concat())
    }

    /// Writes a DER certificate as `NAME.pem`, converted by the real openssl.
    pub fn write_pem(&self, der: &[u8], name: &str) {
        std::fs::write(self.path(&format!("{name}.der")), der).unwrap();
        self.openssl(&[
            "x509",
            "-inform",
            "DER",
            "-in",
            &format!("{name}.der"),
            "-out",
            &format!("{name}.pem"),
        ])
        .ok();
    }

    pub fn store_dir(&self) -> PathBuf {
        self.path(".certroll")
    }

    /// openssl in the temp dir. `verify` checks at the pinned clock ([`NOW`] + 1 hour), unless
    /// the test gives its own `-attime`: certificates are issued at NOW, and the real date moves on.
    pub fn openssl(&self, args: &[&str]) -> Run {
        let at = (certroll::clock::parse_rfc3339(NOW).unwrap().unix_timestamp() + 3600).to_string();
        let mut full: Vec<&str> = args.to_vec();
        if args.first() == Some(&"verify") && !args.contains(&"-attime") {
            full.splice(1..1, ["-attime", at.as_str()]);
        }
        openssl_in(self.dir.path(), &full)
    }
}

/// A self-signed EC P-256 certificate made by openssl, as an outside CA (or another client)
/// makes one: its key written to `key` and the certificate to `cert` (in the test's directory),
/// subject `subj` (openssl's `/CN=...`), valid for `days`, with each of `exts` added
/// (`basicConstraints=critical,CA:TRUE`, ...).
pub fn openssl_ca(env: &TestEnv, key: &str, cert: &str, subj: &str, days: &str, exts: &[&str]) {
    let mut args = vec![
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        key,
        "-out",
        cert,
        "-subj",
        subj,
        "-days",
        days,
    ];
    for ext in exts {
        args.extend(["-addext", ext]);
    }
    env.openssl(&args).ok();
}

/// Runs the real openssl CLI; fails the test if it is not installed.
pub fn openssl_in(dir: &Path, args: &[&str]) -> Run {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl CLI must be installed (the tests use it as an independent checker)");
    run_output(out)
}

pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A plan with RSA-3072 and EC P-384 roots, EC P-256 intermediates, RSA-2048 and EC leaves.
pub fn mixed_plan(group_a: u32, group_b: u32) -> String {
    format!(
        r#"version = 1

[policies.rsa-root]
key = {{ type = "RSA", size = 3072, exportable = false }}
validity_days = 3650

[policies.ec-root]
key = {{ type = "EC", curve = "P-384", exportable = false }}
validity_days = 3650

[policies.ec-int]
key = {{ type = "EC", curve = "P-256", exportable = false }}
validity_days = 1825

[policies.rsa-leaf]
key = {{ type = "RSA", size = 2048 }}
validity_days = 365
key_usage = ["digitalSignature", "keyEncipherment"]
extended_key_usage = ["clientAuth"]

[policies.ec-leaf]
key = {{ type = "EC", curve = "P-256" }}
validity_days = 90
key_usage = ["digitalSignature"]
extended_key_usage = ["clientAuth"]

[policies.hsm-leaf]
key = {{ type = "EC-HSM", curve = "P-256" }}
validity_days = 90
extended_key_usage = ["clientAuth"]

[ca.rsa-root]
subject = "CN=RSA Root, O=Test"
policy = "rsa-root"

[ca.ec-root]
subject = "CN=EC Root, O=Test"
policy = "ec-root"

[ca.line-a]
subject = "CN=Line A CA, O=Test"
issuer = "rsa-root"
path_len = 0
policy = "ec-int"

[ca.line-b]
subject = "CN=Line B CA, O=Test"
issuer = "ec-root"
path_len = 0
policy = "ec-int"

[groups.meters]
signing_ca = "line-a"
hub = "hub-a"
reprovision = "reset"
device_policy = "ec-leaf"
devices = {{ prefix = "meter-", count = {group_a} }}

[groups.pumps]
signing_ca = "ec-root"
hub = "hub-b"
device_policy = "ec-leaf"
devices = {{ prefix = "pump-", count = {group_b} }}

[enrollments.gw-rsa]
issuer = "line-b"
policy = "rsa-leaf"
hub = "hub-a"

[enrollments.gw-hsm]
issuer = "line-a"
policy = "hsm-leaf"
hub = "hub-b"
"#
    )
}

/// Spawns `cmd` (certroll `serve ... -o json`) with its stderr, the access log, in `serve.log`
/// in the test's folder (a file, not a pipe nobody reads: the log would fill a pipe and stall
/// serve), and waits up to a minute for its JSON start line. A serve that prints none is killed
/// and the test fails with its log.
pub fn spawn_serve(env: &TestEnv, mut cmd: Command) -> (std::process::Child, serde_json::Value) {
    use std::io::{BufRead, BufReader};
    let log = std::fs::File::create(env.path("serve.log")).unwrap();
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .unwrap_or_default();
    match serde_json::from_str(&line) {
        Ok(start) => (child, start),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "serve printed no JSON start line ({e}): {line:?}\nstderr:\n{}",
                std::fs::read_to_string(env.path("serve.log")).unwrap_or_default()
            )
        }
    }
}

/// One HTTPS request with curl, as another client of serve makes it: to `host` (resolved to
/// 127.0.0.1:`port`, serve's CA file `ca` trusted), with more of curl's arguments `args`
/// (headers, a body): (HTTP status, 0 when there was no answer; the answer's body).
pub fn curl_to(ca: &Path, port: u16, method: &str, host: &str, path: &str, args: &[String]) -> (u16, String) {
    let out = Command::new("curl")
        .args([
            "-sS",
            "-X",
            method,
            "--max-time",
            "20",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
        ])
        .arg("--resolve")
        .arg(format!("{host}:{port}:127.0.0.1"))
        .arg("--cacert")
        .arg(ca)
        .args(args)
        .arg(format!("https://{host}:{port}{path}"))
        .output()
        .expect("curl must be installed");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// [`curl_to`] with a JSON Content-Type, `headers` (`Name: value`) and `body` if any.
pub fn curl_json(
    ca: &Path,
    port: u16,
    method: &str,
    host: &str,
    path: &str,
    headers: &[String],
    body: Option<&str>,
) -> (u16, String) {
    let mut args = vec!["-H".to_string(), "Content-Type: application/json".to_string()];
    for h in headers {
        args.extend(["-H".to_string(), h.clone()]);
    }
    if let Some(b) = body {
        args.extend(["--data".to_string(), b.to_string()]);
    }
    curl_to(ca, port, method, host, path, &args)
}

// ---- Fixtures and readers shared by the issue-10 fidelity suites.

/// The quickstart with `count` sensors, written as `plan.toml`; returns its text.
pub fn small_quickstart(env: &TestEnv, count: usize) -> String {
    let text = std::fs::read_to_string(env.quickstart()).unwrap();
    let text = text.replace(
        "devices = { prefix = \"sensor-\", count = 50 }",
        &format!("devices = {{ prefix = \"sensor-\", count = {count} }}"),
    );
    env.write("plan.toml", &text);
    text
}

/// The quickstart with two sensors, plus a second intermediate `short` (validity `short_days`)
/// signing group `shorts` (devices t-1, t-2), with an auto-renew action 30 days before its expiry
/// when `auto_renew`.
pub fn two_ca_plan(env: &TestEnv, short_days: u32, auto_renew: bool) -> String {
    let action = if auto_renew {
        "auto-renew"
    } else {
        "email-contacts"
    };
    let text = std::fs::read_to_string(env.quickstart()).unwrap().replace(
        "devices = { prefix = \"sensor-\", count = 50 }",
        "devices = { prefix = \"sensor-\", count = 2 }",
    ) + &format!(
        "\n[policies.short]\nkey = {{ type = \"EC\", curve = \"P-384\", exportable = false }}\nvalidity_days = {short_days}\n\
         lifetime_actions = [{{ days_before_expiry = 30, action = \"{action}\" }}]\n\
         \n[ca.short]\nsubject = \"CN=Short CA, O=Example\"\nissuer = \"root\"\npath_len = 0\npolicy = \"short\"\n\
         \n[groups.shorts]\nsigning_ca = \"short\"\nhub = \"example-hub\"\nreprovision = \"migrate\"\n\
         device_policy = \"device\"\ndevices = {{ prefix = \"t-\", count = 2 }}\n"
    );
    env.write("plan.toml", &text);
    text
}

/// The entry of device `id` in a roll's JSON report.
pub fn outcome(r: &serde_json::Value, id: &str) -> serde_json::Value {
    r["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["target"] == format!("device:{id}"))
        .unwrap_or_else(|| panic!("{id}: {r:#}"))
        .clone()
}

/// The problem `check -o json` reports for `target`.
pub fn problem(check: &serde_json::Value, target: &str) -> serde_json::Value {
    check["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["target"] == target)
        .unwrap_or_else(|| panic!("{target}: {check:#}"))
        .clone()
}

/// How many vault versions the certificate `name` has.
pub fn count(env: &TestEnv, name: &str) -> usize {
    use certroll::backend::Vault as _;
    crate::roll::backend(env).versions(name).unwrap().len()
}

/// The store's bytes, to assert that a refused command changed nothing.
pub fn store_bytes(env: &TestEnv) -> Vec<u8> {
    std::fs::read(env.store_dir().join("state.db")).unwrap()
}

/// The fifth fidelity trial's plan, written as `plan.toml`: root `r` (400 days, auto-renew 60
/// days before expiry), intermediate `m` under it (3650 days, so capped by `r`; auto-renew 30
/// days before expiry), group `g` (d-1, d-2) under `m`, individual enrollments `e1` under `m` and
/// `e2` under `r`; devices 200 days, auto-renew at 85 % of their life.
pub fn fid5_plan(env: &TestEnv) -> String {
    let text = r#"version = 1
[backend]
kind = "local"
path = ".certroll/state.db"

[policies.dev]
key = { type = "EC", curve = "P-256", exportable = true, reuse_key = false }
validity_days = 200
extended_key_usage = ["clientAuth"]
lifetime_actions = [ { lifetime_percentage = 85, action = "auto-renew" } ]

[policies.root]
key = { type = "EC", curve = "P-256", exportable = false }
validity_days = 400
lifetime_actions = [{ days_before_expiry = 60, action = "auto-renew" }]

[policies.mid]
key = { type = "EC", curve = "P-256", exportable = false }
validity_days = 3650
lifetime_actions = [{ days_before_expiry = 30, action = "auto-renew" }]

[ca.r]
subject = "CN=Fid5 Root, O=Fid5"
policy = "root"

[ca.m]
subject = "CN=Fid5 Mid, O=Fid5"
issuer = "r"
path_len = 0
policy = "mid"

[groups.g]
signing_ca = "m"
hub = "hubA"
device_policy = "dev"
devices = { prefix = "d-", count = 2 }

[enrollments.e1]
issuer = "m"
policy = "dev"
hub = "hubA"

[enrollments.e2]
issuer = "r"
policy = "dev"
hub = "hubB"
"#;
    env.write("plan.toml", text);
    text.to_string()
}

/// The SHA-1 thumbprint (upper-case hex, as certroll shows it) that Key Vault's `x5t`
/// (base64url, no padding) names in `version`, a certificate version's JSON; fails naming the
/// JSON when it holds no 20-byte `x5t`.
pub fn x5t_thumbprint(version: &serde_json::Value) -> String {
    let x5t = base64::Engine::decode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        version["x5t"].as_str().unwrap_or_default(),
    )
    .unwrap_or_default();
    assert_eq!(x5t.len(), 20, "no SHA-1 x5t in {version}");
    x5t.iter().map(|b| format!("{b:02X}")).collect()
}
