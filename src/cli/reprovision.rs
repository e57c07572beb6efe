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

Exit code 1 when any device was rejected.

Examples:
  certroll reprovision device:gateway-01
  certroll reprovision group:sensors -o json")]
pub struct ReprovisionArgs {
    /// Which devices: device:ID, enrollment:NAME, group:NAME (default: every device).
    #[arg(value_parser = parse_target)]
    targets: Vec<Target>,
    /// List the devices that would register; change nothing.
    #[arg(long)]
    dry_run: bool,
}

/// Rejections listed in human output.
const SHOWN: usize = 20;

pub fn exec(g: &Global, args: ReprovisionArgs) -> anyhow::Result<u8> {
    let plan = g.load_plan()?;
    let opts = ReprovisionOptions {
        targets: args.targets,
        dry_run: args.dry_run,
        backend: g.backend(),
    };
    let report = crate::ops::reprovision::reprovision(&plan, &opts, g.clock().now())?;
    let mut p = g.printer();
    if g.output == crate::output::Format::Json {
        p.json(&report)?;
    } else if report.dry_run {
        p.line(format!(
            "Would register {} device(s) again. Dry run: nothing was changed.",
            report.devices.len()
        ))?;
    } else {
        p.line(format!(
            "{} assigned, {} rejected",
            report.assigned, report.rejected
        ))?;
        for d in report
            .devices
            .iter()
            .filter(|d| d.status != "assigned")
            .take(SHOWN)
        {
            p.line(format!(
                "  {}: {}",
                d.device,
                d.error.as_deref().unwrap_or("rejected")
            ))?;
        }
    }
    Ok(if report.rejected > 0 && !report.dry_run {
        1
    } else {
        0
    })
}
