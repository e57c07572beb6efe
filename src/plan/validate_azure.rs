//! `[backend] kind = "azure"`: the vault URL, credentials, trust, resolve overrides, and the DPS
//! and hub settings that later increments use.

use super::super::raw::{RawAzureDps, RawAzureHub, RawBackend};
use super::super::{
    AzureAuth, AzureConfig, AzureDps, AzureHub, ClientLimits, DEFAULT_NOTIFY_LISTING_HOURS,
    DEFAULT_SERVICE_CONCURRENCY, DEFAULT_VAULT_CONCURRENCY, MAX_CONCURRENCY, MAX_NOTIFY_LISTING_HOURS,
};
use super::Validator;
use super::notify::is_env_name;
use std::collections::BTreeMap;
use toml::Spanned;

/// The `auth` values, in the order the docs list them.
const AUTH_KINDS: &str =
    "developer-tools, azure-cli, managed-identity, workload-identity, client-secret or token-env";

/// Keys that only `kind = "azure"` reads, with their spans, for refusing them elsewhere.
pub(super) fn azure_only_keys(b: &RawBackend) -> Vec<(&'static str, std::ops::Range<usize>)> {
    let mut out = Vec::new();
    let mut add = |name, span: Option<std::ops::Range<usize>>| {
        if let Some(span) = span {
            out.push((name, span));
        }
    };
    add("vault_url", b.vault_url.as_ref().map(|v| v.span()));
    add("vault_rate", b.vault_rate.as_ref().map(|v| v.span()));
    add(
        "vault_concurrency",
        b.vault_concurrency.as_ref().map(|v| v.span()),
    );
    add(
        "notify_listing_hours",
        b.notify_listing_hours.as_ref().map(|v| v.span()),
    );
    add("auth", b.auth.as_ref().map(|v| v.span()));
    add("token_env", b.token_env.as_ref().map(|v| v.span()));
    add("tenant_id", b.tenant_id.as_ref().map(|v| v.span()));
    add("client_id", b.client_id.as_ref().map(|v| v.span()));
    add(
        "client_secret_env",
        b.client_secret_env.as_ref().map(|v| v.span()),
    );
    add("ca_file", b.ca_file.as_ref().map(|v| v.span()));
    add("resolve", b.resolve.as_ref().map(|v| v.span()));
    add("dps", b.dps.as_ref().map(|v| v.span()));
    add("hubs", b.hubs.values().next().map(|v| v.span()));
    out
}

impl Validator<'_> {
    /// `[backend] kind = "azure"` (`kind` is its span).
    pub(super) fn azure(&mut self, b: &RawBackend, kind: std::ops::Range<usize>) -> Option<AzureConfig> {
        let before = self.errors.len();
        let vault_url = match &b.vault_url {
            Some(url) => {
                self.place("vault_url", url.span());
                self.vault_url(url)
            }
            None => {
                self.error_missing(
                    kind.clone(),
                    "backend kind `azure` needs `vault_url = \"https://NAME.vault.azure.net\"`",
                );
                String::new()
            }
        };
        let vault_limits = self.limits(
            b.vault_rate.as_ref(),
            b.vault_concurrency.as_ref(),
            DEFAULT_VAULT_CONCURRENCY,
        );
        let notify_listing_hours = match &b.notify_listing_hours {
            None => DEFAULT_NOTIFY_LISTING_HOURS,
            Some(h) => match u32::try_from(*h.get_ref()) {
                Ok(v) if v <= MAX_NOTIFY_LISTING_HOURS => v,
                _ => {
                    self.error(
                        h.span(),
                        format!(
                            "notify_listing_hours = {} is out of range (0 to {MAX_NOTIFY_LISTING_HOURS}; 0 \
                             lists Key Vault after every verb)",
                            h.get_ref()
                        ),
                    );
                    DEFAULT_NOTIFY_LISTING_HOURS
                }
            },
        };
        let auth = self.auth(b, kind);
        let ca_file = b.ca_file.as_ref().map(|f| {
            self.place("ca_file", f.span());
            self.store_file("ca_file", f)
        });
        let mut resolve = BTreeMap::new();
        if let Some(table) = &b.resolve {
            for (host, addr) in table.get_ref() {
                let h = host.get_ref();
                if h.is_empty() || h.contains(['/', ':', ' ']) {
                    self.error(host.span(), format!("resolve host `{h}` is not a host name"));
                    continue;
                }
                match addr.get_ref().parse::<std::net::SocketAddr>() {
                    Ok(a) => {
                        resolve.insert(h.to_ascii_lowercase(), a);
                    }
                    Err(_) => self.error(
                        addr.span(),
                        format!(
                            "resolve address `{}` for `{h}` is not IP:PORT (e.g. \"127.0.0.1:8443\")",
                            addr.get_ref()
                        ),
                    ),
                }
            }
        }
        for (key, value) in [
            ("token_env", &b.token_env),
            ("client_secret_env", &b.client_secret_env),
        ] {
            if let Some(v) = value {
                self.place(key, v.span());
            }
        }
        let dps = b.dps.as_ref().map(|d| {
            let d = d.get_ref();
            self.place("dps.host", d.host.span());
            self.place("dps.sas_key_env", d.sas_key_env.span());
            self.azure_dps(d)
        });
        let mut hubs = BTreeMap::new();
        for (name, hub) in &b.hubs {
            self.check_name("hub", name);
            let h = hub.get_ref();
            self.place(format!("hubs.{}.host", name.get_ref()), h.host.span());
            self.place(
                format!("hubs.{}.sas_key_env", name.get_ref()),
                h.sas_key_env.span(),
            );
            hubs.insert(name.get_ref().clone(), self.azure_hub(hub.get_ref()));
        }
        if self.errors.len() != before {
            return None;
        }
        Some(AzureConfig {
            vault_url,
            vault_limits,
            notify_listing_hours,
            auth,
            ca_file,
            resolve,
            dps,
            hubs,
            // Filled in when the plan is whole (groups and enrollments add theirs).
            places: BTreeMap::new(),
        })
    }

    /// `vault_url`: `https://HOST` with nothing after the host (Key Vault's pollers drop any path).
    fn vault_url(&mut self, url: &Spanned<String>) -> String {
        let u = url.get_ref().trim_end_matches('/');
        let host = u.strip_prefix("https://");
        let ok = host
            .is_some_and(|h| !h.is_empty() && !h.contains(['/', '?', '#', '@', ' ']) && !h.starts_with(':'));
        if !ok {
            self.error(
                url.span(),
                format!(
                    "vault_url `{}` is not a vault URL: use `https://NAME.vault.azure.net` (https, \
                     no path)",
                    url.get_ref()
                ),
            );
        }
        u.to_ascii_lowercase()
    }

    /// `auth` and the keys that go with it.
    fn auth(&mut self, b: &RawBackend, kind: std::ops::Range<usize>) -> AzureAuth {
        let Some(auth) = &b.auth else {
            self.error_missing(kind, format!("backend kind `azure` needs `auth` ({AUTH_KINDS})"));
            return AzureAuth::DeveloperTools;
        };
        let span = auth.span();
        // Which optional keys each kind reads; any other is an error, so a typo is not ignored.
        let (out, allowed): (AzureAuth, &[&str]) = match auth.get_ref().as_str() {
            "developer-tools" => (AzureAuth::DeveloperTools, &[]),
            "azure-cli" => (AzureAuth::AzureCli, &[]),
            "workload-identity" => (AzureAuth::WorkloadIdentity, &[]),
            "managed-identity" => (
                AzureAuth::ManagedIdentity {
                    client_id: b.client_id.as_ref().map(|c| c.get_ref().clone()),
                },
                &["client_id"],
            ),
            "client-secret" => {
                let mut need = |what: &str, v: &Option<Spanned<String>>| match v {
                    Some(v) => v.get_ref().clone(),
                    None => {
                        self.error_missing(span.clone(), format!("auth `client-secret` needs `{what}`"));
                        String::new()
                    }
                };
                let tenant_id = need("tenant_id", &b.tenant_id);
                let client_id = need("client_id", &b.client_id);
                let secret_env = need("client_secret_env", &b.client_secret_env);
                if let Some(env) = &b.client_secret_env {
                    self.env_name("client_secret_env", env);
                }
                (
                    AzureAuth::ClientSecret {
                        tenant_id,
                        client_id,
                        secret_env,
                    },
                    &["tenant_id", "client_id", "client_secret_env"],
                )
            }
            "token-env" => {
                let var = match &b.token_env {
                    Some(env) => {
                        self.env_name("token_env", env);
                        env.get_ref().clone()
                    }
                    None => {
                        self.error_missing(span.clone(), "auth `token-env` needs `token_env = \"VAR\"`");
                        String::new()
                    }
                };
                (AzureAuth::TokenEnv { var }, &["token_env"])
            }
            other => {
                self.error(span, format!("unknown auth `{other}` (expected {AUTH_KINDS})"));
                return AzureAuth::DeveloperTools;
            }
        };
        let present = [
            ("token_env", b.token_env.as_ref()),
            ("tenant_id", b.tenant_id.as_ref()),
            ("client_id", b.client_id.as_ref()),
            ("client_secret_env", b.client_secret_env.as_ref()),
        ];
        for (key, value) in present {
            if let Some(v) = value
                && !allowed.contains(&key)
            {
                self.error(
                    v.span(),
                    format!("`{key}` does not apply to auth `{}`", auth.get_ref()),
                );
            }
        }
        out
    }

    /// A key naming an environment variable; the value is not echoed (it may be a secret put
    /// there by mistake).
    fn env_name(&mut self, key: &str, env: &Spanned<String>) {
        if !is_env_name(env.get_ref()) {
            self.error(
                env.span(),
                format!(
                    "{key} must be the name of an environment variable (letters, digits and `_`); \
                     never put the secret itself in the plan"
                ),
            );
        }
    }

    /// `rate` and `concurrency` of one service.
    fn limits(
        &mut self,
        rate: Option<&Spanned<f64>>,
        concurrency: Option<&Spanned<i64>>,
        default_concurrency: usize,
    ) -> ClientLimits {
        let rate = rate.and_then(|r| {
            let v = *r.get_ref();
            if v.is_finite() && v > 0.0 {
                Some(v)
            } else {
                self.error(
                    r.span(),
                    format!("rate {v} is not a positive number of requests per second"),
                );
                None
            }
        });
        let concurrency = match concurrency {
            Some(c) if (1..=MAX_CONCURRENCY).contains(c.get_ref()) => *c.get_ref() as usize,
            Some(c) => {
                self.error(
                    c.span(),
                    format!(
                        "concurrency {} is out of range (1 to {MAX_CONCURRENCY})",
                        c.get_ref()
                    ),
                );
                default_concurrency
            }
            None => default_concurrency,
        };
        ClientLimits { rate, concurrency }
    }

    /// A service host name (no scheme, no path).
    fn host(&mut self, what: &str, host: &Spanned<String>) -> String {
        let h = host.get_ref();
        if h.is_empty() || h.contains(['/', ' ', '@']) {
            self.error(
                host.span(),
                format!("{what} host `{h}` is not a host name (no scheme, no path)"),
            );
        }
        h.to_ascii_lowercase()
    }

    fn azure_dps(&mut self, d: &RawAzureDps) -> AzureDps {
        let host = self.host("dps", &d.host);
        if d.id_scope.get_ref().trim().is_empty() {
            self.error(d.id_scope.span(), "dps id_scope is empty");
        }
        self.env_name("sas_key_env", &d.sas_key_env);
        AzureDps {
            host,
            id_scope: d.id_scope.get_ref().clone(),
            resource_id: d.resource_id.as_ref().map(|r| r.get_ref().clone()),
            sas_policy: d.sas_policy.get_ref().clone(),
            sas_key_env: d.sas_key_env.get_ref().clone(),
            limits: self.limits(
                d.rate.as_ref(),
                d.concurrency.as_ref(),
                DEFAULT_SERVICE_CONCURRENCY,
            ),
        }
    }

    fn azure_hub(&mut self, h: &RawAzureHub) -> AzureHub {
        let host = self.host("hub", &h.host);
        self.env_name("sas_key_env", &h.sas_key_env);
        AzureHub {
            host,
            sas_policy: h.sas_policy.get_ref().clone(),
            sas_key_env: h.sas_key_env.get_ref().clone(),
            limits: self.limits(
                h.rate.as_ref(),
                h.concurrency.as_ref(),
                DEFAULT_SERVICE_CONCURRENCY,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::plan::{AzureAuth, PlanError, parse};
    use std::path::Path;

    const HEAD: &str = "version = 1\n[backend]\nkind = \"azure\"\n";

    fn check(rest: &str) -> Result<crate::plan::Plan, PlanError> {
        parse(Path::new("/plans/p.toml"), &format!("{HEAD}{rest}"))
    }

    fn err_at(rest: &str, line: usize, needle: &str) {
        let e = check(rest).err().unwrap_or_else(|| panic!("accepted:\n{rest}"));
        assert_eq!(e.line, Some(line), "{e}");
        assert!(e.message.contains(needle), "{e}");
    }

    #[test]
    fn a_full_azure_section_is_read() {
        let plan = check(
            "vault_url = \"https://Contoso.vault.azure.net/\"\nauth = \"client-secret\"\n\
             tenant_id = \"t\"\nclient_id = \"c\"\nclient_secret_env = \"SECRET\"\n\
             ca_file = \"ca.pem\"\nvault_concurrency = 3\nvault_rate = 2.5\n\
             notify_listing_hours = 6\n\
             resolve = { \"contoso.vault.azure.net\" = \"127.0.0.1:8443\" }\n\
             dps = { host = \"d.azure-devices-provisioning.net\", id_scope = \"0ne1\", \
             sas_policy = \"p\", sas_key_env = \"DPS_KEY\" }\n\
             [backend.hubs.hub-a]\nhost = \"h.azure-devices.net\"\nsas_policy = \"p\"\n\
             sas_key_env = \"HUB_KEY\"\nconcurrency = 9\n",
        )
        .unwrap();
        let a = plan.azure.expect("azure settings");
        assert_eq!(a.vault_url, "https://contoso.vault.azure.net");
        assert_eq!(a.vault_limits.concurrency, 3);
        assert_eq!(a.vault_limits.rate, Some(2.5));
        assert_eq!(a.notify_listing_hours, 6);
        assert!(matches!(a.auth, AzureAuth::ClientSecret { ref secret_env, .. } if secret_env == "SECRET"));
        assert_eq!(a.ca_file.as_deref(), Some(Path::new("/plans/ca.pem")));
        assert_eq!(a.resolve["contoso.vault.azure.net"].port(), 8443);
        assert_eq!(a.dps.unwrap().id_scope, "0ne1");
        assert_eq!(a.hubs["hub-a"].limits.concurrency, 9);
        // The local store stays, for the fleet record and the journal.
        let crate::plan::BackendConfig::Local { path, .. } = plan.backend;
        assert_eq!(path, Path::new("/plans/.certroll/state.db"));
    }

    /// A key the azure backend needs, misspelt: the unknown key is named at its line, not the
    /// `kind` or `auth` above it that then lacks it (as a misspelt `hook` is, trial az10 N5).
    #[test]
    fn a_misspelt_needed_key_is_named_before_the_key_that_needs_it() {
        err_at(
            "vault_ulr = \"https://v.vault.azure.net\"\nauth = \"azure-cli\"\n",
            4,
            "unknown field `vault_ulr`",
        );
        err_at(
            "vault_url = \"https://v.vault.azure.net\"\nauth = \"token-env\"\ntoken_evn = \"T\"\n",
            6,
            "unknown field `token_evn`",
        );
    }

    #[test]
    fn bad_azure_settings_are_located() {
        err_at("auth = \"azure-cli\"\n", 3, "needs `vault_url");
        err_at(
            "vault_url = \"http://v.vault.azure.net\"\nauth = \"azure-cli\"\n",
            4,
            "is not a vault URL",
        );
        err_at(
            "vault_url = \"https://v.vault.azure.net/x\"\nauth = \"azure-cli\"\n",
            4,
            "no path",
        );
        err_at("vault_url = \"https://v.vault.azure.net\"\n", 3, "needs `auth`");
        err_at(
            "vault_url = \"https://v.vault.azure.net\"\nauth = \"magic\"\n",
            5,
            "unknown auth `magic`",
        );
        err_at(
            "vault_url = \"https://v.vault.azure.net\"\nauth = \"token-env\"\n",
            5,
            "needs `token_env",
        );
        err_at(
            "vault_url = \"https://v.vault.azure.net\"\nauth = \"azure-cli\"\ntoken_env = \"T\"\n",
            6,
            "`token_env` does not apply to auth `azure-cli`",
        );
        err_at(
            "vault_url = \"https://v.vault.azure.net\"\nauth = \"client-secret\"\ntenant_id = \"t\"\nclient_id = \"c\"\n",
            5,
            "needs `client_secret_env`",
        );
        err_at(
            "vault_url = \"https://v.vault.azure.net\"\nauth = \"azure-cli\"\nvault_concurrency = 0\n",
            6,
            "concurrency 0 is out of range",
        );
        err_at(
            "vault_url = \"https://v.vault.azure.net\"\nauth = \"azure-cli\"\nnotify_listing_hours = -1\n",
            6,
            "notify_listing_hours = -1 is out of range (0 to 8760",
        );
        let a = check("vault_url = \"https://v.vault.azure.net\"\nauth = \"azure-cli\"\n").unwrap();
        assert_eq!(a.azure.unwrap().notify_listing_hours, 24, "a day by default");
        err_at(
            "vault_url = \"https://v.vault.azure.net\"\nauth = \"azure-cli\"\nresolve = { \"v.vault.azure.net\" = \"localhost\" }\n",
            6,
            "is not IP:PORT",
        );
    }

    #[test]
    fn a_secret_put_where_a_variable_name_belongs_is_refused_and_not_echoed() {
        let e = check(
            "vault_url = \"https://v.vault.azure.net\"\nauth = \"token-env\"\ntoken_env = \"eyJ0eXAi.secret\"\n",
        )
        .unwrap_err();
        assert_eq!(e.line, Some(6));
        assert!(!e.message.contains("eyJ0eXAi"), "{e}");
    }

    #[test]
    fn azure_keys_on_a_local_backend_are_errors() {
        let e = parse(
            Path::new("/plans/p.toml"),
            "version = 1\n[backend]\nvault_url = \"https://v.vault.azure.net\"\n",
        )
        .unwrap_err();
        assert_eq!(e.line, Some(3));
        assert!(e.message.contains("applies only to `kind = \"azure\"`"), "{e}");
    }
}
