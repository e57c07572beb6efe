//! Issue 10, the fourth trial's leftovers (part B): what a roll, `check` and `status` make of a
//! certificate not valid yet, capped cron runs, a purged device certificate, a renamed individual
//! enrollment, expired leaves left in enrollment slots, a group breach above a child CA, a due CA
//! above a device never issued, and a `content_type` edited after the version was made.

use crate::roll::{at, backend, works};
use crate::util::*;
use certroll::backend::{EnrollmentService as _, Vault as _};

/// The thumbprint the individual enrollment of `id` holds in each slot.
fn slots(env: &TestEnv, id: &str) -> (Option<String>, Option<String>) {
    let e = backend(env).individual(id).unwrap().unwrap();
    (
        e.primary.as_deref().map(certroll::pki::sha1_thumbprint),
        e.secondary.as_deref().map(certroll::pki::sha1_thumbprint),
    )
}

/// Item 16's kind: certificates made by a roll with `--now` 40 days ahead are not valid yet at
/// the real time. `check` is critical and says what to run; a named roll replaces such a
/// certificate (its rerun then does nothing, as item 3 wants), and the cron `--due` run treats
/// one as due; the new certificates are accepted now.
#[test]
fn a_certificate_not_valid_yet_is_replaced_by_the_next_roll() {
    let env = TestEnv::new();
    small_quickstart(&env, 2);
    env.plan_run(&["issue"]).ok();
    env.plan_run(&[
        "--now",
        &at(40),
        "roll-secondary",
        "device:gateway-01",
        "device:sensor-1",
    ])
    .ok();
    assert_eq!(count(&env, "dev-gateway-01"), 2);
    assert_eq!(count(&env, "dev-sensor-1"), 2);

    let check = env.plan_run(&["check", "-o", "json"]).code(2).json();
    for id in ["gateway-01", "sensor-1"] {
        let p = problem(&check, &format!("device:{id}"));
        let reason = p["reason"].as_str().unwrap();
        assert!(
            reason.contains("not valid before")
                && reason.contains(&format!("certroll roll-secondary device:{id}")),
            "{p:#}"
        );
    }

    // The named roll replaces the one not valid yet; its rerun does nothing.
    let r = env
        .plan_run(&["-o", "json", "roll-primary", "device:gateway-01"])
        .ok()
        .json();
    assert_eq!(outcome(&r, "gateway-01")["outcome"], "rolled", "{r:#}");
    assert_eq!(count(&env, "dev-gateway-01"), 3);
    let newest = backend(&env).current("dev-gateway-01").unwrap().unwrap();
    let now = certroll::clock::parse_rfc3339(NOW).unwrap();
    assert!(newest.nbf <= now, "valid now: {}", newest.nbf);
    assert!(works(&env, "gateway-01", &newest.cert_der, NOW));
    let again = env
        .plan_run(&["-o", "json", "roll-primary", "device:gateway-01"])
        .ok()
        .json();
    assert_eq!(
        outcome(&again, "gateway-01")["outcome"],
        "already-rolled",
        "{again:#}"
    );
    assert_eq!(count(&env, "dev-gateway-01"), 3);

    // The cron run finds the group device's certificate due; the rest is not due.
    let r = env
        .plan_run(&["-o", "json", "roll-secondary", "--due"])
        .ok()
        .json();
    assert_eq!(outcome(&r, "sensor-1")["outcome"], "rolled", "{r:#}");
    assert_eq!(outcome(&r, "sensor-2")["outcome"], "not-due", "{r:#}");
    assert_eq!(outcome(&r, "gateway-01")["outcome"], "not-due", "{r:#}");
    assert_eq!(count(&env, "dev-sensor-1"), 3);
    let sensor = backend(&env).current("dev-sensor-1").unwrap().unwrap();
    assert!(sensor.nbf <= now, "valid now: {}", sensor.nbf);
    assert!(works(&env, "sensor-1", &sensor.cert_der, NOW));
    env.plan_run(&["roll-secondary", "--due"]).ok();
    assert_eq!(count(&env, "dev-sensor-1"), 3, "the rerun does nothing");
    env.plan_run(&["check"]).ok();
}

/// The same for a CA: a factory CA renewed 40 days ahead is not valid yet, so `check` names the
/// roll that replaces it, and `roll-secondary ca:factory` does (with its devices).
#[test]
fn a_ca_not_valid_yet_is_replaced_by_its_roll() {
    let env = TestEnv::new();
    small_quickstart(&env, 1);
    env.plan_run(&["issue"]).ok();
    env.plan_run(&["--now", &at(40), "roll-secondary", "ca:factory"])
        .ok();
    assert_eq!(count(&env, "ca-factory"), 2);
    let check = env.plan_run(&["check", "-o", "json"]).code(2).json();
    let reason = problem(&check, "ca:factory")["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(reason.contains("certroll roll-secondary ca:factory"), "{reason}");
    env.plan_run(&["roll-secondary", "ca:factory"]).ok();
    assert_eq!(count(&env, "ca-factory"), 3);
    let now = certroll::clock::parse_rfc3339(NOW).unwrap();
    assert!(backend(&env).current("ca-factory").unwrap().unwrap().nbf <= now);
    env.plan_run(&["roll-secondary", "ca:factory"]).ok();
    assert_eq!(count(&env, "ca-factory"), 3, "the rerun does nothing");
    env.plan_run(&["check"]).ok();
}

/// The plan of fidelity4's capped test: root 30 days, factory 60 (auto-renew 25 days before its
/// expiry), so the root caps the factory and the factory caps its devices.
fn capped_plan(env: &TestEnv) {
    let text = small_quickstart(env, 2)
        .replace(
            "O=Example\"\npolicy = \"ca\"",
            "O=Example\"\npolicy = \"root-30\"",
        )
        .replace(
            "path_len = 0\npolicy = \"ca\"",
            "path_len = 0\npolicy = \"ca-60\"",
        )
        + "\n[policies.root-30]\nkey = { type = \"EC\", curve = \"P-384\", exportable = false }\nvalidity_days = 30\n\
           \n[policies.ca-60]\nkey = { type = \"EC\", curve = \"P-384\", exportable = false }\nvalidity_days = 60\n\
           lifetime_actions = [{ days_before_expiry = 25, action = \"auto-renew\" }]\n";
    env.write("plan.toml", &text);
}

/// Item 15's kind: a cron run whose every due device (and due CA) is capped exits 1 (something
/// due was not done), records no run and no step claiming to roll them, and names the capped CA
/// in `renew_ca_first[].cas`; the human note is labelled by what could not be renewed, with the
/// CA to renew first in its words, for `--due` and for a named `ca:` roll alike.
#[test]
fn a_capped_cron_run_exits_1_and_records_nothing() {
    let env = TestEnv::new();
    capped_plan(&env);
    env.plan_run(&["issue"]).ok();
    let t = at(10);
    let before = store_bytes(&env);
    let r = env
        .plan_run(&["--now", &t, "-o", "json", "roll-secondary", "--due"])
        .code(1)
        .json();
    for id in ["sensor-1", "sensor-2", "gateway-01"] {
        assert_eq!(outcome(&r, id)["outcome"], "capped", "{r:#}");
    }
    assert_eq!(r["run"], serde_json::Value::Null, "{r:#}");
    assert_eq!(r["steps"], serde_json::json!([]), "{r:#}");
    let first = r["renew_ca_first"].as_array().unwrap();
    assert_eq!(first.len(), 1, "{r:#}");
    assert_eq!(first[0]["target"], "ca:root", "{r:#}");
    assert_eq!(first[0]["cas"], serde_json::json!(["ca:factory"]), "{r:#}");
    assert_eq!(first[0]["devices"], 3, "{r:#}");
    assert!(store_bytes(&env) == before, "nothing written");

    let human = env
        .plan_run(&["--now", &t, "roll-secondary", "--due"])
        .code(1)
        .stdout;
    assert!(!human.contains("[done]"), "{human}");
    assert!(
        human.contains("ca:factory: CA `root` expires") && human.contains("roll-secondary ca:root"),
        "{human}"
    );
    let named = env
        .plan_run(&["--now", &t, "roll-primary", "ca:factory"])
        .ok()
        .stdout;
    assert!(
        named.contains("ca:factory: CA `root` expires") && !named.contains("ca:root: CA"),
        "{named}"
    );
}

/// Item 17's kind: after `vault delete` and `vault purge` of a device's certificate, `check` and
/// `status` name it purged and still held by the device, with the advice that works (`issue`),
/// and after that advice the device is healthy again.
#[test]
fn a_purged_device_certificate_is_named_purged_by_check_and_status() {
    let env = TestEnv::new();
    small_quickstart(&env, 2);
    env.plan_run(&["issue"]).ok();
    env.plan_run(&["vault", "delete", "dev-gateway-01", "--force"])
        .ok();
    env.plan_run(&["vault", "purge", "dev-gateway-01", "--yes"]).ok();
    let check = env.plan_run(&["check", "-o", "json"]).code(2).json();
    let reason = problem(&check, "device:gateway-01")["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        reason.contains("purged")
            && reason.contains("still holds")
            && reason.contains("certroll issue device:gateway-01"),
        "{reason}"
    );
    assert!(!reason.contains("no certificate"), "{reason}");
    let status = env.plan_run(&["status", "-o", "json"]).ok().json();
    let device = status["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == "gateway-01")
        .unwrap_or_else(|| panic!("{status:#}"))
        .clone();
    assert_eq!(device["installed_purged"], true, "{device:#}");
    let human = env.plan_run(&["status"]).ok().stdout;
    // The devices table comes after the individual enrollments.
    let line = human
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with("gateway-01 "))
        .unwrap_or_else(|| panic!("{human}"));
    assert!(line.contains("(purged from the vault)"), "{line}");
    assert!(human.contains("certroll issue device:gateway-01"), "{human}");

    env.plan_run(&["issue", "device:gateway-01"]).ok();
    env.plan_run(&["reprovision", "device:gateway-01", "--force"])
        .ok();
    env.plan_run(&["check"]).ok();

    // A purged root the enrollment service still holds is named the same way.
    env.plan_run(&["vault", "delete", "ca-root", "--force"]).ok();
    env.plan_run(&["vault", "purge", "ca-root", "--yes"]).ok();
    let check = env.plan_run(&["check", "-o", "json"]).code(2).json();
    let reason = problem(&check, "ca:root")["reason"].as_str().unwrap().to_string();
    assert!(
        reason.contains("purged") && reason.contains("still holds CA certificate `root`"),
        "{reason}"
    );
}

/// Item 21's kind for individual enrollments: `[enrollments.gateway-01]` renamed
/// `[enrollments.gateway-02]` leaves the old enrollment in the service; `check` warns of it and
/// names the likely rename. A group device's own individual enrollment (a breach made it) is
/// not reported.
#[test]
fn check_reports_a_renamed_individual_enrollment() {
    let env = TestEnv::new();
    let text = small_quickstart(&env, 2);
    env.plan_run(&["issue"]).ok();
    env.plan_run(&["roll-primary", "--breach", "device:sensor-1", "--yes"])
        .ok();
    assert!(backend(&env).individual("sensor-1").unwrap().is_some());
    env.plan_run(&["check"]).ok();
    env.write(
        "plan.toml",
        &text.replace("[enrollments.gateway-01]", "[enrollments.gateway-02]"),
    );
    let check = env.plan_run(&["check", "-o", "json"]).json();
    let old = problem(&check, "service-enrollment:gateway-01");
    assert_eq!(old["level"], "warning", "{old:#}");
    let reason = old["reason"].as_str().unwrap();
    assert!(
        reason.contains("renamed to `[enrollments.gateway-02]`") && reason.contains("rename the table back"),
        "{reason}"
    );
    assert!(
        !check["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["target"] == "service-enrollment:sensor-1"),
        "{check:#}"
    );
    // Renamed back, all is well again.
    env.write("plan.toml", &text);
    env.plan_run(&["check"]).ok();
}

/// Item 4's kind for leaves: the cron run at day 340 puts gateway-01's new certificate into the
/// secondary slot; at day 400 the first one, still in the primary slot, has expired. `check`
/// warns of it, and the next cron run (nothing else due) removes it; then `check` is clean.
#[test]
fn an_expired_leaf_in_an_enrollment_slot_is_reported_and_removed() {
    let env = TestEnv::new();
    small_quickstart(&env, 1);
    env.plan_run(&["issue"]).ok();
    let first = slots(&env, "gateway-01").0.unwrap();
    env.plan_run(&["--now", &at(340), "roll-secondary", "--due"]).ok();
    let (primary, secondary) = slots(&env, "gateway-01");
    assert_eq!(primary.as_deref(), Some(first.as_str()));
    assert!(secondary.is_some());
    let t = at(400);
    let check = env.plan_run(&["--now", &t, "check", "-o", "json"]).code(1).json();
    let p = problem(&check, "device:gateway-01");
    assert_eq!(p["level"], "warning", "{p:#}");
    assert!(
        p["reason"]
            .as_str()
            .unwrap()
            .contains("primary slot of its individual enrollment holds a certificate that expired"),
        "{p:#}"
    );
    let r = env
        .plan_run(&["--now", &t, "-o", "json", "roll-secondary", "--due"])
        .ok()
        .json();
    let d = outcome(&r, "gateway-01");
    assert_eq!(d["outcome"], "pruned", "{r:#}");
    assert_eq!(d["pruned_thumbprint"], first.as_str(), "{r:#}");
    // No write leaves a secondary without a primary: the live secondary moves up.
    assert_eq!(slots(&env, "gateway-01"), (secondary.clone(), None));
    assert_eq!(count(&env, "dev-gateway-01"), 2, "nothing issued");
    env.plan_run(&["--now", &t, "check"]).ok();
    // A rerun has nothing left to do and records no run.
    let again = env
        .plan_run(&["--now", &t, "-o", "json", "roll-secondary", "--due"])
        .ok()
        .json();
    assert_eq!(again["run"], serde_json::Value::Null, "{again:#}");
}

/// Item 5's kind (security): a CA `line` below the factory CA signs group `lines` and the
/// individual enrollment `robot`. `roll-primary --breach group:sensors` declares the factory
/// version compromised; every chain through it is replaced: `line` is re-issued under the new
/// factory version, and `l-1` and `robot` get certificates under the new `line`; the old `line`
/// version is disabled, `check` is OK and the rerun changes nothing.
#[test]
fn a_group_breach_replaces_what_a_child_ca_of_the_compromised_one_signed() {
    let env = TestEnv::new();
    let text = small_quickstart(&env, 1).replace("path_len = 0", "path_len = 1")
        + "\n[ca.line]\nsubject = \"CN=Line CA, O=Example\"\nissuer = \"factory\"\npath_len = 0\npolicy = \"ca\"\n\
           \n[groups.lines]\nsigning_ca = \"line\"\nhub = \"example-hub\"\nreprovision = \"migrate\"\n\
           device_policy = \"device\"\ndevices = { prefix = \"l-\", count = 1 }\n\
           \n[enrollments.robot]\nissuer = \"line\"\npolicy = \"device\"\nhub = \"example-hub\"\n";
    env.write("plan.toml", &text);
    env.plan_run(&["issue"]).ok();
    let old_line = backend(&env).current("ca-line").unwrap().unwrap();

    let dry = env
        .plan_run(&["roll-primary", "--breach", "group:sensors", "--dry-run"])
        .ok()
        .stdout;
    assert!(dry.contains("robot") && dry.contains("l-1"), "{dry}");
    env.plan_run(&["roll-primary", "--breach", "group:sensors", "--yes"])
        .ok();
    let b = backend(&env);
    let factory = b.current("ca-factory").unwrap().unwrap();
    let line = b.current("ca-line").unwrap().unwrap();
    assert_ne!(line.version, old_line.version, "line re-issued");
    assert_eq!(line.issuer, Some((factory.name.clone(), factory.version.clone())));
    for id in ["robot", "l-1"] {
        let v = b.current(&format!("dev-{id}")).unwrap().unwrap();
        assert_eq!(
            v.issuer,
            Some((line.name.clone(), line.version.clone())),
            "{id} under the new line CA"
        );
    }
    assert!(
        !b.version("ca-line", &old_line.version).unwrap().unwrap().enabled,
        "the old line version is disabled"
    );
    drop(b);
    // Each registers with its new certificate and chain.
    for id in ["robot", "l-1"] {
        let out = env
            .plan_run(&["reprovision", &format!("device:{id}"), "--force"])
            .ok()
            .stdout;
        assert!(out.contains("1 assigned, 0 unchanged, 0 rejected"), "{id}: {out}");
    }
    env.plan_run(&["check"]).ok();
    env.plan_run(&["roll-primary", "--breach", "group:sensors", "--yes"])
        .ok();
    assert_eq!(count(&env, "dev-robot"), 2);
    assert_eq!(count(&env, "ca-line"), 2);
}

/// The cron kind: CA `short`'s auto-renew is due and its group gained a device `t-3` never
/// issued. The cron run renews `short` and rolls its other devices, reports `t-3` not issued
/// with the command that issues it, and exits 1 (it refused the whole run, exit 2).
#[test]
fn the_cron_run_renews_a_due_ca_beside_a_device_never_issued_below_it() {
    let env = TestEnv::new();
    let text = two_ca_plan(&env, 200, true);
    env.plan_run(&["issue"]).ok();
    env.write(
        "plan.toml",
        &text.replace(
            "devices = { prefix = \"t-\", count = 2 }",
            "devices = { prefix = \"t-\", count = 3 }",
        ),
    );
    let t = at(175);
    let r = env
        .plan_run(&["--now", &t, "-o", "json", "roll-secondary", "--due"])
        .code(1)
        .json();
    assert_eq!(count(&env, "ca-short"), 2, "{r:#}");
    let d = outcome(&r, "t-3");
    assert_eq!(d["outcome"], "not-issued", "{r:#}");
    assert!(
        d["steps"][0]
            .as_str()
            .unwrap()
            .contains("certroll issue device:t-3"),
        "{d:#}"
    );
    for id in ["t-1", "t-2"] {
        assert_eq!(outcome(&r, id)["outcome"], "rolled", "{r:#}");
        assert_eq!(count(&env, &format!("dev-{id}")), 2, "{id}");
    }
    assert_eq!(count(&env, "dev-t-3"), 0);
    // The advice works, and then the cron run has nothing left to do.
    env.plan_run(&["--now", &t, "issue", "device:t-3"]).ok();
    env.plan_run(&["--now", &t, "roll-secondary", "--due"]).ok();
    assert_eq!(count(&env, "ca-short"), 2);
}

/// The same cron run beside a device below the due CA whose certificate is deleted in the vault:
/// that device is held back with `vault recover`, the CA and the rest are rolled (exit 1).
#[test]
fn the_cron_run_renews_a_due_ca_beside_a_deleted_device_certificate_below_it() {
    let env = TestEnv::new();
    two_ca_plan(&env, 200, true);
    env.plan_run(&["issue"]).ok();
    env.plan_run(&["vault", "delete", "dev-t-1", "--force"]).ok();
    let t = at(175);
    let r = env
        .plan_run(&["--now", &t, "-o", "json", "roll-secondary", "--due"])
        .code(1)
        .json();
    assert_eq!(count(&env, "ca-short"), 2, "{r:#}");
    let d = outcome(&r, "t-1");
    assert_eq!(d["outcome"], "held-back", "{r:#}");
    assert!(
        d["steps"][0]
            .as_str()
            .unwrap()
            .contains("certroll vault recover dev-t-1"),
        "{d:#}"
    );
    assert_eq!(outcome(&r, "t-2")["outcome"], "rolled", "{r:#}");
    assert_eq!(count(&env, "dev-t-2"), 2);
}

/// Item 8's kind: `content_type` edited from pem to pfx after the device's certificate was made.
/// As in Key Vault, the current version keeps the content type it was made with (the policy's
/// applies from the next version), so `export` writes PEM and says why; after the next roll the
/// new version is PFX, and an export without a password is refused as for any PFX.
#[test]
fn a_content_type_edit_applies_from_the_next_version_and_export_says_so() {
    let env = TestEnv::new();
    let text = small_quickstart(&env, 1);
    env.plan_run(&["issue"]).ok();
    env.write(
        "plan.toml",
        &text.replace("content_type = \"pem\"", "content_type = \"pfx\""),
    );
    let r = env
        .plan_run(&["-o", "json", "export", "device:sensor-1", "--out", "s1.pem"])
        .ok()
        .json();
    assert_eq!(r["format"], "pem", "{r:#}");
    let note = r["note"].as_str().unwrap_or_else(|| panic!("{r:#}"));
    assert!(
        note.contains("content_type = \"pfx\"")
            && note.contains("made under \"pem\"")
            && note.contains("next version"),
        "{note}"
    );
    env.openssl(&["x509", "-in", "s1.pem", "-noout"]).ok();
    let human = env
        .plan_run(&["export", "device:sensor-1", "--out", "s1b.pem"])
        .ok()
        .stdout;
    assert!(human.contains("note: the plan's policy `device`"), "{human}");

    env.plan_run(&["roll-secondary", "device:sensor-1"]).ok();
    let refused = env
        .plan_run(&["export", "device:sensor-1", "--out", "s1.pfx"])
        .code(2);
    assert!(refused.stderr.contains("needs a password"), "{}", refused.stderr);
    let r = env
        .cmd()
        .env("PFX_PW", "changeit")
        .args([
            "--plan",
            "plan.toml",
            "-o",
            "json",
            "export",
            "device:sensor-1",
            "--password-env",
            "PFX_PW",
            "--out",
            "s1.pfx",
        ])
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let r: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(r["format"], "pfx", "{r:#}");
    assert_eq!(r["note"], serde_json::Value::Null, "{r:#}");
    env.openssl(&[
        "pkcs12",
        "-in",
        "s1.pfx",
        "-passin",
        "pass:changeit",
        "-nokeys",
        "-noout",
    ])
    .ok();
}

/// Fifth trial, item 15: a CA whose certificate is longer than its (since edited) policy gives
/// and whose issuer caps a renewal at its current notAfter is not renewed, not even once: the
/// first cron run where its auto-renew fires makes no new version, leaves the group's slots as
/// they are, and names the CA to renew first (exit 1); the rerun the same.
#[test]
fn a_capped_ca_is_not_renewed_on_the_first_run_either() {
    let env = TestEnv::new();
    capped_plan(&env);
    env.plan_run(&["issue"]).ok();
    // factory v1 ends with root (NOW + 30 d); its policy now gives 20 days, due 15 before.
    let plan = std::fs::read_to_string(env.path("plan.toml")).unwrap().replace(
        "validity_days = 60\nlifetime_actions = [{ days_before_expiry = 25",
        "validity_days = 20\nlifetime_actions = [{ days_before_expiry = 15",
    );
    assert!(plan.contains("validity_days = 20"), "{plan}");
    env.write("plan.toml", &plan);
    let group_before = backend(&env).group("sensors").unwrap().unwrap();
    let t = at(16);
    for run in ["first", "rerun"] {
        let r = env
            .plan_run(&["--now", &t, "-o", "json", "roll-secondary", "--due"])
            .code(1)
            .json();
        assert_eq!(
            count(&env, "ca-factory"),
            1,
            "{run}: no new factory version: {r:#}"
        );
        let first = r["renew_ca_first"].as_array().unwrap();
        assert!(
            first
                .iter()
                .any(|c| c["target"] == "ca:root" && c["cas"] == serde_json::json!(["ca:factory"])),
            "{run}: {r:#}"
        );
        let group = backend(&env).group("sensors").unwrap().unwrap();
        assert_eq!(
            group.secondary.map(|s| s.cert_der),
            group_before.secondary.clone().map(|s| s.cert_der),
            "{run}: the group's slot is unchanged"
        );
    }
    let human = env
        .plan_run(&["--now", &t, "roll-secondary", "--due"])
        .code(1)
        .stdout;
    assert!(
        human.contains("none is made") && !human.contains("renew CA `factory`"),
        "{human}"
    );
}

/// Fifth trial, item 15's second kind: a named roll of a CA (or of its group) whose renewal is
/// capped issues nothing: the devices hold certificates under the CA version the roll targets
/// (it is unchanged), so they are done (README's roll rule); the run says to renew the issuing
/// CA first and exits 0 like other named capped rolls.
#[test]
fn a_named_roll_of_a_capped_ca_issues_nothing() {
    let env = TestEnv::new();
    capped_plan(&env);
    // Devices of 20 days, due 5 days before their end: neither due nor capped by the factory.
    let plan = std::fs::read_to_string(env.path("plan.toml")).unwrap();
    let edited = plan.replace("validity_days = 365", "validity_days = 20").replace(
        "{ days_before_expiry = 30, action = \"auto-renew\" }",
        "{ days_before_expiry = 5, action = \"auto-renew\" }",
    );
    assert!(edited.contains("days_before_expiry = 5,"), "{edited}");
    env.write("plan.toml", &edited);
    env.plan_run(&["issue"]).ok();
    let devices = ["dev-sensor-1", "dev-sensor-2", "dev-gateway-01"];
    for target in ["ca:factory", "group:sensors"] {
        let r = env
            .plan_run(&["-o", "json", "roll-secondary", target, "--yes"])
            .ok()
            .json();
        for id in ["sensor-1", "sensor-2"] {
            assert_eq!(outcome(&r, id)["outcome"], "already-rolled", "{target}: {r:#}");
        }
        assert_eq!(count(&env, "ca-factory"), 1, "{target}");
        for name in devices {
            assert_eq!(count(&env, name), 1, "{target}: {name} got nothing");
        }
        let human = env.plan_run(&["roll-secondary", target, "--yes"]).ok().stdout;
        assert!(
            human.contains("none is made") && human.contains("roll-secondary ca:root"),
            "{target}: {human}"
        );
        assert!(!human.contains("rolled into"), "{target}: {human}");
    }
}

/// Fifth trial, item 6: an RSA key cannot agree on keys (RFC 3279 section 2.3.1), so `vault
/// create` refuses `--key-usage keyAgreement` for it, as it refuses keyEncipherment for EC,
/// and makes nothing.
#[test]
fn vault_create_refuses_key_agreement_for_an_rsa_key() {
    let env = TestEnv::new();
    small_quickstart(&env, 1);
    env.plan_run(&["issue"]).ok();
    let r = env
        .plan_run(&[
            "vault",
            "create",
            "rsa-ka",
            "--subject",
            "CN=rsa-ka",
            "--key-type",
            "RSA",
            "--key-usage",
            "keyAgreement",
        ])
        .code(2);
    assert!(
        r.stderr.contains("keyAgreement") && r.stderr.contains("RFC 3279"),
        "{}",
        r.stderr
    );
    assert_eq!(count(&env, "rsa-ka"), 0);
    // The usages RFC 3279 lists for RSA are still accepted.
    env.plan_run(&[
        "vault",
        "create",
        "rsa-ke",
        "--subject",
        "CN=rsa-ke",
        "--key-type",
        "RSA",
        "--key-usage",
        "keyEncipherment",
    ])
    .ok();
    assert_eq!(count(&env, "rsa-ke"), 1);
}
