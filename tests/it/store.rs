//! The store: sealed keys, private files, the store key, one writer at a time.

use crate::util::*;

#[test]
fn files_are_private_and_no_key_material_leaks() {
    let env = TestEnv::new();
    env.quickstart();
    let mut printed = String::new();
    for args in [
        &["--plan", "plan.toml", "issue", "-o", "json"][..],
        &["--plan", "plan.toml", "status"],
        &["--plan", "plan.toml", "status", "-o", "json"],
        &[
            "--plan",
            "plan.toml",
            "-v",
            "export",
            "device:sensor-01",
            "--out",
            "s.pem",
        ],
    ] {
        let run = env.run(args).ok();
        printed.push_str(&run.stdout);
        printed.push_str(&run.stderr);
    }
    assert!(!printed.contains("PRIVATE KEY"));
    for f in ["state.db", "state.db.key"] {
        assert_eq!(mode(&env.store_dir().join(f)), 0o600, "{f}");
    }

    // The key bytes themselves are in neither the output nor the store file.
    env.run(&[
        "--plan",
        "plan.toml",
        "export",
        "device:sensor-01",
        "--with-key",
        "--out",
        "k.pem",
    ])
    .ok();
    env.openssl(&["pkey", "-in", "k.pem", "-outform", "DER", "-out", "k.der"])
        .ok();
    let der = std::fs::read(env.path("k.der")).unwrap();
    assert!(der.len() > 60);
    let key_hex: String = der.iter().map(|b| format!("{b:02X}")).collect();
    assert!(!printed.to_uppercase().contains(&key_hex[key_hex.len() - 64..]));
    for f in ["state.db", "state.db-wal"] {
        if let Ok(bytes) = std::fs::read(env.store_dir().join(f)) {
            // The private scalar sits inside the PKCS#8; any 32-byte window of it must be absent.
            let secret = &der[der.len() - 100..der.len() - 68];
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret),
                "{f} holds key bytes in clear"
            );
        }
    }
}

#[test]
fn the_store_needs_its_key_and_accepts_one_from_the_environment() {
    let env = TestEnv::new();
    env.quickstart();
    env.run(&["--plan", "plan.toml", "issue"]).ok();
    std::fs::rename(env.store_dir().join("state.db.key"), env.path("moved.key")).unwrap();
    let run = env.run(&["--plan", "plan.toml", "status"]).code(2);
    assert!(run.stderr.contains("state.db.key"), "{}", run.stderr);
    env.run(&["--plan", "plan.toml", "--key-file", "moved.key", "status"])
        .ok();

    let fresh = TestEnv::new();
    fresh.quickstart();
    let key = "A".repeat(64);
    let out = fresh
        .cmd()
        .args(["--plan", "plan.toml", "issue", "ca:root"])
        .env("CERTROLL_STORE_KEY", &key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        !fresh.store_dir().join("state.db.key").exists(),
        "the env key is used, no key file made"
    );
    // Any other key is refused at once, before anything is read or sealed under it.
    for args in [
        &["--plan", "plan.toml", "export", "ca:root", "--out", "r.pem"][..],
        &["--plan", "plan.toml", "issue"],
    ] {
        let out = fresh
            .cmd()
            .args(args)
            .env("CERTROLL_STORE_KEY", "B".repeat(64))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("does not belong"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(!fresh.path("r.pem").exists());
}

#[test]
fn two_writers_at_once_leave_each_device_exactly_once() {
    let env = TestEnv::new();
    env.write("plan.toml", &mixed_plan(300, 200));
    let spawn = || {
        env.cmd()
            .args(["--plan", "plan.toml", "-q", "issue"])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() || stderr.contains("another certroll"),
            "{stderr}"
        );
    }
    let s = env
        .run(&["--plan", "plan.toml", "status", "-o", "json"])
        .ok()
        .json();
    let devices = s["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 502);
    assert!(devices.iter().all(|d| d["registration"]["status"] == "assigned"));
    let again = env
        .run(&["--plan", "plan.toml", "issue", "-o", "json"])
        .ok()
        .json();
    assert!(again["steps"].as_array().unwrap().is_empty(), "{again}");
}

#[test]
fn a_busy_store_is_reported_after_the_lock_timeout() {
    let env = TestEnv::new();
    env.quickstart();
    env.run(&["--plan", "plan.toml", "issue"]).ok();
    // Hold the writer lock the way a running certroll does: an OS lock on the store file itself.
    let lock = std::fs::File::open(env.store_dir().join("state.db")).unwrap();
    lock.lock().unwrap();
    // No file beside the store decides who writes: deleting them lets nobody in (issue 9.3).
    let _ = std::fs::remove_file(env.store_dir().join("state.db.lock"));
    let run = env
        .run(&["--plan", "plan.toml", "--lock-timeout", "0", "issue"])
        .code(1);
    assert!(run.stderr.contains("another certroll"), "{}", run.stderr);
    // Readers are not blocked.
    env.run(&["--plan", "plan.toml", "status"]).ok();
    drop(lock);
    env.run(&["--plan", "plan.toml", "--lock-timeout", "0", "issue"])
        .ok();
}

#[test]
fn a_run_killed_part_way_is_finished_by_running_it_again() {
    let env = TestEnv::new();
    env.write("plan.toml", &mixed_plan(4000, 10));
    // Kill at a few different points; each rerun goes on from where the last one stopped.
    for delay_ms in [150, 400, 900] {
        let mut child = env
            .cmd()
            .args(["--plan", "plan.toml", "-q", "issue"])
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL: no chance to clean up
        let _ = child.wait();
    }
    env.run(&["--plan", "plan.toml", "issue"]).ok();
    let s = env
        .run(&["--plan", "plan.toml", "status", "-o", "json"])
        .ok()
        .json();
    let devices = s["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 4012);
    assert!(devices.iter().all(|d| d["registration"]["status"] == "assigned"
        && d["hub_identity"]["primary_thumbprint"] == d["installed"]["thumbprint"]));

    // No certificate was issued twice, and every CA exists once in the enrollment service.
    let db = rusqlite::Connection::open(env.store_dir().join("state.db")).unwrap();
    let twice: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM (SELECT name FROM vault_versions GROUP BY name HAVING COUNT(*) > 1)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(twice, 0);
    let versions: i64 = db
        .query_row("SELECT COUNT(*) FROM vault_versions", [], |r| r.get(0))
        .unwrap();
    assert_eq!(versions, 4012 + 4, "one version per device and per CA");
    let again = env
        .run(&["--plan", "plan.toml", "issue", "-o", "json"])
        .ok()
        .json();
    assert!(again["steps"].as_array().unwrap().is_empty());
}

#[test]
fn a_store_of_the_first_release_is_upgraded_by_any_verb_and_keeps_its_data() {
    let env = TestEnv::new();
    env.quickstart();
    env.plan_run(&["issue"]).ok();
    let before = env.plan_run(&["status", "-o", "json"]).ok().stdout;
    // Take the store back to schema 1, as the first release wrote it: every table and trigger
    // a later migration added goes, and the columns later migrations added.
    let db = env.store_dir().join("state.db");
    let sqlite = |sql: &str| {
        let out = std::process::Command::new("sqlite3")
            .arg(&db)
            .arg(sql)
            .output()
            .expect("the sqlite3 CLI");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let v1 = include_str!("../../src/store/schema_v1.sql");
    let mut rewind = String::new();
    for line in sqlite("SELECT type, name FROM sqlite_master WHERE type IN ('table', 'trigger')").lines() {
        let (kind, name) = line.split_once('|').unwrap();
        if name != "sqlite_sequence" && !v1.contains(&format!("CREATE TABLE {name} ")) {
            rewind.push_str(&format!("DROP {} IF EXISTS {name};\n", kind.to_uppercase()));
        }
    }
    rewind.push_str(
        "ALTER TABLE crl_entries DROP COLUMN issuer_version; ALTER TABLE vault_versions DROP COLUMN chain_der;
         DROP INDEX IF EXISTS registrations_by_enrollment;
         ALTER TABLE individual_enrollments DROP COLUMN etag; ALTER TABLE individual_enrollments DROP COLUMN dps_extra;
         ALTER TABLE enrollment_groups DROP COLUMN etag; ALTER TABLE enrollment_groups DROP COLUMN dps_extra;
         ALTER TABLE hub_devices DROP COLUMN etag; ALTER TABLE hub_devices DROP COLUMN hub_extra;
         ALTER TABLE service_cas DROP COLUMN etag;
         ALTER TABLE registrations DROP COLUMN etag; ALTER TABLE registrations DROP COLUMN created;
         ALTER TABLE registrations DROP COLUMN error_code;
         ALTER TABLE registrations DROP COLUMN decision_inputs; ALTER TABLE registrations DROP COLUMN decision_from;
         ALTER TABLE registrations DROP COLUMN decision_until; ALTER TABLE registrations DROP COLUMN device_id;
         PRAGMA user_version = 1;",
    );
    sqlite(&rewind);
    // A read-only verb upgrades it (under the writer lock) and reads the same fleet.
    env.plan_run(&["check"]).ok();
    assert_eq!(env.plan_run(&["status", "-o", "json"]).ok().stdout, before);
    let version: i64 = sqlite("PRAGMA user_version;").trim().parse().unwrap();
    assert!(version >= 4, "schema upgraded to {version}");
    env.plan_run(&["revoke", "device:sensor-01", "--reason", "superseded", "--yes"])
        .ok();
}
