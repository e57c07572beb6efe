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
