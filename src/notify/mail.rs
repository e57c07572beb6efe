//! Mail to the contacts over SMTP (lettre, rustls): the settings from the plan's `[mail]` and the
//! `CERTROLL_SMTP_*` environment, the summary message, and sending it.

use super::EventReport;
use crate::error::input;
use crate::plan::{MailConfig, Plan, SmtpTls, is_loopback_host};
use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::{Body, Mailbox};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{Message, SmtpTransport, Transport};
use std::time::Duration;
use zeroize::Zeroizing;

/// How long one SMTP conversation may take (connect, each command).
pub const SMTP_TIMEOUT: Duration = Duration::from_secs(30);
/// Events listed in one mail; the rest are counted.
const LISTED: usize = 200;

/// Resolved mail settings: the plan's `[mail]` with the environment's overrides applied.
pub struct MailSettings {
    /// SMTP host.
    pub host: String,
    /// SMTP port.
    pub port: u16,
    /// TLS mode.
    pub tls: SmtpTls,
    /// Login, if any.
    pub username: Option<String>,
    password: Option<Zeroizing<String>>,
    /// Sender.
    pub from: Mailbox,
    /// Recipients: the plan's contacts (the vault's, once `vault contacts set`, take their place).
    pub contacts: Vec<String>,
    /// Extra trusted CA certificates (PEM) for the server, from `ca_file`.
    ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for MailSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("from", &self.from.to_string())
            .finish()
    }
}

impl MailSettings {
    /// `host:port (tls mode)`, for messages.
    pub fn describe(&self) -> String {
        format!("{}:{} ({})", self.host, self.port, self.tls.as_str())
    }

    /// Resolves the settings from the plan and `env` (a look-up of environment variables).
    /// `Ok(None)` when the plan has no `[mail]`. Bad values are input errors (exit 2).
    pub fn resolve(
        plan: &Plan,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Option<MailSettings>> {
        let Some(cfg) = &plan.mail else {
            return Ok(None);
        };
        let MailConfig {
            smtp_host,
            smtp_port,
            tls,
            allow_plaintext,
            username,
            password_env,
            from,
            ca_file,
        } = cfg;
        let env_nonempty = |k: &str| env(k).filter(|v| !v.is_empty());
        let host = env_nonempty("CERTROLL_SMTP_HOST")
            .or_else(|| smtp_host.clone())
            .ok_or_else(|| input("mail: no SMTP host: set smtp_host in [mail] or CERTROLL_SMTP_HOST"))?;
        if host
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '/')
        {
            return Err(input(format!(
                "mail: SMTP host `{host}` is not a host name or address"
            )));
        }
        let tls = match env_nonempty("CERTROLL_SMTP_TLS") {
            Some(t) => SmtpTls::parse(&t).ok_or_else(|| {
                input(format!(
                    "CERTROLL_SMTP_TLS=`{t}` is not a tls mode (expected starttls, tls or none)"
                ))
            })?,
            None => tls.unwrap_or(SmtpTls::StartTls),
        };
        if tls == SmtpTls::None && !allow_plaintext && !is_loopback_host(&host) {
            return Err(input(format!(
                "mail: tls = \"none\" would send mail (and any password) in clear to `{host}`; \
                 use starttls or tls, or set allow_plaintext = true in [mail]"
            )));
        }
        let port = match env_nonempty("CERTROLL_SMTP_PORT") {
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| input(format!("CERTROLL_SMTP_PORT=`{p}` is not a port (1 to 65535)")))?,
            None => smtp_port.unwrap_or(tls.default_port()),
        };
        let from_text = env_nonempty("CERTROLL_SMTP_FROM")
            .or_else(|| from.clone())
            .ok_or_else(|| input("mail: no sender: set from in [mail] or CERTROLL_SMTP_FROM"))?;
        let from = from_text.parse::<Mailbox>().map_err(|e| {
            input(format!(
                "mail: sender `{from_text}` is not an e-mail address: {e}"
            ))
        })?;
        let username = env_nonempty("CERTROLL_SMTP_USERNAME").or_else(|| username.clone());
        let password = match env_nonempty("CERTROLL_SMTP_PASSWORD") {
            Some(p) => Some(Zeroizing::new(p)),
            None => match password_env {
                Some(var) => Some(Zeroizing::new(env_nonempty(var).ok_or_else(|| {
                    input(format!(
                        "mail: password_env names `{var}`, but that environment variable is not set"
                    ))
                })?)),
                None => None,
            },
        };
        if username.is_some() != password.is_some() {
            return Err(input(if username.is_some() {
                "mail: a username is set but no password (set password_env in [mail], or CERTROLL_SMTP_PASSWORD)"
            } else {
                "mail: a password is set but no username (set username in [mail], or CERTROLL_SMTP_USERNAME)"
            }));
        }
        let ca_pem = match ca_file {
            Some(path) => {
                let pem = crate::fsutil::read_bounded(path, crate::fsutil::MAX_INPUT_FILE)
                    .map_err(|e| input(format!("mail: cannot read ca_file {}: {e}", path.display())))?;
                Certificate::from_pem(&pem).map_err(|e| {
                    input(format!(
                        "mail: ca_file {} holds no usable PEM certificate: {e}",
                        path.display()
                    ))
                })?;
                Some(pem)
            }
            None => None,
        };
        Ok(Some(MailSettings {
            ca_pem,
            host,
            port,
            tls,
            username,
            password,
            from,
            contacts: plan.contacts.clone(),
        }))
    }

    fn transport(&self) -> Result<SmtpTransport, lettre::transport::smtp::Error> {
        let tls = match self.tls {
            SmtpTls::None => None,
            mode => {
                // The system's trusted roots, plus those of ca_file.
                let mut params = TlsParameters::builder(self.host.clone());
                if let Some(pem) = &self.ca_pem {
                    params = params.add_root_certificate(Certificate::from_pem(pem)?);
                }
                let params = params.build_rustls()?;
                Some(if mode == SmtpTls::Tls {
                    Tls::Wrapper(params)
                } else {
                    Tls::Required(params)
                })
            }
        };
        let mut builder = SmtpTransport::builder_dangerous(&self.host)
            .port(self.port)
            .timeout(Some(SMTP_TIMEOUT));
        if let Some(tls) = tls {
            builder = builder.tls(tls);
        }
        if let (Some(user), Some(pass)) = (&self.username, &self.password) {
            builder = builder.credentials(Credentials::new(user.clone(), pass.to_string()));
        }
        Ok(builder.build())
    }

    /// Sends one message to `to`. The error names the server and what went wrong, never the
    /// password.
    pub fn send(&self, to: &str, subject: &str, body: String) -> Result<(), SendError> {
        let mut unreachable = false;
        let result = (|| -> Result<(), String> {
            let to: Mailbox = to
                .parse()
                .map_err(|e| format!("contact `{to}` is not an e-mail address: {e}"))?;
            let mut id = [0u8; 16];
            crate::pki::random_bytes(&mut id).map_err(|e| e.to_string())?;
            let message_id = format!(
                "<{}@{}>",
                crate::pki::hex_upper(&id).to_ascii_lowercase(),
                self.from.email.domain()
            );
            let message = Message::builder()
                .from(self.from.clone())
                .message_id(Some(message_id))
                .user_agent(concat!("certroll/", env!("CARGO_PKG_VERSION")).to_string())
                .to(to)
                .subject(subject)
                .header(ContentType::TEXT_PLAIN)
                // Plain 7-bit text when it is (readable as is), else what lettre chooses.
                .body(
                    Body::new_with_encoding(body, ContentTransferEncoding::SevenBit)
                        .unwrap_or_else(Body::new),
                )
                .map_err(|e| format!("cannot build the message: {e}"))?;
            let transport = self.transport().map_err(|e| e.to_string())?;
            transport.send(&message).map(|_| ()).map_err(|e| {
                // No SMTP reply at all (refused, timed out, TLS failed): the server is out of
                // reach, for every contact.
                unreachable = !e.is_transient() && !e.is_permanent();
                e.to_string()
            })
        })();
        result.map_err(|e| {
            let e = match &self.password {
                Some(p) if !p.is_empty() => e.replace(p.as_str(), "<redacted>"),
                _ => e,
            };
            SendError {
                message: format!("SMTP {}: {e}", self.describe()),
                unreachable,
            }
        })
    }
}

/// Why a mail was not sent.
#[derive(Debug)]
pub struct SendError {
    /// What happened, naming the server (never the password).
    pub message: String,
    /// The server could not be reached or talked to at all, so the other contacts are not tried.
    pub unreachable: bool,
}

/// The subject of the summary mail: `certroll: 3 certificates need attention`.
pub fn subject(events: &[&EventReport]) -> String {
    let attention = events
        .iter()
        .filter(|e| e.kind == super::events::EMAIL_CONTACTS)
        .count();
    let renewed = events.len() - attention;
    let certs = |n: usize| {
        if n == 1 {
            "1 certificate".to_string()
        } else {
            format!("{n} certificates")
        }
    };
    match (attention, renewed) {
        (a, 0) => format!(
            "certroll: {} need{} attention",
            certs(a),
            if a == 1 { "s" } else { "" }
        ),
        (0, r) => format!("certroll: {} renewed", certs(r)),
        (a, r) => format!(
            "certroll: {} need{} attention, {r} renewed",
            certs(a),
            if a == 1 { "s" } else { "" }
        ),
    }
}

/// The plain-text body: every event with its certificate, version, what happened and expiry.
pub fn body(plan: &Plan, events: &[&EventReport]) -> String {
    use crate::clock::rfc3339;
    use std::fmt::Write as _;
    let mut out = String::new();
    // Short lines, so the body goes as plain 7-bit text that any mail reader shows as is.
    let _ = writeln!(out, "certroll has {} notice(s) for the plan", events.len());
    let _ = writeln!(out, "{}\n", plan.path.display());
    for (i, e) in events.iter().enumerate() {
        if i == LISTED {
            let _ = writeln!(out, "... and {} more.\n", events.len() - LISTED);
            break;
        }
        let _ = writeln!(out, "{}", e.target.as_deref().unwrap_or(&e.certificate));
        let _ = writeln!(out, "  vault certificate {}", e.certificate);
        let _ = writeln!(out, "  version {}", e.version);
        if e.kind == super::events::EMAIL_CONTACTS {
            let _ = writeln!(out, "  needs attention: email-contacts fired");
            let _ = writeln!(
                out,
                "  ({}) at {}",
                e.trigger.as_deref().unwrap_or(""),
                rfc3339(e.at)
            );
        } else {
            let _ = writeln!(out, "  renewed at {}", rfc3339(e.at));
            let _ = writeln!(
                out,
                "  previous version {}",
                e.previous_version.as_deref().unwrap_or("-")
            );
        }
        let _ = writeln!(out, "  expires {}\n", rfc3339(e.not_after));
    }
    let _ = writeln!(
        out,
        "-- \nSent by certroll once per notice. `certroll check` shows what is due now."
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::path::Path;

    fn plan(mail: &str) -> Plan {
        let text = format!("version = 1\n[contacts]\nemails = [\"pki@example.com\"]\n[mail]\n{mail}");
        crate::plan::parse(Path::new("/p/certroll.toml"), &text).unwrap()
    }

    fn resolve(mail: &str, env: &[(&str, &str)]) -> anyhow::Result<Option<MailSettings>> {
        let env: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        MailSettings::resolve(&plan(mail), &|k| env.get(k).cloned())
    }

    #[test]
    fn the_environment_overrides_the_plan_and_ports_follow_the_tls_mode() {
        let m = resolve(
            "smtp_host = \"smtp.example.com\"\nfrom = \"c@example.com\"\n",
            &[],
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (m.host.as_str(), m.port, m.tls),
            ("smtp.example.com", 587, SmtpTls::StartTls)
        );
        let m = resolve(
            "smtp_host = \"smtp.example.com\"\nfrom = \"c@example.com\"\n",
            &[
                ("CERTROLL_SMTP_TLS", "tls"),
                ("CERTROLL_SMTP_HOST", "relay.example.net"),
            ],
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (m.host.as_str(), m.port, m.tls),
            ("relay.example.net", 465, SmtpTls::Tls)
        );
        let m = resolve(
            "",
            &[
                ("CERTROLL_SMTP_HOST", "h.example"),
                ("CERTROLL_SMTP_FROM", "x@example.com"),
                ("CERTROLL_SMTP_PORT", "2525"),
            ],
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (m.port, m.from.email.to_string()),
            (2525, "x@example.com".to_string())
        );
        let no_mail = crate::plan::parse(Path::new("p.toml"), "version = 1\n").unwrap();
        assert!(
            MailSettings::resolve(&no_mail, &|_| Some("x".into()))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn the_password_comes_from_the_named_variable_and_is_never_shown() {
        let cfg =
            "smtp_host = \"h.example\"\nfrom = \"c@example.com\"\nusername = \"u\"\npassword_env = \"PW\"\n";
        let m = resolve(cfg, &[("PW", "s3cret-value")]).unwrap().unwrap();
        assert!(!format!("{m:?}").contains("s3cret-value"));
        let e = resolve(cfg, &[]).unwrap_err().to_string();
        assert!(e.contains("PW") && e.contains("not set"), "{e}");
        let e = resolve(
            "smtp_host = \"h.example\"\nfrom = \"c@example.com\"\nusername = \"u\"\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("no password"), "{e}");
        let e = resolve("from = \"c@example.com\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("CERTROLL_SMTP_HOST"), "{e}");
    }

    #[test]
    fn the_subject_counts_what_happened() {
        let event = |kind: &str| EventReport {
            id: 1,
            kind: kind.into(),
            certificate: "dev-a".into(),
            target: Some("device:a".into()),
            version: "v".into(),
            trigger: None,
            at: time::OffsetDateTime::UNIX_EPOCH,
            not_after: time::OffsetDateTime::UNIX_EPOCH,
            previous_version: None,
        };
        let (a, r) = (event("email-contacts"), event("renewed"));
        assert_eq!(subject(&[&a]), "certroll: 1 certificate needs attention");
        assert_eq!(subject(&[&a, &a, &a]), "certroll: 3 certificates need attention");
        assert_eq!(subject(&[&r, &r]), "certroll: 2 certificates renewed");
        assert_eq!(
            subject(&[&a, &r]),
            "certroll: 1 certificate needs attention, 1 renewed"
        );
    }
}
