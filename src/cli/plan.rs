//! `init` and `validate`.

use super::Global;
use clap::Args;
use serde::Serialize;

/// Arguments of `init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Overwrite an existing plan file.
    #[arg(long)]
    force: bool,
}

/// Arguments of `validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {}

pub fn init(g: &Global, args: InitArgs) -> anyhow::Result<u8> {
    g.refuse_time_travel("init")?;
    crate::ops::init::init(&g.plan, args.force)?;
    let mut p = g.printer();
    if g.output == crate::output::Format::Json {
        p.json(&serde_json::json!({ "written": g.plan }))?;
    } else {
        p.line(format!(
            "Wrote a starter plan to {}. Next: certroll issue --plan {} --dry-run",
            g.plan.display(),
            g.plan.display()
        ))?;
    }
    Ok(0)
}

#[derive(Serialize)]
struct Summary {
    plan: String,
    valid: bool,
    policies: usize,
    cas: usize,
    groups: usize,
    enrollments: usize,
    devices: u64,
}

pub fn validate(g: &Global, _args: ValidateArgs) -> anyhow::Result<u8> {
    let plan = g.load_plan()?;
    crate::ops::azure_services_named(&plan, "validate")?;
    let devices = plan.groups.values().map(|g| g.device_count()).sum::<u64>() + plan.enrollments.len() as u64;
    let summary = Summary {
        plan: plan.path.display().to_string(),
        valid: true,
        policies: plan.policies.len(),
        cas: plan.cas.len(),
        groups: plan.groups.len(),
        enrollments: plan.enrollments.len(),
        devices,
    };
    let mut p = g.printer();
    if g.output == crate::output::Format::Json {
        p.json(&summary)?;
    } else {
        p.line(format!(
            "{} is valid: {} policies, {} CAs, {} groups, {} individual enrollments, {} devices.",
            summary.plan, summary.policies, summary.cas, summary.groups, summary.enrollments, summary.devices
        ))?;
    }
    Ok(0)
}
