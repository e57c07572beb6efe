//! `[serve]`: the names `certroll serve` answers to and the bearer-token principals it admits.

use super::super::raw::RawPlan;
use super::super::{
    ArmRole, CertificatePermission, PrincipalSpec, SERVE_SERVICES, ServeConfig, ServiceLimits,
};
use super::Validator;
use super::notify::is_env_name;
use std::collections::BTreeMap;

/// Whether `name` is a valid Key Vault name: 3 to 24 letters, digits and `-`, starting with a
/// letter, ending with a letter or digit, no `--` (Azure's rule).
fn is_vault_name(name: &str) -> bool {
    let b = name.as_bytes();
    (3..=24).contains(&b.len())
        && b[0].is_ascii_alphabetic()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        && !name.contains("--")
}

/// Whether `name` is a valid DPS name: 3 to 64 letters, digits and `-`, not starting or ending
/// with `-`.
fn is_dps_name(name: &str) -> bool {
    let b = name.as_bytes();
    (3..=64).contains(&b.len())
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
}

impl Validator<'_> {
    /// `[serve]`; the defaults when the plan has none.
    pub(super) fn serve(&mut self, raw: &RawPlan) -> ServeConfig {
        let mut out = ServeConfig::default();
        let Some(spanned) = raw.serve.as_ref() else {
            return out;
        };
        let s = spanned.get_ref();
        if let Some(vault) = &s.vault {
            let v = vault.get_ref();
            if !is_vault_name(v) {
                self.error(
                    vault.span(),
                    format!(
                        "vault name `{v}` is not valid: use 3 to 24 letters, digits and `-`, \
                         starting with a letter and ending with a letter or digit"
                    ),
                );
            }
            out.vault = v.to_ascii_lowercase();
        }
        if let Some(dps) = &s.dps {
            let d = dps.get_ref();
            if !is_dps_name(d) {
                self.error(
                    dps.span(),
                    format!(
                        "dps name `{d}` is not valid: use 3 to 64 letters, digits and `-`, not \
                         starting or ending with `-`"
                    ),
                );
            }
            out.dps = d.to_ascii_lowercase();
        }
        let mut by_env: BTreeMap<String, String> = BTreeMap::new();
        for (name, principal) in &s.principals {
            let n = name.get_ref();
            if n.is_empty()
                || !n
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                self.error(
                    name.span(),
                    format!("principal name `{n}` is not valid: use letters, digits, `-` and `_`"),
                );
            }
            let p = principal.get_ref();
            let env = p.token_env.get_ref();
            if !is_env_name(env) {
                // Not echoed: a token put here by mistake must not be printed.
                self.error(
                    p.token_env.span(),
                    "token_env must be the name of an environment variable (letters, digits and \
                     `_`) that holds the principal's bearer token; never put the token itself in \
                     the plan",
                );
            } else if let Some(other) = by_env.insert(env.clone(), n.clone()) {
                self.error(
                    p.token_env.span(),
                    format!("principals `{other}` and `{n}` both take their token from `{env}`"),
                );
            }
            let mut permissions = Vec::new();
            for perm in p.permissions.get_ref() {
                let text = perm.get_ref();
                if text.eq_ignore_ascii_case("all") {
                    permissions.extend(CertificatePermission::ALL);
                } else if let Some(found) = CertificatePermission::parse(text) {
                    permissions.push(found);
                } else {
                    let known: Vec<&str> = CertificatePermission::ALL.iter().map(|p| p.name()).collect();
                    self.error(
                        perm.span(),
                        format!(
                            "unknown certificate permission `{text}` (expected \"all\" or some of {})",
                            known.join(", ")
                        ),
                    );
                }
            }
            permissions.sort();
            permissions.dedup();
            let arm_role = p.arm_role.as_ref().and_then(|role| {
                let text = role.get_ref();
                let found = ArmRole::parse(text);
                if found.is_none() {
                    self.error(
                        role.span(),
                        format!(
                            "unknown arm_role `{}` (expected \"reader\" or \"contributor\"; Azure's \
                             Owner role is \"contributor\" here)",
                            crate::error::snippet(text)
                        ),
                    );
                }
                found
            });
            out.principals.insert(
                n.clone(),
                PrincipalSpec {
                    token_env: env.clone(),
                    permissions,
                    arm_role,
                },
            );
        }
        for (name, limits) in &s.services {
            let n = name.get_ref();
            if !SERVE_SERVICES.contains(&n.as_str()) {
                self.error(
                    name.span(),
                    format!(
                        "unknown service `{n}` (expected one of {})",
                        SERVE_SERVICES.join(", ")
                    ),
                );
                continue;
            }
            let l = limits.get_ref();
            let mut out_l = ServiceLimits {
                error_status: 503,
                ..ServiceLimits::default()
            };
            let mut positive = |v: &Option<toml::Spanned<i64>>, key: &str, max: i64| -> Option<u32> {
                let v = v.as_ref()?;
                if !(1..=max).contains(v.get_ref()) {
                    self.error(
                        v.span(),
                        format!("{key} = {} is out of range (1 to {max})", v.get_ref()),
                    );
                    return None;
                }
                Some(*v.get_ref() as u32)
            };
            out_l.rate_per_second = positive(&l.rate_per_second, "rate_per_second", 1_000_000);
            out_l.burst = positive(&l.burst, "burst", 1_000_000);
            out_l.delay_ms = positive(&l.delay_ms, "delay_ms", 600_000).unwrap_or(0);
            out_l.throttle_secs = positive(&l.throttle_secs, "throttle_secs", 86_400);
            out_l.drop_first = positive(&l.drop_first, "drop_first", 1_000_000).unwrap_or(0);
            for (v, key, slot) in [
                (&l.error_percent, "error_percent", &mut out_l.error_percent),
                (&l.drop_percent, "drop_percent", &mut out_l.drop_percent),
            ] {
                if let Some(v) = v {
                    let p = *v.get_ref();
                    if (0.0..=100.0).contains(&p) {
                        *slot = p;
                    } else {
                        self.error(v.span(), format!("{key} = {p} is out of range (0 to 100)"));
                    }
                }
            }
            if let Some(st) = &l.error_status {
                match *st.get_ref() {
                    500 | 503 => out_l.error_status = *st.get_ref() as u16,
                    other => self.error(st.span(), format!("error_status = {other} must be 500 or 503")),
                }
            }
            for (set, key) in [
                (out_l.burst.is_some(), "a burst"),
                (out_l.throttle_secs.is_some(), "a throttle_secs"),
            ] {
                if set && out_l.rate_per_second.is_none() {
                    self.error(
                        limits.span(),
                        format!("[serve.services.{n}] has {key} but no rate_per_second"),
                    );
                }
            }
            out.services.insert(n.clone(), out_l);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::{is_dps_name, is_vault_name};

    #[test]
    fn vault_and_dps_names_follow_azure_rules() {
        for ok in ["certroll", "my-vault-01", "abc"] {
            assert!(is_vault_name(ok), "{ok}");
        }
        for bad in [
            "ab",
            "1vault",
            "vault-",
            "my--vault",
            "a_b_c",
            "abcdefghijklmnopqrstuvwxy",
        ] {
            assert!(!is_vault_name(bad), "{bad}");
        }
        assert!(is_dps_name("certroll-dps") && is_dps_name("9dps"));
        assert!(!is_dps_name("-dps") && !is_dps_name("dp") && !is_dps_name("a.b.c"));
    }
}
