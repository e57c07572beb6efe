//! Issue 10, the faults the fourth new-user trial found: a group breach replaces every device
//! whose certificate chains through the compromised CA version, individual enrollments included.

use crate::roll::backend;
use crate::util::*;
use certroll::backend::Vault as _;

/// Priority 1 (security): `roll-primary --breach group:sensors` declares the factory CA's current
/// version compromised; the individual enrollment gateway-01, also issued by that version, gets a
/// new certificate under the new factory version (the breach names it as cut off), and `check`
/// then reports the fleet healthy. Without this, gateway-01 kept a chain through a revoked CA.
#[test]
fn a_group_breach_replaces_an_enrollment_signed_by_the_same_ca() {
    let env = TestEnv::new();
    env.quickstart();
    env.plan_run(&["issue"]).ok();
    let b = backend(&env);
    let old_ca = b.versions("ca-factory").unwrap().last().unwrap().clone();
    assert_eq!(b.versions("dev-gateway-01").unwrap().len(), 1);
    drop(b);

    let dry = env
        .plan_run(&[
            "roll-primary",
            "--breach",
            "group:sensors",
            "--dry-run",
            "-o",
            "json",
        ])
        .ok()
        .stdout;
    assert!(dry.contains("gateway-01"), "the dry run names gateway-01: {dry}");

    env.plan_run(&["roll-primary", "--breach", "group:sensors", "--yes"])
        .ok();
    let b = backend(&env);
    let gw = b.versions("dev-gateway-01").unwrap();
    assert_eq!(gw.len(), 2, "gateway-01 got a new certificate");
    let new_ca = b.versions("ca-factory").unwrap().last().unwrap().clone();
    assert_ne!(new_ca.version, old_ca.version);
    assert_eq!(
        gw.last().unwrap().issuer,
        Some((new_ca.name.clone(), new_ca.version.clone())),
        "issued by the new factory version"
    );
    drop(b);
    env.plan_run(&["check"]).ok();
    // A rerun changes nothing.
    env.plan_run(&["roll-primary", "--breach", "group:sensors", "--yes"])
        .ok();
    assert_eq!(backend(&env).versions("dev-gateway-01").unwrap().len(), 2);
}

/// Priority 2: a soft-deleted root CA (the intermediate below it live) is named, with the
/// command that brings it back, by every verb that needs the chain (exit 2, nothing changed);
/// the cron `--due` run reports the devices below it held back (exit 1) instead of failing
/// with "issuer version … not found".
#[test]
fn a_deleted_root_ca_is_named_by_every_roll_and_held_back_by_due() {
    let env = TestEnv::new();
    env.quickstart();
    env.plan_run(&["issue"]).ok();
    env.plan_run(&["vault", "delete", "ca-root", "--force"]).ok();
    let before = store_bytes(&env);
    for args in [
        &["roll-secondary", "device:sensor-01"][..],
        &["export", "device:sensor-01", "--out", "d.pem"],
        &["reprovision", "--force"],
    ] {
        let r = env.plan_run(args).code(2);
        assert!(
            r.stderr.contains("ca-root") && r.stderr.contains("certroll vault recover ca-root"),
            "{args:?}: {}",
            r.stderr
        );
        assert!(!r.stderr.contains("issuer version"), "{}", r.stderr);
        assert!(store_bytes(&env) == before, "{args:?} changed nothing");
    }
    let r = env
        .plan_run(&[
            "--now",
            &crate::roll::at(340),
            "-o",
            "json",
            "roll-secondary",
            "--due",
        ])
        .code(1)
        .json();
    let d = outcome(&r, "sensor-01");
    assert_eq!(d["outcome"], "held-back", "{r:#}");
    let why = d["steps"][0].as_str().unwrap();
    assert!(why.contains("certroll vault recover ca-root"), "{why}");
    assert_eq!(backend(&env).versions("dev-sensor-01").unwrap().len(), 1);
}

/// Priority 3: one deleted and one purged device certificate do not stop the cron `--due` run:
/// both are reported held back with what to do, every other due device is rolled (exit 1).
#[test]
fn the_cron_run_rolls_the_rest_beside_a_deleted_and_a_purged_device_certificate() {
    let env = TestEnv::new();
    env.quickstart();
    env.plan_run(&["issue"]).ok();
    env.plan_run(&["vault", "delete", "dev-sensor-01", "--force"])
        .ok();
    env.plan_run(&["vault", "delete", "dev-sensor-02", "--force"])
        .ok();
    env.plan_run(&["vault", "purge", "dev-sensor-02", "--yes"]).ok();
    let r = env
        .plan_run(&[
            "--now",
            &crate::roll::at(340),
            "-o",
            "json",
            "roll-secondary",
            "--due",
        ])
        .code(1)
        .json();
    let d1 = outcome(&r, "sensor-01");
    assert_eq!(d1["outcome"], "held-back", "{r:#}");
    assert!(
        d1["steps"][0]
            .as_str()
            .unwrap()
            .contains("certroll vault recover dev-sensor-01"),
        "{d1:#}"
    );
    let d2 = outcome(&r, "sensor-02");
    assert_eq!(d2["outcome"], "held-back", "{r:#}");
    assert_eq!(outcome(&r, "sensor-03")["outcome"], "rolled", "{r:#}");
    assert_eq!(outcome(&r, "gateway-01")["outcome"], "rolled", "{r:#}");
    assert_eq!(backend(&env).versions("dev-sensor-03").unwrap().len(), 2);
}

/// Priority 4: the advice for a purged device certificate, `certroll issue device:ID`, works: the
/// new certificate goes into the individual enrollment too, so the device registers (it was
/// refused, 401002, with the purged certificate still in the slot); a rerun changes nothing.
#[test]
fn issue_after_a_purged_enrollment_certificate_puts_the_new_one_into_the_enrollment() {
    let env = TestEnv::new();
    env.quickstart();
    env.plan_run(&["issue"]).ok();
    env.plan_run(&["vault", "delete", "dev-gateway-01", "--force"])
        .ok();
    env.plan_run(&["vault", "purge", "dev-gateway-01", "--yes"]).ok();
    env.plan_run(&["issue", "device:gateway-01"]).ok();
    let b = backend(&env);
    let current = b.versions("dev-gateway-01").unwrap();
    assert_eq!(current.len(), 1);
    drop(b);
    env.plan_run(&["reprovision", "device:gateway-01", "--force"])
        .ok();
    env.plan_run(&["issue", "device:gateway-01"]).ok();
    assert_eq!(backend(&env).versions("dev-gateway-01").unwrap().len(), 1);
    env.plan_run(&["check"]).ok();
}
