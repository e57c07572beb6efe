//! What the azure backend asks of the services, counted from serve's access log (issue 12 item
//! 6, trial az1 F-PERF): the devices of an enrollment group cost DPS requests per page, not per
//! device; a roll with nothing left to do reads and writes nothing it need not; a device's own
//! breach writes its hub identity once.

use crate::azure_verbs::{fleet_plans_hook, run_fleet, start_serve};
use crate::azure_verbs2::DIRECT;
use crate::conformance::azure::DPS_HOST;
use crate::util::TestEnv;

/// A root, an intermediate that signs for a group of `n` devices, one individual enrollment
/// signed by the root, all on hub `conf-hub`.
fn group_of(n: usize) -> String {
    format!(
        "[policies.device]\nkey = {{ type = \"EC\", curve = \"P-256\" }}\nvalidity_days = 365\n\
         [policies.ca]\nkey = {{ type = \"EC\", curve = \"P-256\" }}\nvalidity_days = 3650\n\
         key_usage = [\"keyCertSign\", \"cRLSign\", \"digitalSignature\"]\n\
         [ca.root]\nsubject = \"CN=Root\"\npolicy = \"ca\"\n\
         [ca.factory]\nsubject = \"CN=Factory\"\nissuer = \"root\"\npath_len = 0\npolicy = \"ca\"\n\
         [groups.meters]\nsigning_ca = \"factory\"\nhub = \"conf-hub\"\nreprovision = \"migrate\"\n\
         device_policy = \"device\"\ndevices = {{ prefix = \"m-\", count = {n} }}\n\
         [enrollments.gw-1]\nissuer = \"root\"\npolicy = \"device\"\nhub = \"conf-hub\"\n"
    )
}

/// serve's access lines so far (one per request; a line that is not one is skipped).
fn access_lines(env: &TestEnv) -> Vec<String> {
    std::fs::read_to_string(env.path("serve.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("certroll::serve::access"))
        .map(str::to_string)
        .collect()
}

/// The access lines serve wrote while `run` ran.
fn during(env: &TestEnv, run: impl FnOnce()) -> Vec<String> {
    let before = access_lines(env).len();
    run();
    // serve writes each line as the answer goes out; the client has its answers.
    access_lines(env).split_off(before)
}

/// `METHOD host/path` of an access line.
fn request_of(line: &str) -> &str {
    let rest = line.split("access: ").nth(1).unwrap_or_default();
    let mut parts = rest.splitn(3, ' ');
    let method_len = parts.next().map_or(0, str::len);
    let target_len = parts.next().map_or(0, str::len);
    &rest[..(method_len + 1 + target_len).min(rest.len())]
}

/// Whether a request changes something certroll manages: a PUT, PATCH or DELETE, or a POST
/// that is not a query or a signature. A device's own registration (serve's global DPS
/// endpoint, which the simulated devices call) is not certroll's.
fn is_write(line: &str) -> bool {
    let request = request_of(line);
    if request.contains("global.azure-devices-provisioning.net") {
        return false;
    }
    let (method, target) = request.split_once(' ').unwrap_or_default();
    match method {
        "PUT" | "PATCH" | "DELETE" => true,
        "POST" => !(target.ends_with("/query") || target.ends_with("/sign") || target.contains("/methods")),
        _ => false,
    }
}

fn dps(lines: &[String]) -> Vec<&String> {
    lines
        .iter()
        .filter(|l| request_of(l).contains(DPS_HOST))
        .collect()
}

/// `issue` of a group of 30 devices, then a finished CA roll run again: DPS is read by query
/// pages, not once per device (trial az1: about 8 DPS requests per group device, among them a
/// GET of an individual enrollment that does not exist), and the rerun writes nothing.
#[test]
fn a_group_s_devices_cost_dps_requests_per_page_not_per_device() {
    const N: usize = 30;
    let env = TestEnv::new();
    let fleet = group_of(N);
    let serve = start_serve(&env, &fleet);
    fleet_plans_hook(&env, &serve, &fleet);
    let lines = during(&env, || {
        let r = run_fleet(&env, &serve, "azure", &["issue", "-o", "json"]);
        assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
        assert!(
            r.json()["rejected"].as_array().is_some_and(Vec::is_empty),
            "{}",
            r.stdout
        );
    });
    let dps_issue = dps(&lines);
    let per_device_gets = dps_issue
        .iter()
        .filter(|l| request_of(l).starts_with("GET ") && request_of(l).contains("/m-"))
        .count();
    eprintln!(
        "issue of {N} group devices: {} DPS requests, {per_device_gets} of them GETs of one group device",
        dps_issue.len()
    );
    assert_eq!(
        per_device_gets,
        0,
        "a group device's enrollment or registration was read on its own:\n{}",
        dps_issue
            .iter()
            .map(|l| request_of(l))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        dps_issue.len() < N,
        "{} DPS requests for {N} devices",
        dps_issue.len()
    );

    // Everything issued and registered: the status every device shows is `assigned`.
    let status = run_fleet(&env, &serve, "azure", &["status", "-o", "json"]).json();
    let devices = status["devices"].as_array().cloned().unwrap_or_default();
    assert_eq!(devices.len(), N + 1, "{status}");

    // A rerun of issue, with nothing to do, writes nothing.
    crate::azure_verbs::fleet_plans_with(&env, &serve, &fleet, DIRECT);
    let lines = during(&env, || {
        let r = run_fleet(&env, &serve, "azure", &["issue", "-o", "json"]);
        assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    });
    let writes: Vec<&str> = lines
        .iter()
        .filter(|l| is_write(l))
        .map(|l| request_of(l))
        .collect();
    let dps_rerun = dps(&lines);
    eprintln!(
        "issue again: {} requests, {} of them DPS, {} writes",
        lines.len(),
        dps_rerun.len(),
        writes.len()
    );
    assert!(writes.is_empty(), "a rerun with nothing to do wrote: {writes:?}");
    assert!(
        dps_rerun.len() < N,
        "{} DPS requests for {N} devices",
        dps_rerun.len()
    );
}

/// `roll-primary --breach device:gw-1`: the hub ends up holding only the new thumbprint, written
/// once at most (review: the identity of a device's own breach was written twice, a bulk update
/// carrying the etag read before the device registered again, refused, then a PUT).
#[test]
fn a_device_s_own_breach_writes_its_hub_identity_once() {
    let env = TestEnv::new();
    let fleet = group_of(2);
    let serve = start_serve(&env, &fleet);
    fleet_plans_hook(&env, &serve, &fleet);
    let r = run_fleet(&env, &serve, "azure", &["issue", "-o", "json"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    crate::azure_verbs::fleet_plans_with(&env, &serve, &fleet, DIRECT);
    let lines = during(&env, || {
        let r = run_fleet(
            &env,
            &serve,
            "azure",
            &["roll-primary", "--breach", "device:gw-1", "--yes", "-o", "json"],
        );
        assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    });
    let hub_writes: Vec<&str> = lines
        .iter()
        .filter(|l| is_write(l) && request_of(l).contains(".azure-devices.net/devices"))
        .map(|l| request_of(l))
        .collect();
    eprintln!("hub writes of the breach: {hub_writes:?}");
    // Once at most: none when the device registered again with its new certificate as the
    // direct method handed it (DPS then wrote the identity as the breach wants it).
    assert!(
        hub_writes.len() <= 1,
        "the identity was written more than once: {hub_writes:?}\n{}",
        lines.join("\n")
    );
    let status = run_fleet(&env, &serve, "azure", &["status", "-o", "json"]).json();
    let gw = crate::azure_verbs2::device(&status, "gw-1");
    assert_eq!(
        gw["hub_identity"]["primary_thumbprint"], gw["installed"]["thumbprint"],
        "{gw}"
    );
    assert!(gw["hub_identity"]["secondary_thumbprint"].is_null(), "{gw}");
}

/// A CA rolled into its group's secondary slot and then into the primary, and the same
/// `roll-primary` run again: with nothing left to do it writes nothing and reads DPS in pages,
/// not per device (trial az1: 665 requests under throttling for 21 devices).
#[test]
fn a_finished_ca_roll_run_again_writes_nothing_and_reads_dps_per_page() {
    const N: usize = 30;
    let env = TestEnv::new();
    let fleet = group_of(N);
    let serve = start_serve(&env, &fleet);
    fleet_plans_hook(&env, &serve, &fleet);
    let ok = |args: &[&str]| {
        let r = run_fleet(&env, &serve, "azure", args);
        assert_eq!(r.code, 0, "{args:?}\n{}\n{}", r.stdout, r.stderr);
        r
    };
    ok(&["issue", "-o", "json"]);
    crate::azure_verbs::fleet_plans_with(&env, &serve, &fleet, DIRECT);
    ok(&["roll-secondary", "ca:factory", "-o", "json"]);
    ok(&["roll-primary", "ca:factory", "-o", "json"]);
    let mut report = serde_json::Value::Null;
    let lines = during(&env, || {
        report = ok(&["roll-primary", "ca:factory", "-o", "json"]).json();
    });
    let writes: Vec<&str> = lines
        .iter()
        .filter(|l| is_write(l))
        .map(|l| request_of(l))
        .collect();
    let dps_lines = dps(&lines);
    let per_device = dps_lines.iter().filter(|l| request_of(l).contains("/m-")).count();
    eprintln!(
        "roll-primary ca:factory again: {} requests ({} DPS, {per_device} of them of one group device), {} writes",
        lines.len(),
        dps_lines.len(),
        writes.len()
    );
    if std::env::var_os("CERTROLL_TEST_SHOW_REQUESTS").is_some() {
        eprintln!("{}", lines.join("\n"));
    }
    assert!(
        writes.is_empty(),
        "a finished roll run again wrote: {writes:?}\n{report}"
    );
    assert_eq!(
        per_device,
        0,
        "{}",
        dps_lines
            .iter()
            .map(|l| request_of(l))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // The same run against a DPS throttled at 3 requests a second (burst 3), the client at its
    // default 16.6 (trial az1: 665 requests, 185 of them answered 429, for 21 devices).
    drop(serve);
    let serve = start_serve(
        &env,
        &format!("{fleet}[serve.services.dps]\nrate_per_second = 3\nburst = 3\n"),
    );
    crate::azure_verbs::fleet_plans_with(&env, &serve, &fleet, DIRECT);
    let lines = during(&env, || {
        let r = run_fleet(
            &env,
            &serve,
            "azure",
            &["roll-primary", "ca:factory", "-o", "json"],
        );
        assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    });
    let dps_lines = dps(&lines);
    let throttled = dps_lines.iter().filter(|l| l.contains(" 429 ")).count();
    let writes = lines.iter().filter(|l| is_write(l)).count();
    eprintln!(
        "again, DPS throttled at 3/s: {} requests ({} DPS, {throttled} answered 429), {writes} writes",
        lines.len(),
        dps_lines.len()
    );
    assert_eq!(writes, 0);
    assert!(throttled <= 3, "{throttled} DPS answers were 429");
}

/// The Key Vault requests among `lines`, each as `METHOD path` with a group device's number
/// taken out (`m-7` → `m-N`), counted.
fn vault_requests(lines: &[String]) -> std::collections::BTreeMap<String, usize> {
    let mut out = std::collections::BTreeMap::new();
    for l in lines {
        let request = request_of(l);
        if !request.contains(".vault.azure.net") {
            continue;
        }
        let shape: String = request
            .split('/')
            .map(|part| {
                let base = part.split('?').next().unwrap_or(part);
                match base.strip_prefix("dev-m-").or_else(|| base.strip_prefix("m-")) {
                    Some(n) if n.chars().all(|c| c.is_ascii_digit()) => "m-N".to_string(),
                    _ if base.len() == 32 && base.chars().all(|c| c.is_ascii_hexdigit()) => {
                        "VERSION".to_string()
                    }
                    _ => base.to_string(),
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        *out.entry(shape).or_default() += 1;
    }
    out
}

/// A finished device roll run again and a `--due` cron run with nothing due read Key Vault once
/// per device at most: one listing of the device certificate's versions, which carries each
/// version's thumbprint, dates and the issuer certroll tagged it with (measured before: the
/// listing, then a GET of each of the device's 2 versions, 60 Key Vault requests for these 20
/// devices in each of the three runs; after: 20).
#[test]
fn a_finished_device_roll_and_a_cron_run_with_nothing_due_read_key_vault_once_per_device() {
    const N: usize = 20;
    let env = TestEnv::new();
    let fleet = group_of(N);
    let serve = start_serve(&env, &fleet);
    fleet_plans_hook(&env, &serve, &fleet);
    let ok = |args: &[&str]| {
        let r = run_fleet(&env, &serve, "azure", args);
        assert_eq!(r.code, 0, "{args:?}\n{}\n{}", r.stdout, r.stderr);
        r
    };
    ok(&["issue", "-o", "json"]);
    crate::azure_verbs::fleet_plans_with(&env, &serve, &fleet, DIRECT);
    let mut per_device = Vec::new();
    for args in [
        &["roll-secondary", "group:meters", "-o", "json"][..],
        &["roll-secondary", "group:meters", "-o", "json"],
        &["roll-primary", "group:meters", "-o", "json"],
        &["roll-primary", "group:meters", "-o", "json"],
        &["roll-secondary", "--due", "-o", "json"],
    ] {
        let lines = during(&env, || {
            ok(args);
        });
        let vault = vault_requests(&lines);
        let device: usize = vault
            .iter()
            .filter(|(k, _)| k.contains("m-N"))
            .map(|(_, n)| n)
            .sum();
        eprintln!(
            "{args:?}: {} requests, {device} Key Vault requests of a group device's certificate",
            lines.len()
        );
        for (k, n) in &vault {
            eprintln!("  {n:5} {k}");
        }
        per_device.push((args.join(" "), device));
    }
    // The first run of each roll writes; the reruns and the cron run find nothing to do.
    for (args, device) in [&per_device[1], &per_device[3], &per_device[4]] {
        assert!(
            *device <= N,
            "`{args}` with nothing to do made {device} Key Vault requests for {N} group devices: {per_device:?}"
        );
    }
}

/// `METHOD host/path` of each request among `lines` to DPS's service API or a hub, ids taken
/// out, counted.
fn service_requests(lines: &[String]) -> std::collections::BTreeMap<String, usize> {
    let mut out = std::collections::BTreeMap::new();
    for l in lines {
        let request = request_of(l).split('?').next().unwrap_or_default();
        if !(request.contains(DPS_HOST) || request.contains(".azure-devices.net")) {
            continue;
        }
        let shape: String = request
            .split('/')
            .map(|part| {
                if part.starts_with("m-") || part.starts_with("gw-") {
                    "ID"
                } else {
                    part
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        *out.entry(shape).or_default() += 1;
    }
    out
}

/// `check` of a fleet of 100 group devices and 5 individual enrollments reads DPS and the hub
/// in query pages, as the rolls do, not per enrollment, and each hub identity once (measured
/// before: 29 DPS and hub requests, a GET of each enrollment and of its registration state,
/// two hub queries per enrollment and two per page of the group's devices; after: 9); its
/// report is unchanged: everything ok, exit 0.
#[test]
fn check_reads_dps_and_the_hub_in_pages_not_per_device() {
    const N: usize = 100;
    const E: usize = 5;
    let env = TestEnv::new();
    let mut fleet = group_of(N);
    for i in 2..=E {
        fleet.push_str(&format!(
            "[enrollments.gw-{i}]\nissuer = \"root\"\npolicy = \"device\"\nhub = \"conf-hub\"\n"
        ));
    }
    let serve = start_serve(&env, &fleet);
    fleet_plans_hook(&env, &serve, &fleet);
    let r = run_fleet(&env, &serve, "azure", &["issue", "-o", "json"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let mut report = serde_json::Value::Null;
    let lines = during(&env, || {
        let r = run_fleet(&env, &serve, "azure", &["check", "-o", "json"]);
        assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
        report = r.json();
    });
    let services = service_requests(&lines);
    let total: usize = services.values().sum();
    eprintln!(
        "check of {N} group devices and {E} enrollments: {} requests, {total} of them DPS or hub",
        lines.len()
    );
    for (k, n) in &services {
        eprintln!("  {n:5} {k}");
    }
    assert_eq!(report["status"], "ok", "{report}");
    assert!(
        total <= 12,
        "{total} DPS and hub requests for {N} devices and {E} enrollments: {services:?}"
    );
}
