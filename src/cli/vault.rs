//! `vault list|show|update`.

use super::Global;
use clap::{Args, Subcommand};

/// Arguments of `vault`.
#[derive(Debug, Args)]
pub struct VaultArgs {
    #[command(subcommand)]
    command: VaultCommand,
}

/// The vault operations.
#[derive(Debug, Subcommand)]
enum VaultCommand {
    /// Every certificate with its current version.
    List,
    /// A certificate: versions (oldest first) with attributes, policy, key operations.
    Show {
        /// A vault name (ca-root, dev-sensor-01) or ca:NAME / device:ID / enrollment:NAME.
        name: String,
    },
    /// Enable or disable a version (default: the current one).
    Update {
        /// A vault name or ca:NAME / device:ID / enrollment:NAME.
        name: String,
        /// The version (default: the current one).
        #[arg(long)]
        version: Option<String>,
        /// Enable the version.
        #[arg(long, conflicts_with = "disable", required_unless_present = "disable")]
        enable: bool,
        /// Disable the version: it is then neither exported nor used to sign.
        #[arg(long)]
        disable: bool,
    },
}

pub fn exec(g: &Global, args: VaultArgs) -> anyhow::Result<u8> {
    let plan = g.load_plan()?;
    let json = g.output == crate::output::Format::Json;
    let mut p = g.printer();
    match args.command {
        VaultCommand::List => {
            let mut entries = Vec::new();
            crate::ops::vault::list(&plan, &g.backend(), |e| {
                if json {
                    entries.push(e);
                } else {
                    p.line(format!(
                        "{:<40} {} {:<8} expires {}",
                        e.name,
                        e.current,
                        if e.enabled { "enabled" } else { "disabled" },
                        crate::clock::rfc3339(e.exp)
                    ))?;
                }
                Ok(())
            })?;
            if json {
                p.json(&serde_json::json!({ "certificates": entries }))?;
            }
        }
        VaultCommand::Show { name } => {
            let view = crate::ops::vault::show(&plan, &name, &g.backend())?;
            if json {
                p.json(&view)?;
            } else {
                p.line(format!(
                    "{} (key operations: {})",
                    view.name,
                    view.key_operations.join(", ")
                ))?;
                for v in &view.versions {
                    p.line(format!(
                        "  {} {:<8} {} .. {} {} {}",
                        v.version,
                        if v.enabled { "enabled" } else { "disabled" },
                        crate::clock::rfc3339(v.nbf),
                        crate::clock::rfc3339(v.exp),
                        v.kty,
                        v.cert.thumbprint
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
            disable: _,
        } => {
            let v = crate::ops::vault::set_enabled(
                &plan,
                &name,
                version.as_deref(),
                enable,
                &g.backend(),
                g.clock().now(),
            )?;
            if json {
                p.json(&serde_json::json!({ "name": name, "version": v, "enabled": enable }))?;
            } else {
                p.line(format!(
                    "{name} version {v} is {}",
                    if enable { "enabled" } else { "disabled" }
                ))?;
            }
        }
    }
    Ok(0)
}
