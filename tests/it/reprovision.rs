//! `reprovision`: the registration flow with each reprovision policy.

use crate::util::*;

fn device(env: &TestEnv, id: &str) -> serde_json::Value {
    let s = env
        .run(&[
            "--plan",
            "plan.toml",
            "status",
            "-o",
            "json",
            &format!("device:{id}"),
        ])
        .ok()
        .json();
    s["devices"][0].clone()
}

fn quickstart_with(env: &TestEnv, sensors_policy: &str) {
    env.quickstart();
    let text = std::fs::read_to_string(env.path("plan.toml")).unwrap();
    env.write(
        "plan.toml",
        &text.replace(
            "reprovision = \"migrate\"",
            &format!("reprovision = \"{sensors_policy}\""),
        ),
    );
    env.run(&["--plan", "plan.toml", "issue"]).ok();
}

#[test]
fn migrate_and_reset_put_only_the_presented_certificate_into_the_hub() {
    for (policy, substatus) in [("migrate", "deviceDataMigrated"), ("reset", "deviceDataReset")] {
        let env = TestEnv::new();
        quickstart_with(&env, policy);
        let t = "2027-10-01T00:00:00Z";
        env.run(&[
            "--plan",
            "plan.toml",
            "--now",
            t,
            "roll-secondary",
            "device:sensor-02",
        ])
        .ok();
        let before = device(&env, "sensor-02");
        assert!(
            before["hub_identity"]["primary_thumbprint"] != before["hub_identity"]["secondary_thumbprint"]
        );

        let r = env
            .run(&[
                "--plan",
                "plan.toml",
                "--now",
                t,
                "reprovision",
                "device:sensor-02",
                "-o",
                "json",
            ])
            .ok()
            .json();
        assert_eq!(r["assigned"], 1, "{r}");
        let after = device(&env, "sensor-02");
        assert_eq!(after["registration"]["substatus"], substatus);
        assert_eq!(
            after["hub_identity"]["primary_thumbprint"],
            after["installed"]["thumbprint"]
        );
        assert!(
            after["hub_identity"]["secondary_thumbprint"].is_null(),
            "{policy}: the old thumbprint is gone"
        );
        // Another device of the group is untouched.
        assert_eq!(
            device(&env, "sensor-03")["registration"]["substatus"],
            "initialAssignment"
        );
    }
}

#[test]
fn never_records_the_registration_and_leaves_the_hub_alone() {
    let env = TestEnv::new();
    quickstart_with(&env, "never");
    let t = "2027-10-01T00:00:00Z";
    env.run(&[
        "--plan",
        "plan.toml",
        "--now",
        t,
        "roll-secondary",
        "device:sensor-02",
    ])
    .ok();
    let before = device(&env, "sensor-02")["hub_identity"].clone();
    let r = env
        .run(&[
            "--plan",
            "plan.toml",
            "--now",
            t,
            "reprovision",
            "group:sensors",
            "-o",
            "json",
        ])
        .ok()
        .json();
    // Only the device whose certificate changed registers again; the others are unchanged.
    assert_eq!(
        (r["assigned"].as_u64(), r["unchanged"].as_u64()),
        (Some(1), Some(49)),
        "{r}"
    );
    let forced = env
        .run(&[
            "--plan",
            "plan.toml",
            "--now",
            t,
            "reprovision",
            "--force",
            "group:sensors",
            "-o",
            "json",
        ])
        .ok()
        .json();
    assert_eq!(forced["assigned"], 50, "--force registers every device again");
    let again = env
        .run(&[
            "--plan",
            "plan.toml",
            "--now",
            t,
            "reprovision",
            "group:sensors",
            "-o",
            "json",
        ])
        .ok()
        .json();
    assert_eq!(again["unchanged"], 50, "a rerun changes nothing: {again}");
    let after = device(&env, "sensor-02");
    assert_eq!(
        after["registration"]["substatus"],
        "reprovisionedToInitialAssignment"
    );
    assert_eq!(after["hub_identity"], before);
}

#[test]
fn an_expired_certificate_is_rejected_with_the_reason_and_exit_1() {
    let env = TestEnv::new();
    quickstart_with(&env, "migrate");
    let dry = env
        .run(&["--plan", "plan.toml", "reprovision", "--dry-run", "-o", "json"])
        .ok()
        .json();
    assert_eq!(dry["devices"].as_array().unwrap().len(), 51);
    // A year and more on, the dry run names every device the service would refuse.
    let late = env
        .run(&[
            "--plan",
            "plan.toml",
            "--now",
            "2028-01-01T00:00:00Z",
            "reprovision",
            "--dry-run",
            "-o",
            "json",
        ])
        .code(1)
        .json();
    assert_eq!(late["devices_cut_off"]["count"], 51, "{late}");
    assert_eq!(late["devices"][0]["status"], "would-fail");
    let r = env.run(&[
        "--plan",
        "plan.toml",
        "--now",
        "2028-01-01T00:00:00Z",
        "reprovision",
        "device:gateway-01",
        "device:sensor-01",
    ]);
    let r = r.code(1);
    assert!(
        r.stdout.contains("0 assigned, 0 unchanged, 2 rejected"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("validity"), "{}", r.stdout);
    // A rejected attempt is recorded as DPS records it, and does not take away where the
    // device was assigned (issue 10 item 2).
    let reg = &device(&env, "gateway-01")["registration"];
    assert_eq!(reg["status"], "failed", "{reg}");
    assert_eq!(reg["error_code"], 401002, "{reg}");
    assert!(reg["error"].as_str().unwrap().contains("validity"), "{reg}");
    assert_eq!(reg["last_updated"], "2028-01-01T00:00:00Z", "{reg}");
    assert_eq!(reg["hub"], "example-hub", "{reg}");
    env.run(&["--plan", "plan.toml", "reprovision", "ca:root"])
        .code(2);
}

// Issue 10 item 2: after `revoke device:X`, `reprovision device:X` is refused by the disabled
// enrollment, and the registration state says so (status, error code and message, time) while
// the hub of the last success stays visible as such.
#[test]
fn a_refused_reprovision_after_a_revoke_is_recorded_with_the_last_assignment_kept() {
    let env = TestEnv::new();
    quickstart_with(&env, "migrate");
    let before = device(&env, "sensor-04");
    assert_eq!(before["registration"]["status"], "assigned");
    assert_eq!(before["registration"]["last_updated"], NOW);
    assert!(before["registration"]["error_code"].is_null());
    env.plan_run(&[
        "revoke",
        "device:sensor-04",
        "--reason",
        "key-compromise",
        "--yes",
    ])
    .ok();
    let later = "2026-11-24T00:00:00Z";
    let r = env
        .plan_run(&["--now", later, "reprovision", "device:sensor-04"])
        .code(1);
    assert!(r.stdout.contains("1 rejected"), "{}", r.stdout);

    let after = device(&env, "sensor-04");
    let reg = &after["registration"];
    assert_eq!(reg["status"], "disabled", "{reg}");
    assert_eq!(reg["error_code"], 401003, "{reg}");
    assert!(
        reg["error"]
            .as_str()
            .unwrap()
            .contains("disabled enrollment `sensor-04`"),
        "{reg}"
    );
    assert_eq!(reg["last_updated"], later, "{reg}");
    assert!(reg["substatus"].is_null(), "{reg}");
    assert_eq!(
        reg["hub"], "example-hub",
        "the last assignment stays visible: {reg}"
    );

    // A rerun is refused the same way and leaves the same record.
    let again = env
        .plan_run(&["--now", later, "reprovision", "device:sensor-04"])
        .code(1);
    assert!(again.stdout.contains("1 rejected"), "{}", again.stdout);
    assert_eq!(device(&env, "sensor-04")["registration"], *reg);
}
