//! `revoke`.

use super::{Global, parse_target};
use crate::error::input;
use crate::ops::Target;
use crate::ops::revoke::{HubAction, Reason, RevokeOptions};
use clap::Args;
use std::io::{BufRead, IsTerminal, Write};

/// Arguments of `revoke`.
#[derive(Debug, Args)]
#[command(after_help = "\
A device of an individual enrollment: the enrollment is disabled. A device of a group: a disabled
individual enrollment holding its certificate is added, which rejects that certificate even
where the group would accept it. group:NAME disables the group. The device's vault version is
disabled and its serial goes onto the issuing CA's CRL (`certroll export ca:NAME --crl`).
ca:NAME deletes a CA: it leaves the enrollment service's CA certificates and every group's
slots, and every version is disabled and put on its issuer's CRL.

--dry-run prints the steps and the devices each target cuts off. Destructive: asks on a
terminal, needs --yes otherwise. A run killed part-way is finished by running it again.

Examples:
  certroll revoke device:sensor-0042 --reason key-compromise --dry-run
  certroll revoke device:sensor-0042 --reason key-compromise --yes
  certroll revoke ca:factory --reason ca-compromise --dry-run")]
pub struct RevokeArgs {
    /// What to revoke: device:ID, enrollment:NAME, group:NAME, ca:NAME.
    #[arg(value_parser = parse_target, required = true)]
    targets: Vec<Target>,
    /// The RFC 5280 reason.
    #[arg(long, value_enum)]
    reason: Reason,
    /// What happens to the hub identity of a revoked device.
    #[arg(long, value_enum, default_value_t = HubAction::Disable)]
    hub_identity: HubAction,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    yes: bool,
    /// Print the steps; change nothing.
    #[arg(long)]
    dry_run: bool,
}

pub fn exec(g: &Global, args: RevokeArgs) -> anyhow::Result<u8> {
    let plan = g.load_plan()?;
    let mut opts = RevokeOptions {
        targets: args.targets,
        reason: args.reason,
        hub: args.hub_identity,
        dry_run: true,
        backend: g.backend(),
        previewed: Vec::new(),
    };
    let now = g.clock().now();
    // Always preview first: the confirmation shows exactly what will happen.
    let preview = crate::ops::revoke::revoke(&plan, &opts, now)?;
    if !args.dry_run {
        let steps: usize = preview.targets.iter().map(|t| t.steps.len()).sum();
        if steps > 0 && !args.yes {
            if !std::io::stdin().is_terminal() {
                return Err(input(
                    "revoke is destructive: pass --yes (or run it on a terminal to confirm)",
                ));
            }
            let mut err = std::io::stderr();
            for t in &preview.targets {
                for s in &t.steps {
                    writeln!(err, "  {}: {s}", t.target)?;
                }
            }
            write!(err, "Revoke ({})? [y/N] ", args.reason.name())?;
            err.flush()?;
            let mut answer = String::new();
            std::io::stdin().lock().read_line(&mut answer)?;
            if !matches!(answer.trim(), "y" | "Y" | "yes") {
                return Err(input("not confirmed; nothing was changed"));
            }
        }
        opts.dry_run = false;
        // With no confirmation waiting in between, what the preview found revoked already is
        // not read again (on azure each target costs DPS and hub requests).
        if steps == 0 || args.yes {
            opts.previewed = preview.targets.clone();
        }
    }
    let report = if args.dry_run {
        preview
    } else {
        crate::ops::revoke::revoke(&plan, &opts, now)?
    };
    let mut p = g.printer();
    if g.output == crate::output::Format::Json {
        p.json(&report)?;
        return Ok(0);
    }
    if let Some(line) = super::resume_line(report.run, report.resumed, report.dry_run) {
        p.line(line)?;
    }
    for t in &report.targets {
        if t.steps.is_empty() {
            p.line(format!("{}: already revoked; nothing to do", t.target))?;
            continue;
        }
        p.line(format!(
            "{}: {} (cuts off {})",
            t.target,
            if report.dry_run { "would revoke" } else { "revoked" },
            t.devices_cut_off
        ))?;
        for (i, s) in t.steps.iter().enumerate() {
            p.line(format!("  {}. {s}", i + 1))?;
        }
    }
    if report.dry_run {
        p.line("Dry run: nothing was changed.")?;
    }
    Ok(0)
}
