//! Vault renewal (PRODUCT.md flow 8): with `reuse_key = true` a renewed device certificate keeps
//! the public key, without it the key changes; openssl is the judge of both.

use crate::util::*;

/// `NOW` plus `days`, RFC 3339.
fn at(days: i64) -> String {
    let t = certroll::clock::parse_rfc3339(NOW).unwrap() + time::Duration::days(days);
    certroll::clock::rfc3339(t)
}

/// The quickstart plan with the device policy's `reuse_key` set as given.
fn plan_with_reuse_key(env: &TestEnv, reuse_key: bool) {
    let text = std::fs::read_to_string(env.quickstart()).unwrap();
    let from = "exportable = true, reuse_key = false }";
    assert!(
        text.contains(from),
        "the quickstart's device policy changed shape"
    );
    let to = format!("exportable = true, reuse_key = {reuse_key} }}");
    env.write("plan.toml", &text.replacen(from, &to, 1));
}

/// What openssl reads from a certificate exported at `now`: (public key PEM, serial).
fn exported(env: &TestEnv, now: &str, device: &str, file: &str) -> (String, String) {
    env.plan_run(&["--now", now, "export", &format!("device:{device}"), "--out", file])
        .ok();
    let pubkey = env
        .openssl(&["x509", "-pubkey", "-noout", "-in", file])
        .ok()
        .stdout;
    assert!(pubkey.contains("BEGIN PUBLIC KEY"), "{pubkey}");
    let serial = env
        .openssl(&["x509", "-serial", "-noout", "-in", file])
        .ok()
        .stdout;
    let serial = serial
        .trim()
        .strip_prefix("serial=")
        .unwrap_or_else(|| panic!("{serial}"));
    (pubkey, normal_serial(serial))
}

/// A hex serial without case or leading zeros, so openssl's and certroll's spellings compare.
fn normal_serial(hex: &str) -> String {
    hex.trim().trim_start_matches('0').to_ascii_uppercase()
}

/// Issues everything, then renews gateway-01 twice: by an explicit roll on day 300, and by
/// `--due` on day 640 (auto-renew fires 30 days before the day-300 certificate expires on day
/// 665). Returns the three (public key, serial) pairs, oldest first, and checks `vault show`.
fn renew_twice(env: &TestEnv) -> [(String, String); 3] {
    env.plan_run(&["issue"]).ok();
    let first = exported(env, NOW, "gateway-01", "v1.pem");

    let r = env
        .plan_run(&[
            "--now",
            &at(300),
            "roll-secondary",
            "device:gateway-01",
            "-o",
            "json",
        ])
        .ok()
        .json();
    assert_eq!(r["devices"][0]["outcome"], "rolled", "{r}");
    let second = exported(env, &at(300), "gateway-01", "v2.pem");

    // Not due yet the day after: the day-300 certificate is new.
    let r = env
        .plan_run(&[
            "--now",
            &at(301),
            "roll-secondary",
            "--due",
            "device:gateway-01",
            "-o",
            "json",
        ])
        .ok()
        .json();
    assert_eq!(r["devices"][0]["outcome"], "not-due", "{r}");
    let r = env
        .plan_run(&[
            "--now",
            &at(640),
            "roll-secondary",
            "--due",
            "device:gateway-01",
            "-o",
            "json",
        ])
        .ok()
        .json();
    assert_eq!(r["devices"][0]["outcome"], "rolled", "{r}");
    let third = exported(env, &at(640), "gateway-01", "v3.pem");

    // Every renewal is a new certificate.
    assert_ne!(first.1, second.1, "the explicit roll issued no new certificate");
    assert_ne!(second.1, third.1, "the --due roll issued no new certificate");
    assert_ne!(first.1, third.1);

    // The vault lists the versions oldest first: the serials openssl read, in issue order.
    let show = env
        .plan_run(&[
            "--now",
            &at(640),
            "vault",
            "show",
            "device:gateway-01",
            "-o",
            "json",
        ])
        .ok()
        .json();
    let versions = show["versions"].as_array().unwrap();
    let serials: Vec<String> = versions
        .iter()
        .map(|v| normal_serial(v["cert"]["serial"].as_str().unwrap()))
        .collect();
    assert_eq!(
        serials,
        vec![first.1.clone(), second.1.clone(), third.1.clone()],
        "versions oldest first: {show}"
    );
    let created: Vec<&str> = versions.iter().map(|v| v["created"].as_str().unwrap()).collect();
    assert!(
        created.windows(2).all(|w| w[0] < w[1]),
        "created ascending: {created:?}"
    );
    [first, second, third]
}

#[test]
fn reuse_key_renewals_keep_the_public_key_compared_with_openssl() {
    let env = TestEnv::new();
    plan_with_reuse_key(&env, true);
    let [first, second, third] = renew_twice(&env);
    assert_eq!(
        first.0, second.0,
        "an explicit roll with reuse_key changed the key"
    );
    assert_eq!(second.0, third.0, "a --due roll with reuse_key changed the key");
    let show = env
        .plan_run(&["vault", "show", "device:gateway-01", "-o", "json"])
        .ok()
        .json();
    assert_eq!(show["policy"]["key_props"]["reuse_key"], true, "{show}");
}

#[test]
fn without_reuse_key_renewals_change_the_public_key() {
    let env = TestEnv::new();
    plan_with_reuse_key(&env, false);
    let [first, second, third] = renew_twice(&env);
    assert_ne!(
        first.0, second.0,
        "an explicit roll without reuse_key kept the key"
    );
    assert_ne!(second.0, third.0, "a --due roll without reuse_key kept the key");
    assert_ne!(first.0, third.0);
}
