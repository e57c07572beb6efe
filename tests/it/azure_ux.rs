//! What an operator sees of an azure run against `certroll serve` (issue 12): the progress bar
//! moves with the remote work, `-v`/`-vv` log each remote operation and never a secret,
//! `delivery = "none"` says so once, an untrusted TLS certificate is named and not retried, and
//! the exit codes follow the README's contract.

use crate::azure_verbs::{TOKEN, fleet_ok, fleet_plans_with, run_fleet, start_serve};
use crate::conformance::azure::{DPS_HOST, Serve, refused_alike, run_plan, sas_key};
use crate::util::TestEnv;

/// One group of twelve devices under an intermediate, on hub `conf-hub`.
const TWELVE: &str = "[policies.device]\nkey = { type = \"EC\", curve = \"P-256\" }\nvalidity_days = 365\n\
     [policies.ca]\nkey = { type = \"EC\", curve = \"P-256\" }\nvalidity_days = 3650\n\
     key_usage = [\"keyCertSign\", \"cRLSign\", \"digitalSignature\"]\n\
     [ca.root]\nsubject = \"CN=Root\"\npolicy = \"ca\"\n\
     [ca.factory]\nsubject = \"CN=Factory\"\nissuer = \"root\"\npath_len = 0\npolicy = \"ca\"\n\
     [groups.meters]\nsigning_ca = \"factory\"\nhub = \"conf-hub\"\n\
     device_policy = \"device\"\ndevices = { prefix = \"m-\", count = 12 }\n";

/// Serve over [`TWELVE`] and the azure plan with `delivery = "none"`; Key Vault paced at one
/// key creation a second (burst of 10), so the twelve imports take at least two seconds.
fn twelve_on_azure(env: &TestEnv) -> Serve {
    let serve = start_serve(env, TWELVE);
    fleet_plans_with(env, &serve, TWELVE, "delivery = \"none\"\nvault_rate = 1\n");
    serve
}

/// A bearer token serve's Key Vault does not know.
const REJECTED_TOKEN: &str = "a-token-serve-does-not-know";

/// Runs certroll with `args` on the azure plan with [`REJECTED_TOKEN`] for Key Vault, and the
/// SAS keys serve's DPS and IoT Hub take.
fn with_a_rejected_token(env: &TestEnv, serve: &Serve, args: &[&str]) -> crate::util::Run {
    let (dps_key, hub_key) = (sas_key(serve, "certroll-dps").1, sas_key(serve, "conf-hub").1);
    run_plan(
        env,
        "azure",
        &[
            ("CERTROLL_AZ_TOKEN", REJECTED_TOKEN),
            ("CERTROLL_AZ_DPS_KEY", dps_key.as_str()),
            ("CERTROLL_AZ_HUB_KEY", hub_key.as_str()),
        ],
        args,
    )
}

/// Runs `certroll {args}` on the azure plan under a pseudo-terminal (util-linux `script`), as a
/// person at a terminal sees it; returns the exit code and everything drawn.
fn on_a_terminal(env: &TestEnv, serve: &Serve, args: &str) -> (i32, String) {
    let command = format!(
        "'{}' --plan azure/plan.toml {args}",
        env!("CARGO_BIN_EXE_certroll")
    );
    let out = std::process::Command::new("script")
        .current_dir(env.dir.path())
        .envs([
            ("TERM", "xterm".to_string()),
            ("CERTROLL_AZ_TOKEN", TOKEN.to_string()),
            ("CERTROLL_AZ_DPS_KEY", sas_key(serve, "certroll-dps").1),
            ("CERTROLL_AZ_HUB_KEY", sas_key(serve, "conf-hub").1),
        ])
        .env_remove("CERTROLL_NOW")
        .args(["-qfec", &command, "tty.txt"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("util-linux `script` runs (it gives the command a terminal)");
    let drawn = std::fs::read_to_string(env.path("tty.txt")).unwrap_or_default();
    (out.status.code().unwrap_or(-1), drawn)
}

/// The seconds of a drawn time left (`7s`, `2m`, `1h`), or None for `?`.
fn eta_secs(text: &str) -> Option<u64> {
    let digits: String = text.chars().take_while(char::is_ascii_digit).collect();
    let n: u64 = digits.parse().ok()?;
    match text[digits.len()..].chars().next()? {
        's' => Some(n),
        'm' => Some(n * 60),
        'h' => Some(n * 3600),
        'd' => Some(n * 86_400),
        _ => None,
    }
}

/// Third azure trial: no bar is drawn without its name (`0/0 [=====] 0/s eta 0s`), rates have
/// at most one decimal (`2.0075/s`), and the imports' time left is counted at the plan's
/// `vault_rate` of 1 a second, not at the burst the client lets through first (`eta 3s` at
/// 14/300): at `N/{total}` at least `total - N` seconds.
fn bars_are_named_with_short_rates_and_paced_times_left(drawn: &str, total: u64) {
    const NAMES: [&str; 5] = [
        "Key Vault imports",
        "devices",
        "deliveries",
        "DPS enrollments",
        "IoT Hub identities",
    ];
    let mut imports_seen = 0;
    for frame in drawn.split(['\r', '\n']) {
        let Some(bar_at) = frame.find(" [") else { continue };
        if !frame.contains("/s") {
            continue;
        }
        assert!(
            NAMES.iter().any(|n| frame.contains(n)),
            "a bar without its name: {frame:?}"
        );
        for word in frame.split_whitespace().filter(|w| w.ends_with("/s")) {
            let number = word.trim_end_matches("/s").trim_start_matches('<');
            let decimals = number.split_once('.').map_or(0, |(_, d)| d.len());
            assert!(decimals <= 1, "{word} in {frame:?}");
        }
        let head = &frame[..bar_at];
        const IMPORTS: &str = "Key Vault imports ";
        let Some(count) = head.find(IMPORTS).map(|i| &head[i + IMPORTS.len()..]) else {
            continue;
        };
        let Some(done) = count
            .strip_suffix(&format!("/{total}"))
            .and_then(|n| n.trim().parse::<u64>().ok())
        else {
            continue;
        };
        if done == total {
            continue;
        }
        let eta = frame
            .split(" eta ")
            .nth(1)
            .and_then(|t| eta_secs(t.trim_start()))
            .unwrap_or_else(|| panic!("no time left in {frame:?}"));
        assert!(eta >= total - done, "{done}/{total} with {eta}s left: {frame:?}");
        imports_seen += 1;
    }
    assert!(imports_seen > 0, "no imports bar part-way:\n{drawn}");
}

/// The positions `N` of `{what} N/{total}` the bar drew.
fn positions(drawn: &str, what: &str, total: u64) -> Vec<u64> {
    let suffix = format!("/{total}");
    drawn
        .match_indices(what)
        .filter_map(|(i, _)| {
            let rest = drawn[i + what.len()..].trim_start();
            let n = rest.split_whitespace().next()?;
            n.strip_suffix(&suffix)?.parse().ok()
        })
        .collect()
}

#[test]
fn azure_issue_and_roll_on_a_terminal_move_the_bar_as_each_certificate_is_imported() {
    let env = TestEnv::new();
    let serve = twelve_on_azure(&env);
    // Exit 0: with `delivery = "none"` no device has registered yet, which is the operator's
    // to do (they hand the certificates out), not a rejection.
    let (code, drawn) = on_a_terminal(&env, &serve, "issue");
    assert_eq!(code, 0, "{drawn}");
    assert!(drawn.contains("Done 8 step(s)"), "{drawn}");
    let seen = positions(&drawn, "Key Vault imports", 12);
    assert!(
        seen.iter().any(|n| (1..12).contains(n)),
        "the bar showed no import between the first and the last (positions {seen:?}):\n{drawn}"
    );
    // The stage bar gives the time left; the device bar, which moves only when the whole
    // chunk's remote work is done, is not drawn at a count that cannot move (second trial of
    // issue 12: `devices 0/1001 ... 0/s eta 0s` for the whole run).
    assert!(
        drawn
            .lines()
            .any(|l| l.contains("Key Vault imports") && l.contains(" eta ")),
        "{drawn}"
    );
    assert!(!drawn.contains("devices 0/12"), "{drawn}");
    bars_are_named_with_short_rates_and_paced_times_left(&drawn, 12);

    // A roll shows a bar too (it had none), moving the same way.
    let (code, drawn) = on_a_terminal(&env, &serve, "roll-secondary group:meters");
    assert_eq!(code, 0, "{drawn}");
    let seen = positions(&drawn, "Key Vault imports", 12);
    assert!(
        seen.iter().any(|n| (1..12).contains(n)),
        "the roll's bar showed no import part-way (positions {seen:?}):\n{drawn}"
    );
}

#[test]
fn azure_delivery_none_says_once_how_many_wait_for_the_operator_and_vv_logs_every_request_without_secrets() {
    let env = TestEnv::new();
    let serve = twelve_on_azure(&env);
    // Waiting for the operator is not a rejection (exit 0), and `issue` says so in one line too,
    // however many enrollments it wrote (fifth azure trial).
    let r = run_fleet(&env, &serve, "azure", &["issue"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let told: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("not delivered"))
        .collect();
    assert_eq!(told.len(), 1, "{}", r.stderr);
    assert!(told[0].contains("12 certificate(s)"), "{}", told[0]);

    let r = run_fleet(&env, &serve, "azure", &["-vv", "roll-secondary", "group:meters"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    // Each device's steps say how its certificate travels: here it waits for the operator, and
    // the command that hands it out (certroll holds no device on azure to install it on).
    assert!(
        r.stdout.contains(
            "leave the new certificate of device `m-01` for the operator to hand out \
             (delivery = \"none\": `certroll export device:m-01 --with-key`)"
        ),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("install the new certificate"), "{}", r.stdout);
    let waiting: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("not delivered"))
        .collect();
    assert_eq!(
        waiting.len(),
        1,
        "one summary line, not one per device:\n{}",
        r.stderr
    );
    assert!(
        waiting[0].contains("12 certificate(s)") && waiting[0].contains("certroll export device:"),
        "{}",
        waiting[0]
    );

    // Each remote operation at debug: method, host, path, status, attempt, elapsed.
    let imports: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.contains("POST certroll.vault.azure.net/certificates/dev-m-") && l.contains("/import"))
        .collect();
    assert_eq!(imports.len(), 12, "{}", r.stderr);
    assert!(
        imports
            .iter()
            .all(|l| l.contains("-> 200 (attempt 1, ") && l.contains(" ms)")),
        "{imports:#?}"
    );
    assert!(
        r.stderr
            .contains(&format!("PUT {}", crate::conformance::azure::DPS_HOST)),
        "the DPS group write is logged:\n{}",
        r.stderr
    );

    // Never a secret: the bearer token, either SAS key, a SAS signature.
    let (_, dps_key) = sas_key(&serve, "certroll-dps");
    let (_, hub_key) = sas_key(&serve, "conf-hub");
    for secret in [
        TOKEN,
        dps_key.as_str(),
        hub_key.as_str(),
        "sig=",
        "SharedAccessSignature sr",
    ] {
        assert!(!r.stderr.contains(secret), "`{secret}` in the -vv log");
        assert!(!r.stdout.contains(secret), "`{secret}` in the output");
    }

    // `-v` without `-vv`: no per-request lines.
    let r = run_fleet(&env, &serve, "azure", &["-v", "status"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!r.stderr.contains("(attempt 1,"), "{}", r.stderr);
}

#[test]
fn azure_an_untrusted_server_certificate_is_named_with_its_host_and_the_fix_and_not_retried() {
    let env = TestEnv::new();
    let serve = twelve_on_azure(&env);
    // The same plan without `ca_file`: serve's certificate is signed by its own CA.
    let plan = std::fs::read_to_string(env.path("azure/plan.toml")).unwrap();
    let without: String = plan
        .lines()
        .filter(|l| !l.starts_with("ca_file"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(plan, without);
    env.write("azure/plan.toml", &without);
    let r = run_fleet(&env, &serve, "azure", &["status"]);
    assert_eq!(r.code, 2, "nothing was changed: bad setup\n{}", r.stderr);
    let error = r.stderr.lines().last().unwrap_or_default();
    assert!(error.contains("is not trusted: unknown issuer"), "{}", r.stderr);
    assert!(error.contains(".azure"), "the host is named: {error}");
    assert!(error.contains("ca_file"), "the fix is named: {error}");
    // The cause is named once, without azure_core's words around it (second trial of issue 12:
    // "Other: non-transport error occurred which will not be retried: TLS: ...").
    assert!(error.contains("failed: TLS: the certificate of "), "{error}");
    assert!(!error.contains("will not be retried"), "{error}");
    assert!(!error.contains("Other:"), "{error}");
    // Not retried: each request that met the certificate is logged once, never again.
    let tries: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.contains("is not trusted"))
        .collect();
    let mut unique = tries.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(tries.len(), unique.len(), "a request was retried:\n{}", r.stderr);
    assert!(!r.stderr.contains("retry policy expired"), "{}", r.stderr);
}

/// The 1-based line and column of the first `needle` in `text`, as a plan error names it.
fn line_col(text: &str, needle: &str) -> (usize, usize) {
    let at = text
        .find(needle)
        .unwrap_or_else(|| panic!("`{needle}` not in\n{text}"));
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let column = before[before.rfind('\n').map_or(0, |i| i + 1)..].chars().count() + 1;
    (line, column)
}

/// Trial az7 (F-DNS-EXIT): a misspelt `dps.host` or `vault_url` host was retried 6 times
/// (26 s, 52 s) and ended exit 1 "failed part-way" though nothing was changed and no rerun
/// could succeed. A name that does not resolve (`.invalid`, RFC 6761) on the first request to
/// it is bad input: exit 2, not retried, named by its plan key at its place; nothing changed.
#[test]
fn azure_a_host_that_does_not_resolve_is_bad_input_named_by_its_plan_key_and_not_retried() {
    let env = TestEnv::new();
    let serve = twelve_on_azure(&env);
    fleet_ok(&env, &serve, &["issue"]);
    let before = fleet_ok(&env, &serve, &["status", "-o", "json"]).json();
    let plan = std::fs::read_to_string(env.path("azure/plan.toml")).unwrap();
    let vault = "https://certroll.vault.azure.net";
    for (from, to, key) in [
        (
            format!("host = \"{DPS_HOST}\""),
            "certroll-dps.azure-devices-provisoning.invalid",
            "dps.host",
        ),
        (
            format!("vault_url = \"{vault}\""),
            "certrol.vault.invalid",
            "vault_url",
        ),
    ] {
        let misspelt = match key {
            "dps.host" => plan.replacen(&from, &format!("host = \"{to}\""), 1),
            _ => plan.replacen(&from, &format!("vault_url = \"https://{to}\""), 1),
        };
        assert_ne!(misspelt, plan);
        // The value's place: its opening quote.
        let (line, column) = line_col(
            &misspelt,
            &format!(
                "\"{}",
                if key == "dps.host" {
                    to.to_string()
                } else {
                    format!("https://{to}")
                }
            ),
        );
        env.write("azure/plan.toml", &misspelt);
        let r = run_fleet(&env, &serve, "azure", &["-v", "roll-secondary", "group:meters"]);
        assert_eq!(r.code, 2, "bad input, nothing changed\n{}", r.stderr);
        let error = r.stderr.lines().last().unwrap_or_default();
        assert!(
            error.contains(&format!(
                "plan.toml:{line}:{column}: {key} `{to}` does not resolve (DNS: "
            )),
            "{}",
            r.stderr
        );
        assert!(!error.contains("failed part-way"), "{error}");
        // Not retried: no second attempt, no retry policy giving up.
        assert!(!r.stderr.contains("attempt 2"), "{}", r.stderr);
        assert!(!r.stderr.contains("retrying"), "{}", r.stderr);
        assert!(!r.stderr.contains("retry policy expired"), "{}", r.stderr);
        env.write("azure/plan.toml", &plan);
        let after = fleet_ok(&env, &serve, &["status", "-o", "json"]).json();
        assert_eq!(after, before, "nothing changed");
    }
}

#[test]
fn azure_a_sas_key_that_is_not_base64_and_a_rejected_token_exit_2_and_change_nothing() {
    let env = TestEnv::new();
    let serve = twelve_on_azure(&env);
    let hub_key = sas_key(&serve, "conf-hub").1;
    let r = run_plan(
        &env,
        "azure",
        &[
            ("CERTROLL_AZ_TOKEN", TOKEN),
            ("CERTROLL_AZ_DPS_KEY", "not base64 !!"),
            ("CERTROLL_AZ_HUB_KEY", hub_key.as_str()),
        ],
        &["issue"],
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("is not base64 (from CERTROLL_AZ_DPS_KEY)"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("not base64 !!"), "the value is never printed");
    // Named at the key that names the variable, as an unset one is (trial az8 F9).
    let plan = std::fs::read_to_string(env.path("azure/plan.toml")).unwrap();
    let (line, column) = line_col(&plan, "\"CERTROLL_AZ_DPS_KEY\"");
    assert!(
        r.stderr
            .contains(&format!("plan.toml:{line}:{column}: dps.sas_key_env: ")),
        "{}",
        r.stderr
    );

    let r = with_a_rejected_token(&env, &serve, &["issue"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("HTTP 401"), "{}", r.stderr);
    assert!(!r.stderr.contains(REJECTED_TOKEN), "{}", r.stderr);

    // Nothing was made: the right token finds every certificate still to issue.
    let r = run_fleet(&env, &serve, "azure", &["issue", "--dry-run", "-o", "json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let plan = r.json();
    let steps = plan["steps"].as_array().unwrap();
    assert!(
        steps
            .iter()
            .any(|s| s["action"] == "create-ca" && s["target"] == "ca:root"),
        "{plan}"
    );
}

#[test]
fn azure_dry_runs_say_what_happens_on_azure_and_contacts_are_key_vault_s() {
    let env = TestEnv::new();
    let serve = twelve_on_azure(&env);
    let r = run_fleet(&env, &serve, "azure", &["issue", "--dry-run"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout
            .contains("leave the new certificate of 12 device(s) for the operator to hand out"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("wait for 12 device(s) to register with DPS"),
        "{}",
        r.stdout
    );
    assert!(
        !r.stdout.contains("through the enrollment service"),
        "{}",
        r.stdout
    );
    // The local plan of the same fleet keeps its words: certroll holds those devices.
    let r = run_fleet(&env, &serve, "local", &["issue", "--dry-run"]);
    assert!(
        r.stdout.contains("install the new certificate on 12 device(s)"),
        "{}",
        r.stdout
    );

    // No contacts anywhere: said in words, on both backends (it said `contacts (none):`).
    for which in ["azure", "local"] {
        let r = run_fleet(&env, &serve, which, &["vault", "contacts", "get"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert!(r.stdout.starts_with("no contacts set"), "{which}: {}", r.stdout);
        assert!(!r.stdout.contains("(none)"), "{which}: {}", r.stdout);
    }
    // Set: the heading says where they live (Key Vault on azure, certroll's store on local).
    for (which, heading) in [
        ("azure", "contacts (Key Vault):"),
        ("local", "contacts (the local store):"),
    ] {
        let r = run_fleet(
            &env,
            &serve,
            which,
            &["vault", "contacts", "set", "pki@example.com"],
        );
        assert_eq!(r.code, 0, "{}", r.stderr);
        let r = run_fleet(&env, &serve, which, &["vault", "contacts", "get"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert_eq!(r.stdout, format!("{heading}\n  pki@example.com\n"), "{which}");
    }
    let r = run_fleet(&env, &serve, "azure", &["vault", "contacts", "delete"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("no contacts set"), "{}", r.stdout);
}

/// A token Key Vault rejects on a later run (second trial of issue 12): the run names Key
/// Vault's 401, not a DPS record certroll lacks, exits 2 and changes nothing.
#[test]
fn azure_a_rejected_token_after_issue_is_named_and_changes_nothing() {
    let env = TestEnv::new();
    let serve = twelve_on_azure(&env);
    let r = run_fleet(&env, &serve, "azure", &["issue"]);
    assert!(r.code == 0 || r.code == 1, "{}", r.stderr);
    let status = || {
        let r = run_fleet(&env, &serve, "azure", &["status", "-o", "json"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        r.stdout
    };
    let before = status();
    let r = with_a_rejected_token(&env, &serve, &["roll-secondary", "group:meters", "--yes"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("HTTP 401"), "{}", r.stderr);
    assert!(!r.stderr.contains("no record of"), "{}", r.stderr);
    assert!(!r.stderr.contains(REJECTED_TOKEN), "{}", r.stderr);
    assert_eq!(status(), before, "a refused run changed nothing");
}

/// A token Key Vault rejects, on a roll of a CA whose devices registered: the run stops at the
/// first 401 with one error, exit 2, and no warning before it (trial az11 F8: three `WARN ...
/// cannot read/index ... 401` lines, one per vault read tried after the first).
#[test]
fn azure_a_rejected_token_stops_a_roll_at_the_first_401_without_warnings() {
    let env = TestEnv::new();
    let serve = crate::azure_verbs2::groups_through_the_hook(&env);
    fleet_ok(&env, &serve, &["issue"]);
    let r = with_a_rejected_token(&env, &serve, &["roll-secondary", "ca:factory", "--yes"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("HTTP 401"), "{}", r.stderr);
    assert!(!r.stderr.contains("WARN"), "{}", r.stderr);
    assert_eq!(
        r.stderr.lines().filter(|l| l.contains("401")).count(),
        1,
        "{}",
        r.stderr
    );
}

/// An IoT Hub error about the identities of a batch of devices names the count with the
/// operation and the first device alone in backticks (third azure trial: "IoT Hub query device
/// identities `1 devices from `valve-1``", nested backticks). A hub key IoT Hub rejects fails the
/// revoke of a registered device at its hub read, exit 2.
#[test]
fn azure_a_hub_error_about_a_device_names_it_in_one_pair_of_backticks() {
    use base64::Engine as _;
    let env = TestEnv::new();
    let serve = crate::azure_verbs2::groups_through_the_hook(&env);
    let r = run_fleet(&env, &serve, "azure", &["issue"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let wrong_hub_key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    let dps_key = sas_key(&serve, "certroll-dps").1;
    let with_wrong_hub_key = |args: &[&str]| {
        run_plan(
            &env,
            "azure",
            &[
                ("CERTROLL_AZ_TOKEN", TOKEN),
                ("CERTROLL_AZ_DPS_KEY", dps_key.as_str()),
                ("CERTROLL_AZ_HUB_KEY", wrong_hub_key.as_str()),
            ],
            args,
        )
    };
    let r = with_wrong_hub_key(&["revoke", "device:s-1", "--reason", "key-compromise", "--yes"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("IoT Hub query device identity `s-1` failed: HTTP 401"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("``"), "{}", r.stderr);
    // `status` reads the identities of all three registered devices in one query.
    let r = with_wrong_hub_key(&["status"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    let message = r
        .stderr
        .lines()
        .find(|l| l.contains("IoT Hub"))
        .unwrap_or_default();
    assert!(
        message.contains("IoT Hub query 3 device identities including `")
            && message.contains("` failed: HTTP 401"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("``"), "{}", r.stderr);
}

/// `vault delete` of a CA the plan has sign a group is refused without `--force` on azure as
/// on the local store (trial az8 F2: Key Vault cannot tell which versions a CA signed without
/// reading every version, and the delete went through), and the vault keeps the CA.
#[test]
fn azure_deleting_a_ca_that_signs_a_group_needs_force_as_on_the_local_store() {
    let env = TestEnv::new();
    let serve = twelve_on_azure(&env);
    fleet_ok(&env, &serve, &["issue"]);
    run_fleet(&env, &serve, "local", &["issue"]).ok();
    for which in ["local", "azure"] {
        let r = run_fleet(&env, &serve, which, &["vault", "delete", "ca:factory"]);
        assert_eq!(r.code, 2, "{which}: {}\n{}", r.stdout, r.stderr);
        assert!(r.stderr.contains("--force"), "{which}: {}", r.stderr);
        run_fleet(&env, &serve, which, &["vault", "show", "ca:factory"]).ok();
    }
    // Azure's refusal names what the plan has the CA sign; root signs the factory CA.
    let r = run_fleet(
        &env,
        &serve,
        "azure",
        &["vault", "delete", "ca:root", "--dry-run"],
    );
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("CA factory"), "{}", r.stderr);
    // In the same words on both backends (trial az11 F6: the local store named the versions
    // root signed instead).
    let refusal = refused_alike(|which| run_fleet(&env, &serve, which, &["vault", "delete", "ca:root"]));
    assert!(
        refusal.contains("`ca-root` is the CA that signs CA factory in the plan"),
        "{refusal}"
    );
    let r = run_fleet(&env, &serve, "azure", &["vault", "delete", "ca:factory"]);
    assert!(r.stderr.contains("group meters"), "{}", r.stderr);
    fleet_ok(&env, &serve, &["vault", "delete", "ca:factory", "--force"]);
    assert_eq!(
        run_fleet(&env, &serve, "azure", &["vault", "show", "ca:factory"]).code,
        2,
        "a forced delete deletes"
    );
}
