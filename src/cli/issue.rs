//! `issue`.

use super::{Global, parse_target};
use crate::ops::{IssueOptions, Target};
use clap::Args;

/// Arguments of `issue`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  certroll issue --dry-run\n  certroll issue group:sensors\n  certroll issue device:gateway-01 -o json"
)]
pub struct IssueArgs {
    /// What to issue: ca:NAME, group:NAME, enrollment:NAME, device:ID (default: everything).
    #[arg(value_parser = parse_target)]
    targets: Vec<Target>,
    /// Print the steps; change nothing.
    #[arg(long)]
    dry_run: bool,
}

/// The device bar on stderr (see [`crate::progress::DeviceBar`]).
struct Bar(crate::progress::DeviceBar);

impl crate::ops::issue::Progress for Bar {
    fn start(&self, total: u64) {
        self.0.start(total);
    }
    fn advance(&self, n: u64) {
        self.0.advance(n);
    }
    fn finish(&self) {
        self.0.finish();
    }
}

pub fn exec(g: &Global, args: IssueArgs) -> anyhow::Result<u8> {
    let plan = g.load_plan()?;
    let opts = IssueOptions {
        targets: args.targets,
        dry_run: args.dry_run,
        backend: g.backend(),
    };
    let multi = indicatif::MultiProgress::new();
    // The device bar moves a chunk at a time; the remote bar below it moves as each
    // certificate is imported, delivered, enrolled (on the azure backend, where a chunk takes
    // minutes, the device bar shows once a chunk is done).
    let bar = crate::progress::DeviceBar::new(g.shows_progress().then_some(&multi), plan.azure.is_some());
    let remote = g.remote_progress(Some(&multi));
    let report = crate::ops::issue(&plan, &opts, g.clock().now(), &Bar(bar));
    drop(remote);
    let mut report = report?;
    if g.output == crate::output::Format::Human {
        for step in &mut report.steps {
            if let Some(detail) = crate::ops::issue::azure_detail(&plan, step) {
                step.detail = detail;
            }
        }
    }
    g.printer().issue_report(&report)?;
    // A refused device, a delivery still owed, or a device left alone for another client's
    // certificate (exit 1, as a roll that leaves it `foreign`): work left that a rerun finishes.
    Ok(
        if report.rejected.is_empty() && report.deliveries_owed == 0 && report.devices.is_empty() {
            0
        } else {
            1
        },
    )
}
