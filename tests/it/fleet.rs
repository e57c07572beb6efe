//! Issue 3 at fleet scale, the way a new user checks it: a plan of a few thousand devices, only
//! the `certroll` binary (its JSON output) and `openssl` as the independent checker. Whether a
//! device works is asked of certroll itself (`reprovision --dry-run` runs the enrollment service's
//! decision for the certificate each device holds) and read from `status` (the hub's
//! thumbprints, the groups' and enrollments' slots); CRLs and chains are checked by openssl.

use crate::roll::at;
use crate::util::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

/// One enrollment group of the test plan.
struct Group {
    name: &'static str,
    ca: &'static str,
    reprovision: &'static str,
    prefix: &'static str,
    count: u32,
}

impl Group {
    /// The device ids `devices = { prefix, count }` declares: the number zero-padded to the digits
    /// of `count`.
    fn ids(&self) -> Vec<String> {
        let width = self.count.to_string().len();
        (1..=self.count)
            .map(|i| format!("{}{i:0width$}", self.prefix))
            .collect()
    }
}

/// A root, three intermediates below it (`line-a`, `line-b`, `line-c`), these groups and individually
/// enrolled gateways (issued by `line-a`). Group NAME assigns to hub `hub-NAME`, gateways to
/// `hub-gw`. Devices: EC P-256, 365 days, auto-renew 30 days
/// before expiry; CAs: EC P-256, ten years, no lifetime action (so `--due` never rolls a CA).
fn plan(groups: &[Group], gateways: &[&str]) -> String {
    let mut p = String::from(
        r#"version = 1

[policies.device]
key = { type = "EC", curve = "P-256", exportable = true }
validity_days = 365
key_usage = ["digitalSignature"]
extended_key_usage = ["clientAuth"]
lifetime_actions = [{ days_before_expiry = 30, action = "auto-renew" }]

[policies.ca]
key = { type = "EC", curve = "P-256", exportable = false }
validity_days = 3650

[ca.root]
subject = "CN=Fleet Root, O=Fleet Test"
policy = "ca"

[ca.line-a]
subject = "CN=Line A, O=Fleet Test"
issuer = "root"
path_len = 0
policy = "ca"

[ca.line-b]
subject = "CN=Line B, O=Fleet Test"
issuer = "root"
path_len = 0
policy = "ca"

[ca.line-c]
subject = "CN=Line C, O=Fleet Test"
issuer = "root"
path_len = 0
policy = "ca"
"#,
    );
    for g in groups {
        p.push_str(&format!(
            "\n[groups.{0}]\nsigning_ca = \"{1}\"\nhub = \"hub-{0}\"\nreprovision = \"{2}\"\n\
             device_policy = \"device\"\ndevices = {{ prefix = \"{3}\", count = {4} }}\n",
            g.name, g.ca, g.reprovision, g.prefix, g.count
        ));
    }
    for gw in gateways {
        p.push_str(&format!(
            "\n[enrollments.{gw}]\nissuer = \"line-a\"\npolicy = \"device\"\nhub = \"hub-gw\"\n"
        ));
    }
    p
}

/// A fresh store with this plan issued (at [`NOW`]).
fn fleet(groups: &[Group], gateways: &[&str]) -> TestEnv {
    let env = TestEnv::new();
    env.write("plan.toml", &plan(groups, gateways));
    let t = Instant::now();
    env.plan_run(&["issue", "-q"]).ok();
    eprintln!("issue: {:?}", t.elapsed());
    env
}

/// A copy of an environment's plan and store (taken while no certroll runs on it).
fn clone_of(base: &TestEnv) -> TestEnv {
    let env = TestEnv::new();
    std::fs::copy(base.path("plan.toml"), env.path("plan.toml")).unwrap();
    std::fs::create_dir(env.store_dir()).unwrap();
    for entry in std::fs::read_dir(base.store_dir()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), env.store_dir().join(entry.file_name())).unwrap();
    }
    env
}

/// certroll at `now`, with `-o json`.
fn json(env: &TestEnv, now: &str, args: &[&str]) -> Run {
    env.plan_run(&[&["--now", now][..], args, &["-o", "json"]].concat())
}

fn status(env: &TestEnv, now: &str) -> Value {
    json(env, now, &["status"]).ok().json()
}

/// `status`'s devices by id.
fn devices(s: &Value) -> BTreeMap<String, Value> {
    s["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["id"].as_str().unwrap().to_string(), d.clone()))
        .collect()
}

fn named<'a>(s: &'a Value, list: &str, name: &str) -> &'a Value {
    s[list]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == name)
        .unwrap_or_else(|| panic!("no {list} `{name}` in status"))
}

fn str_of(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .to_string()
}

/// The thumbprints the hub lets in for this device (none when its identity is disabled or gone).
fn hub_accepts(d: &Value) -> BTreeSet<String> {
    let h = &d["hub_identity"];
    if h.is_null() || h["status"] != "enabled" {
        return BTreeSet::new();
    }
    ["primary_thumbprint", "secondary_thumbprint"]
        .iter()
        .filter_map(|k| h[*k].as_str().map(str::to_string))
        .collect()
}

/// Asks the enrollment service, through `reprovision --dry-run`, about the certificate every
/// device holds; returns the devices it would refuse, after checking the report adds up.
fn refused_by_service(env: &TestEnv, now: &str, fleet_size: usize) -> BTreeSet<String> {
    let run = json(env, now, &["reprovision", "--dry-run"]);
    let r = run.json();
    let devs = r["devices"].as_array().unwrap();
    assert_eq!(devs.len(), fleet_size, "every device is asked");
    let refused: BTreeSet<String> = devs
        .iter()
        .filter(|d| d["status"] == "would-fail")
        .map(|d| str_of(&d["device"]))
        .collect();
    // The dry run exits as the run would: 1 when any device would be refused.
    assert_eq!(run.code, i32::from(!refused.is_empty()), "{}", run.stderr);
    for d in devs {
        let st = d["status"].as_str().unwrap();
        assert!(
            ["would-fail", "would-assign", "unchanged"].contains(&st),
            "unexpected reprovision status: {d}"
        );
    }
    assert_eq!(r["rejected"], refused.len(), "{}", r["devices_cut_off"]);
    assert_eq!(r["devices_cut_off"]["count"], refused.len());
    refused
}

/// Every device of the fleet: the enrollment service would accept the certificate it holds.
fn assert_everyone_works(env: &TestEnv, now: &str, fleet_size: usize, when: &str) {
    let refused = refused_by_service(env, now, fleet_size);
    assert!(
        refused.is_empty(),
        "{when}: the service refuses {} device(s) with the certificate they hold, e.g. {:?}",
        refused.len(),
        refused.iter().take(5).collect::<Vec<_>>()
    );
}

/// The certificate blocks of a PEM file, in order.
fn pem_blocks(text: &str, label: &str) -> Vec<String> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    text.split(&begin)
        .skip(1)
        .map(|rest| format!("{begin}{}{end}\n", rest.split(&end).next().unwrap()))
        .collect()
}

/// Exports a device (leaf + chain up to, not including, the root) at `now` into `file`, and
/// writes its leaf and its issuing CA as `file.leaf.pem` and `file.ca.pem`.
fn export_device(env: &TestEnv, now: &str, id: &str, file: &str) {
    env.plan_run(&["--now", now, "export", &format!("device:{id}"), "--out", file])
        .ok();
    let certs = pem_blocks(&std::fs::read_to_string(env.path(file)).unwrap(), "CERTIFICATE");
    assert_eq!(certs.len(), 2, "{id}: leaf and intermediate");
    env.write(&format!("{file}.leaf.pem"), &certs[0]);
    env.write(&format!("{file}.ca.pem"), &certs[1]);
}

fn export_ca(env: &TestEnv, now: &str, ca: &str, file: &str) {
    env.plan_run(&["--now", now, "export", &format!("ca:{ca}"), "--out", file])
        .ok();
}

fn export_crl(env: &TestEnv, now: &str, ca: &str, file: &str) {
    env.plan_run(&[
        "--now",
        now,
        "export",
        &format!("ca:{ca}"),
        "--crl",
        "--out",
        file,
    ])
    .ok();
}

/// The SHA-1 thumbprint (Azure's x509Thumbprint) of a PEM certificate, as openssl computes it.
fn openssl_thumbprint(env: &TestEnv, file: &str) -> String {
    let r = env
        .openssl(&["x509", "-in", file, "-noout", "-fingerprint", "-sha1"])
        .ok();
    r.stdout
        .trim()
        .rsplit('=')
        .next()
        .unwrap()
        .replace(':', "")
        .to_uppercase()
}

fn openssl_serial(env: &TestEnv, file: &str) -> String {
    let r = env.openssl(&["x509", "-in", file, "-noout", "-serial"]).ok();
    normal_serial(r.stdout.trim().trim_start_matches("serial="))
}

fn normal_serial(s: &str) -> String {
    let s = s.trim().to_uppercase().replace(':', "");
    let t = s.trim_start_matches('0');
    if t.is_empty() { "0".into() } else { t.into() }
}

/// The serials listed by every CRL in a PEM file, as openssl reads them.
fn crl_serials(env: &TestEnv, file: &str) -> Vec<String> {
    let text = std::fs::read_to_string(env.path(file)).unwrap();
    let crls = pem_blocks(&text, "X509 CRL");
    assert!(!crls.is_empty(), "{file} holds no CRL");
    let mut serials = Vec::new();
    for (i, crl) in crls.iter().enumerate() {
        let one = format!("{file}.{i}.crl");
        env.write(&one, crl);
        let r = env.openssl(&["crl", "-in", &one, "-noout", "-text"]).ok();
        serials.extend(
            r.stdout
                .lines()
                .filter_map(|l| l.trim().strip_prefix("Serial Number:"))
                .map(normal_serial),
        );
    }
    serials
}

/// openssl verify at `now` + 1 hour; returns whether it accepted and what it said.
fn openssl_verify(env: &TestEnv, now: &str, args: &[&str]) -> (bool, String) {
    let when = (certroll::clock::parse_rfc3339(now).unwrap().unix_timestamp() + 3600).to_string();
    let r = env.openssl(&[&["verify", "-attime", &when][..], args].concat());
    (r.code == 0, format!("{}{}", r.stdout, r.stderr))
}

/// Concatenates files into one (a CRL bundle for `-CRLfile`).
fn bundle(env: &TestEnv, out: &str, files: &[&str]) {
    let text: String = files
        .iter()
        .map(|f| std::fs::read_to_string(env.path(f)).unwrap())
        .collect();
    env.write(out, &text);
}

fn vault_versions(env: &TestEnv, now: &str, name: &str) -> Vec<Value> {
    json(env, now, &["vault", "show", name]).ok().json()["versions"]
        .as_array()
        .unwrap()
        .clone()
}

fn other_slot(slot: &str) -> &'static str {
    if slot == "primary" { "secondary" } else { "primary" }
}

/// Scenario 1: cron runs `roll-secondary --due` once every 340 days (each device certificate
/// then has 25 days left, and the one before it has expired). Five rounds over 2,000 group
/// devices and two individually enrolled gateways.
#[test]
fn fleet_yearly_due_rounds_alternate_slots_drop_expired_and_keep_every_device_working() {
    let started = Instant::now();
    let alpha = Group {
        name: "alpha",
        ca: "line-a",
        reprovision: "migrate",
        prefix: "a-",
        count: 2000,
    };
    let gateways = ["gw-1", "gw-2"];
    let env = fleet(std::slice::from_ref(&alpha), &gateways);
    let mut ids = alpha.ids();
    ids.extend(gateways.iter().map(|g| g.to_string()));
    let n = ids.len();
    let sample = ["a-0001", "a-1024", "a-2000", "gw-2"];

    let s0 = status(&env, NOW);
    let group_ca = named(&s0, "groups", "alpha")["primary"].clone();
    let mut before = devices(&s0);
    // The thumbprint each device held two rounds back (expired by now).
    let mut expired: BTreeMap<String, String> = BTreeMap::new();
    export_ca(&env, NOW, "root", "root.pem");
    for id in sample {
        export_device(&env, NOW, id, &format!("{id}-r0.pem"));
    }
    assert_everyone_works(&env, NOW, n, "after issue");

    let mut slot = "secondary";
    for round in 1..=5i64 {
        let now = at(340 * round);
        let mid = at(340 * round - 170);
        // Half-way through the year nothing is due: exit 0, nothing changes but that, from round
        // 2 on, the gateways' certificates of two rounds back, expired since, leave their
        // enrollments' slots (issue 10 item 4's kind: `--due` removes expired leaves too).
        let quiet = json(&env, &mid, &["roll-secondary", "--due"]).ok().json();
        let outcomes: BTreeSet<&str> = quiet["devices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["outcome"].as_str().unwrap())
            .collect();
        let expected = if round == 1 {
            BTreeSet::from(["not-due"])
        } else {
            BTreeSet::from(["not-due", "pruned"])
        };
        assert_eq!(outcomes, expected, "round {round}, day {mid}");
        for d in quiet["devices"].as_array().unwrap() {
            let id = str_of(&d["target"]).trim_start_matches("device:").to_string();
            assert_eq!(
                d["outcome"] == "pruned",
                round > 1 && gateways.contains(&id.as_str()),
                "round {round}: {d}"
            );
        }
        // A gateway keeps the certificate it holds; only an expired thumbprint may leave its hub
        // identity with the pruned slot, and when it was the primary the live secondary moves up
        // (DPS and IoT Hub never hold a secondary without a primary). Everything else is as it was.
        let mut quiet_after = devices(&status(&env, &mid));
        let mut quiet_before = before.clone();
        for gw in gateways {
            let (a, b) = (quiet_after.remove(gw).unwrap(), quiet_before.remove(gw).unwrap());
            assert_eq!(a["installed"], b["installed"], "round {round}: {gw}");
            let was = |sl: &str| b["hub_identity"][sl].clone();
            let now_tps = (
                a["hub_identity"]["primary_thumbprint"].clone(),
                a["hub_identity"]["secondary_thumbprint"].clone(),
            );
            let kept = (was("primary_thumbprint"), was("secondary_thumbprint"));
            let moved_up = (was("secondary_thumbprint"), serde_json::Value::Null);
            let dropped = (was("primary_thumbprint"), serde_json::Value::Null);
            assert!(
                now_tps == kept || (round > 1 && (now_tps == moved_up || now_tps == dropped)),
                "round {round}: {gw}: {kept:?} -> {now_tps:?}"
            );
        }
        assert_eq!(
            quiet_after, quiet_before,
            "round {round}: a roll with nothing due changed the fleet"
        );

        let r = json(&env, &now, &["roll-secondary", "--due"]).ok().json();
        let rolled = r["devices"].as_array().unwrap();
        assert_eq!(rolled.len(), n, "round {round}: every device is considered");
        let mut new = BTreeMap::new();
        let mut slot_of = BTreeMap::new();
        for d in rolled {
            let id = str_of(&d["target"]).trim_start_matches("device:").to_string();
            // Slots alternate; a gateway whose expired primary was pruned mid-year holds its
            // certificate in the primary slot (the secondary moved up), so its roll fills the
            // secondary.
            let want = if round > 1 && gateways.contains(&id.as_str()) {
                "secondary"
            } else {
                slot
            };
            assert_eq!(
                (d["outcome"].as_str(), d["slot"].as_str()),
                (Some("rolled"), Some(want)),
                "round {round}: every device is due and slots alternate: {d}"
            );
            slot_of.insert(id.clone(), want);
            new.insert(id, str_of(&d["new_thumbprint"]));
        }
        assert_eq!(new.len(), n);
        assert_eq!(
            r["devices_cut_off"]["count"], 0,
            "an expiry roll cuts no device off"
        );

        let s = status(&env, &now);
        let after = devices(&s);
        assert_eq!(after.len(), n);
        for id in &ids {
            let d = &after[id];
            let held = str_of(&before[id]["installed"]["thumbprint"]);
            let fresh = &new[id];
            assert_eq!(&str_of(&d["installed"]["thumbprint"]), fresh, "{id}: installed");
            // Backdated by the plan's default 5-minute skew.
            let backdated = certroll::clock::rfc3339(
                certroll::clock::parse_rfc3339(&now).unwrap() - time::Duration::minutes(5),
            );
            assert_eq!(d["installed"]["not_before"], backdated.as_str(), "{id}");
            // The certificate the device held until now has not expired, and the hub takes
            // both it and the new one, in the slots the roll named.
            assert!(
                str_of(&before[id]["installed"]["not_after"]) > now,
                "round {round}: {id}: the certificate it held is still valid"
            );
            let h = &d["hub_identity"];
            let slot = slot_of[id.as_str()];
            assert_eq!(h["status"], "enabled", "{id}");
            assert_eq!(&str_of(&h[format!("{slot}_thumbprint")]), fresh, "{id}: {h}");
            assert_eq!(
                str_of(&h[format!("{}_thumbprint", other_slot(slot))]),
                held,
                "round {round}: {id}: the hub still takes the certificate it held"
            );
            if let Some(gone) = expired.get(id) {
                assert!(
                    !hub_accepts(d).contains(gone),
                    "round {round}: {id}: an expired certificate stayed in the hub"
                );
            }
        }
        for gw in gateways {
            let e = named(&s, "enrollments", gw);
            let slot = slot_of[&gw.to_string()];
            assert_eq!(e["status"], "enabled");
            assert_eq!(&str_of(&e[slot]["thumbprint"]), &new[gw], "round {round}: {gw}");
            assert_eq!(
                str_of(&e[other_slot(slot)]["thumbprint"]),
                str_of(&before[gw]["installed"]["thumbprint"]),
                "round {round}: {gw}: the other slot keeps the certificate it held"
            );
            for sl in ["primary", "secondary"] {
                assert!(
                    str_of(&e[sl]["not_after"]) > now,
                    "round {round}: {gw}: an expired certificate stayed in the {sl} slot"
                );
            }
        }
        // The group's CA was not due: the group's slots are as issued.
        let g = named(&s, "groups", "alpha");
        assert_eq!(g["primary"], group_ca, "round {round}");
        assert!(g["secondary"].is_null(), "round {round}");

        assert_everyone_works(&env, &now, n, &format!("round {round}"));

        // openssl: the new leaf and the one held before both chain to the root now; the one
        // held two rounds back has expired.
        for id in sample {
            let cur = format!("{id}-r{round}.pem");
            let prev = format!("{id}-r{}.pem", round - 1);
            export_device(&env, &now, id, &cur);
            assert_eq!(openssl_thumbprint(&env, &format!("{cur}.leaf.pem")), new[id]);
            for f in [&cur, &prev] {
                let (ok, said) = openssl_verify(&env, &now, &["-CAfile", "root.pem", "-untrusted", f, f]);
                assert!(ok, "round {round}: {id}: {f}: {said}");
            }
            if round >= 2 {
                let old = format!("{id}-r{}.pem", round - 2);
                let (ok, said) =
                    openssl_verify(&env, &now, &["-CAfile", "root.pem", "-untrusted", &old, &old]);
                assert!(!ok && said.contains("expired"), "{id}: {said}");
            }
        }
        assert_eq!(
            vault_versions(&env, &now, "device:a-1024").len(),
            round as usize + 1,
            "round {round}: one new version per round"
        );

        // The same cron line right after: nothing more is due, nothing changes.
        let again = json(&env, &now, &["roll-secondary", "--due"]).ok().json();
        assert!(
            again["devices"]
                .as_array()
                .unwrap()
                .iter()
                .all(|d| d["outcome"] == "not-due"),
            "round {round}: rerun: {}",
            again["devices"][0]
        );
        assert_eq!(status(&env, &now), s, "round {round}: a rerun changed the state");

        for id in &ids {
            expired.insert(id.clone(), str_of(&before[id]["installed"]["thumbprint"]));
        }
        before = after;
        slot = other_slot(slot);
    }
    eprintln!("yearly rounds: {:?}", started.elapsed());
}

/// Checks a breach's outcome on every device: those in `hit` hold a new certificate that the
/// hub alone takes and their old one is gone from every hub identity; all others are exactly as
/// they were.
fn assert_replaced_exactly(
    before: &BTreeMap<String, Value>,
    after: &BTreeMap<String, Value>,
    hit: &BTreeSet<String>,
    what: &str,
) {
    assert_eq!(before.len(), after.len());
    let compromised: BTreeSet<String> = hit
        .iter()
        .map(|id| str_of(&before[id]["installed"]["thumbprint"]))
        .collect();
    for (id, d) in after {
        if hit.contains(id) {
            let installed = str_of(&d["installed"]["thumbprint"]);
            assert!(!compromised.contains(&installed), "{what}: {id} still holds it");
            let h = &d["hub_identity"];
            assert_eq!(h["status"], "enabled", "{what}: {id}: {h}");
            assert_eq!(
                str_of(&h["primary_thumbprint"]),
                installed,
                "{what}: {id}: the hub takes the new certificate"
            );
            assert!(
                h["secondary_thumbprint"].is_null(),
                "{what}: {id}: the hub takes nothing else: {h}"
            );
            assert_eq!(
                str_of(&d["registration"]["cert_thumbprint"]),
                installed,
                "{what}: {id}: re-provisioned with the new certificate"
            );
            assert_eq!(d["registration"]["status"], "assigned", "{what}: {id}");
        } else {
            assert_eq!(d, &before[id], "{what}: {id} is not affected");
        }
        let leaked: Vec<_> = hub_accepts(d).intersection(&compromised).cloned().collect();
        assert!(
            leaked.is_empty(),
            "{what}: the hub still lets a compromised certificate in as {id}: {leaked:?}"
        );
    }
}

/// The five ids a dry run names first, and the count.
fn assert_blast_radius(dry: &Value, hit: &BTreeSet<String>, what: &str) {
    assert_eq!(dry["dry_run"], true);
    assert_eq!(
        dry["devices_cut_off"]["count"],
        hit.len(),
        "{what}: the blast radius is every device the compromised certificate is on"
    );
    let first: Vec<String> = hit.iter().take(5).cloned().collect();
    assert_eq!(
        dry["devices_cut_off"]["first"],
        serde_json::json!(first),
        "{what}"
    );
}

/// Scenario 2: two groups of 1,000 devices under one root; a device breach, then a breach of
/// the first group's intermediate, then of the root.
#[test]
fn fleet_breaches_of_a_device_an_intermediate_and_the_root_cut_off_exactly_what_they_say() {
    let started = Instant::now();
    let alpha = Group {
        name: "alpha",
        ca: "line-a",
        reprovision: "migrate",
        prefix: "a-",
        count: 1000,
    };
    let beta = Group {
        name: "beta",
        ca: "line-b",
        reprovision: "reset",
        prefix: "b-",
        count: 1000,
    };
    let a_ids: BTreeSet<String> = alpha.ids().into_iter().collect();
    let all: BTreeSet<String> = a_ids.iter().cloned().chain(beta.ids()).collect();
    let n = all.len();
    let env = fleet(&[alpha, beta], &[]);
    let now = at(30);
    let s0 = status(&env, &now);
    let d0 = devices(&s0);
    export_ca(&env, &now, "root", "root-v1.pem");
    for id in ["a-0041", "a-0042", "b-0500"] {
        export_device(&env, &now, id, &format!("{id}-v1.pem"));
    }

    // --- 1. One device's key is compromised.
    let breach = ["roll-primary", "--breach", "device:a-0042"];
    let hit = BTreeSet::from(["a-0042".to_string()]);
    let dry = json(&env, &now, &[&breach[..], &["--dry-run"]].concat())
        .ok()
        .json();
    assert_blast_radius(&dry, &hit, "device breach");
    assert_eq!(status(&env, &now), s0, "a dry run changes nothing");
    let r = json(&env, &now, &[&breach[..], &["--yes"]].concat()).ok().json();
    assert_eq!(r["devices"][0]["outcome"], "replaced", "{r}");
    let old_thumb = str_of(&d0["a-0042"]["installed"]["thumbprint"]);
    assert_eq!(r["devices"][0]["compromised"], serde_json::json!([old_thumb]));
    assert_eq!(
        openssl_thumbprint(&env, "a-0042-v1.pem.leaf.pem"),
        old_thumb,
        "status's thumbprint is the certificate's"
    );
    let s1 = status(&env, &now);
    let d1 = devices(&s1);
    assert_replaced_exactly(&d0, &d1, &hit, "device breach");
    assert_on_own_hub(&s1, "after the device breach");
    assert_eq!(s1["groups"], s0["groups"], "the groups' CAs are not touched");
    assert_everyone_works(&env, &now, n, "after the device breach");
    // The compromised version is disabled in the vault and on line A's CRL, which openssl honours.
    let v = vault_versions(&env, &now, "device:a-0042");
    assert_eq!(v.len(), 2);
    assert_eq!(
        (&v[0]["enabled"], &v[1]["enabled"]),
        (&false.into(), &true.into())
    );
    export_crl(&env, &now, "root", "root-1.crl");
    export_crl(&env, &now, "line-a", "line-a-1.crl");
    export_crl(&env, &now, "line-b", "line-b-1.crl");
    assert_eq!(
        crl_serials(&env, "line-a-1.crl"),
        [openssl_serial(&env, "a-0042-v1.pem.leaf.pem")],
        "line A's CRL lists exactly the compromised leaf"
    );
    bundle(
        &env,
        "crls-1.pem",
        &["root-1.crl", "line-a-1.crl", "line-b-1.crl"],
    );
    let chk = |leaf: &str, chain: &str| {
        openssl_verify(
            &env,
            &now,
            &[
                "-crl_check_all",
                "-CAfile",
                "root-v1.pem",
                "-untrusted",
                chain,
                "-CRLfile",
                "crls-1.pem",
                leaf,
            ],
        )
    };
    let (ok, said) = chk("a-0042-v1.pem.leaf.pem", "a-0042-v1.pem");
    assert!(!ok && said.contains("revoked"), "{said}");
    export_device(&env, &now, "a-0042", "a-0042-v2.pem");
    for (leaf, chain) in [
        ("a-0042-v2.pem.leaf.pem", "a-0042-v2.pem"),
        ("a-0041-v1.pem.leaf.pem", "a-0041-v1.pem"),
        ("b-0500-v1.pem.leaf.pem", "b-0500-v1.pem"),
    ] {
        let (ok, said) = chk(leaf, chain);
        assert!(ok, "{leaf}: {said}");
    }
    let again = json(&env, &now, &[&breach[..], &["--yes"]].concat()).ok().json();
    assert_eq!(again["devices"][0]["outcome"], "already-replaced", "{again}");
    assert_eq!(status(&env, &now), s1, "a rerun changes nothing");

    // --- 2. Line A (group alpha's intermediate) is compromised.
    let old_line_a = named(&s1, "cas", "line-a")["cert"].clone();
    assert_eq!(
        openssl_thumbprint(&env, "a-0041-v1.pem.ca.pem"),
        str_of(&old_line_a["thumbprint"])
    );
    let breach = ["roll-primary", "--breach", "group:alpha"];
    let dry = json(&env, &now, &[&breach[..], &["--dry-run"]].concat())
        .ok()
        .json();
    assert_blast_radius(&dry, &a_ids, "intermediate breach");
    assert_eq!(status(&env, &now), s1, "a dry run changes nothing");
    let r = json(&env, &now, &[&breach[..], &["--yes"]].concat()).ok().json();
    assert_eq!(r["groups"][0]["outcome"], "replaced", "{}", r["groups"]);
    let s2 = status(&env, &now);
    let d2 = devices(&s2);
    assert_replaced_exactly(&d1, &d2, &a_ids, "intermediate breach");
    assert_on_own_hub(&s2, "after the intermediate breach");
    // The service no longer takes line A: not in alpha's slots; alpha holds the new line A.
    let new_line_a = named(&s2, "cas", "line-a")["cert"].clone();
    assert_ne!(new_line_a["thumbprint"], old_line_a["thumbprint"]);
    let g = named(&s2, "groups", "alpha");
    assert_eq!(g["primary"]["thumbprint"], new_line_a["thumbprint"], "{g}");
    assert!(g["secondary"].is_null(), "{g}");
    assert_eq!(
        named(&s2, "groups", "beta"),
        named(&s1, "groups", "beta"),
        "the other group is not touched"
    );
    assert_eq!(named(&s2, "cas", "root"), named(&s1, "cas", "root"));
    for id in &a_ids {
        assert_eq!(d2[id]["installed"]["issuer"], "CN=Line A, O=Fleet Test", "{id}");
    }
    assert_everyone_works(&env, &now, n, "after the intermediate breach");
    // openssl: the root's CRL lists the old line A, and only it.
    export_crl(&env, &now, "root", "root-2.crl");
    export_crl(&env, &now, "line-a", "line-a-2.crl");
    export_crl(&env, &now, "line-b", "line-b-2.crl");
    assert_eq!(
        crl_serials(&env, "root-2.crl"),
        [normal_serial(&str_of(&old_line_a["serial"]))]
    );
    let (ok, said) = openssl_verify(
        &env,
        &now,
        &[
            "-crl_check",
            "-CAfile",
            "root-v1.pem",
            "-CRLfile",
            "root-2.crl",
            "a-0041-v1.pem.ca.pem",
        ],
    );
    assert!(!ok && said.contains("revoked"), "old line A: {said}");
    bundle(
        &env,
        "crls-2.pem",
        &["root-2.crl", "line-a-2.crl", "line-b-2.crl"],
    );
    export_device(&env, &now, "a-0041", "a-0041-v2.pem");
    let chk2 = |leaf: &str, chain: &str| {
        openssl_verify(
            &env,
            &now,
            &[
                "-crl_check_all",
                "-CAfile",
                "root-v1.pem",
                "-untrusted",
                chain,
                "-CRLfile",
                "crls-2.pem",
                leaf,
            ],
        )
    };
    let (ok, said) = chk2("a-0041-v1.pem.leaf.pem", "a-0041-v1.pem");
    assert!(!ok, "a leaf under the revoked line A: {said}");
    for (leaf, chain) in [
        ("a-0041-v2.pem.leaf.pem", "a-0041-v2.pem"),
        ("b-0500-v1.pem.leaf.pem", "b-0500-v1.pem"),
    ] {
        let (ok, said) = chk2(leaf, chain);
        assert!(ok, "{leaf}: {said}");
    }
    // The old leaf does not chain to what alpha's slot holds now (the service's path check).
    let (ok, _) = openssl_verify(
        &env,
        &now,
        &[
            "-partial_chain",
            "-CAfile",
            "a-0041-v2.pem.ca.pem",
            "a-0041-v1.pem.leaf.pem",
        ],
    );
    assert!(!ok);
    let again = json(&env, &now, &[&breach[..], &["--yes"]].concat()).ok().json();
    assert_eq!(again["groups"][0]["outcome"], "already-replaced", "{again}");
    assert_eq!(status(&env, &now), s2, "a rerun changes nothing");
    assert_eq!(vault_versions(&env, &now, "ca:line-a").len(), 2);

    // --- 3. The root is compromised: every device of both groups.
    let old_root = openssl_thumbprint(&env, "root-v1.pem");
    let breach = ["roll-primary", "--breach", "ca:root"];
    let dry = json(&env, &now, &[&breach[..], &["--dry-run"]].concat())
        .ok()
        .json();
    assert_blast_radius(&dry, &all, "root breach");
    assert_eq!(status(&env, &now), s2, "a dry run changes nothing");
    json(&env, &now, &[&breach[..], &["--yes"]].concat()).ok();
    let s3 = status(&env, &now);
    let d3 = devices(&s3);
    assert_replaced_exactly(&d2, &d3, &all, "root breach");
    assert_on_own_hub(&s3, "after the root breach");
    let root = named(&s3, "cas", "root");
    let in_service: Vec<&Value> = root["in_service"].as_array().unwrap().iter().collect();
    assert_eq!(in_service.len(), 1, "{root}");
    assert_eq!(in_service[0]["verified"], true);
    assert_eq!(in_service[0]["thumbprint"], root["cert"]["thumbprint"]);
    assert_ne!(
        str_of(&in_service[0]["thumbprint"]),
        old_root,
        "the compromised root left the service"
    );
    for (name, ca) in [("alpha", "line-a"), ("beta", "line-b")] {
        let g = named(&s3, "groups", name);
        assert_eq!(
            g["primary"]["thumbprint"],
            named(&s3, "cas", ca)["cert"]["thumbprint"]
        );
        assert_ne!(g["primary"], named(&s2, "groups", name)["primary"]);
        assert!(g["secondary"].is_null());
    }
    assert_everyone_works(&env, &now, n, "after the root breach");
    export_ca(&env, &now, "root", "root-v2.pem");
    assert_ne!(openssl_thumbprint(&env, "root-v2.pem"), old_root);
    export_crl(&env, &now, "root", "root-3.crl");
    export_crl(&env, &now, "line-b", "line-b-3.crl");
    bundle(&env, "crls-3.pem", &["root-3.crl", "line-b-3.crl"]);
    export_device(&env, &now, "b-0500", "b-0500-v2.pem");
    let (ok, said) = openssl_verify(
        &env,
        &now,
        &[
            "-crl_check_all",
            "-CAfile",
            "root-v2.pem",
            "-untrusted",
            "b-0500-v2.pem",
            "-CRLfile",
            "crls-3.pem",
            "b-0500-v2.pem.leaf.pem",
        ],
    );
    assert!(ok, "the new chain: {said}");
    for old in ["b-0500-v1.pem", "a-0041-v2.pem"] {
        let (ok, _) = openssl_verify(
            &env,
            &now,
            &[
                "-CAfile",
                "root-v2.pem",
                "-untrusted",
                old,
                &format!("{old}.leaf.pem"),
            ],
        );
        assert!(!ok, "{old} does not chain to the new root");
    }
    let again = json(&env, &now, &[&breach[..], &["--yes"]].concat()).ok().json();
    assert!(
        again["groups"]
            .as_array()
            .unwrap()
            .iter()
            .all(|g| g["outcome"] == "already-replaced"),
        "{}",
        again["groups"]
    );
    assert_eq!(status(&env, &now), s3, "a rerun changes nothing");
    eprintln!("breaches: {:?}", started.elapsed());
}

/// Every device is registered to the hub of its own group (or `hub-gw` for gateways).
fn assert_on_own_hub(s: &Value, what: &str) {
    for d in s["devices"].as_array().unwrap() {
        let hub = match d["group"].as_str() {
            Some(g) => format!("hub-{g}"),
            None => "hub-gw".into(),
        };
        assert_eq!(
            d["registration"]["hub"],
            hub.as_str(),
            "{what}: {} is registered to another group's hub",
            d["id"]
        );
    }
}

/// Scenario 3: single devices of three groups (one per reprovision policy, 2,000 devices in all)
/// are revoked; then, after a cron roll, a sample of every group re-provisions.
#[test]
fn fleet_revoking_single_devices_and_reprovisioning_under_each_policy() {
    let started = Instant::now();
    let groups = [
        Group {
            name: "gm",
            ca: "line-a",
            reprovision: "migrate",
            prefix: "m-",
            count: 700,
        },
        Group {
            name: "gr",
            ca: "line-b",
            reprovision: "reset",
            prefix: "r-",
            count: 700,
        },
        Group {
            name: "gn",
            ca: "line-c",
            reprovision: "never",
            prefix: "n-",
            count: 600,
        },
    ];
    let ids: Vec<String> = groups.iter().flat_map(Group::ids).collect();
    let n = ids.len();
    let env = fleet(&groups, &[]);
    let now = at(10);
    let s0 = status(&env, &now);
    let d0 = devices(&s0);
    assert_on_own_hub(&s0, "after issue");
    export_ca(&env, &now, "root", "root.pem");
    for id in ["m-100", "m-101", "m-099", "r-200", "n-300", "n-301"] {
        export_device(&env, &now, id, &format!("{id}.pem"));
    }

    // A dry run names exactly the devices revoked, and changes nothing.
    let revoke_m = [
        "revoke",
        "device:m-100",
        "device:m-101",
        "--reason",
        "key-compromise",
    ];
    let dry = json(&env, &now, &[&revoke_m[..], &["--dry-run"]].concat())
        .ok()
        .json();
    assert_eq!(dry["steps"].as_array().unwrap().len(), 2, "{dry}");
    let cut: Vec<&Value> = dry["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| &s["devices_cut_off"])
        .collect();
    assert_eq!(
        cut,
        [
            &serde_json::json!({"count": 1, "first": ["m-100"]}),
            &serde_json::json!({"count": 1, "first": ["m-101"]})
        ]
    );
    assert_eq!(status(&env, &now), s0, "a dry run changes nothing");

    json(&env, &now, &[&revoke_m[..], &["--yes"]].concat()).ok();
    json(
        &env,
        &now,
        &[
            "revoke",
            "device:r-200",
            "--reason",
            "key-compromise",
            "--hub-identity",
            "delete",
            "--yes",
        ],
    )
    .ok();
    json(
        &env,
        &now,
        &[
            "revoke",
            "device:n-300",
            "--reason",
            "affiliation-changed",
            "--yes",
        ],
    )
    .ok();
    let revoked: BTreeSet<String> = ["m-100", "m-101", "r-200", "n-300"]
        .iter()
        .map(|s| s.to_string())
        .collect();

    let s1 = status(&env, &now);
    let d1 = devices(&s1);
    for (id, d) in &d1 {
        if revoked.contains(id) {
            assert!(hub_accepts(d).is_empty(), "{id}: the hub still lets it in: {d}");
        } else {
            assert_eq!(d, &d0[id], "{id} is not affected");
        }
    }
    assert_eq!(d1["m-100"]["hub_identity"]["status"], "disabled");
    assert!(d1["r-200"]["hub_identity"].is_null(), "--hub-identity delete");
    assert_eq!(s1["groups"], s0["groups"], "the groups stay enabled");
    // The enrollment service refuses exactly the revoked devices, and says why.
    let r = json(&env, &now, &["reprovision", "--dry-run"]).code(1).json();
    for d in r["devices"].as_array().unwrap() {
        if revoked.contains(d["device"].as_str().unwrap()) {
            assert_eq!(d["status"], "would-fail", "{d}");
            assert!(
                d["error"].as_str().unwrap().contains("disabled enrollment"),
                "{d}"
            );
        }
    }
    assert_eq!(refused_by_service(&env, &now, n), revoked);
    for id in &revoked {
        let v = vault_versions(&env, &now, &format!("device:{id}"));
        assert!(
            v.iter().all(|v| v["enabled"] == false),
            "{id}: its vault version is disabled"
        );
    }
    // Each CRL lists exactly its revoked devices; openssl refuses them and takes their neighbours.
    let mut crls = Vec::new();
    for (ca, listed) in [
        ("line-a", vec!["m-100", "m-101"]),
        ("line-b", vec!["r-200"]),
        ("line-c", vec!["n-300"]),
    ] {
        let file = format!("{ca}.crl");
        export_crl(&env, &now, ca, &file);
        let mut got = crl_serials(&env, &file);
        got.sort();
        let mut want: Vec<String> = listed
            .iter()
            .map(|id| normal_serial(&str_of(&d0[*id]["installed"]["serial"])))
            .collect();
        want.sort();
        assert_eq!(got, want, "{ca}'s CRL");
        crls.push(file);
    }
    export_crl(&env, &now, "root", "root.crl");
    crls.push("root.crl".into());
    let crl_refs: Vec<&str> = crls.iter().map(String::as_str).collect();
    bundle(&env, "crls.pem", &crl_refs);
    for (id, good) in [
        ("m-100", false),
        ("m-101", false),
        ("r-200", false),
        ("n-300", false),
        ("m-099", true),
        ("n-301", true),
    ] {
        let f = format!("{id}.pem");
        assert_eq!(
            openssl_serial(&env, &format!("{f}.leaf.pem")),
            normal_serial(&str_of(&d0[id]["installed"]["serial"]))
        );
        let (ok, said) = openssl_verify(
            &env,
            &now,
            &[
                "-crl_check_all",
                "-CAfile",
                "root.pem",
                "-untrusted",
                &f,
                "-CRLfile",
                "crls.pem",
                &format!("{f}.leaf.pem"),
            ],
        );
        assert_eq!(ok, good, "{id}: {said}");
        if !good {
            assert!(said.contains("revoked"), "{id}: {said}");
        }
    }
    // A real registration of a revoked device fails with exit 1.
    let rp = json(&env, &now, &["reprovision", "device:m-100"]).code(1).json();
    assert_eq!(rp["devices"][0]["status"], "disabled", "{rp}");
    // The refused attempt is recorded in m-100's registration state (issue 10 item 2).
    let s1 = status(&env, &now);
    // Revoking again changes nothing and lists nothing twice.
    json(&env, &now, &[&revoke_m[..], &["--yes"]].concat()).ok();
    assert_eq!(status(&env, &now), s1, "a rerun changes nothing");
    let mut again = crl_serials(&env, "line-a.crl");
    export_crl(&env, &now, "line-a", "line-a-again.crl");
    let mut after = crl_serials(&env, "line-a-again.crl");
    again.sort();
    after.sort();
    assert_eq!(after, again, "a rerun lists nothing twice");

    // A year on, cron rolls everyone but the revoked devices.
    let later = at(340);
    let roll = json(&env, &later, &["roll-secondary", "--due"]).ok().json();
    for d in roll["devices"].as_array().unwrap() {
        let id = d["target"].as_str().unwrap().trim_start_matches("device:");
        let want = if revoked.contains(id) { "revoked" } else { "rolled" };
        assert_eq!(d["outcome"], want, "{d}");
    }
    assert_eq!(refused_by_service(&env, &later, n), revoked, "after the roll");
    let s2 = status(&env, &later);
    let d2 = devices(&s2);

    // A sample of each group registers again: the policy decides what the hub keeps.
    let sample: Vec<String> = ids
        .iter()
        .enumerate()
        .filter(|(i, id)| i % 35 == 7 && !revoked.contains(*id))
        .map(|(_, id)| id.clone())
        .collect();
    for p in ["m-", "r-", "n-"] {
        assert!(sample.iter().filter(|id| id.starts_with(p)).count() >= 15);
    }
    let targets: Vec<String> = sample.iter().map(|id| format!("device:{id}")).collect();
    let target_refs: Vec<&str> = targets.iter().map(String::as_str).collect();
    let rp = json(&env, &later, &[&["reprovision"][..], &target_refs].concat())
        .ok()
        .json();
    assert_eq!(rp["assigned"], sample.len(), "{}", rp["devices"][0]);
    let s3 = status(&env, &later);
    let d3 = devices(&s3);
    assert_on_own_hub(&s3, "after reprovision");
    for (id, d) in &d3 {
        if !sample.contains(id) {
            assert_eq!(d, &d2[id], "{id} was not asked to register");
            continue;
        }
        let installed = str_of(&d["installed"]["thumbprint"]);
        let before = &d2[id]["hub_identity"];
        let (substatus, hub_swapped) = match &id[..2] {
            "m-" => ("deviceDataMigrated", true),
            "r-" => ("deviceDataReset", true),
            _ => ("reprovisionedToInitialAssignment", false),
        };
        assert_eq!(d["registration"]["status"], "assigned", "{id}");
        assert_eq!(d["registration"]["substatus"], substatus, "{id}: {d}");
        assert_eq!(str_of(&d["registration"]["cert_thumbprint"]), installed, "{id}");
        if hub_swapped {
            assert_eq!(
                hub_accepts(d),
                BTreeSet::from([installed.clone()]),
                "{id}: the hub holds only the presented certificate"
            );
        } else {
            assert_eq!(&d["hub_identity"], before, "{id}: never leaves the hub alone");
        }
    }
    let again = json(&env, &later, &[&["reprovision"][..], &target_refs].concat())
        .ok()
        .json();
    assert_eq!(again["unchanged"], sample.len(), "a rerun registers nobody again");
    assert_eq!(status(&env, &later), s3, "a rerun changes nothing");
    // The whole reset group: the sample is unchanged, the revoked device refused (exit 1).
    let in_gr = sample.iter().filter(|id| id.starts_with("r-")).count();
    let rp = json(&env, &later, &["reprovision", "group:gr"]).code(1).json();
    assert_eq!(
        (&rp["assigned"], &rp["unchanged"], &rp["rejected"]),
        (
            &serde_json::json!(700 - in_gr - 1),
            &serde_json::json!(in_gr),
            &serde_json::json!(1)
        ),
        "{}",
        rp["devices_cut_off"]
    );
    assert_eq!(refused_by_service(&env, &later, n), revoked, "at the end");
    eprintln!("revoke and reprovision: {:?}", started.elapsed());
}

/// The installed thumbprints of a status are all different (no device shares a certificate).
fn assert_distinct_certificates(s: &Value) {
    let all: Vec<String> = s["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| str_of(&d["installed"]["thumbprint"]))
        .collect();
    let set: BTreeSet<&String> = all.iter().collect();
    assert_eq!(set.len(), all.len(), "two devices hold the same certificate");
}

/// Runs a command with the fault switch; it must die, not finish.
fn killed_after(env: &TestEnv, now: &str, steps: u32, args: &[&str]) {
    let out = env
        .cmd()
        .args([&["--plan", "plan.toml", "--now", now][..], args].concat())
        .env("CERTROLL_FAULT_AFTER_STEPS", steps.to_string())
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "{args:?}: the fault switch must abort the run after step {steps}"
    );
}

/// One device at each edge of the 2,048-device chunks of a 4,500-device group.
const EDGES: [&str; 6] = ["a-0001", "a-2048", "a-2049", "a-4096", "a-4097", "a-4500"];

fn big_group() -> Group {
    Group {
        name: "alpha",
        ca: "line-a",
        reprovision: "migrate",
        prefix: "a-",
        count: 4500,
    }
}

/// Resumes `args` after a kill after `kill_at` steps and checks the report's journal.
fn resume(env: &TestEnv, now: &str, args: &[&str], kill_at: u32, steps: usize) -> Value {
    let r = json(env, now, args).ok().json();
    assert_eq!(r["resumed"], true, "{args:?} killed after {kill_at}");
    let states: Vec<&str> = r["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["state"].as_str().unwrap())
        .collect();
    assert_eq!(states.len(), steps, "{args:?}");
    for (i, st) in states.iter().enumerate() {
        let want = if i < kill_at as usize {
            "done-before"
        } else {
            "done"
        };
        assert_eq!(*st, want, "{args:?} killed after {kill_at}: step {}", i + 1);
    }
    r
}

/// Scenario 4a: `roll-secondary group:alpha` over 4,500 devices (a CA renewal, the group's slot
/// and three chunks of devices) killed after each step, then run again.
#[test]
fn fleet_a_group_roll_killed_after_any_step_is_finished_by_a_rerun_without_duplicates() {
    let started = Instant::now();
    let g = big_group();
    let n = g.count as usize;
    let base = fleet(&[g], &[]);
    let now = at(200);
    let s0 = status(&base, &now);
    let d0 = devices(&s0);
    let old_ca = named(&s0, "groups", "alpha")["primary"].clone();
    let args = ["roll-secondary", "group:alpha"];
    let dry = json(&base, &now, &[&args[..], &["--dry-run"]].concat())
        .ok()
        .json();
    let kinds: Vec<&str> = dry["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "renew-ca",
            "group-slot",
            "roll-devices",
            "roll-devices",
            "roll-devices"
        ]
    );
    for kill_at in 1..=4u32 {
        let env = clone_of(&base);
        killed_after(&env, &now, kill_at, &args);
        resume(&env, &now, &args, kill_at, 5);
        let s = status(&env, &now);
        let d = devices(&s);
        let g = named(&s, "groups", "alpha");
        let new_ca = named(&s, "cas", "line-a")["cert"].clone();
        assert_eq!(g["primary"], old_ca, "killed after {kill_at}");
        assert_eq!(g["secondary"], new_ca, "killed after {kill_at}");
        assert_ne!(new_ca, old_ca);
        for (id, dev) in &d {
            let old = str_of(&d0[id]["installed"]["thumbprint"]);
            let new = str_of(&dev["installed"]["thumbprint"]);
            assert_ne!(new, old, "killed after {kill_at}: {id} was not rolled");
            assert_eq!(dev["installed"]["issuer"], new_ca["subject"]);
            assert_eq!(
                hub_accepts(dev),
                BTreeSet::from([old, new]),
                "killed after {kill_at}: {id}: the hub takes the old and the new certificate"
            );
        }
        assert_distinct_certificates(&s);
        assert_everyone_works(&env, &now, n, &format!("killed after {kill_at}"));
        assert_eq!(
            vault_versions(&env, &now, "ca:line-a").len(),
            2,
            "killed after {kill_at}"
        );
        for id in EDGES {
            let v = vault_versions(&env, &now, &format!("device:{id}"));
            assert_eq!(v.len(), 2, "killed after {kill_at}: {id} has a duplicate version");
            assert_eq!(
                v[1]["cert"]["thumbprint"], d[id]["installed"]["thumbprint"],
                "{id}"
            );
        }
        let again = json(&env, &now, &args).ok().json();
        assert_eq!(again["resumed"], false);
        assert_eq!(again["groups"][0]["outcome"], "already-rolled");
        let devs = again["devices"].as_array().unwrap();
        assert_eq!(devs.len(), n);
        assert!(devs.iter().all(|d| d["outcome"] == "already-rolled"));
        assert_eq!(
            status(&env, &now),
            s,
            "killed after {kill_at}: the last rerun changed the state"
        );
    }
    eprintln!("group roll kills: {:?}", started.elapsed());
}

/// Scenario 4b: the cron line (`roll-secondary --due`, three chunks of devices) over 4,500
/// devices, killed between chunks, then run again.
#[test]
fn fleet_a_cron_roll_killed_between_device_chunks_is_finished_by_a_rerun() {
    let started = Instant::now();
    let g = big_group();
    let n = g.count as usize;
    let base = fleet(&[g], &[]);

    let due = at(340);
    let s0 = status(&base, &due);
    let d0 = devices(&s0);
    let args = ["roll-secondary", "--due"];
    for kill_at in 1..=2u32 {
        let env = clone_of(&base);
        killed_after(&env, &due, kill_at, &args);
        resume(&env, &due, &args, kill_at, 3);
        let s = status(&env, &due);
        for (id, dev) in devices(&s) {
            let old = str_of(&d0[&id]["installed"]["thumbprint"]);
            let new = str_of(&dev["installed"]["thumbprint"]);
            assert_ne!(new, old, "cron killed after {kill_at}: {id} was not rolled");
            assert_eq!(hub_accepts(&dev), BTreeSet::from([old, new]), "{id}");
        }
        assert_distinct_certificates(&s);
        assert_eq!(s["groups"], s0["groups"], "the CA was not due");
        assert_everyone_works(&env, &due, n, &format!("cron killed after {kill_at}"));
        for id in EDGES {
            assert_eq!(
                vault_versions(&env, &due, &format!("device:{id}")).len(),
                2,
                "cron killed after {kill_at}: {id}"
            );
        }
        let again = json(&env, &due, &args).ok().json();
        assert_eq!(again["resumed"], false);
        assert!(
            again["devices"]
                .as_array()
                .unwrap()
                .iter()
                .all(|d| d["outcome"] == "not-due"),
            "cron killed after {kill_at}"
        );
        assert_eq!(status(&env, &due), s);
    }
    eprintln!("cron kills: {:?}", started.elapsed());
}

/// Scenario 4c: a breach of the group's intermediate over 4,500 devices (remove, revoke, renew,
/// the group's slot, then three chunks of devices) killed after the slot and between chunks,
/// then run again.
#[test]
fn fleet_an_intermediate_breach_killed_between_device_chunks_is_finished_by_a_rerun() {
    let started = Instant::now();
    let g = big_group();
    let n = g.count as usize;
    let base = fleet(&[g], &[]);
    let now = at(100);
    let s0 = status(&base, &now);
    let d0 = devices(&s0);
    let old_line_a = named(&s0, "cas", "line-a")["cert"].clone();
    let args = ["roll-primary", "--breach", "group:alpha", "--yes"];
    // Steps: remove, revoke, renew, slot, then the three chunks; kill inside the device chunks.
    for kill_at in [4u32, 5, 6] {
        let env = clone_of(&base);
        killed_after(&env, &now, kill_at, &args);
        resume(&env, &now, &args, kill_at, 7);
        let s = status(&env, &now);
        let all: BTreeSet<String> = d0.keys().cloned().collect();
        assert_replaced_exactly(&d0, &devices(&s), &all, &format!("breach killed after {kill_at}"));
        assert_distinct_certificates(&s);
        let g = named(&s, "groups", "alpha");
        assert_eq!(g["primary"], named(&s, "cas", "line-a")["cert"]);
        assert_ne!(g["primary"]["thumbprint"], old_line_a["thumbprint"]);
        assert!(g["secondary"].is_null());
        assert_everyone_works(&env, &now, n, &format!("breach killed after {kill_at}"));
        assert_eq!(vault_versions(&env, &now, "ca:line-a").len(), 2);
        for id in EDGES {
            assert_eq!(
                vault_versions(&env, &now, &format!("device:{id}")).len(),
                2,
                "breach killed after {kill_at}: {id}"
            );
        }
        export_crl(&env, &now, "root", "root.crl");
        assert_eq!(
            crl_serials(&env, "root.crl"),
            [normal_serial(&str_of(&old_line_a["serial"]))],
            "breach killed after {kill_at}: the old line A is listed once"
        );
        let again = json(&env, &now, &args).ok().json();
        assert_eq!(again["resumed"], false);
        assert_eq!(again["groups"][0]["outcome"], "already-replaced");
        assert_eq!(status(&env, &now), s);
    }
    eprintln!("breach kills: {:?}", started.elapsed());
}

/// The enrollment service keeps a CA certificate in one enrollment group only: a plan giving two
/// groups the same signing CA is refused before anything is made, naming both groups.
#[test]
fn fleet_two_groups_sharing_a_signing_ca_are_refused() {
    let groups = [
        Group {
            name: "east",
            ca: "line-a",
            reprovision: "migrate",
            prefix: "e-",
            count: 5,
        },
        Group {
            name: "west",
            ca: "line-a",
            reprovision: "never",
            prefix: "w-",
            count: 5,
        },
    ];
    let env = TestEnv::new();
    env.write("plan.toml", &plan(&groups, &[]));
    for verb in ["validate", "issue"] {
        let run = env.plan_run(&[verb]).code(2);
        assert!(
            run.stderr
                .contains("group `west` has signing_ca = \"line-a\", which group `east` already has"),
            "{verb}: {}",
            run.stderr
        );
    }
    assert!(!env.store_dir().exists(), "nothing was made");
}

/// A group signed by the root beside a group signed by an intermediate below it: the service
/// assigns each device by the most specific CA in its chain (as DPS does), so every device lands
/// on its own group's hub under its own group's reprovision policy, whatever the plan's order.
#[test]
fn fleet_a_root_group_beside_an_intermediate_group_assigns_each_device_by_its_own_group() {
    let groups = [
        Group {
            name: "east",
            ca: "root",
            reprovision: "migrate",
            prefix: "e-",
            count: 300,
        },
        Group {
            name: "west",
            ca: "line-a",
            reprovision: "never",
            prefix: "w-",
            count: 300,
        },
    ];
    let env = fleet(&groups, &[]);
    assert_on_own_hub(&status(&env, NOW), "after issue");
    // After a cron roll, `never` must leave the west devices' hub identities alone.
    let t = at(340);
    json(&env, &t, &["roll-secondary", "--due"]).ok();
    assert_on_own_hub(&status(&env, &t), "after the roll");
    let before = devices(&status(&env, &t));
    let r = json(&env, &t, &["reprovision", "group:west"]).ok().json();
    let reports = r["devices"].as_array().unwrap();
    assert_eq!(reports.len(), 300, "{r}");
    for d in reports {
        assert_eq!(
            (&d["hub"], &d["substatus"]),
            (
                &serde_json::json!("hub-west"),
                &serde_json::json!("reprovisionedToInitialAssignment")
            ),
            "{d}"
        );
    }
    let after = devices(&status(&env, &t));
    for id in groups[1].ids() {
        assert_eq!(
            after[&id]["hub_identity"], before[&id]["hub_identity"],
            "{id}: `never` changed the hub identity"
        );
    }
}

/// A run of more than 1,000 devices reports each device's outcome without its steps (the run's
/// steps describe them); a smaller one lists every device's steps.
#[test]
fn a_large_roll_lists_outcomes_without_per_device_steps() {
    let groups = [
        Group {
            name: "big",
            ca: "line-a",
            reprovision: "migrate",
            prefix: "b-",
            count: 1001,
        },
        Group {
            name: "small",
            ca: "line-b",
            reprovision: "migrate",
            prefix: "s-",
            count: 3,
        },
    ];
    let env = fleet(&groups, &[]);
    let big = json(&env, NOW, &["roll-secondary", "group:big"]).ok().json();
    let devices = big["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 1001);
    for d in devices {
        assert_eq!(d["outcome"], "rolled", "{d}");
        assert_eq!(d["steps"], serde_json::json!([]), "{d}");
    }
    let small = json(&env, NOW, &["roll-secondary", "group:small"]).ok().json();
    for d in small["devices"].as_array().unwrap() {
        let steps = d["steps"].as_array().unwrap();
        assert!(
            steps
                .iter()
                .any(|s| s.as_str().unwrap().starts_with("install the new certificate")),
            "{d}"
        );
    }
}
