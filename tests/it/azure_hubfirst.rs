//! A roll finds each device's hub identity in the hub its enrollment names, by the hub
//! registry's query, before it asks DPS: DPS's enrollment query carries no registration state
//! (Azure/azure-iot-sdk-csharp#3478), and a GET of each device's registration costs a roll of
//! 100,000 individual enrollments 100 minutes at DPS's rate before its first write.

use crate::azure_requests::{count, during, request_of};
use crate::azure_verbs::{DEVICE_HOOK, hook_delivery, start_serve};
use crate::azure_verbs2::device;
use crate::conformance::azure::Serve;
use crate::conformance::azure::{
    DPS_HOST, azure_backend, dps_table, hub_table, run_plan, sas_key, write_plans,
};
use crate::util::TestEnv;

/// Individual enrollments in the fleet: above the 50 from which DPS's enrollments are read by
/// the query scan, whose records carry no registration state.
const N: usize = 60;
/// The device that never registers (its hook finds it booted already).
const NEVER: &str = "gw-60";
/// The device whose enrollment the plan moves to `hub-b` after it registered at `conf-hub`.
const MOVED: &str = "gw-59";

/// A root and `N` individual enrollments it signs, each on `conf-hub` except `moved_to` for
/// [`MOVED`] when given.
fn sixty(moved_to: Option<&str>) -> String {
    let mut fleet = String::from(
        "[policies.device]\nkey = { type = \"EC\", curve = \"P-256\" }\nvalidity_days = 365\n\
         [policies.ca]\nkey = { type = \"EC\", curve = \"P-256\" }\nvalidity_days = 3650\n\
         key_usage = [\"keyCertSign\", \"cRLSign\", \"digitalSignature\"]\n\
         [ca.root]\nsubject = \"CN=Root\"\npolicy = \"ca\"\n",
    );
    for i in 1..=N {
        let id = format!("gw-{i:02}");
        let hub = moved_to.filter(|_| id == MOVED).unwrap_or("conf-hub");
        fleet.push_str(&format!(
            "[enrollments.{id}]\nissuer = \"root\"\npolicy = \"device\"\nhub = \"{hub}\"\n"
        ));
    }
    fleet
}

/// The fleet plans of `fleet` against serve, delivering through the device hook, with hubs
/// `conf-hub` and `hub-b`.
fn plans(env: &TestEnv, serve: &Serve, fleet: &str) {
    let port = serve.port();
    let backend = azure_backend(serve, "state.db", "CERTROLL_AZ_TOKEN", "../ca.pem", true).replace(
        "resolve = { ",
        &format!("resolve = {{ \"hub-b.azure-devices.net\" = \"127.0.0.1:{port}\", "),
    );
    let (hub_b_policy, _) = sas_key(serve, "hub-b");
    let azure = format!(
        "{backend}{}{}{}[backend.hubs.hub-b]\nhost = \"hub-b.azure-devices.net\"\n\
         sas_policy = \"{hub_b_policy}\"\nsas_key_env = \"CERTROLL_AZ_HUB_B_KEY\"\n",
        dps_table(serve, "CERTROLL_AZ_DPS_KEY", ""),
        hook_delivery(env, serve, "device-hook.py", &[]),
        hub_table(serve, "CERTROLL_AZ_HUB_KEY"),
    );
    write_plans(env, &azure, fleet);
}

/// certroll on the azure plan with every service's key.
fn run(env: &TestEnv, serve: &Serve, args: &[&str]) -> crate::util::Run {
    let keys = [
        ("CERTROLL_AZ_TOKEN", crate::azure_verbs::TOKEN.to_string()),
        ("CERTROLL_AZ_DPS_KEY", sas_key(serve, "certroll-dps").1),
        ("CERTROLL_AZ_HUB_KEY", sas_key(serve, "conf-hub").1),
        ("CERTROLL_AZ_HUB_B_KEY", sas_key(serve, "hub-b").1),
    ];
    let vars: Vec<(&str, &str)> = keys.iter().map(|(k, v)| (*k, v.as_str())).collect();
    run_plan(env, "azure", &vars, args)
}

/// [`run`], which must succeed; its JSON.
fn ok(env: &TestEnv, serve: &Serve, args: &[&str]) -> serde_json::Value {
    let r = run(env, serve, args);
    assert_eq!(r.code, 0, "{args:?}\n{}\n{}", r.stdout, r.stderr);
    r.json()
}

/// A roll of 60 individual enrollments reads no device's registration from DPS where the
/// device's identity is in the hub its enrollment names (measured before: 60 registration
/// GETs, one per device, the enrollments read by the query scan). A device that never
/// registered still has its registration read (one GET) and is rolled as before, with no hub
/// identity; a device registered at `conf-hub` whose enrollment the plan moved to `hub-b` is
/// not in `hub-b`, so its registration is read (one GET) and its identity is updated where it
/// is, at `conf-hub`, with nothing written to `hub-b`.
#[test]
fn a_roll_finds_identities_in_the_enrollment_s_hub_without_a_registration_get_per_device() {
    let env = TestEnv::new();
    let spare = "[enrollments.spare]\nissuer = \"root\"\npolicy = \"device\"\nhub = \"hub-b\"\n";
    // serve makes a hub for each hub its plan names.
    let serve = start_serve(&env, &format!("{}{spare}", sixty(None)));
    env.write("device-hook.py", DEVICE_HOOK);
    std::fs::create_dir_all(env.path("devices")).unwrap();
    env.write(&format!("devices/{NEVER}.booted"), "");
    plans(&env, &serve, &sixty(None));
    // The issue asks each device to register; only the one that never does is left waiting.
    let issued = run(&env, &serve, &["issue", "-o", "json"]);
    let rejected: Vec<String> = issued.json()["rejected"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| r["device"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        (issued.code, rejected),
        (1, vec![NEVER.to_string()]),
        "{}\n{}",
        issued.stdout,
        issued.stderr
    );
    let status = ok(&env, &serve, &["status", "-o", "json"]);
    assert_eq!(
        device(&status, MOVED)["registration"]["status"],
        "assigned",
        "{status}"
    );
    assert!(device(&status, NEVER)["registration"].is_null(), "{status}");

    plans(&env, &serve, &sixty(Some("hub-b")));
    let mut report = serde_json::Value::Null;
    let targets: Vec<String> = (1..=N).map(|i| format!("enrollment:gw-{i:02}")).collect();
    let mut roll = vec!["roll-secondary", "-o", "json"];
    roll.extend(targets.iter().map(String::as_str));
    let lines = during(&env, || report = ok(&env, &serve, &roll));
    let gets = |id: &str| count(&lines, &format!("GET {DPS_HOST}/registrations/{id}"));
    let all = gets("gw-");
    let hub_b_writes = lines
        .iter()
        .map(|l| request_of(l))
        .filter(|r| r.contains("hub-b.azure-devices.net") && !r.starts_with("GET") && !r.contains("/query"))
        .count();
    eprintln!(
        "roll-secondary of {N} individual enrollments: {} requests, {all} registration GETs \
         ({} of {NEVER}, {} of {MOVED}), {hub_b_writes} writes to hub-b",
        lines.len(),
        gets(NEVER),
        gets(MOVED)
    );
    assert_eq!(
        gets(NEVER),
        1,
        "the never-registered device's registration was read once"
    );
    assert_eq!(gets(MOVED), 1, "the moved device's registration was read once");
    assert_eq!(
        all, 2,
        "registration GETs of devices whose identity is in their enrollment's hub"
    );
    assert_eq!(hub_b_writes, 0, "the roll wrote to hub-b, where no device is");
    let devices = report["devices"].as_array().cloned().unwrap_or_default();
    assert_eq!(devices.len(), N, "{report}");
    assert!(devices.iter().all(|d| d["outcome"] == "rolled"), "{report}");

    let status = ok(&env, &serve, &["status", "-o", "json"]);
    for i in 1..=N {
        let id = format!("gw-{i:02}");
        let d = device(&status, &id);
        if id == NEVER {
            assert!(d["registration"].is_null(), "{d}");
            assert!(d["hub_identity"].is_null(), "{d}");
            continue;
        }
        assert_eq!(d["registration"]["hub"], "conf-hub", "{d}");
        assert!(d["pending"]["cert"]["thumbprint"].is_string(), "{d}");
        assert_eq!(
            d["hub_identity"]["secondary_thumbprint"], d["pending"]["cert"]["thumbprint"],
            "the roll put {id}'s new thumbprint into its identity where it is registered: {d}"
        );
    }
}
