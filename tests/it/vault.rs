//! `vault`: versions in order, key operations from key usage, disabled versions refuse to sign.

use crate::util::*;

#[test]
fn versions_policy_and_key_operations() {
    let env = TestEnv::new();
    env.write("plan.toml", &mixed_plan(2, 2));
    env.run(&["--plan", "plan.toml", "issue"]).ok();
    env.run(&[
        "--plan",
        "plan.toml",
        "--now",
        "2027-01-01T00:00:00Z",
        "roll-secondary",
        "device:gw-rsa",
    ])
    .ok();
    let v = env
        .run(&[
            "--plan",
            "plan.toml",
            "vault",
            "show",
            "device:gw-rsa",
            "-o",
            "json",
        ])
        .ok()
        .json();
    let versions = v["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2);
    assert!(
        versions[0]["created"].as_str() < versions[1]["created"].as_str(),
        "oldest first"
    );
    assert_eq!(
        v["key_operations"],
        serde_json::json!(["sign", "verify", "wrapKey", "unwrapKey"])
    );
    assert_eq!(v["policy"]["key_props"]["kty"], "RSA");
    assert_eq!(v["policy"]["key_props"]["key_size"], 2048);
    // An earlier version stays readable.
    assert_eq!(versions[0]["cert"]["subject"], "CN=gw-rsa");

    let list = env
        .run(&["--plan", "plan.toml", "vault", "list", "-o", "json"])
        .ok()
        .json();
    assert_eq!(list["certificates"].as_array().unwrap().len(), 4 + 4 + 2);
    env.run(&["--plan", "plan.toml", "vault", "show", "nope"]).code(2);
}

#[test]
fn a_disabled_ca_version_refuses_to_sign_until_enabled() {
    let env = TestEnv::new();
    env.quickstart();
    env.run(&["--plan", "plan.toml", "issue", "ca:factory"]).ok();
    env.run(&[
        "--plan",
        "plan.toml",
        "vault",
        "update",
        "ca:factory",
        "--disable",
    ])
    .ok();
    let r = env.run(&["--plan", "plan.toml", "issue"]).code(1);
    assert!(r.stderr.contains("disabled"), "{}", r.stderr);
    env.run(&["--plan", "plan.toml", "export", "ca:factory", "--out", "f.pem"])
        .code(2);
    env.run(&["--plan", "plan.toml", "vault", "update", "ca:factory", "--enable"])
        .ok();
    env.run(&["--plan", "plan.toml", "issue"]).ok();
}
