//! Breach rolls and the removal of expired CAs after a CA roll, on a local plan and on the same
//! plan with `kind = "azure"` against `certroll serve` (issue 12 items 4 and 5; trial az1 3a and
//! F-BREACH2). DPS holds no enrollment or group with a secondary certificate and no primary
//! (HTTP 400 400004), and the local store refuses one as well: whenever a step takes the primary
//! slot's certificate out and the secondary's stays, or leaves one certificate, that certificate
//! is the primary, on both backends alike.

use crate::azure_verbs::{fleet_plans_hook, fleet_plans_with, mask, run_fleet, start_serve, start_serve_at};
use crate::azure_verbs2::{DIRECT, GROUPS, assert_same, both, device, issued_groups, serve_status};
use crate::util::TestEnv;
use serde_json::Value;

/// Asserts every group and individual enrollment in a status document, and every group serve's
/// DPS holds, has a primary whenever it has a secondary.
fn primary_wherever_a_secondary(status: &Value, served: &Value, when: &str) {
    let mut slots: Vec<(String, &Value)> = Vec::new();
    for g in status["groups"].as_array().into_iter().flatten() {
        slots.push((format!("group {}", g["name"]), g));
    }
    for g in served["groups"].as_array().into_iter().flatten() {
        slots.push((format!("serve's group {}", g["name"]), g));
    }
    for e in status["enrollments"].as_array().into_iter().flatten() {
        slots.push((format!("enrollment {}", e["name"]), e));
    }
    for d in status["devices"].as_array().into_iter().flatten() {
        if d["individual_enrollment"].is_object() {
            slots.push((format!("enrollment of {}", d["id"]), &d["individual_enrollment"]));
        }
    }
    for (what, s) in slots {
        assert!(
            s["secondary"].is_null() || !s["primary"].is_null(),
            "{when}: {what} holds a secondary and no primary: {s}"
        );
    }
}

/// The group named `name` in a status document.
fn group<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["groups"]
        .as_array()
        .and_then(|g| g.iter().find(|g| g["name"] == name))
        .unwrap_or_else(|| panic!("no group {name} in {status}"))
}

/// After `roll-secondary ca:root` (the group's primary holds the old intermediate, its secondary
/// the new one; the individual enrollment both of its certificates), breach rolls of the group
/// into the primary slot, of the enrollment's device into the secondary slot (then of both its
/// slots), of a group device into the secondary slot, and of the group's secondary slot: each leaves the one remaining or new certificate in
/// the primary slot, reruns change nothing, and every answer and status is the same on local and
/// on azure (trial az1 3a: this failed on azure with DPS's 400004, and on every rerun).
#[test]
fn breaches_after_a_ca_roll_never_leave_a_secondary_alone_on_local_or_azure() {
    let env = TestEnv::new();
    let serve = issued_groups(&env);
    let steps: &[&[&str]] = &[
        &["roll-secondary", "ca:root", "-o", "json"],
        &["status", "-o", "json"],
        // The group: primary = old factory CA (compromised), secondary = the new one.
        &["roll-primary", "--breach", "group:sensors", "--yes", "-o", "json"],
        &["status", "-o", "json"],
        &["roll-primary", "--breach", "group:sensors", "--yes", "-o", "json"],
        // gw-1 holds its first certificate in the primary slot and the root roll's, installed,
        // in the secondary: the secondary's is compromised, the primary's stays.
        &["roll-secondary", "--breach", "device:gw-1", "--yes", "-o", "json"],
        &["status", "-o", "json"],
        &["roll-secondary", "--breach", "device:gw-1", "--yes", "-o", "json"],
        // Then both of its slots, in a new incident: the replacement is its only certificate.
        &[
            "roll-secondary",
            "--breach",
            "--both",
            "device:gw-1",
            "--incident",
            "INC-2",
            "--yes",
            "-o",
            "json",
        ],
        &["status", "-o", "json"],
        // A group device: an individual enrollment holding only the new certificate.
        &["roll-secondary", "--breach", "device:s-1", "--yes", "-o", "json"],
        &["status", "-o", "json"],
        // The group's secondary slot filled by an expiry roll, then declared compromised.
        &["roll-secondary", "ca:factory", "-o", "json"],
        &[
            "roll-secondary",
            "--breach",
            "group:sensors",
            "--yes",
            "-o",
            "json",
        ],
        &["status", "-o", "json"],
        &[
            "roll-secondary",
            "--breach",
            "group:sensors",
            "--yes",
            "-o",
            "json",
        ],
        &["status", "-o", "json"],
    ];
    for (i, step) in steps.iter().enumerate() {
        let (l, a) = both(&env, &serve, step);
        assert_same(&l, &a, &format!("step {i} {step:?}"));
        if step[0] == "status" {
            primary_wherever_a_secondary(&a, &serve_status(&env), &format!("step {i}"));
            primary_wherever_a_secondary(&l, &Value::Null, &format!("step {i} (local)"));
        }
    }
    let raw = run_fleet(&env, &serve, "azure", &["status", "-o", "json"])
        .ok()
        .json();
    // The group holds the replacement of its secondary's CA, alone, in the primary slot; serve's
    // DPS holds the same certificate.
    let sensors = group(&raw, "sensors");
    assert!(sensors["primary"].is_object(), "{sensors}");
    assert!(sensors["secondary"].is_null(), "{sensors}");
    let served = serve_status(&env);
    assert_eq!(
        group(&served, "sensors")["primary"]["thumbprint"],
        sensors["primary"]["thumbprint"],
        "{served}"
    );
    // gw-1's and s-1's enrollments hold only the replacement, as the primary; the simulated
    // devices hold it and the hub admits only it.
    for id in ["gw-1", "s-1"] {
        let d = device(&raw, id);
        let tp = &d["installed"]["thumbprint"];
        let enrollment = match id {
            "gw-1" => raw["enrollments"]
                .as_array()
                .and_then(|e| e.iter().find(|e| e["name"] == id))
                .unwrap_or_else(|| panic!("no enrollment {id} in {raw}")),
            _ => &d["individual_enrollment"],
        };
        assert_eq!(&enrollment["primary"]["thumbprint"], tp, "{id}: {enrollment}");
        assert!(enrollment["secondary"].is_null(), "{id}: {enrollment}");
        let held = device(&served, id);
        assert_eq!(&held["installed"]["thumbprint"], tp, "{id}: {held}");
        assert_eq!(&held["hub_identity"]["primary_thumbprint"], tp, "{id}: {held}");
    }
}

/// A group breach after a CA roll cut off part-way on azure (serve's IoT Hub answers every
/// request 503, so the run stops at the devices after the group's steps) fails with exit 1 and,
/// run again once the hub answers, finishes from its journal: the same report and status as the
/// local run, the group's one certificate in its primary slot.
#[test]
fn a_group_breach_after_a_ca_roll_cut_off_on_azure_finishes_on_rerun() {
    let env = TestEnv::new();
    let serve = issued_groups(&env);
    let (l, a) = both(&env, &serve, &["roll-secondary", "ca:root", "-o", "json"]);
    assert_same(&l, &a, "roll-secondary ca:root");
    drop(serve);

    let failing = start_serve(
        &env,
        &format!("{GROUPS}[serve.services.hub]\nerror_percent = 100\nerror_status = 503\n"),
    );
    fleet_plans_with(&env, &failing, GROUPS, DIRECT);
    let breach = ["roll-primary", "--breach", "group:sensors", "--yes", "-o", "json"];
    let cut = run_fleet(&env, &failing, "azure", &breach);
    assert_eq!(cut.code, 1, "{}\n{}", cut.stdout, cut.stderr);
    assert!(
        cut.stderr.contains("503"),
        "the failure names the service's answer: {}",
        cut.stderr
    );
    drop(failing);

    let serve = start_serve(&env, GROUPS);
    fleet_plans_with(&env, &serve, GROUPS, DIRECT);
    let l = run_fleet(&env, &serve, "local", &breach).ok();
    let a = run_fleet(&env, &serve, "azure", &breach).ok();
    assert_eq!(a.json()["resumed"], true, "{}", a.stdout);
    let (l, a) = (mask(l.json()), mask(a.json()));
    assert_same(&l["devices"], &a["devices"], "the resumed breach");
    let (l, a) = both(&env, &serve, &["status", "-o", "json"]);
    assert_same(&l, &a, "status after the resumed breach");
    primary_wherever_a_secondary(&a, &serve_status(&env), "after the resumed breach");
    assert!(group(&a, "sensors")["primary"].is_object(), "{a}");
    let (l, a) = both(&env, &serve, &breach);
    assert_same(&l, &a, "a rerun of the finished breach");
}

/// `v` with every RFC 3339 time inside a string (`2028-01-05T05:09:48Z`) replaced by `<time>`.
fn times_in_text_masked(v: Value) -> Value {
    match v {
        Value::String(s) => {
            let b = s.as_bytes();
            let shape = b"dddd-dd-ddTdd:dd:ddZ";
            let mut out = String::new();
            let mut i = 0;
            while i < s.len() {
                let fits = b.len() - i >= shape.len()
                    && shape.iter().zip(&b[i..]).all(|(want, got)| match want {
                        b'd' => got.is_ascii_digit(),
                        other => other == got,
                    });
                if fits {
                    out.push_str("<time>");
                    i += shape.len();
                } else {
                    let c = s[i..].chars().next().unwrap_or_default();
                    out.push(c);
                    i += c.len_utf8();
                }
            }
            Value::String(out)
        }
        Value::Array(a) => Value::Array(a.into_iter().map(times_in_text_masked).collect()),
        Value::Object(o) => Value::Object(o.into_iter().map(|(k, v)| (k, times_in_text_masked(v))).collect()),
        other => other,
    }
}

/// A root that lives 400 days above [`GROUPS`]' intermediate.
fn short_root() -> String {
    GROUPS.replace(
        "[ca.root]\nsubject = \"CN=Root\"\npolicy = \"ca\"\n",
        "[ca.root]\nsubject = \"CN=Root\"\npolicy = \"short-root\"\n\
         [policies.short-root]\nkey = { type = \"EC\", curve = \"P-256\" }\nvalidity_days = 400\n\
         key_usage = [\"keyCertSign\", \"cRLSign\", \"digitalSignature\"]\n",
    )
}

/// `--now` this many days from the real clock (the azure runs use it: serve's TLS does).
fn days_on(days: i64) -> String {
    certroll::clock::rfc3339(time::OffsetDateTime::now_utc() + time::Duration::days(days))
}

/// After a root roll, the old root and the old intermediate expire while the new ones live: the
/// next roll removes the expired intermediate from the group's primary slot and the live one in
/// its secondary slot becomes the primary in the same write (DPS refuses a group without a
/// primary), and the expired root leaves DPS's CA certificates; a rerun does nothing more. The
/// same on local and on azure.
#[test]
fn an_expired_primary_leaves_and_the_live_secondary_becomes_primary_on_local_and_azure() {
    let env = TestEnv::new();
    let plan = short_root();
    assert_ne!(plan, GROUPS, "the plan has its short-lived root");
    let serve = start_serve(&env, &plan);
    // The devices register once, at issue, through the hook; later deliveries are files only.
    fleet_plans_hook(&env, &serve, &plan);
    let (l, a) = both(&env, &serve, &["issue", "-o", "json"]);
    assert_same(&l, &a, "issue");
    // Serve's clock travels with certroll's `--now`: Key Vault refuses the key of a version
    // outside its validity period at serve's time.
    drop(serve);
    let t1 = days_on(100);
    let serve = start_serve_at(&env, &plan, &t1);
    fleet_plans_hook(&env, &serve, &plan);
    let (l, a) = both(
        &env,
        &serve,
        &["roll-secondary", "ca:root", "--now", &t1, "-o", "json"],
    );
    assert_same(&l, &a, "roll-secondary ca:root");
    drop(serve);
    let t2 = days_on(410);
    let serve = start_serve_at(&env, &plan, &t2);
    fleet_plans_hook(&env, &serve, &plan);
    let (l, a) = both(&env, &serve, &["status", "--now", &t2, "-o", "json"]);
    assert_same(&l, &a, "status before the expired CAs leave");
    assert!(
        group(&a, "sensors")["primary"].is_object() && group(&a, "sensors")["secondary"].is_object(),
        "{a}"
    );
    // Thumbprints, unmasked, on both backends.
    let raw = |which: &str| {
        run_fleet(&env, &serve, which, &["status", "--now", &t2, "-o", "json"])
            .ok()
            .json()
    };
    let before = [raw("local"), raw("azure")];

    let (l, a) = both(
        &env,
        &serve,
        &["roll-secondary", "--due", "--now", &t2, "-o", "json"],
    );
    // Local and azure issued a second or so apart: the expiry times inside the step's
    // description differ by that.
    assert_same(
        &times_in_text_masked(l),
        &times_in_text_masked(a),
        "the roll that removes the expired CAs",
    );
    let (l, a) = both(&env, &serve, &["status", "--now", &t2, "-o", "json"]);
    assert_same(&l, &a, "status after the expired CAs left");
    for (b, now) in before.iter().zip([raw("local"), raw("azure")]) {
        let (b, after) = (group(b, "sensors"), group(&now, "sensors"));
        assert_eq!(
            after["primary"]["thumbprint"], b["secondary"]["thumbprint"],
            "the live intermediate is the primary now: {after}"
        );
        assert!(after["secondary"].is_null(), "{after}");
    }
    let after = group(&a, "sensors").clone();
    let served = serve_status(&env);
    primary_wherever_a_secondary(&a, &served, "after the expired CAs left");
    assert!(group(&served, "sensors")["primary"].is_object(), "{served}");
    let root = a["cas"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "root"))
        .unwrap_or_else(|| panic!("no root in {a}"));
    assert_eq!(
        root["in_service"].as_array().map(Vec::len),
        Some(1),
        "only the live root stays in the service: {root}"
    );

    let raw = run_fleet(&env, &serve, "azure", &["roll-secondary", "--due", "--now", &t2]).ok();
    assert!(
        !raw.stdout.contains("remove expired CA certificates"),
        "a rerun has nothing expired to remove: {}",
        raw.stdout
    );
    let (l, a) = both(&env, &serve, &["status", "--now", &t2, "-o", "json"]);
    assert_same(&l, &a, "status after the rerun");
    assert_eq!(group(&a, "sensors"), &after, "the rerun changed nothing");
}

/// `reprovision` of revoked devices: on azure the direct method does not reach them (the hub
/// refuses them) and they are reported `waiting`, but the enrollment service refuses their
/// certificates all the same, so `devices_cut_off` names them as the local run does (trial az1
/// 3: count 2 on local, 0 on azure).
#[test]
fn reprovision_counts_revoked_devices_cut_off_the_same_on_local_and_azure() {
    let env = TestEnv::new();
    let serve = issued_groups(&env);
    for target in ["device:gw-1", "device:s-1"] {
        let (l, a) = both(
            &env,
            &serve,
            &[
                "revoke",
                target,
                "--reason",
                "key-compromise",
                "--yes",
                "-o",
                "json",
            ],
        );
        assert_same(&l, &a, target);
    }
    let args = ["reprovision", "--force", "-o", "json"];
    let l = run_fleet(&env, &serve, "local", &args);
    let a = run_fleet(&env, &serve, "azure", &args);
    assert_eq!((l.code, a.code), (1, 1), "{}\n{}", l.stdout, a.stdout);
    let (l, a) = (l.json(), a.json());
    assert_eq!(l["devices_cut_off"], a["devices_cut_off"], "local {l}\nazure {a}");
    assert_eq!(a["devices_cut_off"]["count"], 2, "{a}");
    let mut first: Vec<&str> = a["devices_cut_off"]["first"]
        .as_array()
        .unwrap_or_else(|| panic!("{a}"))
        .iter()
        .filter_map(Value::as_str)
        .collect();
    first.sort_unstable();
    assert_eq!(first, ["gw-1", "s-1"], "{a}");
    // The device nobody revoked is not cut off on either.
    assert_eq!(l["rejected"], a["rejected"], "{l}\n{a}");
}

/// Third azure trial, observation 5: after a breach of a CA, a roll of the root made that CA
/// anew. Rerunning the breach changes nothing (a rerun of finished work), on both backends, and
/// says how to declare the CA in use now compromised: a new `--incident`, which then replaces it
/// the same way on both.
#[test]
fn a_breach_rerun_after_the_ca_was_made_anew_names_the_new_incident_that_declares_it() {
    let env = TestEnv::new();
    let serve = issued_groups(&env);
    let breach = ["roll-primary", "--breach", "ca:factory", "--yes", "-o", "json"];
    let (l, a) = both(&env, &serve, &breach);
    assert_same(&l, &a, "breach");
    let (l, a) = both(&env, &serve, &["roll-primary", "ca:root", "-o", "json"]);
    assert_same(&l, &a, "roll of the root, which makes the factory CA anew");
    let (l, a) = both(&env, &serve, &["status", "-o", "json"]);
    assert_same(&l, &a, "status after the root roll");
    let factory_now = |which: &str| {
        run_fleet(
            &env,
            &serve,
            which,
            &["vault", "show", "ca-factory", "-o", "json"],
        )
        .ok()
        .json()["versions"]
            .as_array()
            .map(Vec::len)
            .unwrap_or_default()
    };
    let versions = [factory_now("local"), factory_now("azure")];

    for which in ["local", "azure"] {
        let r = run_fleet(&env, &serve, which, &breach[..4]);
        assert_eq!(r.code, 0, "{which}: {}", r.stderr);
        assert!(
            r.stdout
                .contains("group:sensors: an earlier breach roll already replaced")
                && r.stdout
                    .contains("run the breach again with a new --incident LABEL"),
            "{which}: {}",
            r.stdout
        );
    }
    let (l, a) = both(&env, &serve, &breach);
    assert_same(&l, &a, "rerun");
    assert_eq!(a["groups"][0]["outcome"], "already-replaced", "{a}");
    assert_eq!(a["steps"].as_array().map(Vec::len), Some(0), "{a}");
    assert_eq!(
        [factory_now("local"), factory_now("azure")],
        versions,
        "the rerun made nothing"
    );

    // The new incident declares the CA in use now compromised and replaces it.
    let incident = [&breach[..4], &["--incident", "INC-2", "-o", "json"][..]].concat();
    let (l, a) = both(&env, &serve, &incident);
    assert_same(&l, &a, "a new incident");
    assert!(
        a["steps"].as_array().is_some_and(|s| !s.is_empty()),
        "the new incident breached: {a}"
    );
    assert_eq!(
        [factory_now("local"), factory_now("azure")],
        versions.map(|n| n + 1),
        "a new factory CA version on both"
    );
    let (l, a) = both(&env, &serve, &["status", "-o", "json"]);
    assert_same(&l, &a, "status after the new incident");
    let (l, a) = both(&env, &serve, &incident);
    assert_same(&l, &a, "the new incident's rerun");
    assert_eq!(a["groups"][0]["outcome"], "already-replaced", "{a}");
}

/// Each version of the vault certificate of `target` (`device:ID`, `ca:NAME`) as `(version,
/// enabled)`, oldest first.
fn vault_versions(
    env: &TestEnv,
    serve: &crate::conformance::azure::Serve,
    which: &str,
    target: &str,
) -> Vec<(String, bool)> {
    run_fleet(env, serve, which, &["vault", "show", target, "-o", "json"])
        .ok()
        .json()["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["version"].as_str().unwrap().to_string(), v["enabled"] == true))
        .collect()
}

/// A CA breach's step says it disables the compromised CA and what it signed (trial az8 F3):
/// once each device under it holds its replacement, the device certificate the compromised CA
/// version signed is disabled in the vault, so neither `vault export` nor `export` hands out a
/// certificate whose chain is revoked; a device under another CA keeps its certificate enabled,
/// and the rerun changes nothing. The same on local and on azure.
#[test]
fn a_ca_breach_disables_the_device_certificates_the_compromised_ca_signed_on_local_and_azure() {
    let env = TestEnv::new();
    let serve = issued_groups(&env);
    let before: Vec<Vec<(String, bool)>> = ["local", "azure"]
        .iter()
        .map(|w| vault_versions(&env, &serve, w, "device:s-1"))
        .collect();
    let (dry, _) = both(
        &env,
        &serve,
        &[
            "roll-primary",
            "--breach",
            "ca:factory",
            "--dry-run",
            "-o",
            "json",
        ],
    );
    let s1 = dry["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["target"] == "device:s-1")
        .unwrap_or_else(|| panic!("{dry}"));
    assert!(
        s1["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s.as_str().unwrap().starts_with("disable vault version dev-s-1/")),
        "the dry run says what it disables: {s1}"
    );
    let breach = ["roll-primary", "--breach", "ca:factory", "--yes", "-o", "json"];
    let (l, a) = both(&env, &serve, &breach);
    assert_same(&l, &a, "the breach");
    for (which, before) in ["local", "azure"].iter().zip(&before) {
        assert_eq!(before.len(), 1, "{which}: {before:?}");
        let old = &before[0].0;
        for id in ["s-1", "s-2"] {
            let after = vault_versions(&env, &serve, which, &format!("device:{id}"));
            let enabled: Vec<bool> = after.iter().map(|(_, e)| *e).collect();
            assert_eq!(
                enabled,
                vec![false, true],
                "{which} {id}: the certificate under the compromised CA is disabled, its replacement not: {after:?}"
            );
        }
        let r = run_fleet(
            &env,
            &serve,
            which,
            &[
                "vault",
                "export",
                "device:s-1",
                "--version",
                old,
                "--out",
                "old.pem",
            ],
        );
        assert_eq!(r.code, 2, "{which}: {}\n{}", r.stdout, r.stderr);
        assert!(r.stderr.contains("is disabled"), "{which}: {}", r.stderr);
        let gw = vault_versions(&env, &serve, which, "device:gw-1");
        assert!(
            gw.iter().all(|(_, e)| *e),
            "{which}: gw-1 is under the root, not the breached CA: {gw:?}"
        );
    }
    let (l, a) = both(&env, &serve, &breach);
    assert_same(&l, &a, "the rerun");
    for which in ["local", "azure"] {
        let enabled: Vec<bool> = vault_versions(&env, &serve, which, "device:s-1")
            .iter()
            .map(|(_, e)| *e)
            .collect();
        assert_eq!(enabled, vec![false, true], "{which}: the rerun changes nothing");
    }
}

/// Runs `args` on the local and the azure plan, each stopped by the fault switch after its second
/// step (a CA breach: after its revocation); each run must die.
fn killed_on_both(env: &TestEnv, serve: &crate::conformance::azure::Serve, args: &[&str]) {
    for which in ["local", "azure"] {
        let killed = crate::azure_verbs::run_fleet_with(
            env,
            serve,
            which,
            &[("CERTROLL_FAULT_AFTER_STEPS", "2")],
            args,
        );
        assert_ne!(killed.code, 0, "{which}: the fault switch must stop {args:?}");
    }
}

/// Trial az12 F1 and F2, on local and on azure: CA breach A stopped after its revocation, then
/// B, then A's command (which resumes A's run), then A's and B's commands again. B's CA version
/// and device certificates stay the ones in force and the only ones enabled; A renews nothing and
/// replaces nothing, and neither label replaces anything again.
#[test]
fn a_ca_breach_cut_off_then_a_later_one_then_either_again_replaces_nothing_twice_on_local_and_azure() {
    let env = TestEnv::new();
    let serve = issued_groups(&env);
    let breach = |incident: &'static str| crate::azure_verbs::breach_args("ca:factory", incident);
    let state = |which: &str| -> Vec<Vec<(String, bool)>> {
        ["ca:factory", "device:s-1", "device:s-2"]
            .iter()
            .map(|t| vault_versions(&env, &serve, which, t))
            .collect()
    };
    killed_on_both(&env, &serve, &breach("A"));
    let (l, a) = both(&env, &serve, &breach("B"));
    assert_eq!(l["groups"][0]["outcome"], "replaced", "{l}");
    assert_eq!(a["groups"][0]["outcome"], "replaced", "{a}");
    let after_b: Vec<_> = ["local", "azure"].iter().map(|w| state(w)).collect();
    for (which, st) in ["local", "azure"].iter().zip(&after_b) {
        for versions in st {
            let on = versions.iter().filter(|(_, e)| *e).count();
            assert_eq!(on, 1, "{which}: only what is in force is enabled: {st:?}");
        }
    }
    for (n, incident) in ["A", "A", "B"].into_iter().enumerate() {
        let (l, a) = both(&env, &serve, &breach(incident));
        for (which, r) in [("local", &l), ("azure", &a)] {
            assert_eq!(r["resumed"], n == 0, "{which} {incident}: {r}");
            assert_eq!(
                r["groups"][0]["outcome"], "already-replaced",
                "{which} {incident}: {r}"
            );
        }
        for (which, st) in ["local", "azure"].iter().zip(&after_b) {
            assert_eq!(&state(which), st, "{which} {incident} (run {n}): nothing changes");
        }
    }
}

/// A CA breach cut off after its revocation: the dry run of its rerun counts the devices it
/// leaves cut off until it replaces them, as the dry run before any run did, on local and on
/// azure alike (trial az13 N2: it said none).
#[test]
fn a_resumed_ca_breach_dry_run_counts_its_devices_cut_off_on_local_and_azure() {
    let env = TestEnv::new();
    let serve = issued_groups(&env);
    let breach = crate::azure_verbs::breach_args("ca:factory", "L1");
    let dry_run: Vec<&str> = [&breach[..], &["--dry-run"]].concat();
    let (fresh, _) = both(&env, &serve, &dry_run);
    assert_ne!(fresh["devices_cut_off"]["count"], 0, "{fresh}");
    killed_on_both(&env, &serve, &breach);
    let (l, a) = both(&env, &serve, &dry_run);
    for (which, r) in [("local", &l), ("azure", &a)] {
        assert_eq!(r["resumed"], true, "{which}: {r}");
        assert_eq!(r["devices_cut_off"], fresh["devices_cut_off"], "{which}: {r}");
    }
    // `check` names each device the run has yet to replace critical, with the rerun, on both
    // backends alike (it counted them ok).
    let device_problems = |which: &str| {
        let c = run_fleet(&env, &serve, which, &["check", "-o", "json"]);
        assert_eq!(c.code, 2, "{which}: {}\n{}", c.stdout, c.stderr);
        let mut named: Vec<(String, String)> = c.json()["problems"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["target"].as_str().unwrap().starts_with("device:"))
            .map(|p| {
                assert_eq!(p["level"], "critical", "{which}: {p}");
                let reason = p["reason"].as_str().unwrap();
                assert!(
                    reason.contains(
                        "`certroll roll-primary --breach --incident L1 ca:factory --yes` finishes it"
                    ),
                    "{which}: {reason}"
                );
                (
                    p["target"].as_str().unwrap().to_string(),
                    mask(p["reason"].clone()).to_string(),
                )
            })
            .collect();
        named.sort();
        named
    };
    let local = device_problems("local");
    for first in fresh["devices_cut_off"]["first"].as_array().unwrap() {
        let target = first.as_str().unwrap();
        let target = if target.starts_with("device:") {
            target.to_string()
        } else {
            format!("device:{target}")
        };
        let (_, reason) = local
            .iter()
            .find(|(t, _)| *t == target)
            .unwrap_or_else(|| panic!("{target} not named: {local:?}"));
        assert!(reason.contains("DPS refuses the device"), "{reason}");
    }
    assert_eq!(device_problems("azure"), local);
    // `status` says the same of each of them in `breach_open` (trial az15 N4: null, the devices
    // shown `assigned`), and nothing of the others, on both backends alike.
    for which in ["local", "azure"] {
        let status = run_fleet(&env, &serve, which, &["status", "-o", "json"]);
        assert_eq!(status.code, 0, "{which}: {}", status.stderr);
        for d in status.json()["devices"].as_array().unwrap() {
            let target = format!("device:{}", d["id"].as_str().unwrap());
            let open = local
                .iter()
                .find(|(t, _)| *t == target)
                .map(|(_, why)| why.clone());
            let shown = Some(d["breach_open"].clone())
                .filter(|b| !b.is_null())
                .map(|b| mask(b).to_string());
            assert_eq!(shown, open, "{which} {target}: {d}");
        }
    }
}
