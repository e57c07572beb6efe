//! `status`.

use super::{Global, parse_target};
use crate::ops::Target;
use clap::Args;

/// Arguments of `status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// What to show: ca:NAME, group:NAME, enrollment:NAME, device:ID (default: everything).
    #[arg(value_parser = parse_target)]
    targets: Vec<Target>,
}

pub fn exec(g: &Global, args: StatusArgs) -> anyhow::Result<u8> {
    let plan = g.load_plan()?;
    let query = crate::ops::status::status(&plan, args.targets, &g.backend())?;
    let head = query.head()?;
    g.printer().status(&head, |each| query.devices(each))?;
    Ok(0)
}
