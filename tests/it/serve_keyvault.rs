//! `certroll serve` as Key Vault, driven by the official Python SDK
//! (`azure-keyvault-certificates` 4.12.0, pinned in tests/sdk/python/requirements.txt) over
//! HTTPS to the production host name, plus the TLS chain checked with `openssl`, the CLI verbs
//! working while serve runs, and SIGTERM finishing requests in flight.
//!
//! The Python comes from `CERTROLL_TEST_PYTHON` (set by `.ci/run`), else `target/ci-venv`; when
//! that venv lacks the SDK the pinned requirements are installed into it on first use. A test
//! that cannot get the SDK fails: it never passes without running.

use crate::util::*;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn has_sdk(python: &Path) -> bool {
    Command::new(python)
        .args([
            "-c",
            "import azure.keyvault.certificates, azure.iot.hub, six, requests",
        ])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A Python with the pinned SDKs (tests/sdk/python/requirements.txt), installing them under
/// target/ on first use.
pub(crate) fn python() -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            if let Some(p) = std::env::var_os("CERTROLL_TEST_PYTHON").map(PathBuf::from)
                && has_sdk(&p)
            {
                return p;
            }
            let venv = repo().join("target/ci-venv");
            let python = venv.join("bin/python");
            if !python.exists() {
                let made = Command::new("python3").args(["-m", "venv"]).arg(&venv).status();
                assert!(
                    made.is_ok_and(|s| s.success()),
                    "cannot make {} (python3 -m venv): the Python SDK tests need it",
                    venv.display()
                );
            }
            if !has_sdk(&python) {
                let pip = Command::new(venv.join("bin/pip"))
                    .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
                    .arg(repo().join("tests/sdk/python/requirements.txt"))
                    .status();
                assert!(
                    pip.is_ok_and(|s| s.success()) && has_sdk(&python),
                    "cannot install tests/sdk/python/requirements.txt into {}: the Python SDK tests need it",
                    venv.display()
                );
            }
            python
        })
        .clone()
}

/// A running `certroll serve`; SIGTERM (then SIGKILL) on drop.
pub(crate) struct Serve {
    child: Child,
    start: serde_json::Value,
}

impl Serve {
    pub(crate) fn start(env: &TestEnv, vars: &[(&str, &str)]) -> Serve {
        let mut cmd = env.cmd();
        // The SDK clients and openssl live in real time (certificates openssl makes start now).
        cmd.env_remove("CERTROLL_NOW");
        cmd.args([
            "--plan",
            "plan.toml",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--ca-out",
            "ca.pem",
            "-o",
            "json",
        ]);
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let (child, start) = spawn_serve(env, cmd);
        Serve { child, start }
    }

    fn port(&self) -> u16 {
        let listen = self.start["listen"].as_str().unwrap();
        listen.rsplit(':').next().unwrap().parse().unwrap()
    }

    fn vault_url(&self) -> String {
        self.start["vault_url"].as_str().unwrap().to_string()
    }

    fn term(&self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
    }

    /// SIGTERM, then the exit code (within 40 s).
    pub(crate) fn stop(mut self) -> i32 {
        self.term();
        for _ in 0..400 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("serve did not exit within 40 s of SIGTERM");
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.term();
            std::thread::sleep(Duration::from_millis(300));
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Runs a script of tests/sdk/python with the vault's environment; asserts it printed `OK`.
fn run_script(env: &TestEnv, serve: &Serve, script: &str, vars: &[(&str, &str)]) -> String {
    let work = env.path("work");
    std::fs::create_dir_all(&work).unwrap();
    let mut cmd = Command::new(python());
    cmd.arg(repo().join("tests/sdk/python").join(script))
        .env("CERTROLL_VAULT_URL", serve.vault_url())
        .env("REQUESTS_CA_BUNDLE", env.path("ca.pem"))
        .env("CERTROLL_WORK", &work)
        .current_dir(env.dir.path());
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && stdout.contains("OK "),
        "{script} failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn the_python_sdk_drives_every_certificate_operation() {
    let env = TestEnv::new();
    env.write("plan.toml", "version = 1\n");
    let serve = Serve::start(&env, &[("CERTROLL_SERVE_TOKEN", "owner-token")]);
    assert!(
        serve.start.get("token").is_none(),
        "a token from the environment is not printed"
    );
    let out = run_script(
        &env,
        &serve,
        "keyvault_sdk.py",
        &[("CERTROLL_TOKEN", "owner-token")],
    );
    eprintln!("{out}");
    assert_eq!(serve.stop(), 0);
}

#[test]
fn tokens_and_the_sixteen_permissions_are_enforced_on_every_route() {
    use std::fmt::Write as _;
    const PERMISSIONS: [&str; 16] = [
        "get",
        "list",
        "update",
        "create",
        "import",
        "delete",
        "recover",
        "backup",
        "restore",
        "managecontacts",
        "manageissuers",
        "getissuers",
        "listissuers",
        "setissuers",
        "deleteissuers",
        "purge",
    ];
    let env = TestEnv::new();
    let mut plan = String::from(
        "version = 1\n\n[serve.principals.owner]\ntoken_env = \"CERTROLL_OWNER_TOKEN\"\npermissions = [\"all\"]\n",
    );
    let mut vars: Vec<(String, String)> = vec![("CERTROLL_OWNER_TOKEN".into(), "tok-owner".into())];
    for p in PERMISSIONS {
        // Lacking `p` (and manageissuers, which would grant the issuer permissions back).
        let kept: Vec<String> = PERMISSIONS
            .iter()
            .filter(|q| **q != p && **q != "manageissuers")
            .map(|q| format!("\"{q}\""))
            .collect();
        let var = format!("TOKEN_NO_{}", p.to_uppercase());
        write!(
            plan,
            "\n[serve.principals.no-{p}]\ntoken_env = \"{var}\"\npermissions = [{}]\n",
            kept.join(", ")
        )
        .unwrap();
        vars.push((var, format!("tok-no-{p}")));
    }
    plan.push_str("\n[serve.principals.issuers]\ntoken_env = \"TOKEN_ISSUERS_ONLY\"\npermissions = [\"manageissuers\"]\n");
    vars.push(("TOKEN_ISSUERS_ONLY".into(), "tok-issuers".into()));
    env.write("plan.toml", &plan);
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let serve = Serve::start(&env, &vars);
    run_script(&env, &serve, "keyvault_auth.py", &vars);
    assert_eq!(serve.stop(), 0);
}

#[test]
fn a_principal_whose_token_variable_is_unset_is_refused_at_start() {
    let env = TestEnv::new();
    env.write(
        "plan.toml",
        "version = 1\n[serve.principals.ops]\ntoken_env = \"OPS_TOKEN\"\npermissions = [\"get\"]\n",
    );
    let run = env.plan_run(&["serve", "--listen", "127.0.0.1:0"]).code(2);
    assert!(run.stderr.contains("OPS_TOKEN"), "{}", run.stderr);
    let env = TestEnv::new();
    env.write(
        "plan.toml",
        "version = 1\n[serve.principals.ops]\ntoken_env = \"OPS_TOKEN\"\npermissions = [\"get\", \"sign\"]\n",
    );
    let run = env.plan_run(&["validate"]).code(2);
    assert!(
        run.stderr.contains("plan.toml:4:") && run.stderr.contains("`sign`"),
        "{}",
        run.stderr
    );
}

#[test]
fn the_served_chain_verifies_against_the_ca_file_with_openssl() {
    let env = TestEnv::new();
    env.write("plan.toml", "version = 1\n");
    let serve = Serve::start(&env, &[("CERTROLL_SERVE_TOKEN", "t")]);
    let port = serve.port().to_string();
    assert_eq!(serve.start["ca_file"], "ca.pem");
    for name in [
        "certroll.vault.azure.net",
        "my-dps.azure-devices-provisioning.net",
        "management.azure.com",
    ] {
        let out = Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &format!("127.0.0.1:{port}"),
                "-servername",
                name,
            ])
            .args([
                "-CAfile",
                "ca.pem",
                "-verify_hostname",
                name,
                "-verify_return_error",
                "-showcerts",
            ])
            .current_dir(env.dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Verify return code: 0 (ok)"), "{name}: {text}");
    }
    // The leaf alone, verified by `openssl verify` against the CA file.
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-servername",
            "certroll.vault.azure.net",
        ])
        .current_dir(env.dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let begin = text
        .find("-----BEGIN CERTIFICATE-----")
        .expect("a served certificate");
    let end = text.find("-----END CERTIFICATE-----").unwrap() + "-----END CERTIFICATE-----".len();
    env.write("leaf.pem", &text[begin..end]);
    // At the real time: the TLS certificates follow the real clock, not `--now`.
    openssl_in(
        env.dir.path(),
        &["verify", "-CAfile", "ca.pem", "-purpose", "sslserver", "leaf.pem"],
    )
    .ok();
    // The CA is kept in the store: a second start serves under the same CA.
    let ca = std::fs::read_to_string(env.path("ca.pem")).unwrap();
    assert_eq!(serve.stop(), 0);
    let again = Serve::start(&env, &[("CERTROLL_SERVE_TOKEN", "t")]);
    assert_eq!(std::fs::read_to_string(env.path("ca.pem")).unwrap(), ca);
    drop(again);
}

#[test]
fn cli_verbs_keep_working_while_serve_runs_and_sigterm_finishes_requests_in_flight() {
    let env = TestEnv::new();
    env.quickstart();
    env.plan_run(&["issue", "ca:root"]).ok();
    let serve = Serve::start(&env, &[("CERTROLL_SERVE_TOKEN", "tok")]);
    env.plan_run(&["status"]).ok();
    env.plan_run(&["vault", "update", "ca:root", "--tag", "rehearsal=yes"])
        .ok();
    // The CLI's write is visible to serve's next read.
    let out = Command::new("curl")
        .args([
            "-sS",
            "--cacert",
            "ca.pem",
            "-H",
            "Authorization: Bearer tok",
            "--resolve",
        ])
        .arg(format!("certroll.vault.azure.net:{}:127.0.0.1", serve.port()))
        .arg(format!(
            "{}/certificates/ca-root/?api-version=7.5",
            serve.vault_url()
        ))
        .current_dir(env.dir.path())
        .output()
        .unwrap();
    let got: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(got["tags"]["rehearsal"], "yes", "{got}");

    let mut inflight = Command::new(python())
        .arg(repo().join("tests/sdk/python/keyvault_inflight.py"))
        .env("CERTROLL_PORT", serve.port().to_string())
        .env("CERTROLL_TOKEN", "tok")
        .env("CERTROLL_CA", env.path("ca.pem"))
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(env.path("inflight.err")).unwrap())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(inflight.stdout.take().unwrap()).lines();
    // The script says SENT only once serve's handler is reading the body (its 100 Continue), so
    // the SIGTERM below always lands on a request in flight, however loaded the machine.
    let mut next_line = |what: &str| {
        lines.next().and_then(Result::ok).unwrap_or_else(|| {
            let _ = inflight.wait();
            panic!(
                "the Python script printed no {what} line; its stderr: {}",
                std::fs::read_to_string(env.path("inflight.err")).unwrap_or_default()
            )
        })
    };
    assert_eq!(next_line("SENT"), "SENT");
    serve.term();
    let status = next_line("status");
    assert!(
        status.starts_with("STATUS 200") && status.contains("inflight@example.com"),
        "{status}"
    );
    inflight.wait().unwrap();
    assert_eq!(serve.stop(), 0);
}

/// One GET with curl through the production host name: (status, headers+body).
fn curl(env: &TestEnv, serve: &Serve, path: &str) -> (u16, String) {
    curl_send(env, serve, "GET", path, None)
}

/// One request with curl (token `tok`) through the production host name, with a JSON body if
/// given: (status, headers+body).
pub(crate) fn curl_send(
    env: &TestEnv,
    serve: &Serve,
    method: &str,
    path: &str,
    json: Option<&str>,
) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "-i",
        "--cacert",
        "ca.pem",
        "-H",
        "Authorization: Bearer tok",
        "-X",
        method,
        "--resolve",
    ])
    .arg(format!("certroll.vault.azure.net:{}:127.0.0.1", serve.port()));
    if let Some(json) = json {
        cmd.args(["-H", "Content-Type: application/json", "--data-binary", json]);
    }
    let out = cmd
        .arg(format!("{}{path}", serve.vault_url()))
        .current_dir(env.dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

#[test]
fn throttling_and_injected_faults_answer_as_azure_does() {
    let env = TestEnv::new();
    env.write(
        "plan.toml",
        "version = 1\n[serve.services.keyvault]\nrate_per_second = 1\nburst = 2\n",
    );
    let serve = Serve::start(&env, &[("CERTROLL_SERVE_TOKEN", "tok")]);
    let statuses: Vec<(u16, String)> = (0..4)
        .map(|_| curl(&env, &serve, "/certificates?api-version=7.5"))
        .collect();
    assert_eq!(statuses[0].0, 200, "{}", statuses[0].1);
    let throttled = statuses
        .iter()
        .find(|(s, _)| *s == 429)
        .expect("a burst over the rate is throttled");
    assert!(
        throttled.1.to_ascii_lowercase().contains("retry-after: 1"),
        "{}",
        throttled.1
    );
    assert!(throttled.1.contains("\"code\":\"Throttled\""), "{}", throttled.1);
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(
        curl(&env, &serve, "/certificates?api-version=7.5").0,
        200,
        "admitted again after Retry-After"
    );
    std::thread::sleep(Duration::from_millis(2100));
    // The official SDK meets the 429s of a burst and retries through them (Retry-After honoured).
    let out = run_script(
        &env,
        &serve,
        "keyvault_throttled.py",
        &[("CERTROLL_TOKEN", "tok")],
    );
    eprintln!("{out}");
    assert_eq!(serve.stop(), 0);

    let env = TestEnv::new();
    env.write(
        "plan.toml",
        "version = 1\n[serve.services.keyvault]\nerror_percent = 100\nerror_status = 503\n",
    );
    let serve = Serve::start(&env, &[("CERTROLL_SERVE_TOKEN", "tok")]);
    let (status, text) = curl(&env, &serve, "/certificates?api-version=7.5");
    assert_eq!(status, 503, "{text}");
    assert!(text.to_ascii_lowercase().contains("retry-after:"), "{text}");
    drop(serve);

    let env = TestEnv::new();
    env.write(
        "plan.toml",
        "version = 1\n[serve.services.keyvault]\ndrop_percent = 100\n",
    );
    let serve = Serve::start(&env, &[("CERTROLL_SERVE_TOKEN", "tok")]);
    let (status, text) = curl(&env, &serve, "/certificates?api-version=7.5");
    assert_eq!(status, 0, "a dropped connection gets no answer: {text}");
    assert_eq!(serve.stop(), 0);
}

/// The body of a curl answer (after the headers), as JSON.
pub(crate) fn json_body(text: &str) -> serde_json::Value {
    let body = text.split("\r\n\r\n").last().unwrap_or_default();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn versionless_paths_answer_with_and_without_the_trailing_slash_as_key_vault_does() {
    let env = TestEnv::new();
    env.write("plan.toml", "version = 1\n");
    let serve = Serve::start(&env, &[("CERTROLL_SERVE_TOKEN", "tok")]);
    let policy = r#"{"policy":{"issuer":{"name":"Self"},"x509_props":{"subject":"CN=web"},"key_props":{"kty":"EC","crv":"P-256","exportable":true}}}"#;
    let (status, text) = curl_send(
        &env,
        &serve,
        "POST",
        "/certificates/web/create?api-version=7.5",
        Some(policy),
    );
    assert_eq!(status, 202, "{text}");
    for path in ["/certificates/web", "/certificates/web/"] {
        let (status, text) = curl(&env, &serve, &format!("{path}?api-version=7.5"));
        assert_eq!(status, 200, "GET {path}: {text}");
        assert!(
            json_body(&text)["id"]
                .as_str()
                .unwrap()
                .contains("/certificates/web/"),
            "{text}"
        );
    }
    for (i, path) in ["/certificates/web", "/certificates/web/"].iter().enumerate() {
        let tags = format!(r#"{{"tags":{{"try":"{i}"}}}}"#);
        let (status, text) = curl_send(
            &env,
            &serve,
            "PATCH",
            &format!("{path}?api-version=7.5"),
            Some(&tags),
        );
        assert_eq!(status, 200, "PATCH {path}: {text}");
        assert_eq!(json_body(&text)["tags"]["try"], i.to_string(), "{text}");
    }
    for path in ["/keys/web", "/keys/web/"] {
        let (status, text) = curl(&env, &serve, &format!("{path}?api-version=7.5"));
        assert_eq!(status, 200, "GET {path}: {text}");
        assert!(
            json_body(&text)["key"]["kid"]
                .as_str()
                .unwrap()
                .contains("/keys/web/"),
            "{text}"
        );
    }
    for path in ["/secrets/web", "/secrets/web/"] {
        let (status, text) = curl(&env, &serve, &format!("{path}?api-version=7.5"));
        assert_eq!(status, 200, "GET {path}: {text}");
        assert!(
            json_body(&text)["value"]
                .as_str()
                .unwrap()
                .contains("PRIVATE KEY"),
            "{text}"
        );
    }
    // A versionless DELETE still deletes (the form it always had).
    let (status, text) = curl_send(&env, &serve, "DELETE", "/certificates/web?api-version=7.5", None);
    assert_eq!(status, 200, "{text}");
    assert_eq!(curl(&env, &serve, "/certificates/web?api-version=7.5").0, 404);
    assert_eq!(serve.stop(), 0);
}

#[test]
fn a_create_from_the_cli_replaces_an_operation_cancelled_through_serve() {
    let env = TestEnv::new();
    env.quickstart();
    let serve = Serve::start(&env, &[("CERTROLL_SERVE_TOKEN", "tok")]);
    for (name, cli_issuer, status) in [
        ("c-self", "Self", "completed"),
        ("c-unknown", "Unknown", "inProgress"),
    ] {
        let create = format!(
            r#"{{"policy":{{"issuer":{{"name":"Unknown"}},"x509_props":{{"subject":"CN={name}"}},"key_props":{{"kty":"EC","crv":"P-256"}}}}}}"#
        );
        let (code, text) = curl_send(
            &env,
            &serve,
            "POST",
            &format!("/certificates/{name}/create?api-version=7.5"),
            Some(&create),
        );
        assert_eq!(code, 202, "{text}");
        let (code, text) = curl_send(
            &env,
            &serve,
            "PATCH",
            &format!("/certificates/{name}/pending?api-version=7.5"),
            Some(r#"{"cancellation_requested":true}"#),
        );
        assert_eq!(code, 200, "{text}");
        assert!(text.contains(r#""status":"cancelled""#), "{text}");
        env.plan_run(&[
            "vault",
            "create",
            name,
            "--subject",
            &format!("CN={name}"),
            "--issuer",
            cli_issuer,
        ])
        .ok();
        let (code, text) = curl(
            &env,
            &serve,
            &format!("/certificates/{name}/pending?api-version=7.5"),
        );
        assert_eq!(code, 200, "{text}");
        assert!(
            text.contains(&format!(r#""status":"{status}""#)),
            "the CLI's create replaces the cancelled operation of {name}: {text}"
        );
    }
    assert_eq!(serve.stop(), 0);
}

#[test]
fn a_cancelled_first_request_shows_the_disabled_placeholder_until_its_operation_is_deleted() {
    let env = TestEnv::new();
    env.quickstart();
    let serve = Serve::start(&env, &[("CERTROLL_SERVE_TOKEN", "tok")]);
    let create = r#"{"policy":{"issuer":{"name":"Unknown"},"x509_props":{"subject":"CN=cancelled"},"key_props":{"kty":"EC","crv":"P-256"}}}"#;
    let (code, text) = curl_send(
        &env,
        &serve,
        "POST",
        "/certificates/cancelled/create?api-version=7.5",
        Some(create),
    );
    assert_eq!(code, 202, "{text}");
    let (code, pending) = curl(&env, &serve, "/certificates/cancelled?api-version=7.5");
    assert_eq!(code, 200, "{pending}");
    let (code, text) = curl_send(
        &env,
        &serve,
        "PATCH",
        "/certificates/cancelled/pending?api-version=7.5",
        Some(r#"{"cancellation_requested":true}"#),
    );
    assert_eq!(code, 200, "{text}");
    // As Key Vault answers for a pending certificate: a disabled version, its policy and the
    // pending link, no `cer` (nothing was issued).
    let (code, text) = curl(&env, &serve, "/certificates/cancelled?api-version=7.5");
    assert_eq!(code, 200, "a cancelled first request is still shown: {text}");
    let got = json_body(&text);
    assert_eq!(got["attributes"]["enabled"], false, "{got}");
    assert!(got.get("cer").is_none(), "{got}");
    assert!(
        got["pending"]["id"]
            .as_str()
            .is_some_and(|id| id.ends_with("/certificates/cancelled/pending")),
        "{got}"
    );
    assert_eq!(got["policy"]["issuer"]["name"], "Unknown", "{got}");
    assert_eq!(
        got["id"],
        json_body(&pending)["id"],
        "the same placeholder version as while it was pending"
    );
    // Once the operation is deleted, the name is gone.
    let (code, text) = curl_send(
        &env,
        &serve,
        "DELETE",
        "/certificates/cancelled/pending?api-version=7.5",
        None,
    );
    assert_eq!(code, 200, "{text}");
    let (code, text) = curl(&env, &serve, "/certificates/cancelled?api-version=7.5");
    assert_eq!(code, 404, "{text}");
    assert_eq!(serve.stop(), 0);
}

/// On SIGTERM, connections without a request in flight are closed at once: one idle after an
/// answer, one that has sent part of a request head, one still before its TLS handshake. serve
/// does not wait for their clients or for the header timeout (10 s) before it exits.
#[test]
fn sigterm_closes_connections_without_a_request_in_flight_at_once() {
    let env = TestEnv::new();
    env.quickstart();
    let serve = Serve::start(&env, &[("CERTROLL_SERVE_TOKEN", "tok")]);
    let s_client = |head: &[u8]| {
        let mut child = Command::new("openssl")
            .args(["s_client", "-quiet", "-connect"])
            .arg(format!("127.0.0.1:{}", serve.port()))
            .args(["-servername", "certroll.vault.azure.net", "-CAfile", "ca.pem"])
            .current_dir(env.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        // stdin stays open: the connection stays up as long as serve keeps it.
        child.stdin.as_mut().unwrap().write_all(head).unwrap();
        child
    };
    let mut idle = s_client(
        b"GET /certificates?api-version=7.5 HTTP/1.1\r\nHost: certroll.vault.azure.net\r\nAuthorization: Bearer tok\r\n\r\n",
    );
    let mut lines = BufReader::new(idle.stdout.take().unwrap()).lines();
    let status = lines.next().and_then(Result::ok).unwrap_or_default();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let mut partial =
        s_client(b"GET /certificates?api-version=7.5 HTTP/1.1\r\nHost: certroll.vault.azure.net\r\n");
    let before_tls = std::net::TcpStream::connect(("127.0.0.1", serve.port())).unwrap();
    // Let serve take the partial head in (s_client's handshake, then its write).
    std::thread::sleep(Duration::from_millis(700));

    let started = std::time::Instant::now();
    serve.term();
    let mut serve = serve;
    let code = loop {
        if let Some(status) = serve.child.try_wait().unwrap() {
            break status.code().unwrap_or(-1);
        }
        // Well below the 10 s serve would wait for the partial head and the handshake.
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "serve still runs {:?} after SIGTERM with idle connections open",
            started.elapsed()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(code, 0);
    drop(before_tls);
    for child in [&mut idle, &mut partial] {
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[test]
fn out_of_range_policies_and_wrong_typed_attributes_get_400_naming_the_field_and_change_nothing() {
    let env = TestEnv::new();
    env.write("plan.toml", "version = 1\n");
    let serve = Serve::start(&env, &[("CERTROLL_SERVE_TOKEN", "tok")]);
    let create = |x509: &str, actions: &str| {
        format!(
            r#"{{"policy":{{"issuer":{{"name":"Self"}},"x509_props":{{"subject":"CN=m"{x509}}},"key_props":{{"kty":"EC","crv":"P-256"}}{actions}}}}}"#
        )
    };
    let bad_creates = [
        (create(r#","validity_months":-1"#, ""), "validity_months -1"),
        (create(r#","validity_months":1201"#, ""), "validity_months 1201"),
        (create(r#","validity_months":"12""#, ""), "validity_months"),
        (
            create("", r#","lifetime_actions":[{"trigger":{"lifetime_percentage":500},"action":{"action_type":"AutoRenew"}}]"#),
            "lifetime_percentage 500",
        ),
        (
            create("", r#","lifetime_actions":[{"trigger":{"lifetime_percentage":0},"action":{"action_type":"AutoRenew"}}]"#),
            "lifetime_percentage 0",
        ),
        (
            create(
                r#","validity_months":2"#,
                r#","lifetime_actions":[{"trigger":{"days_before_expiry":55},"action":{"action_type":"AutoRenew"}}]"#,
            ),
            "days_before_expiry 55",
        ),
        (
            create("", r#","lifetime_actions":[{"trigger":{"days_before_expiry":1099511627776},"action":{"action_type":"AutoRenew"}}]"#),
            "days_before_expiry 1099511627776",
        ),
        (create(r#","sans":{"emails":["notanemail"]}"#, ""), "notanemail"),
        (
            r#"{"policy":{"issuer":{"name":"Self"},"x509_props":{"subject":"CN=m"},"key_props":{"kty":"EC","crv":"P-256"}},"attributes":{"nbf":"yesterday"}}"#.to_string(),
            "attributes.nbf",
        ),
    ];
    for (body, names) in &bad_creates {
        let (status, text) = curl_send(
            &env,
            &serve,
            "POST",
            "/certificates/m/create?api-version=7.5",
            Some(body),
        );
        assert_eq!(status, 400, "{body}: {text}");
        let err = &json_body(&text)["error"];
        assert_eq!(err["code"], "BadParameter", "{text}");
        let message = err["message"].as_str().unwrap();
        assert!(message.contains(names), "{body}: `{names}` not in {message}");
        assert!(!message.contains("i64") && !message.contains("u64"), "{message}");
    }
    // Nothing was created by any of them.
    assert_eq!(curl(&env, &serve, "/certificates/m?api-version=7.5").0, 404);

    // The edges are accepted: 1 month with days_before_expiry 27, lifetime_percentage 99.
    let good = create(
        r#","validity_months":1,"sans":{"emails":["pki@example.com"]}"#,
        r#","lifetime_actions":[{"trigger":{"days_before_expiry":27},"action":{"action_type":"AutoRenew"}}]"#,
    );
    let (status, text) = curl_send(
        &env,
        &serve,
        "POST",
        "/certificates/m/create?api-version=7.5",
        Some(&good),
    );
    assert_eq!(status, 202, "{text}");
    let before = json_body(&curl(&env, &serve, "/certificates/m/policy?api-version=7.5").1);
    assert_eq!(
        before["lifetime_actions"][0]["trigger"]["days_before_expiry"], 27,
        "{before}"
    );

    // A patch is checked merged with the stored policy: 28 days is over 1 month's 27.
    let bad_patches = [
        (
            r#"{"lifetime_actions":[{"trigger":{"days_before_expiry":28},"action":{"action_type":"AutoRenew"}}]}"#,
            "days_before_expiry 28",
        ),
        (
            r#"{"lifetime_actions":[{"trigger":{"lifetime_percentage":100},"action":{"action_type":"AutoRenew"}}]}"#,
            "lifetime_percentage 100",
        ),
        (r#"{"x509_props":{"validity_months":0}}"#, "validity_months 0"),
        (r#"{"x509_props":{"sans":{"emails":["a@"]}}}"#, "a@"),
    ];
    // A PATCH refused with 400 BadParameter whose message names `names`.
    let refused = |path: &str, body: &str, names: &str| {
        let (status, text) = curl_send(&env, &serve, "PATCH", path, Some(body));
        assert_eq!(status, 400, "{body}: {text}");
        let err = &json_body(&text)["error"];
        assert_eq!(err["code"], "BadParameter", "{text}");
        assert!(err["message"].as_str().unwrap().contains(names), "{body}: {text}");
    };
    for (body, names) in bad_patches {
        refused("/certificates/m/policy?api-version=7.5", body, names);
    }
    let after = json_body(&curl(&env, &serve, "/certificates/m/policy?api-version=7.5").1);
    assert_eq!(before, after, "a refused patch changed the policy");

    let bundle = json_body(&curl(&env, &serve, "/certificates/m?api-version=7.5").1);
    for (body, names) in [
        (r#"{"attributes":{"nbf":"yesterday"}}"#, "attributes.nbf"),
        (r#"{"attributes":{"exp":9223372036854775808}}"#, "attributes.exp"),
        (
            r#"{"attributes":{"exp":9223372036854775807}}"#,
            "attributes.exp 9223372036854775807",
        ),
        (r#"{"attributes":{"nbf":1.5},"tags":{"a":"b"}}"#, "attributes.nbf"),
        (r#"{"attributes":"on"}"#, "attributes must be an object"),
    ] {
        refused("/certificates/m?api-version=7.5", body, names);
    }
    let unchanged = json_body(&curl(&env, &serve, "/certificates/m?api-version=7.5").1);
    assert_eq!(
        bundle["tags"], unchanged["tags"],
        "a refused update changed the tags"
    );
    assert_eq!(serve.stop(), 0);
}

/// The SubjectPublicKeyInfo (DER) of a base64 DER certificate or CSR as Key Vault sends them.
fn spki_in(b64: &serde_json::Value, csr: bool) -> Vec<u8> {
    use base64::Engine as _;
    use x509_parser::prelude::FromDer as _;
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64.as_str().expect("base64 text"))
        .unwrap();
    if csr {
        let (_, req) = x509_parser::certification_request::X509CertificationRequest::from_der(&der).unwrap();
        req.certification_request_info.subject_pki.raw.to_vec()
    } else {
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        cert.public_key().raw.to_vec()
    }
}

/// As Key Vault: a pending request's version is disabled (no `kid`, `sid`, `cer` or `x5t`) and
/// its key signs nothing (403 `Forbidden`, inner `KeyDisabled`), as a disabled version's key;
/// a create with `reuse_key: true` asks for a certificate over the newest version's key, which
/// that completed version signs with; a self-signed policy may ask for keyCertSign.
#[test]
fn a_pending_key_is_disabled_and_reuse_key_requests_the_newest_versions_key() {
    let env = TestEnv::new();
    env.write("plan.toml", "version = 1\n");
    let serve = Serve::start(&env, &[("CERTROLL_SERVE_TOKEN", "tok")]);
    let q = "?api-version=7.5";
    let sign = |path: &str| {
        let digest = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, [9u8; 32]);
        curl_send(
            &env,
            &serve,
            "POST",
            &format!("{path}/sign{q}"),
            Some(&format!(r#"{{"alg":"ES256","value":"{digest}"}}"#)),
        )
    };
    let refused_as_disabled = |(code, text): (u16, String), what: &str| {
        assert_eq!(code, 403, "{what}: {text}");
        let got = json_body(&text);
        assert_eq!(got["error"]["code"], "Forbidden", "{what}: {got}");
        assert_eq!(got["error"]["innererror"]["code"], "KeyDisabled", "{what}: {got}");
        assert_eq!(
            got["error"]["message"], "Operation sign is not allowed on a disabled key.",
            "{what}: {got}"
        );
    };

    // A create (202), then the certificate as Key Vault answers it.
    let create = |name: &str, body: &str| {
        let path = format!("/certificates/{name}/create{q}");
        let (code, text) = curl_send(&env, &serve, "POST", &path, Some(body));
        assert_eq!(code, 202, "{text}");
        let (code, text) = curl(&env, &serve, &format!("/certificates/{name}{q}"));
        assert_eq!(code, 200, "{text}");
        json_body(&text)
    };
    // The last segment of a Key Vault id: a version.
    let last_segment = |id: &serde_json::Value| id.as_str().unwrap().rsplit('/').next().unwrap().to_string();

    // A first request: the placeholder version is disabled and names no key or secret.
    let first = r#"{"policy":{"issuer":{"name":"Unknown"},"x509_props":{"subject":"CN=first"},"key_props":{"kty":"EC","crv":"P-256","exportable":false}}}"#;
    let placeholder = create("first", first);
    assert_eq!(placeholder["attributes"]["enabled"], false, "{placeholder}");
    for absent in ["kid", "sid", "cer", "x5t"] {
        assert!(placeholder.get(absent).is_none(), "{absent}: {placeholder}");
    }
    let (code, text) = curl(&env, &serve, &format!("/keys/first{q}"));
    assert_eq!(code, 200, "{text}");
    let key = json_body(&text);
    assert_eq!(key["attributes"]["enabled"], false, "{key}");
    let kid = last_segment(&key["key"]["kid"]);
    refused_as_disabled(sign(&format!("/keys/first/{kid}")), "the pending key by version");
    refused_as_disabled(sign("/keys/first/"), "the pending key, versionless");

    // A self-signed key holder with a CA's key usage, then a reuse_key request over its key.
    let holder = r#"{"policy":{"issuer":{"name":"Self"},"x509_props":{"subject":"CN=Root","key_usage":["digitalSignature","keyCertSign","cRLSign"]},"key_props":{"kty":"EC","crv":"P-256","exportable":false,"reuse_key":false}}}"#;
    let made = create("root", holder);
    let v1 = last_segment(&made["id"]);
    let request = holder
        .replace("\"Self\"", "\"Unknown\"")
        .replace("\"reuse_key\":false", "\"reuse_key\":true");
    let (code, text) = curl_send(
        &env,
        &serve,
        "POST",
        &format!("/certificates/root/create{q}"),
        Some(&request),
    );
    assert_eq!(code, 202, "{text}");
    let op = json_body(&text);
    assert_eq!(
        spki_in(&op["csr"], true),
        spki_in(&made["cer"], false),
        "the request is over the newest version's key"
    );
    let (code, text) = sign(&format!("/keys/root/{v1}"));
    assert_eq!(code, 200, "the completed version signs with the same key: {text}");
    refused_as_disabled(sign("/keys/root/"), "the pending key of a live name");
    // Disabled, the completed version's key signs nothing either.
    let (code, text) = curl_send(
        &env,
        &serve,
        "PATCH",
        &format!("/certificates/root/{v1}{q}"),
        Some(r#"{"attributes":{"enabled":false}}"#),
    );
    assert_eq!(code, 200, "{text}");
    refused_as_disabled(sign(&format!("/keys/root/{v1}")), "a disabled version's key");
    assert_eq!(serve.stop(), 0);
}

/// Trial az14 F7: a policy patch making an HSM certificate's key exportable was answered 200 and
/// silently dropped, so a client rehearsing it on serve was told it had succeeded. Key Vault
/// refuses an exportable HSM key: serve answers 400 BadParameter naming the key type, on the
/// policy route and in a certificate update alike, and the policy is unchanged; other patches
/// of the same policy still apply.
#[test]
fn a_patch_making_an_hsm_key_exportable_is_refused_naming_the_key_type() {
    let env = TestEnv::new();
    env.write("plan.toml", "version = 1\n");
    let serve = Serve::start(&env, &[("CERTROLL_SERVE_TOKEN", "tok")]);
    for (name, kty, size) in [
        ("h-ec", "EC-HSM", r#""crv":"P-256""#),
        ("h-rsa", "RSA-HSM", r#""key_size":2048"#),
    ] {
        let create = format!(
            r#"{{"policy":{{"issuer":{{"name":"Self"}},"x509_props":{{"subject":"CN={name}"}},"key_props":{{"kty":"{kty}",{size},"exportable":false}}}}}}"#
        );
        let (status, text) = curl_send(
            &env,
            &serve,
            "POST",
            &format!("/certificates/{name}/create?api-version=7.5"),
            Some(&create),
        );
        assert_eq!(status, 202, "{text}");
        let policy = format!("/certificates/{name}/policy?api-version=7.5");
        let before = json_body(&curl(&env, &serve, &policy).1);
        assert_eq!(before["key_props"]["kty"], kty, "{before}");
        for (path, body) in [
            (
                policy.clone(),
                r#"{"key_props":{"exportable":true,"kty":"EC","crv":"P-256"}}"#.to_string(),
            ),
            (policy.clone(), r#"{"key_props":{"exportable":true}}"#.to_string()),
            (
                format!("/certificates/{name}?api-version=7.5"),
                r#"{"policy":{"key_props":{"exportable":true}}}"#.to_string(),
            ),
        ] {
            let (status, text) = curl_send(&env, &serve, "PATCH", &path, Some(&body));
            assert_eq!(status, 400, "{path} {body}: {text}");
            let err = &json_body(&text)["error"];
            assert_eq!(err["code"], "BadParameter", "{text}");
            let message = err["message"].as_str().unwrap();
            assert!(
                message.contains("exportable") && message.contains(kty),
                "{message}"
            );
        }
        assert_eq!(
            json_body(&curl(&env, &serve, &policy).1),
            before,
            "a refused patch changed the policy"
        );
        // The same policy takes a patch that leaves the key alone.
        let (status, text) = curl_send(
            &env,
            &serve,
            "PATCH",
            &policy,
            Some(
                r#"{"key_props":{"exportable":false},"lifetime_actions":[{"trigger":{"lifetime_percentage":50},"action":{"action_type":"EmailContacts"}}]}"#,
            ),
        );
        assert_eq!(status, 200, "{text}");
        assert_eq!(
            json_body(&text)["lifetime_actions"][0]["trigger"]["lifetime_percentage"],
            50,
            "{text}"
        );
    }
    assert_eq!(serve.stop(), 0);
}
