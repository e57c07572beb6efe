//! What `check` and `status` say on azure when another client of DPS and IoT Hub cut a device
//! off (the fourth azure trial's F-CHECK-BLIND: `check` said OK and `status` only `pending`
//! while a device's hub identity held another client's thumbprints and an enrollment certroll
//! had not revoked was disabled). The other client is the official Node service SDKs
//! (tests/sdk/node/other_client.js) against `certroll serve`.

use crate::azure_verbs::run_fleet;
use crate::azure_verbs2::{device, groups_through_the_hook};
use crate::conformance::azure::Serve;
use crate::util::{TestEnv, problem};
use std::path::Path;
use std::process::Command;

/// The owner policy's connection string serve printed for `service`.
fn owner_connection_string(serve: &Serve, service: &str) -> String {
    serve.start["connection_strings"][service]
        .as_object()
        .and_then(|p| p.iter().find(|(name, _)| name.contains("owner")))
        .and_then(|(_, cs)| cs.as_str())
        .unwrap_or_else(|| panic!("no owner connection string for {service}: {}", serve.start))
        .to_string()
}

/// Runs tests/sdk/node/other_client.js with `vars`; returns what it printed.
fn other_client(env: &TestEnv, serve: &Serve, vars: &[(&str, String)]) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/node/other_client.js");
    let out = Command::new("node")
        .arg(script)
        .current_dir(env.dir.path())
        .env("NODE_PATH", crate::serve_dps_hub::node_modules())
        .env("CERTROLL_SERVE_ADDR", format!("127.0.0.1:{}", serve.port()))
        .env("CERTROLL_SERVE_CA", env.path("ca.pem"))
        .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap_or_else(|e| panic!("the Node SDK tests need node (20): {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "other_client.js failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("no JSON ({e}): {stdout}"))
}

/// Another client replaces group device `s-1`'s hub thumbprints and disables enrollment `gw-1`:
/// `check` exits 2 naming both (the hub's thumbprints and certroll's, the disabled enrollment),
/// `status` says so in `cannot_connect` and in its text instead of `pending`; `s-2`, untouched,
/// stays fine. Once certroll itself revokes `gw-1`, it is counted revoked, not paged for.
#[test]
fn azure_check_and_status_name_devices_another_client_cut_off() {
    let env = TestEnv::new();
    let serve = groups_through_the_hook(&env);
    let r = run_fleet(&env, &serve, "azure", &["issue"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = run_fleet(&env, &serve, "azure", &["check", "-o", "json"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let status = run_fleet(&env, &serve, "azure", &["status", "-o", "json"]).json();
    let s1 = device(&status, "s-1")["installed"]["thumbprint"]
        .as_str()
        .unwrap_or_else(|| panic!("s-1 presented its certificate: {status}"))
        .to_string();
    assert!(device(&status, "s-1")["cannot_connect"].is_null(), "{status}");
    let leaf = env.path("gw-1.pem");
    run_fleet(
        &env,
        &serve,
        "azure",
        &["export", "device:gw-1", "--out", leaf.to_str().unwrap()],
    )
    .ok();

    let (tp1, tp2) = ("F".repeat(40), "E".repeat(40));
    let out = other_client(
        &env,
        &serve,
        &[
            (
                "HUB_CONNECTION_STRING",
                owner_connection_string(&serve, "conf-hub"),
            ),
            (
                "DPS_CONNECTION_STRING",
                owner_connection_string(&serve, "certroll-dps"),
            ),
            ("THUMBPRINT_DEVICE", "s-1".into()),
            ("TP1", tp1.clone()),
            ("TP2", tp2.clone()),
            ("DISABLE_ENROLLMENT", "gw-1".into()),
            ("LEAF_PEM", leaf.display().to_string()),
        ],
    );
    assert_eq!(
        out["identity"]["primary"].as_str().unwrap().to_uppercase(),
        tp1,
        "{out}"
    );
    assert_eq!(out["enrollment"]["provisioningStatus"], "disabled", "{out}");

    let r = run_fleet(&env, &serve, "azure", &["check", "-o", "json"]);
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    let report = r.json();
    let p = problem(&report, "device:s-1");
    assert_eq!(p["level"], "critical", "{p}");
    let reason = p["reason"].as_str().unwrap().to_uppercase();
    for words in [&tp1, &tp2, &s1] {
        assert!(reason.contains(words.as_str()), "{words} not in {reason}");
    }
    assert!(
        reason.contains("IDENTITY IN HUB `CONF-HUB`") && reason.contains("REFUSES ITS CONNECTIONS"),
        "{reason}"
    );
    // The way back named is one that can work: no direct method reaches a refused device, so
    // not `reprovision` (fifth azure trial, F-REMEDY-REPROVISION).
    assert!(
        !reason.contains("`CERTROLL REPROVISION DEVICE:S-1`")
            && reason.contains("`CERTROLL ROLL-PRIMARY --BREACH DEVICE:S-1 --YES`"),
        "{reason}"
    );
    let p = problem(&report, "device:gw-1");
    assert_eq!(p["level"], "critical", "{p}");
    let reason = p["reason"].as_str().unwrap();
    assert!(
        reason.contains("individual enrollment `gw-1` is disabled, but certroll did not revoke it")
            && reason.contains("`certroll revoke device:gw-1`"),
        "{reason}"
    );
    assert_eq!(report["counts"]["revoked"], 0, "{report}");
    assert!(
        !report["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["target"] == "device:s-2"),
        "{report}"
    );

    let status = run_fleet(&env, &serve, "azure", &["status", "-o", "json"]).json();
    let said = device(&status, "s-1")["cannot_connect"]
        .as_str()
        .unwrap_or_default()
        .to_uppercase();
    assert!(said.contains(&tp1) && said.contains(&s1), "{status}");
    let said = device(&status, "gw-1")["cannot_connect"]
        .as_str()
        .unwrap_or_default();
    assert!(
        said.contains("is disabled, but certroll did not revoke it"),
        "{status}"
    );
    assert!(device(&status, "s-2")["cannot_connect"].is_null(), "{status}");
    let text = run_fleet(&env, &serve, "azure", &["status"]);
    assert_eq!(text.code, 0, "{}", text.stderr);
    assert_eq!(
        text.stdout.matches("    cannot connect: ").count(),
        2,
        "{}",
        text.stdout
    );

    // certroll's own revoke of the enrollment: revoked on purpose, no longer paged for.
    let r = run_fleet(
        &env,
        &serve,
        "azure",
        &["revoke", "device:gw-1", "--reason", "superseded", "--yes"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = run_fleet(&env, &serve, "azure", &["check", "-o", "json"]);
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    let report = r.json();
    assert_eq!(report["counts"]["revoked"], 1, "{report}");
    assert!(
        !report["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["target"] == "device:gw-1"),
        "{report}"
    );
    problem(&report, "device:s-1");

    // Delivered by direct method, a breach roll of `s-1` cannot reach it (the hub refuses the
    // simulated device): the failure names the direct method and IoT Hub's answer, not DPS,
    // which refused nothing (fourth azure trial, wording). The breach stands (the leaked
    // certificate is refused) and its replacement is owed: the run exits 1 for the rerun.
    crate::azure_verbs::fleet_plans_with(
        &env,
        &serve,
        crate::azure_verbs2::GROUPS,
        crate::azure_verbs2::DIRECT,
    );
    let r = run_fleet(
        &env,
        &serve,
        "azure",
        &["roll-primary", "--breach", "device:s-1", "--yes"],
    );
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    let owed = r
        .stdout
        .lines()
        .find(|l| l.starts_with("  not delivered: "))
        .unwrap_or_default();
    assert!(
        r.stdout.contains("device:s-1: replaced into the primary slot")
            && owed.contains("direct method `")
            && owed.contains("did not reach the device: IoT Hub")
            && !r.stdout.contains("refused by the enrollment service")
            && !r.stderr.contains("error:"),
        "{}{}",
        r.stdout,
        r.stderr
    );
}

/// A signing CA put in the vault's recycle bin (`vault delete ca-factory --force`, trials az9
/// G3 and az10): both its versions in the group's signing slots (the new one in the primary,
/// the one the roll moved to the secondary, which Key Vault no longer shows) are still
/// certroll's. On both backends `vault delete` and `vault recover` count its 2 versions;
/// `check` names the deleted CA and `vault recover`, and nothing else of the group: no
/// "another client's" certificate, no breach advice; `status` lists no foreign certificate in
/// the group, and once recovered `check` is OK again.
#[test]
fn a_soft_deleted_signing_ca_is_not_another_clients_certificate_in_its_group() {
    let env = TestEnv::new();
    let serve = groups_through_the_hook(&env);
    for which in ["local", "azure"] {
        let r = run_fleet(&env, &serve, which, &["issue"]);
        assert_eq!(r.code, 0, "{which}: {}", r.stderr);
        let r = run_fleet(&env, &serve, which, &["roll-primary", "group:sensors", "--yes"]);
        assert_eq!(r.code, 0, "{which}: {}{}", r.stdout, r.stderr);
        let r = run_fleet(
            &env,
            &serve,
            which,
            &["vault", "delete", "ca-factory", "--force", "-o", "json"],
        );
        assert_eq!(r.code, 0, "{which}: {}", r.stderr);
        let versions = |v: &serde_json::Value| v["versions"].as_array().map_or(0, Vec::len);
        assert_eq!(versions(&r.json()["deleted"]), 2, "{which}: {}", r.stdout);
        let r = run_fleet(&env, &serve, which, &["check", "-o", "json"]);
        assert_eq!(r.code, 2, "{which}: {}{}", r.stdout, r.stderr);
        let report = r.json();
        let ca = problem(&report, "ca:factory");
        assert!(
            ca["reason"]
                .as_str()
                .unwrap()
                .contains("`certroll vault recover ca-factory`"),
            "{which}: {ca}"
        );
        for p in report["problems"].as_array().unwrap() {
            let reason = p["reason"].as_str().unwrap();
            assert!(
                p["target"] != "group:sensors"
                    && !reason.contains("another client")
                    && !reason.contains("--breach"),
                "{which}: {p}"
            );
        }
        let status = run_fleet(&env, &serve, which, &["status", "-o", "json"]).json();
        let group = status["groups"]
            .as_array()
            .and_then(|g| g.iter().find(|g| g["name"] == "sensors"))
            .unwrap_or_else(|| panic!("{which}: {status}"));
        assert!(
            group["foreign"].as_array().is_none_or(Vec::is_empty),
            "{which}: {group}"
        );
        let r = run_fleet(
            &env,
            &serve,
            which,
            &["vault", "recover", "ca-factory", "-o", "json"],
        );
        assert_eq!(r.code, 0, "{which}: {}", r.stderr);
        assert_eq!(versions(&r.json()["recovered"]), 2, "{which}: {}", r.stdout);
        let r = run_fleet(&env, &serve, which, &["check", "-o", "json"]);
        assert_eq!(r.code, 0, "{which}: {}{}", r.stdout, r.stderr);
    }
}

/// Trial az12 F4: between a device breach cut off part-way (here right after its Key Vault
/// writes) and its rerun, `check` read the compromised certificate, which the run had disabled,
/// as a disabled breach replacement: it said DPS admits it and advised enabling it again, the
/// leaked key with it. While the run is open, what the device holds and what DPS admits depend
/// on the step it stopped at; `check` and `status` now say so and name the rerun, which
/// finishes it, and never the enable.
#[test]
fn a_device_breach_cut_off_part_way_is_judged_by_its_rerun_not_as_a_disabled_replacement() {
    use crate::azure_verbs::{FLEET, breach_args, fleet_ok, fleet_plans_with, run_fleet_with, start_serve};
    let env = TestEnv::new();
    let serve = start_serve(&env, FLEET);
    fleet_plans_with(&env, &serve, FLEET, "delivery = \"none\"\n");
    fleet_ok(&env, &serve, &["issue"]);
    let a = breach_args("device:gw-1", "INC-A");
    let killed = run_fleet_with(
        &env,
        &serve,
        "azure",
        &[("CERTROLL_FAULT_AFTER_VAULT_WRITES", "1")],
        &a,
    );
    assert!(
        killed.code != 0 && killed.code != 1,
        "killed: {}\n{}",
        killed.stdout,
        killed.stderr
    );

    let c = run_fleet(&env, &serve, "azure", &["check", "-o", "json"]);
    assert_eq!(c.code, 2, "{}\n{}", c.stdout, c.stderr);
    let report = c.json();
    let said: Vec<&str> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["target"] == "device:gw-1")
        .map(|p| p["reason"].as_str().unwrap())
        .collect();
    assert_eq!(said.len(), 1, "{said:#?}");
    assert!(
        said[0].contains("cut off part-way")
            && said[0].contains("`certroll roll-primary --breach --incident INC-A device:gw-1 --yes`"),
        "{}",
        said[0]
    );
    assert!(
        !said[0].contains("--enable") && !said[0].contains("breach replacement"),
        "{}",
        said[0]
    );
    assert_eq!(problem(&report, "device:gw-1")["level"], "critical");
    let s = run_fleet(&env, &serve, "azure", &["status", "-o", "json"])
        .ok()
        .json();
    let d = device(&s, "gw-1");
    assert_eq!(d["cannot_connect"], serde_json::Value::Null, "{d}");
    assert!(
        d["breach_open"]
            .as_str()
            .is_some_and(|w| w.contains("--incident INC-A")),
        "{d}"
    );
    let text = run_fleet(&env, &serve, "azure", &["status", "device:gw-1"]).ok();
    assert!(text.stdout.contains("breach open:"), "{}", text.stdout);

    // The rerun it names finishes the breach, and both fall silent about it: what is left is
    // the replacement waiting for the operator (delivery = "none"), a warning as for gw-2.
    fleet_ok(&env, &serve, &a);
    let c = run_fleet(&env, &serve, "azure", &["check", "-o", "json"]);
    assert_eq!(c.code, 1, "{}\n{}", c.stdout, c.stderr);
    let after = problem(&c.json(), "device:gw-1");
    assert_eq!(after["level"], "warning", "{after}");
    assert!(
        after["reason"]
            .as_str()
            .unwrap()
            .contains("leaves it to the operator"),
        "{after}"
    );
    let s = run_fleet(&env, &serve, "azure", &["status", "-o", "json"])
        .ok()
        .json();
    assert_eq!(device(&s, "gw-1")["breach_open"], serde_json::Value::Null);
}

/// Another client makes gw-1's hub identity an IoT Edge device and gives it a status reason
/// (trial az11 F4: serve dropped both, so this could not be rehearsed); certroll's roll of gw-1
/// then writes new thumbprints to that identity with the etag it read, and both members
/// survive, as on IoT Hub (docs/plan.md: certroll's etag writes never overwrite fields it does
/// not manage).
#[test]
fn a_roll_keeps_the_capabilities_and_status_reason_another_client_gave_a_hub_identity() {
    use crate::conformance::azure::{HUB_HOST, sas_key};
    use serde_json::{Value, json};
    let env = TestEnv::new();
    let serve = groups_through_the_hook(&env);
    let r = run_fleet(&env, &serve, "azure", &["issue"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let (policy, key) = sas_key(&serve, "conf-hub");
    let later = time::OffsetDateTime::now_utc().unix_timestamp() + 3600;
    let token = crate::serve_dps_hub::sas_token(HUB_HOST, &key, later, &policy);
    let hub = |method: &str, if_match: Option<&str>, body: Option<&str>| -> Value {
        let mut headers = vec![format!("Authorization: {token}")];
        headers.extend(if_match.map(|e| format!("If-Match: \"{e}\"")));
        let (code, text) = crate::util::curl_json(
            &env.path("ca.pem"),
            serve.port(),
            method,
            HUB_HOST,
            "/devices/gw-1?api-version=2021-04-12",
            &headers,
            body,
        );
        assert_eq!(code, 200, "{method}: {text}");
        serde_json::from_str(&text).unwrap()
    };
    let before = hub("GET", None, None);
    let mut edited = before.clone();
    edited["capabilities"] = json!({"iotEdge": true});
    edited["statusReason"] = json!("edge gateway, rack 7");
    let written = hub("PUT", before["etag"].as_str(), Some(&edited.to_string()));
    assert_eq!(written["capabilities"]["iotEdge"], true, "{written}");
    assert_eq!(written["statusReason"], "edge gateway, rack 7", "{written}");

    let r = run_fleet(
        &env,
        &serve,
        "azure",
        &["roll-secondary", "enrollment:gw-1", "--yes", "-o", "json"],
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let after = hub("GET", None, None);
    let thumbprints = |d: &Value| d["authentication"]["x509Thumbprint"].clone();
    assert_ne!(
        thumbprints(&after),
        thumbprints(&before),
        "the roll wrote the identity: {after}"
    );
    assert_eq!(after["capabilities"], json!({"iotEdge": true}), "{after}");
    assert_eq!(after["statusReason"], "edge gateway, rack 7", "{after}");
}

/// Trial az13 N1: incident A's breach of gw-1 cut off, then incident B's finished. B replaced
/// the device and counted A's incident as handled, so gw-1 is settled: `check` had it critical
/// ("cut off part-way … may still hold the compromised certificate") though DPS assigned it.
/// Only the open run is left, a warning naming A's command.
#[test]
fn a_device_breach_cut_off_then_replaced_by_a_later_one_is_settled_in_check_and_status() {
    use crate::azure_verbs::{FLEET, start_serve};
    let env = TestEnv::new();
    let serve = start_serve(&env, FLEET);
    crate::azure_owed::a_killed_after_its_import_then_b(&env, &serve);
    let report = run_fleet(&env, &serve, "azure", &["check", "-o", "json"]).json();
    let problems = report["problems"].as_array().unwrap();
    assert!(
        !problems
            .iter()
            .any(|p| p["target"] == "device:gw-1" && p["level"] == "critical"),
        "{report:#}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p["target"].as_str().unwrap().starts_with("run:")
                && p["level"] == "warning"
                && p["reason"].as_str().unwrap().contains("--incident INC-A")),
        "{report:#}"
    );
    let s = run_fleet(&env, &serve, "azure", &["status", "-o", "json"])
        .ok()
        .json();
    assert_eq!(device(&s, "gw-1")["breach_open"], serde_json::Value::Null);
}

/// Trial az14 F5: after an `issue` killed part-way (here after its second Key Vault write: the
/// root, then gw-1's certificate), `check` said "no certificate" for gw-1, whose certificate
/// was in the vault, and named no way on. It now says the certificate is there but has not
/// reached the device, and names `certroll issue`, which finishes it; a device not reached at
/// all is "no certificate" with the same command. The rerun clears both.
#[test]
fn check_after_an_issue_cut_off_part_way_names_the_issue_that_finishes_it() {
    use crate::azure_verbs::{FLEET, fleet_ok, fleet_plans_hook, run_fleet_with, start_serve};
    let env = TestEnv::new();
    let serve = start_serve(&env, FLEET);
    fleet_plans_hook(&env, &serve, FLEET);
    let killed = run_fleet_with(
        &env,
        &serve,
        "azure",
        &[("CERTROLL_FAULT_AFTER_VAULT_WRITES", "2")],
        &["issue"],
    );
    assert!(
        killed.code != 0 && killed.code != 1 && killed.stderr.contains("fault injection"),
        "killed: {}\n{}",
        killed.stdout,
        killed.stderr
    );
    let in_vault = run_fleet(
        &env,
        &serve,
        "azure",
        &["vault", "show", "dev-gw-1", "-o", "json"],
    );
    assert_eq!(
        in_vault.code, 0,
        "the kill came after gw-1's import: {}",
        in_vault.stderr
    );
    let thumbprint = in_vault.json()["versions"][0]["cert"]["thumbprint"]
        .as_str()
        .unwrap()
        .to_string();

    let c = run_fleet(&env, &serve, "azure", &["check", "-o", "json"]);
    assert_eq!(c.code, 2, "{}\n{}", c.stdout, c.stderr);
    let report = c.json();
    let gw1 = problem(&report, "device:gw-1");
    let reason = gw1["reason"].as_str().unwrap_or_default();
    assert_eq!(gw1["level"], "critical", "{gw1}");
    assert!(
        reason.contains("is in the vault but has not reached the device")
            && reason.contains("`certroll issue device:gw-1` finishes it")
            && reason.contains(&thumbprint),
        "{reason}"
    );
    assert_eq!(
        problem(&report, "device:gw-2")["reason"],
        "no certificate: `certroll issue device:gw-2` issues it",
        "{report}"
    );
    let text = run_fleet(&env, &serve, "azure", &["check"]);
    assert!(
        text.stdout.contains("critical device:gw-1") && text.stdout.contains("`certroll issue device:gw-1`"),
        "{}",
        text.stdout
    );

    fleet_ok(&env, &serve, &["issue"]);
    let c = run_fleet(&env, &serve, "azure", &["check", "-o", "json"]);
    assert_eq!(c.code, 0, "{}\n{}", c.stdout, c.stderr);
}
