//! Breach rolls and CA rolls: the compromised certificate is refused by the enrollment service
//! and the hub for every device it was on, others are unaffected, reruns change nothing, dry runs
//! name the devices cut off, and a run killed at any step is finished by running it again.

use crate::roll::{at, backend, pem_der, works};
use crate::util::*;
use certroll::backend::{EnrollmentService as _, Vault as _};

const PLAN: [&str; 2] = ["--plan", "plan.toml"];

fn run(env: &TestEnv, args: &[&str]) -> Run {
    env.plan_run(args)
}

fn sensors() -> Vec<String> {
    (1..=50).map(|i| format!("sensor-{i:02}")).collect()
}

fn versions(env: &TestEnv, name: &str) -> usize {
    backend(env).versions(name).unwrap().len()
}

/// The quickstart plan, issued.
fn issued_quickstart() -> TestEnv {
    let env = TestEnv::new();
    env.quickstart();
    run(&env, &["issue"]).ok();
    env
}

#[test]
fn a_device_breach_refuses_the_compromised_certificate_everywhere_and_a_rerun_does_nothing() {
    let env = issued_quickstart();
    let old = pem_der(&env, NOW, "gateway-01");
    let neighbour = pem_der(&env, NOW, "sensor-01");
    assert!(works(&env, "gateway-01", &old, NOW));

    // The dry run names the device it cuts off, and changes nothing.
    let dry = run(
        &env,
        &[
            "roll-primary",
            "--breach",
            "device:gateway-01",
            "--dry-run",
            "-o",
            "json",
        ],
    )
    .ok()
    .json();
    assert_eq!(dry["devices_cut_off"]["count"], 1, "{dry}");
    assert_eq!(dry["steps"][0]["devices_cut_off"]["first"][0], "gateway-01");
    assert_eq!(dry["devices"][0]["outcome"], "would-replace");
    assert!(works(&env, "gateway-01", &old, NOW));
    assert_eq!(versions(&env, "dev-gateway-01"), 1);

    let r = run(
        &env,
        &[
            "roll-primary",
            "--breach",
            "device:gateway-01",
            "--yes",
            "-o",
            "json",
        ],
    )
    .ok()
    .json();
    assert_eq!(r["devices"][0]["outcome"], "replaced", "{r}");
    let new = pem_der(&env, NOW, "gateway-01");
    assert_ne!(new, old);
    assert_eq!(
        r["devices"][0]["compromised"][0].as_str().unwrap(),
        certroll::pki::sha1_thumbprint(&old)
    );
    assert!(
        !works(&env, "gateway-01", &old, NOW),
        "the compromised cert is refused"
    );
    assert!(works(&env, "gateway-01", &new, NOW), "the replacement works");
    assert!(
        works(&env, "sensor-01", &neighbour, NOW),
        "other devices are unaffected"
    );

    // The compromised version is disabled and on the CA's CRL, as openssl sees it.
    let b = backend(&env);
    let v = b.versions("dev-gateway-01").unwrap();
    assert!(!v[0].enabled && v[1].enabled);
    drop(b);
    run(&env, &["export", "ca:root", "--out", "root.pem"]).ok();
    run(&env, &["export", "ca:factory", "--crl", "--out", "f.crl"]).ok();
    env.write_pem(&old, "old");
    let factory = certroll::pki::pem::certs_from_pem(
        &std::fs::read(env.path("gateway-01-2026-11-23T000000Z.pem")).unwrap(),
    )
    .unwrap();
    env.write_pem(&factory[1], "factory");
    let check = env.openssl(&[
        "verify",
        "-crl_check",
        "-CAfile",
        "root.pem",
        "-untrusted",
        "factory.pem",
        "-CRLfile",
        "f.crl",
        "old.pem",
    ]);
    assert_ne!(
        check.code, 0,
        "openssl must refuse the compromised cert: {}",
        check.stdout
    );
    assert!(
        check.stdout.contains("revoked") || check.stderr.contains("revoked"),
        "{}{}",
        check.stdout,
        check.stderr
    );

    // A rerun changes nothing.
    let again = run(
        &env,
        &[
            "roll-primary",
            "--breach",
            "device:gateway-01",
            "--yes",
            "-o",
            "json",
        ],
    )
    .ok()
    .json();
    assert_eq!(again["devices"][0]["outcome"], "already-replaced", "{again}");
    // It cuts nobody off either (az8 F8): the device holds its replacement.
    assert_eq!(again["devices_cut_off"]["count"], 0, "{again}");
    for step in again["steps"].as_array().unwrap() {
        assert_eq!(step["devices_cut_off"]["count"], 0, "{again}");
    }
    let said = run(&env, &["roll-primary", "--breach", "device:gateway-01", "--yes"]).ok();
    assert!(!said.stdout.contains("cannot connect"), "{}", said.stdout);
    assert!(said.stdout.contains("nothing to do"), "{}", said.stdout);
    // Planned as nothing to do, its step says so (trial az10 G5), not "0 of them rolled, 1 not".
    assert!(said.stdout.contains("nothing to replace"), "{}", said.stdout);
    assert!(!said.stdout.contains("of them rolled"), "{}", said.stdout);
    // Its dry run plans it so too: no cut-off, no new certificate (trial az10 N3).
    let dry = run(
        &env,
        &[
            "roll-primary",
            "--breach",
            "device:gateway-01",
            "--dry-run",
            "-o",
            "json",
        ],
    )
    .ok()
    .json();
    assert_eq!(dry["devices"][0]["outcome"], "already-replaced", "{dry}");
    assert_eq!(dry["devices_cut_off"]["count"], 0, "{dry}");
    assert!(
        dry["steps"][0]["description"]
            .as_str()
            .unwrap()
            .starts_with("nothing to replace"),
        "{dry}"
    );
    assert_eq!(versions(&env, "dev-gateway-01"), 2);
    assert!(works(&env, "gateway-01", &new, NOW));

    // A new incident replaces the replacement.
    let next = run(
        &env,
        &[
            "roll-primary",
            "--breach",
            "--incident",
            "INC-2",
            "device:gateway-01",
            "--yes",
            "-o",
            "json",
        ],
    )
    .ok()
    .json();
    assert_eq!(next["devices"][0]["outcome"], "replaced", "{next}");
    assert_eq!(versions(&env, "dev-gateway-01"), 3);
    assert!(!works(&env, "gateway-01", &new, NOW));
}

/// The arguments of `roll-primary --breach` of `target` for `incident`, reporting in JSON.
fn breach_args<'a>(target: &'a str, incident: &'a str) -> [&'a str; 8] {
    [
        "roll-primary",
        "--breach",
        "--incident",
        incident,
        target,
        "--yes",
        "-o",
        "json",
    ]
}

/// Incidents A, then B, then A's command again from the shell history (trial az9 G2): the third
/// run finds A handled (B replaced A's replacement since) and replaces nothing; before, it took
/// B's good certificate for A's compromised one, revoked it and issued another. A's and B's
/// commands run again any number of times change nothing; a new label still replaces.
#[test]
fn an_older_incident_run_again_after_a_later_one_replaces_nothing() {
    let env = issued_quickstart();
    let breach = |incident: &str| run(&env, &breach_args("device:gateway-01", incident)).ok().json();
    let outcome = |r: &serde_json::Value| r["devices"][0]["outcome"].as_str().unwrap().to_string();
    assert_eq!(outcome(&breach("INC-A")), "replaced");
    let after_a = pem_der(&env, NOW, "gateway-01");
    assert_eq!(outcome(&breach("INC-B")), "replaced");
    let after_b = pem_der(&env, NOW, "gateway-01");
    assert_ne!(after_a, after_b);
    assert_eq!(versions(&env, "dev-gateway-01"), 3);
    for incident in ["INC-A", "INC-B", "INC-A", "INC-B"] {
        let again = breach(incident);
        assert_eq!(outcome(&again), "already-replaced", "{incident}: {again}");
        assert_eq!(versions(&env, "dev-gateway-01"), 3, "{incident}");
        assert!(
            works(&env, "gateway-01", &after_b, NOW),
            "{incident}: B's certificate still works"
        );
    }
    assert_eq!(outcome(&breach("INC-C")), "replaced");
    assert!(!works(&env, "gateway-01", &after_b, NOW));
    assert_eq!(outcome(&breach("INC-A")), "already-replaced");
    assert_eq!(versions(&env, "dev-gateway-01"), 4);
}

/// Incident A cut off before its step committed, then incident B, then A's command again
/// (trial az10 N1, "after a cut-off" as runbook 1 says): the resumed A finds B replaced what A
/// set out to replace, and neither it nor A's later runs replace B's good certificate.
#[test]
fn an_incident_cut_off_then_a_later_one_then_the_first_again_replaces_nothing_twice() {
    let env = issued_quickstart();
    let a = breach_args("device:gateway-01", "INC-A");
    killed_by(&env, "CERTROLL_FAULT_BEFORE_STEP_COMMIT", "1", &a);
    let b = run(&env, &breach_args("device:gateway-01", "INC-B")).ok().json();
    assert_eq!(b["devices"][0]["outcome"], "replaced", "{b}");
    let after_b = pem_der(&env, NOW, "gateway-01");
    let held = versions(&env, "dev-gateway-01");
    for _ in 0..3 {
        let again = run(&env, &a).ok().json();
        assert_eq!(again["devices"][0]["outcome"], "already-replaced", "{again}");
        assert_eq!(versions(&env, "dev-gateway-01"), held, "{again}");
        assert!(
            works(&env, "gateway-01", &after_b, NOW),
            "B's certificate still works: {again}"
        );
    }
}

#[test]
fn a_group_device_breach_refuses_its_old_certificate_though_it_chains_to_the_group() {
    let env = issued_quickstart();
    let old = pem_der(&env, NOW, "sensor-07");
    let other = pem_der(&env, NOW, "sensor-08");
    run(
        &env,
        &[
            "roll-primary",
            "--breach",
            "device:sensor-07",
            "--remove-hub-identity",
            "--yes",
        ],
    )
    .ok();
    let new = pem_der(&env, NOW, "sensor-07");
    assert!(!works(&env, "sensor-07", &old, NOW));
    assert!(works(&env, "sensor-07", &new, NOW));
    assert!(works(&env, "sensor-08", &other, NOW));
    // `status` shows why: the individual enrollment that overrides the group, holding only the
    // new certificate; a device left alone has none.
    let s = run(
        &env,
        &["status", "-o", "json", "device:sensor-07", "device:sensor-08"],
    )
    .ok()
    .json();
    let [d7, d8] = [0, 1].map(|i| s["devices"][i].clone());
    let shield = &d7["individual_enrollment"];
    assert_eq!(shield["status"], "enabled", "{d7}");
    assert_eq!(
        shield["primary"]["thumbprint"], d7["installed"]["thumbprint"],
        "{d7}"
    );
    assert_eq!(shield["secondary"], serde_json::Value::Null, "{d7}");
    assert_eq!(d8["individual_enrollment"], serde_json::Value::Null, "{d8}");
    let human = run(&env, &["status", "device:sensor-07"]).ok().stdout;
    assert!(human.contains("sensors*"), "{human}");
    assert!(human.contains("takes precedence over the group"), "{human}");
    // No CA is shown for a device target, so no CAs header; the legend names only the mark the
    // table uses (`*`, not `!`).
    assert!(!human.lines().any(|l| l.trim() == "CAs"), "{human}");
    assert!(!human.contains("! a disabled individual enrollment"), "{human}");
    // Its later expiry rolls keep working: the enrollment that shields it takes the new cert.
    let t = at(340);
    run(&env, &["--now", &t, "roll-secondary", "device:sensor-07"]).ok();
    let rolled = pem_der(&env, &t, "sensor-07");
    assert!(works(&env, "sensor-07", &rolled, &t));
    assert!(
        works(&env, "sensor-07", &new, &t),
        "zero downtime after the breach too"
    );
}

#[test]
fn a_breach_blast_radius_leaves_out_devices_already_revoked() {
    let env = issued_quickstart();
    run(
        &env,
        &[
            "revoke",
            "device:sensor-01",
            "--reason",
            "key-compromise",
            "--yes",
        ],
    )
    .ok();
    let dry = run(
        &env,
        &[
            "roll-primary",
            "--breach",
            "group:sensors",
            "--dry-run",
            "-o",
            "json",
        ],
    )
    .ok()
    .json();
    let cut = &dry["steps"][0]["devices_cut_off"];
    // 49 sensors and the gateway, whose enrollment holds a certificate of the same CA version.
    assert_eq!(cut["count"], 50, "sensor-01 connects with nothing already: {dry}");
    assert_eq!(cut["first"][0], "sensor-02", "{dry}");
}

#[test]
fn an_intermediate_breach_reissues_the_group_and_revokes_the_ca() {
    let env = issued_quickstart();
    let old: Vec<Vec<u8>> = sensors().iter().map(|d| pem_der(&env, NOW, d)).collect();
    let gateway = pem_der(&env, NOW, "gateway-01");
    // The chain the devices present now: leaf, then the factory CA about to be compromised.
    let old_factory = certroll::pki::pem::certs_from_pem(
        &std::fs::read(env.path("sensor-01-2026-11-23T000000Z.pem")).unwrap(),
    )
    .unwrap()
    .remove(1);

    let dry = run(
        &env,
        &[
            "roll-primary",
            "--breach",
            "group:sensors",
            "--dry-run",
            "-o",
            "json",
        ],
    )
    .ok()
    .json();
    assert_eq!(dry["steps"][0]["kind"], "remove-compromised", "{dry}");
    // The 50 sensors and the gateway, issued by the same compromised CA version.
    assert_eq!(dry["steps"][0]["devices_cut_off"]["count"], 51);
    assert_eq!(
        dry["steps"][0]["devices_cut_off"]["first"],
        serde_json::json!(["sensor-01", "sensor-02", "sensor-03", "sensor-04", "sensor-05"])
    );
    assert_eq!(versions(&env, "ca-factory"), 1, "a dry run changes nothing");

    run(&env, &["roll-primary", "--breach", "group:sensors", "--yes"]).ok();
    for (id, old) in sensors().iter().zip(&old) {
        assert!(
            !works(&env, id, old, NOW),
            "{id}: the leaf under the compromised CA is refused"
        );
        let new = pem_der(&env, NOW, id);
        assert!(works(&env, id, &new, NOW), "{id}: the new leaf works");
    }
    // The gateway's certificate was signed by the compromised version too: replaced as well.
    assert!(
        !works(&env, "gateway-01", &gateway, NOW),
        "the gateway's leaf under the compromised CA is refused"
    );
    let new = pem_der(&env, NOW, "gateway-01");
    assert!(
        works(&env, "gateway-01", &new, NOW),
        "the gateway's new leaf works"
    );
    let g = backend(&env).group("sensors").unwrap().unwrap();
    assert!(g.secondary.is_none());

    // The compromised intermediate is on the root's CRL.
    run(&env, &["export", "ca:root", "--out", "root.pem"]).ok();
    run(&env, &["export", "ca:root", "--crl", "--out", "r.crl"]).ok();
    env.write_pem(&old_factory, "old-factory");
    let check = env.openssl(&[
        "verify",
        "-crl_check",
        "-CAfile",
        "root.pem",
        "-CRLfile",
        "r.crl",
        "old-factory.pem",
    ]);
    assert_ne!(check.code, 0, "{}", check.stdout);

    let again = run(
        &env,
        &["roll-primary", "--breach", "group:sensors", "--yes", "-o", "json"],
    )
    .ok()
    .json();
    assert_eq!(again["groups"][0]["outcome"], "already-replaced", "{again}");
    assert_eq!(versions(&env, "ca-factory"), 2);
    assert_eq!(versions(&env, "dev-sensor-01"), 2);
}

/// Every device of the quickstart, the certificate it holds now, and whether it works.
fn all_devices() -> Vec<String> {
    let mut all = sensors();
    all.push("gateway-01".into());
    all
}

#[test]
fn a_root_expiry_roll_puts_a_proven_new_root_beside_the_old_with_zero_downtime() {
    let env = issued_quickstart();
    let old: Vec<Vec<u8>> = all_devices().iter().map(|d| pem_der(&env, NOW, d)).collect();
    let r = run(&env, &["roll-secondary", "ca:root", "-o", "json"])
        .ok()
        .json();
    assert_eq!(r["groups"][0]["outcome"], "rolled", "{r}");
    let b = backend(&env);
    let cas = b.cas().unwrap();
    assert_eq!(
        cas.iter()
            .map(|c| (c.name.as_str(), c.verified))
            .collect::<Vec<_>>(),
        [("root", true), ("root-v2", true)]
    );
    drop(b);
    for (id, old) in all_devices().iter().zip(&old) {
        let new = pem_der(&env, NOW, id);
        assert!(
            works(&env, id, old, NOW),
            "{id}: the old certificate keeps working"
        );
        assert!(works(&env, id, &new, NOW), "{id}: the new certificate works");
    }
    let s = run(&env, &["status", "-o", "json", "ca:root"]).ok().json();
    assert_eq!(s["cas"][0]["verified"], true, "{s}");
    assert_eq!(s["cas"][0]["in_service"].as_array().unwrap().len(), 2, "{s}");
    // The new chain verifies against the new root with openssl.
    run(&env, &["export", "ca:root", "--out", "root2.pem"]).ok();
    let check = env.openssl(&[
        "verify",
        "-CAfile",
        "root2.pem",
        "-untrusted",
        "sensor-09-2026-11-23T000000Z.pem",
        "sensor-09-2026-11-23T000000Z.pem",
    ]);
    assert_eq!(check.code, 0, "{}{}", check.stdout, check.stderr);

    let again = run(&env, &["roll-secondary", "ca:root", "-o", "json"])
        .ok()
        .json();
    assert_eq!(again["groups"][0]["outcome"], "already-rolled", "{again}");
    assert!(
        again["devices"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["outcome"] == "already-rolled"),
        "{again}"
    );
    assert_eq!(versions(&env, "ca-root"), 2);
    assert_eq!(versions(&env, "dev-sensor-01"), 2);
}

#[test]
fn a_root_breach_removes_the_root_from_the_service_and_reissues_everything_below() {
    let env = issued_quickstart();
    let old: Vec<Vec<u8>> = all_devices().iter().map(|d| pem_der(&env, NOW, d)).collect();
    let dry = run(
        &env,
        &["roll-primary", "--breach", "ca:root", "--dry-run", "-o", "json"],
    )
    .ok()
    .json();
    assert_eq!(dry["steps"][0]["devices_cut_off"]["count"], 51, "{dry}");
    run(&env, &["roll-primary", "--breach", "ca:root", "--yes"]).ok();
    let cas = backend(&env).cas().unwrap();
    assert_eq!(
        cas.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        ["root-v2"]
    );
    for (id, old) in all_devices().iter().zip(&old) {
        assert!(!works(&env, id, old, NOW), "{id}: the old chain is refused");
        let new = pem_der(&env, NOW, id);
        assert!(works(&env, id, &new, NOW), "{id}: the new chain works");
    }
}

/// Runs a command with fault switch `switch` set to `value`; it must die, not finish.
fn killed_by(env: &TestEnv, switch: &str, value: &str, args: &[&str]) {
    let out = env
        .cmd()
        .args(PLAN)
        .args(args)
        .env(switch, value)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "the fault switch {switch}={value} must abort the run"
    );
}

/// Runs a command with the fault switch that stops it after `steps` steps; it must die.
fn killed_after(env: &TestEnv, steps: u32, args: &[&str]) {
    killed_by(env, "CERTROLL_FAULT_AFTER_STEPS", &steps.to_string(), args);
}

#[test]
fn a_roll_killed_after_any_step_is_finished_by_the_same_command_without_duplicates() {
    /// A command, its number of steps, which devices it gives a new certificate, how many
    /// versions the root and factory CAs end with, and the CRL entries of the first factory and
    /// root versions.
    struct Case {
        args: &'static [&'static str],
        steps: u32,
        rolled: fn(&str) -> bool,
        ca_versions: (usize, usize),
        crl: (usize, usize),
    }
    let cases = [
        Case {
            args: &["roll-secondary", "ca:root"],
            steps: 4,
            rolled: |_| true,
            ca_versions: (2, 2),
            crl: (0, 0),
        },
        Case {
            // A root cannot be on a CRL; what it signed is disabled in the vault instead.
            args: &["roll-primary", "--breach", "ca:root", "--yes"],
            steps: 6,
            rolled: |_| true,
            ca_versions: (2, 2),
            crl: (0, 0),
        },
        Case {
            // The intermediate goes on the root's CRL; the gateway, issued by the same
            // compromised version, is replaced too (issue 10, fourth trial).
            args: &["roll-primary", "--breach", "group:sensors", "--yes"],
            steps: 5,
            rolled: |_| true,
            ca_versions: (1, 2),
            crl: (0, 1),
        },
        Case {
            args: &[
                "roll-primary",
                "--breach",
                "device:gateway-01",
                "device:sensor-03",
                "device:sensor-04",
                "--yes",
            ],
            steps: 3,
            rolled: |id| ["gateway-01", "sensor-03", "sensor-04"].contains(&id),
            ca_versions: (1, 1),
            crl: (3, 0),
        },
    ];
    for case in cases {
        let args = case.args;
        for kill_at in 1..=case.steps {
            let env = issued_quickstart();
            killed_after(&env, kill_at, args);
            let mut json_args = args.to_vec();
            json_args.extend(["-o", "json"]);
            let r = run(&env, &json_args).ok().json();
            assert_eq!(r["resumed"], true, "{args:?} killed after {kill_at}: {r}");
            let b = backend(&env);
            for id in all_devices() {
                let expected = if (case.rolled)(&id) { 2 } else { 1 };
                assert_eq!(
                    b.versions(&format!("dev-{id}")).unwrap().len(),
                    expected,
                    "{args:?} killed after {kill_at}: {id} has a duplicate or missing certificate"
                );
            }
            assert_eq!(
                (
                    b.versions("ca-root").unwrap().len(),
                    b.versions("ca-factory").unwrap().len()
                ),
                case.ca_versions,
                "{args:?} killed after {kill_at}"
            );
            let first = |name: &str| b.versions(name).unwrap()[0].version.clone();
            let (_, factory_crl) = b.revocations("ca-factory", &first("ca-factory")).unwrap();
            let (_, root_crl) = b.revocations("ca-root", &first("ca-root")).unwrap();
            assert_eq!(
                (factory_crl.len(), root_crl.len()),
                case.crl,
                "{args:?} killed after {kill_at}"
            );
            drop(b);
            for id in all_devices() {
                let cert = pem_der(&env, NOW, &id);
                assert!(
                    works(&env, &id, &cert, NOW),
                    "{args:?} killed after {kill_at}: {id}"
                );
            }
            // And once finished, the same command changes nothing.
            let again = run(&env, &json_args).ok().json();
            assert_eq!(again["resumed"], false);
            assert!(
                again["devices"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|d| d["outcome"].as_str().unwrap().starts_with("already")),
                "{again}"
            );
        }
    }
}

#[test]
fn rolls_leave_revoked_devices_revoked() {
    let env = issued_quickstart();
    run(
        &env,
        &[
            "revoke",
            "device:sensor-05",
            "--reason",
            "key-compromise",
            "--yes",
        ],
    )
    .ok();
    let r = run(&env, &["roll-secondary", "group:sensors", "-o", "json"])
        .ok()
        .json();
    let d = r["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["target"] == "device:sensor-05")
        .unwrap();
    assert_eq!(d["outcome"], "revoked", "{r}");
    assert_eq!(versions(&env, "dev-sensor-05"), 1);
    let r = run(
        &env,
        &[
            "roll-primary",
            "--breach",
            "device:sensor-05",
            "--yes",
            "-o",
            "json",
        ],
    )
    .ok()
    .json();
    assert_eq!(r["devices"][0]["outcome"], "revoked", "{r}");
    let ind = backend(&env).individual("sensor-05").unwrap().unwrap();
    assert_eq!(
        ind.status,
        certroll::backend::types::Status::Disabled,
        "still disallowed"
    );
    // A breach of the whole group finishes around it.
    run(&env, &["roll-primary", "--breach", "group:sensors", "--yes"]).ok();
    assert_eq!(versions(&env, "dev-sensor-05"), 1);
}

#[test]
fn a_roll_into_the_slot_holding_the_only_certificate_keeps_that_certificate_working() {
    let env = issued_quickstart();
    let old: Vec<Vec<u8>> = all_devices().iter().map(|d| pem_der(&env, NOW, d)).collect();
    // Right after issue the primary slots hold everything and the secondary slots are empty.
    run(&env, &["roll-primary", "group:sensors"]).ok();
    run(&env, &["roll-primary", "device:gateway-01"]).ok();
    for (id, old) in all_devices().iter().zip(&old) {
        let new = pem_der(&env, NOW, id);
        assert_ne!(&new, old);
        assert!(
            works(&env, id, old, NOW),
            "{id}: the certificate it held keeps working"
        );
        assert!(works(&env, id, &new, NOW), "{id}: the new one works");
    }
}

/// The versions of vault certificate `name` that are enabled.
fn enabled(env: &TestEnv, name: &str) -> Vec<String> {
    backend(env)
        .versions(name)
        .unwrap()
        .into_iter()
        .filter(|v| v.enabled)
        .map(|v| v.version)
        .collect()
}

/// The sensors of a three-sensor quickstart and its gateway: every device under `ca:factory`.
const UNDER_FACTORY: [&str; 4] = ["sensor-1", "sensor-2", "sensor-3", "gateway-01"];

/// Each device under the factory CA holds exactly one enabled vault version, the certificate it
/// holds (which the enrollment service accepts and openssl verifies against both CRLs: its CA
/// version is not revoked), and the factory CA has exactly one enabled version: nothing is
/// enabled that no device uses.
fn only_what_is_used_is_enabled(env: &TestEnv, context: &str) {
    assert_eq!(enabled(env, "ca-factory").len(), 1, "{context}");
    run(env, &["export", "ca:root", "--out", "root.pem"]).ok();
    run(env, &["export", "ca:root", "--crl", "--out", "r.crl"]).ok();
    run(env, &["export", "ca:factory", "--crl", "--out", "f.crl"]).ok();
    for id in UNDER_FACTORY {
        let on = enabled(env, &format!("dev-{id}"));
        assert_eq!(on.len(), 1, "{context}: {id} has {on:?} enabled");
        let held = pem_der(env, NOW, id);
        assert!(works(env, id, &held, NOW), "{context}: {id}'s certificate works");
        let chain = format!("{id}-{}.pem", NOW.replace(':', ""));
        let v = env.openssl(&[
            "verify",
            "-crl_check_all",
            "-CAfile",
            "root.pem",
            "-CRLfile",
            "r.crl",
            "-CRLfile",
            "f.crl",
            "-untrusted",
            &chain,
            &chain,
        ]);
        assert_eq!(v.code, 0, "{context}: {id}: {}", v.stdout);
    }
}

/// Each version of the factory CA and the devices under it as `(name, version, enabled)`.
type VaultState = Vec<(String, String, bool)>;

/// A snapshot of every version of the factory CA and the devices under it, enabled or not.
fn vault_state(env: &TestEnv) -> VaultState {
    let b = backend(env);
    std::iter::once("ca-factory".to_string())
        .chain(UNDER_FACTORY.iter().map(|id| format!("dev-{id}")))
        .flat_map(|name| b.versions(&name).unwrap())
        .map(|v| (v.name, v.version, v.enabled))
        .collect()
}

#[test]
fn a_ca_or_group_breach_run_again_with_an_older_incident_replaces_nothing() {
    for target in ["group:sensors", "ca:factory"] {
        let env = TestEnv::new();
        small_quickstart(&env, 3);
        run(&env, &["issue"]).ok();
        let breach = |incident: &str| run(&env, &breach_args(target, incident)).ok().json();
        for incident in ["L1", "L2"] {
            let r = breach(incident);
            assert_eq!(r["groups"][0]["outcome"], "replaced", "{target} {incident}: {r}");
        }
        let after_l2 = vault_state(&env);
        let held: Vec<Vec<u8>> = ["sensor-1", "sensor-2", "sensor-3"]
            .iter()
            .map(|id| pem_der(&env, NOW, id))
            .collect();
        // L1's command from the shell history, L2's, then L1's again: L2's CA stands.
        for incident in ["L1", "L2", "L1"] {
            let again = breach(incident);
            assert_eq!(
                again["groups"][0]["outcome"], "already-replaced",
                "{target} {incident}: {again}"
            );
            assert_eq!(vault_state(&env), after_l2, "{target} {incident}: {again}");
            for (id, cert) in ["sensor-1", "sensor-2", "sensor-3"].iter().zip(&held) {
                assert!(works(&env, id, cert, NOW), "{target} {incident}: {id}");
            }
        }
        // A new label still declares L2's replacement compromised.
        let l3 = breach("L3");
        assert_eq!(l3["groups"][0]["outcome"], "replaced", "{target}: {l3}");
    }
}

/// CA breach A of `ca:factory` in an issued three-sensor quickstart, stopped after as many steps
/// as `stop_at` counts (given the environment and A's arguments), then breach B run to its end:
/// B replaces the CA, and only what is used is enabled. Returns the environment, A's arguments
/// (its command from the shell history) and the vault after B.
fn ca_breach_a_stopped_then_b(
    stop_at: impl FnOnce(&TestEnv, &[&str]) -> u32,
) -> (TestEnv, [&'static str; 8], VaultState) {
    let env = TestEnv::new();
    small_quickstart(&env, 3);
    run(&env, &["issue"]).ok();
    let a = breach_args("ca:factory", "A");
    killed_after(&env, stop_at(&env, &a), &a);
    let b = run(&env, &breach_args("ca:factory", "B")).ok().json();
    assert_eq!(b["groups"][0]["outcome"], "replaced", "{b}");
    only_what_is_used_is_enabled(&env, "after B");
    let after_b = vault_state(&env);
    (env, a, after_b)
}

#[test]
fn a_ca_breach_stopped_after_its_revocation_then_a_later_one_then_the_first_again_replaces_nothing_twice() {
    // Stopped after remove-compromised and revoke-ca: the CA is revoked, not yet renewed.
    let (env, a, after_b) = ca_breach_a_stopped_then_b(|_, _| 2);
    // A's command resumes its run: B replaced the CA and every device since, so A renews
    // nothing and replaces nothing; then A's command once more is a new run with nothing to do.
    let resumed = run(&env, &a).ok().json();
    assert_eq!(resumed["resumed"], true, "{resumed}");
    assert_eq!(resumed["groups"][0]["outcome"], "already-replaced", "{resumed}");
    for d in resumed["devices"].as_array().unwrap() {
        assert_eq!(d["outcome"], "already-replaced", "{resumed}");
    }
    assert_eq!(vault_state(&env), after_b, "{resumed}");
    only_what_is_used_is_enabled(&env, "after A resumed");
    let again = run(&env, &a).ok().json();
    assert_eq!(again["groups"][0]["outcome"], "already-replaced", "{again}");
    assert_eq!(vault_state(&env), after_b, "{again}");
}

#[test]
fn a_ca_breach_stopped_before_its_devices_then_a_later_one_disables_what_the_first_compromised_ca_signed() {
    // Stopped with the CA renewed and in its group, before any device was replaced: every
    // device still holds the certificate the compromised version signed.
    let (env, a, after_b) = ca_breach_a_stopped_then_b(|env, a| {
        let dry = run(env, &[a, &["--dry-run"][..]].concat()).ok().json();
        let kinds: Vec<&str> = dry["steps"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s["kind"].as_str())
            .collect();
        kinds.iter().position(|k| *k == "replace-devices").unwrap() as u32
    });
    let resumed = run(&env, &a).ok().json();
    assert_eq!(resumed["resumed"], true, "{resumed}");
    assert_eq!(vault_state(&env), after_b, "{resumed}");
    only_what_is_used_is_enabled(&env, "after A resumed");
}

#[test]
fn a_resumed_device_breach_counts_its_device_cut_off_and_says_so_when_a_later_one_replaced_it() {
    let env = TestEnv::new();
    small_quickstart(&env, 3);
    run(&env, &["issue"]).ok();
    let a = breach_args("device:gateway-01", "INC-A");
    killed_by(&env, "CERTROLL_FAULT_BEFORE_STEP_COMMIT", "1", &a);
    let held = pem_der(&env, NOW, "gateway-01");
    assert!(
        works(&env, "gateway-01", &held, NOW),
        "the kill came before the commit"
    );
    // The rerun's enrollment write refuses the certificate the gateway holds: its dry run says
    // it cuts the gateway off, as the same dry run before any run does.
    let dry = run(&env, &[&a[..], &["--dry-run"]].concat()).ok().json();
    assert_eq!(dry["resumed"], true, "{dry}");
    assert_eq!(dry["devices_cut_off"]["count"], 1, "{dry}");
    assert_eq!(
        dry["devices_cut_off"]["first"],
        serde_json::json!(["gateway-01"]),
        "{dry}"
    );
    assert!(works(&env, "gateway-01", &held, NOW), "a dry run changes nothing");
    let b = run(&env, &breach_args("device:gateway-01", "INC-B")).ok().json();
    assert_eq!(b["devices"][0]["outcome"], "replaced", "{b}");
    // A's rerun resumes its run and finds B's replacement: its step says there is nothing to
    // replace, and it cuts nobody off.
    let resumed = run(&env, &a).ok().json();
    assert_eq!(resumed["resumed"], true, "{resumed}");
    assert_eq!(resumed["devices"][0]["outcome"], "already-replaced", "{resumed}");
    let words = resumed["steps"][0]["description"].as_str().unwrap();
    assert!(words.contains("nothing to replace"), "{resumed}");
    assert!(!words.contains("of them rolled"), "{resumed}");
    assert_eq!(resumed["devices_cut_off"]["count"], 0, "{resumed}");
}

#[test]
fn a_resumed_ca_breach_counts_the_devices_it_cut_off() {
    let env = TestEnv::new();
    small_quickstart(&env, 3);
    run(&env, &["issue"]).ok();
    let held: Vec<(String, Vec<u8>)> = ["gateway-01", "sensor-1", "sensor-2", "sensor-3"]
        .iter()
        .map(|id| (id.to_string(), pem_der(&env, NOW, id)))
        .collect();
    let a = breach_args("ca:factory", "L1");
    // Stopped after remove-compromised and revoke-ca: every device still holds the certificate
    // the revoked CA version signed; the sensors' group no longer admits it.
    let fresh = run(&env, &[&a[..], &["--dry-run"]].concat()).ok().json();
    assert_eq!(fresh["devices_cut_off"]["count"], 4, "{fresh}");
    killed_after(&env, 2, &a);
    for (id, der) in held.iter().filter(|(id, _)| id.starts_with("sensor-")) {
        assert!(
            !works(&env, id, der, NOW),
            "{id}: its group no longer holds its CA"
        );
    }
    // The rerun's dry run counts them until they are replaced, as the same dry run before any
    // run did (the gateway's individual enrollment is replaced with the rest).
    let dry = run(&env, &[&a[..], &["--dry-run"]].concat()).ok().json();
    assert_eq!(dry["resumed"], true, "{dry}");
    assert_eq!(dry["devices_cut_off"], fresh["devices_cut_off"], "{dry}");
    // The rerun replaces them as its dry run said, and its command again has nobody to count.
    let done = run(&env, &a).ok().json();
    assert_eq!(done["devices_cut_off"], dry["devices_cut_off"], "{done}");
    for (id, _) in &held {
        assert!(works(&env, id, &pem_der(&env, NOW, id), NOW), "{id}: replaced");
    }
    let again = run(&env, &[&a[..], &["--dry-run"]].concat()).ok().json();
    assert_eq!(again["devices_cut_off"]["count"], 0, "{again}");
}

/// A CA breach stopped after its revocation step: the sensors' group no longer holds the
/// compromised CA, so DPS refuses the sensors until the rerun replaces their certificates.
/// `check` says so of each (critical, naming the rerun), as of a device breach cut off
/// part-way; the individual enrollment's device, which DPS still admits, is critical too (its
/// certificate is the compromised CA's). After the rerun no device is named. The same when it
/// stopped later, just before its replace-devices step (the CA renewed and the compromised
/// version disabled): `check` said only "disabled and replaced (compromised)" there, not
/// whether DPS refuses the device, unlike `status`'s `breach_open` (trial az16 2a).
#[test]
fn check_names_the_devices_a_ca_breach_stopped_after_its_revocation_cut_off() {
    let a = breach_args("ca:factory", "L1");
    let replace_step = {
        let env = TestEnv::new();
        small_quickstart(&env, 3);
        run(&env, &["issue"]).ok();
        let plan = run(&env, &[&a[..], &["--dry-run"]].concat()).ok().json();
        plan["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["kind"] == "replace-devices")
            .and_then(|s| s["seq"].as_u64())
            .unwrap_or_else(|| panic!("no replace-devices step: {plan}")) as u32
    };
    assert!(replace_step > 3, "revocation comes before the devices");
    for after in [2, replace_step - 1] {
        a_ca_breach_stopped_after(&a, after);
    }
}

/// [`check_names_the_devices_a_ca_breach_stopped_after_its_revocation_cut_off`], killed after
/// step `after`.
fn a_ca_breach_stopped_after(a: &[&str], after: u32) {
    let env = TestEnv::new();
    small_quickstart(&env, 3);
    run(&env, &["issue"]).ok();
    killed_after(&env, after, a);
    let rerun = "`certroll roll-primary --breach --incident L1 ca:factory --yes` finishes it";
    let c = run(&env, &["check", "-o", "json"]);
    assert_eq!(c.code, 2, "after {after}: {}\n{}", c.stdout, c.stderr);
    let report = c.json();
    let reason = |id: &str| {
        let p = report["problems"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["target"] == format!("device:{id}"))
            .unwrap_or_else(|| panic!("after {after}: device:{id} not named: {report}"));
        assert_eq!(p["level"], "critical", "{p}");
        p["reason"].as_str().unwrap().to_string()
    };
    for id in ["sensor-1", "sensor-2", "sensor-3"] {
        let why = reason(id);
        assert!(
            why.contains("DPS refuses the device") && why.contains(rerun),
            "after {after}: {why}"
        );
    }
    let why = reason("gateway-01");
    assert!(
        why.contains("DPS still admits it") && why.contains(rerun),
        "after {after}: {why}"
    );
    if after == 2 {
        assert_eq!(report["counts"]["ok"], 1, "only the root: {report}");
    }
    // `status` names the open breach on the same devices, with the same words (trial az15 N4:
    // `breach_open` was null and the sensors read `assigned`).
    let breach_open = |id: &str| {
        let status = run(&env, &["status", "-o", "json"]).ok().json();
        let d = status["devices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["id"] == id)
            .unwrap_or_else(|| panic!("{id} not listed: {status}"))
            .clone();
        d["breach_open"].as_str().map(str::to_string)
    };
    for id in ["sensor-1", "sensor-2", "sensor-3", "gateway-01"] {
        assert_eq!(breach_open(id), Some(reason(id)), "after {after}: {id}");
    }
    let text = run(&env, &["status"]).ok().stdout;
    assert!(text.contains("breach open: ") && text.contains(rerun), "{text}");

    run(&env, a).ok();
    let c = run(&env, &["check", "-o", "json"]);
    let report = c.json();
    assert!(
        !report["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["target"].as_str().unwrap().starts_with("device:")),
        "{report}"
    );
    for id in ["sensor-1", "sensor-2", "sensor-3", "gateway-01"] {
        assert_eq!(breach_open(id), None, "{id}: the rerun finished it");
    }
}

/// A CA breach cut off after renewing the CA, then an expiry roll of one of its devices (a new
/// certificate under the CA's new version in the other slot, the compromised one still beside
/// it), then the breach's rerun: the rerun still replaces that device (it holds the compromised
/// certificate), while a device a later breach of its own replaced is left alone (see
/// `azure_foreign`). Afterwards `check` is OK.
#[test]
fn a_ca_breach_resumed_after_an_expiry_roll_of_one_device_still_replaces_it() {
    let a = breach_args("ca:factory", "L1");
    let env = TestEnv::new();
    small_quickstart(&env, 3);
    run(&env, &["issue"]).ok();
    let plan = run(&env, &[&a[..], &["--dry-run"]].concat()).ok().json();
    let replace_step = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == "replace-devices")
        .and_then(|s| s["seq"].as_u64())
        .unwrap_or_else(|| panic!("no replace-devices step: {plan}")) as u32;
    killed_after(&env, replace_step - 1, &a);
    let rolled = run(&env, &["roll-secondary", "device:sensor-1", "-o", "json"])
        .ok()
        .json();
    assert_eq!(rolled["devices"][0]["outcome"], "rolled", "{rolled}");
    let rerun = run(&env, &a).ok().json();
    let sensor = rerun["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["target"] == "device:sensor-1")
        .unwrap_or_else(|| panic!("{rerun}"));
    assert_eq!(sensor["outcome"], "replaced", "{rerun}");
    let c = run(&env, &["check", "-o", "json"]);
    assert_eq!(c.code, 0, "{}", c.stdout);
}
