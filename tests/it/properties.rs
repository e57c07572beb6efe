//! proptest properties where a coverage-guided fuzzer (fuzz/) reaches poorly: structured values
//! with a meaning (subjects made of attributes, plans that are valid TOML of the right shape
//! with odd values in every field).

use certroll::pki::spec::{DnAttribute, DnKind, Subject};
use proptest::prelude::*;

/// An attribute value as `Subject::parse` returns them: 1 to 64 characters, no control
/// characters, no surrounding white space; the characters the syntax uses are favoured.
fn value() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            3 => proptest::char::any(),
            1 => proptest::sample::select(vec![',', ';', '\\', '=', ' ', 'a', '"', '+']),
        ],
        1..=64,
    )
    .prop_map(|cs| cs.into_iter().filter(|c| !c.is_control()).collect::<String>())
    .prop_map(|s| s.trim().to_string())
    .prop_filter("non-empty", |s| !s.is_empty())
}

fn subject() -> impl Strategy<Value = Subject> {
    // One value per attribute type, as `Subject::parse` demands.
    (
        value(),
        proptest::sample::subsequence(vec![DnKind::O, DnKind::OU, DnKind::ST, DnKind::L], 0..=4),
    )
        .prop_flat_map(|(cn, kinds)| {
            let n = kinds.len();
            (Just(cn), Just(kinds), proptest::collection::vec(value(), n))
        })
        .prop_map(|(cn, kinds, values)| {
            let mut attrs = vec![DnAttribute {
                kind: DnKind::CN,
                value: cn,
            }];
            attrs.extend(
                kinds
                    .into_iter()
                    .zip(values)
                    .map(|(kind, value)| DnAttribute { kind, value }),
            );
            Subject(attrs)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// A subject printed (in reports, JSON, `vault show`) parses back to the same subject, so
    /// that what certroll shows can be pasted into a plan.
    #[test]
    fn subject_display_parses_back(s in subject()) {
        let shown = s.to_string();
        prop_assert_eq!(Subject::parse(&shown), Ok(s), "printed as `{}`", shown);
    }

    /// Any text: `Subject::parse` answers (no panic), and what it accepts round-trips.
    #[test]
    fn subject_parse_any_text(text in "\\PC{0,80}|[CNOUSTL=,;\\\\ a-z]{0,40}") {
        if let Ok(s) = Subject::parse(&text) {
            prop_assert_eq!(Subject::parse(&s.to_string()), Ok(s));
        }
    }
}

/// A TOML value that is any string, any integer, a float, a bool, or an array of strings.
fn odd_value() -> impl Strategy<Value = toml::Value> {
    prop_oneof![
        "\\PC{0,20}".prop_map(toml::Value::String),
        proptest::sample::select(vec![
            "EC",
            "RSA",
            "EC-HSM",
            "RSA-HSM",
            "P-256",
            "P-521",
            "pem",
            "pfx",
            "auto-renew",
            "email-contacts",
            "migrate",
            "reset",
            "never",
            "root",
            "p",
            "digitalSignature",
            "keyCertSign",
            "CN=x",
            "hub",
            "local",
            "a.example",
            "10.0.0.1",
            "../x",
            "",
        ])
        .prop_map(|s| toml::Value::String(s.to_string())),
        any::<i64>().prop_map(toml::Value::Integer),
        prop_oneof![
            Just(0i64),
            Just(-1),
            Just(1),
            Just(100),
            Just(101),
            Just(255),
            Just(256),
            Just(36500),
            Just(i64::from(u32::MAX)),
            Just(i64::from(u32::MAX) + 1)
        ]
        .prop_map(toml::Value::Integer),
        any::<f64>().prop_map(toml::Value::Float),
        any::<bool>().prop_map(toml::Value::Boolean),
        proptest::collection::vec("\\PC{0,12}", 0..3)
            .prop_map(|v| toml::Value::Array(v.into_iter().map(toml::Value::String).collect())),
    ]
}

/// The plan template: every `{}` is a field that gets an odd value.
const FIELDS: &[&str] = &[
    "policies.p.key.type",
    "policies.p.key.curve",
    "policies.p.key.size",
    "policies.p.key.exportable",
    "policies.p.validity_days",
    "policies.p.key_usage",
    "policies.p.extended_key_usage",
    "policies.p.dns_names",
    "policies.p.content_type",
    "policies.p.lifetime_actions.0.lifetime_percentage",
    "policies.p.lifetime_actions.1.days_before_expiry",
    "policies.p.lifetime_actions.0.action",
    "policies.c.key.type",
    "policies.c.key.size",
    "policies.c.validity_days",
    "policies.c.key_usage",
    "ca.root.subject",
    "ca.root.path_len",
    "ca.root.policy",
    "ca.sub.issuer",
    "ca.sub.path_len",
    "groups.g.signing_ca",
    "groups.g.hub",
    "groups.g.reprovision",
    "groups.g.device_policy",
    "groups.g.devices.prefix",
    "groups.g.devices.count",
    "enrollments.e.issuer",
    "enrollments.e.hub",
    "enrollments.e.policy",
];

fn base_plan() -> toml::Table {
    toml::from_str(
        r#"
version = 1
[policies.p]
key = { type = "EC", curve = "P-256", exportable = true }
validity_days = 365
key_usage = ["digitalSignature"]
extended_key_usage = ["clientAuth"]
dns_names = ["a.example"]
content_type = "pem"
lifetime_actions = [
  { lifetime_percentage = 80, action = "auto-renew" },
  { days_before_expiry = 30, action = "email-contacts" },
]
[policies.c]
key = { type = "EC-HSM", curve = "P-384" }
validity_days = 3650
key_usage = ["keyCertSign", "cRLSign"]
[ca.root]
subject = "CN=Root"
path_len = 1
policy = "c"
[ca.sub]
subject = "CN=Sub"
issuer = "root"
path_len = 0
policy = "c"
[groups.g]
signing_ca = "sub"
hub = "hub"
reprovision = "migrate"
device_policy = "p"
devices = { prefix = "d-", count = 3 }
[enrollments.e]
issuer = "sub"
hub = "hub"
policy = "p"
"#,
    )
    .expect("the base plan is TOML")
}

/// Sets a dotted path (numbers index arrays) in a TOML table, creating tables on the way.
fn set(table: &mut toml::Table, path: &str, value: toml::Value) {
    let mut parts = path.split('.').peekable();
    let mut cur = table;
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            cur.insert(part.to_string(), value);
            return;
        }
        let next = cur
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(Default::default()));
        let next = match next {
            toml::Value::Array(a) => {
                let i: usize = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
                match a.get_mut(i) {
                    Some(toml::Value::Table(t)) => t,
                    _ => return,
                }
            }
            toml::Value::Table(t) => t,
            _ => return,
        };
        cur = next;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    /// A plan that is valid TOML of the right shape, with odd values in up to four fields,
    /// either validates or is refused with an error pointing into the plan: never a panic, and
    /// the location (when there is one) is a line of the text.
    #[test]
    fn plan_validation_answers_every_odd_plan(
        changes in proptest::collection::vec(
            (proptest::sample::select(FIELDS.to_vec()), odd_value()), 1..5),
    ) {
        let mut plan = base_plan();
        for (field, value) in changes {
            set(&mut plan, field, value);
        }
        let text = toml::to_string(&plan).expect("serialize");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("certroll.toml");
        if let Err(e) = certroll::plan::parse(&path, &text) {
            prop_assert!(e.path.starts_with(dir.path()), "{}", e);
            prop_assert!(!e.message.is_empty());
            if let Some(line) = e.line {
                prop_assert!(line >= 1 && line <= text.lines().count() + 1, "{} in\n{}", e, text);
            }
        }
    }
}

/// The base plan itself validates, so the property above starts from a plan that passes.
#[test]
fn the_property_base_plan_validates() {
    let text = toml::to_string(&base_plan()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    certroll::plan::parse(&dir.path().join("certroll.toml"), &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
}
