//! What the azure backend asks of the services, counted from serve's access log (issue 12 item
//! 6, trial az1 F-PERF): the devices of an enrollment group cost DPS requests per page, not per
//! device; a roll with nothing left to do reads and writes nothing it need not; a device's own
//! breach writes its hub identity once.

use crate::azure_verbs::{fleet_ok, fleet_plans_hook, issued_fleet, run_fleet, start_serve};
use crate::azure_verbs2::DIRECT;
use crate::conformance::azure::DPS_HOST;
use crate::util::TestEnv;

/// A root, an intermediate that signs for a group of `n` devices, one individual enrollment
/// signed by the root, all on hub `conf-hub`.
pub(crate) fn group_of(n: usize) -> String {
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

/// [`group_of`]`(n)` and individual enrollments `gw-2..=gw-E` beside its `gw-1`.
pub(crate) fn with_enrollments(n: usize, e: usize) -> String {
    let mut fleet = group_of(n);
    for i in 2..=e {
        fleet.push_str(&format!(
            "[enrollments.gw-{i}]\nissuer = \"root\"\npolicy = \"device\"\nhub = \"conf-hub\"\n"
        ));
    }
    fleet
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
pub(crate) fn during(env: &TestEnv, run: impl FnOnce()) -> Vec<String> {
    let before = access_lines(env).len();
    run();
    // serve writes each line as the answer goes out; the client has its answers.
    access_lines(env).split_off(before)
}

/// `METHOD host/path` of an access line.
pub(crate) fn request_of(line: &str) -> &str {
    let rest = line.split("access: ").nth(1).unwrap_or_default();
    let mut parts = rest.splitn(3, ' ');
    let method_len = parts.next().map_or(0, str::len);
    let target_len = parts.next().map_or(0, str::len);
    &rest[..(method_len + 1 + target_len).min(rest.len())]
}

/// The requests among `lines` whose `METHOD host/path` contains `part`.
pub(crate) fn count(lines: &[String], part: &str) -> usize {
    lines.iter().filter(|l| request_of(l).contains(part)).count()
}

/// Revoke of 3 group devices of [`group_of`] and its enrollment `gw-1` ([`REVOKED`]), confirmed, as
/// JSON.
pub(crate) const REVOKE: [&str; 10] = [
    "revoke",
    "device:m-03",
    "device:m-04",
    "device:m-05",
    "enrollment:gw-1",
    "--reason",
    "superseded",
    "--yes",
    "-o",
    "json",
];
/// The ids of [`REVOKE`]'s targets.
pub(crate) const REVOKED: [&str; 4] = ["m-03", "m-04", "m-05", "gw-1"];

/// A report of [`REVOKE`] run again: each of its targets there, no step left for any.
pub(crate) fn assert_nothing_left_to_revoke(report: &serde_json::Value) {
    assert!(
        report["targets"]
            .as_array()
            .is_some_and(|t| t.len() == REVOKED.len()
                && t.iter().all(|t| t["steps"].as_array().is_some_and(Vec::is_empty))),
        "{report}"
    );
}

/// Whether a request changes something certroll manages: a PUT, PATCH or DELETE, or a POST
/// that is not a query or a signature. A device's own registration (serve's global DPS
/// endpoint, which the simulated devices call) is not certroll's.
pub(crate) fn is_write(line: &str) -> bool {
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
    let serve = issued_fleet(&env, &fleet);
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
    let serve = issued_fleet(&env, &fleet);
    let ok = |args: &[&str]| fleet_ok(&env, &serve, args);
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
pub(crate) fn vault_requests(lines: &[String]) -> std::collections::BTreeMap<String, usize> {
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
    let serve = issued_fleet(&env, &fleet);
    let ok = |args: &[&str]| fleet_ok(&env, &serve, args);
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
        let device = group_device_requests(&vault);
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
/// report is unchanged: everything ok, exit 0. Each individual enrollment's registration state
/// is one GET more: DPS's enrollment query leaves it out (Azure/azure-iot-sdk-csharp#3478), and
/// serve, which had put it in, now leaves it out too (16 requests since, 11 + the 5 GETs).
#[test]
fn check_reads_dps_and_the_hub_in_pages_not_per_device() {
    const N: usize = 100;
    const E: usize = 5;
    let env = TestEnv::new();
    let fleet = with_enrollments(N, E);
    let serve = issued_fleet(&env, &fleet);
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
        total <= 12 + E,
        "{total} DPS and hub requests for {N} devices and {E} enrollments: {services:?}"
    );
}

/// Of the Key Vault requests `vault` ([`vault_requests`]), those of a group device's
/// certificate (`m-N`).
pub(crate) fn group_device_requests(vault: &std::collections::BTreeMap<String, usize>) -> usize {
    vault
        .iter()
        .filter(|(k, _)| k.contains("m-N"))
        .map(|(_, n)| n)
        .sum()
}

/// The Key Vault requests among `lines` that name no group device (`m-N`): the CAs' and the
/// individual enrollment's.
fn shared_vault_requests(vault: &std::collections::BTreeMap<String, usize>) -> usize {
    vault
        .iter()
        .filter(|(k, _)| !k.contains("m-N"))
        .map(|(_, n)| n)
        .sum()
}

/// `roll-primary --breach ca:factory` of a group of 20 devices reads the CAs' certificates and
/// policies once per run, not once per device, and each device's versions as often as the
/// decision needs (trial az4 F-KV-READS: ≈ 24 Key Vault requests per device for 200 devices,
/// the certificate and policy of the issuing CA and of the root read again for every device and
/// three listings of each device's versions). Its rerun, with nothing left to do, reads each
/// device's versions once at most.
#[test]
fn a_ca_breach_reads_the_ca_chain_once_and_each_device_a_few_times() {
    const N: usize = 20;
    let env = TestEnv::new();
    let fleet = group_of(N);
    let serve = issued_fleet(&env, &fleet);
    let ok = |args: &[&str]| fleet_ok(&env, &serve, args);
    crate::azure_verbs::fleet_plans_with(&env, &serve, &fleet, DIRECT);
    let breach = ["roll-primary", "--breach", "ca:factory", "--yes", "-o", "json"];
    let mut counts = Vec::new();
    for run in ["breach", "breach again"] {
        let mut report = serde_json::Value::Null;
        let lines = during(&env, || {
            report = ok(&breach).json();
        });
        let vault = vault_requests(&lines);
        let total: usize = vault.values().sum();
        let device = group_device_requests(&vault);
        eprintln!(
            "{run} of ca:factory ({N} devices): {total} Key Vault requests, {device} of a group device's certificate"
        );
        for (k, n) in &vault {
            eprintln!("  {n:5} {k}");
        }
        if std::env::var_os("CERTROLL_TEST_SHOW_REQUESTS").is_some() {
            eprintln!("{}", lines.join("\n"));
        }
        counts.push((run, total, device, shared_vault_requests(&vault), vault));
        if run == "breach" {
            let replaced = report["devices"]
                .as_array()
                .map_or(0, |d| d.iter().filter(|d| d["action"] != "unchanged").count());
            assert!(replaced >= N, "{report}");
        }
    }
    let (_, total, _, shared, vault) = &counts[0];
    // Six per device since the breach disables each device's old version (a PATCH) and writes
    // each hub cut itself, held for the deliveries once a listing found the certificate the
    // device holds (session 15): 147 for 20 devices, 107 before.
    assert!(
        *total <= 6 * N + 40,
        "the breach made {total} Key Vault requests for {N} devices: {vault:?}"
    );
    assert!(
        *shared <= 40,
        "the breach made {shared} Key Vault requests that are no group device's: {vault:?}"
    );
    let (_, total, device, _, vault) = &counts[1];
    assert!(
        *device <= N && *total <= N + 20,
        "the breach run again made {total} Key Vault requests, {device} of a group device's certificate: {vault:?}"
    );
}

/// The Key Vault requests among `lines` that name a group device's certificate, by device
/// number.
fn vault_devices(lines: &[String]) -> std::collections::BTreeSet<String> {
    lines
        .iter()
        .map(|l| request_of(l))
        .filter(|r| r.contains(".vault.azure.net"))
        .filter_map(|r| {
            r.split('/')
                .find_map(|p| p.split('?').next().and_then(|p| p.strip_prefix("dev-")))
                .map(str::to_string)
        })
        .collect()
}

/// A `revoke` of 4 of 20 group devices run again, with nothing left to do, reads the vault
/// certificates of its targets only (trial az4: a no-op rerun of a revoke of 16 targets read
/// all 200 devices' certificates), and a no-op `issue` reads each device's certificate once at
/// most.
#[test]
fn no_op_reruns_of_revoke_and_issue_read_only_what_they_need() {
    const N: usize = 20;
    let env = TestEnv::new();
    let fleet = group_of(N);
    let serve = issued_fleet(&env, &fleet);
    let ok = |args: &[&str]| fleet_ok(&env, &serve, args);
    ok(&REVOKE);
    let mut report = serde_json::Value::Null;
    let lines = during(&env, || {
        report = ok(&REVOKE).json();
    });
    let vault = vault_requests(&lines);
    let devices = vault_devices(&lines);
    eprintln!(
        "revoke of 4 targets again: {} requests, Key Vault certificates of devices {devices:?}",
        lines.len()
    );
    for (k, n) in &vault {
        eprintln!("  {n:5} {k}");
    }
    let targets = REVOKED;
    assert!(
        devices.iter().all(|d| targets.contains(&d.as_str())),
        "a rerun of revoke read other devices' certificates: {devices:?}\n{vault:?}"
    );
    // The step reads again none of what its preview read (measured before: 80 Key Vault
    // requests of these 4 certificates, ≈ 20 a target; after: 52).
    let of_targets: usize = vault
        .iter()
        .filter(|(k, _)| k.contains("m-N") || k.contains("dev-gw-1"))
        .map(|(_, n)| n)
        .sum();
    assert!(
        of_targets <= 14 * targets.len(),
        "a rerun of revoke of {} targets made {of_targets} Key Vault requests of their certificates: {vault:?}",
        targets.len()
    );
    assert_nothing_left_to_revoke(&report);
    let lines = during(&env, || {
        ok(&["issue", "-o", "json"]);
    });
    let vault = vault_requests(&lines);
    // The revoked devices' certificates are read to see they are revoked; every other device's
    // once at most.
    let others: Vec<&str> = lines
        .iter()
        .map(|l| request_of(l))
        .filter(|r| r.contains(".vault.azure.net/certificates/dev-m-"))
        .filter(|r| !targets.iter().any(|t| r.contains(&format!("/dev-{t}/"))))
        .collect();
    eprintln!(
        "issue again: {} requests, {} Key Vault requests of a group device's certificate that was not revoked",
        lines.len(),
        others.len()
    );
    for (k, n) in &vault {
        eprintln!("  {n:5} {k}");
    }
    assert!(
        others.len() <= N - 3,
        "a no-op issue made {} Key Vault requests for {} group devices: {vault:?}",
        others.len(),
        N - 3
    );
}

/// A roll whose devices come in several small groups, read after DPS's enrollment scan has
/// finished, asks DPS nothing per group device: the finished scan already says they have no
/// individual enrollment (trial az14 F1: `roll-primary ca:root` made 29 GETs of one
/// enrollment each, 24 of them 404s, after a query that had answered every enrollment; each
/// counts against DPS's 1,000 operations a minute).
#[test]
fn a_roll_of_several_small_groups_reads_no_group_device_enrollment_on_its_own() {
    const N: usize = 6;
    let env = TestEnv::new();
    let fleet = format!(
        "{}[ca.plant]\nsubject = \"CN=Plant\"\nissuer = \"root\"\npath_len = 0\npolicy = \"ca\"\n\
         [groups.valves]\nsigning_ca = \"plant\"\nhub = \"conf-hub\"\nreprovision = \"migrate\"\n\
         device_policy = \"device\"\ndevices = {{ prefix = \"v-\", count = {N} }}\n",
        group_of(N)
    );
    let serve = issued_fleet(&env, &fleet);
    crate::azure_verbs::fleet_plans_with(&env, &serve, &fleet, DIRECT);
    let lines = during(&env, || {
        fleet_ok(&env, &serve, &["roll-secondary", "ca:root", "-o", "json"]);
    });
    let dps_lines = dps(&lines);
    let per_device: Vec<&str> = dps_lines
        .iter()
        .map(|l| request_of(l))
        .filter(|r| r.starts_with("GET ") && (r.contains("/enrollments/m-") || r.contains("/enrollments/v-")))
        .collect();
    eprintln!(
        "roll-secondary ca:root over 2 groups of {N}: {} DPS requests, {} GETs of one group device's enrollment",
        dps_lines.len(),
        per_device.len()
    );
    assert!(per_device.is_empty(), "{}", per_device.join("\n"));
}

/// A roll whose deliveries go through a hook (a PFX with the device's chain, read in the
/// delivery pool) reads each CA's policy at most four times: where it plans, before and after
/// its import, and once for all the deliveries. Before, each of the pool's clients read the
/// root's version and policy for itself: 11 policy reads of `ca-root` with 5 enrollments under
/// the root (trial az15 N5: 8 of them within 0.2 s).
#[test]
fn a_roll_s_hook_deliveries_read_each_ca_version_of_their_chains_once() {
    let env = TestEnv::new();
    let fleet = with_enrollments(6, 5);
    let serve = start_serve(&env, &fleet);
    fleet_plans_hook(&env, &serve, &fleet);
    fleet_ok(&env, &serve, &["issue", "-o", "json"]);
    let mut report = serde_json::Value::Null;
    let lines = during(&env, || {
        report = fleet_ok(&env, &serve, &["roll-secondary", "ca:root", "-o", "json"]).json();
    });
    let policy_reads = |ca: &str| {
        lines
            .iter()
            .filter(|l| request_of(l) == format!("GET certroll.vault.azure.net/certificates/{ca}/policy"))
            .count()
    };
    let (root, factory) = (policy_reads("ca-root"), policy_reads("ca-factory"));
    eprintln!("roll-secondary ca:root, hook delivery: policy reads ca-root {root}, ca-factory {factory}");
    let rolled = report["devices"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| d["outcome"] == "rolled")
        .count();
    assert_eq!(rolled, 11, "{report}");
    assert_eq!(
        report["deliveries_owed"], 0,
        "every hook delivery went out: {report}"
    );
    assert!(root <= 4, "ca-root's policy read {root} times");
    assert!(factory <= 4, "ca-factory's policy read {factory} times");
}
