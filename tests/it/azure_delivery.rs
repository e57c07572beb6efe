//! Delivery on azure against `certroll serve` (issue 12 item 3): what a device holds is what
//! the services saw it present, not what certroll issued it; delivery hooks run side by side up
//! to `[backend] delivery_concurrency`; the direct methods of `reprovision --force` are awaited
//! together.

use crate::azure_foreign::change_enrollment;
use crate::azure_verbs::{
    DEVICE_HOOK, FLEET, fleet_ok, fleet_plans_hook, fleet_plans_with, hook_delivery, run_fleet, start_serve,
};
use crate::azure_verbs2::{device, factory_register};
use crate::conformance::azure::Serve;
use crate::util::TestEnv;
use serde_json::Value;

/// `status -o json` of `which` plan.
fn status(env: &TestEnv, serve: &Serve, which: &str) -> Value {
    run_fleet(env, serve, which, &["status", "-o", "json"])
        .ok()
        .json()
}

/// With `delivery = "none"` a roll's new certificate reaches no device: `status` on azure shows
/// the certificate the device presented to DPS as installed and the new one as pending (left to
/// the operator), and `check` warns about it; once the operator hands it out and the device
/// registers with it, both say so. The local backend installs on its simulated devices at once,
/// so its status keeps showing the new certificate installed and nothing pending.
#[test]
fn with_delivery_none_status_and_check_show_what_the_device_presented_and_the_new_one_pending() {
    let env = TestEnv::new();
    let serve = start_serve(&env, FLEET);
    fleet_plans_with(&env, &serve, FLEET, "delivery = \"none\"\n");
    run_fleet(&env, &serve, "local", &["issue", "-o", "json"]).ok();
    let r = run_fleet(&env, &serve, "azure", &["issue", "-o", "json"]);
    // Nothing reached the devices, by the operator's choice: not a rejection (fifth azure
    // trial: as rolls with `none`, exit 0).
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.json()["rejected"], serde_json::json!([]), "{}", r.stdout);

    // Before any device registered: nothing presented, the issued certificate pending.
    let s = status(&env, &serve, "azure");
    let gw1 = device(&s, "gw-1");
    assert_eq!(gw1["installed"], Value::Null, "{gw1}");
    assert_eq!(gw1["pending"]["delivery"], "none", "{gw1}");
    let first = gw1["pending"]["cert"]["thumbprint"].clone();
    assert!(first.is_string(), "{gw1}");

    // The factory: the operator exports each device's certificate, the device registers.
    for id in ["gw-1", "gw-2"] {
        factory_register(&env, &serve, id);
    }
    let s = status(&env, &serve, "azure");
    let gw1 = device(&s, "gw-1");
    assert_eq!(gw1["installed"]["thumbprint"], first, "{gw1}");
    assert_eq!(gw1["registration"]["cert_thumbprint"], first, "{gw1}");
    assert_eq!(gw1["pending"], Value::Null, "{gw1}");
    let c = run_fleet(&env, &serve, "azure", &["check", "-o", "json"]);
    assert_eq!(c.code, 0, "{}", c.stdout);

    // A roll: the new certificate is in the vault, the enrollment and the hub, not on the device.
    run_fleet(
        &env,
        &serve,
        "local",
        &["roll-secondary", "device:gw-1", "-o", "json"],
    )
    .ok();
    let r = run_fleet(
        &env,
        &serve,
        "azure",
        &["roll-secondary", "device:gw-1", "-o", "json"],
    )
    .ok();
    let new = r.json()["devices"][0]["new_thumbprint"].clone();
    assert!(new.is_string() && new != first, "{}", r.stdout);
    // `none` is the operator's choice, not a failed delivery: nothing owed, exit 0 (`.ok()`).
    assert_eq!(r.json()["devices"][0]["delivery"], Value::Null, "{}", r.stdout);
    assert_eq!(r.json()["deliveries_owed"], 0, "{}", r.stdout);
    let s = status(&env, &serve, "azure");
    let gw1 = device(&s, "gw-1");
    assert_eq!(gw1["installed"]["thumbprint"], first, "what DPS saw: {gw1}");
    assert_eq!(gw1["registration"]["cert_thumbprint"], first, "{gw1}");
    assert_eq!(gw1["pending"]["cert"]["thumbprint"], new, "{gw1}");
    assert_eq!(gw1["pending"]["delivery"], "none", "{gw1}");
    assert!(
        gw1["pending"]["note"]
            .as_str()
            .is_some_and(|n| n.contains("certroll export device:gw-1")),
        "{gw1}"
    );
    // The hub accepts the new certificate already; that says nothing of what the device holds.
    assert_eq!(gw1["hub_identity"]["secondary_thumbprint"], new, "{gw1}");
    assert_eq!(device(&s, "gw-2")["pending"], Value::Null, "{s}");
    let text = run_fleet(&env, &serve, "azure", &["status"]).ok().stdout;
    assert!(
        text.contains(&format!("issued {}", new.as_str().unwrap())),
        "{text}"
    );
    let c = run_fleet(&env, &serve, "azure", &["check", "-o", "json"]);
    assert_eq!(c.code, 1, "a warning: {}", c.stdout);
    let problems = c.json()["problems"].clone();
    let gw1_problem = problems
        .as_array()
        .and_then(|p| p.iter().find(|p| p["target"] == "device:gw-1"))
        .unwrap_or_else(|| panic!("no problem for gw-1: {problems}"));
    assert!(
        gw1_problem["reason"]
            .as_str()
            .is_some_and(|r| r.contains(new.as_str().unwrap()) && r.contains("has not reached it")),
        "{gw1_problem}"
    );

    // The local backend's devices hold what it installed: the new certificate, nothing pending.
    let l = status(&env, &serve, "local");
    let local_gw1 = device(&l, "gw-1");
    assert_eq!(local_gw1["pending"], Value::Null, "{local_gw1}");
    let local_new = run_fleet(
        &env,
        &serve,
        "local",
        &["vault", "show", "device:gw-1", "-o", "json"],
    )
    .ok()
    .json()["versions"]
        .as_array()
        .and_then(|v| v.last().cloned())
        .unwrap();
    assert_eq!(
        local_gw1["installed"]["thumbprint"], local_new["cert"]["thumbprint"],
        "{local_gw1}\n{local_new}"
    );

    // The operator hands the new certificate out; the device registers with it.
    factory_register(&env, &serve, "gw-1");
    let s = status(&env, &serve, "azure");
    let gw1 = device(&s, "gw-1");
    assert_eq!(gw1["installed"]["thumbprint"], new, "{gw1}");
    assert_eq!(gw1["registration"]["cert_thumbprint"], new, "{gw1}");
    assert_eq!(gw1["pending"], Value::Null, "{gw1}");
    let c = run_fleet(&env, &serve, "azure", &["check", "-o", "json"]);
    assert_eq!(c.code, 0, "{}", c.stdout);
}

/// Six devices under an intermediate, on hub `conf-hub`.
const SIX: &str = "[policies.device]\nkey = { type = \"EC\", curve = \"P-256\" }\nvalidity_days = 365\n\
     [policies.ca]\nkey = { type = \"EC\", curve = \"P-256\" }\nvalidity_days = 3650\n\
     key_usage = [\"keyCertSign\", \"cRLSign\", \"digitalSignature\"]\n\
     [ca.root]\nsubject = \"CN=Root\"\npolicy = \"ca\"\n\
     [ca.factory]\nsubject = \"CN=Factory\"\nissuer = \"root\"\npath_len = 0\npolicy = \"ca\"\n\
     [groups.meters]\nsigning_ca = \"factory\"\nhub = \"conf-hub\"\n\
     device_policy = \"device\"\ndevices = { prefix = \"m-\", count = 6 }\n";

/// A device behind a slow delivery hook: it notes when it started and ended (wall clock, in
/// `log`), registers with DPS over mutual TLS with the certificate it is handed, and takes a
/// second more.
const TIMED_HOOK: &str = r#"
import json, os, subprocess, sys, time
port, scope, ca, home, log = sys.argv[1:6]
start = time.time()
job = json.load(sys.stdin)
dev = job["device_id"]
os.makedirs(home, exist_ok=True)
pem = os.path.join(home, dev + ".pem")
subprocess.run(["openssl", "pkcs12", "-in", job["pfx_path"], "-nodes", "-passin", "pass:", "-out", pem],
               check=True, capture_output=True)
url = f"https://global.azure-devices-provisioning.net:{port}/{scope}/registrations/{dev}/register?api-version=2021-06-01"
out = subprocess.run(["curl", "-sS", "--fail-with-body", "--cacert", ca, "--cert", pem, "--key", pem,
                      "--resolve", f"global.azure-devices-provisioning.net:{port}:127.0.0.1",
                      "-X", "PUT", "-H", "Content-Type: application/json",
                      "--data", json.dumps({"registrationId": dev}), url], capture_output=True, text=True)
if out.returncode != 0:
    sys.stderr.write(out.stdout + out.stderr)
    sys.exit(1)
time.sleep(1)
with open(log, "a") as f:
    f.write(f"{dev} {start} {time.time()}\n")
"#;

/// The largest number of (start, end) intervals that overlap at one instant.
pub(crate) fn most_at_once(intervals: &[(f64, f64)]) -> usize {
    let mut edges: Vec<(f64, i32)> = intervals.iter().flat_map(|&(s, e)| [(s, 1), (e, -1)]).collect();
    // An end before a start at the same instant: touching intervals do not overlap.
    edges.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut now, mut most) = (0i32, 0i32);
    for (_, d) in edges {
        now += d;
        most = most.max(now);
    }
    most as usize
}

/// `issue` of six devices whose hook takes over a second each, with `delivery_concurrency = 3`:
/// the hooks run side by side, never more than three at once, and every device registers with
/// its certificate (as DPS saw it).
#[test]
fn delivery_hooks_run_side_by_side_up_to_delivery_concurrency() {
    let env = TestEnv::new();
    let serve = start_serve(&env, SIX);
    env.write("timed-hook.py", TIMED_HOOK);
    let log = env.path("hooks.log");
    let delivery = format!(
        "delivery = \"hook\"\ndelivery_concurrency = 3\n\
         hook = [\"python3\", \"{}\", \"{}\", \"{}\", \"{}\", \"{}\", \"{}\"]\n",
        env.path("timed-hook.py").display(),
        serve.port(),
        serve.start["id_scope"].as_str().unwrap(),
        env.path("ca.pem").display(),
        env.path("devices").display(),
        log.display()
    );
    fleet_plans_with(&env, &serve, SIX, &delivery);
    let r = run_fleet(&env, &serve, "azure", &["issue", "-o", "json"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);

    let text = std::fs::read_to_string(&log).unwrap();
    let intervals: Vec<(f64, f64)> = text
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f[1].parse().unwrap(), f[2].parse().unwrap())
        })
        .collect();
    assert_eq!(intervals.len(), 6, "one hook per device:\n{text}");
    let most = most_at_once(&intervals);
    assert!(
        (2..=3).contains(&most),
        "hooks at once: {most} (want 2 to 3 with delivery_concurrency = 3):\n{text}"
    );
    let s = status(&env, &serve, "azure");
    for i in 1..=6 {
        let d = device(&s, &format!("m-{i}"));
        assert!(d["installed"]["thumbprint"].is_string(), "{d}");
        assert_eq!(d["pending"], Value::Null, "{d}");
    }
}

#[test]
fn most_at_once_counts_overlaps_not_touching_intervals() {
    assert_eq!(most_at_once(&[(0.0, 1.0), (1.0, 2.0), (2.0, 3.0)]), 1);
    assert_eq!(most_at_once(&[(0.0, 2.0), (1.0, 3.0), (1.5, 1.7)]), 3);
    assert_eq!(most_at_once(&[]), 0);
}

/// Measurement (az1 §9: `reprovision --force` with direct methods took 1.2 s a device):
/// `reprovision group:meters --force` of twelve devices registered with serve's simulated
/// devices, the direct methods awaited one at a time (`delivery_concurrency = 1`, as before) and
/// eight at a time, in the same run. Prints both times and their ratio.
#[test]
#[ignore = "measurement: cargo test --test it measure_reprovision_force -- --ignored --nocapture"]
fn measure_reprovision_force_by_delivery_concurrency() {
    let twelve = SIX.replace("count = 6", "count = 12");
    let env = TestEnv::new();
    let serve = start_serve(&env, &twelve);
    fleet_plans_with(
        &env,
        &serve,
        &twelve,
        "delivery = \"direct-method\"\ndelivery_concurrency = 1\n",
    );
    // The hub does not know the devices before their factory registration: they wait.
    let r = run_fleet(&env, &serve, "azure", &["issue", "-o", "json"]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    for i in 1..=12 {
        factory_register(&env, &serve, &format!("m-{i:02}"));
    }
    let plan = std::fs::read_to_string(env.path("azure/plan.toml")).unwrap();
    let mut took = Vec::new();
    for concurrency in [1, 8] {
        env.write(
            "azure/plan.toml",
            &plan.replace(
                "delivery_concurrency = 1",
                &format!("delivery_concurrency = {concurrency}"),
            ),
        );
        let start = std::time::Instant::now();
        let r = run_fleet(
            &env,
            &serve,
            "azure",
            &["reprovision", "group:meters", "--force", "-o", "json"],
        )
        .ok();
        let elapsed = start.elapsed().as_secs_f64();
        assert_eq!(r.json()["assigned"], 12, "{}", r.stdout);
        println!("reprovision --force of 12 devices, delivery_concurrency = {concurrency}: {elapsed:.2} s");
        took.push(elapsed);
    }
    println!("ratio (1 at a time / 8 at a time): {:.2}", took[0] / took[1]);
}

/// Measurement (az1 §9: hooks ran one at a time, ~0.5 a second): `issue` of six devices whose
/// delivery hook takes over a second each (it registers the device and waits a second), with
/// `delivery_concurrency = 1` (as before) and `= 6`, each on a fresh serve, in the same run.
/// Prints both times and their ratio.
#[test]
#[ignore = "measurement: cargo test --test it measure_issue_hooks -- --ignored --nocapture"]
fn measure_issue_hooks_by_delivery_concurrency() {
    let mut took = Vec::new();
    for concurrency in [1, 6] {
        let env = TestEnv::new();
        let serve = start_serve(&env, SIX);
        env.write("timed-hook.py", TIMED_HOOK);
        let delivery = format!(
            "delivery = \"hook\"\ndelivery_concurrency = {concurrency}\n\
             hook = [\"python3\", \"{}\", \"{}\", \"{}\", \"{}\", \"{}\", \"{}\"]\n",
            env.path("timed-hook.py").display(),
            serve.port(),
            serve.start["id_scope"].as_str().unwrap(),
            env.path("ca.pem").display(),
            env.path("devices").display(),
            env.path("hooks.log").display()
        );
        fleet_plans_with(&env, &serve, SIX, &delivery);
        let start = std::time::Instant::now();
        run_fleet(&env, &serve, "azure", &["issue", "-o", "json"]).ok();
        let elapsed = start.elapsed().as_secs_f64();
        // From the first hook's start to the last one's end, by the hooks' own records.
        let text = std::fs::read_to_string(env.path("hooks.log")).unwrap();
        let times: Vec<f64> = text
            .lines()
            .flat_map(|l| l.split(' ').skip(1).map(|t| t.parse::<f64>().unwrap()))
            .collect();
        let span =
            times.iter().copied().fold(f64::MIN, f64::max) - times.iter().copied().fold(f64::MAX, f64::min);
        println!(
            "issue of 6 devices, hooks of >1 s, delivery_concurrency = {concurrency}: {elapsed:.2} s, hooks {span:.2} s"
        );
        took.push((elapsed, span));
    }
    println!(
        "ratio (1 at a time / 6 at a time): issue {:.2}, hooks {:.2}",
        took[0].0 / took[1].0,
        took[0].1 / took[1].1
    );
}

/// `issue --dry-run` lists an individual enrollment's steps in the order the real run takes
/// them (az8 F10): its enrollment is created before its certificate is delivered, so the
/// device the hook hands it to registers at once (the hook fails otherwise, and the run with
/// it). Both backends list the same order.
#[test]
fn issue_dry_run_lists_an_enrollment_s_steps_in_the_order_the_run_takes_them() {
    let env = TestEnv::new();
    let serve = start_serve(&env, FLEET);
    crate::azure_verbs::fleet_plans_hook(&env, &serve, FLEET);
    let actions = |report: &Value| -> Vec<String> {
        report["steps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["target"] == "enrollment:gw-1")
            .map(|s| s["action"].as_str().unwrap().to_string())
            .collect()
    };
    let expected = ["issue-device-certs", "create-enrollments", "install-device-certs"];
    for which in ["local", "azure"] {
        let dry = run_fleet(&env, &serve, which, &["issue", "--dry-run", "-o", "json"]);
        assert_eq!(dry.code, 0, "{which}: {}\n{}", dry.stdout, dry.stderr);
        let listed = actions(&dry.json());
        assert_eq!(listed[..3], expected, "{which}: {}", dry.stdout);
        let human = run_fleet(&env, &serve, which, &["issue", "--dry-run"]);
        let at = |words: &str| {
            human
                .stdout
                .find(words)
                .unwrap_or_else(|| panic!("{words}: {}", human.stdout))
        };
        assert!(
            at("[create-enrollments] enrollment:gw-1") < at("[install-device-certs] enrollment:gw-1"),
            "{which}: {}",
            human.stdout
        );
        let real = run_fleet(&env, &serve, which, &["issue", "-o", "json"]);
        assert_eq!(real.code, 0, "{which}: {}\n{}", real.stdout, real.stderr);
        assert_eq!(actions(&real.json()), listed, "{which}: {}", real.stdout);
    }
}

/// `reprovision device:gw-1` on azure, which must exit `code`; gw-1's `status` afterwards.
fn reprovision_gw1(env: &TestEnv, serve: &Serve, code: i32) -> Value {
    let r = run_fleet(env, serve, "azure", &["reprovision", "device:gw-1", "-o", "json"]);
    assert_eq!(r.code, code, "{}\n{}", r.stdout, r.stderr);
    device(&status(env, serve, "azure"), "gw-1").clone()
}

/// [`DEVICE_HOOK`]'s device, which after its first start connects to its hub with each later
/// certificate it is handed (a device-to-cloud message over mutual TLS), as a device that
/// reconnects with a new certificate does; it does not register with DPS again.
fn connecting_hook() -> String {
    // DEVICE_HOOK ends with its first-start `if`: this is that `if`'s `else`.
    format!(
        r#"{DEVICE_HOOK}else:
    hub = job["hub"] if "." in job["hub"] else job["hub"] + ".azure-devices.net"
    url = f"https://{{hub}}:{{port}}/devices/{{dev}}/messages/events?api-version=2021-04-12"
    out = subprocess.run(["curl", "-sS", "--fail-with-body", "--cacert", ca, "--cert", pem, "--key", pem,
                          "--resolve", f"{{hub}}:{{port}}:127.0.0.1", "-X", "POST", "--data", "{{}}", url],
                         capture_output=True, text=True)
    if out.returncode != 0:
        sys.stderr.write(out.stdout + out.stderr)
        sys.exit(1)
"#
    )
}

/// Trial az8 F5: with `delivery = "hook"`, serve's simulated device never learned the
/// certificate the hook delivered, so `reprovision` made it register with the old one (DPS
/// assigned it with that, certroll counted it rejected, exit 1; with `reset` the hub kept only
/// the old thumbprint). A device that shows serve its new certificate over mutual TLS (here by
/// connecting to its hub with it) now holds it in serve too: `reprovision` registers it with the
/// certificate the hook delivered, as the real device would.
#[test]
fn reprovision_after_a_hook_delivery_registers_the_certificate_the_hook_delivered() {
    let env = TestEnv::new();
    let serve = start_serve(&env, FLEET);
    env.write("connecting-hook.py", &connecting_hook());
    fleet_plans_with(
        &env,
        &serve,
        FLEET,
        &hook_delivery(&env, &serve, "connecting-hook.py", &[]),
    );
    fleet_ok(&env, &serve, &["issue"]);
    fleet_ok(&env, &serve, &["roll-secondary", "enrollment:gw-1"]);
    let gw1 = device(&status(&env, &serve, "azure"), "gw-1").clone();
    let new = gw1["pending"]["cert"]["thumbprint"].clone();
    assert!(
        new.is_string(),
        "the hook's device has not registered with it yet: {gw1}"
    );

    let gw1 = reprovision_gw1(&env, &serve, 0);
    assert_eq!(gw1["registration"]["cert_thumbprint"], new, "{gw1}");
    assert_eq!(gw1["installed"]["thumbprint"], new, "{gw1}");
    assert_eq!(gw1["pending"], Value::Null, "{gw1}");
    let hub = &gw1["hub_identity"];
    assert!(
        hub["primary_thumbprint"] == new || hub["secondary_thumbprint"] == new,
        "the hub lets the device that holds the new certificate in: {gw1}"
    );
}

/// Trial az8 F5's own case: the device registers with the certificate the hook handed it while
/// another client has its enrollment disabled (a group there), and DPS refuses it. The device
/// still holds that certificate; serve's simulated device kept the old one, so once the
/// enrollment was enabled again `reprovision` registered the old one (exit 1). It now holds what
/// it presented to DPS, refused or not.
#[test]
fn a_device_refused_by_a_disabled_enrollment_keeps_the_certificate_it_presented() {
    let env = TestEnv::new();
    let serve = start_serve(&env, FLEET);
    fleet_plans_hook(&env, &serve, FLEET);
    fleet_ok(&env, &serve, &["issue"]);
    fleet_ok(&env, &serve, &["roll-secondary", "enrollment:gw-1"]);
    let new = device(&status(&env, &serve, "azure"), "gw-1")["pending"]["cert"]["thumbprint"].clone();
    assert!(new.is_string());
    let set_status = |status: &'static str| {
        change_enrollment(&env, &serve, "gw-1", |e| {
            e["provisioningStatus"] = Value::from(status);
        })
    };
    set_status("disabled");
    // The device starts with the certificate the hook handed it (the vault's current one).
    factory_register(&env, &serve, "gw-1");
    let gw1 = device(&status(&env, &serve, "azure"), "gw-1").clone();
    assert_eq!(gw1["registration"]["status"], "disabled", "{gw1}");
    set_status("enabled");

    let gw1 = reprovision_gw1(&env, &serve, 0);
    assert_eq!(gw1["registration"]["cert_thumbprint"], new, "{gw1}");
    assert_eq!(gw1["installed"]["thumbprint"], new, "{gw1}");
}

/// And `check` sees the state trial az8 F5 left, which it called OK: a device whose hook does
/// not show serve its new certificate (`DEVICE_HOOK`'s, after its first start) is asked to
/// register again, registers with its previous certificate, and DPS writes that one alone into
/// its hub identity. The certificate the hook delivered, which `check` takes for the one the
/// device holds, is no longer among the hub's thumbprints: critical, naming both.
#[test]
fn check_names_a_hub_identity_that_refuses_the_certificate_a_hook_delivered() {
    let env = TestEnv::new();
    let serve = start_serve(&env, FLEET);
    fleet_plans_hook(&env, &serve, FLEET);
    fleet_ok(&env, &serve, &["issue"]);
    let old = device(&status(&env, &serve, "azure"), "gw-1")["installed"]["thumbprint"].clone();
    fleet_ok(&env, &serve, &["roll-secondary", "enrollment:gw-1"]);
    let new = device(&status(&env, &serve, "azure"), "gw-1")["pending"]["cert"]["thumbprint"].clone();
    let c = run_fleet(&env, &serve, "azure", &["check", "-o", "json"]);
    assert_eq!(c.code, 0, "the hub holds both after the roll: {}", c.stdout);

    let gw1 = reprovision_gw1(&env, &serve, 1);
    assert_eq!(gw1["hub_identity"]["primary_thumbprint"], old, "{gw1}");
    assert_eq!(gw1["hub_identity"]["secondary_thumbprint"], Value::Null, "{gw1}");

    let c = run_fleet(&env, &serve, "azure", &["check", "-o", "json"]);
    assert_eq!(c.code, 2, "{}\n{}", c.stdout, c.stderr);
    let p = crate::util::problem(&c.json(), "device:gw-1");
    assert_eq!(p["level"], "critical", "{p}");
    let reason = p["reason"].as_str().unwrap();
    for tp in [&old, &new] {
        assert!(reason.contains(tp.as_str().unwrap()), "{tp} not in {reason}");
    }
    assert!(
        reason.contains("the hub refuses the device that holds it"),
        "{reason}"
    );
    assert_eq!(
        c.json()["counts"]["critical"],
        1,
        "gw-2 was not touched: {}",
        c.stdout
    );
}
