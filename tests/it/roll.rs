//! Expiry rolls: the new certificate goes into the named slot, the other keeps working, expired
//! certificates leave, reruns do nothing, and `--due` picks the slot with the older certificate.

use crate::util::*;
use certroll::backend::local::LocalBackend;
use certroll::backend::{EnrollmentService as _, HubRegistry as _};
use certroll::store::{OpenOptions, Store};

pub fn at(days: i64) -> String {
    let t = certroll::clock::parse_rfc3339(NOW).unwrap() + time::Duration::days(days);
    certroll::clock::rfc3339(t)
}

pub fn backend(env: &TestEnv) -> LocalBackend {
    LocalBackend::new(
        Store::open(&OpenOptions {
            path: env.store_dir().join("state.db"),
            key_file: None,
            create: false,
            write: false,
            lock_timeout: std::time::Duration::from_secs(5),
        })
        .unwrap(),
    )
}

pub fn pem_der(env: &TestEnv, now: &str, device: &str) -> Vec<u8> {
    let file = format!("{device}-{}.pem", now.replace(':', ""));
    env.run(&[
        "--plan",
        "plan.toml",
        "--now",
        now,
        "export",
        &format!("device:{device}"),
        "--out",
        &file,
    ])
    .ok();
    certroll::pki::pem::certs_from_pem(&std::fs::read(env.path(&file)).unwrap())
        .unwrap()
        .remove(0)
}

/// Whether the enrollment service would accept and the hub would let in this certificate.
pub fn works(env: &TestEnv, device: &str, cert: &[u8], now: &str) -> bool {
    let b = backend(env);
    let now = certroll::clock::parse_rfc3339(now).unwrap();
    let individual = b.individual(device).unwrap();
    let groups = certroll::backend::registration::usable_groups(b.groups().unwrap(), &b.cas().unwrap());
    let req = certroll::backend::types::RegistrationRequest {
        registration_id: device.into(),
        chain: vec![cert.to_vec()],
    };
    let ctx = certroll::backend::registration::Context {
        disabled_holding_leaf: &[],
        individual: individual.as_ref(),
        groups: &groups,
        now,
    };
    let service = !matches!(
        certroll::backend::registration::decide(&req, &ctx),
        certroll::backend::registration::Decision::Rejected(_)
    );
    let hub = b.authenticate("example-hub", device, cert, now).unwrap().is_ok();
    service && hub
}

#[test]
fn an_expiry_roll_keeps_both_certificates_working_and_alternates_slots() {
    let env = TestEnv::new();
    env.quickstart();
    env.run(&["--plan", "plan.toml", "issue"]).ok();
    let t300 = at(300);
    let old_gw = pem_der(&env, &t300, "gateway-01");
    let old_s1 = pem_der(&env, &t300, "sensor-01");

    let dry = env
        .run(&[
            "--plan",
            "plan.toml",
            "--now",
            &t300,
            "roll-secondary",
            "device:gateway-01",
            "--dry-run",
            "-o",
            "json",
        ])
        .ok()
        .json();
    assert_eq!(dry["devices"][0]["outcome"], "would-roll");
    assert_eq!(
        pem_der(&env, &t300, "gateway-01"),
        old_gw,
        "a dry run changes nothing"
    );

    let r = env
        .run(&[
            "--plan",
            "plan.toml",
            "--now",
            &t300,
            "roll-secondary",
            "device:gateway-01",
            "device:sensor-01",
            "-o",
            "json",
        ])
        .ok()
        .json();
    assert!(
        r["devices"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["outcome"] == "rolled" && d["slot"] == "secondary"),
        "{r}"
    );
    let new_gw = pem_der(&env, &t300, "gateway-01");
    let new_s1 = pem_der(&env, &t300, "sensor-01");
    assert_ne!(new_gw, old_gw);

    // Zero downtime: the old and the new certificate both work, for the enrollment service and the hub.
    for (device, old, new) in [("gateway-01", &old_gw, &new_gw), ("sensor-01", &old_s1, &new_s1)] {
        assert!(works(&env, device, old, &t300), "{device}: old certificate");
        assert!(works(&env, device, new, &t300), "{device}: new certificate");
    }
    let s = env
        .run(&[
            "--plan",
            "plan.toml",
            "status",
            "-o",
            "json",
            "enrollment:gateway-01",
        ])
        .ok()
        .json();
    let e = &s["enrollments"][0];
    assert_eq!(
        e["secondary"]["thumbprint"],
        s["devices"][0]["installed"]["thumbprint"]
    );
    assert_ne!(e["primary"]["thumbprint"], e["secondary"]["thumbprint"]);
    assert_eq!(
        s["devices"][0]["hub_identity"]["secondary_thumbprint"],
        e["secondary"]["thumbprint"]
    );

    // Running the same roll again changes nothing.
    let again = env
        .run(&[
            "--plan",
            "plan.toml",
            "--now",
            &t300,
            "roll-secondary",
            "device:gateway-01",
            "-o",
            "json",
        ])
        .ok()
        .json();
    assert_eq!(again["devices"][0]["outcome"], "already-rolled");
    assert_eq!(pem_der(&env, &t300, "gateway-01"), new_gw);

    // Once the old certificate has expired it no longer works; a roll into its slot only takes
    // it out: the device holds its newest certificate under the current CA already, whichever
    // slot holds it (issue 10 item 3), so no new one is made.
    let t400 = at(400);
    assert!(!works(&env, "gateway-01", &old_gw, &t400));
    assert!(works(&env, "gateway-01", &new_gw, &t400));
    let r = env
        .run(&[
            "--plan",
            "plan.toml",
            "--now",
            &t400,
            "roll-primary",
            "enrollment:gateway-01",
            "-o",
            "json",
        ])
        .ok()
        .json();
    assert_eq!(r["devices"][0]["outcome"], "pruned", "{r}");
    assert!(r["devices"][0]["pruned_thumbprint"].is_string(), "{r}");
    assert_eq!(pem_der(&env, &t400, "gateway-01"), new_gw);
    assert!(works(&env, "gateway-01", &new_gw, &t400));
    // The expired certificate left the primary slot, and the live one the secondary held took
    // its place in the same write (DPS holds no enrollment with a secondary and no primary).
    let slots = backend(&env).individual("gateway-01").unwrap().unwrap();
    assert_eq!(
        slots.primary.as_deref(),
        Some(new_gw.as_slice()),
        "the live certificate is the primary"
    );
    assert!(slots.secondary.is_none(), "nothing else is held");
}

#[test]
fn due_rolls_only_what_auto_renew_says_into_the_older_slot_and_prunes_expired() {
    let env = TestEnv::new();
    env.quickstart();
    env.run(&["--plan", "plan.toml", "issue"]).ok();
    // auto-renew fires 30 days before expiry: day 335 for certificates issued on day 0.
    let r = env
        .run(&[
            "--plan",
            "plan.toml",
            "--now",
            &at(300),
            "roll-secondary",
            "--due",
            "device:gateway-01",
            "-o",
            "json",
        ])
        .ok()
        .json();
    assert_eq!(r["devices"][0]["outcome"], "not-due");

    let r = env
        .run(&[
            "--plan",
            "plan.toml",
            "--now",
            &at(340),
            "roll-secondary",
            "--due",
            "device:gateway-01",
            "-o",
            "json",
        ])
        .ok()
        .json();
    assert_eq!(
        (&r["devices"][0]["outcome"], &r["devices"][0]["slot"]),
        (&"rolled".into(), &"secondary".into())
    );
    let r = env
        .run(&[
            "--plan",
            "plan.toml",
            "--now",
            &at(341),
            "roll-secondary",
            "--due",
            "device:gateway-01",
            "-o",
            "json",
        ])
        .ok()
        .json();
    assert_eq!(
        r["devices"][0]["outcome"], "not-due",
        "the new certificate is not due"
    );

    // A year on, the same cron line puts the next certificate into the primary slot (it held
    // the older, now expired, certificate); the secondary keeps working.
    let t680 = at(680);
    let second = pem_der(&env, &t680, "gateway-01");
    let r = env
        .run(&[
            "--plan",
            "plan.toml",
            "--now",
            &t680,
            "roll-secondary",
            "--due",
            "device:gateway-01",
            "-o",
            "json",
        ])
        .ok()
        .json();
    assert_eq!(r["devices"][0]["slot"], "primary", "{r}");
    let third = pem_der(&env, &t680, "gateway-01");
    assert!(works(&env, "gateway-01", &second, &t680) && works(&env, "gateway-01", &third, &t680));

    // On day 720 the secondary (issued on day 340) has expired; the next roll removes it.
    let t720 = at(720);
    let r = env
        .run(&[
            "--plan",
            "plan.toml",
            "--now",
            &t720,
            "roll-primary",
            "device:gateway-01",
            "-o",
            "json",
        ])
        .ok()
        .json();
    assert_eq!(r["devices"][0]["outcome"], "pruned", "{r}");
    let s = env
        .run(&[
            "--plan",
            "plan.toml",
            "status",
            "-o",
            "json",
            "enrollment:gateway-01",
        ])
        .ok()
        .json();
    // The primary already holds the newest certificate, so this rerun only removes the expired
    // secondary, from the enrollment and from the hub.
    assert!(s["enrollments"][0]["secondary"].is_null(), "{s}");
    assert!(s["devices"][0]["hub_identity"]["secondary_thumbprint"].is_null());
    assert!(works(&env, "gateway-01", &third, &t720));
    let r = env
        .run(&[
            "--plan",
            "plan.toml",
            "--now",
            &t720,
            "roll-primary",
            "device:gateway-01",
            "-o",
            "json",
        ])
        .ok()
        .json();
    assert_eq!(r["devices"][0]["outcome"], "already-rolled");
}

#[test]
fn rolls_refuse_what_they_cannot_do() {
    let env = TestEnv::new();
    env.quickstart();
    env.run(&["--plan", "plan.toml", "roll-secondary", "device:gateway-01"])
        .code(2);
    env.plan_run(&["roll-primary", "--breach", "--yes", "group:sensors"])
        .code(2);
    env.plan_run(&["revoke", "device:sensor-01", "--reason", "superseded", "--yes"])
        .code(2);
    env.plan_run(&["reprovision"]).code(2);
    assert!(
        !env.store_dir().exists(),
        "a verb refused before issue leaves no store behind"
    );
    env.run(&["--plan", "plan.toml", "issue"]).ok();
    env.run(&["--plan", "plan.toml", "roll-secondary"]).code(2);
    env.run(&[
        "--plan",
        "plan.toml",
        "roll-primary",
        "--breach",
        "device:gateway-01",
    ])
    .code(2); // destructive without --yes and no terminal
    // Two targets that renew the same CA.
    env.run(&[
        "--plan",
        "plan.toml",
        "roll-secondary",
        "ca:factory",
        "group:sensors",
    ])
    .code(2);
    // --due with no target is every device; nothing is due on the day of issue.
    let r = env
        .run(&["--plan", "plan.toml", "roll-secondary", "--due", "-o", "json"])
        .ok()
        .json();
    assert_eq!(r["devices"].as_array().unwrap().len(), 51, "{r}");
    assert!(
        r["devices"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["outcome"] == "not-due")
    );
}

#[test]
fn a_group_roll_renews_the_intermediate_and_every_leaf_with_zero_downtime() {
    let env = TestEnv::new();
    env.quickstart();
    env.run(&["--plan", "plan.toml", "issue"]).ok();
    let t = at(200);
    let old = pem_der(&env, &t, "sensor-09");
    let r = env
        .run(&[
            "--plan",
            "plan.toml",
            "--now",
            &t,
            "roll-secondary",
            "group:sensors",
            "-o",
            "json",
        ])
        .ok()
        .json();
    assert_eq!(r["groups"][0]["outcome"], "rolled");
    assert_eq!(r["devices"].as_array().unwrap().len(), 50);
    let new = pem_der(&env, &t, "sensor-09");
    assert_ne!(old, new);
    // The old leaf chains to the old CA (primary slot), the new one to the new CA (secondary).
    assert!(works(&env, "sensor-09", &old, &t) && works(&env, "sensor-09", &new, &t));
    let s = env
        .run(&["--plan", "plan.toml", "status", "-o", "json", "group:sensors"])
        .ok()
        .json();
    let g = &s["groups"][0];
    assert_ne!(g["primary"]["thumbprint"], g["secondary"]["thumbprint"]);
    assert_eq!(s["devices"][8]["installed"]["issuer"], g["secondary"]["subject"]);

    // openssl agrees: the new leaf and its new intermediate chain to the unchanged root.
    env.run(&[
        "--plan",
        "plan.toml",
        "--now",
        &t,
        "export",
        "ca:root",
        "--out",
        "root.pem",
    ])
    .ok();
    env.run(&[
        "--plan",
        "plan.toml",
        "--now",
        &t,
        "export",
        "device:sensor-09",
        "--out",
        "s9.pem",
    ])
    .ok();
    let when = (certroll::clock::parse_rfc3339(&t).unwrap().unix_timestamp() + 86_400).to_string();
    let v = env.openssl(&[
        "verify",
        "-attime",
        &when,
        "-CAfile",
        "root.pem",
        "-untrusted",
        "s9.pem",
        "s9.pem",
    ]);
    assert_eq!(v.code, 0, "{} {}", v.stdout, v.stderr);

    // A rerun does nothing; a group signed by a root directly is rolled as a CA, not here.
    let again = env
        .run(&[
            "--plan",
            "plan.toml",
            "--now",
            &t,
            "roll-secondary",
            "group:sensors",
            "-o",
            "json",
        ])
        .ok()
        .json();
    assert_eq!(again["groups"][0]["outcome"], "already-rolled");
    assert!(
        again["devices"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["outcome"] == "already-rolled")
    );
}

#[test]
fn rolling_the_primary_right_after_issue_rolls_and_a_rerun_does_not() {
    let env = TestEnv::new();
    env.quickstart();
    env.run(&["--plan", "plan.toml", "issue"]).ok();
    let t = at(100);
    for target in ["group:sensors", "device:gateway-01"] {
        let first = env
            .run(&[
                "--plan",
                "plan.toml",
                "--now",
                &t,
                "roll-primary",
                target,
                "-o",
                "json",
            ])
            .ok()
            .json();
        let again = env
            .run(&[
                "--plan",
                "plan.toml",
                "--now",
                &t,
                "roll-primary",
                target,
                "-o",
                "json",
            ])
            .ok()
            .json();
        if target.starts_with("group") {
            assert_eq!(first["groups"][0]["outcome"], "rolled");
            assert_eq!(again["groups"][0]["outcome"], "already-rolled", "{again}");
        } else {
            assert_eq!(first["devices"][0]["outcome"], "rolled");
        }
        assert!(
            again["devices"]
                .as_array()
                .unwrap()
                .iter()
                .all(|d| d["outcome"] == "already-rolled"),
            "{again}"
        );
    }
    // Every device still registers: its leaf chains to a CA that is in a group slot.
    let r = env
        .run(&["--plan", "plan.toml", "--now", &t, "reprovision", "-o", "json"])
        .ok()
        .json();
    assert_eq!(r["assigned"], 51, "{r}");
    let v = env
        .run(&["--plan", "plan.toml", "vault", "show", "ca:factory", "-o", "json"])
        .ok()
        .json();
    assert_eq!(
        v["versions"].as_array().unwrap().len(),
        2,
        "the rerun renewed nothing"
    );
}

#[test]
fn yearly_due_rolls_alternate_slots_and_expired_certificates_leave() {
    let env = TestEnv::new();
    env.quickstart();
    env.plan_run(&["issue"]).ok();
    let mut held = pem_der(&env, NOW, "gateway-01");
    let mut expected_slot = "secondary";
    for day in [
        "2027-10-25",
        "2028-10-01",
        "2029-09-10",
        "2030-08-20",
        "2031-07-30",
    ] {
        let now = format!("{day}T00:00:00Z");
        let r = env
            .plan_run(&[
                "--now",
                &now,
                "roll-secondary",
                "--due",
                "device:gateway-01",
                "-o",
                "json",
            ])
            .ok()
            .json();
        assert_eq!(r["devices"][0]["outcome"], "rolled", "{day}: {r}");
        assert_eq!(r["devices"][0]["slot"], expected_slot, "{day}: slots alternate");
        let new = pem_der(&env, &now, "gateway-01");
        assert!(
            works(&env, "gateway-01", &held, &now),
            "{day}: the certificate it held still works"
        );
        assert!(works(&env, "gateway-01", &new, &now), "{day}: the new one works");
        // Both slots hold valid certificates: the one before last has left.
        let s = env
            .plan_run(&["--now", &now, "status", "-o", "json", "enrollment:gateway-01"])
            .ok()
            .json();
        let e = &s["enrollments"][0];
        for slot in ["primary", "secondary"] {
            let not_after = e[slot]["not_after"]
                .as_str()
                .unwrap_or_else(|| panic!("{day}: {slot} empty: {s}"));
            assert!(
                not_after > now.as_str(),
                "{day}: an expired certificate stayed in the {slot} slot"
            );
        }
        held = new;
        expected_slot = if expected_slot == "secondary" {
            "primary"
        } else {
            "secondary"
        };
    }
}

/// The fifth trial's journal wording: a `--due` step counts only the devices it can roll (a
/// revoked one is reported apart and its rerun records no run), and a step that left some of its
/// devices alone says how many it rolled and why the others were not.
#[test]
fn due_steps_count_what_they_roll_and_a_revoked_device_records_no_run() {
    let env = TestEnv::new();
    fid5_plan(&env);
    env.plan_run(&["issue"]).ok();
    env.plan_run(&["revoke", "device:d-2", "--reason", "superseded", "--yes"])
        .ok();
    // Named devices are planned as named; the step says one was rolled and why the other not.
    let text = env
        .plan_run(&["roll-secondary", "device:d-1", "device:d-2", "--yes"])
        .ok()
        .stdout;
    assert!(
        text.contains(
            "roll 2 device(s) (d-1 .. d-2) into the secondary slot: 1 of them rolled, 1 not (1 revoked)"
        ),
        "{text}"
    );
    assert!(text.contains("device:d-2: not rolled: revoked"), "{text}");
    let due = at(175);
    let r = env
        .plan_run(&["--now", &due, "-o", "json", "roll-secondary", "--due"])
        .ok()
        .json();
    assert_eq!(outcome(&r, "d-2")["outcome"], "revoked", "{r:#}");
    for id in ["d-1", "e1", "e2"] {
        assert_eq!(outcome(&r, id)["outcome"], "rolled", "{r:#}");
    }
    let steps: Vec<&str> = r["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["description"].as_str().unwrap())
        .collect();
    assert!(
        steps
            .iter()
            .any(|s| s.contains("roll those of 3 device(s) (d-1 .. e2)")),
        "{steps:#?}"
    );
    assert!(!steps.iter().any(|s| s.contains("4 device(s)")), "{steps:#?}");
    assert_eq!(count(&env, "dev-d-2"), 1);

    // The rerun has nothing to do: no step, no run recorded for the revoked device.
    let again = env
        .plan_run(&["--now", &due, "-o", "json", "roll-secondary", "--due"])
        .ok()
        .json();
    assert_eq!(again["steps"], serde_json::json!([]), "{again:#}");
    assert_eq!(again["run"], serde_json::Value::Null, "{again:#}");
    assert_eq!(outcome(&again, "d-2")["outcome"], "revoked", "{again:#}");
}

/// The fifth trial: a capped CA's note names each capped device's own CA, so a device under the
/// root is not counted among the intermediate's; and a group whose slot holds its CA right after
/// `issue` is not said to hold "the CA certificate of an earlier run".
#[test]
fn a_capped_note_counts_each_device_under_its_own_ca() {
    let env = TestEnv::new();
    let text = fid5_plan(&env)
        // Devices capped by r's notAfter from the start; due 100 days before they end.
        .replace(
            "validity_days = 200\nextended_key_usage = [\"clientAuth\"]\nlifetime_actions = [ { lifetime_percentage = 85, action = \"auto-renew\" } ]",
            "validity_days = 500\nextended_key_usage = [\"clientAuth\"]\nlifetime_actions = [ { days_before_expiry = 100, action = \"auto-renew\" } ]",
        )
        // m (capped by r) wants a renewal from day 250.
        .replace(
            "validity_days = 3650\nlifetime_actions = [{ days_before_expiry = 30,",
            "validity_days = 3650\nlifetime_actions = [{ days_before_expiry = 150,",
        );
    assert!(text.contains("days_before_expiry = 150") && text.contains("validity_days = 500"));
    env.write("plan.toml", &text);
    env.plan_run(&["issue"]).ok();

    let after_issue = env.plan_run(&["roll-secondary", "ca:m", "--yes"]).ok().stdout;
    assert!(!after_issue.contains("earlier run"), "{after_issue}");
    assert!(
        after_issue.contains("group:g: the primary slot already holds the current certificate of its CA"),
        "{after_issue}"
    );

    let r = env
        .plan_run(&["--now", &at(300), "roll-secondary", "--due"])
        .code(1);
    assert!(
        r.stdout.contains("a renewal of `ca:m`")
            && r.stdout.contains("a renewal of 3 device(s) under `m`")
            && r.stdout.contains("a renewal of 1 device(s) under `r`"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("its 4 device(s)"), "{}", r.stdout);
}

/// The fifth trial: with the root's only version disabled, the cron run holds back the devices
/// under the intermediate below it too, in the words it uses for a disabled direct CA.
#[test]
fn due_holds_back_devices_below_a_disabled_ca_higher_in_the_chain() {
    let env = TestEnv::new();
    fid5_plan(&env);
    env.plan_run(&["issue"]).ok();
    env.plan_run(&["vault", "update", "ca-r", "--disable"]).ok();
    let r = env
        .plan_run(&["--now", &at(175), "-o", "json", "roll-secondary", "--due"])
        .code(1)
        .json();
    for id in ["d-1", "d-2", "e1", "e2"] {
        let d = outcome(&r, id);
        assert_eq!(d["outcome"], "held-back", "{d:#}");
        let why = d["steps"][0].as_str().unwrap();
        assert!(
            why.contains("its CA `r`'s current version is disabled")
                && why.contains("certroll roll-primary --breach ca:r"),
            "{why}"
        );
        assert_eq!(count(&env, &format!("dev-{id}")), 1);
    }
}

/// The fifth trial: a `--now` moved back behind the store's own newest versions renews the CAs
/// whose current version is not valid yet then (issue 10 item 16), and says that the renewals end
/// before the versions they replace.
#[test]
fn a_roll_behind_the_stores_newest_versions_warns_that_its_cas_end_earlier() {
    let env = TestEnv::new();
    fid5_plan(&env);
    env.plan_run(&["issue"]).ok();
    env.plan_run(&["--now", &at(350), "roll-secondary", "--due"]).ok();
    assert_eq!(count(&env, "ca-r"), 2);
    let quiet = env
        .plan_run(&["--now", &at(350), "-o", "json", "roll-secondary", "--due"])
        .ok()
        .json();
    assert_eq!(quiet["warnings"], serde_json::json!([]), "{quiet:#}");

    let back = env
        .plan_run(&["--now", &at(175), "roll-secondary", "--due"])
        .ok()
        .stdout;
    assert_eq!(count(&env, "ca-r"), 3, "replaced as not valid yet (item 16)");
    for ca in ["r", "m"] {
        assert!(
            back.contains(&format!(
                "warning: ca:{ca}: its current version is not valid until"
            )) && back.contains("before that version's"),
            "{back}"
        );
    }
}
