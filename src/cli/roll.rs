//! `roll-secondary` and `roll-primary`.

use super::{Global, parse_target};
use crate::ops::Target;
use crate::ops::roll::{RollOptions, SlotName};
use clap::Args;

/// Arguments of `roll-secondary` / `roll-primary`.
#[derive(Debug, Args)]
#[command(after_help = "\
The other slot keeps working (zero downtime); a certificate in it that has expired is removed.
Running the same roll again does nothing.

With --due, only devices whose auto-renew lifetime action has fired are rolled, and the new
certificate goes into the slot that holds the older certificate, whichever verb is used:
a cron job runs `certroll roll-secondary --due` and never needs to know which slot is free.

Examples:
  certroll roll-secondary device:gateway-01 --dry-run
  certroll roll-secondary enrollment:gateway-01
  certroll roll-secondary group:sensors
  certroll roll-secondary --due device:sensor-0001 device:sensor-0002 -o json")]
pub struct RollArgs {
    /// What to roll: device:ID, enrollment:NAME, or group:NAME (its signing intermediate, then
    /// every device of the group under the new CA).
    #[arg(value_parser = parse_target, required = true)]
    targets: Vec<Target>,
    /// Only what an auto-renew lifetime action says is due, into the slot with the older cert.
    #[arg(long)]
    due: bool,
    /// Print the steps; change nothing.
    #[arg(long)]
    dry_run: bool,
}

pub fn exec(g: &Global, args: RollArgs, slot: SlotName) -> anyhow::Result<u8> {
    let plan = g.load_plan()?;
    let opts = RollOptions {
        targets: args.targets,
        slot,
        due: args.due,
        dry_run: args.dry_run,
        backend: g.backend(),
    };
    let report = crate::ops::roll::roll(&plan, &opts, g.clock().now())?;
    let mut p = g.printer();
    if g.output == crate::output::Format::Json {
        p.json(&report)?;
        return Ok(0);
    }
    for gr in &report.groups {
        let slot = if gr.slot == SlotName::Primary {
            "primary"
        } else {
            "secondary"
        };
        match gr.outcome {
            "already-rolled" => p.line(format!(
                "{}: the {slot} slot already holds the newest CA certificate",
                gr.target
            ))?,
            outcome => {
                p.line(format!(
                    "{}: CA {} into the {slot} slot",
                    gr.target,
                    if outcome == "rolled" {
                        "rolled"
                    } else {
                        "would roll"
                    }
                ))?;
                for (i, step) in gr.steps.iter().enumerate() {
                    p.line(format!("  {}. {step}", i + 1))?;
                }
            }
        }
    }
    for d in &report.devices {
        let slot = if d.slot == SlotName::Primary {
            "primary"
        } else {
            "secondary"
        };
        match d.outcome {
            "already-rolled" => p.line(format!(
                "{}: the {slot} slot already holds the newest certificate; nothing to do",
                d.target
            ))?,
            "not-due" => p.line(format!(
                "{}: no auto-renew action is due; nothing to do",
                d.target
            ))?,
            outcome => {
                p.line(format!(
                    "{}: {} into the {slot} slot",
                    d.target,
                    if outcome == "rolled" {
                        "rolled"
                    } else {
                        "would roll"
                    }
                ))?;
                for (i, step) in d.steps.iter().enumerate() {
                    p.line(format!("  {}. {step}", i + 1))?;
                }
            }
        }
    }
    if report.dry_run {
        p.line("Dry run: nothing was changed.")?;
    }
    Ok(0)
}
