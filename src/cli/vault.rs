//! `vault ...`: Key Vault's certificate operations on the plan's vault.

use super::Global;
use crate::error::input;
use crate::ops::vault::{self as ops, backup, lifecycle, pending, settings, transfer};
use crate::output::{Format, Printer};
use crate::pki::spec::{Curve, KeySpec};
use clap::{ArgGroup, Args, Subcommand, ValueEnum};
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use zeroize::Zeroizing;

const VAULT_HELP: &str = "\
NAME is a vault certificate name (ca-root, dev-sensor-01) or ca:NAME / device:ID / enrollment:NAME.

Examples:
  certroll vault list
  certroll vault show ca:root -o json
  certroll vault update dev-gw-01 --tag owner=ops --untag temp
  certroll vault delete web-1 && certroll vault list-deleted && certroll vault recover web-1
  PW=... certroll vault backup web-1 --out web-1.backup --password-env PW
  PW=... certroll vault import web-1 --file web-1.pfx --password-env PW
  certroll vault create web-2 --subject CN=web-2 --issuer Unknown && certroll vault csr web-2 --out web-2.csr

Exit codes:
  0  done
  1  failed part-way; running the same command again resumes
  2  bad input (a name, flag, file or password); nothing was changed";

/// Arguments of `vault`.
#[derive(Debug, Args)]
#[command(after_help = VAULT_HELP)]
pub struct VaultArgs {
    #[command(subcommand)]
    command: VaultCommand,
}

/// Key types `vault create` makes (Key Vault's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum KeyType {
    /// RSA (--key-size).
    #[value(name = "RSA")]
    Rsa,
    /// RSA in the (emulated) HSM: never exportable.
    #[value(name = "RSA-HSM")]
    RsaHsm,
    /// ECDSA (--curve).
    #[value(name = "EC")]
    Ec,
    /// ECDSA in the (emulated) HSM: never exportable.
    #[value(name = "EC-HSM")]
    EcHsm,
}

/// The vault operations.
#[derive(Debug, Subcommand)]
enum VaultCommand {
    /// Every certificate with its current version and tags, then the requests waiting for a merge.
    #[command(after_help = "Examples:\n  certroll vault list\n  certroll vault list -o json")]
    List,
    /// A certificate: versions (oldest first) with attributes and tags, policy, key operations,
    /// and a request waiting for a merge.
    #[command(
        after_help = "Examples:\n  certroll vault show ca:root\n  certroll vault show dev-sensor-01 -o json"
    )]
    Show {
        /// A vault name or ca:NAME / device:ID / enrollment:NAME.
        name: String,
    },
    /// Enable or disable a version; set or remove tags.
    #[command(
        group(ArgGroup::new("change").required(true).multiple(true).args(["enable", "disable", "tag", "untag"])),
        after_help = "\
Without --version, --enable/--disable act on the current version and the tags are the
certificate's (as Key Vault keeps them); with --version, both act on that version.

Examples:
  certroll vault update ca:factory --disable
  certroll vault update dev-gw-01 --tag owner=ops --tag env=prod --untag temp
  certroll vault update dev-gw-01 --version 3f2a... --tag rollout=canary"
    )]
    Update {
        /// A vault name or ca:NAME / device:ID / enrollment:NAME.
        name: String,
        /// The version (default: the current one).
        #[arg(long)]
        version: Option<String>,
        /// Enable the version.
        #[arg(long, conflicts_with = "disable")]
        enable: bool,
        /// Disable the version: it is then neither exported nor used to sign.
        #[arg(long)]
        disable: bool,
        /// Set a tag (repeatable; at most 15 tags).
        #[arg(long, value_name = "NAME=VALUE", value_parser = parse_tag)]
        tag: Vec<(String, String)>,
        /// Remove a tag (repeatable).
        #[arg(long, value_name = "NAME")]
        untag: Vec<String>,
    },
    /// Soft-delete a certificate with all its versions, policy and tags (recoverable until purged).
    #[command(after_help = "\
The certificate disappears from list, show, export and signing, and its name stays taken, until
`vault recover` brings it back exactly or `vault purge` removes it. Refused while a device holds
one of its versions or it signed another certificate's version, unless --force. A request waiting
for `vault merge` is cancelled (its key is discarded).

Examples:
  certroll vault delete web-1 --dry-run
  certroll vault delete web-1
  certroll vault delete dev-sensor-01 --force --recovery-days 7")]
    Delete {
        /// A vault name or ca:NAME / device:ID / enrollment:NAME.
        name: String,
        /// Days it stays recoverable (7 to 90).
        ///
        /// Default 90. On `kind = "azure"` Key Vault keeps deleted certificates for the vault's
        /// own retention period, so the option is refused there.
        #[arg(long, value_parser = parse_recovery_days)]
        recovery_days: Option<u32>,
        /// Delete even what devices hold or what signed other certificates.
        #[arg(long)]
        force: bool,
        /// Check and print what would be deleted; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Deleted certificates, with their deletion and scheduled purge dates.
    #[command(after_help = "Examples:\n  certroll vault list-deleted -o json")]
    ListDeleted,
    /// Bring a deleted certificate back, exactly as it was.
    #[command(after_help = "Examples:\n  certroll vault list-deleted\n  certroll vault recover web-1")]
    Recover {
        /// The deleted certificate's name.
        name: String,
    },
    /// Remove a deleted certificate for good (asks on a terminal, needs --yes otherwise).
    #[command(
        after_help = "Only a deleted certificate can be purged.\n\nExamples:\n  certroll vault purge web-1 --dry-run\n  certroll vault purge web-1 --yes"
    )]
    Purge {
        /// The deleted certificate's name.
        name: String,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
        /// Print what would be purged; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Write a certificate with all its versions, keys, policy and tags to one encrypted file (0600).
    #[command(after_help = "\
The file is encrypted with AES-256-GCM under a key derived from the password (PBKDF2-HMAC-SHA256,
600,000 iterations) and restores into any store. A non-exportable (HSM) key stays sealed under the
store key inside it: it restores only into a store with the same store key and is never readable
from the file.

Examples:
  PW=... certroll vault backup web-1 --out web-1.backup --password-env PW")]
    Backup {
        /// A vault name or ca:NAME / device:ID / enrollment:NAME.
        name: String,
        /// The backup file to write.
        #[arg(long)]
        out: PathBuf,
        /// The environment variable holding the backup password.
        #[arg(long, value_name = "VAR")]
        password_env: String,
    },
    /// Restore a backup: every version byte for byte, under its name, which must be free.
    #[command(after_help = "Examples:\n  PW=... certroll vault restore --in web-1.backup --password-env PW")]
    Restore {
        /// The backup file.
        #[arg(long = "in", value_name = "FILE")]
        file: PathBuf,
        /// The environment variable holding the backup password.
        #[arg(long, value_name = "VAR")]
        password_env: String,
    },
    /// The vault's contacts (e-mailed by EmailContacts lifetime actions).
    Contacts {
        #[command(subcommand)]
        command: ContactsCommand,
    },
    /// Issuer objects a policy can name besides Self and Unknown.
    Issuers {
        #[command(subcommand)]
        command: IssuersCommand,
    },
    /// Import a certificate with its private key from PEM or PKCS#12.
    #[command(after_help = "\
PEM: the certificate (and chain) with a PKCS#8, SEC1 or PKCS#1 key. Anything else is read as
PKCS#12 and needs --password-env. The key must belong to a certificate in the file; the other
certificates are kept as its chain (vault export writes them). A new name gets a policy read from the certificate (issuer Self when it is
self-signed, Unknown otherwise); an existing name gets a new version and keeps its policy.

Examples:
  certroll vault import web-1 --file web-1.pem
  PW=... certroll vault import web-1 --file web-1.pfx --password-env PW --hsm")]
    Import {
        /// The certificate name (letters, digits and `-`).
        name: String,
        /// The PEM or PKCS#12 file.
        #[arg(long)]
        file: PathBuf,
        /// The environment variable holding the PKCS#12 password.
        #[arg(long, value_name = "VAR")]
        password_env: Option<String>,
        /// Keep the key as an HSM key: never exportable, by any path.
        #[arg(long)]
        hsm: bool,
    },
    /// Create a certificate: self-signed at once (--issuer Self), or a key and CSR that wait for
    /// an outside CA (--issuer Unknown or a set issuer) and `vault merge`.
    #[command(after_help = "\
Examples:
  certroll vault create web-2 --subject 'CN=web-2, O=Example' --dns web-2.example.com --issuer Unknown
  certroll vault csr web-2 --out web-2.csr
  openssl x509 -req -in web-2.csr -CA ca.pem -CAkey ca.key -days 90 -copy_extensions copy -out web-2.pem
  certroll vault merge web-2 --file web-2.pem")]
    Create {
        /// The certificate name (letters, digits and `-`).
        name: String,
        /// The subject, e.g. "CN=web-2, O=Example".
        #[arg(long)]
        subject: String,
        /// Key type.
        #[arg(long, value_enum, default_value_t = KeyType::Rsa)]
        key_type: KeyType,
        /// RSA modulus size: 2048 (default), 3072 or 4096. Only for RSA key types.
        #[arg(long, value_parser = parse_rsa_size)]
        key_size: Option<u32>,
        /// EC curve: P-256 (default), P-384 or P-521. Only for EC key types.
        #[arg(long, value_parser = parse_curve)]
        curve: Option<Curve>,
        /// A DNS name or IP address for the subjectAltName (repeatable).
        #[arg(long = "dns", value_name = "NAME")]
        dns_names: Vec<String>,
        /// Key usage (repeatable; default digitalSignature, with keyEncipherment for RSA keys).
        #[arg(long, value_name = "USAGE")]
        key_usage: Vec<String>,
        /// Extended key usage, a name or dotted OID (repeatable).
        #[arg(long, value_name = "EKU")]
        eku: Vec<String>,
        /// Validity in days (1 to 36500).
        #[arg(long, default_value_t = 365, value_parser = parse_validity_days)]
        validity_days: u32,
        /// Self, Unknown, or a set issuer's name.
        #[arg(long, default_value = "Self")]
        issuer: String,
        /// Keep the key in the vault for good (also implied by an -HSM key type).
        #[arg(long)]
        not_exportable: bool,
    },
    /// Write one version of any vault certificate as PEM (optionally with its key) or PFX.
    #[command(after_help = "\
The same rules as `export`: a disabled version, a version outside its validity and the key of a
non-exportable (HSM) version are refused. PEM holds the certificate and its chain up to, not
including, the root; PFX holds the key and the full chain.

Examples:
  certroll vault export web-1 --out web-1.pem
  certroll vault export web-1 --version 3f2a... --with-key --out web-1-old.pem
  PW=... certroll vault export web-1 --format pfx --password-env PW --out web-1.pfx")]
    Export {
        /// A vault name or ca:NAME / device:ID / enrollment:NAME.
        name: String,
        /// The version (default: the current one).
        #[arg(long)]
        version: Option<String>,
        /// pem or pfx (default: the policy's content type, PEM unless it is application/x-pkcs12;
        /// --with-key, or a key that may not leave the vault, means PEM).
        #[arg(long, value_enum)]
        format: Option<crate::ops::ExportFormat>,
        /// The file to write (created 0600 when it holds a key).
        #[arg(long)]
        out: PathBuf,
        /// Add the private key to a PEM export.
        #[arg(long)]
        with_key: bool,
        /// The environment variable holding the PFX password.
        #[arg(long, value_name = "VAR")]
        password_env: Option<String>,
    },
    /// Write the CSR of a request waiting for an outside CA (PEM).
    #[command(
        after_help = "Examples:\n  certroll vault csr web-2 --out web-2.csr\n  openssl req -in web-2.csr -verify -noout -text"
    )]
    Csr {
        /// The certificate name.
        name: String,
        /// The file to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Make the signed certificate of a waiting request a version (its public key must match).
    #[command(after_help = "Examples:\n  certroll vault merge web-2 --file web-2-and-chain.pem -o json")]
    Merge {
        /// The certificate name.
        name: String,
        /// The signed certificate: PEM or DER, or a PKCS#7 bundle (.p7b, PEM or DER) as CAs hand
        /// back; the bundle's other certificates are kept as its chain.
        #[arg(long)]
        file: PathBuf,
    },
}

/// `vault contacts`.
#[derive(Debug, Subcommand)]
#[command(after_help = "\
Once set here, these are the vault's contacts. While none are set (never, or after `delete`), the
plan's [contacts] emails are.

Examples:
  certroll vault contacts set pki-oncall@example.com fleet@example.com
  certroll vault contacts get -o json")]
enum ContactsCommand {
    /// The contacts, and whether they come from the store or the plan.
    Get,
    /// Replace the contacts.
    Set {
        /// E-mail addresses.
        #[arg(required = true, value_name = "EMAIL")]
        emails: Vec<String>,
    },
    /// Remove the stored contacts (the plan's apply again).
    Delete,
}

/// `vault issuers`.
#[derive(Debug, Subcommand)]
#[command(after_help = "\
Examples:
  certroll vault issuers set digicert-ov --provider DigiCert --account-id acct-42
  certroll vault create web-3 --subject CN=web-3 --issuer digicert-ov")]
enum IssuersCommand {
    /// Create or replace an issuer.
    Set {
        /// The issuer's name (letters, digits and `-`; not Self or Unknown).
        name: String,
        /// The provider (DigiCert, GlobalSign, OneCertV2-PublicCA, ...).
        #[arg(long)]
        provider: String,
        /// The account at the provider.
        #[arg(long)]
        account_id: Option<String>,
    },
    /// One issuer.
    Get {
        /// The issuer's name.
        name: String,
    },
    /// Every issuer.
    List,
    /// Delete an issuer (refused while a policy names it).
    Delete {
        /// The issuer's name.
        name: String,
    },
}

fn parse_tag(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("`{text}` is not NAME=VALUE")),
    }
}

fn parse_curve(text: &str) -> Result<Curve, String> {
    Curve::parse(text).ok_or_else(|| format!("`{text}` is not one of P-256, P-384, P-521"))
}

fn password(var: &str) -> anyhow::Result<Zeroizing<String>> {
    std::env::var(var)
        .map(Zeroizing::new)
        .map_err(|_| input(format!("--password-env {var}: the variable is not set")))
}

/// `, since TIME` of a pending request, or nothing when the vault gave no time (never a date
/// made up in its place).
fn since(created: Option<time::OffsetDateTime>) -> String {
    created
        .map(|t| format!(", since {}", crate::clock::rfc3339(t)))
        .unwrap_or_default()
}

fn enabled(e: bool) -> &'static str {
    if e { "enabled" } else { "disabled" }
}

fn tags_text(tags: &crate::backend::types::Tags) -> String {
    tags.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn deleted_line(p: &mut Printer<crate::output::Stdout>, d: &lifecycle::DeletedView) -> std::io::Result<()> {
    p.line(format!(
        "{:<40} deleted {}  purge on {}{}  ({} version(s))",
        d.name,
        crate::clock::rfc3339(d.deleted_date),
        crate::clock::rfc3339(d.scheduled_purge_date),
        if d.purge_due { " (due)" } else { "" },
        d.versions.len()
    ))
}

pub fn exec(g: &Global, args: VaultArgs) -> anyhow::Result<u8> {
    let plan = g.load_plan()?;
    let json = g.output == Format::Json;
    let settings = g.backend();
    let now = g.clock().now();
    let mut p = g.printer();
    match args.command {
        VaultCommand::List => {
            let mut entries = Vec::new();
            ops::list(&plan, &settings, |e| {
                if json {
                    entries.push(e);
                } else {
                    let tags = if e.tags.is_empty() {
                        String::new()
                    } else {
                        format!("  [{}]", tags_text(&e.tags))
                    };
                    p.line(format!(
                        "{:<40} {} {:<8} expires {}{tags}",
                        e.name,
                        e.current,
                        enabled(e.enabled),
                        crate::clock::rfc3339(e.exp)
                    ))?;
                }
                Ok(())
            })?;
            let pending = ops::pending_list(&plan, &settings)?;
            if json {
                p.json(&serde_json::json!({ "certificates": entries, "pending": pending }))?;
            } else {
                for r in &pending {
                    p.line(format!(
                        "{:<40} pending: waiting for `vault merge` (issuer {}{})",
                        r.name,
                        r.issuer,
                        since(r.created)
                    ))?;
                }
            }
        }
        VaultCommand::Show { name } => {
            let view = ops::show(&plan, &name, &settings)?;
            if json {
                p.json(&view)?;
            } else {
                p.line(format!(
                    "{} (key operations: {})",
                    view.name,
                    view.key_operations.join(", ")
                ))?;
                if !view.tags.is_empty() {
                    p.line(format!("tags: {}", tags_text(&view.tags)))?;
                }
                for v in &view.versions {
                    p.line(format!(
                        "  {} {:<8} {} .. {} {} {}{}",
                        v.version,
                        enabled(v.enabled),
                        crate::clock::rfc3339(v.nbf),
                        crate::clock::rfc3339(v.exp),
                        v.kty,
                        v.cert.thumbprint,
                        if v.tags.is_empty() {
                            String::new()
                        } else {
                            format!("  [{}]", tags_text(&v.tags))
                        }
                    ))?;
                }
                if let Some(pending) = &view.pending {
                    p.line(format!(
                        "pending: request {} for issuer {}{} (`certroll vault csr {}`, then `vault merge`)",
                        pending.request_id,
                        pending.issuer,
                        since(pending.created),
                        view.name
                    ))?;
                }
                if let Some(policy) = &view.policy {
                    p.line(format!("policy: {policy}"))?;
                }
            }
        }
        VaultCommand::Update {
            name,
            version,
            enable,
            disable,
            tag,
            untag,
        } => {
            g.refuse_time_travel("vault update")?;
            let opts = ops::UpdateOptions {
                version,
                enabled: match (enable, disable) {
                    (true, _) => Some(true),
                    (_, true) => Some(false),
                    _ => None,
                },
                tag,
                untag,
            };
            let r = ops::update(&plan, &name, &opts, &settings, now)?;
            if json {
                p.json(&r)?;
            } else {
                p.line(format!(
                    "{} version {} is {}",
                    r.name,
                    r.version,
                    enabled(r.enabled)
                ))?;
                p.line(format!(
                    "{} tags: {}",
                    r.tags_on,
                    if r.tags.is_empty() {
                        "(none)".into()
                    } else {
                        tags_text(&r.tags)
                    }
                ))?;
            }
        }
        VaultCommand::Delete {
            name,
            recovery_days,
            force,
            dry_run,
        } => {
            if !dry_run {
                g.refuse_time_travel("vault delete")?;
            }
            let r = lifecycle::delete(
                &plan,
                &name,
                &lifecycle::DeleteOptions {
                    recovery_days,
                    force,
                    dry_run,
                },
                &settings,
                now,
            )?;
            if json {
                p.json(&r)?;
            } else {
                let (cancelled, deleted) = if r.dry_run {
                    ("Would cancel", "Would delete")
                } else {
                    ("Cancelled", "Deleted")
                };
                if r.cancelled_request {
                    p.line(format!("{cancelled} the request waiting for a merge."))?;
                }
                if let Some(d) = &r.deleted {
                    p.line(format!(
                        "{deleted} {} ({} version(s)); recoverable until {} (`certroll vault recover {}`)",
                        d.name,
                        d.versions.len(),
                        crate::clock::rfc3339(d.scheduled_purge_date),
                        d.name
                    ))?;
                }
                if r.dry_run {
                    p.line("Dry run: nothing was changed.")?;
                }
            }
        }
        VaultCommand::ListDeleted => {
            let list = lifecycle::list_deleted(&plan, &settings, now)?;
            if json {
                p.json(&serde_json::json!({ "deleted": list }))?;
            } else if list.is_empty() {
                p.line("No deleted certificates.")?;
            } else {
                for d in &list {
                    deleted_line(&mut p, d)?;
                }
            }
        }
        VaultCommand::Recover { name } => {
            g.refuse_time_travel("vault recover")?;
            let d = lifecycle::recover(&plan, &name, &settings, now)?;
            if json {
                p.json(&serde_json::json!({ "recovered": d }))?;
            } else {
                p.line(format!("Recovered {} ({} version(s))", d.name, d.versions.len()))?;
            }
        }
        VaultCommand::Purge { name, yes, dry_run } => {
            // Name what would go first: a name that is not deleted fails before any question.
            let d = lifecycle::deleted_one(&plan, &name, &settings, now)?;
            if dry_run {
                if json {
                    p.json(&serde_json::json!({ "purged": d, "dry_run": true }))?;
                } else {
                    p.line(format!(
                        "Would purge {} ({} version(s)) for good.\nDry run: nothing was changed.",
                        d.name,
                        d.versions.len()
                    ))?;
                }
                return Ok(0);
            }
            if !yes {
                if !std::io::stdin().is_terminal() {
                    return Err(input(
                        "purge is destructive: pass --yes (or run it on a terminal to confirm)",
                    ));
                }
                let mut err = std::io::stderr();
                write!(
                    err,
                    "Purge {} and its {} version(s) for good? [y/N] ",
                    d.name,
                    d.versions.len()
                )?;
                err.flush()?;
                let mut answer = String::new();
                std::io::stdin().lock().read_line(&mut answer)?;
                if !matches!(answer.trim(), "y" | "Y" | "yes") {
                    return Err(input("not confirmed; nothing was changed"));
                }
            }
            g.refuse_time_travel("vault purge")?;
            let d = lifecycle::purge(&plan, &name, &settings, now)?;
            if json {
                p.json(&serde_json::json!({ "purged": d, "dry_run": false }))?;
            } else {
                p.line(format!("Purged {} ({} version(s))", d.name, d.versions.len()))?;
            }
        }
        VaultCommand::Backup {
            name,
            out,
            password_env,
        } => {
            g.refuse_time_travel("vault backup")?;
            let pw = password(&password_env)?;
            let mut p = g.out_printer(&out)?;
            crate::ops::outfile::refuse_private_to_terminal(&out, true)?;
            let r = backup::backup(&plan, &name, &out, &pw, &settings)?;
            if json {
                p.json(&r)?;
            } else {
                p.line(format!(
                    "Wrote {} ({} version(s){}) to {}",
                    r.name,
                    r.versions.len(),
                    if r.sealed_keys.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "; {} non-exportable key(s) restore only with the same store key",
                            r.sealed_keys.len()
                        )
                    },
                    r.file.display()
                ))?;
            }
        }
        VaultCommand::Restore { file, password_env } => {
            g.refuse_time_travel("vault restore")?;
            let pw = password(&password_env)?;
            let r = backup::restore(&plan, &file, &pw, &settings)?;
            if json {
                p.json(&r)?;
            } else {
                p.line(format!(
                    "Restored {} ({} version(s)) from {}",
                    r.name,
                    r.versions.len(),
                    r.file.display()
                ))?;
            }
        }
        VaultCommand::Contacts { command } => {
            if !matches!(command, ContactsCommand::Get) {
                g.refuse_time_travel("vault contacts")?;
            }
            let view = match command {
                ContactsCommand::Get => settings::contacts_get(&plan, &settings)?,
                ContactsCommand::Set { emails } => settings::contacts_set(&plan, &emails, &settings)?,
                ContactsCommand::Delete => settings::contacts_delete(&plan, &settings)?,
            };
            if json {
                p.json(&view)?;
            } else {
                if let Some(removed) = &view.removed {
                    p.line(format!("Removed {} stored contact(s).", removed.len()))?;
                }
                p.line(contacts_heading(view.source))?;
                for c in &view.contacts {
                    p.line(format!("  {c}"))?;
                }
            }
        }
        VaultCommand::Issuers { command } => {
            let (issuers, one) = match command {
                IssuersCommand::Set {
                    name,
                    provider,
                    account_id,
                } => {
                    g.refuse_time_travel("vault issuers set")?;
                    (
                        vec![settings::issuer_set(
                            &plan,
                            &name,
                            &provider,
                            account_id.as_deref(),
                            &settings,
                            now,
                        )?],
                        true,
                    )
                }
                IssuersCommand::Get { name } => (vec![settings::issuer_get(&plan, &name, &settings)?], true),
                IssuersCommand::List => (settings::issuer_list(&plan, &settings)?, false),
                IssuersCommand::Delete { name } => {
                    g.refuse_time_travel("vault issuers delete")?;
                    let gone = settings::issuer_delete(&plan, &name, &settings)?;
                    if json {
                        p.json(&serde_json::json!({ "deleted": gone }))?;
                    } else {
                        p.line(format!("Deleted issuer {}", gone.name))?;
                    }
                    return Ok(0);
                }
            };
            if json {
                if one {
                    p.json(&issuers[0])?;
                } else {
                    p.json(&serde_json::json!({ "issuers": issuers }))?;
                }
            } else {
                for i in &issuers {
                    p.line(format!(
                        "{:<30} provider {}{} {}",
                        i.name,
                        i.provider,
                        i.account_id
                            .as_ref()
                            .map(|a| format!(", account {a}"))
                            .unwrap_or_default(),
                        enabled(i.enabled)
                    ))?;
                }
            }
        }
        VaultCommand::Import {
            name,
            file,
            password_env,
            hsm,
        } => {
            g.refuse_time_travel("vault import")?;
            let pw = password_env.as_deref().map(password).transpose()?;
            let r = transfer::import(
                &plan,
                &name,
                &transfer::ImportOptions {
                    file,
                    password: pw,
                    hsm,
                },
                &settings,
                now,
            )?;
            if json {
                p.json(&r)?;
            } else {
                p.line(format!(
                    "Imported {} as {} version {} ({}, {}exportable)",
                    r.cert.subject,
                    r.name,
                    r.version,
                    r.kty,
                    if r.exportable { "" } else { "not " }
                ))?;
            }
        }
        VaultCommand::Create {
            name,
            subject,
            key_type,
            key_size,
            curve,
            dns_names,
            key_usage,
            eku,
            validity_days,
            issuer,
            not_exportable,
        } => {
            g.refuse_time_travel("vault create")?;
            let hsm = matches!(key_type, KeyType::RsaHsm | KeyType::EcHsm);
            let key = match (key_type, key_size, curve) {
                (KeyType::Rsa | KeyType::RsaHsm, bits, None) => KeySpec::Rsa {
                    bits: bits.unwrap_or(2048),
                    hsm,
                },
                (KeyType::Ec | KeyType::EcHsm, None, curve) => KeySpec::Ec {
                    curve: curve.unwrap_or(Curve::P256),
                    hsm,
                },
                (_, Some(bits), Some(curve)) => {
                    return Err(input(format!(
                        "--key-size {bits} and --curve {curve}: give the one that fits --key-type"
                    )));
                }
                (_, Some(bits), None) => {
                    return Err(input(format!(
                        "--key-size {bits} is for RSA key types; an EC key takes --curve"
                    )));
                }
                (_, None, Some(curve)) => {
                    return Err(input(format!(
                        "--curve {curve} is for EC key types; an RSA key takes --key-size"
                    )));
                }
            };
            let opts = pending::CreateOptions {
                subject,
                key,
                exportable: !not_exportable && !hsm,
                dns_names,
                key_usage,
                ekus: eku,
                validity_days,
                issuer,
                reuse_key: false,
                // What users type is parsed, always.
                keep_subject: None,
            };
            let r = pending::create(&plan, &name, &opts, &settings, now)?;
            if json {
                p.json(&r)?;
            } else if let Some(v) = &r.version {
                p.line(format!("Created {} version {} (issuer {})", r.name, v, r.issuer))?;
            } else {
                p.line(format!(
                    "Created a request for {} (issuer {}): `certroll vault csr {} --out FILE`, have it signed, \
                     then `certroll vault merge {} --file SIGNED.pem`",
                    r.name, r.issuer, r.name, r.name
                ))?;
            }
        }
        VaultCommand::Export {
            name,
            version,
            format,
            out,
            with_key,
            password_env,
        } => {
            g.refuse_time_travel("vault export")?;
            let pw = password_env.as_deref().map(password).transpose()?;
            if format == Some(crate::ops::ExportFormat::Pfx) && pw.is_none() {
                return Err(input("a pfx export needs a password: --password-env VAR"));
            }
            let mut p = g.out_printer(&out)?;
            let r = transfer::export(
                &plan,
                &name,
                &transfer::VaultExportOptions {
                    version,
                    format,
                    out,
                    with_key,
                    password: pw,
                },
                &settings,
                now,
            )?;
            if json {
                p.json(&r)?;
            } else {
                p.line(format!(
                    "Wrote {} version {} ({}, {} certificate(s){}) to {}",
                    r.certificate,
                    r.version,
                    r.format,
                    r.certificates,
                    if r.includes_key { ", with private key" } else { "" },
                    r.out.display()
                ))?;
            }
        }
        VaultCommand::Csr { name, out } => {
            g.refuse_time_travel("vault csr")?;
            let mut p = g.out_printer(&out)?;
            let r = pending::csr(&plan, &name, &out, &settings)?;
            if json {
                p.json(&r)?;
            } else {
                p.line(format!("Wrote the CSR of {} to {}", r.name, r.out.display()))?;
            }
        }
        VaultCommand::Merge { name, file } => {
            g.refuse_time_travel("vault merge")?;
            let r = pending::merge(&plan, &name, &file, &settings, now)?;
            if json {
                p.json(&r)?;
            } else {
                p.line(format!(
                    "Merged {} as {} version {}",
                    r.cert.subject, r.name, r.version
                ))?;
            }
        }
    }
    Ok(0)
}

/// `--recovery-days`: Key Vault keeps deleted certificates 7 to 90 days.
fn parse_recovery_days(text: &str) -> Result<u32, String> {
    super::whole_number(text, 7, 90)
}

/// `--validity-days`: 1 to 36500 (a century), as a plan's `validity_days`.
fn parse_validity_days(text: &str) -> Result<u32, String> {
    super::whole_number(text, 1, 36_500)
}

/// `--key-size`: the RSA sizes Key Vault makes.
fn parse_rsa_size(text: &str) -> Result<u32, String> {
    let sizes = crate::pki::spec::RSA_SIZES;
    let said = || {
        let list: Vec<String> = sizes.iter().map(u32::to_string).collect();
        format!("not a supported RSA key size ({})", list.join(", "))
    };
    match text.trim().parse::<u32>() {
        Ok(n) if sizes.contains(&n) => Ok(n),
        _ => Err(said()),
    }
}

/// The first line of `vault contacts` in human output: where the contacts listed below live
/// (`source` as [`settings::ContactsView::source`] gives it), or that there are none.
fn contacts_heading(source: &str) -> String {
    match source {
        "keyvault" => "contacts (Key Vault):".into(),
        "store" => "contacts (the local store):".into(),
        "plan" => "contacts (the plan's [contacts] emails; none set in the vault):".into(),
        _ => "no contacts set (neither `certroll vault contacts set EMAIL...` nor the plan's [contacts] emails)".into(),
    }
}
