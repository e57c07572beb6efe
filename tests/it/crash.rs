//! The crash harness (issue 9 item 11): SIGKILL at the N-th write, fsync, rename or link
//! (`strace -e inject=SYSCALL:signal=KILL:when=N`) and at chosen instants, during every mutating
//! verb; then the same command again, and the fleet is checked:
//!
//! - every device that is not revoked holds a certificate its enrollment accepts (the service's
//!   own answer: `reprovision --dry-run --force`) and its hub admits (the identity is enabled and
//!   holds the certificate's thumbprint);
//! - no duplicate vault version, serial, CRL entry; no journal run left open;
//! - no key lost: sampled devices' exported keys match their certificates (openssl);
//! - the same counts as an uninterrupted run of the same command;
//! - the command run twice more changes nothing.
//!
//! CI runs a quick subset (two kill points and a timed kill a verb on 1,000 devices). The full set runs with
//! `CERTROLL_CRASH_FULL=1 cargo test --test it crash -- --nocapture` (a dozen points a verb on
//! 3,000 devices). Each test prints how many kill points it ran.

use crate::util::TestEnv;
use std::process::Command;

fn full() -> bool {
    std::env::var_os("CERTROLL_CRASH_FULL").is_some()
}

fn fleet_size() -> u32 {
    if full() { 3000 } else { 1000 }
}

fn plan(devices: u32) -> String {
    format!(
        r#"version = 1

[policies.ca]
key = {{ type = "EC", curve = "P-256", exportable = false }}
validity_days = 3650

[policies.leaf]
key = {{ type = "EC", curve = "P-256" }}
validity_days = 365
extended_key_usage = ["clientAuth"]
lifetime_actions = [{{ days_before_expiry = 30, action = "auto-renew" }}]

[ca.root]
subject = "CN=Crash Root, O=Test"
policy = "ca"

[ca.line]
subject = "CN=Crash Line CA, O=Test"
issuer = "root"
path_len = 0
policy = "ca"

[groups.meters]
signing_ca = "line"
hub = "hub-a"
reprovision = "migrate"
device_policy = "leaf"
devices = {{ prefix = "meter-", count = {devices} }}

[groups.pumps]
signing_ca = "root"
hub = "hub-b"
reprovision = "reset"
device_policy = "leaf"
devices = {{ prefix = "pump-", count = 40 }}

[enrollments.gw-1]
issuer = "line"
policy = "leaf"
hub = "hub-a"

[enrollments.gw-2]
issuer = "root"
policy = "leaf"
hub = "hub-b"
"#
    )
}

fn sqlite(env: &TestEnv, query: &str) -> String {
    let out = Command::new("sqlite3")
        .arg("-readonly")
        .arg(env.store_dir().join("state.db"))
        .arg(query)
        .output()
        .expect("the sqlite3 CLI must be installed");
    assert!(
        out.status.success(),
        "{query}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// What an uninterrupted run and a killed-then-rerun run must agree on.
#[derive(Debug, PartialEq, Eq)]
struct Counts {
    versions: String,
    enrollments: String,
    crl_entries: String,
    installed: String,
    service_cas: String,
}

fn counts(env: &TestEnv) -> Counts {
    Counts {
        versions: sqlite(
            env,
            "SELECT name, count(*) FROM vault_versions GROUP BY name HAVING name LIKE 'ca-%' UNION ALL SELECT 'all', count(*) FROM vault_versions",
        ),
        enrollments: sqlite(
            env,
            "SELECT count(*), sum(status = 'enabled') FROM individual_enrollments",
        ),
        crl_entries: sqlite(env, "SELECT count(*) FROM crl_entries"),
        installed: sqlite(
            env,
            "SELECT count(*) FROM devices WHERE installed_version IS NOT NULL",
        ),
        service_cas: sqlite(env, "SELECT count(*), sum(verified) FROM service_cas"),
    }
}

/// The state that reruns must not change: every row that says what the fleet is.
fn fleet_dump(env: &TestEnv) -> String {
    [
        "SELECT name, version, thumbprint, enabled FROM vault_versions ORDER BY seq",
        "SELECT registration_id, primary_thumbprint, secondary_thumbprint, status FROM individual_enrollments ORDER BY 1",
        "SELECT name, hex(primary_der), hex(secondary_der), status FROM enrollment_groups ORDER BY 1",
        "SELECT hub, device_id, primary_thumbprint, secondary_thumbprint, status FROM hub_devices ORDER BY 1, 2",
        "SELECT id, installed_version FROM devices ORDER BY 1",
        "SELECT issuer_name, serial FROM crl_entries ORDER BY 1, 2",
        "SELECT name, thumbprint, verified FROM service_cas ORDER BY 1",
    ]
    .iter()
    .map(|q| sqlite(env, q))
    .collect::<Vec<_>>()
    .join("\n--\n")
}

/// The instant a command runs at: its own `--now`, or the tests' pinned clock.
fn instant_of(command: &[&str]) -> String {
    command
        .iter()
        .position(|a| *a == "--now")
        .and_then(|i| command.get(i + 1))
        .map_or(crate::util::NOW.to_string(), |t| t.to_string())
}

/// certroll at `at` with `--plan plan.toml` and these arguments.
fn run_at(env: &TestEnv, at: &str, args: &[&str]) -> crate::util::Run {
    env.plan_run(&[&["--now", at][..], args].concat())
}

/// The invariants every state after a finished command must hold, checked at `at`.
fn check_fleet(env: &TestEnv, what: &str, revoked: &[&str], at: &str) {
    assert_eq!(
        sqlite(env, "SELECT count(*) FROM journal_runs WHERE finished IS NULL"),
        "0",
        "{what}: a journal run is left open"
    );
    for (query, thing) in [
        (
            "SELECT thumbprint FROM vault_versions GROUP BY thumbprint HAVING count(*) > 1",
            "vault version",
        ),
        (
            "SELECT issuer_name, serial FROM vault_versions GROUP BY issuer_name, serial HAVING count(*) > 1",
            "serial",
        ),
        (
            "SELECT name, version FROM vault_versions GROUP BY name, version HAVING count(*) > 1",
            "version id",
        ),
    ] {
        assert_eq!(sqlite(env, query), "", "{what}: duplicate {thing}");
    }
    // The hub admits every device that is not revoked, with the certificate it holds.
    let status = run_at(env, at, &["status", "-o", "json"]).ok().json();
    let mut admitted = 0;
    for d in status["devices"].as_array().unwrap() {
        let id = d["id"].as_str().unwrap();
        if revoked.contains(&id) {
            continue;
        }
        let held = d["installed"]["thumbprint"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: {id} holds nothing"));
        let hub = &d["hub_identity"];
        assert_eq!(hub["status"], "enabled", "{what}: {id}'s hub identity: {d}");
        assert!(
            hub["primary_thumbprint"] == held || hub["secondary_thumbprint"] == held,
            "{what}: the hub does not admit {id} with the certificate it holds: {d}"
        );
        admitted += 1;
    }
    assert!(admitted > 0);
    // The enrollment service accepts every device that is not revoked.
    let run = env
        .plan_run(&["reprovision", "--dry-run", "--force", "-o", "json"])
        .json();
    let rejected: Vec<&str> = run["devices"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["status"] == "rejected")
        .map(|d| d["device"].as_str().unwrap())
        .filter(|id| !revoked.contains(id))
        .collect();
    assert!(rejected.is_empty(), "{what}: the service refuses {rejected:?}");
    // No key lost: the exported key is the certificate's.
    for id in ["meter-0002", "pump-40", "gw-1"] {
        if revoked.contains(&id) {
            continue;
        }
        let out = format!("{id}.pem");
        run_at(
            env,
            at,
            &["export", &format!("device:{id}"), "--with-key", "--out", &out],
        )
        .ok();
        let cert = env
            .openssl(&["x509", "-in", &out, "-noout", "-pubkey"])
            .ok()
            .stdout;
        let key = env.openssl(&["pkey", "-in", &out, "-pubout"]).ok().stdout;
        assert_eq!(cert, key, "{what}: {id}'s key does not match its certificate");
    }
}

/// Copies a prepared work dir (plan and store) into a fresh one.
fn clone_env(from: &TestEnv) -> TestEnv {
    let to = TestEnv::new();
    let status = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.dir.path().display()))
        .arg(to.dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    to
}

/// How many times `command` makes each of these syscalls, from a traced run on a copy.
fn syscall_counts(env: &TestEnv, command: &[&str], syscalls: &str) -> Vec<(String, usize)> {
    let probe = clone_env(env);
    let trace = probe.path("trace.txt");
    let out = Command::new("strace")
        .args(["-f", "-qq", "-o"])
        .arg(&trace)
        .args(["-e", &format!("trace={syscalls}")])
        .arg(env!("CARGO_BIN_EXE_certroll"))
        .args(["--plan", "plan.toml"])
        .args(command)
        .current_dir(probe.dir.path())
        .env("CERTROLL_NOW", crate::util::NOW)
        .env("CERTROLL_ALLOW_TIME_TRAVEL", "1")
        .env_remove("CERTROLL_STORE_KEY")
        .output()
        .expect("strace must be installed (the crash harness kills at chosen system calls)");
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&trace).unwrap();
    syscalls
        .split(',')
        .map(|s| {
            let n = text
                .lines()
                .filter(|l| l.contains(&format!(" {s}(")) || l.contains(&format!("]{s}(")))
                .count();
            (s.to_string(), n)
        })
        .collect()
}

/// Runs `command` killed at the `when`-th call of `syscall`; returns whether it was killed.
fn run_killed_at(env: &TestEnv, command: &[&str], syscall: &str, when: usize) -> bool {
    let out = Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null"])
        .args(["-e", &format!("trace={syscall}")])
        .args(["-e", &format!("inject={syscall}:signal=KILL:when={when}")])
        .arg(env!("CARGO_BIN_EXE_certroll"))
        .args(["--plan", "plan.toml"])
        .args(command)
        .current_dir(env.dir.path())
        .env("CERTROLL_NOW", crate::util::NOW)
        .env("CERTROLL_ALLOW_TIME_TRAVEL", "1")
        .output()
        .unwrap();
    out.status.code() != Some(0)
}

/// Kill points spread over the calls of a syscall: `k` of them, first and last included.
fn points(total: usize, k: usize) -> Vec<usize> {
    if total == 0 {
        return vec![];
    }
    let k = k.min(total);
    let mut v: Vec<usize> = (0..k).map(|i| 1 + i * (total - 1) / (k - 1).max(1)).collect();
    v.dedup();
    v
}

/// One scenario: prepare with `setup`, then kill `command` at chosen points and rerun it.
fn scenario(name: &str, setup: &[&[&str]], command: &[&str], revoked: &[&str]) -> usize {
    let base = TestEnv::new();
    base.write("plan.toml", &plan(fleet_size()));
    for step in setup {
        base.plan_run(step).ok();
    }
    // The reference: the command uninterrupted.
    let reference = clone_env(&base);
    reference.plan_run(command).ok();
    let at = instant_of(command);
    check_fleet(&reference, &format!("{name} (uninterrupted)"), revoked, &at);
    let want = counts(&reference);

    let per_kind = if full() { 4 } else { 1 };
    let syscalls = "pwrite64,fsync,fdatasync,rename,linkat,link";
    let mut plan_points = Vec::new();
    for (syscall, total) in syscall_counts(&base, command, syscalls) {
        let k = if syscall == "pwrite64" {
            per_kind * 2
        } else {
            per_kind
        };
        for when in points(total, k) {
            plan_points.push((syscall.clone(), when));
        }
    }
    if !full() {
        // The quick subset: the first and the middle write.
        plan_points.retain(|(s, _)| s == "pwrite64");
        let writes: Vec<_> = plan_points.iter().map(|(_, w)| *w).collect();
        let total = writes.iter().copied().max().unwrap_or(1);
        plan_points = vec![("pwrite64".into(), 1), ("pwrite64".into(), total.div_ceil(2))];
    }
    let mut ran = 0;
    for (syscall, when) in &plan_points {
        let env = clone_env(&base);
        let what = format!("{name}: killed at {syscall} #{when}");
        run_killed_at(&env, command, syscall, *when);
        env.plan_run(command).ok();
        check_fleet(&env, &what, revoked, &at);
        assert_eq!(
            counts(&env),
            want,
            "{what}: counts differ from an uninterrupted run"
        );
        let after = fleet_dump(&env);
        env.plan_run(command).ok();
        env.plan_run(command).ok();
        assert_eq!(
            fleet_dump(&env),
            after,
            "{what}: a rerun of finished work changed the fleet"
        );
        ran += 1;
    }
    // A time-based kill too, at a random instant inside the run.
    let env = clone_env(&base);
    let mut child = env
        .cmd()
        .args(["--plan", "plan.toml", "-q"])
        .args(command)
        .spawn()
        .unwrap();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    std::thread::sleep(std::time::Duration::from_millis(50 + u64::from(nanos % 400)));
    let _ = child.kill();
    let _ = child.wait();
    env.plan_run(command).ok();
    check_fleet(&env, &format!("{name}: killed at a random instant"), revoked, &at);
    assert_eq!(
        counts(&env),
        want,
        "{name}: counts differ after a time-based kill"
    );
    ran += 1;
    eprintln!("crash harness: {name}: {ran} kill points");
    ran
}

#[test]
fn issue_and_store_creation_survive_kills() {
    scenario("issue", &[], &["issue", "-q"], &[]);
}

#[test]
fn expiry_rolls_survive_kills() {
    scenario(
        "roll-secondary group",
        &[&["issue", "-q"]],
        &["roll-secondary", "group:meters", "-q"],
        &[],
    );
    scenario(
        "roll-primary ca:root",
        &[&["issue", "-q"]],
        &["roll-primary", "ca:root", "-q"],
        &[],
    );
    let later = "2027-11-10T00:00:00Z";
    scenario(
        "cron roll",
        &[&["issue", "-q"]],
        &["--now", later, "roll-secondary", "--due", "-q"],
        &[],
    );
}

#[test]
fn breach_rolls_survive_kills() {
    let yes = ["--yes", "-q"];
    let cmd = |t: &'static str| -> Vec<&'static str> {
        let mut v = vec!["roll-primary", "--breach", t];
        v.extend(yes);
        v
    };
    scenario(
        "breach device",
        &[&["issue", "-q"]],
        &cmd("device:meter-0007"),
        &[],
    );
    scenario("breach group", &[&["issue", "-q"]], &cmd("group:meters"), &[]);
    scenario("breach ca", &[&["issue", "-q"]], &cmd("ca:line"), &[]);
}

#[test]
fn revoke_reprovision_and_rekey_survive_kills() {
    scenario(
        "revoke",
        &[&["issue", "-q"]],
        &[
            "revoke",
            "device:meter-0003",
            "enrollment:gw-2",
            "--reason",
            "key-compromise",
            "--yes",
            "-q",
        ],
        &["meter-0003", "gw-2"],
    );
    scenario(
        "reprovision",
        &[&["issue", "-q"]],
        &["reprovision", "--force", "-q"],
        &[],
    );
    scenario("store rekey", &[&["issue", "-q"]], &["store", "rekey", "-q"], &[]);
}

#[test]
fn a_rekey_killed_at_its_rename_leaves_the_new_key_working() {
    let env = TestEnv::new();
    env.quickstart();
    env.plan_run(&["issue", "-q"]).ok();
    env.plan_run(&["export", "device:gateway-01", "--with-key", "--out", "before.pem"])
        .ok();
    let old_key = std::fs::read(env.store_dir().join("state.db.key")).unwrap();
    // The only rename of a rekey is the new key moving over the old one, after the commit.
    assert!(run_killed_at(&env, &["store", "rekey"], "rename", 1));
    assert!(env.store_dir().join("state.db.key.new").exists());
    assert_eq!(
        std::fs::read(env.store_dir().join("state.db.key")).unwrap(),
        old_key
    );
    // A reader already opens the store with the new key; the next writer finishes the rename.
    env.plan_run(&["export", "device:gateway-01", "--with-key", "--out", "mid.pem"])
        .ok();
    env.plan_run(&["issue", "-q"]).ok();
    assert!(!env.store_dir().join("state.db.key.new").exists());
    assert_ne!(
        std::fs::read(env.store_dir().join("state.db.key")).unwrap(),
        old_key
    );
    env.plan_run(&["export", "device:gateway-01", "--with-key", "--out", "after.pem"])
        .ok();
    let read = |f: &str| std::fs::read(env.path(f)).unwrap();
    assert_eq!(read("before.pem"), read("mid.pem"));
    assert_eq!(read("before.pem"), read("after.pem"));
    // The old key no longer opens the store.
    let stale = env.write("old.key", &String::from_utf8(old_key).unwrap());
    let run = env.plan_run(&["--key-file", stale.to_str().unwrap(), "status"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
}
