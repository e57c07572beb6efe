//! Reruns and sequences of different rolls (issue 9 items 4-5, issue 10 item 3): whether a roll is
//! done comes from what the vault, the enrollments and the devices hold, so a third run, a run
//! after `reprovision`, or a roll after a roll of another target never renews or re-issues what
//! is already in place, and after every step every device holds a certificate its enrollment
//! accepts and its hub admits.

use crate::roll::{at, backend, works};
use crate::util::*;
use certroll::backend::Vault as _;

fn run(env: &TestEnv, now: &str, args: &[&str]) -> Run {
    env.plan_run(&[&["--now", now][..], args].concat())
}

fn json(env: &TestEnv, now: &str, args: &[&str]) -> serde_json::Value {
    run(env, now, &[args, &["-o", "json"][..]].concat()).ok().json()
}

fn versions(env: &TestEnv, name: &str) -> usize {
    backend(env).versions(name).unwrap().len()
}

/// The number of versions of every certificate of the quickstart: the CAs and all 51 devices.
fn all_versions(env: &TestEnv) -> Vec<(String, usize)> {
    let mut names = vec!["ca-root".to_string(), "ca-factory".to_string()];
    names.extend(devices().iter().map(|d| format!("dev-{d}")));
    let b = backend(env);
    names
        .into_iter()
        .map(|n| {
            let count = b.versions(&n).unwrap().len();
            (n, count)
        })
        .collect()
}

fn devices() -> Vec<String> {
    let mut all: Vec<String> = (1..=50).map(|i| format!("sensor-{i:02}")).collect();
    all.push("gateway-01".into());
    all
}

/// The certificate each device holds now (from `export`, as a user would get it).
fn held(env: &TestEnv, now: &str, id: &str) -> Vec<u8> {
    let file = format!("held-{id}.pem");
    run(env, now, &["export", &format!("device:{id}"), "--out", &file]).ok();
    certroll::pki::pem::certs_from_pem(&std::fs::read(env.path(&file)).unwrap())
        .unwrap()
        .remove(0)
}

/// Every device holds a certificate that its enrollment accepts and its hub admits: the
/// enrollment service's own preview (`reprovision --dry-run --force`) refuses nobody, and each
/// device's held certificate passes the registration decision and the hub's authentication.
fn assert_fleet_connects(env: &TestEnv, now: &str, when: &str) {
    let r = json(env, now, &["reprovision", "--dry-run", "--force"]);
    assert_eq!(r["rejected"], 0, "{when}: refused devices: {r}");
    assert_eq!(r["assigned"], 51, "{when}: {r}");
    for id in devices() {
        let cert = held(env, now, &id);
        assert!(works(env, &id, &cert, now), "{when}: {id} is refused");
    }
}

#[test]
fn a_third_run_of_a_ca_roll_renews_nothing_and_cuts_nobody_off() {
    // See issue 9 item 4: the third run renewed the CA again and put it into the slot while
    // reporting the devices as already rolled.
    for args in [
        &["roll-secondary", "group:sensors"][..],
        &["roll-primary", "group:sensors"],
        &["roll-secondary", "ca:factory"],
        &["roll-primary", "ca:root"],
    ] {
        let env = TestEnv::new();
        env.quickstart();
        run(&env, NOW, &["issue"]).ok();
        let t = at(100);
        json(&env, &t, args);
        let after_first = all_versions(&env);
        for rerun in 2..=4 {
            let r = json(&env, &t, args);
            assert!(
                r["groups"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|g| g["outcome"] == "already-rolled"),
                "{args:?} run {rerun}: {r}"
            );
            assert!(
                r["devices"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|d| d["outcome"] == "already-rolled"),
                "{args:?} run {rerun}: {r}"
            );
            assert_eq!(all_versions(&env), after_first, "{args:?} run {rerun}");
        }
        assert_fleet_connects(&env, &t, &format!("{args:?}"));
    }
}

#[test]
fn a_third_breach_without_a_new_incident_replaces_nothing() {
    // See issue 9 item 4: a third `--breach` re-issued everything again.
    for args in [
        &["roll-primary", "--breach", "--yes", "device:gateway-01"][..],
        &["roll-primary", "--breach", "--yes", "device:sensor-07"],
        &["roll-primary", "--breach", "--yes", "enrollment:gateway-01"],
        &["roll-primary", "--breach", "--yes", "group:sensors"],
        &["roll-primary", "--breach", "--yes", "ca:factory"],
        &["roll-primary", "--breach", "--yes", "ca:root"],
    ] {
        let env = TestEnv::new();
        env.quickstart();
        run(&env, NOW, &["issue"]).ok();
        json(&env, NOW, args);
        let after_first = all_versions(&env);
        for rerun in 2..=3 {
            let r = json(&env, NOW, args);
            for d in r["devices"].as_array().unwrap() {
                assert_eq!(d["outcome"], "already-replaced", "{args:?} run {rerun}: {r}");
            }
            for g in r["groups"].as_array().unwrap() {
                assert_eq!(g["outcome"], "already-replaced", "{args:?} run {rerun}: {r}");
            }
            assert_eq!(all_versions(&env), after_first, "{args:?} run {rerun}");
        }
        assert_fleet_connects(&env, NOW, &format!("{args:?}"));
        // A new incident label treats the replacement as compromised too.
        let incident = [args, &["--incident", "INC-2"][..]].concat();
        json(&env, NOW, &incident);
        assert_ne!(all_versions(&env), after_first, "{args:?} with a new incident");
        let settled = all_versions(&env);
        json(&env, NOW, &incident);
        json(&env, NOW, args);
        assert_eq!(
            all_versions(&env),
            settled,
            "{args:?}: reruns after the new incident"
        );
        assert_fleet_connects(&env, NOW, &format!("{args:?} --incident INC-2"));
    }
}

#[test]
fn a_roll_rerun_after_reprovision_does_nothing() {
    // See issue 10 item 3: after `reprovision` the hub holds only the new thumbprint, and the
    // same roll issued a third version (for a group, renewed the CA again).
    let env = TestEnv::new();
    env.quickstart();
    run(&env, NOW, &["issue"]).ok();
    let t = at(100);
    for target in ["device:sensor-05", "device:gateway-01", "group:sensors"] {
        json(&env, &t, &["roll-secondary", target]);
        let r = json(&env, &t, &["roll-secondary", target]);
        assert!(
            r["devices"]
                .as_array()
                .unwrap()
                .iter()
                .all(|d| d["outcome"] == "already-rolled"),
            "{target}: {r}"
        );
        let before = all_versions(&env);
        let p = json(&env, &t, &["reprovision", target]);
        assert_eq!(p["rejected"], 0, "{target}: {p}");
        let r = json(&env, &t, &["roll-secondary", target]);
        assert!(
            r["devices"]
                .as_array()
                .unwrap()
                .iter()
                .all(|d| d["outcome"] == "already-rolled"),
            "{target} after reprovision: {r}"
        );
        assert_eq!(all_versions(&env), before, "{target} after reprovision");
        assert_fleet_connects(&env, &t, target);
    }
    assert_eq!(versions(&env, "ca-factory"), 2);
}

#[test]
fn any_sequence_of_different_rolls_keeps_the_fleet_connected_and_reruns_change_nothing() {
    // See issue 9 item 5: `roll-secondary ca:factory` then `roll-secondary group:sensors` left
    // every sensor refused while the dry run announced nobody cut off.
    let env = TestEnv::new();
    env.quickstart();
    run(&env, NOW, &["issue"]).ok();
    let sequence: [(i64, &[&str]); 10] = [
        (10, &["roll-secondary", "ca:factory"]),
        (20, &["roll-secondary", "group:sensors"]),
        (30, &["roll-secondary", "ca:root"]),
        (40, &["roll-secondary", "group:sensors"]),
        (50, &["roll-primary", "group:sensors"]),
        (60, &["roll-secondary", "ca:root"]),
        (70, &["roll-secondary", "device:sensor-03"]),
        (80, &["roll-primary", "ca:factory"]),
        (90, &["roll-secondary", "device:gateway-01"]),
        (100, &["roll-primary", "ca:root"]),
    ];
    for (day, args) in sequence {
        let t = at(day);
        let step = format!("day {day}: {args:?}");
        let dry = json(&env, &t, &[args, &["--dry-run"][..]].concat());
        let before = all_versions(&env);
        let done = json(&env, &t, args);
        assert_eq!(
            dry["devices_cut_off"], done["devices_cut_off"],
            "{step}: the dry run's count is what the run does"
        );
        assert_eq!(
            dry["devices"].as_array().unwrap().len(),
            done["devices"].as_array().unwrap().len(),
            "{step}"
        );
        for (d, r) in dry["devices"]
            .as_array()
            .unwrap()
            .iter()
            .zip(done["devices"].as_array().unwrap())
        {
            let expected = match d["outcome"].as_str().unwrap() {
                "would-roll" => "rolled",
                "would-prune" => "pruned",
                other => other,
            };
            assert_eq!(r["outcome"], expected, "{step}: {}", r["target"]);
        }
        let rolled = done["devices"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["outcome"] == "rolled")
            .count();
        let grew: usize = all_versions(&env)
            .iter()
            .zip(&before)
            .filter(|(now, then)| now.0.starts_with("dev-") && now.1 != then.1)
            .count();
        assert_eq!(
            rolled, grew,
            "{step}: devices reported rolled are the ones given a version"
        );
        assert_fleet_connects(&env, &t, &step);
        let settled = all_versions(&env);
        for rerun in 2..=3 {
            let r = json(&env, &t, args);
            assert!(
                r["devices"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|d| d["outcome"] == "already-rolled"),
                "{step} rerun {rerun}: {r}"
            );
            assert_eq!(r["devices_cut_off"]["count"], 0, "{step} rerun {rerun}");
            assert_eq!(all_versions(&env), settled, "{step} rerun {rerun}");
        }
        assert_fleet_connects(&env, &t, &format!("{step} after its reruns"));
    }
}

#[test]
fn a_roll_after_an_interrupted_roll_of_another_target_names_the_devices_it_cuts_off() {
    // A CA roll killed after its CA steps leaves the group with two CA certificates and its
    // devices under the old one; a device rolled then gets its certificate under the new one.
    // A group roll into the other slot finds the CA renewed and its current certificate in the
    // group already (issue 10 item 3: which slot holds it does not matter), so it renews nothing,
    // leaves the slots as they are, cuts nobody off, and rolls only the devices still under the
    // old CA version; its dry run says exactly that.
    let env = TestEnv::new();
    let t = at(10);
    killed_ca_roll(&env, &t, "2");
    json(&env, &t, &["roll-secondary", "device:sensor-01"]);
    assert_fleet_connects(&env, &t, "after the interrupted CA roll");

    let args = ["roll-primary", "group:sensors"];
    let factory = versions(&env, "ca-factory");
    let dry = json(&env, &t, &[&args[..], &["--dry-run"]].concat());
    assert_eq!(dry["devices_cut_off"]["count"], 0, "{dry}");
    let done = json(&env, &t, &args);
    assert_eq!(done["devices_cut_off"], dry["devices_cut_off"], "{done}");
    assert_eq!(done["groups"][0]["outcome"], "already-rolled", "{done}");
    assert_eq!(versions(&env, "ca-factory"), factory, "the CA was renewed again");
    for d in done["devices"].as_array().unwrap() {
        let expected = if d["target"] == "device:sensor-01" {
            "already-rolled"
        } else {
            "rolled"
        };
        assert_eq!(d["outcome"], expected, "{done}");
    }
    assert_fleet_connects(&env, &t, "after the group roll");
    let settled = all_versions(&env);
    let again = json(&env, &t, &args);
    assert_eq!(again["groups"][0]["outcome"], "already-rolled", "{again}");
    assert_eq!(all_versions(&env), settled);

    // The interrupted CA roll, run again, is resumed as recorded and leaves everyone connected.
    json(&env, &t, &["roll-secondary", "ca:factory"]);
    assert_fleet_connects(&env, &t, "after the resumed CA roll");
}

#[test]
fn a_device_roll_is_refused_while_its_group_does_not_hold_the_ca_it_would_sign_with() {
    // A CA roll killed right after renewing the CA: the group still holds only the old CA
    // certificate, so a device certificate signed by the new one would be refused. The device
    // roll refuses up front and changes nothing; once the CA roll is finished it rolls.
    let env = TestEnv::new();
    let t = at(10);
    killed_ca_roll(&env, &t, "1");
    let before = all_versions(&env);
    for args in [
        &["roll-secondary", "device:sensor-01"][..],
        &["roll-secondary", "device:sensor-01", "--dry-run"],
        &[
            "roll-secondary",
            "--due",
            "--dry-run",
            "--now",
            "2027-11-01T00:00:00Z",
        ],
    ] {
        let refused = run(&env, &t, args);
        assert_ne!(refused.code, 0, "{args:?}: {}", refused.stdout);
        // A cron `--due` run reports the group's devices held back (exit 1) and rolls the rest.
        let said = if args.contains(&"--due") {
            assert_eq!(refused.code, 1, "{args:?}: {}", refused.stderr);
            &refused.stdout
        } else {
            &refused.stderr
        };
        assert!(
            said.contains("group `sensors`") && said.contains("CA `factory`"),
            "{args:?}: {said}"
        );
        assert_eq!(all_versions(&env), before, "{args:?} changed nothing");
    }
    // The gateway's own enrollment holds its certificates itself: it rolls.
    json(&env, &t, &["roll-secondary", "device:gateway-01"]);
    assert_fleet_connects(&env, &t, "after the gateway's roll");
    json(&env, &t, &["roll-secondary", "ca:factory"]);
    assert_fleet_connects(&env, &t, "after the resumed CA roll");
    let r = json(&env, &t, &["roll-secondary", "device:sensor-01"]);
    assert_eq!(r["devices"][0]["outcome"], "already-rolled", "{r}");
}

#[test]
fn a_group_device_rolled_and_reprovisioned_is_rolled_again_once_its_renewal_is_due() {
    // A device of a group has no slot of its own: after `reprovision` the hub holds only its new
    // thumbprint, and an explicit roll is done until the certificate's auto-renew action fires
    // (30 days before expiry in the quickstart), then it rolls.
    let env = TestEnv::new();
    env.quickstart();
    run(&env, NOW, &["issue"]).ok();
    let t = at(100);
    json(&env, &t, &["roll-secondary", "device:sensor-02"]);
    json(&env, &t, &["reprovision", "device:sensor-02"]);
    for day in [100, 300, 434] {
        let r = json(&env, &at(day), &["roll-secondary", "device:sensor-02"]);
        assert_eq!(r["devices"][0]["outcome"], "already-rolled", "day {day}: {r}");
    }
    assert_eq!(versions(&env, "dev-sensor-02"), 2);
    let later = at(436);
    let r = json(&env, &later, &["roll-secondary", "device:sensor-02"]);
    assert_eq!(r["devices"][0]["outcome"], "rolled", "{r}");
    assert_eq!(versions(&env, "dev-sensor-02"), 3);
    let r = json(&env, &later, &["roll-secondary", "device:sensor-02"]);
    assert_eq!(r["devices"][0]["outcome"], "already-rolled", "{r}");
    // (The other sensors' certificates from `issue` have expired by now: only this one counts.)
    let cert = held(&env, &later, "sensor-02");
    assert!(works(&env, "sensor-02", &cert, &later));
}

/// Every device of a plan: the enrollment service's preview refuses nobody, and `status` shows
/// each device's hub identity enabled and holding the thumbprint of the certificate it holds.
fn assert_plan_connects(env: &TestEnv, now: &str, devices: usize, when: &str) {
    let r = json(env, now, &["reprovision", "--dry-run", "--force"]);
    assert_eq!(r["rejected"], 0, "{when}: refused devices: {r}");
    assert_eq!(r["assigned"], devices, "{when}: {r}");
    let s = json(env, now, &["status"]);
    let all = s["devices"].as_array().unwrap();
    assert_eq!(all.len(), devices, "{when}");
    for d in all {
        let held = &d["installed"]["thumbprint"];
        let hub = &d["hub_identity"];
        assert_eq!(hub["status"], "enabled", "{when}: {d}");
        assert!(
            hub["primary_thumbprint"] == *held || hub["secondary_thumbprint"] == *held,
            "{when}: the hub does not admit what {} holds: {d}",
            d["id"]
        );
    }
}

#[test]
fn reruns_and_interleaved_rolls_over_rsa_and_ec_roots_and_a_root_signed_group() {
    // Two roots (RSA and EC), an intermediate under each, a group under an intermediate and a
    // group signed by a root directly (its slot refers to the service's verified root), and
    // individual enrollments under each intermediate.
    let env = TestEnv::new();
    env.write("plan.toml", &mixed_plan(4, 4));
    run(&env, NOW, &["issue"]).ok();
    let devices = 10;
    assert_plan_connects(&env, NOW, devices, "after issue");
    let names = |env: &TestEnv| -> Vec<(String, usize)> {
        let b = backend(env);
        let mut out = Vec::new();
        for n in ["ca-rsa-root", "ca-ec-root", "ca-line-a", "ca-line-b"] {
            out.push((n.to_string(), b.versions(n).unwrap().len()));
        }
        for i in 1..=4 {
            for n in [format!("dev-meter-{i}"), format!("dev-pump-{i}")] {
                let count = b.versions(&n).unwrap().len();
                out.push((n, count));
            }
        }
        for n in ["dev-gw-rsa", "dev-gw-hsm"] {
            out.push((n.to_string(), b.versions(n).unwrap().len()));
        }
        out
    };
    for (day, args) in [
        (10, &["roll-secondary", "ca:ec-root"][..]),
        (20, &["roll-secondary", "group:meters"]),
        (30, &["roll-secondary", "ca:rsa-root"]),
        (40, &["roll-primary", "ca:ec-root"]),
        (50, &["roll-primary", "group:meters"]),
        (60, &["roll-secondary", "ca:line-b"]),
    ] {
        let t = at(day);
        let step = format!("day {day}: {args:?}");
        let dry = json(&env, &t, &[args, &["--dry-run"][..]].concat());
        let done = json(&env, &t, args);
        assert_eq!(dry["devices_cut_off"], done["devices_cut_off"], "{step}");
        assert_plan_connects(&env, &t, devices, &step);
        let settled = names(&env);
        for rerun in 2..=3 {
            let r = json(&env, &t, args);
            for g in r["groups"].as_array().unwrap() {
                assert_eq!(g["outcome"], "already-rolled", "{step} rerun {rerun}: {r}");
            }
            for d in r["devices"].as_array().unwrap() {
                assert_eq!(d["outcome"], "already-rolled", "{step} rerun {rerun}: {r}");
            }
            assert_eq!(names(&env), settled, "{step} rerun {rerun}");
        }
        assert_plan_connects(&env, &t, devices, &format!("{step} after its reruns"));
    }
}

/// The dry run of a roll whose earlier run was killed part-way shows what its rerun does (the
/// az8 trial's runbook nit): it resumes that run from the journal, so it says so, names the
/// run, marks the steps done before, and plans only what is left; it changes nothing, and the
/// rerun then takes exactly those steps.
#[test]
fn a_dry_run_after_a_killed_roll_says_it_would_resume_that_run() {
    let env = TestEnv::new();
    let t = at(10);
    killed_ca_roll(&env, &t, "2");
    let before = all_versions(&env);

    let args = ["roll-secondary", "ca:factory"];
    let dry = json(&env, &t, &[&args[..], &["--dry-run"]].concat());
    assert_eq!(dry["resumed"], true, "{dry}");
    let open = dry["run"]
        .as_i64()
        .unwrap_or_else(|| panic!("no run named: {dry}"));
    let states: Vec<&str> = dry["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["state"].as_str().unwrap())
        .collect();
    assert_eq!(states[..2], ["done-before", "done-before"], "{dry}");
    assert!(states[2..].iter().all(|s| *s == "planned"), "{dry}");
    let human = run(&env, &t, &[&args[..], &["--dry-run"]].concat()).ok();
    assert!(
        human
            .stdout
            .contains(&format!("Would resume run {open} (killed or failed part-way)")),
        "{}",
        human.stdout
    );
    assert!(human.stdout.contains("[done before]"), "{}", human.stdout);
    assert_eq!(all_versions(&env), before, "the dry run changed nothing");

    let done = json(&env, &t, &args);
    assert_eq!(done["resumed"], true, "{done}");
    assert_eq!(done["run"], open, "{done}");
    let shape = |r: &serde_json::Value| -> Vec<(serde_json::Value, serde_json::Value)> {
        r["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["seq"].clone(), s["target"].clone()))
            .collect()
    };
    assert_eq!(
        shape(&done),
        shape(&dry),
        "the rerun takes the steps its dry run listed"
    );
    let would: Vec<&serde_json::Value> = dry["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| &d["target"])
        .collect();
    let rolled: Vec<&serde_json::Value> = done["devices"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["outcome"] == "rolled")
        .map(|d| &d["target"])
        .collect();
    assert_eq!(would, rolled, "{dry}\n{done}");
    assert_fleet_connects(&env, &t, "after the resumed CA roll");
}

/// The quickstart, issued, then its `roll-secondary ca:factory` at `t` killed by the fault
/// switch after `steps` committed steps (1: the CA renewed; 2: its certificate in the group too).
fn killed_ca_roll(env: &TestEnv, t: &str, steps: &str) {
    env.quickstart();
    run(env, NOW, &["issue"]).ok();
    killed(
        env,
        t,
        &["roll-secondary", "ca:factory"],
        (certroll::ops::journal::FAULT_ENV, steps),
    );
}

/// A killed run of `cmd` (`--now t`), aborted by the fault switch `fault` (`FAULT_ENV`: after
/// that many committed steps; `FAULT_BEFORE_COMMIT_ENV`: before that step's commit).
fn killed(env: &TestEnv, t: &str, cmd: &[&str], fault: (&str, &str)) {
    let out = env
        .cmd()
        .args([&["--plan", "plan.toml", "--now", t][..], cmd].concat())
        .env(fault.0, fault.1)
        .output()
        .unwrap();
    assert!(!out.status.success(), "the fault switch aborts {cmd:?}");
}

/// The open run a dry run names: it would resume it (JSON and human output alike).
fn would_resume(env: &TestEnv, t: &str, dry: &[&str]) -> (i64, Vec<String>) {
    let report = json(env, t, dry);
    assert_eq!(report["resumed"], true, "{report}");
    let open = report["run"]
        .as_i64()
        .unwrap_or_else(|| panic!("no run named: {report}"));
    let human = run(env, t, dry);
    assert!(
        human
            .stdout
            .contains(&format!("Would resume run {open} (killed or failed part-way)")),
        "{}",
        human.stdout
    );
    let states = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["state"].as_str().unwrap().to_string())
        .collect();
    (open, states)
}

/// `revoke --dry-run` after a revoke killed part-way says it would resume that run, as
/// `roll-* --dry-run` does: the target done before is marked so and the rest planned; it
/// changes nothing, and the rerun resumes that very run.
#[test]
fn a_dry_run_after_a_killed_revoke_says_it_would_resume_that_run() {
    let env = TestEnv::new();
    env.quickstart();
    run(&env, NOW, &["issue"]).ok();
    let args = [
        "revoke",
        "device:sensor-01",
        "device:sensor-02",
        "--reason",
        "superseded",
    ];
    killed(
        &env,
        NOW,
        &[&args[..], &["--yes"]].concat(),
        (certroll::ops::journal::FAULT_ENV, "1"),
    );
    let (open, states) = would_resume(&env, NOW, &[&args[..], &["--dry-run"]].concat());
    assert_eq!(states, ["done-before", "planned"]);
    let dry = json(&env, NOW, &[&args[..], &["--dry-run"]].concat());
    assert_eq!(dry["targets"][0]["steps"], serde_json::json!([]), "{dry}");
    assert!(
        dry["targets"][1]["steps"]
            .as_array()
            .is_some_and(|s| !s.is_empty()),
        "{dry}"
    );
    // sensor-02 is revoked by the disabled individual enrollment its revoke adds.
    let revoked = || {
        let status = json(&env, NOW, &["status", "device:sensor-02"]);
        status["devices"][0]["individual_enrollment"]["status"] == "disabled"
    };
    assert!(!revoked(), "the dry run changed nothing");

    let done = json(&env, NOW, &[&args[..], &["--yes"]].concat());
    assert_eq!(done["resumed"], true, "{done}");
    assert_eq!(done["run"], open, "{done}");
    assert!(revoked(), "the rerun revoked sensor-02");
}

/// `reprovision --dry-run` after a reprovision killed part-way says it would resume that run
/// (it used to settle the devices afresh and name no run), lists the step the rerun takes,
/// and the rerun resumes that very run.
#[test]
fn a_dry_run_after_a_killed_reprovision_says_it_would_resume_that_run() {
    let env = TestEnv::new();
    env.quickstart();
    run(&env, NOW, &["issue"]).ok();
    let args = ["reprovision", "--force", "group:sensors"];
    killed(
        &env,
        NOW,
        &args,
        (certroll::ops::journal::FAULT_BEFORE_COMMIT_ENV, "1"),
    );
    let (open, states) = would_resume(&env, NOW, &[&args[..], &["--dry-run"]].concat());
    assert_eq!(states, ["planned"]);

    let done = json(&env, NOW, &args);
    assert_eq!(done["resumed"], true, "{done}");
    assert_eq!(done["run"], open, "{done}");
    assert_eq!(done["assigned"], 50, "{done}");
    let again = json(
        &env,
        NOW,
        &["reprovision", "--force", "group:sensors", "--dry-run"],
    );
    assert_eq!(again["resumed"], false, "the run is finished: {again}");
}
