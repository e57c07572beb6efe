//! Broken plans: exit 2, a `file:line:column` message, and no store created.

use crate::util::*;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/plans");

#[test]
fn every_broken_fixture_is_refused_with_its_location_and_touches_nothing() {
    let mut seen = 0;
    for entry in std::fs::read_dir(FIXTURES).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !(name.starts_with("broken-") && name.ends_with(".toml")) {
            continue;
        }
        seen += 1;
        // Work on a copy so the store would land in the temp dir if anything were written.
        let env = TestEnv::new();
        let text = std::fs::read_to_string(&path).unwrap();
        env.write(&name, &text);
        for aux in ["broken-ids.txt", "cameras.txt"] {
            let _ = std::fs::copy(format!("{FIXTURES}/{aux}"), env.path(aux));
        }
        // The first line says `# error: LINE:COL: message`.
        let expected = text
            .lines()
            .next()
            .unwrap()
            .trim_start_matches("# error: ")
            .to_string();
        let location: String = expected.split(": ").next().unwrap().to_string();
        for verb in [
            &["validate"][..],
            &["issue"],
            &["issue", "--dry-run"],
            &["status"],
        ] {
            let mut args = vec!["--plan", name.as_str()];
            args.extend_from_slice(verb);
            let run = env.run(&args).code(2);
            assert!(
                run.stderr.contains(&format!(":{location}: ")),
                "{name} {verb:?}: wanted {location} in {}",
                run.stderr
            );
            assert!(run.stdout.is_empty(), "{name}: {}", run.stdout);
        }
        assert!(
            !env.store_dir().exists(),
            "{name}: a broken plan must not create the store"
        );
    }
    assert!(seen >= 10, "only {seen} broken fixtures found");
}

const GOOD_HEAD: &str = r#"version = 1
[policies.device]
key = { type = "EC", curve = "P-256" }
validity_days = 365
[policies.ca]
key = { type = "EC", curve = "P-256" }
validity_days = 3650
[ca.root]
subject = "CN=Root"
policy = "ca"
"#;

#[test]
fn inline_broken_plans_name_the_line_that_is_wrong() {
    // (what is appended to a valid head, the line the error must point at, a word of the message)
    let cases: &[(&str, usize, &str)] = &[
        (
            "[groups.g]\nsigning_ca = \"nope\"\nhub = \"h\"\ndevice_policy = \"device\"\ndevices = { prefix = \"d-\", count = 2 }\n",
            12,
            "nope",
        ),
        (
            "[groups.g]\nsigning_ca = \"root\"\nhub = \"h\"\ndevice_policy = \"dev\"\ndevices = { prefix = \"d-\", count = 2 }\n",
            14,
            "dev",
        ),
        (
            "[enrollments.gw]\nissuer = \"root\"\npolicy = \"device\"\nhub = \"h\"\ncolour = \"red\"\n",
            15,
            "colour",
        ),
        (
            "[enrollments.gw]\nissuer = \"root\"\npolicy = \"device\"\nhub = 7\n",
            14,
            "string",
        ),
        (
            "[ca.sub]\nsubject = \"CN=Sub\"\nissuer = \"root\"\npolicy = \"ca\"\npath_len = 0\n[ca.subsub]\nsubject = \"CN=SubSub\"\nissuer = \"sub\"\npolicy = \"ca\"\n",
            18,
            "path_len",
        ),
        (
            "[policies.weak]\nkey = { type = \"RSA\", size = 1024 }\nvalidity_days = 30\n",
            12,
            "1024",
        ),
        (
            "[enrollments.bad_name]\nissuer = \"root\"\npolicy = \"device\"\nhub = \"h\"\n",
            11,
            "bad_name",
        ),
        (
            "[groups.g]\nsigning_ca = \"root\"\nhub = \"h\"\ndevice_policy = \"device\"\ndevices = { prefix = \"gw-\", count = 3 }\n[enrollments.gw-2]\nissuer = \"root\"\npolicy = \"device\"\nhub = \"h\"\n",
            16,
            "gw-2",
        ),
        ("[groups.g\n", 11, ""),
    ];
    for (tail, line, word) in cases {
        let env = TestEnv::new();
        env.write("plan.toml", &format!("{GOOD_HEAD}{tail}"));
        let run = env.run(&["--plan", "plan.toml", "issue"]).code(2);
        assert!(
            run.stderr.contains(&format!("plan.toml:{line}:")),
            "wanted line {line} for:\n{tail}\ngot: {}",
            run.stderr
        );
        assert!(run.stderr.contains(word), "wanted `{word}` in {}", run.stderr);
        assert!(!env.store_dir().exists());
    }
}

#[test]
fn a_good_plan_validates_and_a_missing_one_is_an_input_error() {
    let env = TestEnv::new();
    env.write("plan.toml", GOOD_HEAD);
    let ok = env
        .run(&["--plan", "plan.toml", "validate", "-o", "json"])
        .ok()
        .json();
    assert_eq!(ok["valid"], true);
    assert_eq!(ok["cas"], 1);
    let missing = env.run(&["--plan", "nope.toml", "validate"]).code(2);
    assert!(missing.stderr.contains("nope.toml"), "{}", missing.stderr);
    env.run(&["--plan", "plan.toml", "issue", "--bogus-flag"]).code(2);
    assert!(!env.store_dir().exists());
}

/// An azure plan for [`an_azure_plan_s_later_errors_name_the_key_s_line_and_column`]: `backend`
/// holds `[backend]`'s own lines (after `kind` and `path`), `hub` the group's hub.
fn azure_plan(backend: &str, hub: &str) -> String {
    format!(
        "version = 1\n[backend]\nkind = \"azure\"\npath = \"state.db\"\n\
         vault_url = \"https://certroll.vault.azure.net\"\nauth = \"token-env\"\n\
         token_env = \"CERTROLL_T_TOKEN\"\ndelivery = \"none\"\n{backend}\
         dps = {{ host = \"d.azure-devices-provisioning.net\", id_scope = \"0ne00000000\", \
         sas_policy = \"p\", sas_key_env = \"CERTROLL_T_DPS_KEY\" }}\n\
         [backend.hubs.conf-hub]\nhost = \"conf-hub.azure-devices.net\"\nsas_policy = \"p\"\n\
         sas_key_env = \"CERTROLL_T_HUB_KEY\"\n\
         [policies.device]\nkey = {{ type = \"EC\", curve = \"P-256\" }}\nvalidity_days = 365\n\
         [policies.ca]\nkey = {{ type = \"EC\", curve = \"P-256\" }}\nvalidity_days = 3650\n\
         key_usage = [\"keyCertSign\", \"cRLSign\", \"digitalSignature\"]\n\
         [ca.root]\nsubject = \"CN=Root\"\npolicy = \"ca\"\n\
         [groups.meters]\nsigning_ca = \"root\"\nhub = \"{hub}\"\n\
         device_policy = \"device\"\ndevices = {{ prefix = \"m-\", count = 2 }}\n"
    )
}

/// Trial az7: the errors found once the plan is loaded (`ca_file` missing, not PEM or a
/// folder; a secret's variable not set; a hub the plan assigns devices to without its table)
/// named the file and the value but not where: they name `plan.toml:LINE:COL` of the key's
/// value, as the plan's own errors do. Each before any request (no service runs here): exit 2.
#[test]
fn an_azure_plan_s_later_errors_name_the_key_s_line_and_column() {
    let key = "c2VjcmV0LWtleS1mb3ItdGVzdHM=";
    let all = [
        ("CERTROLL_T_TOKEN", "t"),
        ("CERTROLL_T_DPS_KEY", key),
        ("CERTROLL_T_HUB_KEY", key),
    ];
    // (extra `[backend]` lines, the group's hub, the variable left unset, what the value's
    // line starts with, the message's words after the place)
    let cases: &[(&str, &str, &str, &str, &str)] = &[
        (
            "ca_file = \"no-such-ca.pem\"\n",
            "conf-hub",
            "",
            "ca_file = ",
            "ca_file ",
        ),
        (
            "ca_file = \"plan.toml\"\n",
            "conf-hub",
            "",
            "ca_file = ",
            "ca_file ",
        ),
        ("ca_file = \".\"\n", "conf-hub", "", "ca_file = ", "ca_file "),
        (
            "",
            "conf-hub",
            "CERTROLL_T_TOKEN",
            "token_env = ",
            "token_env: environment variable CERTROLL_T_TOKEN is not set",
        ),
        (
            "",
            "conf-hub",
            "CERTROLL_T_DPS_KEY",
            "dps = { host = \"d.azure-devices-provisioning.net\", id_scope = \"0ne00000000\", sas_policy = \"p\", sas_key_env = ",
            "dps.sas_key_env: environment variable CERTROLL_T_DPS_KEY is not set",
        ),
        (
            "",
            "conf-hub",
            "CERTROLL_T_HUB_KEY",
            "sas_key_env = ",
            "hubs.conf-hub.sas_key_env: environment variable CERTROLL_T_HUB_KEY is not set",
        ),
        (
            "",
            "other-hub",
            "",
            "hub = ",
            "`issue` on backend kind `azure` needs `[backend.hubs.other-hub]`",
        ),
    ];
    for (backend, hub, unset, line_start, words) in cases {
        let env = TestEnv::new();
        let text = azure_plan(backend, hub);
        env.write("plan.toml", &text);
        let (index, line) = text
            .lines()
            .enumerate()
            .filter(|(_, l)| l.starts_with(line_start))
            .last()
            .unwrap_or_else(|| panic!("no line starts with {line_start}"));
        let column = line_start.chars().count() + 1;
        let expected = format!("plan.toml:{}:{column}: {words}", index + 1);
        assert!(line.len() > line_start.len());
        let vars = all.iter().filter(|(k, _)| k != unset).copied();
        let out = env
            .cmd()
            .envs(vars)
            .args(["--plan", "plan.toml", "issue"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{backend}{hub}{unset}: {stderr}");
        assert!(stderr.contains(&expected), "wanted `{expected}` in {stderr}");
    }
}

/// Trial az12 F8: `validate` passed a plan whose group names a hub without its
/// `[backend.hubs.NAME]` (a misspelt table), which every device verb then refused. It refuses it
/// too, at the `hub = "..."`, exit 2; the hub table's own name is all that was wrong.
#[test]
fn validate_refuses_an_azure_plan_whose_hub_has_no_table_as_every_device_verb_does() {
    let env = TestEnv::new();
    let text = azure_plan("", "conf-hub").replace("[backend.hubs.conf-hub]", "[backend.hubs.conf-hubb]");
    env.write("plan.toml", &text);
    let line = text.lines().position(|l| l.starts_with("hub = ")).unwrap() + 1;
    let out = env
        .cmd()
        .args(["--plan", "plan.toml", "validate"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "plan.toml:{line}:7: every verb but `vault` and `export` on backend kind `azure` needs \
             `[backend.hubs.conf-hub]`"
        )),
        "{stderr}"
    );
    env.write("plan.toml", &azure_plan("", "conf-hub"));
    let out = env
        .cmd()
        .args(["--plan", "plan.toml", "validate"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A target the plan does not declare is refused with exit 2, before any store exists, and the
/// message says what it may have meant: a generated id without its zero padding (trial az14
/// D3: `sensor-3` for `sensor-03`), or the names of that kind the plan declares.
#[test]
fn an_undeclared_target_names_what_the_plan_declares_and_changes_nothing() {
    let env = TestEnv::new();
    env.quickstart();
    for (target, meant) in [
        ("device:sensor-3", "did you mean `device:sensor-03`?"),
        ("device:sensor-003", "did you mean `device:sensor-03`?"),
        ("ca:fatcory", "it declares `ca:root`, `ca:factory`"),
        ("group:sensor", "it declares `group:sensors`"),
        ("enrollment:gateway-1", "it declares `enrollment:gateway-01`"),
    ] {
        let run = env.plan_run(&["revoke", target, "--reason", "key-compromise", "--dry-run"]);
        assert_eq!(run.code, 2, "{target}: {}", run.stderr);
        assert!(
            run.stderr
                .contains(&format!("target `{target}` is not declared in the plan")),
            "{}",
            run.stderr
        );
        assert!(run.stderr.contains(meant), "{target}: {}", run.stderr);
    }
    // Past the group's count, or not a number: no id to suggest.
    let run = env.plan_run(&["revoke", "device:sensor-51", "--reason", "key-compromise"]);
    assert_eq!(run.code, 2);
    assert!(!run.stderr.contains("did you mean"), "{}", run.stderr);
    assert!(!env.store_dir().exists(), "a refused target creates no store");
}
