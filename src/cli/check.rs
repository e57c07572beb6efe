//! `check`.

use super::{Global, parse_target};
use crate::ops::Target;
use crate::ops::check::{CheckOptions, CheckReport, Level};
use clap::Args;

const CHECK_CODES: &str = "\
Exit codes (monitoring plugin convention):
  0  OK
  1  warning: a lifetime action is due, expiry is within --warn-within, or a run is unfinished
  2  critical: expired, not yet valid, disabled, missing, within --critical-within, or a device
     another client of DPS or the hub cut off
  3  unknown: the plan or the state cannot be read

Examples:
  certroll check -q || page-oncall          # cron: exit code only
  certroll check --warn-within 30 --critical-within 7 -o json";

/// Arguments of `check`.
#[derive(Debug, Args)]
#[command(after_help = CHECK_CODES)]
pub struct CheckArgs {
    /// What to check: ca:NAME, group:NAME, enrollment:NAME, device:ID, or vault:NAME (a
    /// certificate made in the vault alone, as check names it) (default: everything).
    #[arg(value_parser = parse_check_target)]
    targets: Vec<CheckTarget>,
    /// Warn about certificates expiring within this many days, 0 to 36500 (0 = only lifetime
    /// actions warn).
    #[arg(long, value_name = "DAYS", default_value_t = 0, value_parser = parse_days)]
    warn_within: u32,
    /// Critical for certificates expiring within this many days, 0 to 36500 (0 = only expired
    /// ones).
    #[arg(long, value_name = "DAYS", default_value_t = 0, value_parser = parse_days)]
    critical_within: u32,
}

/// A target of `check`: one of the plan's, or a certificate made in the vault alone.
#[derive(Debug, Clone)]
enum CheckTarget {
    Plan(Target),
    Vault(String),
}

fn parse_check_target(text: &str) -> Result<CheckTarget, String> {
    match text.strip_prefix("vault:") {
        Some(name) if !name.is_empty() => Ok(CheckTarget::Vault(name.to_string())),
        _ => parse_target(text)
            .map(CheckTarget::Plan)
            .map_err(|e| format!("{e} (or vault:NAME for a certificate made in the vault alone)")),
    }
}

/// check's exit code when the plan or the state cannot be read.
const UNKNOWN: u8 = 3;

/// Problems listed in human output before "and N more".
const SHOWN: usize = 50;

pub fn exec(g: &Global, args: CheckArgs) -> anyhow::Result<u8> {
    let run = || -> anyhow::Result<CheckReport> {
        let plan = g.load_plan()?;
        let (mut targets, mut vault_names) = (Vec::new(), Vec::new());
        for t in args.targets {
            match t {
                CheckTarget::Plan(t) => targets.push(t),
                CheckTarget::Vault(name) => vault_names.push(name),
            }
        }
        let opts = CheckOptions {
            targets,
            vault_names,
            warn_within_days: args.warn_within,
            critical_within_days: args.critical_within,
            backend: g.backend(),
        };
        crate::ops::check::check(&plan, &opts, g.clock().now())
    };
    let report = match run() {
        Ok(r) => r,
        Err(e) => {
            // Monitoring reads "cannot tell" as UNKNOWN, whatever the cause.
            eprintln!("UNKNOWN: {e:#}");
            if g.output == crate::output::Format::Json {
                // `kind` still says why (input or failed); the exit code is check's own.
                crate::output::print_error_document(&crate::output::ErrorBody {
                    exit_code: UNKNOWN,
                    ..crate::output::ErrorBody::from_error(&e)
                })?;
            }
            return Ok(UNKNOWN);
        }
    };
    let mut p = g.printer();
    if g.output == crate::output::Format::Json {
        p.json(&report)?;
        return Ok(report.status.exit_code());
    }
    let label = match report.status {
        Level::Ok => "OK",
        Level::Warning => "WARNING",
        Level::Critical => "CRITICAL",
    };
    p.line(format!(
        "{label}: {} critical, {} warning, {} ok{}",
        report.counts.critical,
        report.counts.warning,
        report.counts.ok,
        if report.counts.revoked > 0 {
            format!(", {} revoked", report.counts.revoked)
        } else {
            String::new()
        }
    ))?;
    for problem in report.problems.iter().take(SHOWN) {
        let level = match problem.level {
            Level::Critical => "critical",
            _ => "warning",
        };
        p.line(format!("  {level:<8} {:<30} {}", problem.target, problem.reason))?;
    }
    if report.problems.len() > SHOWN {
        p.line(format!(
            "  ... and {} more (-o json lists all)",
            report.problems.len() - SHOWN
        ))?;
    }
    if let Some(next) = &report.next_due {
        p.line(format!(
            "Next due: {} {} at {} ({})",
            next.target,
            next.action.action,
            crate::clock::rfc3339(next.action.at),
            next.action.trigger
        ))?;
    }
    Ok(report.status.exit_code())
}

/// `--warn-within`, `--critical-within`: days, up to a century (the longest validity).
fn parse_days(text: &str) -> Result<u32, String> {
    super::whole_number(text, 0, 36_500)
}
