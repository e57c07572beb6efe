//! A device DPS refused, on a local plan and on the same plan on azure against `certroll
//! serve`: after `revoke ca:factory` (which deletes the group it leaves without a certificate)
//! the group's devices register again and no enrollment accepts them. Every verb that reads
//! such a device's registration must see DPS's refusal, whatever it read before: a read that
//! found the device no individual enrollment (a group's device has none) once passed for
//! "never registered" and hid the refusal (issue 12, review of ca3f280).

use crate::azure_verbs::{mask, run_fleet};
use crate::azure_verbs2::{assert_same, both, device};
use crate::conformance::azure::Serve;
use crate::util::TestEnv;
use serde_json::Value;

/// [`GROUPS`](crate::azure_verbs2::GROUPS) issued on both plans, `revoke ca:factory`, then
/// `reprovision group:sensors` on both: its (exit code, local answer, azure answer).
pub(crate) fn refused(env: &TestEnv) -> (Serve, i32, Value, Value) {
    let serve = crate::azure_verbs2::issued_groups(env);
    let revoke = [
        "revoke",
        "ca:factory",
        "--reason",
        "ca-compromise",
        "--yes",
        "-o",
        "json",
    ];
    let (l, a) = both(env, &serve, &revoke);
    assert_same(&l, &a, "revoke ca:factory");
    let reprovision = ["reprovision", "group:sensors", "-o", "json"];
    let (l, a) = (
        run_fleet(env, &serve, "local", &reprovision),
        run_fleet(env, &serve, "azure", &reprovision),
    );
    assert_eq!(
        l.code, a.code,
        "local:\n{}\nazure:\n{}\n{}",
        l.stdout, a.stdout, a.stderr
    );
    (serve, a.code, l.json(), a.json())
}

/// `reprovision` reports DPS's refusal of each device as the local enrollment service does
/// (`failed`, the hub it was last assigned to, DPS's reason), not as a device that "has not
/// registered yet": it read the devices' individual enrollments (none) before their
/// registrations.
#[test]
fn reprovision_reports_the_refusal_dps_recorded() {
    let env = TestEnv::new();
    let (_serve, code, l, a) = refused(&env);
    assert_eq!(code, 1, "refused devices fail the run: {a}");
    assert_eq!(l["rejected"], 2, "{l}");
    for id in ["s-1", "s-2"] {
        let find = |doc: &Value| {
            doc["devices"]
                .as_array()
                .and_then(|d| d.iter().find(|d| d["device"] == id).cloned())
                .unwrap_or_else(|| panic!("no {id} in {doc}"))
        };
        let (ld, ad) = (find(&l), find(&a));
        assert_eq!(ld["status"], "failed", "{ld}");
        assert_eq!(ld["hub"], "conf-hub", "{ld}");
        assert_same(&ld, &ad, &format!("reprovision of {id}"));
    }
    assert_same(&mask(l), &mask(a), "reprovision");
}

/// After the refusal, `status` on azure shows each device's failed registration with the
/// certificate it was refused with (the one it holds, unmasked: the same thumbprint as on
/// local), and `status device:ID` (one device, read after nothing else) the same; `check`
/// agrees with local's.
#[test]
fn status_and_check_show_the_refusal_and_the_certificate_refused() {
    let env = TestEnv::new();
    let (serve, ..) = refused(&env);
    let status = |which, args: &[&str]| run_fleet(&env, &serve, which, args).ok().json();
    let all = ["status", "-o", "json"];
    let (l, a) = (status("local", &all), status("azure", &all));
    assert_same(&mask(l.clone()), &mask(a.clone()), "status");
    for id in ["s-1", "s-2"] {
        // Each backend issued its own certificates: each document is checked against itself.
        for (which, doc) in [("local", &l), ("azure", &a)] {
            let d = device(doc, id);
            assert_eq!(d["registration"]["status"], "failed", "{which}: {id}: {d}");
            let tp = &d["installed"]["thumbprint"];
            assert!(tp.is_string(), "{which}: {id}: {d}");
            assert_eq!(
                &d["registration"]["cert_thumbprint"], tp,
                "{which}: {id} was refused with the certificate it holds: {d}"
            );
        }
        let one = ["status", &format!("device:{id}"), "-o", "json"];
        let (l1, a1) = (status("local", &one), status("azure", &one));
        assert_eq!(device(&a1, id)["registration"]["status"], "failed", "{a1}");
        assert_same(&mask(l1), &mask(a1), &format!("status device:{id}"));
    }
    let check = ["check", "-o", "json"];
    let (l, a) = (
        run_fleet(&env, &serve, "local", &check),
        run_fleet(&env, &serve, "azure", &check),
    );
    assert_eq!(l.code, a.code, "{}\n{}", l.stdout, a.stdout);
    assert_same(&mask(l.json()), &mask(a.json()), "check");
}

/// The breach that replaces the revoked CA brings the refused devices back: both backends
/// replace the same (each device a new certificate, the group a new CA), a rerun changes
/// nothing (each target already replaced, no write to the services, each device's
/// certificates as the first run left them), and `status` shows each device assigned again
/// with its new certificate.
#[test]
fn a_breach_after_the_refusal_brings_the_devices_back() {
    let env = TestEnv::new();
    let (serve, ..) = refused(&env);
    let breach = ["roll-primary", "--breach", "ca:factory", "--yes", "-o", "json"];
    let (l, a) = both(&env, &serve, &breach);
    assert_same(&l, &a, "breach of ca:factory after the refusal");
    let raw = run_fleet(&env, &serve, "azure", &["status", "-o", "json"])
        .ok()
        .json();
    let mut rerun = (Value::Null, Value::Null);
    let lines = crate::azure_requests::during(&env, || rerun = both(&env, &serve, &breach));
    let (l, a) = rerun;
    assert_same(&l, &a, "rerun of the breach");
    // The rerun itself: everything already replaced, nothing written to the services, and
    // every device's certificates where the first run left them.
    let outcomes: Vec<&Value> = ["devices", "groups"]
        .iter()
        .flat_map(|k| a[*k].as_array().into_iter().flatten())
        .map(|x| &x["outcome"])
        .collect();
    assert!(
        !outcomes.is_empty() && outcomes.iter().all(|o| *o == "already-replaced"),
        "{a}"
    );
    let writes: Vec<&String> = lines
        .iter()
        .filter(|l| crate::azure_requests::is_write(l))
        .collect();
    assert!(writes.is_empty(), "the rerun wrote: {writes:#?}");
    let after = run_fleet(&env, &serve, "azure", &["status", "-o", "json"])
        .ok()
        .json();
    for id in ["s-1", "s-2"] {
        let (d, e) = (device(&raw, id), device(&after, id));
        for k in ["installed", "registration", "hub_identity", "pending"] {
            assert_eq!(d[k], e[k], "{id}: {k} changed by the rerun");
        }
    }
    let (l, a) = both(&env, &serve, &["status", "-o", "json"]);
    assert_same(&l, &a, "status after the breach");
    for id in ["s-1", "s-2"] {
        let d = device(&raw, id);
        assert_eq!(d["registration"]["status"], "assigned", "{id}: {d}");
        assert_eq!(d["installed"]["issuer"], "CN=Factory", "{id}: {d}");
        assert_eq!(
            d["registration"]["cert_thumbprint"], d["installed"]["thumbprint"],
            "{id}: {d}"
        );
        assert_eq!(
            d["hub_identity"]["primary_thumbprint"], d["installed"]["thumbprint"],
            "{id}: {d}"
        );
    }
}
