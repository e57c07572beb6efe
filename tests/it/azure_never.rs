//! Breach rolls of a CA whose devices' enrollments have `reprovision = "never"`, on a local plan
//! and on the same plan on azure against `certroll serve` (trial az5 F-BREACH-NEVER): DPS leaves
//! such a device's hub identity alone when it registers again, so certroll itself must put the
//! new thumbprint there, alone, or the hub keeps trusting only the compromised certificate. And
//! what azure reads a refused device to hold (F-STATUS-REFUSED).

use crate::azure_verbs::{fleet_plans_with, run_fleet};
use crate::azure_verbs2::{DIRECT, GROUPS, assert_same, both, device, serve_status};
use crate::util::TestEnv;

/// [`GROUPS`] with `reprovision = "never"` on the group and on the individual enrollment.
fn never() -> String {
    let plan = GROUPS.replace("reprovision = \"migrate\"", "reprovision = \"never\"");
    assert_ne!(plan, GROUPS, "the group's policy is replaced");
    format!("{plan}reprovision = \"never\"\n")
}

/// Serve over the `never` fleet, issued the same on both plans through the factory hook.
fn issued_never(env: &TestEnv) -> crate::conformance::azure::Serve {
    let fleet = never();
    let serve = crate::azure_verbs::start_serve(env, &fleet);
    crate::azure_verbs::fleet_plans_hook(env, &serve, &fleet);
    let (l, a) = both(env, &serve, &["issue", "-o", "json"]);
    assert_eq!(l, a, "issue");
    serve
}

/// A breach of the group's signing CA and then of the root (the individual enrollment's
/// issuer) exits 0 on both backends, a rerun changes nothing, and every device's hub identity
/// in serve holds the thumbprint of the certificate the device now holds, alone: the hub admits
/// the new certificate and no longer the compromised one. `check` is OK on both.
#[test]
fn a_ca_breach_puts_the_new_thumbprint_on_the_hub_where_reprovision_is_never() {
    let env = TestEnv::new();
    let serve = issued_never(&env);
    fleet_plans_with(&env, &serve, &never(), DIRECT);
    let before = serve_status(&env);
    for ca in ["factory", "root"] {
        let breach = [
            "roll-primary",
            "--breach",
            &format!("ca:{ca}"),
            "--yes",
            "-o",
            "json",
        ];
        let (l, a) = both(&env, &serve, &breach);
        assert_same(&l["devices"], &a["devices"], &format!("breach of ca:{ca}"));
        let (l, a) = both(&env, &serve, &breach);
        assert_same(&l, &a, &format!("rerun of the breach of ca:{ca}"));
    }
    let (l, a) = both(&env, &serve, &["status", "-o", "json"]);
    assert_same(&l, &a, "status after the breaches");
    let served = serve_status(&env);
    for id in ["s-1", "s-2", "gw-1"] {
        let held = device(&served, id);
        let old = &device(&before, id)["installed"]["thumbprint"];
        let tp = &held["installed"]["thumbprint"];
        assert!(
            tp.is_string() && tp != old,
            "{id} holds a new certificate: {held}"
        );
        assert_eq!(&held["hub_identity"]["primary_thumbprint"], tp, "{id}: {held}");
        assert!(
            held["hub_identity"]["secondary_thumbprint"].is_null(),
            "{id}: {held}"
        );
    }
    for which in ["local", "azure"] {
        let r = run_fleet(&env, &serve, which, &["check", "-o", "json"]);
        assert_eq!(r.code, 0, "{which}: {}\n{}", r.stdout, r.stderr);
    }
}

/// A CA breach whose devices cannot be reached (`delivery = "none"`: the operator hands the new
/// certificates out) finishes (exit 0; it stopped at them, exit 1, before session 15), on
/// [`GROUPS`] as it is; meanwhile `check` counts each device still
/// presenting a certificate of the replaced, compromised CA version as critical, naming the
/// breach that replaces it, never as ok.
#[test]
fn check_counts_a_device_still_on_a_breached_ca_as_critical() {
    let env = TestEnv::new();
    let serve = crate::azure_verbs2::issued_groups(&env);
    fleet_plans_with(&env, &serve, GROUPS, "delivery = \"none\"\n");
    let cut = run_fleet(
        &env,
        &serve,
        "azure",
        &["roll-primary", "--breach", "ca:factory", "--yes", "-o", "json"],
    );
    assert_eq!(cut.code, 0, "{}\n{}", cut.stdout, cut.stderr);
    let r = run_fleet(&env, &serve, "azure", &["check", "-o", "json"]);
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    let report = r.json();
    for id in ["s-1", "s-2"] {
        let target = format!("device:{id}");
        let problem = report["problems"]
            .as_array()
            .and_then(|p| {
                p.iter()
                    .find(|p| p["target"] == target.as_str() && p["level"] == "critical")
            })
            .unwrap_or_else(|| panic!("no critical problem for {target}: {report}"));
        let reason = problem["reason"].as_str().unwrap();
        assert!(
            reason.contains("CA `factory`") && reason.contains("roll-primary --breach ca:factory"),
            "{reason}"
        );
    }
}

/// After `revoke ca:factory`, `reprovision` has the group's devices register and be refused (no
/// enrollment accepts their certificates) on both backends. azure's `status` still shows each
/// device holding the certificate it was refused with, as local's does (trial az5
/// F-STATUS-REFUSED: azure showed `installed: null` and that certificate as `pending`, "not yet
/// presented"). azure's document is read as it is, not settled against local's.
#[test]
fn a_refused_device_still_holds_its_certificate_in_azure_status() {
    let env = TestEnv::new();
    let (serve, ..) = crate::azure_refused::refused(&env);
    let status = |which| {
        run_fleet(&env, &serve, which, &["status", "-o", "json"])
            .ok()
            .json()
    };
    let raw = status("azure");
    let (l, a) = (
        crate::azure_verbs::mask(status("local")),
        crate::azure_verbs::mask(raw.clone()),
    );
    for id in ["s-1", "s-2"] {
        // The certificate the device was refused with is the one on its hub identity, which
        // the factory hook registered it with.
        let held = device(&raw, id);
        let tp = &held["installed"]["thumbprint"];
        assert!(tp.is_string(), "{id}: {held}");
        assert_eq!(&held["hub_identity"]["primary_thumbprint"], tp, "{id}: {held}");
        let (ld, ad) = (device(&l, id), device(&a, id));
        assert_eq!(
            ld["registration"]["status"], "failed",
            "{id} refused on local: {ld}"
        );
        assert_eq!(
            ad["registration"]["status"], "failed",
            "{id} refused on azure: {ad}"
        );
        assert!(ld["installed"].is_object(), "{id}: {ld}");
        assert_eq!(
            ad["installed"], ld["installed"],
            "{id} holds the same certificate: {ad}"
        );
        assert!(
            ad["pending"].is_null(),
            "{id}: nothing waits to be presented: {ad}"
        );
    }
}
