//! `reprovision`.

use super::{Global, parse_target};
use crate::ops::Target;
use crate::ops::reprovision::ReprovisionOptions;
use clap::Args;

/// Arguments of `reprovision`.
#[derive(Debug, Args)]
#[command(after_help = "\
Each device registers again with the certificate installed on it. Disabled enrollments holding
that certificate reject it first; then the device's individual enrollment (either slot); then
the groups whose signing certificate it chains to (path validation at --now). The enrollment's
reprovision policy decides the hub identity: migrate and reset set the hub's thumbprints to the
presented certificate only (reset also resets the twin); never leaves the hub alone.

A device the service already has assigned with the certificate it holds is left alone
(`unchanged`), so a rerun changes nothing; --force registers it again all the same.
--dry-run asks the service what it would decide, and lists the devices it would refuse.
A run killed part-way is finished by running the same command again.

Exit code 1 when any device was rejected (with --dry-run: would be).

Examples:
  certroll reprovision device:gateway-01
  certroll reprovision group:sensors -o json")]
pub struct ReprovisionArgs {
    /// Which devices: device:ID, enrollment:NAME, group:NAME (default: every device).
    #[arg(value_parser = parse_target)]
    targets: Vec<Target>,
    /// Say which devices would be assigned and which refused; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Register devices again even when already assigned with the certificate they hold.
    #[arg(long)]
    force: bool,
}

/// Rejections listed in human output.
const SHOWN: usize = 20;

pub fn exec(g: &Global, args: ReprovisionArgs) -> anyhow::Result<u8> {
    let plan = g.load_plan()?;
    let opts = ReprovisionOptions {
        targets: args.targets,
        dry_run: args.dry_run,
        force: args.force,
        backend: g.backend(),
    };
    let remote = g.remote_progress(None);
    let report = crate::ops::reprovision::reprovision(&plan, &opts, g.clock().now());
    drop(remote);
    let report = report?;
    let mut p = g.printer();
    if g.output == crate::output::Format::Json {
        p.json(&report)?;
    } else {
        if let Some(line) = super::resume_line(report.run, report.resumed, report.dry_run) {
            p.line(line)?;
        }
        p.line(format!(
            "{} {}, {} unchanged, {} {}",
            report.assigned,
            if report.dry_run {
                "would be assigned"
            } else {
                "assigned"
            },
            report.unchanged,
            report.rejected,
            if report.dry_run {
                "would be rejected"
            } else {
                "rejected"
            },
        ))?;
        for d in report
            .devices
            .iter()
            .filter(|d| !matches!(d.status.as_str(), "assigned" | "would-assign" | "unchanged"))
            .take(SHOWN)
        {
            p.line(format!(
                "  {}: {}",
                d.device,
                d.error.as_deref().unwrap_or("rejected")
            ))?;
        }
    }
    if report.dry_run {
        p.line("Dry run: nothing was changed.")?;
    }
    // A dry run that finds devices the service would refuse exits as the run would (README).
    Ok(if report.rejected > 0 { 1 } else { 0 })
}
