//! Tests of plan loading: the PRODUCT.md sketch, every error class with its location, path
//! resolution, generated device ids, CA order, and the fixtures under `tests/fixtures/plans/`.

use super::*;
use crate::pki::spec::{Curve, ExtendedKeyUsage, KeySpec, KeyUsage};
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The plan sketch of PRODUCT.md, verbatim.
const SKETCH: &str = r#"version = 1
[backend]                      # kind = "local" (embedded store, default) | "azure" | "openbao"
kind = "local"
path = ".certroll/state.db"    # relative to the plan file

[contacts]
emails = ["pki-oncall@example.com"]

[policies.device]
key = { type = "EC", curve = "P-256", exportable = true, reuse_key = false }
validity_days = 365
key_usage = ["digitalSignature"]
extended_key_usage = ["clientAuth"]
content_type = "pem"           # pem | pfx
lifetime_actions = [
  { days_before_expiry = 30, action = "auto-renew" },
  { lifetime_percentage = 80, action = "email-contacts" },
]

[policies.ca]
key = { type = "RSA", size = 3072, exportable = false }   # RSA: size 2048|3072|4096; EC: curve P-256|P-384|P-521
validity_days = 3650
lifetime_actions = [{ days_before_expiry = 180, action = "email-contacts" }]

[ca.root]                      # self-signed unless `issuer` names another CA
subject = "CN=Example Root CA, O=Example"
policy = "ca"

[ca.factory]
subject = "CN=Example Factory CA, O=Example"
issuer = "root"
path_len = 0
policy = "ca"

[groups.sensors]               # enrollment group
signing_ca = "factory"
hub = "example-hub"
reprovision = "migrate"        # migrate | reset | never
device_policy = "device"
devices = { prefix = "sensor-", count = 1000 }   # or { file = "sensors.txt" }

[enrollments.gateway-01]       # individual enrollment; its registration id and device id are gateway-01
issuer = "factory"
policy = "device"
hub = "example-hub"
"#;

/// Policies and CAs that the smaller test plans build on (lines 1-16; factory's issuer and
/// policy follow on line 17).
const BASE: &str = r#"version = 1

[policies.device]
key = { type = "EC" }
validity_days = 365

[policies.ca]
key = { type = "RSA", size = 3072 }
validity_days = 3650

[ca.root]
subject = "CN=Root"
policy = "ca"

[ca.factory]
subject = "CN=Factory"
"#;

/// Where the test plans pretend to live.
const PLAN_PATH: &str = "/srv/pki/certroll.toml";

fn parse_text(text: &str) -> Result<Plan, PlanError> {
    parse(Path::new(PLAN_PATH), text)
}

fn ok(text: &str) -> Plan {
    parse_text(text).unwrap_or_else(|e| panic!("plan should be valid, got: {e}"))
}

fn err(text: &str) -> PlanError {
    match parse_text(text) {
        Ok(_) => panic!("plan should be rejected:\n{text}"),
        Err(e) => e,
    }
}

/// `BASE` plus `rest` (from line 19), with factory issued by root.
fn with_base(rest: &str) -> String {
    format!("{BASE}issuer = \"root\"\npolicy = \"ca\"\n{rest}")
}

/// Asserts the error's line, column and that its message contains `needle`.
#[track_caller]
fn assert_at(e: &PlanError, line: usize, column: usize, needle: &str) {
    assert_eq!((e.line, e.column), (Some(line), Some(column)), "location of: {e}");
    assert!(
        e.message.contains(needle),
        "message `{}` should contain `{needle}`",
        e.message
    );
}

/// A fresh, empty folder under the system temp dir (removed when dropped).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("certroll-plan-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---- the sketch ----------------------------------------------------------------------------

#[test]
fn sketch_parses_with_generated_devices() {
    let plan = ok(SKETCH);
    assert_eq!(plan.path, Path::new(PLAN_PATH));
    assert_eq!(
        plan.backend,
        BackendConfig::Local {
            path: PathBuf::from("/srv/pki/.certroll/state.db"),
            key_file: None
        }
    );
    assert_eq!(plan.contacts, ["pki-oncall@example.com"]);

    let device = &plan.policies["device"];
    assert_eq!(
        device.key,
        KeySpec::Ec {
            curve: Curve::P256,
            hsm: false
        }
    );
    assert!(device.exportable && !device.reuse_key);
    assert_eq!(device.validity_days, 365);
    assert_eq!(device.key_usage, [KeyUsage::DigitalSignature]);
    assert_eq!(device.extended_key_usage, [ExtendedKeyUsage::ClientAuth]);
    assert_eq!(device.content_type, ContentType::Pem);
    assert_eq!(
        device.lifetime_actions,
        [
            LifetimeAction {
                trigger: Trigger::DaysBeforeExpiry(30),
                action: ActionKind::AutoRenew
            },
            LifetimeAction {
                trigger: Trigger::LifetimePercentage(80),
                action: ActionKind::EmailContacts
            },
        ]
    );
    let ca = &plan.policies["ca"];
    assert_eq!(
        ca.key,
        KeySpec::Rsa {
            bits: 3072,
            hsm: false
        }
    );
    assert!(!ca.exportable);
    assert!(ca.key_usage.is_empty());

    let names: Vec<&str> = plan.cas.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["root", "factory"]);
    assert_eq!(plan.cas[0].issuer, None);
    assert_eq!(plan.cas[0].subject.cn(), Some("Example Root CA"));
    assert_eq!(plan.cas[1].issuer.as_deref(), Some("root"));
    assert_eq!(plan.cas[1].path_len, Some(0));

    let sensors = &plan.groups["sensors"];
    assert_eq!(sensors.signing_ca, "factory");
    assert_eq!(sensors.hub, "example-hub");
    assert_eq!(sensors.reprovision, ReprovisionPolicy::Migrate);
    assert_eq!(sensors.device_policy, "device");
    assert_eq!(
        sensors.devices,
        DeviceSource::Generated {
            prefix: "sensor-".into(),
            count: 1000
        }
    );

    let gateway = &plan.enrollments["gateway-01"];
    assert_eq!(gateway.name, "gateway-01");
    assert_eq!(gateway.issuer, "factory");
    assert_eq!(gateway.policy, "device");
    assert_eq!(gateway.reprovision, ReprovisionPolicy::Migrate);
}

#[test]
fn sketch_parses_with_a_device_file() {
    let dir = TempDir::new();
    dir.write(
        "sensors.txt",
        "# factory batch 7\nsensor-a1\n\n  sensor-a2  \r\n# end\n",
    );
    let text = SKETCH.replace(
        r#"devices = { prefix = "sensor-", count = 1000 }"#,
        r#"devices = { file = "sensors.txt" }"#,
    );
    let plan_path = dir.write("certroll.toml", &text);
    let plan = load(&plan_path).unwrap();
    let group = &plan.groups["sensors"];
    assert_eq!(
        group.devices,
        DeviceSource::File {
            path: dir.0.join("sensors.txt"),
            ids: vec!["sensor-a1".into(), "sensor-a2".into()]
        }
    );
    assert_eq!(group.device_ids().collect::<Vec<_>>(), ["sensor-a1", "sensor-a2"]);
    assert_eq!(group.device_count(), 2);
}

#[test]
fn generated_device_ids_are_zero_padded() {
    let plan = ok(SKETCH);
    let ids: Vec<String> = plan.groups["sensors"].device_ids().collect();
    assert_eq!(ids.len(), 1000);
    assert_eq!(ids[0], "sensor-0001");
    assert_eq!(ids[9], "sensor-0010");
    assert_eq!(ids[999], "sensor-1000");
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 1000);
}

// ---- paths ---------------------------------------------------------------------------------

#[test]
fn relative_paths_resolve_against_the_plan_folder() {
    let text = r#"version = 1
[backend]
path = "state/store.db"
key_file = "../keys/store.key"
"#;
    let plan = ok(text);
    assert_eq!(
        plan.backend,
        BackendConfig::Local {
            path: PathBuf::from("/srv/pki/state/store.db"),
            key_file: Some(PathBuf::from("/srv/pki/../keys/store.key")),
        }
    );

    // Absolute paths stay as they are.
    let plan = ok("version = 1\n[backend]\npath = \"/var/lib/certroll/state.db\"\n");
    assert_eq!(
        plan.backend,
        BackendConfig::Local {
            path: PathBuf::from("/var/lib/certroll/state.db"),
            key_file: None
        }
    );

    // A plan named without a folder resolves against the current directory.
    let plan = parse(Path::new("certroll.toml"), "version = 1\n").unwrap();
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(
        plan.backend,
        BackendConfig::Local {
            path: cwd.join(".certroll/state.db"),
            key_file: None
        }
    );
}

#[test]
fn device_file_resolves_against_the_plan_folder_not_the_cwd() {
    let dir = TempDir::new();
    std::fs::create_dir_all(dir.0.join("fleet")).unwrap();
    dir.write("fleet/ids.txt", "dev-1\ndev-2\n");
    let plan_path = dir.write(
        "plan.toml",
        &with_base(
            r#"[groups.g]
signing_ca = "factory"
hub = "h"
device_policy = "device"
devices = { file = "fleet/ids.txt" }
"#,
        ),
    );
    let plan = load(&plan_path).unwrap();
    match &plan.groups["g"].devices {
        DeviceSource::File { path, ids } => {
            assert_eq!(path, &dir.0.join("fleet/ids.txt"));
            assert!(path.is_absolute());
            assert_eq!(ids, &["dev-1", "dev-2"]);
        }
        other => panic!("expected a file source, got {other:?}"),
    }
}

// ---- CA order ------------------------------------------------------------------------------

#[test]
fn cas_come_in_dependency_order_with_ties_by_name() {
    let text = r#"version = 1
[policies.ca]
key = { type = "EC", curve = "P-384" }
validity_days = 3650

[ca.z-issuing]
subject = "CN=Z"
issuer = "m-intermediate"
policy = "ca"

[ca.m-intermediate]
subject = "CN=M"
issuer = "b-root"
policy = "ca"

[ca.c-root]
subject = "CN=C"
policy = "ca"

[ca.b-root]
subject = "CN=B"
policy = "ca"

[ca.a-sub]
subject = "CN=A"
issuer = "c-root"
policy = "ca"
"#;
    let plan = ok(text);
    let names: Vec<&str> = plan.cas.iter().map(|c| c.name.as_str()).collect();
    // Ready CAs are taken smallest name first; each CA only once its issuer is placed.
    assert_eq!(
        names,
        ["b-root", "c-root", "a-sub", "m-intermediate", "z-issuing"]
    );
    for (i, ca) in plan.cas.iter().enumerate() {
        if let Some(issuer) = &ca.issuer {
            assert!(
                plan.cas[..i].iter().any(|c| &c.name == issuer),
                "{} before {issuer}",
                ca.name
            );
        }
    }
}

// ---- error display -------------------------------------------------------------------------

#[test]
fn errors_display_with_and_without_location() {
    let e = PlanError {
        path: "plan.toml".into(),
        line: Some(3),
        column: Some(7),
        message: "bad".into(),
    };
    assert_eq!(e.to_string(), "plan.toml:3:7: bad");
    let e = PlanError {
        line: None,
        column: None,
        ..e
    };
    assert_eq!(e.to_string(), "plan.toml: bad");
}

#[test]
fn line_column_counts_characters_from_one() {
    let text = "ab\nçd = 1\n\nx";
    assert_eq!(line_column(text, 0), (1, 1));
    assert_eq!(line_column(text, 1), (1, 2));
    assert_eq!(line_column(text, 3), (2, 1));
    assert_eq!(line_column(text, 5), (2, 2)); // after the two-byte ç
    assert_eq!(line_column(text, 4), (2, 1)); // inside ç: counts as ç
    assert_eq!(line_column(text, 11), (3, 1));
    assert_eq!(line_column(text, 12), (4, 1));
    assert_eq!(line_column(text, 99), (4, 2));
}

#[test]
fn missing_plan_file_has_no_location() {
    let dir = TempDir::new();
    let e = load(&dir.0.join("nope.toml")).unwrap_err();
    assert_eq!((e.line, e.column), (None, None));
    assert!(e.message.starts_with("cannot read the plan: "), "{e}");
}

// ---- TOML shape errors (from toml itself) ------------------------------------------------

#[test]
fn toml_syntax_error_is_located() {
    let e = err("version = 1\n\n[ca.root\nsubject = \"CN=x\"\n");
    assert_eq!(e.line, Some(3));
    assert!(e.message.contains("unclosed table"), "{e}");
    assert!(e.to_string().starts_with("/srv/pki/certroll.toml:3:"), "{e}");
}

#[test]
fn unknown_key_is_located_at_the_key() {
    let e = err(&with_base("[groups.g]\nsigning_ca = \"root\"\nhubb = \"h\"\n"));
    assert_at(&e, 21, 1, "unknown field `hubb`");
    let e = err("version = 1\n[policies.p]\nkey = { type = \"EC\", bits = 256 }\nvalidity_days = 1\n");
    assert_at(&e, 3, 22, "unknown field `bits`");
    let e = err("version = 1\nfleet = 3\n");
    assert_at(&e, 2, 1, "unknown field `fleet`");
}

#[test]
fn wrong_type_is_located_at_the_value() {
    let e = err("version = 1\n[policies.p]\nkey = { type = \"EC\" }\nvalidity_days = \"365\"\n");
    assert_at(&e, 4, 17, "invalid type: string \"365\"");
    let e =
        err("version = 1\n[policies.p]\nkey = { type = \"EC\", exportable = \"yes\" }\nvalidity_days = 3\n");
    assert_at(&e, 3, 35, "invalid type");
}

#[test]
fn missing_required_key_is_located_at_its_table() {
    let e = err("version = 1\n\n[policies.p]\nvalidity_days = 3\n");
    assert_at(&e, 3, 1, "missing field `key`");
    let e = err(
        "version = 1\n[policies.ca]\nkey = { type = \"EC\" }\nvalidity_days = 3\n[ca.x]\npolicy = \"ca\"\n",
    );
    assert_at(&e, 5, 1, "missing field `subject`");
}

// ---- version, backend, contacts ------------------------------------------------------------

#[test]
fn version_is_required_and_must_be_1() {
    let e = err("[contacts]\nemails = []\n");
    assert_eq!((e.line, e.column), (None, None));
    assert!(e.message.contains("missing `version = 1`"), "{e}");
    let e = err("# plan\nversion = 2\n");
    assert_at(&e, 2, 11, "");
    assert_eq!(
        e.message,
        "unsupported plan version 2 (this certroll reads version 1)"
    );
}

#[test]
fn backend_kinds_are_local_and_azure() {
    let e = err("version = 1\n[backend]\nkind = \"azure\"\n");
    assert_at(&e, 3, 8, "backend kind `azure` needs `vault_url");
    let e = err("version = 1\n[backend]\nkind = \"openbao\"\n");
    assert_eq!(
        e.message,
        "backend kind `openbao` is not available in this version; use `local` or `azure`"
    );
    let e = err("version = 1\n[backend]\nkind = \"s3\"\n");
    assert_at(&e, 3, 8, "unknown backend kind `s3`");
    let e = err("version = 1\n[backend]\npath = \"\"\n");
    assert_at(&e, 3, 8, "backend `path` is empty");
}

#[test]
fn contacts_must_be_email_addresses() {
    for bad in [
        "oncall",
        "@example.com",
        "oncall@",
        "on call@example.com",
        "a@b@c",
    ] {
        let e = err(&format!(
            "version = 1\n[contacts]\nemails = [\"ok@example.com\", \"{bad}\"]\n"
        ));
        assert_at(&e, 3, 29, &format!("contact `{bad}` is not an e-mail address"));
    }
}

// ---- policies ------------------------------------------------------------------------------

/// A one-policy plan whose policy body is `body` (the policy header is line 2, body from 3).
fn policy_plan(body: &str) -> String {
    format!("version = 1\n[policies.p]\n{body}\n")
}

#[test]
fn key_types_and_sizes() {
    let plan = ok(&policy_plan("key = { type = \"RSA\" }\nvalidity_days = 30"));
    assert_eq!(
        plan.policies["p"].key,
        KeySpec::Rsa {
            bits: 2048,
            hsm: false
        }
    );
    assert!(plan.policies["p"].exportable);
    let plan = ok(&policy_plan(
        "key = { type = \"EC-HSM\", curve = \"P-521\", reuse_key = true }\nvalidity_days = 30",
    ));
    let p = &plan.policies["p"];
    assert_eq!(
        p.key,
        KeySpec::Ec {
            curve: Curve::P521,
            hsm: true
        }
    );
    assert!(!p.exportable, "HSM keys default to not exportable");
    assert!(p.reuse_key);
    let plan = ok(&policy_plan(
        "key = { type = \"RSA-HSM\", size = 4096, exportable = false }\nvalidity_days = 30",
    ));
    assert_eq!(
        plan.policies["p"].key,
        KeySpec::Rsa {
            bits: 4096,
            hsm: true
        }
    );

    let e = err(&policy_plan(
        "key = { type = \"RSA\", size = 1024 }\nvalidity_days = 30",
    ));
    assert_at(&e, 3, 30, "");
    assert_eq!(
        e.message,
        "RSA key size 1024 is not supported (allowed: 2048, 3072, 4096)"
    );
    let e = err(&policy_plan(
        "key = { type = \"EC\", curve = \"P-192\" }\nvalidity_days = 30",
    ));
    assert_at(&e, 3, 30, "");
    assert_eq!(
        e.message,
        "EC curve `P-192` is not supported (allowed: P-256, P-384, P-521)"
    );
    let e = err(&policy_plan(
        "key = { type = \"EC\", size = 256 }\nvalidity_days = 30",
    ));
    assert_at(&e, 3, 29, "`size` is for RSA keys");
    let e = err(&policy_plan(
        "key = { type = \"RSA\", curve = \"P-256\" }\nvalidity_days = 30",
    ));
    assert_at(&e, 3, 31, "`curve` is for EC keys");
    let e = err(&policy_plan("key = { type = \"DSA\" }\nvalidity_days = 30"));
    assert_at(
        &e,
        3,
        16,
        "unknown key type `DSA` (expected RSA, EC, RSA-HSM or EC-HSM)",
    );
    let e = err(&policy_plan(
        "key = { type = \"RSA-HSM\", exportable = true }\nvalidity_days = 30",
    ));
    assert_at(&e, 3, 40, "RSA-HSM keys are never exportable");
}

#[test]
fn validity_days_range() {
    for (bad, col) in [("0", 17), ("36501", 17), ("-5", 17)] {
        let e = err(&policy_plan(&format!(
            "key = {{ type = \"EC\" }}\nvalidity_days = {bad}"
        )));
        assert_at(
            &e,
            4,
            col,
            &format!("validity_days = {bad} is out of range (1 to 36500)"),
        );
    }
    ok(&policy_plan("key = { type = \"EC\" }\nvalidity_days = 36500"));
}

#[test]
fn key_usages_and_ekus_are_checked() {
    let plan = ok(&policy_plan(
        "key = { type = \"EC\" }\nvalidity_days = 30\nkey_usage = [\"digitalSignature\", \"keyAgreement\"]\nextended_key_usage = [\"serverAuth\", \"1.2.3.4\"]\ndns_names = [\"device.example.com\", \"10.0.0.1\"]\ncontent_type = \"pfx\"",
    ));
    let p = &plan.policies["p"];
    assert_eq!(p.key_usage, [KeyUsage::DigitalSignature, KeyUsage::KeyAgreement]);
    assert_eq!(
        p.extended_key_usage,
        [
            ExtendedKeyUsage::ServerAuth,
            ExtendedKeyUsage::Other(vec![1, 2, 3, 4])
        ]
    );
    assert_eq!(p.dns_names, ["device.example.com", "10.0.0.1"]);
    assert_eq!(p.content_type, ContentType::Pfx);

    let e = err(&policy_plan(
        "key = { type = \"EC\" }\nvalidity_days = 30\nkey_usage = [\"digitalSignature\", \"signing\"]",
    ));
    assert_at(
        &e,
        5,
        34,
        "unknown key usage `signing` (valid: digitalSignature, nonRepudiation, keyEncipherment, dataEncipherment, keyAgreement, keyCertSign, cRLSign, encipherOnly, decipherOnly)",
    );
    let e = err(&policy_plan(
        "key = { type = \"EC\" }\nvalidity_days = 30\nextended_key_usage = [\"clientauth\"]",
    ));
    assert_at(&e, 5, 23, "unknown extended key usage `clientauth`");
    let e = err(&policy_plan(
        "key = { type = \"EC\" }\nvalidity_days = 30\ncontent_type = \"der\"",
    ));
    assert_at(&e, 5, 16, "unknown content_type `der` (expected pem or pfx)");
    let e = err(&policy_plan(
        "key = { type = \"EC\" }\nvalidity_days = 30\ndns_names = [\"a b\"]",
    ));
    assert_at(&e, 5, 14, "dns_names entry `a b`");
}

#[test]
fn lifetime_actions_are_checked() {
    let body = |actions: &str| {
        policy_plan(&format!(
            "key = {{ type = \"EC\" }}\nvalidity_days = 90\nlifetime_actions = [\n{actions}\n]"
        ))
    };
    ok(&body(
        "{ days_before_expiry = 89, action = \"auto-renew\" }, { lifetime_percentage = 99, action = \"email-contacts\" }",
    ));

    let e = err(&body("  { days_before_expiry = 90, action = \"auto-renew\" },"));
    assert_at(&e, 6, 26, "");
    assert_eq!(
        e.message,
        "days_before_expiry = 90 must be at least 1 and less than validity_days (90)"
    );
    let e = err(&body("  { days_before_expiry = 0, action = \"auto-renew\" },"));
    assert_at(&e, 6, 26, "days_before_expiry = 0 must be at least 1");
    let e = err(&body("  { lifetime_percentage = 100, action = \"auto-renew\" },"));
    assert_at(&e, 6, 27, "lifetime_percentage = 100 is out of range (1 to 99)");
    let e = err(&body(
        "  { days_before_expiry = 5, lifetime_percentage = 50, action = \"auto-renew\" },",
    ));
    assert_at(&e, 6, 51, "not both");
    let e = err(&body("  { action = \"auto-renew\" },"));
    assert_at(&e, 6, 3, "a lifetime action needs a trigger");
    // A misspelt trigger (trial az10 N5's kind) is named at its place with the keys a lifetime
    // action takes, not the action that then lacks one; a missing trigger is still said before
    // an error in a later action.
    let e = err(&body("  { triger = 30, action = \"auto-renew\" },"));
    assert_at(
        &e,
        6,
        5,
        "unknown field `triger`, expected one of `days_before_expiry`, `lifetime_percentage`, `action`",
    );
    let e = err(&body("  { action = \"auto-renew\", lifetime_percentag = 80 },"));
    assert_at(&e, 6, 28, "unknown field `lifetime_percentag`");
    let e = err(&body(
        "  { action = \"auto-renew\" },\n  { days_before_expiry = 0, action = \"auto-renew\" },",
    ));
    assert_at(&e, 6, 3, "a lifetime action needs a trigger");
    let e = err(&body("  { days_before_expiry = 5, action = \"AutoRenew\" },"));
    assert_at(
        &e,
        6,
        38,
        "unknown action `AutoRenew` (expected auto-renew or email-contacts)",
    );
}

// ---- names ---------------------------------------------------------------------------------

#[test]
fn names_follow_the_key_vault_rule() {
    let e = err("version = 1\n[policies.\"device policy\"]\nkey = { type = \"EC\" }\nvalidity_days = 3\n");
    assert_at(
        &e,
        2,
        11,
        "policy name `device policy` is not valid: use only letters, digits and `-`",
    );
    let e = err(&with_base(
        "[groups.sensors_v2]\nsigning_ca = \"root\"\nhub = \"h\"\ndevice_policy = \"device\"\ndevices = { prefix = \"s\", count = 1 }\n",
    ));
    assert_at(&e, 19, 9, "group name `sensors_v2` is not valid");
    let long = "c".repeat(101);
    let e = err(&format!(
        "{BASE}policy = \"ca\"\n[ca.{long}]\nsubject = \"CN=x\"\npolicy = \"ca\"\n"
    ));
    assert_at(&e, 18, 5, "is 101 characters long; the limit is 100");
    let e = err(&with_base(
        "[enrollments.\"gw.01\"]\nissuer = \"factory\"\npolicy = \"device\"\nhub = \"h\"\n",
    ));
    assert_at(&e, 19, 14, "enrollment name `gw.01` is not valid");
    ok(&format!(
        "{BASE}policy = \"ca\"\n[ca.{}]\nsubject = \"CN=x\"\npolicy = \"ca\"\n",
        "c".repeat(100)
    ));
}

// ---- references ----------------------------------------------------------------------------

#[test]
fn references_must_be_defined() {
    let e = err(&format!("{BASE}policy = \"devic\"\n"));
    assert_at(&e, 17, 10, "");
    assert_eq!(e.message, "policy `devic` is not defined (defined: ca, device)");
    let e = err(&with_base(
        "[groups.g]\nsigning_ca = \"fctory\"\nhub = \"h\"\ndevice_policy = \"device\"\ndevices = { prefix = \"s\", count = 1 }\n",
    ));
    assert_at(&e, 20, 14, "");
    assert_eq!(e.message, "CA `fctory` is not defined (defined: factory, root)");
    let e = err(&with_base(
        "[enrollments.gw]\nissuer = \"factory\"\npolicy = \"gateway\"\nhub = \"h\"\n",
    ));
    assert_at(&e, 21, 10, "policy `gateway` is not defined");
    let e = err("version = 1\n[ca.root]\nsubject = \"CN=x\"\npolicy = \"ca\"\n");
    assert_eq!(
        e.message,
        "policy `ca` is not defined (the plan defines no policies)"
    );
}

#[test]
fn leaf_policies_cannot_sign_certificates() {
    let text = with_base(
        "[policies.bad]\nkey = { type = \"EC\" }\nvalidity_days = 30\nkey_usage = [\"digitalSignature\", \"keyCertSign\"]\n\n[groups.g]\nsigning_ca = \"factory\"\nhub = \"h\"\ndevice_policy = \"bad\"\ndevices = { prefix = \"s\", count = 1 }\n",
    );
    let e = err(&text);
    assert_at(
        &e,
        27,
        17,
        "policy `bad` has keyCertSign in key_usage, so it cannot be used for device certificates (group `g` uses it as device_policy)",
    );
    let text = with_base(
        "[policies.bad]\nkey = { type = \"EC\" }\nvalidity_days = 30\nkey_usage = [\"keyCertSign\"]\n\n[enrollments.gw]\nissuer = \"factory\"\npolicy = \"bad\"\nhub = \"h\"\n",
    );
    assert_at(&err(&text), 26, 10, "enrollment `gw` uses it");
}

#[test]
fn ca_policies_with_explicit_key_usage_need_key_cert_sign() {
    let text = "version = 1\n[policies.ca]\nkey = { type = \"EC\" }\nvalidity_days = 30\nkey_usage = [\"digitalSignature\"]\n[ca.root]\nsubject = \"CN=R\"\npolicy = \"ca\"\n";
    assert_at(
        &err(text),
        8,
        10,
        "policy `ca` has no keyCertSign in key_usage, so CA `root` could not sign",
    );
    ok(&text.replace("[\"digitalSignature\"]", "[\"keyCertSign\", \"cRLSign\"]"));
}

// ---- CAs -----------------------------------------------------------------------------------

#[test]
fn ca_subject_errors_are_located_at_the_subject() {
    let e = err(
        "version = 1\n[policies.ca]\nkey = { type = \"EC\" }\nvalidity_days = 3\n[ca.root]\nsubject = \"O=Example\"\npolicy = \"ca\"\n",
    );
    assert_at(&e, 6, 11, "invalid subject `O=Example`: `O=Example` has no CN");
}

#[test]
fn ca_issuer_and_path_len_values() {
    let e = err(&format!("{BASE}issuer = \"factory\"\npolicy = \"ca\"\n"));
    assert_at(&e, 17, 10, "CA `factory` names itself as issuer");
    let e = err(&format!("{BASE}issuer = \"rot\"\npolicy = \"ca\"\n"));
    assert_at(&e, 17, 10, "CA `rot` is not defined (defined: factory, root)");
    let e = err(&format!(
        "{BASE}issuer = \"root\"\npath_len = 256\npolicy = \"ca\"\n"
    ));
    assert_at(&e, 18, 12, "path_len = 256 is out of range (0 to 255)");
}

#[test]
fn ca_issuer_cycles_are_named() {
    let text = "version = 1
[policies.ca]
key = { type = \"EC\" }
validity_days = 30

[ca.b]
subject = \"CN=B\"
issuer = \"a\"
policy = \"ca\"

[ca.a]
subject = \"CN=A\"
issuer = \"c\"
policy = \"ca\"

[ca.c]
subject = \"CN=C\"
issuer = \"b\"
policy = \"ca\"

[ca.root]
subject = \"CN=R\"
policy = \"ca\"
";
    let e = err(text);
    // The cycle starts at the CA that comes first in the file (b), located at its issuer.
    assert_at(&e, 8, 10, "");
    assert_eq!(e.message, "CA issuer cycle: b -> a -> c -> b");

    let two = "version = 1\n[policies.ca]\nkey = { type = \"EC\" }\nvalidity_days = 30\n[ca.a]\nsubject = \"CN=A\"\nissuer = \"b\"\npolicy = \"ca\"\n[ca.b]\nsubject = \"CN=B\"\nissuer = \"a\"\npolicy = \"ca\"\n";
    let e = err(two);
    assert_at(&e, 7, 10, "");
    assert_eq!(e.message, "CA issuer cycle: a -> b -> a");
}

#[test]
fn path_len_limits_the_cas_below() {
    let head = "version = 1\n[policies.ca]\nkey = { type = \"EC\" }\nvalidity_days = 30\n[ca.root]\nsubject = \"CN=R\"\npolicy = \"ca\"\n";
    // factory has path_len 0 and issues sub: rejected at sub's issuer value.
    let text = format!(
        "{head}[ca.factory]\nsubject = \"CN=F\"\nissuer = \"root\"\npath_len = 0\npolicy = \"ca\"\n[ca.sub]\nsubject = \"CN=S\"\nissuer = \"factory\"\npolicy = \"ca\"\n"
    );
    let e = err(&text);
    assert_at(&e, 15, 10, "");
    assert_eq!(
        e.message,
        "CA `sub` is issued by `factory`, whose path_len = 0 allows no CA below it"
    );

    // root path_len 1: one intermediate is fine, a second level is not.
    let text = "version = 1\n[policies.ca]\nkey = { type = \"EC\" }\nvalidity_days = 30\n[ca.root]\nsubject = \"CN=R\"\npath_len = 1\npolicy = \"ca\"\n[ca.mid]\nsubject = \"CN=M\"\nissuer = \"root\"\npolicy = \"ca\"\n";
    ok(text);
    let deeper = format!("{text}[ca.low]\nsubject = \"CN=L\"\nissuer = \"mid\"\npolicy = \"ca\"\n");
    let e = err(&deeper);
    assert_at(&e, 15, 10, "");
    assert_eq!(
        e.message,
        "CA `low` is 2 levels below `root` (root -> mid -> low), but `root` has path_len = 1, which allows at most 1 CA below it"
    );

    // The sketch's factory (path_len 0) signs only leaves: fine.
    ok(SKETCH);
}

// ---- groups and enrollments ----------------------------------------------------------------

/// `with_base` plus one group `g` whose `devices` line is `devices` (line 23).
fn group_plan(devices: &str) -> String {
    with_base(&format!(
        "[groups.g]\nsigning_ca = \"factory\"\nhub = \"example-hub\"\nreprovision = \"reset\"\ndevice_policy = \"device\"\n{devices}\n"
    ))
}

#[test]
fn group_fields_are_checked() {
    let plan = ok(&group_plan("devices = { prefix = \"\", count = 12 }"));
    let g = &plan.groups["g"];
    assert_eq!(g.reprovision, ReprovisionPolicy::Reset);
    assert_eq!(g.device_ids().take(2).collect::<Vec<_>>(), ["01", "02"]);

    let text = group_plan("devices = { prefix = \"s\", count = 1 }");
    let e = err(&text.replace("\"reset\"", "\"sometimes\""));
    assert_at(
        &e,
        22,
        15,
        "unknown reprovision policy `sometimes` (expected migrate, reset or never)",
    );
    let e = err(&text.replace("\"example-hub\"", "\"example hub\""));
    assert_at(&e, 21, 7, "hub `example hub` is not a hub host name");
    let e = err(&text.replace("\"example-hub\"", "\"\""));
    assert_at(&e, 21, 7, "hub `` is not a hub host name");
}

#[test]
fn generated_devices_are_checked() {
    let e = err(&group_plan("devices = { prefix = \"s\", count = 0 }"));
    assert_at(&e, 24, 35, "count = 0 is out of range (1 to 10000000)");
    let e = err(&group_plan("devices = { prefix = \"s\", count = 10000001 }"));
    assert_at(&e, 24, 35, "count = 10000001 is out of range");
    ok(&group_plan("devices = { prefix = \"s\", count = 10000000 }"));
    let e = err(&group_plan("devices = { prefix = \"sensor_\", count = 3 }"));
    assert_at(&e, 24, 22, "device id prefix `sensor_` is not valid");
    let e = err(&group_plan(&format!(
        "devices = {{ prefix = \"{}\", count = 100 }}",
        "p".repeat(126)
    )));
    assert_at(&e, 24, 22, "ids would exceed 128 characters");
    let e = err(&group_plan("devices = { }"));
    assert_at(&e, 24, 11, "`devices` needs `prefix` and `count`");
    let e = err(&group_plan(
        "devices = { prefix = \"s\", count = 3, file = \"x.txt\" }",
    ));
    assert_at(&e, 24, 11, "either `prefix` and `count` or `file`, not both");
    let e = err(&group_plan("devices = { prefix = \"s\" }"));
    assert_at(&e, 24, 11, "`devices` has `prefix` but no `count`");
    let e = err(&group_plan("devices = { count = 3 }"));
    assert_at(&e, 24, 11, "`devices` has `count` but no `prefix`");
    let e = err(&group_plan("devices = { prefix = \"s\", count = 3, size = 1 }"));
    assert_at(&e, 24, 38, "unknown field `size`");
}

/// `prefix` or `count` misspelt (trial az10 N5's kind): the unknown key is named at its own
/// place with the keys `devices` takes, not the `devices` that then lacks it; the missing key
/// is still said before an error further down the group.
#[test]
fn a_misspelt_devices_key_is_named_before_the_devices_that_need_it() {
    let e = err(&group_plan("devices = { prefx = \"s\", count = 3 }"));
    assert_at(
        &e,
        24,
        13,
        "unknown field `prefx`, expected one of `prefix`, `count`, `file`",
    );
    let e = err(&group_plan("devices = { prefix = \"s\", cuont = 3 }"));
    assert_at(
        &e,
        24,
        27,
        "unknown field `cuont`, expected one of `prefix`, `count`, `file`",
    );
    let e = err(&group_plan("devices = { fiel = \"ids.txt\" }"));
    assert_at(&e, 24, 13, "unknown field `fiel`");
    let e = err(&group_plan(
        "devices = { count = 3 }\ndelivery = \"carrier-pigeon\"",
    ));
    assert_at(&e, 24, 11, "`devices` has `count` but no `prefix`");
}

#[test]
fn device_file_errors() {
    let dir = TempDir::new();
    let text = group_plan("devices = { file = \"sensors.txt\" }");
    let plan_path = dir.write("certroll.toml", &text);

    // Missing: located at the `file` value, naming the resolved path.
    let e = load(&plan_path).unwrap_err();
    assert_at(
        &e,
        24,
        20,
        &format!(
            "cannot read device list `{}`",
            dir.0.join("sensors.txt").display()
        ),
    );
    assert_eq!(e.path, plan_path);

    // A bad id: located in the list, line of the id, column 1.
    dir.write("sensors.txt", "# batch 1\nsensor-1\n\nsensor 2\n");
    let e = load(&plan_path).unwrap_err();
    assert_eq!(e.path, dir.0.join("sensors.txt"));
    assert_eq!((e.line, e.column), (Some(4), Some(1)));
    assert_eq!(
        e.to_string(),
        format!(
            "{}:4:1: invalid device id `sensor 2` in group `g`: use 1 to 128 letters, digits and `-`",
            dir.0.join("sensors.txt").display()
        )
    );

    // Too long an id.
    dir.write("sensors.txt", &format!("{}\n", "x".repeat(129)));
    let e = load(&plan_path).unwrap_err();
    assert_eq!((e.line, e.column), (Some(1), Some(1)));

    // Only comments.
    dir.write("sensors.txt", "# nothing yet\n\n");
    let e = load(&plan_path).unwrap_err();
    assert_at(&e, 24, 20, "has no device ids");

    // A relative plan path shows the list relative too (`dir/sensors.txt:2:1: ...`).
    dir.write("sensors.txt", "ok-1\nnot/ok\n");
    let cwd = std::env::current_dir().unwrap();
    let up: PathBuf = cwd.components().skip(1).map(|_| "..").collect();
    let relative_dir = up.join(dir.0.strip_prefix("/").unwrap());
    let e = parse(&relative_dir.join("certroll.toml"), &text).unwrap_err();
    assert!(e.path.is_relative());
    assert_eq!(e.path, relative_dir.join("sensors.txt"));
    let shown = e.to_string();
    let expected = format!(
        "{}:2:1: invalid device id `not/ok`",
        relative_dir.join("sensors.txt").display()
    );
    assert!(shown.starts_with(&expected), "{shown}");
}

#[test]
fn enrollment_fields_are_checked() {
    let text = with_base(
        "[enrollments.gw-1]\nissuer = \"factory\"\npolicy = \"device\"\nhub = \"h.example.net\"\nreprovision = \"never\"\n",
    );
    let plan = ok(&text);
    assert_eq!(plan.enrollments["gw-1"].reprovision, ReprovisionPolicy::Never);
    let e = err(&text.replace("issuer = \"factory\"", "issuer = \"intermediate\""));
    assert_at(&e, 20, 10, "CA `intermediate` is not defined");
    let e = err(&text.replace("\"never\"", "\"always\""));
    assert_at(&e, 23, 15, "unknown reprovision policy `always`");
    let e = err(&text.replace("h.example.net", "-h"));
    assert_at(&e, 22, 7, "hub `-h` is not a hub host name");
}

// ---- duplicate device ids ------------------------------------------------------------------

/// `with_base` plus groups (name, devices) and enrollments, each group from line 19 on.
fn fleet(groups: &[(&str, &str)], enrollments: &[&str]) -> String {
    let mut rest = String::new();
    // The first group signs with `factory`, each other group with a CA of its own (declared
    // last, so the groups' lines stay where the tests expect them).
    let ca = |i: usize, name: &str| {
        if i == 0 {
            "factory".to_string()
        } else {
            format!("ca-{name}")
        }
    };
    for (i, (name, devices)) in groups.iter().enumerate() {
        rest.push_str(&format!(
            "[groups.{name}]\nsigning_ca = \"{}\"\nhub = \"h\"\ndevice_policy = \"device\"\ndevices = {devices}\n",
            ca(i, name)
        ));
    }
    for name in enrollments {
        rest.push_str(&format!(
            "[enrollments.{name}]\nissuer = \"factory\"\npolicy = \"device\"\nhub = \"h\"\n"
        ));
    }
    for (i, (name, _)) in groups.iter().enumerate().skip(1) {
        rest.push_str(&format!(
            "[ca.{}]\nsubject = \"CN={name}\"\nissuer = \"root\"\npolicy = \"ca\"\n",
            ca(i, name)
        ));
    }
    with_base(&rest)
}

#[test]
fn two_groups_may_not_share_a_signing_ca() {
    let text = with_base(
        "[groups.m]\nsigning_ca = \"factory\"\nhub = \"hub-m\"\ndevice_policy = \"device\"\ndevices = { prefix = \"m-\", count = 2 }\n\
         [groups.n]\nsigning_ca = \"factory\"\nhub = \"hub-n\"\ndevice_policy = \"device\"\ndevices = { prefix = \"n-\", count = 2 }\n",
    );
    let e = err(&text);
    let line = text.lines().position(|l| l == "[groups.n]").unwrap() + 2;
    assert_at(
        &e,
        line,
        14,
        "group `n` has signing_ca = \"factory\", which group `m` already has",
    );
}

#[test]
fn duplicate_ids_across_generated_groups() {
    // a: s01..s10, b: s01..s09 (prefix "s0", width 1).
    let e = err(&fleet(
        &[
            ("a", "{ prefix = \"s\", count = 10 }"),
            ("b", "{ prefix = \"s0\", count = 9 }"),
        ],
        &[],
    ));
    assert_at(&e, 28, 11, "");
    assert_eq!(e.message, "device id `s01` appears in group `a` and in group `b`");
    // Same prefix, different widths: s1..s9 and s01..s99 never collide.
    ok(&fleet(
        &[
            ("a", "{ prefix = \"s\", count = 9 }"),
            ("b", "{ prefix = \"s\", count = 99 }"),
        ],
        &[],
    ));
    // sensor-0001.. vs sensor-1..: different widths.
    ok(&fleet(
        &[
            ("a", "{ prefix = \"sensor-\", count = 1000 }"),
            ("b", "{ prefix = \"sensor-1\", count = 5 }"),
        ],
        &[],
    ));
    // a: x01..x20; b: x2 + 1 digit = x21.. (not in a) -> fine; c: x1 + 1..9 = x11.. (in a).
    ok(&fleet(
        &[
            ("a", "{ prefix = \"x\", count = 20 }"),
            ("b", "{ prefix = \"x2\", count = 9 }"),
        ],
        &[],
    ));
    let e = err(&fleet(
        &[
            ("a", "{ prefix = \"x\", count = 20 }"),
            ("c", "{ prefix = \"x1\", count = 3 }"),
        ],
        &[],
    ));
    assert_eq!(e.message, "device id `x11` appears in group `a` and in group `c`");
}

#[test]
fn duplicate_ids_between_groups_and_enrollments() {
    let e = err(&fleet(
        &[("sensors", "{ prefix = \"sensor-\", count = 1000 }")],
        &["sensor-0042"],
    ));
    assert_at(&e, 24, 14, "");
    assert_eq!(
        e.message,
        "device id `sensor-0042` appears in group `sensors` and in enrollment `sensor-0042`"
    );
    // Not generated: sensor-42 (width 4) and sensor-1001 (beyond count).
    ok(&fleet(
        &[("sensors", "{ prefix = \"sensor-\", count = 1000 }")],
        &["sensor-42", "sensor-1001"],
    ));
}

#[test]
fn duplicate_ids_in_and_across_device_lists() {
    let dir = TempDir::new();
    dir.write("a.txt", "dev-1\ndev-2\n# spare\ndev-3\n");
    dir.write("b.txt", "dev-9\n\ndev-2\n");
    dir.write("dup.txt", "dev-1\ndev-7\ndev-1\n");

    let plan_path = dir.write(
        "p.toml",
        &fleet(
            &[("a", "{ file = \"a.txt\" }"), ("b", "{ file = \"b.txt\" }")],
            &[],
        ),
    );
    let e = load(&plan_path).unwrap_err();
    assert_eq!(e.path, dir.0.join("b.txt"));
    assert_eq!((e.line, e.column), (Some(3), Some(1)));
    assert_eq!(
        e.message,
        "device id `dev-2` appears in group `a` (a.txt line 2) and in group `b` (b.txt line 3)"
    );

    let plan_path = dir.write("p.toml", &fleet(&[("a", "{ file = \"dup.txt\" }")], &[]));
    let e = load(&plan_path).unwrap_err();
    assert_eq!((e.path.clone(), e.line), (dir.0.join("dup.txt"), Some(3)));
    assert_eq!(
        e.message,
        "device id `dev-1` appears in group `a` (dup.txt line 1) and in group `a` (dup.txt line 3)"
    );

    // An enrollment before the group: the list line is reported.
    let text = fleet(&[], &["dev-3"])
        + "[groups.a]\nsigning_ca = \"factory\"\nhub = \"h\"\ndevice_policy = \"device\"\ndevices = { file = \"a.txt\" }\n";
    let plan_path = dir.write("p.toml", &text);
    let e = load(&plan_path).unwrap_err();
    assert_eq!((e.path.clone(), e.line), (dir.0.join("a.txt"), Some(4)));
    assert_eq!(
        e.message,
        "device id `dev-3` appears in enrollment `dev-3` and in group `a` (a.txt line 4)"
    );

    // A generated group and a list.
    dir.write("c.txt", "s-07\n");
    let plan_path = dir.write(
        "p.toml",
        &fleet(
            &[
                ("gen", "{ prefix = \"s-\", count = 10 }"),
                ("c", "{ file = \"c.txt\" }"),
            ],
            &[],
        ),
    );
    let e = load(&plan_path).unwrap_err();
    assert_eq!(
        e.message,
        "device id `s-07` appears in group `gen` and in group `c` (c.txt line 1)"
    );
}

#[test]
fn first_common_matches_brute_force() {
    use super::validate::first_common;
    type Gen = (&'static str, u64);
    let prefixes = ["", "s", "s0", "s1", "s00", "s01", "s10", "s2", "t"];
    let counts = [1, 5, 9, 10, 11, 99, 100, 120];
    let ids = |g: &Gen| -> HashSet<String> {
        let width = g.1.to_string().len();
        (1..=g.1).map(|i| format!("{}{i:0width$}", g.0)).collect()
    };
    for pa in prefixes {
        for pb in prefixes {
            for &ca in &counts {
                for &cb in &counts {
                    let (a, b) = ((pa, ca), (pb, cb));
                    let common: HashSet<String> = ids(&a).intersection(&ids(&b)).cloned().collect();
                    match first_common(a, b) {
                        Some(id) => assert!(common.contains(&id), "{a:?} {b:?}: {id} not common"),
                        None => assert!(common.is_empty(), "{a:?} {b:?}: missed {common:?}"),
                    }
                }
            }
        }
    }
}

// ---- ordering of errors --------------------------------------------------------------------

#[test]
fn the_first_error_in_the_file_is_reported() {
    // The group comes first in the file, the broken policy after it: the group's error wins
    // although policies are checked first.
    let text = "version = 1
[groups.g]
signing_ca = \"nope\"
hub = \"h\"
device_policy = \"device\"
devices = { prefix = \"d\", count = 1 }

[policies.device]
key = { type = \"EC\", curve = \"P-192\" }
validity_days = 30
";
    assert_at(&err(text), 3, 14, "CA `nope` is not defined");
}

// ---- fixtures ------------------------------------------------------------------------------

/// Each `tests/fixtures/plans/broken-*.toml` starts with `# error: LINE:COLUMN: message start`.
#[test]
fn fixtures_load_or_fail_as_their_first_line_says() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/plans");
    let plan = load(&dir.join("full.toml")).unwrap_or_else(|e| panic!("{e}"));
    assert!(!plan.cas.is_empty() && !plan.groups.is_empty() && !plan.enrollments.is_empty());

    let mut broken = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !(name.starts_with("broken-") && name.ends_with(".toml")) {
            continue;
        }
        broken += 1;
        let text = std::fs::read_to_string(&path).unwrap();
        let first = text.lines().next().unwrap_or_default();
        let expected = first
            .strip_prefix("# error: ")
            .unwrap_or_else(|| panic!("{name}: first line must be `# error: LINE:COL: message`"));
        let e = load(&path).expect_err(&name);
        let shown = e.to_string();
        let after_path = shown.split_once(".toml:").or_else(|| shown.split_once(".txt:"));
        let got = after_path.map_or(shown.as_str(), |(_, rest)| rest);
        assert!(
            got.starts_with(expected),
            "{name}: got `{shown}`, expected `{expected}`"
        );
    }
    assert!(broken >= 5, "expected the broken-*.toml fixtures, found {broken}");
}

#[test]
fn serve_defaults_without_a_serve_table() {
    let plan = ok("version = 1\n");
    assert_eq!(plan.serve, crate::plan::ServeConfig::default());
    assert_eq!(plan.serve.vault, "certroll");
    assert!(plan.serve.principals.is_empty());
}

#[test]
fn serve_principals_get_their_permissions_and_all_expands() {
    use crate::plan::CertificatePermission as P;
    let plan = ok(r#"version = 1
[serve]
vault = "Rehearsal-Vault"
[serve.principals.ops]
token_env = "OPS_TOKEN"
permissions = ["all"]
arm_role = "Contributor"
[serve.principals.auditor]
token_env = "AUDIT_TOKEN"
permissions = ["List", "get", "get"]
arm_role = "reader"
[serve.principals.vault-only]
token_env = "VAULT_TOKEN"
permissions = ["get"]
"#);
    assert_eq!(plan.serve.vault, "rehearsal-vault", "host names are lower case");
    use crate::plan::ArmRole;
    assert_eq!(plan.serve.principals["ops"].arm_role, Some(ArmRole::Contributor));
    assert_eq!(plan.serve.principals["auditor"].arm_role, Some(ArmRole::Reader));
    assert_eq!(
        plan.serve.principals["vault-only"].arm_role, None,
        "no arm_role: no ARM access"
    );
    assert_eq!(plan.serve.principals["ops"].permissions, P::ALL.to_vec());
    assert_eq!(
        plan.serve.principals["auditor"].permissions,
        vec![P::Get, P::List]
    );
    assert_eq!(plan.serve.principals["auditor"].token_env, "AUDIT_TOKEN");
}

#[test]
fn serve_errors_name_the_value_and_never_echo_a_token() {
    let e = err(
        "version = 1\n[serve.principals.ops]\ntoken_env = \"OPS_TOKEN\"\npermissions = [\"get\", \"sign\"]\n",
    );
    assert_at(&e, 4, 23, "unknown certificate permission `sign`");
    let e = err(
        "version = 1\n[serve.principals.ops]\ntoken_env = \"OPS_TOKEN\"\npermissions = [\"get\"]\narm_role = \"owner\"\n",
    );
    assert_at(
        &e,
        5,
        12,
        "unknown arm_role `owner` (expected \"reader\" or \"contributor\"",
    );
    let e = err(
        "version = 1\n[serve.principals.ops]\ntoken_env = \"s3cr3t-token-value!\"\npermissions = [\"get\"]\n",
    );
    assert_at(&e, 3, 13, "token_env must be the name of an environment variable");
    assert!(!e.message.contains("s3cr3t"), "{e}");
    let e = err(
        "version = 1\n[serve.principals.a]\ntoken_env = \"T\"\npermissions = []\n[serve.principals.b]\ntoken_env = \"T\"\npermissions = []\n",
    );
    assert_at(&e, 6, 13, "both take their token from `T`");
    let e = err("version = 1\n[serve]\ndps = \"-dps\"\n");
    assert_at(&e, 3, 7, "dps name `-dps` is not valid");
    let e = err("version = 1\n[serve]\nrate = 5\n");
    assert_eq!(e.line, Some(3), "unknown keys are refused: {e}");
}

#[test]
fn serve_services_take_rates_and_faults_within_range() {
    let plan = ok(
        "version = 1\n[serve.services.keyvault]\nrate_per_second = 10\nerror_percent = 2.5\nerror_status = 500\n",
    );
    let kv = &plan.serve.services["keyvault"];
    assert_eq!(
        (kv.rate_per_second, kv.error_percent, kv.error_status),
        (Some(10), 2.5, 500)
    );
    let e = err("version = 1\n[serve.services.vault]\nrate_per_second = 1\n");
    assert_at(&e, 2, 17, "unknown service `vault`");
    let e = err("version = 1\n[serve.services.keyvault]\nerror_percent = 101.0\n");
    assert_at(&e, 3, 17, "error_percent = 101 is out of range");
    let e = err("version = 1\n[serve.services.keyvault]\nerror_status = 502\n");
    assert_at(&e, 3, 16, "must be 500 or 503");
}

/// docs/plan.md: the first schema error in the file is the one reported, whether it is an
/// unknown key or a wrong value, and whichever the toml reader meets first.
#[test]
fn the_first_schema_error_in_the_file_is_reported() {
    let policy = "version = 1\n[policies.p]\nkey = { type = \"EC\", curve = \"P-256\" }\n";
    // A wrong value above an unknown key.
    let e = err(&format!("{policy}validity_days = \"x\"\nfoo = 1\n"));
    assert_at(&e, 4, 17, "expected an integer");
    // Above two unknown keys.
    let e = err(&format!("{policy}validity_days = \"x\"\nfoo = 1\nbar = 2\n"));
    assert_at(&e, 4, 17, "expected an integer");
    // An unknown key above a wrong value.
    let e = err(&format!("{policy}foo = 1\nvalidity_days = \"x\"\n"));
    assert_at(&e, 4, 1, "unknown field `foo`");
    // Two unknown keys: the first.
    let e = err(&format!(
        "{policy}validity_days = 3\nfoo = 1\n[policies.q]\nbar = 2\n"
    ));
    assert_at(&e, 5, 1, "unknown field `foo`");
    // An unknown key inside an inline table is reported as it is.
    let e = err(
        "version = 1\n[policies.p]\nkey = { type = \"EC\", curve = \"P-256\", x = 1 }\nvalidity_days = \"y\"\n",
    );
    assert!(e.message.contains("unknown field `x`"), "{e}");
}

/// Two CAs with room for an error in each: `in_r` goes in `[ca.r]`, `in_m` in `[ca.m]`
/// (`[ca.m]` loses its `policy` line when `in_m` holds `MISSING`).
fn two_cas(in_r: &str, in_m: &str) -> String {
    let policy = |extra: &str| {
        if extra.contains("MISSING") {
            ""
        } else {
            "policy = \"p\"\n"
        }
    };
    let (r_policy, m_policy) = (policy(in_r), policy(in_m));
    let (in_r, in_m) = (in_r.replace("MISSING", ""), in_m.replace("MISSING", ""));
    format!(
        "version = 1\n[policies.p]\nkey = {{ type = \"EC\" }}\nvalidity_days = 365\n\
         [ca.r]\nsubject = \"CN=R\"\n{r_policy}{in_r}\
         [ca.m]\nsubject = \"CN=M\"\nissuer = \"r\"\n{m_policy}{in_m}"
    )
}

/// Asserts the error is on the line of `text` that holds `at` and says `needle`.
#[track_caller]
fn assert_first(text: &str, at: &str, needle: &str) {
    let line = text
        .lines()
        .position(|l| l.contains(at))
        .unwrap_or_else(|| panic!("`{at}` is not in the plan"))
        + 1;
    let e = err(text);
    assert_eq!(
        e.line,
        Some(line),
        "expected line {line} (`{at}`), got: {e}\n{text}"
    );
    assert!(
        e.message.contains(needle),
        "`{}` should say `{needle}`",
        e.message
    );
}

/// docs/plan.md §Errors: whichever phase finds them (TOML syntax, unknown keys and sub-tables,
/// wrong types, missing keys, values, references, device lists), the error reported is the one
/// that comes first in the file. Each pair is tried in both orders.
#[test]
fn the_first_error_in_the_file_wins_whatever_phase_finds_it() {
    // (the error's line, text to find it by, what it says)
    let unknown = ("zzz = 1\n", "zzz", "unknown field `zzz`");
    let subtable = ("[ca.X.extra]\na = 1\n", "extra]", "unknown field `extra`");
    let wrong_type = ("path_len = \"x\"\n", "path_len = \"x\"", "expected an integer");
    let value = ("path_len = -1\n", "path_len = -1", "path_len");
    let reference = (
        "MISSINGpolicy = \"nope\"\n",
        "nope",
        "policy `nope` is not defined",
    );
    let overflow = (
        "path_len = 9223372036854775808\n",
        "9223372036854775808",
        "9223372036854775808",
    );
    let kinds = [unknown, subtable, wrong_type, value, reference, overflow];
    for (i, a) in kinds.iter().enumerate() {
        for (j, b) in kinds.iter().enumerate() {
            if i == j {
                continue;
            }
            let text = two_cas(&a.0.replace("X", "r"), &b.0.replace("X", "m"));
            // `[ca.r.extra]` closes `[ca.r]`: a reference after it lands in the sub-table.
            if a.1 == "extra]" {
                continue;
            }
            assert_first(&text, a.1, a.2);
        }
    }
    // The trial's two examples: an unknown key above an unknown sub-table; an undefined policy
    // above an unknown key.
    let text = two_cas("", "zzz = 1\n[ca.m.extra]\na = 1\n");
    assert_first(&text, "zzz", "unknown field `zzz`");
    let text = two_cas("", "MISSINGpolicy = \"nope\"\nbogus = 1\n");
    assert_first(&text, "nope", "policy `nope` is not defined");
    // A missing key is ordered at the end of its table: an error inside the table (a misspelt
    // key, most often) comes first; one in an earlier table comes before it; one after the table
    // after it.
    let text = two_cas("", "MISSINGpolicyy = \"p\"\n");
    assert_first(&text, "policyy", "unknown field `policyy`");
    let text = two_cas("path_len = -1\n", "MISSING");
    assert_first(&text, "path_len", "path_len");
    let text = two_cas("", "MISSING")
        + "[groups.g]\nsigning_ca = \"m\"\nhub = \"h\"\ndevice_policy = \"p\"\ndevices = { count = -1, prefix = \"d-\" }\n";
    assert_first(&text, "[ca.m]", "missing field `policy`");
    // A TOML syntax error stops the reading; schema errors above it still come first.
    let text = two_cas("zzz = 1\n", "= 3\n");
    assert_first(&text, "zzz", "unknown field `zzz`");
    let text = two_cas("= 3\n", "zzz = 1\n");
    let e = err(&text);
    assert_eq!(e.line, Some(8), "{e}");
    // A device list's errors are ordered at its `file` value.
    let dir = TempDir::new();
    dir.write("devices.txt", "ok-1\nbad_id\n");
    let group = "[groups.g]\nsigning_ca = \"m\"\nhub = \"h\"\ndevice_policy = \"p\"\ndevices = { file = \"devices.txt\" }\n";
    let e = parse(&dir.0.join("p.toml"), &(two_cas("", "") + group + "zzz = 1\n")).unwrap_err();
    assert!(e.path.ends_with("devices.txt") && e.line == Some(2), "{e}");
    let e = parse(&dir.0.join("p.toml"), &(two_cas("zzz = 1\n", "") + group)).unwrap_err();
    assert_eq!(
        (e.line, e.message.as_str()),
        (
            Some(8),
            "unknown field `zzz`, expected one of `subject`, `issuer`, `path_len`, `policy`"
        ),
        "{e}"
    );
}

/// Issue 10 item 20: a table-valued key given another type says what is expected in words,
/// never a Rust or serde type name; an integer too large for 64 bits gets the key's own range.
#[test]
fn a_wrong_type_for_a_table_says_what_is_expected_in_words() {
    let policy = "[policies.p]\nkey = { type = \"EC\" }\nvalidity_days = 365\n";
    let cases = [
        "backend = \"x\"\n".to_string(),
        "[backend]\ndps = \"x\"\nkind = \"azure\"\n".to_string(),
        "[backend]\nhubs = \"x\"\n".to_string(),
        "[backend]\nhubs = { h = \"x\" }\nkind = \"azure\"\n".to_string(),
        "[backend]\nresolve = \"x\"\n".to_string(),
        "contacts = \"x\"\n".to_string(),
        "policies = \"x\"\n".to_string(),
        "policies = { p = \"x\" }\n".to_string(),
        "[policies.p]\nkey = \"EC\"\nvalidity_days = 365\n".to_string(),
        "[policies.p]\nkey = { type = \"EC\" }\nvalidity_days = 365\nlifetime_actions = [\"x\"]\n"
            .to_string(),
        "ca = \"x\"\n".to_string(),
        format!("ca = {{ r = \"x\" }}\n{policy}"),
        "groups = \"x\"\n".to_string(),
        format!("groups = {{ g = 5 }}\n{policy}"),
        format!(
            "{policy}[ca.r]\nsubject = \"CN=R\"\npolicy = \"p\"\n[groups.g]\nsigning_ca = \"r\"\nhub = \"h\"\ndevice_policy = \"p\"\ndevices = \"d-\"\n"
        ),
        "enrollments = \"x\"\n".to_string(),
        "enrollments = { e = [] }\n".to_string(),
        "mail = \"x\"\n".to_string(),
        "hooks = \"x\"\n".to_string(),
        "serve = \"x\"\n".to_string(),
        "[serve]\nprincipals = \"x\"\n".to_string(),
        "[serve]\nprincipals = { a = \"x\" }\n".to_string(),
        "[serve]\nservices = \"x\"\n".to_string(),
        "[serve]\nservices = { keyvault = \"x\" }\n".to_string(),
    ];
    for case in &cases {
        let e = err(&format!("version = 1\n{case}"));
        for leak in ["struct", "enum", "Raw", "variant", "i128", "i64", "u32", "map"] {
            assert!(!e.message.contains(leak), "`{leak}` in: {e}\n{case}");
        }
        assert!(
            e.message.contains("expected a") && e.message.contains("table"),
            "{e}\n{case}"
        );
    }
    // The trial's examples.
    let e = err(&format!(
        "version = 1\n{policy}[ca.r]\nsubject = \"CN=R\"\npolicy = \"p\"\n[groups.g]\nsigning_ca = \"r\"\nhub = \"h\"\ndevice_policy = \"p\"\ndevices = \"d-\"\n"
    ));
    assert_at(
        &e,
        12,
        11,
        "invalid type: string \"d-\", expected a table like { prefix = \"sensor-\", count = 100 } or { file = \"devices.txt\" }",
    );
    let e = err("version = 1\n[policies.p]\nkey = \"EC\"\nvalidity_days = 365\n");
    assert_at(
        &e,
        3,
        7,
        "expected a table like { type = \"EC\", curve = \"P-256\" }",
    );
    // Integers past 64 bits: the key's range, said of the integer as written.
    let e = err("version = 1\n[policies.p]\nkey = { type = \"EC\" }\nvalidity_days = 9223372036854775808\n");
    assert_at(
        &e,
        4,
        17,
        "validity_days = 9223372036854775808 is out of range (1 to 36500)",
    );
    let e = err("version = 1\n[policies.p]\nkey = { type = \"EC\" }\nvalidity_days = -9223372036854775809\n");
    assert_at(
        &e,
        4,
        17,
        "validity_days = -9223372036854775809 is out of range (1 to 36500)",
    );
    let e = err("version = 1\nnot_before_skew_minutes = 99999999999999999999999999999999999999999\n");
    assert!(
        e.message.contains("out of range") && !e.message.contains("i128"),
        "{e}"
    );
}

/// Every struct of the raw schema has words in the message table.
#[test]
fn every_raw_struct_has_words() {
    let source = include_str!("raw.rs");
    for line in source.lines() {
        if let Some(rest) = line.strip_prefix("pub(super) struct ") {
            let name = rest.split([' ', '{', '<']).next().unwrap();
            assert!(
                TABLES.iter().any(|(rust, _)| *rust == name),
                "{name} has no words in TABLES"
            );
        }
    }
}
