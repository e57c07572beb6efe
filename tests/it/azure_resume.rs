//! Runs left open on azure, and how they end (issue 12, fifth azure trial): a CA breach left
//! open by another client's certificate must still finish after later runs replaced what it
//! issued (F-STUCK-RUN); a run stopped by bad input before it changed anything leaves nothing
//! open (F-EXIT2-OPEN-RUN); the take-back of another client's certificate works however often
//! the enrollment was breached before (F-REMEDY-NOOP).

use crate::azure_foreign::{FLEET, current_thumbprint, device, foreign_into, slot_thumbprint};
use crate::azure_verbs::{TOKEN, breach_args, fleet_ok, issued_fleet, over_the_air, run_fleet, start_serve};
use crate::conformance::azure::{run_plan, sas_key};
use crate::util::TestEnv;

/// The trial's run c4: a CA breach left open by a foreign certificate in one enrollment, then a
/// device breach of one of the devices it replaced (which disables the version the open run
/// issued it), then the take-back of the enrollment. The rerun of the CA breach finishes (the
/// device breached since keeps its newer certificate, and nothing disabled is delivered), and
/// `check` is clean.
#[test]
fn an_open_ca_breach_finishes_after_a_device_breach_superseded_what_it_issued() {
    let env = TestEnv::new();
    let serve = issued_fleet(&env, FLEET);
    let run = |args: &[&str]| run_fleet(&env, &serve, "azure", args);
    over_the_air(&env, &serve, FLEET);
    foreign_into(&env, &serve, "gw-2");

    let breach = breach_args("ca:factory", "c4");
    let r = run(&breach);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let first = r.json();
    assert_eq!(device(&first, "gw-2")["outcome"], "foreign", "{first}");
    let by_ca = device(&first, "gw-1")["new_thumbprint"]
        .as_str()
        .unwrap()
        .to_string();

    // One of the devices the CA breach replaced is reported compromised on its own.
    let r = run(&["roll-primary", "--breach", "device:gw-1", "--yes", "-o", "json"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let by_device = device(&r.json(), "gw-1")["new_thumbprint"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(by_device, by_ca);
    // The enrollment is taken back.
    let r = run(&["roll-primary", "--breach", "enrollment:gw-2", "--yes"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);

    // The rerun the check names finishes the CA breach.
    let r = run(&["check"]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("--incident c4 ca:factory --yes` resumes it"),
        "{}",
        r.stdout
    );
    let r = fleet_ok(&env, &serve, &breach);
    let rerun = r.json();
    let gw1 = device(&rerun, "gw-1");
    assert_eq!(gw1["outcome"], "already-replaced", "{rerun}");
    assert!(
        gw1["steps"].to_string().contains("a later run replaced it"),
        "{gw1}"
    );
    assert!(gw1["new_thumbprint"].is_null(), "{gw1}");
    for step in rerun["steps"].as_array().unwrap() {
        assert_ne!(step["state"], "planned", "{step}");
    }

    // gw-1 keeps the device breach's certificate, in DPS and in the status.
    assert_eq!(
        slot_thumbprint(&env, &serve, "gw-1", "primary").as_deref(),
        Some(by_device.as_str())
    );
    assert_eq!(slot_thumbprint(&env, &serve, "gw-1", "secondary"), None);
    let r = run(&["status", "-o", "json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(current_thumbprint(&r.json(), "gw-1"), by_device);
    fleet_ok(&env, &serve, &["check"]);
    // Done for good: the same command again has nothing to resume.
    let r = fleet_ok(&env, &serve, &breach);
    assert_eq!(r.json()["resumed"], false, "{}", r.stdout);
}

/// A breach stopped at its first step by a credential the hub refuses (exit 2: nothing
/// changed) leaves no run open: `check` stays clean and nothing waits to be resumed.
#[test]
fn a_breach_refused_by_the_hub_before_any_change_leaves_no_open_run() {
    let env = TestEnv::new();
    let serve = issued_fleet(&env, FLEET);
    over_the_air(&env, &serve, FLEET);
    let before = run_fleet(&env, &serve, "azure", &["status", "-o", "json"]).json();

    // A key that is valid base64 but not the hub's.
    let dps_key = sas_key(&serve, "certroll-dps").1;
    let vars = [
        ("CERTROLL_AZ_TOKEN", TOKEN),
        ("CERTROLL_AZ_DPS_KEY", dps_key.as_str()),
        ("CERTROLL_AZ_HUB_KEY", "QUJDRA=="),
    ];
    let args = ["roll-primary", "--breach", "device:gw-1", "--yes", "-o", "json"];
    let r = run_plan(&env, "azure", &vars, &args);
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("401") || r.stderr.contains("401"),
        "{}{}",
        r.stdout,
        r.stderr
    );

    let r = run_fleet(&env, &serve, "azure", &["check"]);
    assert_eq!(r.code, 0, "no open run: {}\n{}", r.stdout, r.stderr);
    let after = run_fleet(&env, &serve, "azure", &["status", "-o", "json"]).json();
    assert_eq!(
        current_thumbprint(&after, "gw-1"),
        current_thumbprint(&before, "gw-1")
    );
    // With the right key the breach runs afresh (not as a resumed run).
    let r = fleet_ok(&env, &serve, &args);
    assert_eq!(r.json()["resumed"], false, "{}", r.stdout);
}

/// Another client's certificate in an enrollment that an earlier breach already took back
/// once: the remedy `check` names takes it back again (a foreign slot is not a re-breach), and
/// the remedy text has no run of spaces.
#[test]
fn a_second_foreign_certificate_is_taken_back_by_the_remedy_check_names() {
    let env = TestEnv::new();
    let serve = issued_fleet(&env, FLEET);
    let run = |args: &[&str]| run_fleet(&env, &serve, "azure", args);
    over_the_air(&env, &serve, FLEET);
    let take_back = [
        "roll-primary",
        "--breach",
        "enrollment:gw-3",
        "--yes",
        "-o",
        "json",
    ];
    for round in 0..2 {
        let foreign = foreign_into(&env, &serve, "gw-3");
        let r = run(&["check", "-o", "json"]);
        assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
        let reason = r.json()["problems"][0]["reason"].as_str().unwrap().to_string();
        assert!(
            reason.contains("roll-primary --breach enrollment:gw-3"),
            "{reason}"
        );
        assert!(!reason.contains("  "), "a run of spaces: {reason:?}");
        let r = run(&take_back);
        assert_eq!(r.code, 0, "round {round}: {}\n{}", r.stdout, r.stderr);
        let gw3 = device(&r.json(), "gw-3").clone();
        assert_eq!(gw3["outcome"], "replaced", "round {round}: {gw3}");
        let now = slot_thumbprint(&env, &serve, "gw-3", "primary").unwrap();
        assert_ne!(now, foreign, "round {round}");
        assert_eq!(Some(now.as_str()), gw3["new_thumbprint"].as_str());
        let r = run(&["check"]);
        assert_eq!(r.code, 0, "round {round}: {}\n{}", r.stdout, r.stderr);
    }
}

/// `issue` with `delivery = "none"`: the devices wait for the operator, which is not a
/// rejection (exit 0, `rejected` empty, as a roll with `none`), on the first run and on a
/// rerun; the warning that says what to do is one line, not one per enrollment; the rerun has
/// nothing to do, as on local.
#[test]
fn issue_with_delivery_none_rejects_nothing_and_warns_once() {
    let env = TestEnv::new();
    let serve = start_serve(&env, FLEET);
    crate::azure_verbs::fleet_plans_with(&env, &serve, FLEET, "delivery = \"none\"\n");
    for attempt in ["first", "rerun"] {
        let r = run_fleet(&env, &serve, "azure", &["issue", "-o", "json"]);
        assert_eq!(r.code, 0, "{attempt}: {}\n{}", r.stdout, r.stderr);
        assert_eq!(
            r.json()["rejected"],
            serde_json::json!([]),
            "{attempt}: {}",
            r.stdout
        );
        let warned = r
            .stderr
            .lines()
            .filter(|l| l.contains("not delivered: delivery = \"none\""))
            .count();
        assert!(warned <= 1, "{attempt}: {}", r.stderr);
        if attempt == "first" {
            assert_eq!(warned, 1, "{}", r.stderr);
        } else {
            // Waiting for the devices to register is the operator's business (`check` warns of
            // each): the rerun of finished work has no step left (trial az6: it waited again).
            assert_eq!(r.json()["steps"], serde_json::json!([]), "{}", r.stdout);
        }
    }
    // The same words as the local backend's rerun.
    for which in ["local", "local", "azure"] {
        let r = run_fleet(&env, &serve, which, &["issue"]);
        assert_eq!(r.code, 0, "{which}: {}\n{}", r.stdout, r.stderr);
    }
    for which in ["local", "azure"] {
        let r = run_fleet(&env, &serve, which, &["issue"]);
        assert!(r.stdout.starts_with("Nothing to do"), "{which}: {}", r.stdout);
    }
    let r = run_fleet(&env, &serve, "azure", &["status", "-o", "json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for id in ["gw-1", "gw-2", "gw-3", "gw-4"] {
        assert!(
            device(&r.json(), id)["pending"]["note"]
                .as_str()
                .is_some_and(|n| n.contains("leaves it to the operator")),
            "{id}: {}",
            r.stdout
        );
    }
}
