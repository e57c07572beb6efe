//! `certroll serve` as DPS and IoT Hub (issue 11), driven by the official Azure IoT Node SDKs
//! (pinned in tests/sdk/node/package-lock.json) against a real `certroll serve` process, with
//! the device certificates `certroll export` writes; plus the SAS checks, with a signer here.
//!
//! The Node packages come from `CERTROLL_TEST_NODE_MODULES` (set by `.ci/run`) or are installed
//! under target/node on first use with `npm ci`; when neither works the tests fail.

use crate::util::*;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// A small plan: a root and a factory CA, a group of 3 sensors and one gateway, one hub.
const PLAN: &str = r#"version = 1

[policies.device]
key = { type = "EC", curve = "P-256", exportable = true }
validity_days = 365
key_usage = ["digitalSignature"]
extended_key_usage = ["clientAuth"]

[policies.ca]
key = { type = "EC", curve = "P-256", exportable = false }
validity_days = 3650

[ca.root]
subject = "CN=Serve Root CA, O=Example"
policy = "ca"

[ca.factory]
subject = "CN=Serve Factory CA, O=Example"
issuer = "root"
path_len = 0
policy = "ca"

[groups.sensors]
signing_ca = "factory"
hub = "example-hub"
reprovision = "migrate"
device_policy = "device"
devices = { prefix = "sensor-", count = 3 }

[enrollments.gateway-01]
issuer = "factory"
policy = "device"
hub = "example-hub"
"#;

const HUB_HOST: &str = "example-hub.azure-devices.net";
const DPS_HOST: &str = "certroll-dps.azure-devices-provisioning.net";

/// A running `certroll serve`, stopped when dropped.
struct Serve {
    child: Child,
    start: serde_json::Value,
}

impl Serve {
    fn start(env: &TestEnv) -> Serve {
        Serve::start_with(env, &[])
    }

    /// Serve with extra environment variables (the tokens of `[serve.principals]`).
    fn start_with(env: &TestEnv, vars: &[(&str, &str)]) -> Serve {
        let mut cmd = env.cmd();
        cmd.envs(vars.iter().copied())
            .args([
                "--plan",
                "plan.toml",
                "-o",
                "json",
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--ca-out",
                "serve-ca.pem",
            ])
            .env_remove("CERTROLL_NOW");
        let (child, start) = crate::util::spawn_serve(env, cmd);
        Serve { child, start }
    }

    /// The Host-routed listener, `127.0.0.1:PORT`.
    fn addr(&self) -> String {
        self.start["listen"]
            .as_str()
            .unwrap()
            .trim_start_matches("https://")
            .to_string()
    }

    /// The port serve listens on.
    fn port(&self) -> u16 {
        self.addr().rsplit(':').next().unwrap().parse().unwrap()
    }

    fn ca_file(&self, env: &TestEnv) -> PathBuf {
        let given = self.start["ca_file"].as_str().unwrap_or("serve-ca.pem");
        env.path(given)
    }

    /// The connection string of a SAS policy of the service at `host`.
    /// A SharedAccessSignature token of `policy` for the whole of `host`, valid for an hour.
    fn token(&self, host: &str, policy: &str) -> String {
        let later = time::OffsetDateTime::now_utc().unix_timestamp() + 3600;
        sas_token(
            host,
            &key_of(&self.connection_string(host, policy)),
            later,
            policy,
        )
    }

    fn connection_string(&self, host: &str, policy: &str) -> String {
        let mut found = Vec::new();
        collect_strings(&self.start["connection_strings"], &mut found);
        found
            .into_iter()
            .find(|cs| {
                // HostName carries the port when serve does not listen on 443.
                (cs.contains(&format!("HostName={host};")) || cs.contains(&format!("HostName={host}:")))
                    && cs.contains(&format!("SharedAccessKeyName={policy};"))
            })
            .unwrap_or_else(|| panic!("no connection string for {policy}@{host} in {}", self.start))
    }

    fn id_scope(&self) -> String {
        self.start["id_scope"]
            .as_str()
            .expect("id_scope in the start line")
            .to_string()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        // SIGTERM: serve finishes requests in flight and exits.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        for _ in 0..50 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn collect_strings(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(a) => a.iter().for_each(|v| collect_strings(v, out)),
        serde_json::Value::Object(m) => m.values().for_each(|v| collect_strings(v, out)),
        _ => {}
    }
}

/// The pinned Node packages: `CERTROLL_TEST_NODE_MODULES`, or installed into target/node with
/// `npm ci` once per test run. Panics (fails the test) when they cannot be had.
pub(crate) fn node_modules() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    static INSTALL: Mutex<()> = Mutex::new(());
    DIR.get_or_init(|| {
        if let Ok(dir) = std::env::var("CERTROLL_TEST_NODE_MODULES") {
            let dir = PathBuf::from(dir);
            assert!(
                dir.join("azure-iot-provisioning-service").is_dir(),
                "CERTROLL_TEST_NODE_MODULES={} holds no azure-iot-provisioning-service",
                dir.display()
            );
            return dir;
        }
        let _guard = INSTALL.lock().unwrap();
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let prefix = manifest.join("target/node");
        let dir = prefix.join("node_modules");
        let lock = manifest.join("tests/sdk/node/package-lock.json");
        let installed_lock = prefix.join("package-lock.json");
        let current = std::fs::read(&installed_lock).ok() == std::fs::read(&lock).ok();
        if !(current && dir.join("azure-iot-provisioning-service").is_dir()) {
            std::fs::create_dir_all(&prefix).unwrap();
            for f in ["package.json", "package-lock.json"] {
                std::fs::copy(manifest.join("tests/sdk/node").join(f), prefix.join(f)).unwrap();
            }
            let status = Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--prefix"])
                .arg(&prefix)
                .status()
                .unwrap_or_else(|e| {
                    panic!("the Node SDK tests need npm (Node 20) to install the pinned Azure SDKs: {e}")
                });
            assert!(status.success(), "npm ci of tests/sdk/node failed");
        }
        dir
    })
    .clone()
}

/// How long one SDK script may run.
const NODE_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs a script of tests/sdk/node against `serve`; returns what it printed (one JSON object).
fn node(env: &TestEnv, serve: &Serve, script: &str, vars: &[(&str, String)]) -> serde_json::Value {
    let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/node");
    let mut cmd = Command::new("node");
    cmd.arg(scripts.join(script))
        .current_dir(env.dir.path())
        .env("NODE_PATH", node_modules())
        .env("CERTROLL_SERVE_ADDR", serve.addr())
        .env("CERTROLL_SERVE_CA", serve.ca_file(env));
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("the Node SDK tests need node (20): {e}"));
    // A script that hangs (an SDK call that never settles) fails the test instead of hanging it.
    let deadline = std::time::Instant::now() + NODE_TIMEOUT;
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{script} failed (or ran over {NODE_TIMEOUT:?})\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{script} printed no JSON ({e}):\n{stdout}\nstderr:\n{stderr}"))
}

fn issued(env: &TestEnv) {
    env.write("plan.toml", PLAN);
    env.plan_run(&["issue"]).ok();
}

/// A self-signed certificate with `cn`, made by openssl: `NAME.pem` (+ `NAME.key`).
fn openssl_cert(env: &TestEnv, name: &str, cn: &str, ca: bool) -> PathBuf {
    let subj = format!("/CN={cn}");
    let key = format!("{name}.key");
    let pem = format!("{name}.pem");
    let exts: &[&str] = if ca {
        &["basicConstraints=critical,CA:TRUE"]
    } else {
        &[]
    };
    crate::util::openssl_ca(env, &key, &pem, &subj, "30", exts);
    env.path(&pem)
}

fn sha1_of(env: &TestEnv, pem: &Path) -> String {
    let out = env
        .openssl(&[
            "x509",
            "-in",
            pem.to_str().unwrap(),
            "-noout",
            "-fingerprint",
            "-sha1",
        ])
        .ok();
    out.stdout.trim().rsplit('=').next().unwrap().replace(':', "")
}

#[test]
fn the_provisioning_service_sdk_manages_enrollments_groups_bulk_queries_and_registration_states() {
    let env = TestEnv::new();
    issued(&env);
    let leaf = openssl_cert(&env, "leaf1", "node-ind-1", false);
    let leaf2 = openssl_cert(&env, "leaf2", "node-ind-1", false);
    let ca = openssl_cert(&env, "other-ca", "Node Test CA", true);
    for n in 1..=3 {
        openssl_cert(&env, &format!("node-bulk-{n}"), &format!("node-bulk-{n}"), false);
    }
    let serve = Serve::start(&env);
    let out = node(
        &env,
        &serve,
        "dps_service.js",
        &[
            (
                "DPS_CONNECTION_STRING",
                serve.connection_string(DPS_HOST, "provisioningserviceowner"),
            ),
            ("LEAF_PEM", leaf.display().to_string()),
            ("LEAF2_PEM", leaf2.display().to_string()),
            ("CA_PEM", ca.display().to_string()),
            ("HUB_HOST", HUB_HOST.into()),
            ("EXISTING_GROUP", "sensors".into()),
            ("EXISTING_DEVICE", "sensor-2".into()),
            ("BULK_DIR", env.dir.path().display().to_string()),
        ],
    );
    // Create: the service computes `info` and does not echo the certificate.
    let created = &out["created"];
    assert_eq!(
        created["primaryInfo"]["sha1Thumbprint"],
        sha1_of(&env, &leaf),
        "{out}"
    );
    assert_eq!(created["primaryInfo"]["subjectName"], "CN=node-ind-1", "{out}");
    assert_eq!(created["primaryInfo"]["version"], 3, "{out}");
    assert_eq!(created["primaryCertificateEchoed"], false, "{out}");
    assert_eq!(created["provisioningStatus"], "enabled");
    assert_eq!(
        created["initialTwin"]["tags"]["site"], "lab",
        "kept as sent: {out}"
    );
    // A PUT without If-Match only creates; a stale etag is refused; the current one and `*` update.
    assert_eq!(out["createAgain"]["status"], 409, "{out}");
    assert_eq!(out["getEtag"], created["etag"]);
    assert_eq!(out["stale"]["status"], 412, "{out}");
    assert_ne!(
        out["updated"]["etag"], created["etag"],
        "a write changes the etag"
    );
    assert_eq!(out["updated"]["secondaryThumbprint"], sha1_of(&env, &leaf2));
    assert_eq!(out["wildcard"]["provisioningStatus"], "disabled");
    assert_ne!(out["wildcard"]["etag"], out["updated"]["etag"]);
    // Groups: the same rules.
    assert_eq!(
        out["group"]["signingInfo"]["subjectName"], "CN=Node Test CA",
        "{out}"
    );
    assert_eq!(out["groupCreateAgain"]["status"], 409);
    assert_eq!(out["groupUpdated"]["provisioningStatus"], "disabled");
    assert_eq!(out["groupUpdated"]["etagChanged"], true);
    assert_eq!(out["groupDeleteStale"]["status"], 412);
    assert_eq!(out["groupGone"]["status"], 404);
    // Bulk: the second run fails only for the record that exists.
    assert_eq!(out["bulk"]["first"]["isSuccessful"], true, "{out}");
    let second = &out["bulk"]["second"];
    assert_eq!(second["isSuccessful"], false, "{out}");
    assert_eq!(second["errors"].as_array().unwrap().len(), 1, "{out}");
    assert_eq!(second["errors"][0]["registrationId"], "node-bulk-2");
    assert_eq!(second["errors"][0]["errorCode"], 409001);
    // Query, two to a page: every enrollment once, in pages of at most two.
    let ids: Vec<&str> = out["individualQuery"]["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "gateway-01",
            "node-bulk-1",
            "node-bulk-2",
            "node-bulk-3",
            "node-ind-1"
        ],
        "{out}"
    );
    assert_eq!(
        out["individualQuery"]["pages"],
        serde_json::json!([2, 2, 1]),
        "{out}"
    );
    assert_eq!(out["groupQuery"]["ids"], serde_json::json!(["sensors"]), "{out}");
    assert_eq!(
        out["individualSelect"]["ids"], out["individualQuery"]["ids"],
        "{out}"
    );
    assert_eq!(out["groupSelect"]["ids"], out["groupQuery"]["ids"], "{out}");
    // Registration states: what `certroll issue` recorded, per device and per group.
    let reg = &out["registration"];
    assert_eq!(reg["registrationId"], "sensor-2");
    assert_eq!(reg["status"], "assigned");
    assert_eq!(reg["substatus"], "initialAssignment");
    assert_eq!(reg["assignedHub"], HUB_HOST);
    assert_eq!(reg["deviceId"], "sensor-2");
    assert_eq!(
        out["groupRegistrations"],
        serde_json::json!(["sensor-1", "sensor-2", "sensor-3"])
    );
    assert_eq!(out["registrationDeleteStale"]["status"], 412);
    assert_eq!(out["registrationGone"]["status"], 404);
    // Delete: stale etag refused, then gone.
    assert_eq!(out["deleteStale"]["status"], 412);
    assert_eq!(out["deletedGet"]["status"], 404);
    assert_eq!(out["deleteMissing"]["status"], 404);
    drop(serve);

    // The CLI sees what the SDK did: the registration state is gone, the enrollment too.
    let s = env
        .plan_run(&["status", "-o", "json", "device:sensor-2"])
        .ok()
        .json();
    assert!(s["devices"][0]["registration"].is_null(), "{s}");
}

#[test]
fn the_hub_sdk_manages_x509_identities_in_bulk_and_invokes_methods_on_simulated_devices() {
    let env = TestEnv::new();
    issued(&env);
    let (tp1, tp2) = ("A".repeat(40), "b".repeat(64));
    let serve = Serve::start(&env);
    let out = node(
        &env,
        &serve,
        "hub_registry.js",
        &[
            (
                "HUB_CONNECTION_STRING",
                serve.connection_string(HUB_HOST, "iothubowner"),
            ),
            ("TP1", tp1.clone()),
            ("TP2", tp2.clone()),
            ("SIM_DEVICE", "sensor-1".into()),
        ],
    );
    let created = &out["created"];
    assert_eq!(created["deviceId"], "node-hub-1", "{out}");
    assert_eq!(created["type"], "selfSigned");
    assert_eq!(created["primary"], tp1);
    assert_eq!(created["secondary"], tp2.to_uppercase());
    assert_eq!(created["status"], "enabled");
    assert_eq!(out["createAgain"]["status"], 409, "{out}");
    assert_eq!(out["getEtag"], created["etag"]);
    // The SDK's update sends If-Match "*" (quoted): a wildcard.
    assert_eq!(out["updated"]["status"], "disabled", "{out}");
    assert_eq!(out["updated"]["primary"], tp2.to_uppercase());
    assert!(out["updated"]["secondary"].is_null(), "{out}");
    assert_eq!(out["updated"]["etagChanged"], true);
    assert_eq!(out["updateMissing"]["status"], 404, "{out}");
    assert_eq!(out["ca"]["type"], "certificateAuthority");
    assert!(out["ca"]["primary"].is_null());
    // Bulk: all or the conflicting one named; a stale etag refused.
    assert_eq!(out["bulkCreate"]["isSuccessful"], true, "{out}");
    let conflict = &out["bulkConflict"];
    assert_eq!(conflict["status"], 400, "{out}");
    assert_eq!(conflict["body"]["errors"][0]["deviceId"], "node-bulk-a");
    assert_eq!(conflict["body"]["errors"][0]["errorCode"], "DeviceAlreadyExists");
    assert_eq!(
        out["bulkStaleDelete"]["body"]["errors"][0]["errorCode"], "PreconditionFailed",
        "{out}"
    );
    let listed: Vec<&str> = out["listed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for id in [
        "gateway-01",
        "node-bulk-a",
        "node-bulk-b",
        "node-bulk-c",
        "node-hub-1",
        "sensor-1",
    ] {
        assert!(listed.contains(&id), "{id} listed: {listed:?}");
    }
    assert_eq!(out["deletedGet"]["status"], 404);
    assert_eq!(out["deleteMissing"]["status"], 404);
    // Direct methods: the simulated device registers again; an unknown method is the device's
    // 501; a device never connected is DeviceNotOnline; an unknown id DeviceNotFound.
    let reprovisioned = &out["methodReprovision"]["ok"];
    assert_eq!(reprovisioned["status"], 200, "{out}");
    assert_eq!(reprovisioned["payload"]["status"], "assigned", "{out}");
    assert_eq!(
        reprovisioned["payload"]["substatus"], "deviceDataMigrated",
        "{out}"
    );
    assert_eq!(reprovisioned["payload"]["assignedHub"], HUB_HOST);
    let unknown = &out["methodUnknown"]["ok"];
    assert_eq!(unknown["status"], 501, "{out}");
    assert!(
        unknown["payload"]["message"]
            .as_str()
            .unwrap()
            .contains("sensor-1"),
        "{out}"
    );
    assert_eq!(out["methodNotOnline"]["status"], 404, "{out}");
    assert!(
        out["methodNotOnline"]["body"]
            .as_str()
            .unwrap()
            .contains("DeviceNotOnline"),
        "{out}"
    );
    assert_eq!(out["methodNoDevice"]["status"], 404, "{out}");
    assert!(
        out["methodNoDevice"]["body"]
            .as_str()
            .unwrap()
            .contains("DeviceNotFound"),
        "{out}"
    );
    drop(serve);

    // The method's registration is the store's: status shows it.
    let s = env
        .plan_run(&["status", "-o", "json", "device:sensor-1"])
        .ok()
        .json();
    assert_eq!(
        s["devices"][0]["registration"]["substatus"], "deviceDataMigrated",
        "{s}"
    );
}

/// The Python service SDK (`azure-iot-hub` 2.7, tests/sdk/python/hub_registry.py) through the
/// connection string serve prints: X.509 identities (self-signed and CA), etags, 409 on a
/// duplicate, and direct methods on simulated devices (known, unknown, offline, unknown id).
#[test]
fn the_python_hub_sdk_manages_x509_identities_with_etags_and_invokes_methods() {
    let env = TestEnv::new();
    issued(&env);
    let serve = Serve::start(&env);
    let out = Command::new(crate::serve_keyvault::python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/python/hub_registry.py"))
        .current_dir(env.dir.path())
        .env(
            "HUB_CONNECTION_STRING",
            serve.connection_string(HUB_HOST, "iothubowner"),
        )
        .env("REQUESTS_CA_BUNDLE", serve.ca_file(&env))
        .env("TP1", "c".repeat(40))
        .env("TP2", "D".repeat(64))
        .env("SIM_DEVICE", "sensor-1")
        .env("OFFLINE_DEVICE", "sensor-2")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("OK "),
        "hub_registry.py failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{stdout}");
    drop(serve);
    // The method's registration is the store's; the identity the script changed is the store's.
    let s = env
        .plan_run(&["status", "-o", "json", "device:sensor-1"])
        .ok()
        .json();
    assert_eq!(s["devices"][0]["registration"]["status"], "assigned", "{s}");
}

/// Exports a device's chain (`NAME.pem`) and key (`NAME.key.pem`) as `certroll export` writes them.
fn export_device(env: &TestEnv, id: &str, name: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (format!("{name}.pem"), format!("{name}.key.pem"));
    // At the real time, which serve runs at (a certificate a roll made during the test starts
    // now, after the tests' pinned clock).
    let now = now_utc();
    let device = format!("device:{id}");
    env.plan_run(&[
        "--now", &now, "export", &device, "--format", "pem", "--out", &cert,
    ])
    .ok();
    env.plan_run(&[
        "--now",
        &now,
        "export",
        &device,
        "--format",
        "pem",
        "--with-key",
        "--out",
        &key,
    ])
    .ok();
    (env.path(&cert), env.path(&key))
}

fn device_run(env: &TestEnv, serve: &Serve, id: &str, cert: &Path, key: &Path) -> serde_json::Value {
    node(
        env,
        serve,
        "device.js",
        &[
            ("ID_SCOPE", serve.id_scope()),
            ("REGISTRATION_ID", id.into()),
            ("CERT_PEM", cert.display().to_string()),
            ("KEY_PEM", key.display().to_string()),
            ("HUB_HOST", HUB_HOST.into()),
        ],
    )
}

#[test]
fn a_device_provisions_with_its_exported_certificate_over_mutual_tls_and_sends_to_its_hub() {
    let env = TestEnv::new();
    issued(&env);
    let (cert, key) = export_device(&env, "sensor-3", "sensor-3");
    let (gw_cert, gw_key) = export_device(&env, "gateway-01", "gateway-01");
    let serve = Serve::start(&env);
    for (id, cert, key, group) in [
        ("sensor-3", &cert, &key, Some("sensors")),
        ("gateway-01", &gw_cert, &gw_key, None),
    ] {
        let out = device_run(&env, &serve, id, cert, key);
        let p = &out["provisioning"];
        assert_eq!(p["status"], "assigned", "{id}: {out}");
        // Issued before: provisioning again with the same certificate migrates.
        assert_eq!(p["substatus"], "deviceDataMigrated", "{id}: {out}");
        assert_eq!(p["assignedHub"], HUB_HOST, "{id}: {out}");
        assert_eq!(p["deviceId"], id, "{id}: {out}");
        assert_eq!(p["enrollmentGroupId"], serde_json::json!(group), "{id}: {out}");
        assert_eq!(out["hub"]["sent"], true, "{id}: {out}");
    }
    let before = env
        .plan_run(&["status", "-o", "json", "device:sensor-1"])
        .ok()
        .json();
    // Another device's certificate does not make a device of this one: DPS refuses it at the
    // door (the certificate's CN is the registration id a device authenticates as), and
    // sensor-1's own registration state is left as it was.
    let out = device_run(&env, &serve, "sensor-1", &cert, &key);
    assert_eq!(out["provisioning"]["httpStatus"], 401, "{out}");
    assert_eq!(out["hub"]["sent"], false, "{out}");
    assert_eq!(out["hub"]["httpStatus"], 401, "{out}");
    drop(serve);
    let after = env
        .plan_run(&["status", "-o", "json", "device:sensor-1"])
        .ok()
        .json();
    let reg = &after["devices"][0]["registration"];
    assert_eq!(reg["status"], "assigned", "{reg}");
    assert_eq!(
        reg, &before["devices"][0]["registration"],
        "sensor-1's registration state is untouched"
    );
}

#[test]
fn rehearsal_a_breach_roll_while_serve_runs_locks_out_the_old_certificate_and_lets_in_the_new() {
    let env = TestEnv::new();
    issued(&env);
    let (old_cert, old_key) = export_device(&env, "sensor-2", "old");
    let serve = Serve::start(&env);
    let before = device_run(&env, &serve, "sensor-2", &old_cert, &old_key);
    assert_eq!(before["provisioning"]["status"], "assigned", "{before}");
    assert_eq!(before["hub"]["sent"], true, "{before}");

    // The runbook, with serve running on the same store.
    let breach = env.run(&[
        "--plan",
        "plan.toml",
        "--now",
        &now_utc(),
        "roll-primary",
        "--breach",
        "device:sensor-2",
        "--yes",
    ]);
    breach.ok();
    let (new_cert, new_key) = export_device(&env, "sensor-2", "new");
    let registration = |env: &TestEnv| {
        env.plan_run(&["status", "-o", "json", "device:sensor-2"])
            .ok()
            .json()["devices"][0]["registration"]
            .clone()
    };
    let after_breach = registration(&env);

    // The old certificate: refused by DPS (the breach put the device under an individual
    // enrollment holding only the new certificate) and by the hub. It authenticates nobody, so
    // DPS answers 401 at once and the device's registration state stays as it was: whoever
    // holds the old certificate cannot mark the device `failed`.
    let old = device_run(&env, &serve, "sensor-2", &old_cert, &old_key);
    assert_eq!(old["provisioning"]["httpStatus"], 401, "{old}");
    assert_eq!(old["hub"]["sent"], false, "{old}");
    assert_eq!(old["hub"]["httpStatus"], 401, "{old}");
    assert_eq!(
        registration(&env),
        after_breach,
        "the old certificate recorded nothing"
    );
    let scope = serve.id_scope();
    let (code, _, body) = curl_any(
        &env,
        &serve,
        "PUT",
        "global.azure-devices-provisioning.net",
        &format!("/{scope}/registrations/sensor-2/register?api-version=2021-06-01"),
        &["Content-Type: application/json".into()],
        None,
        &[
            "--data",
            r#"{"registrationId":"sensor-2"}"#,
            "--cert",
            old_cert.to_str().unwrap(),
            "--key",
            old_key.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 401, "{body}");
    let refused = json_of("old certificate", code, &body);
    assert_eq!(refused["errorCode"], 401002, "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap_or_default()
            .contains("neither slot"),
        "{refused}"
    );
    assert_eq!(
        registration(&env),
        after_breach,
        "the old certificate recorded nothing"
    );
    // The new one provisions and connects.
    let new = device_run(&env, &serve, "sensor-2", &new_cert, &new_key);
    assert_eq!(new["provisioning"]["status"], "assigned", "{new}");
    assert_eq!(new["provisioning"]["assignedHub"], HUB_HOST, "{new}");
    assert_eq!(new["hub"]["sent"], true, "{new}");
    // And the old one is still refused afterwards.
    let again = device_run(&env, &serve, "sensor-2", &old_cert, &old_key);
    assert_eq!(again["hub"]["sent"], false, "{again}");
}

/// Now, for verbs run while serve (on the real clock) runs.
fn now_utc() -> String {
    certroll::clock::rfc3339(time::OffsetDateTime::now_utc())
}

// ---------------------------------------------------------------- SAS, with a signer here

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `SharedAccessSignature sr=..&sig=..&se=..&skn=..` signed with `key_base64`.
pub(crate) fn sas_token(sr: &str, key_base64: &str, se: i64, skn: &str) -> String {
    use base64::Engine as _;
    let key = base64::engine::general_purpose::STANDARD
        .decode(key_base64)
        .unwrap();
    let mac = aws_lc_rs::hmac::sign(
        &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &key),
        format!("{sr}\n{se}").as_bytes(),
    );
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.as_ref());
    format!(
        "SharedAccessSignature sr={sr}&sig={}&se={se}&skn={skn}",
        url_encode(&sig)
    )
}

fn key_of(connection_string: &str) -> String {
    connection_string
        .split(';')
        .find_map(|p| p.strip_prefix("SharedAccessKey="))
        .unwrap()
        .to_string()
}

/// One request with curl (the emulator's CA trusted, the Azure host resolved to serve), a PUT
/// or POST with `body` or `{}`: (HTTP status, body).
fn curl(
    env: &TestEnv,
    serve: &Serve,
    method: &str,
    host: &str,
    path: &str,
    auth: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let headers: Vec<String> = auth.map(|a| format!("Authorization: {a}")).into_iter().collect();
    let body = (method == "PUT" || method == "POST").then(|| body.unwrap_or("{}"));
    curl_json(
        &serve.ca_file(env),
        serve.port(),
        method,
        host,
        path,
        &headers,
        body,
    )
}

#[test]
fn sas_tokens_are_checked_for_signature_expiry_resource_and_rights() {
    let env = TestEnv::new();
    issued(&env);
    let serve = Serve::start(&env);
    let later = time::OffsetDateTime::now_utc().unix_timestamp() + 3600;
    let dps_key = key_of(&serve.connection_string(DPS_HOST, "provisioningserviceowner"));
    let hub_read_key = key_of(&serve.connection_string(HUB_HOST, "registryRead"));
    let hub_service_key = key_of(&serve.connection_string(HUB_HOST, "service"));
    let get_enrollment = "/enrollments/gateway-01?api-version=2021-10-01";

    let good = sas_token(DPS_HOST, &dps_key, later, "provisioningserviceowner");
    let (code, body) = curl(&env, &serve, "GET", DPS_HOST, get_enrollment, Some(&good), None);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"registrationId\":\"gateway-01\""), "{body}");

    // The table: for DPS and for the hub, each bad credential is a 401 that leaks nothing.
    let hub_owner_key = key_of(&serve.connection_string(HUB_HOST, "iothubowner"));
    let get_device = "/devices/gateway-01?api-version=2021-04-12";
    for (host, key, policy, path, other_host) in [
        (
            DPS_HOST,
            &dps_key,
            "provisioningserviceowner",
            get_enrollment,
            "other-dps.azure-devices-provisioning.net",
        ),
        (
            HUB_HOST,
            &hub_owner_key,
            "iothubowner",
            get_device,
            "other-hub.azure-devices.net",
        ),
    ] {
        let good = sas_token(host, key, later, policy);
        let (code, body) = curl(&env, &serve, "GET", host, path, Some(&good), None);
        assert_eq!(code, 200, "{host}: a good token: {body}");
        let forged = sas_token(host, &hub_read_key, later, policy);
        let expired = sas_token(host, key, 1_000, policy);
        let elsewhere = sas_token(other_host, key, later, policy);
        let unknown_policy = sas_token(host, key, later, "nobody");
        let bearer = "Bearer some-token".to_string();
        for (what, token) in [
            ("forged signature", Some(forged.as_str())),
            ("expired se", Some(expired.as_str())),
            ("another resource", Some(elsewhere.as_str())),
            ("unknown policy", Some(unknown_policy.as_str())),
            ("a bearer token", Some(bearer.as_str())),
            ("no token", None),
        ] {
            let (code, body) = curl(&env, &serve, "GET", host, path, token, None);
            assert_eq!(code, 401, "{host}, {what}: {body}");
            assert!(
                !body.contains("gateway-01\","),
                "{host}, {what}: nothing leaks: {body}"
            );
            assert!(
                !body.contains(key.as_str()),
                "{host}, {what}: no key in the answer: {body}"
            );
        }
    }
    // ARM takes bearer tokens as Key Vault does: a forged one, another service's SAS token and
    // none are 401 with the challenge.
    let arm_path = "/subscriptions/sub-1/resourceGroups/rg-1/providers/Microsoft.Devices/provisioningServices/certroll-dps/certificates?api-version=2022-02-05";
    let arm_token = format!(
        "Bearer {}",
        serve.start["token"].as_str().expect("the generated token")
    );
    let (code, body) = curl(
        &env,
        &serve,
        "GET",
        "management.azure.com",
        arm_path,
        Some(&arm_token),
        None,
    );
    assert_eq!(code, 200, "ARM with the owner's token: {body}");
    let dps_sas = sas_token(DPS_HOST, &dps_key, later, "provisioningserviceowner");
    for (what, token) in [
        ("forged bearer", Some("Bearer forged-token")),
        ("a SAS token", Some(dps_sas.as_str())),
        ("no token", None),
    ] {
        let (code, body) = curl(&env, &serve, "GET", "management.azure.com", arm_path, token, None);
        assert_eq!(code, 401, "ARM, {what}: {body}");
        // ARM's own words, not Key Vault's.
        let want = if what == "forged bearer" {
            "InvalidAuthenticationToken"
        } else {
            "AuthenticationFailed"
        };
        assert_eq!(
            json_of(what, code, &body)["error"]["code"],
            want,
            "ARM, {what}: {body}"
        );
        assert!(
            !body.contains("AKV") && !body.contains("vault"),
            "ARM, {what}: {body}"
        );
        assert!(
            !body.contains("forged-token"),
            "ARM, {what}: the token is not echoed: {body}"
        );
    }
    // A token scoped to one device's resource (`{hub}/devices/sensor-2`) reaches that device
    // and nothing else, as IoT Hub scopes a SAS token's `sr`.
    let scoped = sas_token(
        &format!("{HUB_HOST}/devices/sensor-2"),
        &hub_read_key,
        later,
        "registryRead",
    );
    let (code, body) = curl(
        &env,
        &serve,
        "GET",
        HUB_HOST,
        "/devices/sensor-2?api-version=2021-04-12",
        Some(&scoped),
        None,
    );
    assert_eq!(code, 200, "{body}");
    for other in ["/devices/sensor-1", "/devices/sensor-2x", "/devices"] {
        let (code, body) = curl(
            &env,
            &serve,
            "GET",
            HUB_HOST,
            &format!("{other}?api-version=2021-04-12"),
            Some(&scoped),
            None,
        );
        assert_eq!(code, 401, "{other}: {body}");
    }
    // A policy without the right: registryRead may read the registry, not write it; service
    // (serviceConnect) may not read it.
    let read = sas_token(HUB_HOST, &hub_read_key, later, "registryRead");
    let (code, body) = curl(
        &env,
        &serve,
        "GET",
        HUB_HOST,
        "/devices/sensor-1?api-version=2021-04-12",
        Some(&read),
        None,
    );
    assert_eq!(code, 200, "{body}");
    let (code, body) = curl(
        &env,
        &serve,
        "DELETE",
        HUB_HOST,
        "/devices/sensor-1?api-version=2021-04-12",
        Some(&read),
        None,
    );
    assert_eq!(code, 401, "{body}");
    let service = sas_token(HUB_HOST, &hub_service_key, later, "service");
    let (code, body) = curl(
        &env,
        &serve,
        "GET",
        HUB_HOST,
        "/devices/sensor-1?api-version=2021-04-12",
        Some(&service),
        None,
    );
    assert_eq!(code, 401, "{body}");
    // The device is still there.
    let (code, _) = curl(
        &env,
        &serve,
        "GET",
        HUB_HOST,
        "/devices/sensor-1?api-version=2021-04-12",
        Some(&read),
        None,
    );
    assert_eq!(code, 200);
    // A malformed body is a 400 with a message, not a crash.
    let owner = sas_token(DPS_HOST, &dps_key, later, "provisioningserviceowner");
    let (code, body) = curl(
        &env,
        &serve,
        "PUT",
        DPS_HOST,
        "/enrollments/x-1?api-version=2021-10-01",
        Some(&owner),
        None,
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("registrationId is required"), "{body}");
    // Malformed requests on DPS and the hub: each a 400 with a message, and serve still answers.
    let hub_owner = sas_token(HUB_HOST, &hub_owner_key, later, "iothubowner");
    for (host, token, path) in [
        (DPS_HOST, &owner, "/enrollments/x-1"),
        (HUB_HOST, &hub_owner, "/devices/x-1"),
    ] {
        let (code, body) = curl(
            &env,
            &serve,
            "PUT",
            host,
            &format!("{path}?api-version=2021-10-01"),
            Some(token),
            Some("{not json"),
        );
        assert_eq!(code, 400, "{host} bad JSON: {body}");
        assert!(body.contains("JSON"), "{host} bad JSON: {body}");
        let (code, body) = curl(
            &env,
            &serve,
            "GET",
            host,
            &format!("{path}?api-version=%27%3Bdrop%20table"),
            Some(token),
            None,
        );
        assert_eq!(code, 400, "{host} absurd api-version: {body}");
        assert!(body.contains("api-version"), "{host}: {body}");
        let (code, body) = curl(
            &env,
            &serve,
            "GET",
            host,
            &format!("{path}?api-version=2021-10-01&x=%FF%FE"),
            Some(token),
            None,
        );
        assert_eq!(code, 400, "{host} a query escape that is not UTF-8: {body}");
        let (code, body) = curl(
            &env,
            &serve,
            "GET",
            host,
            &format!(
                "{}/%FF%FE?api-version=2021-10-01",
                path.rsplit_once('/').unwrap().0
            ),
            Some(token),
            None,
        );
        assert_eq!(code, 400, "{host} a path escape that is not UTF-8: {body}");
        assert!(!body.is_empty(), "{host}: the 400 says why");
        let (code, body) = curl_raw(
            &env,
            &serve,
            host,
            &format!("{path}?api-version=2021-10-01"),
            token,
            "text/plain",
            "registrationId=x-1",
        );
        assert_eq!(code, 400, "{host} wrong content type: {body}");
        assert!(body.contains("text/plain"), "{host}: {body}");
    }
    let big = "x".repeat(5 << 20);
    let (code, body) = curl_raw(
        &env,
        &serve,
        DPS_HOST,
        "/enrollments/x-1?api-version=2021-10-01",
        &owner,
        "application/json",
        &big,
    );
    assert_eq!(code, 413, "a body over 4 MiB: {body}");
    let (code, _) = curl(&env, &serve, "GET", DPS_HOST, get_enrollment, Some(&owner), None);
    assert_eq!(code, 200, "serve still answers after the malformed requests");
}

/// A PUT with curl, with the body from a file (large bodies) and a Content-Type of its own.
fn curl_raw(
    env: &TestEnv,
    serve: &Serve,
    host: &str,
    path: &str,
    auth: &str,
    content_type: &str,
    body: &str,
) -> (u16, String) {
    let file = env.path("curl-body");
    std::fs::write(&file, body).unwrap();
    let args = [
        "-H".to_string(),
        format!("Content-Type: {content_type}"),
        "-H".to_string(),
        format!("Authorization: {auth}"),
        "--data-binary".to_string(),
        format!("@{}", file.display()),
    ];
    curl_to(&serve.ca_file(env), serve.port(), "PUT", host, path, &args)
}

/// One ARM request with curl and the generated token of the default principal `owner`: (HTTP
/// status, body as JSON or Null).
fn arm(
    env: &TestEnv,
    serve: &Serve,
    method: &str,
    path: &str,
    if_match: Option<&str>,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let token = serve.start["token"]
        .as_str()
        .expect("the generated token in the start line");
    arm_as(env, serve, token, method, path, if_match, body)
}

/// [`arm`] with the bearer token `token`.
fn arm_as(
    env: &TestEnv,
    serve: &Serve,
    token: &str,
    method: &str,
    path: &str,
    if_match: Option<&str>,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut headers = vec![format!("Authorization: Bearer {token}")];
    headers.extend(if_match.map(|tag| format!("If-Match: {tag}")));
    let (code, answer) = curl_json(
        &serve.ca_file(env),
        serve.port(),
        method,
        "management.azure.com",
        &format!(
            "/subscriptions/sub-1/resourceGroups/rg-1/providers/Microsoft.Devices/provisioningServices/certroll-dps/certificates{path}?api-version=2022-02-05"
        ),
        &headers,
        body.map(|b| b.to_string()).as_deref(),
    );
    (
        code,
        serde_json::from_str(&answer).unwrap_or(serde_json::Value::Null),
    )
}

#[test]
fn arm_ca_certificates_are_verified_by_proof_of_possession_with_etags() {
    let env = TestEnv::new();
    issued(&env);
    openssl_cert(&env, "arm-ca", "ARM Test Root", true);
    let pem = std::fs::read_to_string(env.path("arm-ca.pem")).unwrap();
    let serve = Serve::start(&env);

    let (code, up) = arm(
        &env,
        &serve,
        "PUT",
        "/arm-root",
        None,
        Some(serde_json::json!({"properties": {"certificate": pem}})),
    );
    assert_eq!(code, 200, "{up}");
    assert_eq!(up["properties"]["isVerified"], false, "{up}");
    assert_eq!(
        up["properties"]["thumbprint"],
        sha1_of(&env, &env.path("arm-ca.pem")),
        "{up}"
    );
    assert_eq!(up["name"], "arm-root");
    let etag = up["etag"].as_str().unwrap().to_string();

    // Each step demands the current etag.
    let (code, _) = arm(
        &env,
        &serve,
        "POST",
        "/arm-root/generateVerificationCode",
        None,
        None,
    );
    assert_eq!(code, 400, "If-Match is required");
    let (code, _) = arm(
        &env,
        &serve,
        "POST",
        "/arm-root/generateVerificationCode",
        Some("\"stale\""),
        None,
    );
    assert_eq!(code, 412);
    let (code, code_answer) = arm(
        &env,
        &serve,
        "POST",
        "/arm-root/generateVerificationCode",
        Some(&etag),
        None,
    );
    assert_eq!(code, 200, "{code_answer}");
    let nonce = code_answer["properties"]["verificationCode"]
        .as_str()
        .unwrap()
        .to_string();
    let etag2 = code_answer["etag"].as_str().unwrap().to_string();
    assert_ne!(etag2, etag, "the etag changes after each step");

    // Proof of possession: a certificate with CN = the code, signed by the CA's key (openssl).
    env.openssl(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        &format!("/CN={nonce}"),
        "-keyout",
        "pop.key",
        "-out",
        "pop.csr",
    ])
    .ok();
    env.openssl(&[
        "x509",
        "-req",
        "-in",
        "pop.csr",
        "-CA",
        "arm-ca.pem",
        "-CAkey",
        "arm-ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-out",
        "pop.pem",
    ])
    .ok();
    // Signed by another key: refused, still unverified.
    openssl_cert(&env, "impostor", &nonce, false);
    let impostor = std::fs::read_to_string(env.path("impostor.pem")).unwrap();
    let (code, refused) = arm(
        &env,
        &serve,
        "POST",
        "/arm-root/verify",
        Some(&etag2),
        Some(serde_json::json!({"certificate": impostor})),
    );
    assert_eq!(code, 400, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not signed by"),
        "{refused}"
    );
    let pop = std::fs::read_to_string(env.path("pop.pem")).unwrap();
    let (code, verified) = arm(
        &env,
        &serve,
        "POST",
        "/arm-root/verify",
        Some("*"),
        Some(serde_json::json!({"certificate": pop})),
    );
    assert_eq!(code, 200, "{verified}");
    assert_eq!(verified["properties"]["isVerified"], true, "{verified}");
    let (code, list) = arm(&env, &serve, "GET", "", None, None);
    assert_eq!(code, 200);
    let names: Vec<&str> = list["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"arm-root"), "{list}");

    // A blind PUT over the verified certificate is refused (Azure requires the etag to
    // update), and its proof of possession stays.
    let (code, blind) = arm(
        &env,
        &serve,
        "PUT",
        "/arm-root",
        None,
        Some(serde_json::json!({"properties": {"certificate": pem}})),
    );
    assert_eq!(code, 412, "{blind}");
    assert_eq!(blind["error"]["code"], "PreconditionFailed", "{blind}");
    assert!(
        blind["error"]["message"].as_str().unwrap().contains("If-Match"),
        "{blind}"
    );
    let (code, still) = arm(&env, &serve, "GET", "/arm-root", None, None);
    assert_eq!(code, 200, "{still}");
    assert_eq!(still["properties"]["isVerified"], true, "{still}");
    assert_eq!(still["etag"], verified["etag"], "{still}");

    // Delete: stale etag refused, the current one deletes.
    let current = verified["etag"].as_str().unwrap().to_string();
    let (code, _) = arm(&env, &serve, "DELETE", "/arm-root", Some(&etag), None);
    assert_eq!(code, 412);
    let (code, _) = arm(&env, &serve, "DELETE", "/arm-root", Some(&current), None);
    assert_eq!(code, 200);
    let (code, gone) = arm(&env, &serve, "GET", "/arm-root", None, None);
    assert_eq!(code, 404, "{gone}");
}

/// `gateway-01` of an issued plan, exported, with serve started: where a test of its individual
/// enrollment starts.
struct Gateway {
    serve: Serve,
    /// The gateway's chain and key, as `certroll export` writes them.
    cert: PathBuf,
    key: PathBuf,
    /// The SHA-1 thumbprint of its certificate.
    tp: String,
    /// DPS's and the hub's owner tokens.
    dps: String,
    hub: String,
    /// A PUT body of its individual enrollment: its certificate's thumbprint in the primary slot
    /// (the info a GET gives, as DPS clients send back), on the hub.
    body: String,
}

/// Sets up [`Gateway`] in `env`; `more` adds fields (an `initialTwin`, a `deviceId`) to its
/// enrollment body.
fn gateway_enrollment(env: &TestEnv, more: serde_json::Value) -> Gateway {
    issued(env);
    let (cert, key) = export_device(env, "gateway-01", "gateway-01");
    let serve = Serve::start(env);
    let dps = serve.token(DPS_HOST, "provisioningserviceowner");
    let hub = serve.token(HUB_HOST, "iothubowner");
    let tp = sha1_of(env, &cert);
    let mut body = serde_json::json!({
        "registrationId": "gateway-01",
        "attestation": {"type": "x509", "x509": {"clientCertificates": {"primary": {"info": {"sha1Thumbprint": tp}}}}},
        "iotHubs": [HUB_HOST],
    });
    body.as_object_mut()
        .unwrap()
        .extend(more.as_object().unwrap().clone());
    let body = body.to_string();
    Gateway {
        serve,
        cert,
        key,
        tp,
        dps,
        hub,
        body,
    }
}

#[test]
fn the_initial_twin_of_an_enrollment_is_the_twin_of_a_freshly_assigned_device() {
    let env = TestEnv::new();
    // The enrollment gets an initialTwin; its certificate stays (the client sends back the info
    // a GET gave it, as DPS clients do).
    let g = gateway_enrollment(
        &env,
        serde_json::json!({
            "initialTwin": {"tags": {"site": "lab"}, "properties": {"desired": {"interval": 30}}},
        }),
    );
    let path = "/enrollments/gateway-01?api-version=2021-10-01";
    let (code, answer) = curl(&env, &g.serve, "PUT", DPS_HOST, path, Some(&g.dps), Some(&g.body));
    assert_eq!(code, 409, "without If-Match a PUT only creates: {answer}");
    let (code, answer) = curl_if_match(&env, &g.serve, DPS_HOST, path, &g.dps, "*", &g.body);
    assert_eq!(code, 200, "{answer}");
    // Forget the registration: the next one is a first assignment, which applies the twin.
    let (code, _) = curl(
        &env,
        &g.serve,
        "DELETE",
        DPS_HOST,
        "/registrations/gateway-01?api-version=2021-10-01",
        Some(&g.dps),
        None,
    );
    assert_eq!(code, 204);
    let out = device_run(&env, &g.serve, "gateway-01", &g.cert, &g.key);
    assert_eq!(out["provisioning"]["substatus"], "initialAssignment", "{out}");
    let (code, twin) = curl(
        &env,
        &g.serve,
        "GET",
        HUB_HOST,
        "/twins/gateway-01?api-version=2021-04-12",
        Some(&g.hub),
        None,
    );
    assert_eq!(code, 200, "{twin}");
    let twin: serde_json::Value = serde_json::from_str(&twin).unwrap();
    assert_eq!(twin["tags"]["site"], "lab", "{twin}");
    assert_eq!(twin["properties"]["desired"]["interval"], 30, "{twin}");
}

/// An individual enrollment's `deviceId` is the hub device its device is assigned to, as DPS
/// does (trial az11 F5: serve assigned the registration id): the device SDK is told that id,
/// the hub holds the device's certificate under it and admits the device as it, and the
/// registration state says it.
#[test]
fn a_device_is_assigned_the_device_id_its_individual_enrollment_names() {
    let env = TestEnv::new();
    let g = gateway_enrollment(&env, serde_json::json!({ "deviceId": "custom-gw" }));
    let path = "/enrollments/gateway-01?api-version=2021-10-01";
    let (code, answer) = curl_if_match(&env, &g.serve, DPS_HOST, path, &g.dps, "*", &g.body);
    assert_eq!(code, 200, "{answer}");

    let out = device_run(&env, &g.serve, "gateway-01", &g.cert, &g.key);
    assert_eq!(out["provisioning"]["status"], "assigned", "{out}");
    assert_eq!(out["provisioning"]["deviceId"], "custom-gw", "{out}");
    assert_eq!(out["provisioning"]["registrationId"], "gateway-01", "{out}");
    assert_eq!(out["hub"]["sent"], true, "the hub admits it as custom-gw: {out}");
    let (code, device) = curl(
        &env,
        &g.serve,
        "GET",
        HUB_HOST,
        "/devices/custom-gw?api-version=2021-04-12",
        Some(&g.hub),
        None,
    );
    assert_eq!(code, 200, "{device}");
    let device: serde_json::Value = serde_json::from_str(&device).unwrap();
    assert_eq!(
        device["authentication"]["x509Thumbprint"]["primaryThumbprint"], g.tp,
        "{device}"
    );
    let (code, state) = curl(
        &env,
        &g.serve,
        "GET",
        DPS_HOST,
        "/registrations/gateway-01?api-version=2021-10-01",
        Some(&g.dps),
        None,
    );
    assert_eq!(code, 200, "{state}");
    let state: serde_json::Value = serde_json::from_str(&state).unwrap();
    assert_eq!(state["deviceId"], "custom-gw", "{state}");
}

/// A PUT with an If-Match header, with curl.
fn curl_if_match(
    env: &TestEnv,
    serve: &Serve,
    host: &str,
    path: &str,
    auth: &str,
    tag: &str,
    body: &str,
) -> (u16, String) {
    let headers = [format!("Authorization: {auth}"), format!("If-Match: {tag}")];
    curl_json(
        &serve.ca_file(env),
        serve.port(),
        "PUT",
        host,
        path,
        &headers,
        Some(body),
    )
}

/// One GET with curl straight to a `https://127.0.0.1:PORT` listener (no Host routing, no
/// --resolve): (HTTP status, body).
fn curl_direct(env: &TestEnv, serve: &Serve, url: &str, auth: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-o", "-", "-w", "\n%{http_code}"])
        .arg("--cacert")
        .arg(serve.ca_file(env))
        .args(["-H", &format!("Authorization: {auth}")])
        .arg(url)
        .output()
        .expect("curl must be installed");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[test]
fn the_start_line_names_every_endpoint_and_each_service_has_its_own_loopback_listener() {
    let env = TestEnv::new();
    issued(&env);
    let serve = Serve::start(&env);
    let listeners = serve.start["listeners"].as_object().unwrap().clone();
    let mut ports: Vec<String> = Vec::new();
    for service in ["keyvault", "dps", "dps_device", "hub", "arm"] {
        let url = listeners
            .get(service)
            .and_then(|u| u.as_str())
            .unwrap_or_else(|| panic!("no {service} listener in {}", serve.start));
        assert!(url.starts_with("https://127.0.0.1:"), "{service}: {url}");
        ports.push(url.rsplit(':').next().unwrap().to_string());
    }
    ports.sort();
    ports.dedup();
    assert_eq!(ports.len(), 5, "one port per service: {listeners:?}");
    for key in [
        "vault_url",
        "dps_url",
        "dps_device_url",
        "id_scope",
        "hub_url",
        "arm_url",
        "ca_file",
    ] {
        assert!(serve.start[key].is_string(), "{key} missing: {}", serve.start);
    }

    // The hub's own listener answers as the hub, whatever Host the client sends.
    let token = serve.token(HUB_HOST, "iothubowner");
    let hub = listeners["hub"].as_str().unwrap();
    let (code, body) = curl_direct(
        &env,
        &serve,
        &format!("{hub}/devices/gateway-01?api-version=2021-04-12"),
        &token,
    );
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"deviceId\":\"gateway-01\""), "{body}");
    // ... and the vault's listener answers as the vault (its challenge), not as the hub.
    let vault = listeners["keyvault"].as_str().unwrap();
    let (code, body) = curl_direct(
        &env,
        &serve,
        &format!("{vault}/certificates?api-version=7.5"),
        &token,
    );
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("\"error\""), "{body}");
    let json_start = serve.start.clone();
    drop(serve);

    // The human start line names the same endpoints.
    let mut child = env
        .cmd()
        .args([
            "--plan",
            "plan.toml",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--ca-out",
            "serve-ca.pem",
        ])
        .env_remove("CERTROLL_NOW")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut human = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
    while let Ok(line) = rx.recv_timeout(Duration::from_millis(1500)) {
        human.push('\n');
        human.push_str(&line);
    }
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    for key in [
        "vault_url:",
        "dps_url:",
        "dps_device_url:",
        "id_scope:",
        "hub_url:",
        "arm_url:",
        "ca_file:",
        "keyvault:",
        "dps:",
        "dps_device:",
        "hub:",
        "arm:",
        "hub iothubowner: HostName=example-hub.azure-devices.net:",
        "dps provisioningserviceowner: HostName=certroll-dps.azure-devices-provisioning.net:",
    ] {
        assert!(
            human.contains(key),
            "`{key}` missing from the human start line:\n{human}"
        );
    }
    assert!(
        human.contains(json_start["id_scope"].as_str().unwrap()),
        "the same ID scope: {human}"
    );
    // The keys are the point of a connection string on stdout; never in the log.
    assert!(!stderr.contains("SharedAccessKey"), "{stderr}");
}

/// One request with curl to `host` (resolved to serve), extra headers and curl arguments, and a
/// body of `body_len` bytes of `{` if any: (status, response headers, body).
#[allow(clippy::too_many_arguments)]
fn curl_any(
    env: &TestEnv,
    serve: &Serve,
    method: &str,
    host: &str,
    path: &str,
    headers: &[String],
    body_len: Option<usize>,
    extra: &[&str],
) -> (u16, String, String) {
    let head_file = env.path("curl-head");
    let mut args = vec!["-D".to_string(), head_file.display().to_string()];
    args.extend(extra.iter().map(|a| a.to_string()));
    for h in headers {
        args.extend(["-H".to_string(), h.clone()]);
    }
    if let Some(len) = body_len {
        let file = env.path("curl-body");
        std::fs::write(&file, vec![b'{'; len]).unwrap();
        args.extend([
            "-H".to_string(),
            "Content-Type: application/json".to_string(),
            "--data-binary".to_string(),
            format!("@{}", file.display()),
        ]);
    }
    let (code, body) = curl_to(&serve.ca_file(env), serve.port(), method, host, path, &args);
    let head = std::fs::read_to_string(&head_file).unwrap_or_default();
    (code, head.to_ascii_lowercase(), body)
}

/// The body as JSON, or a panic naming what came instead.
fn json_of(what: &str, code: u16, body: &str) -> serde_json::Value {
    serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("{what}: {code} with a body that is not JSON ({e}): {body:?}"))
}

fn assert_key_vault_shape(what: &str, code: u16, body: &str, want_code: &str) {
    let v = json_of(what, code, body);
    assert_eq!(v["error"]["code"], want_code, "{what}: {body}");
    assert!(
        !v["error"]["message"].as_str().unwrap_or("").is_empty(),
        "{what}: {body}"
    );
}

fn assert_dps_shape(what: &str, code: u16, body: &str, status: u16) {
    let v = json_of(what, code, body);
    let n = v["errorCode"]
        .as_i64()
        .unwrap_or_else(|| panic!("{what}: no numeric errorCode: {body}"));
    assert_eq!(n / 1000, i64::from(status), "{what}: {body}");
    for key in ["trackingId", "message", "timestampUtc"] {
        assert!(v[key].is_string(), "{what}: no {key}: {body}");
    }
}

fn assert_hub_shape(what: &str, code: u16, body: &str, want_code: &str) {
    let v = json_of(what, code, body);
    let message = v["Message"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no Message: {body}"));
    assert!(
        message.starts_with(&format!("ErrorCode:{want_code};")),
        "{what}: {body}"
    );
    assert!(v["ExceptionMessage"].is_string(), "{what}: {body}");
}

#[test]
fn every_error_body_is_json_in_the_shape_of_the_service_answering() {
    let env = TestEnv::new();
    issued(&env);
    let serve = Serve::start(&env);
    let bearer = format!("Authorization: Bearer {}", serve.start["token"].as_str().unwrap());
    let kv = "certroll.vault.azure.net";
    let auth = std::slice::from_ref(&bearer);

    // Key Vault: 405, 413, 414, 431, each with {"error":{"code","message"}}.
    let (code, head, body) = curl_any(
        &env,
        &serve,
        "PUT",
        kv,
        "/certificates?api-version=7.5",
        auth,
        Some(2),
        &[],
    );
    assert_eq!(code, 405, "{body}");
    assert!(head.contains("allow: get"), "{head}");
    assert_key_vault_shape("KV 405", code, &body, "MethodNotAllowed");
    let (code, _, body) = curl_any(
        &env,
        &serve,
        "POST",
        kv,
        "/certificates/big/import?api-version=7.5",
        auth,
        Some(5 << 20),
        &[],
    );
    assert_eq!(code, 413, "{body}");
    assert_key_vault_shape("KV 413", code, &body, "RequestEntityTooLarge");
    let long = format!("/certificates/{}?api-version=7.5", "a".repeat(20_000));
    let (code, _, body) = curl_any(&env, &serve, "GET", kv, &long, auth, None, &[]);
    assert_eq!(code, 414, "{body}");
    assert_key_vault_shape("KV 414", code, &body, "RequestUriTooLong");
    // 50 headers of 8 KB (400 KB; curl sends at most 128 KB of headers, so openssl sends them).
    let filler: String = (0..50)
        .map(|i| format!("X-Filler-{i}: {}\r\n", "f".repeat(8000)))
        .collect();
    let request = format!(
        "GET /certificates?api-version=7.5 HTTP/1.1\r\nHost: {kv}\r\n{bearer}\r\n{filler}Connection: close\r\n\r\n"
    );
    let mut s_client = Command::new("openssl")
        .args([
            "s_client",
            "-quiet",
            "-connect",
            &serve.addr(),
            "-servername",
            kv,
            "-CAfile",
        ])
        .arg(serve.ca_file(&env))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::Write as _;
        // serve answers as soon as the head crosses its limit and closes the connection:
        // s_client may be gone before it took all of the request (a broken pipe here).
        let _ = s_client.stdin.as_mut().unwrap().write_all(request.as_bytes());
    }
    let answer = String::from_utf8_lossy(&s_client.wait_with_output().unwrap().stdout).into_owned();
    assert!(
        answer.starts_with("HTTP/1.1 431"),
        "50 headers of 8 KB get an answer: {answer}"
    );
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    assert_key_vault_shape("KV 431", 431, body, "RequestHeaderFieldsTooLarge");
    // HTTP/1.0 is answered (not refused in the TLS handshake).
    let (code, _, body) = curl_any(
        &env,
        &serve,
        "GET",
        kv,
        "/certificates?api-version=7.5",
        auth,
        None,
        &["--http1.0"],
    );
    assert_eq!(code, 200, "{body}");

    // DPS: ProvisioningServiceErrorDetails.
    let (code, _, body) = curl_any(
        &env,
        &serve,
        "DELETE",
        DPS_HOST,
        "/enrollments/query?api-version=2021-10-01",
        &[],
        None,
        &[],
    );
    assert_eq!(code, 405, "{body}");
    assert_dps_shape("DPS 405", code, &body, 405);
    let (code, _, body) = curl_any(
        &env,
        &serve,
        "PUT",
        DPS_HOST,
        "/enrollments/big?api-version=2021-10-01",
        &[],
        Some(5 << 20),
        &[],
    );
    assert_eq!(code, 413, "{body}");
    assert_dps_shape("DPS 413", code, &body, 413);
    let (code, _, body) = curl_any(
        &env,
        &serve,
        "GET",
        DPS_HOST,
        "/no/such/route?api-version=2021-10-01",
        &[],
        None,
        &[],
    );
    assert_eq!(code, 404, "{body}");
    assert_dps_shape("DPS 404", code, &body, 404);

    // IoT Hub: {"Message":"ErrorCode:...","ExceptionMessage"}.
    let (code, _, body) = curl_any(
        &env,
        &serve,
        "PATCH",
        HUB_HOST,
        "/devices/x?api-version=2021-04-12",
        &[],
        Some(2),
        &[],
    );
    assert_eq!(code, 405, "{body}");
    assert_hub_shape("hub 405", code, &body, "MethodNotAllowed");
    let (code, _, body) = curl_any(&env, &serve, "GET", HUB_HOST, &long, &[], None, &[]);
    assert_eq!(code, 414, "{body}");
    assert_hub_shape("hub 414", code, &body, "RequestUriTooLong");

    // An unknown host: 404 naming every host name served.
    let (code, _, body) = curl_any(
        &env,
        &serve,
        "GET",
        kv,
        "/",
        &["Host: nosuch.example.com".into()],
        None,
        &[],
    );
    assert_eq!(code, 404, "{body}");
    assert_key_vault_shape("unknown host", code, &body, "HostNotFound");
    for name in [
        kv,
        DPS_HOST,
        "global.azure-devices-provisioning.net",
        HUB_HOST,
        "management.azure.com",
    ] {
        assert!(body.contains(name), "the 404 names {name}: {body}");
    }
    drop(serve);

    // Throttled DPS and hub answer 429 in their own shapes, with Retry-After.
    let mut plan = PLAN.to_string();
    plan.push_str("\n[serve.services.dps]\nrate_per_second = 1\nburst = 1\n\n[serve.services.hub]\nrate_per_second = 1\nburst = 1\n");
    env.write("plan.toml", &plan);
    let serve = Serve::start(&env);
    for (host, path) in [
        (DPS_HOST, "/enrollments/gateway-01?api-version=2021-10-01"),
        (HUB_HOST, "/devices/gateway-01?api-version=2021-04-12"),
    ] {
        let answers: Vec<(u16, String, String)> = (0..4)
            .map(|_| curl_any(&env, &serve, "GET", host, path, &[], None, &[]))
            .collect();
        let (code, head, body) = answers
            .iter()
            .find(|(c, _, _)| *c == 429)
            .unwrap_or_else(|| panic!("{host}: no 429 in a burst over the rate: {answers:?}"));
        assert!(head.contains("retry-after:"), "{head}");
        if host == DPS_HOST {
            assert_dps_shape("DPS 429", *code, body, 429);
        } else {
            assert_hub_shape("hub 429", *code, body, "ThrottlingException");
        }
    }
}

/// serve started with `args` (after the plan and `-o json`), its stderr going to `log`.
fn serve_logging_to(env: &TestEnv, args: &[&str], log: &Path) -> Serve {
    let mut child = env
        .cmd()
        .args(["--plan", "plan.toml", "-o", "json"])
        .args(args)
        .args(["serve", "--listen", "127.0.0.1:0", "--ca-out", "serve-ca.pem"])
        .env_remove("CERTROLL_NOW")
        .env_remove("CERTROLL_LOG")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let start = serde_json::from_str(&line).unwrap_or_else(|e| panic!("start line ({e}): {line:?}"));
    Serve { child, start }
}

#[test]
fn the_access_log_has_one_plain_line_per_request_and_never_a_credential() {
    let env = TestEnv::new();
    issued(&env);
    let log = env.path("serve.log");
    let serve = serve_logging_to(&env, &[], &log);
    let key = key_of(&serve.connection_string(HUB_HOST, "iothubowner"));
    let token = serve.token(HUB_HOST, "iothubowner");
    let sig = token
        .split("sig=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .to_string();
    let path = format!("/devices/gateway-01?api-version=2021-04-12&sig={sig}");
    let (code, body) = curl(&env, &serve, "GET", HUB_HOST, &path, Some(&token), None);
    assert_eq!(code, 200, "{body}");
    let (code, _) = curl(
        &env,
        &serve,
        "GET",
        HUB_HOST,
        "/devices/nobody?api-version=2021-04-12",
        Some(&token),
        None,
    );
    assert_eq!(code, 404);
    drop(serve);
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("certroll::serve::access"))
        .collect();
    assert_eq!(
        lines.len(),
        2,
        "one line per request at the default verbosity:\n{text}"
    );
    assert!(
        lines[0].contains(&format!("GET {HUB_HOST}:"))
            && lines[0].contains("/devices/gateway-01 200 ")
            && lines[0].ends_with("ms"),
        "{}",
        lines[0]
    );
    assert!(lines[1].contains("/devices/nobody 404 "), "{}", lines[1]);
    assert!(
        !text.contains('\u{1b}'),
        "no colour codes when stderr is a file:\n{text}"
    );
    for secret in [sig.as_str(), "sig=", "SharedAccessSignature", key.as_str()] {
        assert!(!text.contains(secret), "the log holds `{secret}`:\n{text}");
    }

    // -q: no access log.
    let serve = serve_logging_to(&env, &["-q"], &log);
    let (code, _) = curl(
        &env,
        &serve,
        "GET",
        HUB_HOST,
        "/devices/gateway-01?api-version=2021-04-12",
        Some(&token),
        None,
    );
    assert_eq!(code, 200);
    drop(serve);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !text.contains("certroll::serve::access"),
        "-q silences the access log:\n{text}"
    );
}

#[test]
fn an_enrollment_whose_certificate_cn_is_not_its_registration_id_is_taken_and_the_device_refused_at_registration()
 {
    let env = TestEnv::new();
    issued(&env);
    let serve = Serve::start(&env);
    let dps = serve.token(DPS_HOST, "provisioningserviceowner");
    let cert = openssl_cert(&env, "other", "someone-else", false);
    let pem = std::fs::read_to_string(&cert).unwrap();
    let body = serde_json::json!({
        "registrationId": "lab-07",
        "attestation": {"type": "x509", "x509": {"clientCertificates": {"primary": {"certificate": pem}}}},
    })
    .to_string();
    // DPS takes it (a custom registration id, Azure/azure-iot-sdk-java#277).
    let path = "/enrollments/lab-07?api-version=2021-10-01";
    let (code, answer) = curl(&env, &serve, "PUT", DPS_HOST, path, Some(&dps), Some(&body));
    assert_eq!(code, 200, "{answer}");
    // The device presenting that certificate as lab-07 is refused at the door, and nothing is
    // recorded for lab-07.
    let port = serve.addr().rsplit(':').next().unwrap().to_string();
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-o", "-", "-w", "\n%{http_code}", "-X", "PUT"])
        .arg("--resolve")
        .arg(format!("global.azure-devices-provisioning.net:{port}:127.0.0.1"))
        .arg("--cacert")
        .arg(serve.ca_file(&env))
        .arg("--cert")
        .arg(&cert)
        .arg("--key")
        .arg(env.path("other.key"))
        .args(["-H", "Content-Type: application/json", "--data", r#"{"registrationId":"lab-07"}"#])
        .arg(format!(
            "https://global.azure-devices-provisioning.net:{port}/{}/registrations/lab-07/register?api-version=2021-06-01",
            serve.id_scope()
        ))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (answer, code) = text.rsplit_once('\n').unwrap();
    assert_eq!(code.trim(), "401", "{answer}");
    assert!(
        answer.contains("someone-else") && answer.contains("lab-07"),
        "{answer}"
    );
    let (code, answer) = curl(
        &env,
        &serve,
        "GET",
        DPS_HOST,
        "/registrations/lab-07?api-version=2021-10-01",
        Some(&dps),
        None,
    );
    assert_eq!(code, 404, "no registration state recorded: {answer}");
}

// ---------------------------------------------------------------- ARM roles, formats, messages

const ARM_SCOPE: &str = "/subscriptions/sub-1/resourceGroups/rg-1/providers/Microsoft.Devices/provisioningServices/certroll-dps/certificates";

/// ARM's 403 for `principal` lacking `action` over `scope`.
fn assert_authorization_failed(
    what: &str,
    code: u16,
    body: &serde_json::Value,
    principal: &str,
    action: &str,
    scope: &str,
) {
    assert_eq!(code, 403, "{what}: {body}");
    assert_eq!(body["error"]["code"], "AuthorizationFailed", "{what}: {body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    for needle in [
        format!("The client '{principal}'"),
        format!("does not have authorization to perform action '{action}'"),
        format!("over scope '{scope}'"),
    ] {
        assert!(message.contains(&needle), "{what}: `{needle}` not in {message}");
    }
}

#[test]
fn arm_admits_each_principal_as_far_as_its_role_and_answers_authorization_failed_beyond() {
    let env = TestEnv::new();
    issued(&env);
    let mut plan = PLAN.to_string();
    plan.push_str(
        "\n[serve.principals.ops]\ntoken_env = \"ARM_OPS_TOKEN\"\npermissions = [\"all\"]\narm_role = \"contributor\"\n\
         \n[serve.principals.auditor]\ntoken_env = \"ARM_AUDIT_TOKEN\"\npermissions = [\"get\", \"list\"]\narm_role = \"reader\"\n\
         \n[serve.principals.vault-only]\ntoken_env = \"ARM_VAULT_TOKEN\"\npermissions = [\"all\"]\n",
    );
    env.write("plan.toml", &plan);
    openssl_cert(&env, "arm-ca", "ARM Role Root", true);
    let pem = std::fs::read_to_string(env.path("arm-ca.pem")).unwrap();
    let serve = Serve::start_with(
        &env,
        &[
            ("ARM_OPS_TOKEN", "ops-token"),
            ("ARM_AUDIT_TOKEN", "audit-token"),
            ("ARM_VAULT_TOKEN", "vault-token"),
        ],
    );
    let one = format!("{ARM_SCOPE}/arm-root");
    let upload = serde_json::json!({"properties": {"certificate": pem}});
    let action = |a: &str| format!("Microsoft.Devices/provisioningServices/certificates/{a}");

    // A reader cannot upload; a principal without arm_role cannot even read.
    let (code, body) = arm_as(
        &env,
        &serve,
        "audit-token",
        "PUT",
        "/arm-root",
        None,
        Some(upload.clone()),
    );
    assert_authorization_failed("reader PUT", code, &body, "auditor", &action("write"), &one);
    let (code, body) = arm_as(&env, &serve, "vault-token", "GET", "", None, None);
    assert_authorization_failed(
        "no role, list",
        code,
        &body,
        "vault-only",
        &action("read"),
        ARM_SCOPE,
    );
    let (code, body) = arm_as(&env, &serve, "vault-token", "GET", "/arm-root", None, None);
    assert_authorization_failed("no role, GET", code, &body, "vault-only", &action("read"), &one);

    // A contributor uploads; the reader reads.
    let (code, up) = arm_as(&env, &serve, "ops-token", "PUT", "/arm-root", None, Some(upload));
    assert_eq!(code, 200, "{up}");
    let (code, got) = arm_as(&env, &serve, "audit-token", "GET", "/arm-root", None, None);
    assert_eq!(code, 200, "{got}");
    assert_eq!(got["etag"], up["etag"], "{got}");
    let (code, list) = arm_as(&env, &serve, "audit-token", "GET", "", None, None);
    assert_eq!(code, 200, "{list}");
    assert_eq!(list["value"][0]["name"], "arm-root", "{list}");

    // Every other step is refused to the reader, and changes nothing.
    for (method, path, act, body) in [
        (
            "POST",
            "/arm-root/generateVerificationCode",
            action("generateVerificationCode/action"),
            None,
        ),
        (
            "POST",
            "/arm-root/verify",
            action("verify/action"),
            Some(serde_json::json!({"certificate": pem})),
        ),
        ("DELETE", "/arm-root", action("delete"), None),
    ] {
        let (code, answer) = arm_as(&env, &serve, "audit-token", method, path, Some("*"), body);
        assert_authorization_failed(path, code, &answer, "auditor", &act, &one);
    }
    let (code, still) = arm_as(&env, &serve, "ops-token", "GET", "/arm-root", None, None);
    assert_eq!(code, 200, "{still}");
    assert_eq!(
        still["etag"], up["etag"],
        "the refused steps changed nothing: {still}"
    );

    // The contributor may take every step; an unknown token is 401.
    let (code, answer) = arm_as(
        &env,
        &serve,
        "ops-token",
        "POST",
        "/arm-root/generateVerificationCode",
        Some("*"),
        None,
    );
    assert_eq!(code, 200, "{answer}");
    let (code, answer) = arm_as(&env, &serve, "ops-token", "DELETE", "/arm-root", Some("*"), None);
    assert_eq!(code, 200, "{answer}");
    let (code, answer) = arm_as(&env, &serve, "nobody's-token", "GET", "", None, None);
    assert_eq!(code, 401, "{answer}");
}

#[test]
fn a_ca_certificate_is_taken_as_pem_text_base64_of_pem_or_base64_der() {
    use base64::Engine as _;
    let env = TestEnv::new();
    issued(&env);
    openssl_cert(&env, "fmt-ca", "Format Root", true);
    env.openssl(&[
        "x509",
        "-in",
        "fmt-ca.pem",
        "-outform",
        "DER",
        "-out",
        "fmt-ca.der",
    ])
    .ok();
    let pem = std::fs::read_to_string(env.path("fmt-ca.pem")).unwrap();
    let der = std::fs::read(env.path("fmt-ca.der")).unwrap();
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let thumbprint = sha1_of(&env, &env.path("fmt-ca.pem"));
    let serve = Serve::start(&env);
    for (name, text) in [
        ("as-pem", pem.clone()),
        ("as-base64-pem", b64(pem.as_bytes())),
        ("as-base64-der", b64(&der)),
    ] {
        let (code, up) = arm(
            &env,
            &serve,
            "PUT",
            &format!("/{name}"),
            None,
            Some(serde_json::json!({"properties": {"certificate": text}})),
        );
        assert_eq!(code, 200, "{name}: {up}");
        assert_eq!(up["properties"]["thumbprint"], thumbprint, "{name}: {up}");
        assert_eq!(up["properties"]["certificate"], b64(&der), "{name}: {up}");
    }
    // The DPS service API reads certificates the same way.
    let owner = serve.token(DPS_HOST, "provisioningserviceowner");
    let leaf = std::fs::read_to_string(openssl_cert(&env, "fmt-leaf", "fmt-device", false)).unwrap();
    let body = serde_json::json!({
        "registrationId": "fmt-device",
        "attestation": {"type": "x509", "x509": {"clientCertificates": {"primary": {"certificate": b64(leaf.as_bytes())}}}},
    });
    let (code, answer) = curl(
        &env,
        &serve,
        "PUT",
        DPS_HOST,
        "/enrollments/fmt-device?api-version=2021-10-01",
        Some(&owner),
        Some(&body.to_string()),
    );
    assert_eq!(code, 200, "{answer}");
    assert!(
        answer.contains(&sha1_of(&env, &env.path("fmt-leaf.pem"))),
        "{answer}"
    );
}

/// The message of an error body in any service's shape.
fn message_of(what: &str, code: u16, body: &str) -> String {
    let v = json_of(what, code, body);
    [
        &v["error"]["message"],
        &v["message"],
        &v["Message"],
        &v["ExceptionMessage"],
    ]
    .iter()
    .filter_map(|m| m.as_str())
    .collect::<Vec<_>>()
    .join(" | ")
}

/// A client-facing message is a sentence: no Rust debug text (`Some(..)`, `Err(..)`, struct
/// dumps, byte lists) and no parser internals.
fn assert_plain(what: &str, code: u16, body: &str) {
    assert!((400..500).contains(&code), "{what}: {code} {body}");
    let message = message_of(what, code, body);
    assert!(!message.trim().is_empty(), "{what}: no message in {body}");
    for bad in [
        "Some(",
        "None",
        "Err(",
        "Ok(",
        "UnexpectedTag",
        "Tag(",
        "Parsing Error",
        "nom error",
        "Needed",
        "[45, 45",
        " { ",
        "unsupported algorithm",
    ] {
        assert!(!message.contains(bad), "{what}: `{bad}` in {message:?}");
    }
}

#[test]
fn malformed_certificates_and_bodies_get_plain_sentences_from_every_service() {
    use base64::Engine as _;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let env = TestEnv::new();
    issued(&env);
    let serve = Serve::start(&env);
    openssl_cert(&env, "real", "Real Root", true);
    env.openssl(&["x509", "-in", "real.pem", "-outform", "DER", "-out", "real.der"])
        .ok();
    let der = std::fs::read(env.path("real.der")).unwrap();
    let begin = "-----BEGIN CERTIFICATE-----";
    let end = "-----END CERTIFICATE-----";
    let malformed: Vec<(&str, String)> = vec![
        ("base64 of text", b64(b"this is not a certificate at all")),
        ("an ASN.1 INTEGER", b64(&[0x02, 0x01, 0x00])),
        ("a truncated certificate", b64(&der[..der.len() / 2])),
        ("trailing bytes", b64(&[der.as_slice(), b"xx"].concat())),
        (
            "PEM with bad base64",
            format!("{begin}\n!!!not base64!!!\n{end}\n"),
        ),
        ("PEM without its END line", format!("{begin}\n{}\n", b64(&der))),
        ("PEM of an INTEGER", format!("{begin}\nAgEA\n{end}\n")),
        (
            "base64 of PEM of garbage",
            b64(format!("{begin}\nAgEA\n{end}\n").as_bytes()),
        ),
        ("not base64", "%%%".to_string()),
    ];

    // ARM: upload.
    for (what, text) in &malformed {
        let (code, body) = arm(
            &env,
            &serve,
            "PUT",
            "/bad",
            None,
            Some(serde_json::json!({"properties": {"certificate": text}})),
        );
        assert_plain(&format!("ARM upload, {what}"), code, &body.to_string());
    }
    // DPS: an individual enrollment's and a group's certificate.
    let owner = serve.token(DPS_HOST, "provisioningserviceowner");
    for (what, text) in &malformed {
        let body = serde_json::json!({
            "registrationId": "bad-1",
            "attestation": {"type": "x509", "x509": {"clientCertificates": {"primary": {"certificate": text}}}},
        });
        let (code, answer) = curl(
            &env,
            &serve,
            "PUT",
            DPS_HOST,
            "/enrollments/bad-1?api-version=2021-10-01",
            Some(&owner),
            Some(&body.to_string()),
        );
        assert_plain(&format!("DPS enrollment, {what}"), code, &answer);
        let body = serde_json::json!({
            "enrollmentGroupId": "bad-group",
            "attestation": {"type": "x509", "x509": {"signingCertificates": {"primary": {"certificate": text}}}},
        });
        let (code, answer) = curl(
            &env,
            &serve,
            "PUT",
            DPS_HOST,
            "/enrollmentGroups/bad-group?api-version=2021-10-01",
            Some(&owner),
            Some(&body.to_string()),
        );
        assert_plain(&format!("DPS group, {what}"), code, &answer);
    }
    // Key Vault: import (PEM and PKCS#12) and merge.
    let bearer = format!("Bearer {}", serve.start["token"].as_str().unwrap());
    let kv = "certroll.vault.azure.net";
    for (what, text) in &malformed {
        let body = serde_json::json!({"value": text, "pwd": "x"});
        let (code, answer) = curl(
            &env,
            &serve,
            "POST",
            kv,
            "/certificates/bad/import?api-version=7.5",
            Some(&bearer),
            Some(&body.to_string()),
        );
        assert_plain(&format!("Key Vault import, {what}"), code, &answer);
    }
    let create = r#"{"policy":{"issuer":{"name":"Unknown"},"x509_props":{"subject":"CN=merge-me"},"key_props":{"kty":"EC","crv":"P-256"}}}"#;
    let (code, answer) = curl(
        &env,
        &serve,
        "POST",
        kv,
        "/certificates/merge-me/create?api-version=7.5",
        Some(&bearer),
        Some(create),
    );
    assert_eq!(code, 202, "{answer}");
    for (what, text) in malformed.iter().filter(|(_, t)| !t.contains(begin)) {
        let body = serde_json::json!({"x5c": [text]});
        let (code, answer) = curl(
            &env,
            &serve,
            "POST",
            kv,
            "/certificates/merge-me/pending/merge?api-version=7.5",
            Some(&bearer),
            Some(&body.to_string()),
        );
        assert_plain(&format!("Key Vault merge, {what}"), code, &answer);
    }
    // IoT Hub: thumbprints and authentication that are not what the hub takes.
    let hub_owner = serve.token(HUB_HOST, "iothubowner");
    for (what, body) in [
        (
            "a thumbprint that is not hex",
            r#"{"deviceId":"bad-dev","authentication":{"type":"selfSigned","x509Thumbprint":{"primaryThumbprint":"xyz"}}}"#,
        ),
        (
            "authentication that is not an object",
            r#"{"deviceId":"bad-dev","authentication":[1]}"#,
        ),
        ("a body that is not JSON", "{not json"),
    ] {
        let (code, answer) = curl(
            &env,
            &serve,
            "PUT",
            HUB_HOST,
            "/devices/bad-dev?api-version=2021-04-12",
            Some(&hub_owner),
            Some(body),
        );
        assert_plain(&format!("hub, {what}"), code, &answer);
    }

    // ARM proof of possession: a verification certificate with the wrong CN, and one whose
    // signature is of another key type than the CA's (an EC signature, an RSA CA).
    env.openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "30",
        "-subj",
        "/CN=RSA Root",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-keyout",
        "rsa-ca.key",
        "-out",
        "rsa-ca.pem",
    ])
    .ok();
    let rsa_ca = std::fs::read_to_string(env.path("rsa-ca.pem")).unwrap();
    let (code, up) = arm(
        &env,
        &serve,
        "PUT",
        "/rsa-root",
        None,
        Some(serde_json::json!({"properties": {"certificate": rsa_ca}})),
    );
    assert_eq!(code, 200, "{up}");
    let (code, answer) = arm(
        &env,
        &serve,
        "POST",
        "/rsa-root/generateVerificationCode",
        Some("*"),
        None,
    );
    assert_eq!(code, 200, "{answer}");
    let nonce = answer["properties"]["verificationCode"]
        .as_str()
        .unwrap()
        .to_string();
    let wrong_cn = std::fs::read_to_string(openssl_cert(&env, "wrong-cn", "wrong", false)).unwrap();
    let (code, answer) = arm(
        &env,
        &serve,
        "POST",
        "/rsa-root/verify",
        Some("*"),
        Some(serde_json::json!({"certificate": wrong_cn})),
    );
    assert_plain("ARM verify, wrong CN", code, &answer.to_string());
    assert!(answer.to_string().contains("CN `wrong`"), "{answer}");
    let ec_signed = std::fs::read_to_string(openssl_cert(&env, "ec-pop", &nonce, false)).unwrap();
    let (code, answer) = arm(
        &env,
        &serve,
        "POST",
        "/rsa-root/verify",
        Some("*"),
        Some(serde_json::json!({"certificate": ec_signed})),
    );
    assert_plain("ARM verify, another key type", code, &answer.to_string());
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("not signed by") && message.contains("RSA"),
        "{answer}"
    );
    for (what, text) in &malformed {
        let (code, answer) = arm(
            &env,
            &serve,
            "POST",
            "/rsa-root/verify",
            Some("*"),
            Some(serde_json::json!({"certificate": text})),
        );
        assert_plain(&format!("ARM verify, {what}"), code, &answer.to_string());
    }
}

#[test]
fn a_hub_update_without_authentication_keeps_the_identitys_x509_authentication() {
    let env = TestEnv::new();
    issued(&env);
    let serve = Serve::start(&env);
    let owner = serve.token(HUB_HOST, "iothubowner");
    let tp = "AB".repeat(20);
    let path = "/devices/keep-auth?api-version=2021-04-12";
    let create = format!(
        r#"{{"deviceId":"keep-auth","authentication":{{"type":"selfSigned","x509Thumbprint":{{"primaryThumbprint":"{tp}"}}}}}}"#
    );
    let (code, made) = curl(&env, &serve, "PUT", HUB_HOST, path, Some(&owner), Some(&create));
    assert_eq!(code, 200, "{made}");
    // A status change alone, as a client sends it when it edits only the status.
    let (code, updated) = curl_if_match(
        &env,
        &serve,
        HUB_HOST,
        path,
        &owner,
        "*",
        r#"{"deviceId":"keep-auth","status":"disabled"}"#,
    );
    assert_eq!(code, 200, "{updated}");
    let updated: serde_json::Value = serde_json::from_str(&updated).unwrap();
    assert_eq!(updated["status"], "disabled", "{updated}");
    assert_eq!(updated["authentication"]["type"], "selfSigned", "{updated}");
    assert_eq!(
        updated["authentication"]["x509Thumbprint"]["primaryThumbprint"], tp,
        "{updated}"
    );
    // A create still needs it: certroll serves X.509 identities only.
    let (code, refused) = curl(
        &env,
        &serve,
        "PUT",
        HUB_HOST,
        "/devices/no-auth?api-version=2021-04-12",
        Some(&owner),
        Some(r#"{"deviceId":"no-auth"}"#),
    );
    assert_eq!(code, 400, "{refused}");
    assert!(
        refused.contains("authentication is required when a device identity is created"),
        "{refused}"
    );
}

/// `capabilities` and `statusReason` of a device identity are kept as a client wrote them and
/// answered on PUT, GET, the device list and the registry query's twin (trial az11 F4: serve
/// answered `{"iotEdge": false}` and `null`); a PUT that leaves them out puts IoT Hub's
/// defaults back, as IoT Hub's PUT replaces the identity; a shape IoT Hub refuses gets 400.
#[test]
fn a_hub_identity_keeps_the_capabilities_and_status_reason_a_client_wrote() {
    let env = TestEnv::new();
    issued(&env);
    let serve = Serve::start(&env);
    let owner = serve.token(HUB_HOST, "iothubowner");
    let tp = "AB".repeat(20);
    let path = "/devices/edge-1?api-version=2021-04-12";
    let json = |what: &str, code: u16, body: &str| -> serde_json::Value {
        assert_eq!(code, 200, "{what}: {body}");
        serde_json::from_str(body).unwrap()
    };
    let create = format!(
        r#"{{"deviceId":"edge-1","authentication":{{"type":"selfSigned","x509Thumbprint":{{"primaryThumbprint":"{tp}"}}}}}}"#
    );
    let (code, made) = curl(&env, &serve, "PUT", HUB_HOST, path, Some(&owner), Some(&create));
    let made = json("create", code, &made);
    assert_eq!(
        made["capabilities"],
        serde_json::json!({"iotEdge": false}),
        "{made}"
    );
    assert_eq!(made["statusReason"], serde_json::Value::Null, "{made}");

    let mut edited = made.clone();
    edited["capabilities"] = serde_json::json!({"iotEdge": true});
    edited["statusReason"] = serde_json::json!("moved to rack 7");
    let etag = made["etag"].as_str().unwrap().to_string();
    let (code, written) = curl_if_match(
        &env,
        &serve,
        HUB_HOST,
        path,
        &owner,
        &format!("\"{etag}\""),
        &edited.to_string(),
    );
    let written = json("update", code, &written);
    let (code, read) = curl(&env, &serve, "GET", HUB_HOST, path, Some(&owner), None);
    let read = json("get", code, &read);
    let (code, listed) = curl(
        &env,
        &serve,
        "GET",
        HUB_HOST,
        "/devices?api-version=2021-04-12",
        Some(&owner),
        None,
    );
    let listed = json("list", code, &listed);
    let listed = listed
        .as_array()
        .and_then(|l| l.iter().find(|d| d["deviceId"] == "edge-1"))
        .cloned()
        .unwrap_or_else(|| panic!("edge-1 not listed: {listed}"));
    let (code, twins) = curl(
        &env,
        &serve,
        "POST",
        HUB_HOST,
        "/devices/query?api-version=2021-04-12",
        Some(&owner),
        Some(r#"{"query":"SELECT * FROM devices WHERE deviceId = 'edge-1'"}"#),
    );
    let twins = json("query", code, &twins);
    for (what, device) in [
        ("update", &written),
        ("get", &read),
        ("list", &listed),
        ("twin", &twins[0]),
    ] {
        assert_eq!(device["capabilities"]["iotEdge"], true, "{what}: {device}");
        assert_eq!(device["statusReason"], "moved to rack 7", "{what}: {device}");
    }
    assert_eq!(
        read["authentication"]["x509Thumbprint"]["primaryThumbprint"], tp,
        "{read}"
    );

    // A PUT without them replaces them with IoT Hub's defaults.
    let (code, plain) = curl_if_match(&env, &serve, HUB_HOST, path, &owner, "*", &create);
    let plain = json("plain update", code, &plain);
    assert_eq!(
        plain["capabilities"],
        serde_json::json!({"iotEdge": false}),
        "{plain}"
    );
    assert_eq!(plain["statusReason"], serde_json::Value::Null, "{plain}");

    for (field, value, said) in [
        ("capabilities", r#""edge""#, "capabilities must be an object"),
        (
            "capabilities",
            r#"{"iotEdge":"yes"}"#,
            "capabilities.iotEdge must be true or false",
        ),
        ("statusReason", "7", "statusReason must be text"),
    ] {
        let body = create.replacen('{', &format!(r#"{{"{field}":{value},"#), 1);
        let (code, refused) = curl_if_match(&env, &serve, HUB_HOST, path, &owner, "*", &body);
        assert_eq!(code, 400, "{field}={value}: {refused}");
        assert!(refused.contains(said), "{field}={value}: {refused}");
    }
}

#[test]
fn oversized_request_heads_get_431_in_the_services_shape_without_waiting_for_their_end() {
    let env = TestEnv::new();
    issued(&env);
    let serve = Serve::start(&env);
    let kv = "certroll.vault.azure.net";
    let bearer = format!("Authorization: Bearer {}", serve.start["token"].as_str().unwrap());
    // 50 fields of 8 KB: curl sends the first 128 KB of them and then waits for an answer, so
    // serve must answer before the head ends (it never does).
    let mut big: Vec<String> = (0..50)
        .map(|i| format!("X-Filler-{i}: {}", "f".repeat(8192)))
        .collect();
    big.push(bearer.clone());
    let started = std::time::Instant::now();
    let (code, head, body) = curl_any(
        &env,
        &serve,
        "GET",
        kv,
        "/certificates?api-version=7.5",
        &big,
        None,
        &[],
    );
    assert_eq!(code, 431, "{head}{body}");
    assert_key_vault_shape("KV 50 x 8 KB", code, &body, "RequestHeaderFieldsTooLarge");
    assert!(head.contains("connection: close"), "{head}");
    // Well below hyper's 10 s header timeout, which ended such a connection without an answer.
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    let (code, _, body) = curl_any(
        &env,
        &serve,
        "GET",
        DPS_HOST,
        "/enrollments/gateway-01?api-version=2021-10-01",
        &big,
        None,
        &[],
    );
    assert_eq!(code, 431, "{body}");
    assert_dps_shape("DPS 50 x 8 KB", code, &body, 431);
    // More fields than serve takes (hyper alone answered a bare 431).
    let many: Vec<String> = (0..300).map(|i| format!("X-F{i}: 1")).collect();
    let (code, _, body) = curl_any(
        &env,
        &serve,
        "GET",
        HUB_HOST,
        "/devices/gateway-01?api-version=2021-04-12",
        &many,
        None,
        &[],
    );
    assert_eq!(code, 431, "{body}");
    assert_hub_shape("hub 300 fields", code, &body, "RequestHeaderFieldsTooLarge");
    assert!(body.contains("more than 256 header fields"), "{body}");
    // Heads within the limits, and bodies beyond them, are served as before.
    let (code, _, body) = curl_any(
        &env,
        &serve,
        "GET",
        kv,
        "/certificates?api-version=7.5",
        &[bearer.clone(), format!("X-Near: {}", "n".repeat(60_000))],
        None,
        &[],
    );
    assert_eq!(code, 200, "{body}");
    let pem = std::fs::read_to_string(openssl_cert(&env, "body-ca", "Body Root", true)).unwrap();
    let padded = serde_json::json!({"properties": {"certificate": pem}, "padding": "p".repeat(300_000)});
    let (code, answer) = curl_raw(
        &env,
        &serve,
        "management.azure.com",
        &format!("{ARM_SCOPE}/padded?api-version=2022-02-05"),
        &format!("Bearer {}", serve.start["token"].as_str().unwrap()),
        "application/json",
        &padded.to_string(),
    );
    assert_eq!(code, 200, "a 300 KB body is not a head: {answer}");
}

#[test]
fn a_device_reads_its_twin_and_polls_for_cloud_to_device_messages_with_its_certificate() {
    let env = TestEnv::new();
    issued(&env);
    let (cert, key) = export_device(&env, "sensor-3", "sensor-3");
    let serve = Serve::start(&env);
    let tls = ["--cert", cert.to_str().unwrap(), "--key", key.to_str().unwrap()];
    let get = |path: &str, extra: &[&str]| curl_any(&env, &serve, "GET", HUB_HOST, path, &[], None, extra);
    let (code, _, body) = get("/twins/sensor-3?api-version=2021-04-12", &tls);
    assert_eq!(code, 200, "{body}");
    let twin = json_of("device twin read", code, &body);
    assert_eq!(twin["deviceId"], "sensor-3", "{twin}");
    assert_eq!(twin["status"], "enabled", "{twin}");
    assert!(twin["properties"]["desired"].is_object(), "{twin}");
    // Nothing is queued for the device: 204, under either spelling of the path.
    for path in ["devicebound", "deviceBound"] {
        let (code, _, body) = get(
            &format!("/devices/sensor-3/messages/{path}?api-version=2021-04-12"),
            &tls,
        );
        assert_eq!((code, body.as_str()), (204, ""), "{path}");
    }
    // The certificate admits its own device only, and no certificate admits nobody.
    let (code, _, body) = get("/twins/sensor-1?api-version=2021-04-12", &tls);
    assert_hub_shape("another device's twin", code, &body, "IotHubUnauthorizedAccess");
    assert_eq!(code, 401, "{body}");
    let (code, _, body) = get(
        "/devices/sensor-1/messages/devicebound?api-version=2021-04-12",
        &tls,
    );
    assert_eq!(code, 401, "{body}");
    let (code, _, body) = get("/twins/sensor-3?api-version=2021-04-12", &[]);
    assert_hub_shape(
        "twin read without credentials",
        code,
        &body,
        "IotHubUnauthorizedAccess",
    );
    assert_eq!(code, 401, "{body}");
}

#[test]
fn a_request_body_that_stops_arriving_gets_408_and_its_connection_closed() {
    let env = TestEnv::new();
    issued(&env);
    let serve = Serve::start(&env);
    let bearer = format!("Authorization: Bearer {}", serve.start["token"].as_str().unwrap());
    // The head promises 100 bytes; 8 come, then nothing (curl waits for an answer).
    let started = std::time::Instant::now();
    let (code, head, body) = curl_any(
        &env,
        &serve,
        "PATCH",
        "certroll.vault.azure.net",
        "/certificates/stalled?api-version=7.5",
        &[
            bearer,
            "Content-Type: application/json".into(),
            "Content-Length: 100".into(),
        ],
        None,
        &["--data-binary", r#"{"tags":"#, "--max-time", "90"],
    );
    let waited = started.elapsed();
    assert_eq!(code, 408, "{head}{body}");
    assert_key_vault_shape("stalled body", code, &body, "RequestTimeout");
    assert!(body.contains("stopped arriving"), "{body}");
    assert!(head.contains("connection: close"), "{head}");
    assert!(
        waited >= Duration::from_secs(29) && waited < Duration::from_secs(60),
        "answered after {waited:?}"
    );
    // Others are served meanwhile and after.
    let (code, _, body) = curl_any(
        &env,
        &serve,
        "GET",
        DPS_HOST,
        "/enrollments/gateway-01?api-version=2021-10-01",
        &[],
        None,
        &[],
    );
    assert_eq!(code, 401, "served after the stalled body: {body}");
}

#[test]
fn a_version_1_device_certificate_from_an_unknown_ca_gets_401_with_the_reason_not_a_tls_alert() {
    let env = TestEnv::new();
    issued(&env);
    openssl_cert(&env, "stranger-ca", "Stranger Root", true);
    env.openssl(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        "/CN=cadev",
        "-keyout",
        "cadev.key",
        "-out",
        "cadev.csr",
    ])
    .ok();
    env.openssl(&[
        "x509",
        "-req",
        "-in",
        "cadev.csr",
        "-CA",
        "stranger-ca.pem",
        "-CAkey",
        "stranger-ca.key",
        "-CAcreateserial",
        "-days",
        "5",
        "-out",
        "cadev.pem",
    ])
    .ok();
    let serve = Serve::start(&env);
    let owner = serve.token(HUB_HOST, "iothubowner");
    let create = serde_json::json!({"deviceId": "cadev", "status": "enabled",
        "authentication": {"type": "certificateAuthority"}});
    let (code, made) = curl(
        &env,
        &serve,
        "PUT",
        HUB_HOST,
        "/devices/cadev?api-version=2021-04-12",
        Some(&owner),
        Some(&create.to_string()),
    );
    assert_eq!(code, 200, "{made}");
    // `openssl x509 -req` makes a version 1 certificate, which the TLS layer's parser refused
    // (a handshake alert). The device presents its leaf, alone or with the stranger CA: the hub
    // holds no verified CA it chains to, and says so in HTTP, not with a TLS alert.
    let chain = env.path("cadev-chain.pem");
    let both = std::fs::read_to_string(env.path("cadev.pem")).unwrap()
        + &std::fs::read_to_string(env.path("stranger-ca.pem")).unwrap();
    std::fs::write(&chain, both).unwrap();
    let key = env.path("cadev.key");
    for (what, cert) in [("leaf", env.path("cadev.pem")), ("leaf and CA", chain)] {
        let (code, head, body) = curl_any(
            &env,
            &serve,
            "POST",
            HUB_HOST,
            "/devices/cadev/messages/events?api-version=2021-04-12",
            &["Content-Type: application/json".into()],
            None,
            &[
                "--data",
                "{}",
                "--cert",
                cert.to_str().unwrap(),
                "--key",
                key.to_str().unwrap(),
            ],
        );
        assert_eq!(code, 401, "{what}: {head}{body}");
        assert_hub_shape(what, code, &body, "IotHubUnauthorizedAccess");
        assert!(body.contains("does not chain to a verified CA"), "{what}: {body}");
    }
}

#[test]
fn wrong_typed_enrollment_fields_and_device_ids_iot_hub_refuses_get_400_naming_them() {
    let env = TestEnv::new();
    issued(&env);
    let serve = Serve::start(&env);
    let pem = openssl_cert(&env, "x1", "x1", false);
    let pem = std::fs::read_to_string(pem).unwrap();
    let dps = serve.token(DPS_HOST, "provisioningserviceowner");
    let enrollment = |field: &str, value: serde_json::Value| {
        let mut body = serde_json::json!({
            "registrationId": "x1",
            "attestation": {"type": "x509", "x509": {"clientCertificates": {"primary": {"certificate": pem}}}},
        });
        body[field] = value;
        body.to_string()
    };
    let group = |field: &str, value: serde_json::Value| {
        let mut body = serde_json::json!({
            "enrollmentGroupId": "g1",
            "attestation": {"type": "x509", "x509": {"signingCertificates": {"primary": {"certificate": pem}}}},
        });
        body[field] = value;
        body.to_string()
    };
    use serde_json::json;
    for (field, value) in [
        ("reprovisionPolicy", json!("yes")),
        ("reprovisionPolicy", json!(["x"])),
        ("iotHubHostName", json!(12)),
        ("initialTwin", json!("notanobject")),
        ("capabilities", json!(7)),
        ("iotHubs", json!("example-hub.azure-devices.net")),
    ] {
        for (path, body) in [
            (
                "/enrollments/x1?api-version=2021-10-01",
                enrollment(field, value.clone()),
            ),
            (
                "/enrollmentGroups/g1?api-version=2021-10-01",
                group(field, value.clone()),
            ),
        ] {
            let what = format!("{path} with {field}: {value}");
            let (code, answer) = curl(&env, &serve, "PUT", DPS_HOST, path, Some(&dps), Some(&body));
            assert_eq!(code, 400, "{what}: {answer}");
            assert_dps_shape(&what, code, &answer, 400);
            assert_plain(&what, code, &answer);
            let message = message_of(&what, code, &answer);
            assert!(
                message.contains(field)
                    && message.contains(&value.as_str().map_or(value.to_string(), |s| format!("`{s}`"))),
                "{what}: {message}"
            );
            // Nothing was stored.
            let (code, _) = curl(&env, &serve, "GET", DPS_HOST, path, Some(&dps), None);
            assert_eq!(code, 404, "{what} stored a record");
        }
    }
    // The same records with the right types are taken.
    let (code, answer) = curl(
        &env,
        &serve,
        "PUT",
        DPS_HOST,
        "/enrollments/x1?api-version=2021-10-01",
        Some(&dps),
        Some(&enrollment(
            "reprovisionPolicy",
            json!({"updateHubAssignment": false}),
        )),
    );
    assert_eq!(code, 200, "{answer}");
    let stored: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(
        stored["reprovisionPolicy"]["updateHubAssignment"], false,
        "{answer}"
    );

    let hub = serve.token(HUB_HOST, "iothubowner");
    let tp = "a".repeat(40);
    let identity = |id: &str| {
        json!({"deviceId": id, "authentication": {"type": "selfSigned", "x509Thumbprint": {"primaryThumbprint": tp}}})
            .to_string()
    };
    let long = "d".repeat(129);
    for (id, names) in [
        (long.as_str(), "longer than the 128 characters"),
        ("dev%2Fone", "'/'"),
        ("dev%20one", "' '"),
        ("d%C3%A9v", "'é'"),
    ] {
        let plain_id = id.replace("%2F", "/").replace("%20", " ").replace("%C3%A9", "é");
        let path = format!("/devices/{id}?api-version=2021-04-12");
        let (code, answer) = curl(
            &env,
            &serve,
            "PUT",
            HUB_HOST,
            &path,
            Some(&hub),
            Some(&identity(&plain_id)),
        );
        assert_eq!(code, 400, "{id}: {answer}");
        assert_hub_shape(id, code, &answer, "ArgumentInvalid");
        let message = message_of(id, code, &answer);
        assert!(message.contains(names), "{id}: {message}");
        let (code, _) = curl(&env, &serve, "GET", HUB_HOST, &path, Some(&hub), None);
        assert_eq!(code, 404, "{id} was stored");
    }
    // Bulk is held to the same rule; the edges (128 characters, every special) are taken.
    let bulk = json!([{"id": long, "importMode": "create", "authentication": {"type": "selfSigned", "x509Thumbprint": {"primaryThumbprint": tp}}}]);
    let (code, answer) = curl(
        &env,
        &serve,
        "POST",
        HUB_HOST,
        "/devices?api-version=2021-04-12",
        Some(&hub),
        Some(&bulk.to_string()),
    );
    assert_eq!(code, 400, "bulk took a 129-character id: {answer}");
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["errors"][0]["errorCode"], "ArgumentInvalid", "{answer}");
    assert!(
        answer["errors"][0]["errorStatus"]
            .as_str()
            .unwrap()
            .contains("longer than the 128 characters"),
        "{answer}"
    );
    let (code, _) = curl(
        &env,
        &serve,
        "GET",
        HUB_HOST,
        &format!("/devices/{long}?api-version=2021-04-12"),
        Some(&hub),
        None,
    );
    assert_eq!(code, 404, "bulk stored a 129-character id");
    for id in ["d".repeat(128), "a-:.+%_#*?!(),=@;$'z".to_string()] {
        let encoded = url_encode(&id);
        let path = format!("/devices/{encoded}?api-version=2021-04-12");
        let (code, answer) = curl(
            &env,
            &serve,
            "PUT",
            HUB_HOST,
            &path,
            Some(&hub),
            Some(&identity(&id)),
        );
        assert_eq!(code, 200, "{id}: {answer}");
    }
}
