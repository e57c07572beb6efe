//! `[mail]` and `[hooks]`: how the contacts are mailed and which command is run with the events.

use super::super::raw::RawPlan;
use super::super::{HookConfig, MailConfig, SmtpTls, is_loopback_host};
use super::Validator;

/// Longest a hook may run, in seconds.
const MAX_HOOK_TIMEOUT: i64 = 3600;
/// How long a hook may run when the plan does not say.
const DEFAULT_HOOK_TIMEOUT: u32 = 30;

/// Whether `s` is a usable environment variable name.
pub(super) fn is_env_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl Validator<'_> {
    /// `[mail]`.
    pub(super) fn mail(&mut self, raw: &RawPlan) -> Option<MailConfig> {
        let spanned = raw.mail.as_ref()?;
        let m = spanned.get_ref();
        let mut out = MailConfig {
            allow_plaintext: m.allow_plaintext.unwrap_or(false),
            ..MailConfig::default()
        };
        if let Some(host) = &m.smtp_host {
            let h = host.get_ref();
            if h.is_empty() || h.chars().any(|c| c.is_whitespace() || c.is_control() || c == '/') {
                self.error(
                    host.span(),
                    format!("smtp_host `{h}` is not a host name or address"),
                );
            }
            out.smtp_host = Some(h.clone());
        }
        if let Some(port) = &m.smtp_port {
            match u16::try_from(*port.get_ref()) {
                Ok(p) if p > 0 => out.smtp_port = Some(p),
                _ => self.error(
                    port.span(),
                    format!("smtp_port = {} is out of range (1 to 65535)", port.get_ref()),
                ),
            }
        }
        if let Some(tls) = &m.tls {
            match SmtpTls::parse(tls.get_ref()) {
                Some(mode) => out.tls = Some(mode),
                None => self.error(
                    tls.span(),
                    format!(
                        "unknown tls mode `{}` (expected starttls, tls or none)",
                        tls.get_ref()
                    ),
                ),
            }
            if out.tls == Some(SmtpTls::None)
                && !out.allow_plaintext
                && let Some(host) = out.smtp_host.as_deref().filter(|h| !is_loopback_host(h))
            {
                self.error(
                    tls.span(),
                    format!(
                        "tls = \"none\" would send mail (and any password) in clear to `{host}`; \
                         it is meant for a relay on loopback: use starttls or tls, or set \
                         allow_plaintext = true"
                    ),
                );
            }
        }
        if let Some(user) = &m.username {
            if user.get_ref().is_empty() {
                self.error(
                    user.span(),
                    "username is empty; leave it out if the server needs no login",
                );
            }
            out.username = Some(user.get_ref().clone());
        }
        if let Some(var) = &m.password_env {
            let v = var.get_ref();
            if !is_env_name(v) {
                // The value is not echoed: a password put here by mistake must not be printed.
                self.error(
                    var.span(),
                    "password_env must be the name of an environment variable (letters, digits \
                     and `_`) that holds the password; never put the password itself in the plan",
                );
            }
            out.password_env = Some(v.clone());
        }
        if let Some(from) = &m.from {
            let f = from.get_ref();
            if f.parse::<lettre::message::Mailbox>().is_err() {
                self.error(
                    from.span(),
                    format!("from `{f}` is not an e-mail address (`certroll@example.com` or `certroll <certroll@example.com>`)"),
                );
            }
            out.from = Some(f.clone());
        }
        if let Some(ca) = &m.ca_file {
            if ca.get_ref().trim().is_empty() {
                self.error(ca.span(), "ca_file is empty; name a PEM file of CA certificates");
            } else if out.tls == Some(SmtpTls::None) {
                self.error(ca.span(), "ca_file is for TLS, but tls = \"none\"");
            }
            out.ca_file = Some(self.resolve(ca.get_ref()));
        }
        let no_contacts = raw.contacts.as_ref().is_none_or(|c| c.emails.is_empty());
        if no_contacts {
            self.error(
                spanned.span(),
                "[mail] is configured but [contacts] emails is empty: nobody would be mailed",
            );
        }
        Some(out)
    }

    /// `[hooks]`.
    pub(super) fn hooks(&mut self, raw: &RawPlan) -> Option<HookConfig> {
        let h = raw.hooks.as_ref()?.get_ref();
        let argv = h.command.get_ref();
        match argv.first() {
            None => self.error(
                h.command.span(),
                "hooks command is empty: give the program and its arguments, e.g. [\"/usr/local/bin/page\", \"--team\", \"pki\"]",
            ),
            Some(prog) if prog.get_ref().trim().is_empty() => {
                self.error(prog.span(), "hooks command names no program")
            }
            Some(_) => {}
        }
        let timeout_secs = match &h.timeout_secs {
            None => DEFAULT_HOOK_TIMEOUT,
            Some(t) => match u32::try_from(*t.get_ref()) {
                Ok(secs) if (1..=MAX_HOOK_TIMEOUT).contains(t.get_ref()) => secs,
                _ => {
                    self.error(
                        t.span(),
                        format!(
                            "timeout_secs = {} is out of range (1 to {MAX_HOOK_TIMEOUT})",
                            t.get_ref()
                        ),
                    );
                    DEFAULT_HOOK_TIMEOUT
                }
            },
        };
        let mut command: Vec<String> = argv.iter().map(|a| a.get_ref().clone()).collect();
        if let Some(prog) = command.first_mut()
            && prog.contains('/')
        {
            *prog = self.resolve(prog).to_string_lossy().into_owned();
        }
        Some(HookConfig {
            command,
            timeout_secs,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::plan::{SmtpTls, parse};
    use std::path::Path;

    const CONTACTS: &str = "version = 1\n[contacts]\nemails = [\"pki@example.com\"]\n";

    fn load(extra: &str) -> Result<crate::plan::Plan, crate::plan::PlanError> {
        parse(Path::new("/plans/certroll.toml"), &format!("{CONTACTS}{extra}"))
    }

    #[test]
    fn mail_and_hooks_have_defaults_and_resolve_the_hook_program() {
        let plan = load(
            "[mail]\nsmtp_host = \"smtp.example.com\"\nfrom = \"certroll@example.com\"\n\
             [hooks]\ncommand = [\"bin/page\", \"--team\", \"pki\"]\n",
        )
        .unwrap();
        let mail = plan.mail.unwrap();
        assert_eq!(mail.smtp_host.as_deref(), Some("smtp.example.com"));
        assert_eq!((mail.tls, mail.smtp_port), (None, None));
        assert_eq!(SmtpTls::StartTls.default_port(), 587);
        assert_eq!(SmtpTls::Tls.default_port(), 465);
        let hooks = plan.hooks.unwrap();
        assert_eq!(hooks.command, ["/plans/bin/page", "--team", "pki"]);
        assert_eq!(hooks.timeout_secs, 30);
        let bare = load("[hooks]\ncommand = [\"pager\"]\n").unwrap();
        assert_eq!(
            bare.hooks.unwrap().command,
            ["pager"],
            "a bare name is looked up in PATH"
        );
        assert!(load("").unwrap().mail.is_none());
    }

    #[test]
    fn plaintext_is_for_loopback_unless_allowed() {
        for host in ["127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.53"] {
            load(&format!("[mail]\nsmtp_host = \"{host}\"\ntls = \"none\"\n")).unwrap();
        }
        let e = load("[mail]\nsmtp_host = \"mail.example.com\"\ntls = \"none\"\n").unwrap_err();
        assert_eq!((e.line, e.column), (Some(6), Some(7)), "{e}");
        assert!(e.message.contains("in clear"), "{e}");
        load("[mail]\nsmtp_host = \"mail.example.com\"\ntls = \"none\"\nallow_plaintext = true\n").unwrap();
    }

    #[test]
    fn bad_values_are_located_and_a_password_is_never_echoed() {
        let cases = [
            ("[mail]\nsmtp_port = 70000\n", 5, 13, "smtp_port"),
            ("[mail]\ntls = \"ssl\"\n", 5, 7, "ssl"),
            ("[mail]\nfrom = \"not an address\"\n", 5, 8, "not an address"),
            (
                "[mail]\npassword_env = \"hunter2!\"\n",
                5,
                16,
                "never put the password",
            ),
            ("[hooks]\ncommand = []\n", 5, 11, "empty"),
            (
                "[hooks]\ncommand = [\"x\"]\ntimeout_secs = 0\n",
                6,
                16,
                "timeout_secs",
            ),
        ];
        for (extra, line, column, word) in cases {
            let e = load(extra).unwrap_err();
            assert_eq!((e.line, e.column), (Some(line), Some(column)), "{extra}: {e}");
            assert!(e.message.contains(word), "{extra}: {e}");
            assert!(!e.to_string().contains("hunter2"), "{e}");
        }
        let e = parse(
            Path::new("p.toml"),
            "version = 1\n[mail]\nsmtp_host = \"127.0.0.1\"\n",
        )
        .unwrap_err();
        assert!(e.message.contains("[contacts]"), "{e}");
    }
}
