//! Verb-level conformance: the same commands, run through the `certroll` binary on a local plan
//! and on the same plan with `kind = "azure"` against `certroll serve` (the real Azure host names
//! resolved to serve's port through the plan's `resolve`, trusted through `ca_file`, the token
//! from the environment), must give the same answers apart from ids, versions and times.
//!
//! Each test here covers a verb that `ops::AZURE_VERBS` lets run on azure (`notify`: in
//! azure_notify.rs).

use crate::conformance::azure::{
    Serve, azure_backend, both_json, dps_table, hub_table, run_plan, sas_key, write_plans,
};
use crate::util::TestEnv;
use serde_json::Value;

/// The token serve's default principal admits and the client plans send.
pub(crate) const TOKEN: &str = "azure-verbs-token";

/// Serve over `serve/plan.toml` (`version = 1` and `plan_body`), beside the two client plans.
pub(crate) fn start_serve(env: &TestEnv, plan_body: &str) -> Serve {
    std::fs::create_dir_all(env.path("serve")).unwrap();
    Serve::start_at(
        env,
        TOKEN,
        "serve/plan.toml",
        &format!("version = 1\n{plan_body}"),
    )
}

/// As [`start_serve`], with serve's clock at `now` (RFC 3339), over the store an earlier serve
/// of the same plan left.
pub(crate) fn start_serve_at(env: &TestEnv, plan_body: &str, now: &str) -> Serve {
    std::fs::create_dir_all(env.path("serve")).unwrap();
    Serve::start_at_time(
        env,
        TOKEN,
        "serve/plan.toml",
        &format!("version = 1\n{plan_body}"),
        Some(now),
    )
}

/// One request to serve's Key Vault as another client of the vault makes it, with curl through
/// the vault's production host name and the client plans' token: `path` (`/certificates/NAME`)
/// at API version 7.5, with the JSON `body` if any. (HTTP status, 0 when there was no answer;
/// the answer's body).
pub(crate) fn key_vault_curl(
    env: &TestEnv,
    serve: &Serve,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, String) {
    let sep = if path.contains('?') { "&" } else { "?" };
    crate::util::curl_json(
        &env.path("ca.pem"),
        serve.port(),
        method,
        "certroll.vault.azure.net",
        &format!("{path}{sep}api-version=7.5"),
        &[format!("Authorization: Bearer {TOKEN}")],
        body,
    )
}

/// The same plan twice: `local/plan.toml` on the local store and `azure/plan.toml` on serve.
fn plans(env: &TestEnv, serve: &Serve, body: &str) {
    let azure = azure_backend(serve, "state.db", "CERTROLL_AZ_TOKEN", "../ca.pem", false);
    write_plans(env, &azure, body);
}

/// Runs certroll with `args` on `which` plan (real time: serve's Key Vault keeps real time).
fn run(env: &TestEnv, which: &str, args: &[&str]) -> crate::util::Run {
    run_plan(env, which, &[("CERTROLL_AZ_TOKEN", TOKEN)], args)
}

/// Runs the same command on both plans and returns both JSON answers, masked.
fn both(env: &TestEnv, args: &[&str]) -> (Value, Value) {
    let [l, a] = both_json(0, args, |which, args| run(env, which, args));
    (mask(l), mask(a))
}

/// Ids, versions, thumbprints, serials and times differ between two runs by nature; every
/// other value must not.
pub(crate) fn mask(v: Value) -> Value {
    match v {
        Value::String(s) => {
            let time = s.len() >= 20 && s.as_bytes()[4] == b'-' && s.as_bytes()[10] == b'T';
            Value::String(if time { "<masked>".into() } else { mask_hex(&s) })
        }
        Value::Array(a) => Value::Array(a.into_iter().map(mask).collect()),
        Value::Object(o) => Value::Object(o.into_iter().map(|(k, v)| (k, mask(v))).collect()),
        other => other,
    }
}

/// A self-signed EC P-256 certificate and its key in one PEM file, made by openssl.
pub(crate) fn make_cert(env: &TestEnv, cn: &str, ca: bool) -> std::path::PathBuf {
    let stem = cn.replace(' ', "-");
    let key = env.path(&format!("{stem}-key.pem"));
    let cert = env.path(&format!("{stem}-cert.pem"));
    let subj = format!("/CN={cn}");
    let ext = if ca {
        "basicConstraints=critical,CA:TRUE"
    } else {
        "basicConstraints=critical,CA:FALSE"
    };
    let (key_s, cert_s) = (key.to_str().unwrap(), cert.to_str().unwrap());
    crate::util::openssl_ca(env, key_s, cert_s, &subj, "30", &[ext]);
    let bundle = format!(
        "{}{}",
        std::fs::read_to_string(&cert).unwrap(),
        std::fs::read_to_string(&key).unwrap()
    );
    env.write(&format!("{stem}-bundle.pem"), &bundle)
}

/// openssl's subject line of a PEM certificate file.
fn subject_of(env: &TestEnv, path: &std::path::Path) -> String {
    env.openssl(&["x509", "-in", path.to_str().unwrap(), "-noout", "-subject"])
        .ok()
        .stdout
}

/// Runs of 16 or more hex digits (ids, versions, thumbprints, serials) inside a string.
pub(crate) fn mask_hex(s: &str) -> String {
    let mut out = String::new();
    let mut run = String::new();
    for c in s.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_hexdigit() {
            run.push(c);
            continue;
        }
        out.push_str(if run.len() >= 16 { "<masked>" } else { &run });
        run.clear();
        out.push(c);
    }
    out.pop();
    out
}

#[test]
fn the_vault_group_and_export_answer_the_same_on_local_and_on_azure_against_serve() {
    let env = TestEnv::new();
    let serve = start_serve(&env, "");
    plans(&env, &serve, "");

    // A certificate with its key, made by openssl, imported on both.
    let web = make_cert(&env, "web", false);
    let web = web.to_str().unwrap();
    let steps: &[&[&str]] = &[
        &["vault", "import", "web", "--file", web, "-o", "json"],
        &["vault", "update", "web", "--tag", "env=prod", "-o", "json"],
        &["vault", "show", "web", "-o", "json"],
        &["vault", "list", "-o", "json"],
        &["vault", "update", "web", "--disable", "-o", "json"],
        &["vault", "update", "web", "--enable", "-o", "json"],
        &["vault", "delete", "web", "-o", "json"],
        &["vault", "list-deleted", "-o", "json"],
        &["vault", "recover", "web", "-o", "json"],
        &["vault", "update", "web", "--untag", "env", "-o", "json"],
        &["vault", "show", "web", "-o", "json"],
    ];
    for step in steps {
        let (mut l, mut a) = both(&env, step);
        // KNOWN DIFFERENCE (reported, not hidden): Key Vault's policy has no `validity_days`
        // (30 days come back as `validity_months = 1`) and adds `attributes`; the policy is
        // compared on what both keep.
        if let (Some(lp), Some(ap)) = (l.get_mut("policy"), a.get_mut("policy")) {
            assert_eq!(
                lp["x509_props"]["subject"], ap["x509_props"]["subject"],
                "{step:?}"
            );
            assert_eq!(lp["key_props"], ap["key_props"], "{step:?}");
            assert_eq!(lp["lifetime_actions"], ap["lifetime_actions"], "{step:?}");
            *lp = Value::Null;
            *ap = Value::Null;
        }
        assert_eq!(l, a, "{step:?}");
    }

    // The certificate Key Vault holds is the one imported: openssl reads what export wrote.
    for which in ["local", "azure"] {
        let out = env.path(&format!("{which}/web.pem"));
        run(
            &env,
            which,
            &["vault", "export", "web", "--out", out.to_str().unwrap()],
        )
        .ok();
        let subject = subject_of(&env, &out);
        assert!(
            subject.contains("CN = web") || subject.contains("CN=web"),
            "{which}: {subject}"
        );
    }

    // The top-level `export` of a plan CA, whose certificate was imported into the vault.
    let bundle = make_cert(&env, "Conf Root", true);
    let (l, a) = both(
        &env,
        &[
            "vault",
            "import",
            "ca-root",
            "--file",
            bundle.to_str().unwrap(),
            "-o",
            "json",
        ],
    );
    assert_eq!(l, a, "vault import ca-root");
    plans(
        &env,
        &serve,
        "[policies.ca]\nkey = { type = \"EC\", curve = \"P-256\" }\nvalidity_days = 30\n\
         [ca.root]\nsubject = \"CN=Conf Root\"\npolicy = \"ca\"\n",
    );
    let mut reports = Vec::new();
    for which in ["local", "azure"] {
        let out = env.path(&format!("{which}/ca-out.pem"));
        let r = run(
            &env,
            which,
            &["export", "ca:root", "--out", out.to_str().unwrap(), "-o", "json"],
        )
        .ok();
        let mut report = mask(r.json());
        report.as_object_mut().unwrap().remove("out");
        reports.push(report);
        assert!(subject_of(&env, &out).contains("Conf Root"), "{which}");
    }
    assert_eq!(reports[0], reports[1], "export ca:root");
}

/// Every verb runs on azure now (`notify` last, tests/it/azure_notify.rs); before anything was
/// issued, `notify` on an azure plan has nothing to notify and creates nothing.
#[test]
fn notify_on_an_azure_plan_before_issue_has_nothing_to_do_and_creates_nothing() {
    let env = TestEnv::new();
    let serve = start_serve(&env, "");
    plans(
        &env,
        &serve,
        "[policies.dev]\nkey = { type = \"EC\", curve = \"P-256\" }\nvalidity_days = 30\n\
         [ca.root]\nsubject = \"CN=Root\"\npolicy = \"dev\"\n\
         [enrollments.gw-1]\nissuer = \"root\"\npolicy = \"dev\"\nhub = \"hub-a\"\n",
    );
    let r = run(&env, "azure", &["notify", "-o", "json"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let report = r.json();
    assert_eq!(report["queued"], 0, "{report}");
    assert_eq!(report["deliveries"], serde_json::json!([]), "{report}");
    assert!(
        !env.path("azure/state.db").exists(),
        "notify before issue changes nothing"
    );
}

// ---------------------------------------------------------------- the rotation scenario

/// CAs, policies and two individual enrollments on hub `conf-hub`.
pub(crate) const FLEET: &str = "[policies.device]\nkey = { type = \"EC\", curve = \"P-256\" }\nvalidity_days = 365\n\
     [policies.ca]\nkey = { type = \"EC\", curve = \"P-256\" }\nvalidity_days = 3650\n\
     key_usage = [\"keyCertSign\", \"cRLSign\", \"digitalSignature\"]\n\
     [ca.root]\nsubject = \"CN=Root\"\npolicy = \"ca\"\n\
     [enrollments.gw-1]\nissuer = \"root\"\npolicy = \"device\"\nhub = \"conf-hub\"\n\
     [enrollments.gw-2]\nissuer = \"root\"\npolicy = \"device\"\nhub = \"conf-hub\"\n";

/// The simulated device behind the delivery hook: it keeps the PFX it is handed and, the first
/// time only (a device registers when it first starts), registers with DPS over mutual TLS with
/// it, as a real device would with curl.
pub(crate) const DEVICE_HOOK: &str = r#"
import json, os, subprocess, sys
port, scope, ca, home = sys.argv[1:5]
job = json.load(sys.stdin)
dev = job["device_id"]
os.makedirs(home, exist_ok=True)
pem = os.path.join(home, dev + ".pem")
subprocess.run(["openssl", "pkcs12", "-in", job["pfx_path"], "-nodes", "-passin", "pass:", "-out", pem],
               check=True, capture_output=True)
booted = os.path.join(home, dev + ".booted")
if not os.path.exists(booted):
    url = f"https://global.azure-devices-provisioning.net:{port}/{scope}/registrations/{dev}/register?api-version=2021-06-01"
    out = subprocess.run(["curl", "-sS", "--fail-with-body", "--cacert", ca, "--cert", pem, "--key", pem,
                          "--resolve", f"global.azure-devices-provisioning.net:{port}:127.0.0.1",
                          "-X", "PUT", "-H", "Content-Type: application/json",
                          "--data", json.dumps({"registrationId": dev}), url], capture_output=True, text=True)
    if out.returncode != 0:
        sys.stderr.write(out.stdout + out.stderr)
        sys.exit(1)
    open(booted, "w").close()
"#;

/// [`DEVICE_HOOK`] for a device that registers with DPS again with every certificate it is
/// handed, not only at its first start.
pub(crate) fn device_hook_every_boot() -> String {
    let first_start = "if not os.path.exists(booted):";
    assert!(DEVICE_HOOK.contains(first_start));
    DEVICE_HOOK.replace(first_start, "if True:")
}

/// The fleet plan on the local store, and on azure against serve with delivery through the
/// device hook.
fn fleet_plans(env: &TestEnv, serve: &Serve) {
    fleet_plans_hook(env, serve, FLEET);
}

/// `fleet` on the local store, and on azure against serve with delivery through the device hook.
pub(crate) fn fleet_plans_hook(env: &TestEnv, serve: &Serve, fleet: &str) {
    env.write("device-hook.py", DEVICE_HOOK);
    fleet_plans_with(
        env,
        serve,
        fleet,
        &hook_delivery(env, serve, "device-hook.py", &[]),
    );
}

/// From here on certificates go over the air, to serve's simulated devices (the factory hook
/// gave each device its first): `fleet`'s plans with delivery by direct method.
pub(crate) fn over_the_air(env: &TestEnv, serve: &Serve, fleet: &str) {
    fleet_plans_with(env, serve, fleet, "delivery = \"direct-method\"\n");
}

/// The `[backend]` lines of a delivery through the Python hook `script` (a file in the test's
/// folder), called as [`DEVICE_HOOK`] is, with serve's port, ID scope and CA file and the devices'
/// folder, then `extra` arguments.
pub(crate) fn hook_delivery(
    env: &TestEnv,
    serve: &Serve,
    script: &str,
    extra: &[std::path::PathBuf],
) -> String {
    let mut args = vec![
        env.path(script).display().to_string(),
        serve.port().to_string(),
        serve.start["id_scope"].as_str().unwrap().to_string(),
        env.path("ca.pem").display().to_string(),
        env.path("devices").display().to_string(),
    ];
    args.extend(extra.iter().map(|p| p.display().to_string()));
    let args: Vec<String> = args.iter().map(|a| format!(", \"{a}\"")).collect();
    format!("delivery = \"hook\"\nhook = [\"python3\"{}]\n", args.concat())
}

/// `fleet` on the local store, and on azure against serve with `delivery` (TOML lines of
/// `[backend]`).
pub(crate) fn fleet_plans_with(env: &TestEnv, serve: &Serve, fleet: &str, delivery: &str) {
    fleet_plans_dps(env, serve, fleet, delivery, "");
}

/// As [`fleet_plans_with`], with `dps_keys` added to the plan's `dps` table (`, rate = 20`).
pub(crate) fn fleet_plans_dps(env: &TestEnv, serve: &Serve, fleet: &str, delivery: &str, dps_keys: &str) {
    let azure = format!(
        "{}{}{delivery}{}",
        azure_backend(serve, "state.db", "CERTROLL_AZ_TOKEN", "../ca.pem", true),
        dps_table(serve, "CERTROLL_AZ_DPS_KEY", dps_keys),
        hub_table(serve, "CERTROLL_AZ_HUB_KEY"),
    );
    write_plans(env, &azure, fleet);
}

/// `roll-primary --breach TARGET --incident INCIDENT --yes -o json`.
pub(crate) fn breach_args<'a>(target: &'a str, incident: &'a str) -> [&'a str; 8] {
    [
        "roll-primary",
        "--breach",
        target,
        "--incident",
        incident,
        "--yes",
        "-o",
        "json",
    ]
}

/// Runs certroll on the azure fleet plan with the SAS keys in its environment.
pub(crate) fn run_fleet(env: &TestEnv, serve: &Serve, which: &str, args: &[&str]) -> crate::util::Run {
    run_fleet_with(env, serve, which, &[], args)
}

/// As [`run_fleet`], with `extra` environment (a fault switch).
pub(crate) fn run_fleet_with(
    env: &TestEnv,
    serve: &Serve,
    which: &str,
    extra: &[(&str, &str)],
    args: &[&str],
) -> crate::util::Run {
    let (dps_key, hub_key) = (sas_key(serve, "certroll-dps").1, sas_key(serve, "conf-hub").1);
    let mut vars = vec![
        ("CERTROLL_AZ_TOKEN", TOKEN),
        ("CERTROLL_AZ_DPS_KEY", dps_key.as_str()),
        ("CERTROLL_AZ_HUB_KEY", hub_key.as_str()),
    ];
    vars.extend_from_slice(extra);
    run_plan(env, which, &vars, args)
}

/// [`run_fleet`] on the azure plan, which must succeed.
pub(crate) fn fleet_ok(env: &TestEnv, serve: &Serve, args: &[&str]) -> crate::util::Run {
    let r = run_fleet(env, serve, "azure", args);
    assert_eq!(r.code, 0, "{args:?}\n{}\n{}", r.stdout, r.stderr);
    r
}

/// Serve over `fleet`, the fleet plans delivering through the device hook, and `fleet` issued
/// on the azure plan.
pub(crate) fn issued_fleet(env: &TestEnv, fleet: &str) -> Serve {
    let serve = start_serve(env, fleet);
    fleet_plans_hook(env, &serve, fleet);
    fleet_ok(env, &serve, &["issue", "-o", "json"]);
    serve
}

/// [`issued_fleet`] of [`FLEET`].
fn issued_on_azure(env: &TestEnv) -> Serve {
    issued_fleet(env, FLEET)
}

/// Issue two devices, status, roll one device's secondary, reruns: the same on both.
#[test]
fn issue_status_and_roll_secondary_of_enrollments_are_the_same_on_local_and_on_azure() {
    let env = TestEnv::new();
    let serve = start_serve(&env, FLEET);
    fleet_plans(&env, &serve);
    let both_fleet = |args: &[&str]| {
        let mut out = Vec::new();
        for which in ["local", "azure"] {
            let r = run_fleet(&env, &serve, which, args);
            assert_eq!(
                r.code, 0,
                "{which}: {args:?}\nstdout:\n{}\nstderr:\n{}",
                r.stdout, r.stderr
            );
            out.push(mask(r.json()));
        }
        let a = out.pop().unwrap();
        let l = out.pop().unwrap();
        if args[0] == "status" {
            let a = crate::azure_verbs2::settle_pending(&l, a);
            return (l, a);
        }
        (l, a)
    };
    let (l, a) = both_fleet(&["issue", "-o", "json"]);
    assert_eq!(l, a, "issue");
    let (l, a) = both_fleet(&["status", "-o", "json"]);
    assert_eq!(l, a, "status after issue");
    let (l, a) = both_fleet(&["issue", "-o", "json"]);
    assert_eq!(l, a, "issue again");
    let (l, a) = both_fleet(&["check", "-o", "json"]);
    assert_eq!(l, a, "check");
    let (l, a) = both_fleet(&["roll-secondary", "device:gw-1", "-o", "json"]);
    assert_eq!(l, a, "roll-secondary");
    let (l, a) = both_fleet(&["status", "-o", "json"]);
    assert_eq!(l, a, "status after roll-secondary");
    // Both slots hold a certificate the hub accepts: zero downtime.
    assert!(a["enrollments"][0]["secondary"].is_object(), "{a}");
    assert!(
        a["devices"][0]["hub_identity"]["secondary_thumbprint"].is_string(),
        "{a}"
    );
    // Exactly one new version per device rolled, and the rerun of issue added nothing.
    let (l, a) = both_fleet(&["vault", "show", "device:gw-1", "-o", "json"]);
    assert_eq!(a["versions"].as_array().map(Vec::len), Some(2), "{a}");
    assert_eq!(l["versions"], a["versions"]);
    let (_, a) = both_fleet(&["vault", "show", "device:gw-2", "-o", "json"]);
    assert_eq!(a["versions"].as_array().map(Vec::len), Some(1), "{a}");
    // The device got its new certificate through the hook, and the PFX it was handed is gone.
    let held = std::fs::read_to_string(env.path("devices/gw-1.pem")).unwrap();
    assert!(held.contains("PRIVATE KEY") && held.contains("CERTIFICATE"));
    // A roll's human output says how the certificate travels by the plan's delivery channel
    // (second trial of issue 12: "install the new certificate on device X" on azure too);
    // certroll holds the devices of a local plan and installs it there.
    for (which, words) in [
        (
            "azure",
            "deliver the new certificate to device `gw-2` through the delivery hook",
        ),
        ("local", "install the new certificate on device `gw-2`"),
    ] {
        let r = run_fleet(
            &env,
            &serve,
            which,
            &["roll-secondary", "device:gw-2", "--dry-run"],
        );
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert!(r.stdout.contains(words), "{which}:\n{}", r.stdout);
    }
}

/// DPS names an enrollment's certificates only by thumbprint. certroll keeps what it made under
/// names it knows (`dev-ID`), so a fresh process reading the enrollments reads those names'
/// versions, never a listing of the whole vault (issue 12, item 4: at 10,000 certificates the
/// listing is what made `status` slow); a certificate the store records as issued to the device
/// (v15) is not read at all.
#[test]
fn reading_enrollments_on_azure_reads_the_devices_own_vault_names_not_the_whole_vault() {
    let env = TestEnv::new();
    let serve = issued_on_azure(&env);
    let listings = || {
        std::fs::read_to_string(env.path("serve.log"))
            .unwrap()
            .lines()
            .filter(|l| l.contains("GET certroll.vault.azure.net/certificates "))
            .count()
    };
    let before = listings();
    // A fresh process: nothing known, every enrollment certificate looked up in the vault.
    let r = run_fleet(&env, &serve, "azure", &["status", "-o", "json"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let status = r.json();
    assert!(
        status["enrollments"][0]["primary"].is_object(),
        "the enrollment's certificate was found: {status}"
    );
    let log = std::fs::read_to_string(env.path("serve.log")).unwrap();
    assert_eq!(listings(), before, "status listed the whole vault:\n{log}");
    // The certificate certroll recorded as issued to it (store v15) is its own proof: no read.
    assert!(
        !log.contains("certroll.vault.azure.net/certificates/dev-gw-1/versions"),
        "{log}"
    );
    // Without that record (a store of v14), the device's own name is read, not the vault.
    let out = std::process::Command::new("sqlite3")
        .arg(env.path("azure/state.db"))
        .arg("DELETE FROM issued_versions;")
        .output()
        .unwrap_or_else(|e| panic!("sqlite3: {e}"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r = run_fleet(&env, &serve, "azure", &["status", "-o", "json"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.json()["enrollments"][0]["primary"].is_object(), "{}", r.stdout);
    let log = std::fs::read_to_string(env.path("serve.log")).unwrap();
    assert_eq!(listings(), before, "status listed the whole vault:\n{log}");
    assert!(
        log.contains("certroll.vault.azure.net/certificates/dev-gw-1/versions"),
        "{log}"
    );
}

/// A roll killed after its new version reached Key Vault but before the local store recorded
/// the step: the version carries the step's mark, and the rerun adopts it instead of making
/// another, so the device gets exactly one new version (issue 12, item 3).
#[test]
fn a_roll_killed_between_its_key_vault_write_and_its_commit_adopts_that_version_on_rerun() {
    let env = TestEnv::new();
    let serve = issued_on_azure(&env);
    let versions = || {
        let r = run_fleet(
            &env,
            &serve,
            "azure",
            &["vault", "show", "device:gw-1", "-o", "json"],
        );
        assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
        r.json()["versions"].as_array().cloned().unwrap_or_default()
    };
    assert_eq!(versions().len(), 1);

    // Killed right after the first Key Vault write of the roll.
    let mut cmd = env.cmd();
    cmd.env_remove("CERTROLL_NOW")
        .env("CERTROLL_AZ_TOKEN", TOKEN)
        .env("CERTROLL_AZ_DPS_KEY", sas_key(&serve, "certroll-dps").1)
        .env("CERTROLL_AZ_HUB_KEY", sas_key(&serve, "conf-hub").1)
        .env("CERTROLL_FAULT_AFTER_VAULT_WRITES", "1")
        .args(["--plan", "azure/plan.toml", "roll-secondary", "device:gw-1"]);
    let out = cmd.output().unwrap();
    assert!(!out.status.success(), "the fault aborts the roll");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("fault injection"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The version is in Key Vault; nothing local points at it yet.
    let orphan = versions();
    assert_eq!(orphan.len(), 2, "the killed run's version exists");

    let r = run_fleet(
        &env,
        &serve,
        "azure",
        &["roll-secondary", "device:gw-1", "-o", "json"],
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let after = versions();
    assert_eq!(after.len(), 2, "the rerun made no second version: {after:?}");
    assert_eq!(after[1]["version"], orphan[1]["version"], "the rerun adopted it");
    // Everything points at the adopted version: the enrollment's secondary slot, the hub.
    let status = run_fleet(&env, &serve, "azure", &["status", "-o", "json"]).ok();
    let thumbprint = after[1]["cert"]["thumbprint"].as_str().unwrap();
    assert!(
        status.stdout.contains(thumbprint),
        "status names the adopted version's thumbprint {thumbprint}:\n{}",
        status.stdout
    );
    // A second rerun changes nothing.
    let r = run_fleet(
        &env,
        &serve,
        "azure",
        &["roll-secondary", "device:gw-1", "-o", "json"],
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(versions().len(), 2);
}

/// Key Vault deletes a certificate a device holds when asked: refusing it is certroll's own
/// guard on the client, which `--force` passes. Serve's Key Vault used to apply that guard to
/// the wire DELETE, so `vault delete --force` of a device's certificate failed on azure, and so
/// did any SDK's delete (trial az11 F1).
#[test]
fn a_device_certificate_deletes_with_force_on_azure_and_any_client_may_delete_one() {
    let env = TestEnv::new();
    let serve = issued_on_azure(&env);

    // certroll's guard, on the client: refused without --force, nothing deleted.
    let r = run_fleet(&env, &serve, "azure", &["vault", "delete", "dev-gw-1"]);
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("held by device(s) gw-1"), "{}", r.stderr);
    assert_eq!(
        key_vault_curl(&env, &serve, "GET", "/certificates/dev-gw-1", None).0,
        200
    );

    let r = fleet_ok(
        &env,
        &serve,
        &["vault", "delete", "dev-gw-1", "--force", "-o", "json"],
    );
    let deleted: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(deleted["deleted"]["name"], "dev-gw-1", "{deleted}");
    let (code, body) = key_vault_curl(&env, &serve, "GET", "/deletedcertificates/dev-gw-1", None);
    assert_eq!(code, 200, "{body}");
    fleet_ok(&env, &serve, &["vault", "recover", "dev-gw-1"]);
    let (code, body) = key_vault_curl(&env, &serve, "GET", "/certificates/dev-gw-1", None);
    assert_eq!(code, 200, "{body}");

    // Another client of the vault deletes gw-2's certificate as Key Vault lets it.
    let (code, body) = key_vault_curl(&env, &serve, "DELETE", "/certificates/dev-gw-2", None);
    assert_eq!(code, 200, "{body}");
    let (code, _) = key_vault_curl(&env, &serve, "GET", "/certificates/dev-gw-2", None);
    assert_eq!(code, 404);
}
